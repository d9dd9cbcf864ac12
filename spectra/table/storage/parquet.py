"""Parquet: the tidy frame, with attrs and the layers table in the file's metadata.

Columns of canonical dtypes are stored natively; ``object`` columns (tags mixing types) as JSON text, named in
the ``spectra.json_columns`` metadata, so every value comes back as written.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Sequence

from ..schema import jsonable, layers_frame, normalize_frame
from .files import TableData, atomic_write

__all__ = ["write_parquet", "read_parquet", "parquet_bytes", "read_parquet_table", "jsonable_cell"]

_ATTRS_KEY = b"spectra.attrs"
_LAYERS_KEY = b"spectra.layers"
_JSON_KEY = b"spectra.json_columns"


def _json_columns(df: Any) -> list[str]:
    """Object columns (tags mixing types): stored as JSON text so every value comes back as written."""
    return [c for c in df.columns if df[c].dtype == object]


def _encode_json(df: Any) -> tuple[Any, list[str]]:
    cols = _json_columns(df)
    if not cols:
        return df, cols
    df = df.copy()
    for c in cols:
        df[c] = [json.dumps(jsonable_cell(v, c)) for v in df[c].tolist()]
    return df, cols


def _decode_json(df: Any, cols: Sequence[str]) -> Any:
    import pandas as pd

    for c in cols:
        if c in df:
            df[c] = pd.array([json.loads(v) for v in df[c].tolist()], dtype=object)
    return df


def jsonable_cell(v: Any, column: str) -> Any:
    import pandas as pd

    v = jsonable(v)
    if v is pd.NA:
        return None
    if not (v is None or isinstance(v, (str, int, float, bool))):
        raise TypeError(f"column {column!r} holds a {type(v).__name__} ({v!r}), which cannot be stored")
    return v


def parquet_bytes(df: Any, metadata: dict[bytes, bytes] | None = None) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    df, json_cols = _encode_json(df)
    table = pa.Table.from_pandas(df, preserve_index=False)
    meta = {**dict(table.schema.metadata or {}), **(metadata or {}), _JSON_KEY: json.dumps(json_cols).encode()}
    table = table.replace_schema_metadata(meta)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def read_parquet_table(path: Path) -> tuple[Any, dict[bytes, bytes]]:
    """The frame of a parquet file and its metadata; a truncated or foreign file is a ValueError naming it."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:
        raise ValueError(f"{path} is not a readable parquet file (truncated or not written by spectra?): "
                         f"{type(exc).__name__}: {exc}") from exc
    meta = dict(table.schema.metadata or {})
    df = table.to_pandas()
    return _decode_json(df, json.loads(meta.get(_JSON_KEY, b"[]"))), meta


def write_parquet(path: str | Path, frame: Any, attrs: dict[str, Any], layers: Any) -> Path:
    """Write the tidy ``frame`` as one parquet file with ``attrs`` and the ``layers`` table in its metadata."""
    data = parquet_bytes(
        frame,
        {_ATTRS_KEY: json.dumps(jsonable(attrs)).encode(), _LAYERS_KEY: layers.to_json(orient="records").encode()},
    )
    return atomic_write(Path(path), lambda fh: fh.write(data))


def read_parquet(path: str | Path) -> TableData:
    """Read a file written by :func:`write_parquet`.

    Raises:
        ValueError: the file is truncated or not a parquet file.
    """
    df, meta = read_parquet_table(Path(path))
    attrs = json.loads(meta.get(_ATTRS_KEY, b"{}"))
    layers = json.loads(meta.get(_LAYERS_KEY, b"[]"))
    return TableData(normalize_frame(df), attrs, layers_frame(layers))


