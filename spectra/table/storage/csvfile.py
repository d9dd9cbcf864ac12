"""CSV: the tidy frame as text, with ``<name>.meta.json`` beside it that makes the round trip exact.

CSV has no types and no missing value distinct from the empty string, so pandas guesses: a layer ``0.10``
would come back as ``0.1``, ``007`` as ``7.0``, ``NA`` or ``""`` as missing. spectra writes every cell quoted
and, in the sidecar, each column's kind, the rows where a text column is missing, and the row count. Its
reader takes every cell as the exact text written and decodes it by that kind, so any string a layer or tag
may hold (quotes, commas, ``\\r``, ``NA``, ``null``, leading zeros) comes back unchanged, and a truncated file
(fewer rows than the sidecar says) is an error rather than a short table.

A CSV without a spectra sidecar (or with one from the first release, which had no ``format`` entry) is read
the way pandas reads it, with its type guessing.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from ..schema import layers_frame, normalize_frame
from .files import TableData, atomic_write, meta_json

__all__ = ["write_csv", "read_csv", "CSV_FORMAT_VERSION"]

CSV_FORMAT_VERSION = 1
# pandas dtype name -> how cells of that column are written and read
_KINDS = {"string": "string", "Int64": "Int64", "boolean": "boolean", "Float64": "Float64", "float64": "float64",
          "object": "json"}


def _meta_path(path: Path) -> Path:
    return path.with_name(path.name + ".meta.json")


def _kind(series: Any) -> str:
    name = str(series.dtype)
    if name not in _KINDS:
        raise TypeError(f"column {series.name!r} has dtype {name}, which spectra's CSV cannot store exactly")
    return _KINDS[name]


def _encode(value: Any, kind: str) -> str:
    import pandas as pd

    if kind == "json":
        from .parquet import jsonable_cell

        return json.dumps(jsonable_cell(value, "tag"))
    if value is None or value is pd.NA:
        return ""
    if kind in ("float64", "Float64"):
        return repr(float(value))  # 'nan', 'inf' and shortest round-trip digits
    if kind == "boolean":
        return "True" if value else "False"
    return str(value)


def _decode(cells: list[str], kind: str, na_rows: set[int]) -> Any:
    import pandas as pd

    if kind == "json":
        return pd.array([json.loads(c) for c in cells], dtype=object)
    if kind == "string":
        return pd.array([None if i in na_rows else c for i, c in enumerate(cells)], dtype="string")
    if kind == "Int64":
        return pd.array([None if c == "" else int(c) for c in cells], dtype="Int64")
    if kind == "boolean":
        return pd.array([None if c == "" else c == "True" for c in cells], dtype="boolean")
    values = [math.nan if c == "" else float(c) for c in cells]
    if kind == "Float64":
        return pd.array([None if c == "" else v for c, v in zip(cells, values)], dtype="Float64")
    return pd.array(values, dtype="float64")


def write_csv(path: str | Path, frame: Any, attrs: dict[str, Any], layers: Any) -> Path:
    """Write the tidy ``frame`` as CSV, and ``<name>.meta.json`` beside it (attrs, layers, column kinds).

    Both files are written atomically, the CSV first: a kill between the two leaves a sidecar whose row count
    no longer matches, which the reader reports.
    """
    import pandas as pd

    path = Path(path)
    kinds = {str(c): _kind(frame[c]) for c in frame.columns}
    na_rows = {
        str(c): [i for i, v in enumerate(frame[c].tolist()) if v is None or v is pd.NA]
        for c in frame.columns if kinds[str(c)] == "string"
    }
    header = [str(c) for c in frame.columns]
    columns = [[_encode(v, kinds[h]) for v in frame[c].tolist()] for h, c in zip(header, frame.columns)]

    def write(fh: Any) -> None:
        writer = csv.writer(fh, quoting=csv.QUOTE_ALL, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(zip(*columns))

    atomic_write(path, write, binary=False)
    meta = meta_json(attrs, layers)
    meta["format"] = {"version": CSV_FORMAT_VERSION, "rows": len(frame), "columns": kinds,
                      "na": {k: v for k, v in na_rows.items() if v}}
    text = json.dumps(meta, indent=1)
    atomic_write(_meta_path(path), lambda fh: fh.write(text), binary=False)
    return path


def read_csv(path: str | Path) -> TableData:
    """Read a file written by :func:`write_csv` exactly (or any CSV, with pandas' type guessing).

    Raises:
        ValueError: the sidecar is malformed, or the file holds another number of rows or other columns than
            the sidecar says (a truncated or edited file).
    """
    import pandas as pd

    path = Path(path)
    meta_path = _meta_path(path)
    meta: dict[str, Any] = {}
    if meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ValueError(f"{meta_path} is not valid JSON: {exc}") from exc
        if not isinstance(meta, dict):
            raise ValueError(f"{meta_path} holds a {type(meta).__name__}, expected a JSON object")
    fmt = meta.get("format")
    if not isinstance(fmt, dict):  # a foreign CSV, or one from before the exact format
        df = pd.read_csv(path, keep_default_na=True, dtype={"message": "string"})
        if "message" in df:
            df["message"] = df["message"].fillna("")
    else:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8")
        kinds = fmt.get("columns", {})
        if list(raw.columns) != list(kinds):
            raise ValueError(f"{path}: columns {list(raw.columns)} differ from its sidecar's {list(kinds)}")
        if len(raw) != fmt.get("rows"):
            raise ValueError(f"{path} holds {len(raw)} rows but its sidecar says {fmt.get('rows')}: the file is "
                             "truncated or was changed after it was written")
        na = fmt.get("na", {})
        df = pd.DataFrame({c: _decode(raw[c].tolist(), kinds[c], set(na.get(c, ()))) for c in raw.columns})
    attrs = meta.get("attrs", {}) if isinstance(meta.get("attrs", {}), dict) else {}
    layers = meta.get("layers", []) if isinstance(meta.get("layers", []), list) else []
    return TableData(normalize_frame(df), attrs, layers_frame(layers))
