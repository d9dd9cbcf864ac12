"""On-disk formats of the tidy table: one writer and one reader per format.

* **parquet**: the tidy frame, with the conventions (``attrs``) and the layers table in the file's metadata.
* **CSV**: the tidy frame, with ``<name>.meta.json`` beside it holding attrs and the layers table.
* **log directory** (what :class:`~spectra.sinks.StreamingSink` writes while a run goes on)::

      log_dir/
        meta.json                                conventions (attrs) and the layers table
        records/step-00000010-<run>[-r<rank>]-<id>.parquet   one part per analyzed step, run and rank

Every file is written to a temporary name in the same directory and renamed into place (``os.replace`` is
atomic on POSIX), so a kill at any moment leaves either the whole file or the previous one, and a failed write
removes its temporary file. A log-directory part that is nevertheless unreadable is skipped with a warning.

Readers return a :class:`TableData` (frame, attrs, layers); :class:`~spectra.table.results.Results` wraps it.
"""

from __future__ import annotations

import io
import json
import os
import uuid
import warnings
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

from .schema import Record, jsonable, layers_frame, normalize_frame, records_frame

__all__ = [
    "TableData",
    "PART_GLOB",
    "META_NAME",
    "atomic_write",
    "write_parquet",
    "read_parquet",
    "write_csv",
    "read_csv",
    "write_part",
    "write_meta",
    "read_log_dir",
    "read_table",
]

PART_GLOB = "step-*.parquet"
META_NAME = "meta.json"
_ATTRS_KEY = b"spectra.attrs"
_LAYERS_KEY = b"spectra.layers"


class TableData(NamedTuple):
    """What a reader returns: the tidy frame, the conventions in force and the layers side table."""

    frame: Any
    attrs: dict[str, Any]
    layers: Any


def atomic_write(path: Path, write: Callable[[Any], None], *, binary: bool = True) -> Path:
    """Write ``path`` through ``write(file_object)`` into a temporary sibling, fsync it, then rename it into place.

    The temporary file is removed when ``write`` raises, and the old file (if any) is left untouched.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb" if binary else "w", **({} if binary else {"newline": "", "encoding": "utf-8"})) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _meta_json(attrs: dict[str, Any], layers: Any) -> dict[str, Any]:
    return {"attrs": jsonable(attrs), "layers": json.loads(layers.to_json(orient="records"))}


def _parquet_bytes(df: Any, metadata: dict[bytes, bytes] | None = None) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)
    if metadata:
        table = table.replace_schema_metadata({**dict(table.schema.metadata or {}), **metadata})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------- parquet
def write_parquet(path: str | Path, frame: Any, attrs: dict[str, Any], layers: Any) -> Path:
    """Write the tidy ``frame`` as one parquet file with ``attrs`` and the ``layers`` table in its metadata."""
    data = _parquet_bytes(
        frame,
        {_ATTRS_KEY: json.dumps(jsonable(attrs)).encode(), _LAYERS_KEY: layers.to_json(orient="records").encode()},
    )
    return atomic_write(Path(path), lambda fh: fh.write(data))


def read_parquet(path: str | Path) -> TableData:
    """Read a file written by :func:`write_parquet`."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    meta = table.schema.metadata or {}
    attrs = json.loads(meta.get(_ATTRS_KEY, b"{}"))
    layers = json.loads(meta.get(_LAYERS_KEY, b"[]"))
    return TableData(normalize_frame(table.to_pandas()), attrs, layers_frame(layers))


# ----------------------------------------------------------------------------------------------- CSV
def _csv_meta_path(path: Path) -> Path:
    return path.with_name(path.name + ".meta.json")


