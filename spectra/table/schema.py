"""The tidy table's schema: the :class:`Record` row, its columns, statuses and matrix kinds, and frame builders.

One row is one observation: the value of one metric of one matrix of one layer view at one step. The columns
are ``run, step, layer, view, matrix, analyzer, metric, index, value, status, message`` plus any user tags.
``matrix`` is ``weight | update | grad`` (``delta`` for W − W_base when ``analyze`` is given a base); ``index`` is the rank k (or an encoded pair) of a vector-valued metric
and ``<NA>`` for scalars; ``status`` is ``ok | warn | failed | skipped``. See docs/design.md, "The tidy table".

This module is the bottom of the table package: :mod:`spectra.table.storage` and :mod:`spectra.table.results`
build on it, never the other way round.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = [
    "Record",
    "COLUMNS",
    "STATUSES",
    "MATRICES",
    "LAYER_COLUMNS",
    "SCHEMA_VERSION",
    "records_frame",
    "columns_frame",
    "TEXT_COLUMNS",
    "concat_frames",
    "tag_column",
    "record_rows",
    "records_from_rows",
    "normalize_frame",
    "layers_frame",
    "jsonable",
]

SCHEMA_VERSION = 1
COLUMNS = ("run", "step", "layer", "view", "matrix", "analyzer", "metric", "index", "value", "status", "message")
STATUSES = ("ok", "warn", "failed", "skipped")
MATRICES = ("weight", "update", "grad", "delta")
LAYER_COLUMNS = ("layer", "view", "module_type", "N", "M", "Q", "num_matrices", "dtype", "skip_reason")

_STRING_COLUMNS = ("run", "layer", "view", "matrix", "analyzer", "metric", "status", "message")
TEXT_COLUMNS = _STRING_COLUMNS  #: the text columns of :data:`COLUMNS`, in order
_INT_COLUMNS = ("step", "index")


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

    @classmethod
    def failed(
        cls,
        *,
        run: str,
        step: int,
        layer: str,
        view: str,
        analyzer: str,
        message: str,
        tags: Mapping[str, Any] | None = None,
        matrix: str = "weight",
    ) -> "Record":
        """The one way to build a failed row: ``metric="error"``, a NaN value, ``status="failed"``.

        Args:
            run: the ``run`` column.
            step: the step the failure belongs to.
            layer: the layer whose analysis failed.
            view: its view (``""`` when the failure happened before views existed).
            analyzer: the analyzer that failed, or the stage (``"capture"``) for failures outside analyzers.
            message: what went wrong (usually ``"ExceptionType: text"``).
            tags: the constant extra columns of the run.
            matrix: the matrix kind the row is filed under.
        """
        return cls(run, step, layer, view, matrix, analyzer, "error", math.nan, None, "failed", message,
                   dict(tags or {}))


def record_rows(records: Sequence[Record]) -> list[tuple]:
    """Records as plain tuples (field order of :class:`Record`, tags last), e.g. for a ``state_dict``."""
    return [(r.run, r.step, r.layer, r.view, r.matrix, r.analyzer, r.metric, r.value, r.index, r.status,
             r.message, dict(r.tags)) for r in records]


def records_from_rows(rows: Sequence[Sequence[Any]]) -> list[Record]:
    """The inverse of :func:`record_rows` (rows without tags are accepted)."""
    return [Record(*row[:11], tags=row[11] if len(row) > 11 else {}) for row in rows]


def records_frame(records: Sequence[Record]):
    """The tidy frame of ``records`` in canonical dtypes (tags become extra columns, in order of appearance)."""
    index = [r.index for r in records]
    return columns_frame(
        {c: [getattr(r, c) for r in records] for c in _STRING_COLUMNS},
        step=np.fromiter((r.step for r in records), dtype=np.int64, count=len(records)),
        index=np.array([0 if i is None else i for i in index], dtype=np.int64),
        has_index=np.array([i is not None for i in index], dtype=bool),
        value=np.fromiter((r.value for r in records), dtype=np.float64, count=len(records)),
        tags=[r.tags for r in records],
    )


def columns_frame(
    text: Mapping[str, Sequence[str]],
    *,
    step: np.ndarray,
    index: np.ndarray,
    has_index: np.ndarray,
    value: np.ndarray,
    tags: Sequence[Mapping[str, Any]],
):
    """The tidy frame of rows given as columns (what :func:`records_frame` and columnar blocks build on).

    Args:
        text: the text columns (``run, layer, view, matrix, analyzer, metric, status, message``), one list each.
        step: int64 steps.
        index: int64 indices, read where ``has_index`` is True (``<NA>`` elsewhere).
        has_index: whether each row has an index.
        value: float64 values.
        tags: each row's extra columns (rows may share one mapping).
    """
    import pandas as pd

    data: dict[str, Any] = {}
    for c in COLUMNS:
        if c == "step":
            data[c] = pd.array(np.asarray(step, dtype=np.int64), dtype="Int64")
        elif c == "index":
            data[c] = pd.arrays.IntegerArray(np.array(index, dtype=np.int64), ~np.asarray(has_index, dtype=bool))
        elif c == "value":
            data[c] = np.array(value, dtype=np.float64)
        else:
            data[c] = pd.array(list(text[c]), dtype="string")
    df = pd.DataFrame(data)
    keys: list[str] = []
    seen: set[int] = set()
    for t in tags:  # rows of one analyzer call share one mapping: read each mapping once
        if id(t) not in seen:
            seen.add(id(t))
            keys += [k for k in t if k not in keys and k not in COLUMNS]
    for k in keys:
        df[k] = tag_column([t.get(k) for t in tags])
    return normalize_frame(df)


def _plain(v: Any) -> Any:
    """A numpy scalar as the Python scalar it holds; anything else unchanged."""
    return v.item() if isinstance(v, np.generic) else v


def tag_column(values: Sequence[Any]):
    """A tag column in its canonical dtype, so it survives every storage format unchanged.

    Values of one Python type get a nullable pandas dtype (``boolean``, ``Int64``, ``Float64``, ``string``;
    missing values are ``<NA>``); a column mixing types (``1`` and ``"a"``, or ints and floats) stays
    ``object`` with each value kept as written (storage encodes such columns as JSON). A float NaN counts as
    missing.
    """
    import pandas as pd

    # NaN in a tag column only ever means "missing": tags are validated finite, and concatenating frames where
    # a tag is absent from some rows fills those rows with NaN
    vals = [None if (v is None or v is pd.NA or (isinstance(v, float) and v != v)) else _plain(v) for v in values]
    kinds = {type(v) for v in vals if v is not None}
    if kinds == {bool}:
        return pd.array(vals, dtype="boolean")
    if kinds == {int}:
        return pd.array(vals, dtype="Int64")
    if kinds == {float}:
        return pd.array(vals, dtype="Float64")
    if kinds <= {str}:
        return pd.array(vals, dtype="string")
    return pd.array(vals, dtype=object)


def normalize_frame(df):
    """Cast a tidy table to the canonical dtypes and column order (after every read, so round trips keep them)."""
    import pandas as pd

    df = df.copy()
    for c in _STRING_COLUMNS:
        if c in df:
            df[c] = df[c].astype("string")
    for c in _INT_COLUMNS:
        if c in df:
            df[c] = pd.to_numeric(df[c]).astype("Int64")
    if "value" in df:
        df["value"] = pd.to_numeric(df["value"], errors="coerce").astype("float64")
    for c in COLUMNS:
        if c not in df.columns:
            df[c] = pd.array([pd.NA] * len(df), dtype="Int64" if c in _INT_COLUMNS else "string")
    for c in df.columns:
        if c not in COLUMNS:
            df[c] = tag_column(df[c].tolist())
    ordered = list(COLUMNS) + [c for c in df.columns if c not in COLUMNS]
    return df[ordered].reset_index(drop=True)


def concat_frames(frames: Sequence[Any]):
    """Concatenate tidy frames whose tag columns differ, without losing a tag's type.

    A tag absent from some frames is added to them as missing (``object``) before concatenating, so an
    integer tag stays integer instead of turning into floats, then the result is normalised.
    """
    import pandas as pd

    frames = list(frames)
    if not frames:
        return records_frame([])
    names: list[str] = []
    for f in frames:
        names += [c for c in f.columns if c not in names]
    dtypes = {c: {str(f[c].dtype) for f in frames if c in f.columns} for c in names}
    mixed = [c for c in names if c not in COLUMNS and len(dtypes[c]) > 1]  # e.g. an int tag in one, float in another
    aligned = []
    for f in frames:
        f = f.copy()
        for c in names:
            if c not in f.columns:
                f[c] = pd.array([None] * len(f), dtype=object)
            elif c in mixed:
                f[c] = pd.array([None if v is pd.NA else v for v in f[c].tolist()], dtype=object)
        aligned.append(f[names])
    return normalize_frame(pd.concat(aligned, ignore_index=True))


def layers_frame(rows: Sequence[Mapping[str, Any]]):
    """The layers side table (columns :data:`LAYER_COLUMNS`) from rows of dicts, in canonical dtypes."""
    import pandas as pd

    df = pd.DataFrame(list(rows), columns=list(LAYER_COLUMNS)) if rows else pd.DataFrame(columns=list(LAYER_COLUMNS))
    for c in ("layer", "view", "module_type", "dtype", "skip_reason"):
        df[c] = df[c].astype("string")
    for c in ("N", "M", "num_matrices"):
        df[c] = pd.to_numeric(df[c]).astype("Int64")
    df["Q"] = pd.to_numeric(df["Q"]).astype("float64")
    return df


def jsonable(obj: Any) -> Any:
    """``obj`` with numpy scalars made plain and unknown objects turned into strings, for JSON metadata."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)
