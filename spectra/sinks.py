"""The built-in streaming sink: records go to disk as they are made.

Layout of a ``log_dir``::

    log_dir/
      meta.json                      conventions (attrs) and the layers table, written at attach
      records/step-00000010-<id>.parquet   one file per analyzed step and run, written atomically

Each part is written to a temporary name and renamed into place (``os.replace`` is atomic on POSIX), so a
kill at any moment leaves either the whole part or none. A part that is nevertheless unreadable (a disk
fault, a copy interrupted by hand) is skipped with a warning by :func:`read_log_dir`.
"""

from __future__ import annotations

import json
import os
import uuid
import warnings
from pathlib import Path
from typing import Any, Sequence

from .hookspecs import hookimpl

__all__ = ["StreamingSink", "ScalarWriterSink", "write_part", "write_meta", "read_log_dir", "PART_GLOB"]

PART_GLOB = "step-*.parquet"


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_part(log_dir: Path, records: Sequence[Any], step: int, run: str) -> Path | None:
    """Write one batch of records as a parquet part; returns its path (None for an empty batch)."""
    if not records:
        return None
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from .results import _records_frame

    df = _records_frame(records)
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), buf)
    parts = Path(log_dir) / "records"
    parts.mkdir(parents=True, exist_ok=True)
    safe_run = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(run))[:64]
    rank = _rank_suffix()
    path = parts / f"step-{int(step):08d}-{safe_run}{rank}-{uuid.uuid4().hex[:8]}.parquet"
    _atomic_write_bytes(path, buf.getvalue())
    return path


def _rank_suffix() -> str:
    """``-r<rank>`` inside an initialised torch.distributed job (each rank streams its own parts), else ``""``."""
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return f"-r{dist.get_rank()}"
    except Exception:  # pragma: no cover - a broken distributed setup must not stop logging
        pass
    return ""


def write_meta(log_dir: Path, attrs: dict[str, Any], layers_frame: Any) -> Path:
    """Write (atomically) the run's conventions and layers table beside the parts."""
    from .results import _jsonable

    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    meta = {"attrs": _jsonable(attrs), "layers": json.loads(layers_frame.to_json(orient="records"))}
    path = log_dir / "meta.json"
    _atomic_write_bytes(path, json.dumps(meta, indent=1).encode())
    return path


def read_log_dir(log_dir: Path):
    """Reload a whole run from a ``log_dir``; unreadable parts are skipped with a warning."""
    import pandas as pd
    import pyarrow.parquet as pq

    from .results import Results, _layers_frame

    log_dir = Path(log_dir)
    attrs: dict[str, Any] = {}
    layers: list = []
    meta_path = log_dir / "meta.json"
    if meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text())
            attrs, layers = meta.get("attrs", {}), meta.get("layers", [])
        except (OSError, ValueError) as exc:
            warnings.warn(f"ignoring unreadable {meta_path}: {exc}", RuntimeWarning, stacklevel=2)
    frames = []
    for part in sorted((log_dir / "records").glob(PART_GLOB)):
        try:
            frames.append(pq.read_table(part).to_pandas())
        except Exception as exc:  # a truncated or corrupt file: skip it, keep the rest
            warnings.warn(f"skipping unreadable results part {part.name}: {exc}", RuntimeWarning, stacklevel=2)
    if frames:
        df = pd.concat(frames, ignore_index=True)
        # parts from several ranks interleave layers: restore the layers table's order within each step
        order = {name: i for i, name in enumerate(dict.fromkeys(r.get("layer") for r in layers))}
        position = df["layer"].map(order).fillna(len(order)).astype("int64")
        df = (df.assign(_pos=position).sort_values(["run", "step", "_pos"], kind="stable")
              .drop(columns="_pos").reset_index(drop=True))
    else:
        from .results import _records_frame

        df = _records_frame([])
    return Results.from_pandas(df, layers=_layers_frame(layers), attrs=attrs)


class StreamingSink:
    """Built-in plugin: stream every batch of records to ``log_dir`` when the monitor has one."""

    @hookimpl
    def spectra_log_records(self, records: Sequence[Any], step: int, run: str, log_dir: Any) -> None:
        if log_dir is not None:
            write_part(Path(log_dir), records, step, run)


class ScalarWriterSink:
    """Plugin: send scalar metrics to anything with ``add_scalar(tag, value, step)`` (TensorBoard's
    ``SummaryWriter``, tensorboardX, ...).

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
    def spectra_log_records(self, records: Sequence[Any], step: int, run: str, log_dir: Any) -> None:
        import math

        for r in records:
            if r.index is not None or r.status not in ("ok", "warn") or not math.isfinite(r.value):
                continue
            if self.metrics is not None and r.metric not in self.metrics:
                continue
            view = "" if r.view in ("W", "") else f"[{r.view}]"
            self.writer.add_scalar(f"{self.prefix}/{r.matrix}/{r.metric}/{r.layer}{view}", r.value, r.step)
