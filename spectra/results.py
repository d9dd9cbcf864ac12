"""Tidy results: one row per observation, plus a layers side table.

Schema (DESIGN §5): ``run, step, layer, view, matrix, analyzer, metric, index, value, status, message`` plus
any user tags. ``matrix`` is ``weight | update | grad``; ``index`` is the rank (or an encoded pair) for
vector-valued metrics and ``<NA>`` for scalars; ``status`` is ``ok | warn | failed | skipped``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

__all__ = [
    "Record",
    "Results",
    "COLUMNS",
    "STATUSES",
    "MATRICES",
    "LAYER_COLUMNS",
    "SCHEMA_VERSION",
]

SCHEMA_VERSION = 1
COLUMNS = ("run", "step", "layer", "view", "matrix", "analyzer", "metric", "index", "value", "status", "message")
STATUSES = ("ok", "warn", "failed", "skipped")
MATRICES = ("weight", "update", "grad")
LAYER_COLUMNS = ("layer", "view", "module_type", "N", "M", "Q", "num_matrices", "dtype", "skip_reason")


@dataclass(frozen=True, slots=True)
class Record:
    """One observation: the value of one metric of one matrix of one layer view at one step."""

    run: str
    step: int
    layer: str
    view: str
    matrix: str
    analyzer: str
    metric: str
    value: float
    index: int | None = None
    status: str = "ok"
    message: str = ""
    tags: Mapping[str, Any] = field(default_factory=dict)


def _records_frame(records: Sequence[Record], tags: Mapping[str, Any] | None = None):
    import pandas as pd

    cols: dict[str, list] = {c: [] for c in COLUMNS}
    tag_keys: list[str] = []
    for r in records:
        for k in r.tags:
            if k not in tag_keys and k not in COLUMNS:
                tag_keys.append(k)
    tag_cols: dict[str, list] = {k: [] for k in tag_keys}
    for r in records:
        cols["run"].append(r.run)
        cols["step"].append(r.step)
        cols["layer"].append(r.layer)
        cols["view"].append(r.view)
        cols["matrix"].append(r.matrix)
        cols["analyzer"].append(r.analyzer)
        cols["metric"].append(r.metric)
        cols["index"].append(r.index)
        cols["value"].append(r.value)
        cols["status"].append(r.status)
        cols["message"].append(r.message)
        for k in tag_keys:
            tag_cols[k].append(r.tags.get(k))
    df = pd.DataFrame(
        {
            "run": pd.array(cols["run"], dtype="string"),
            "step": pd.array(cols["step"], dtype="Int64"),
            "layer": pd.array(cols["layer"], dtype="string"),
            "view": pd.array(cols["view"], dtype="string"),
            "matrix": pd.array(cols["matrix"], dtype="string"),
            "analyzer": pd.array(cols["analyzer"], dtype="string"),
            "metric": pd.array(cols["metric"], dtype="string"),
            "index": pd.array(cols["index"], dtype="Int64"),
            "value": np.asarray(cols["value"], dtype=np.float64),
            "status": pd.array(cols["status"], dtype="string"),
            "message": pd.array(cols["message"], dtype="string"),
        }
    )
    for k in tag_keys:
        df[k] = tag_cols[k]
    return normalize_frame(df)


def normalize_frame(df):
    """Cast a tidy table to the canonical dtypes (used after every read, so round trips keep dtypes)."""
    import pandas as pd

    df = df.copy()
    for c in ("run", "layer", "view", "matrix", "analyzer", "metric", "status", "message"):
        if c in df:
            df[c] = df[c].astype("string")
    for c in ("step", "index"):
        if c in df:
            df[c] = pd.to_numeric(df[c]).astype("Int64")
    if "value" in df:
        df["value"] = pd.to_numeric(df["value"], errors="coerce").astype("float64")
    missing = [c for c in COLUMNS if c not in df.columns]
    for c in missing:
        df[c] = pd.array([pd.NA] * len(df), dtype="Int64" if c in ("step", "index") else "string")
    ordered = list(COLUMNS) + [c for c in df.columns if c not in COLUMNS]
    return df[ordered].reset_index(drop=True)


def _layers_frame(rows: Sequence[Mapping[str, Any]]):
    import pandas as pd

    df = pd.DataFrame(list(rows), columns=list(LAYER_COLUMNS)) if rows else pd.DataFrame(columns=list(LAYER_COLUMNS))
    for c in ("layer", "view", "module_type", "dtype", "skip_reason"):
        df[c] = df[c].astype("string")
    for c in ("N", "M", "num_matrices"):
        df[c] = pd.to_numeric(df[c]).astype("Int64")
    df["Q"] = pd.to_numeric(df["Q"]).astype("float64")
    return df


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
        self._records: list[Record] = list(records)
        self._frame = None
        if hasattr(layers, "columns"):
            self._layers = layers.copy()
        else:
            self._layers = _layers_frame(list(layers))
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
        """Append records (used by the monitor as steps are analyzed)."""
        self._records.extend(records)

    # ----------------------------------------------------------------- views
    def __len__(self) -> int:
        return (len(self._frame) if self._frame is not None else 0) + len(self._records)

    @property
    def records(self) -> list[Record]:
        """The in-memory records (empty for results read from disk; use :meth:`to_pandas`)."""
        return list(self._records)

    @property
    def layers(self):
        """The layers side table: ``layer, view, module_type, N, M, Q, num_matrices, dtype, skip_reason``."""
        return self._layers.copy()

    def to_pandas(self):
        """The tidy table (one row per observation) with the conventions in ``DataFrame.attrs``."""
        import pandas as pd

        parts = []
        if self._frame is not None:
            parts.append(self._frame)
        if self._records:
            parts.append(_records_frame(self._records))
        if not parts:
            df = _records_frame([])
        elif len(parts) == 1:
            df = parts[0].copy()
        else:
            df = normalize_frame(pd.concat(parts, ignore_index=True))
        df.attrs = dict(self.attrs)
        return df

    def to_wide(self, *, matrix: str | None = "weight"):
        """One row per (run, step, layer, view) with one column per scalar metric (WeightWatcher names).

        Args:
            matrix: keep only rows of this matrix kind (``"weight"`` by default, matching WeightWatcher's
                ``details``); ``None`` keeps all and prefixes non-weight metrics with ``"<matrix>_"``.
        """
        df = self.to_pandas()
        df = df[df["index"].isna() & df["status"].isin(["ok", "warn"])]
        if matrix is not None:
            df = df[df["matrix"] == matrix]
            name = df["metric"]
        else:
            name = df["metric"].where(df["matrix"] == "weight", df["matrix"] + "_" + df["metric"])
        df = df.assign(column=name)
        wide = df.pivot_table(
            index=["run", "step", "layer", "view"], columns="column", values="value", aggfunc="first", sort=False
        ).reset_index()
        wide.columns.name = None
        if len(self._layers):
            lay = self._layers[self._layers["skip_reason"].isna()][["layer", "view", "module_type", "N", "M", "Q"]]
            wide = wide.merge(lay, on=["layer", "view"], how="left")
        wide.attrs = dict(self.attrs)
        return wide

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

    def summary(self):
        """Per-metric mean/median/min/max over layers at each step, counting failed rows separately."""
        df = self.to_pandas()
        ok = df[df["index"].isna() & (df["status"] == "ok")]
        return ok.groupby(["run", "step", "matrix", "metric"])["value"].describe().reset_index()

    # ----------------------------------------------------------------- persistence
    def to_parquet(self, path: str | Path) -> Path:
        """Write the tidy table (conventions and layers table in the file's metadata)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = Path(path)
        df = self.to_pandas()
        table = pa.Table.from_pandas(df, preserve_index=False)
        meta = dict(table.schema.metadata or {})
        meta[b"spectra.attrs"] = json.dumps(_jsonable(self.attrs)).encode()
        meta[b"spectra.layers"] = self._layers.to_json(orient="records").encode()
        table = table.replace_schema_metadata(meta)
        pq.write_table(table, path)
        return path

    def to_csv(self, path: str | Path) -> Path:
        """Write the tidy table as CSV, with a ``<name>.meta.json`` beside it holding attrs and layers."""
        path = Path(path)
        self.to_pandas().to_csv(path, index=False)
        meta = {"attrs": _jsonable(self.attrs), "layers": json.loads(self._layers.to_json(orient="records"))}
        path.with_name(path.name + ".meta.json").write_text(json.dumps(meta, indent=1))
        return path

    @classmethod
    def read(cls, path: str | Path) -> "Results":
        """Load results from a parquet file, a CSV file, or a monitor's ``log_dir``.

        A ``log_dir`` holds one parquet part per analyzed step; parts that are partially written (a crash
        mid-write) are detected, skipped with a warning, and never corrupt the table.
        """
        import pandas as pd
        import pyarrow.parquet as pq

        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no results at {path}")
        if path.is_dir():
            from .sinks import read_log_dir

            return read_log_dir(path)
        if path.suffix == ".parquet":
            table = pq.read_table(path)
            meta = table.schema.metadata or {}
            attrs = json.loads(meta.get(b"spectra.attrs", b"{}"))
            layers = json.loads(meta.get(b"spectra.layers", b"[]"))
            df = table.to_pandas()
            return cls.from_pandas(df, layers=_layers_frame(layers), attrs=attrs)
        if path.suffix == ".csv":
            df = pd.read_csv(path, keep_default_na=True, dtype={"message": "string"})
            df["message"] = df["message"].fillna("")
            meta_path = path.with_name(path.name + ".meta.json")
            attrs, layers = {}, []
            if meta_path.exists():
                meta = json.loads(meta_path.read_text())
                attrs, layers = meta.get("attrs", {}), meta.get("layers", [])
            return cls.from_pandas(df, layers=_layers_frame(layers), attrs=attrs)
        raise ValueError(f"cannot read results from {path}: expected .parquet, .csv or a log directory")

    @staticmethod
    def concat(results: Sequence["Results"]) -> "Results":
        """Concatenate several results (e.g. runs), keeping the first one's attrs and the union of layers."""
        import pandas as pd

        if not results:
            return Results()
        frames = [r.to_pandas() for r in results]
        layers = pd.concat([r.layers for r in results], ignore_index=True).drop_duplicates(["layer", "view"])
        return Results.from_pandas(pd.concat(frames, ignore_index=True), layers=layers, attrs=results[0].attrs)

    def __repr__(self) -> str:
        return f"Results({len(self)} rows, {len(self._layers)} layer views)"


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)
