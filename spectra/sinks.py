"""Sinks: plugins over the table that receive every batch of records as it is made.

* :class:`StreamingSink` streams to a log directory (format: :mod:`spectra.table.storage`); the pipeline builds
  one when a driver is given ``log_dir=``. It writes the meta file (conventions and layers table) when built.
* The scalar sinks, defined in :mod:`spectra.scalar_sinks` and re-exported here, send a few key metrics
  (``alpha/<layer>``, ...) to trackers: :class:`ScalarWriterSink` (anything with ``add_scalar``, e.g.
  TensorBoard), :class:`WandbSink`, :class:`MLflowSink` and :class:`CallableSink` (any
  ``fn(metrics, step)``).

All implement the ``spectra_log_records`` hook; a third-party sink is any plugin that implements it too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from .hookspecs import hookimpl
from .scalar_sinks import CallableSink, MLflowSink, ScalarWriterSink, WandbSink
from .table import storage
from .table.schema import layers_frame

__all__ = ["StreamingSink", "ScalarWriterSink", "WandbSink", "MLflowSink", "CallableSink"]


class StreamingSink:
    """Stream every batch of records to ``log_dir`` as one parquet part of this sink's run.

    The run gets a fresh id unless one is given (a resumed run, or the id every rank of a job agreed on); its
    meta file (conventions and layers table) is written now. Reload with ``Results.read(log_dir)``, or
    ``Results.read(log_dir, run_id=...)`` when the directory holds several runs.

    Args:
        log_dir: the directory (created when missing).
        attrs: the conventions of the run.
        layers: the layers side table (a frame or rows).
        run_id: the run's id (12 hex digits); ``None`` starts a new run.
    """

    def __init__(self, log_dir: str | Path, *, attrs: Mapping[str, Any] | None = None, layers: Any = (),
                 run_id: str | None = None) -> None:
        self.log_dir = Path(log_dir)
        self.run_id = run_id or storage.new_run_id()
        self._attrs = dict(attrs or {})
        self._layers = layers
        self._written: list[Path] = []
        self.write_meta(self._attrs, layers)

    def __repr__(self) -> str:
        return f"StreamingSink({str(self.log_dir)!r}, run_id={self.run_id!r})"

    @property
    def written(self) -> list[Path]:
        """The files of its own run this sink may take back on :meth:`resume`: the meta file and step-0 parts."""
        return list(self._written)

    def write_meta(self, attrs: Mapping[str, Any], layers: Any) -> Path:
        """(Re)write the run's meta file, e.g. when parameters added to the optimizer grew the layers table."""
        self._attrs, self._layers = dict(attrs), layers
        frame = layers if hasattr(layers, "columns") else layers_frame(list(layers))
        path = storage.write_run_meta(self.log_dir, self.run_id, self._attrs, frame)
        if path not in self._written:
            self._written.insert(0, path)
        return path

    def resume(self, run_id: str, step: int) -> list[Path]:
        """Continue run ``run_id`` after ``step``: what this sink wrote for its own fresh run is removed (it
        described the resumed weights, not a step of any run), and parts of ``run_id`` after ``step`` move to
        ``records/superseded/`` (they will be recomputed). Returns the superseded parts' new paths."""
        if run_id != self.run_id:
            for path in self._written:
                path.unlink(missing_ok=True)
            self._written = []
            self.run_id = run_id
            self.write_meta(self._attrs, self._layers)
        return storage.supersede_after(self.log_dir, run_id, step)

    @hookimpl
    def spectra_log_records(self, records: Sequence[Any], step: int, run: str) -> None:
        path = storage.write_part(self.log_dir, records, step, self.run_id)
        if path is not None and step == 0:  # only a fresh run's step 0 can ever be taken back (resume)
            self._written.append(path)