def write_csv(path: str | Path, frame: Any, attrs: dict[str, Any], layers: Any) -> Path:
    """Write the tidy ``frame`` as CSV, and ``<name>.meta.json`` beside it with ``attrs`` and ``layers``."""
    path = Path(path)
    atomic_write(path, lambda fh: frame.to_csv(fh, index=False), binary=False)
    meta = json.dumps(_meta_json(attrs, layers), indent=1)
    atomic_write(_csv_meta_path(path), lambda fh: fh.write(meta), binary=False)
    return path


def read_csv(path: str | Path) -> TableData:
    """Read a file written by :func:`write_csv` (the sidecar is optional)."""
    import pandas as pd

    path = Path(path)
    df = pd.read_csv(path, keep_default_na=True, dtype={"message": "string"})
    df["message"] = df["message"].fillna("")
    attrs: dict[str, Any] = {}
    layers: list = []
    meta_path = _csv_meta_path(path)
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        attrs, layers = meta.get("attrs", {}), meta.get("layers", [])
    return TableData(normalize_frame(df), attrs, layers_frame(layers))


# ----------------------------------------------------------------------------------------------- log dir
def _rank_suffix() -> str:
    """``-r<rank>`` inside an initialised torch.distributed job (each rank streams its own parts), else ``""``.

    Looks only at an already imported ``torch.distributed``: a single-process run never imports it here.
    """
    import sys

    dist = sys.modules.get("torch.distributed")
    try:
        if dist is not None and dist.is_available() and dist.is_initialized():
            return f"-r{dist.get_rank()}"
    except Exception:  # pragma: no cover - a broken distributed setup must not stop logging
        pass
    return ""


def write_part(log_dir: str | Path, records: Sequence[Record], step: int, run: str) -> Path | None:
    """Write one batch of records as a parquet part of ``log_dir``; its path, or None for an empty batch."""
    if not records:
        return None
    data = _parquet_bytes(records_frame(records))
    parts = Path(log_dir) / "records"
    parts.mkdir(parents=True, exist_ok=True)
    safe_run = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(run))[:64]
    path = parts / f"step-{int(step):08d}-{safe_run}{_rank_suffix()}-{uuid.uuid4().hex[:8]}.parquet"
    return atomic_write(path, lambda fh: fh.write(data))


def write_meta(log_dir: str | Path, attrs: dict[str, Any], layers: Any) -> Path:
    """Write the run's conventions and layers table as ``log_dir/meta.json``."""
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_meta_json(attrs, layers), indent=1)
    return atomic_write(log_dir / META_NAME, lambda fh: fh.write(text), binary=False)


def read_log_dir(log_dir: str | Path) -> TableData:
    """Reload a whole run from a ``log_dir``; unreadable parts and an unreadable meta file are skipped with a
    warning naming the file. Rows come back in step order and, within a step, in the layers table's order
    (parts of several ranks interleave layers)."""
    import pandas as pd
    import pyarrow.parquet as pq

    log_dir = Path(log_dir)
    attrs: dict[str, Any] = {}
    layers: list = []
    meta_path = log_dir / META_NAME
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
        order = {name: i for i, name in enumerate(dict.fromkeys(r.get("layer") for r in layers))}
        position = df["layer"].map(order).fillna(len(order)).astype("int64")
        df = (df.assign(_pos=position).sort_values(["run", "step", "_pos"], kind="stable")
              .drop(columns="_pos").reset_index(drop=True))
        df = normalize_frame(df)
    else:
        df = records_frame([])
    return TableData(df, attrs, layers_frame(layers))


# ----------------------------------------------------------------------------------------------- dispatch
def read_table(path: str | Path) -> TableData:
    """Read a parquet file, a CSV file or a log directory.

    Raises:
        FileNotFoundError: nothing at ``path``.
        ValueError: a file that is neither ``.parquet`` nor ``.csv``.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no results at {path}")
    if path.is_dir():
        return read_log_dir(path)
    if path.suffix == ".parquet":
        return read_parquet(path)
    if path.suffix == ".csv":
        return read_csv(path)
    raise ValueError(f"cannot read results from {path}: expected .parquet, .csv or a log directory")
