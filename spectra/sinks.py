"""Sinks: plugins over the table that receive every batch of records as it is made.

* :class:`StreamingSink` streams to a log directory (format: :mod:`spectra.table.storage`); the pipeline builds
  one when a driver is given ``log_dir=``. It writes the meta file (conventions and layers table) when built.
* :class:`ScalarWriterSink` sends scalar metrics to anything with ``add_scalar(tag, value, step)``.

Both implement the ``spectra_log_records`` hook; a third-party sink is any plugin that implements it too.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from .hookspecs import hookimpl
from .table import storage
from .table.schema import layers_frame

__all__ = ["StreamingSink", "ScalarWriterSink"]


class StreamingSink:
    """Stream every batch of records to ``log_dir`` as one parquet part (reload with ``Results.read(log_dir)``).

    Args:
        log_dir: the directory (created when missing).
        attrs: the conventions of the run, written to ``log_dir/meta.json`` now.
        layers: the layers side table (a frame or rows), written with them.
    """

    def __init__(self, log_dir: str | Path, *, attrs: Mapping[str, Any] | None = None, layers: Any = ()) -> None:
        self.log_dir = Path(log_dir)
        self.write_meta(attrs or {}, layers)

    def __repr__(self) -> str:
        return f"StreamingSink({str(self.log_dir)!r})"

    def write_meta(self, attrs: Mapping[str, Any], layers: Any) -> Path:
        """(Re)write the meta file, e.g. when parameters added to the optimizer grew the layers table."""
        frame = layers if hasattr(layers, "columns") else layers_frame(list(layers))
        return storage.write_meta(self.log_dir, dict(attrs), frame)

    @hookimpl
    def spectra_log_records(self, records: Sequence[Any], step: int, run: str) -> None:
        storage.write_part(self.log_dir, records, step, run)


class ScalarWriterSink:
    """Send scalar metrics to anything with ``add_scalar(tag, value, step)`` (TensorBoard's ``SummaryWriter``,
    tensorboardX, ...).

    Tags are ``<prefix>/<matrix>/<metric>/<layer>[<view>]``; only ``ok``/``warn`` scalar rows (no ``index``)
    with a finite value are sent, optionally restricted to ``metrics``.

    Example:
        >>> from torch.utils.tensorboard import SummaryWriter                   # doctest: +SKIP
        >>> sink = ScalarWriterSink(SummaryWriter("runs/exp1"), metrics={"alpha", "alpha_hill"})  # doctest: +SKIP
        >>> monitor = spectra.SpectraMonitor(model, opt, plugins=[sink])         # doctest: +SKIP
    """

    def __init__(self, writer: Any, *, metrics: Any = None, prefix: str = "spectra") -> None:
        if not callable(getattr(writer, "add_scalar", None)):
            raise TypeError(f"writer must have an add_scalar(tag, value, step) method, got {type(writer).__name__}")
        self.writer = writer
        self.metrics = frozenset(metrics) if metrics is not None else None
        self.prefix = prefix

    @hookimpl
    def spectra_log_records(self, records: Sequence[Any], step: int, run: str) -> None:
        for r in records:
            if r.index is not None or r.status not in ("ok", "warn") or not math.isfinite(r.value):
                continue
            if self.metrics is not None and r.metric not in self.metrics:
                continue
            view = "" if r.view in ("W", "") else f"[{r.view}]"
            self.writer.add_scalar(f"{self.prefix}/{r.matrix}/{r.metric}/{r.layer}{view}", r.value, r.step)
