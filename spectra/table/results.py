"""Results: views over the tidy table (the frame, the wide per-layer table, spectra, summaries, concat).

The rows are held as columns (:class:`~spectra.table.columns.RecordColumns` blocks, one per ``extend``) or as a
frame read from disk; reading and writing delegate to :mod:`spectra.table.storage`. Schema: docs/design.md, "The tidy table".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .columns import RecordColumns
from .schema import SCHEMA_VERSION, Record, concat_frames, layers_frame, normalize_frame, records_frame

__all__ = ["Results"]


class Results:
    """A collection of :class:`Record` rows plus the layers table and the conventions in force.

    Build one from records (``Results(records, layers=..., attrs=...)``), from a tidy frame
    (:meth:`from_pandas`), or from disk (:meth:`read`). The tidy frame's ``attrs`` carry the conventions
    (eigenvalue normalisation, fit method, schema version) so a reader knows what the numbers mean.
    """

    def __init__(
        self,
        records: Iterable[Record] = (),
        *,
        layers: Sequence[Mapping[str, Any]] | Any = (),
        attrs: Mapping[str, Any] | None = None,
    ) -> None:
        self._blocks: list[RecordColumns] = []
        self._frame = None
        self.extend(records)
        # the layers table is built on first use: pandas need not be imported until a frame is asked for
        self._layer_source: Any = layers.copy() if hasattr(layers, "columns") else list(layers)
        self._layers_frame = None
        self.attrs: dict[str, Any] = {"schema_version": SCHEMA_VERSION}
        if attrs:
            self.attrs.update(attrs)

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_pandas(cls, df, *, layers=None, attrs: Mapping[str, Any] | None = None) -> "Results":
        """Wrap an existing tidy frame (e.g. one read from disk)."""
        res = cls(layers=layers if layers is not None else (), attrs={**dict(df.attrs), **(attrs or {})})
        res._frame = normalize_frame(df)
        return res

    def extend(self, records: Iterable[Record]) -> None:
        """Append records (used by the monitor as steps are analyzed); they are kept as columns."""
        records = list(records)
        if records:
            self._blocks.append(RecordColumns.from_records(records))

    def with_layers(self, layers: Sequence[Mapping[str, Any]] | Any) -> "Results":
        """The same rows and attrs with another layers table (e.g. after parameters joined the optimizer)."""
        out = Results(layers=layers, attrs=self.attrs)
        out._blocks = list(self._blocks)
        out._frame = self._frame
        return out

    # ----------------------------------------------------------------- views
    def __len__(self) -> int:
        return (len(self._frame) if self._frame is not None else 0) + sum(len(b) for b in self._blocks)

    @property
    def records(self) -> list[Record]:
        """The in-memory records (empty for results read from disk; use :meth:`to_pandas`)."""
        return [r for b in self._blocks for r in b.records()]

    @property
    def layers(self):
        """The layers side table: ``layer, view, module_type, N, M, Q, num_matrices, dtype, skip_reason``."""
        return self._layers.copy()

    @property
    def _layers(self):
        """The layers side table as a frame (built once, from the rows given at construction)."""
        if self._layers_frame is None:
            src = self._layer_source
            self._layers_frame = src if hasattr(src, "columns") else layers_frame(src)
        return self._layers_frame

    def to_pandas(self):
        """The tidy table (one row per observation) with the conventions in ``DataFrame.attrs``."""
        import pandas as pd

        parts = []
        if self._frame is not None:
            parts.append(self._frame)
        if self._blocks:
            block = RecordColumns.concat(self._blocks)
            self._blocks = [block]  # concatenated once: later calls reuse it
            parts.append(block.frame())
        if not parts:
            df = records_frame([])
        elif len(parts) == 1:
            df = parts[0].copy()
        else:
            df = concat_frames(parts)
        df.attrs = dict(self.attrs)
        return df

    def to_wide(self, *, matrix: str | None = "weight"):
        """One row per (run, step, layer, view), with WeightWatcher's ``details`` column names and dtypes wherever
        the meaning is the same, the fit method, status and warning (see :mod:`spectra.table.wide`).

        Args:
            matrix: keep only rows of this matrix kind (``"weight"`` by default, matching WeightWatcher's
                ``details``); ``None`` keeps all and prefixes non-weight metrics with ``"<matrix>_"``.
        """
        from .wide import wide_frame

        return wide_frame(self.to_pandas(), self._layers, self.attrs, matrix=matrix)

    def spectra(self, layer: str, *, view: str | None = None, matrix: str = "weight", run: str | None = None):
        """Full spectra of one layer by step, ``{step: ascending eigenvalues}``, for :func:`spectra.plot.
        plot_esd_snapshots`. Needs the ``esd`` analyzer's ``spectrum=True`` option (rows of metric
        ``eigenvalue``).

        Raises:
            ValueError: no eigenvalue rows for that layer (the message says how to record them and lists the
                layers that have them), or several views/runs when none is chosen.
        """
        df = self.to_pandas()
        ev = df[(df["metric"] == "eigenvalue") & (df["matrix"] == matrix)]
        have = sorted(ev["layer"].dropna().unique().tolist())
        ev = ev[ev["layer"] == layer]
        if ev.empty:
            raise ValueError(
                f"no eigenvalue rows for layer {layer!r} (matrix {matrix!r}); record them with "
                f"analyzer_options={{'esd': {{'spectrum': True}}}}. Layers with spectra: {have or 'none'}"
            )
        for col, chosen in (("view", view), ("run", run)):
            values = sorted(ev[col].dropna().unique().tolist())
            if chosen is not None:
                ev = ev[ev[col] == chosen]
            elif len(values) > 1:
                raise ValueError(f"layer {layer!r} has several {col}s {values}; pass {col}=...")
        out = {}
        for step, grp in ev.groupby("step", sort=True):
            out[int(step)] = grp.sort_values("index")["value"].to_numpy(dtype=np.float64)
        return out

    def summary(self, *, step: int | None = None, run: str | None = None) -> dict[str, float]:
        """The model at one step in a few numbers, as WeightWatcher's ``get_summary()``: the mean over layers of
        ``log_norm``, ``alpha``, ``alpha_weighted``, ``log_alpha_norm``, ``log_spectral_norm``, ``stable_rank``
        and ``mp_softrank`` (those present). Which ``alpha`` it is: ``attrs["fit"]``.

        Args:
            step: the step (default: the last one).
            run: the run (needed when the table holds several).

        Raises:
            ValueError: several runs and no ``run``, or an unknown ``run``/``step`` (the message lists them).
        """
        from .wide import ww_summary

        return ww_summary(self.to_wide(), step=step, run=run)

    def describe(self):
        """Per-metric mean/std/min/quartiles/max over layers at each step (``ok`` scalar rows only; failed rows
        are left out), one row per (run, step, matrix, metric)."""
        df = self.to_pandas()
        ok = df[df["index"].isna() & (df["status"] == "ok")]
        return ok.groupby(["run", "step", "matrix", "metric"])["value"].describe().reset_index()

    # ----------------------------------------------------------------- persistence
    def to_parquet(self, path: str | Path) -> Path:
        """Write the tidy table (conventions and layers table in the file's metadata), atomically."""
        from .storage import write_parquet

        return write_parquet(path, self.to_pandas(), self.attrs, self._layers)

    def to_csv(self, path: str | Path) -> Path:
        """Write the tidy table as CSV, with a ``<name>.meta.json`` beside it holding attrs and layers."""
        from .storage import write_csv

        return write_csv(path, self.to_pandas(), self.attrs, self._layers)

    @classmethod
    def read(cls, path: str | Path, *, run_id: str | None = None) -> "Results":
        """Load results from a parquet file, a CSV file, or a monitor's ``log_dir``.

        Args:
            path: the file or directory.
            run_id: for a ``log_dir`` holding several runs, which one (``"all"``: every run, side by side with
                a ``run_id`` column). Runs are never merged silently.

        A ``log_dir`` holds one parquet part per analyzed step; a part that is truncated or was not written by
        spectra is skipped with a warning naming it, and never corrupts the table.
        """
        from .storage import read_table

        data = read_table(path, run_id=run_id)
        return cls.from_pandas(data.frame, layers=data.layers, attrs=data.attrs)

    @staticmethod
    def concat(results: Sequence["Results"]) -> "Results":
        """Concatenate several results (e.g. runs), keeping the first one's attrs and the union of layers."""
        import pandas as pd

        if not results:
            return Results()
        frames = [r.to_pandas() for r in results]
        layers = pd.concat([r.layers for r in results], ignore_index=True).drop_duplicates(["layer", "view"])
        return Results.from_pandas(concat_frames(frames), layers=layers, attrs=results[0].attrs)

    def __repr__(self) -> str:
        src = self._layer_source if self._layers_frame is None else self._layers_frame
        return f"Results({len(self)} rows, {len(src)} layer views)"
