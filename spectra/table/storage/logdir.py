"""A log directory: what a streaming run writes while it goes on, one part per analyzed step.

Layout::

    log_dir/
      runs/<run_id>.json                          one per run: run id, run name, attrs, layers table
      records/step-<step:08d>-<run_id>[-r<rank>]-<id>.parquet   one part per step, run and rank
      records/superseded/                          parts set aside when a run resumed from an earlier step

Every part carries its run id (in its name and its metadata), so two runs in one directory (a restart, two
monitors, DDP ranks without ``distributed=``) are never merged: :func:`read_log_dir` reads one run, and says
which runs there are when it is not told which. Resuming a run at step t moves the parts of that run with
steps after t into ``records/superseded/`` (they will be recomputed; nothing is deleted that another run
wrote). Parts and meta files that spectra did not write, or that are truncated, are skipped with a warning
naming the file; one bad file never stops the others. A directory from the first release (``meta.json`` and
parts without a run id) reads as one run, ``"legacy"``.
"""

from __future__ import annotations

import json
import re
import sys
import uuid
import warnings
from pathlib import Path
from typing import Any, Sequence

from ..schema import COLUMNS, Record, concat_frames, layers_frame, normalize_frame, records_frame
from .files import TableData, atomic_write, meta_json
from .parquet import parquet_bytes, read_parquet_table

__all__ = [
    "PART_GLOB",
    "LEGACY_RUN",
    "ALL_RUNS",
    "new_run_id",
    "write_part",
    "write_run_meta",
    "run_meta_path",
    "supersede_after",
    "list_runs",
    "read_log_dir",
]

PART_GLOB = "step-*.parquet"
LEGACY_RUN = "legacy"
ALL_RUNS = "all"
_RUN_ID_KEY = b"spectra.run_id"
_RUN_ID = re.compile(r"^[0-9a-f]{12}$")
_PART = re.compile(r"^step-(\d{8})-([0-9a-f]{12})(?:-r(\d+))?-([0-9a-f]{8})\.parquet$")


def new_run_id() -> str:
    """A fresh run id: 12 hex digits."""
    return uuid.uuid4().hex[:12]


def _check_run_id(run_id: str) -> str:
    if not isinstance(run_id, str) or not _RUN_ID.match(run_id):
        raise ValueError(f"a run id is 12 lowercase hex digits, got {run_id!r}")
    return run_id


def _rank_suffix() -> str:
    """``-r<rank>`` inside an initialised torch.distributed job, else ``""`` (never imports torch.distributed)."""
    dist = sys.modules.get("torch.distributed")
    try:
        if dist is not None and dist.is_available() and dist.is_initialized():
            return f"-r{dist.get_rank()}"
    except Exception:  # pragma: no cover - a broken distributed setup must not stop logging
        pass
    return ""


def run_meta_path(log_dir: str | Path, run_id: str) -> Path:
    """Where a run's meta file lives."""
    return Path(log_dir) / "runs" / f"{_check_run_id(run_id)}.json"


def write_run_meta(log_dir: str | Path, run_id: str, attrs: dict[str, Any], layers: Any) -> Path:
    """Write (atomically) a run's conventions and layers table as ``runs/<run_id>.json``."""
    path = run_meta_path(log_dir, run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"run_id": run_id, **meta_json({**attrs, "run_id": run_id}, layers)}
    text = json.dumps(meta, indent=1)
    return atomic_write(path, lambda fh: fh.write(text), binary=False)


def write_part(log_dir: str | Path, records: Sequence[Record], step: int, run_id: str) -> Path | None:
    """Write one batch of records as a part of run ``run_id``; its path, or None for an empty batch."""
    if not records:
        return None
    _check_run_id(run_id)
    data = parquet_bytes(records_frame(records), {_RUN_ID_KEY: run_id.encode()})
    parts = Path(log_dir) / "records"
    parts.mkdir(parents=True, exist_ok=True)
    path = parts / f"step-{int(step):08d}-{run_id}{_rank_suffix()}-{uuid.uuid4().hex[:8]}.parquet"
    return atomic_write(path, lambda fh: fh.write(data))


_UNREADABLE = "<unreadable>"


def _run_of(path: Path) -> str:
    """The run id in a part's metadata (``"legacy"`` when it has none; ``"<unreadable>"`` for a broken file)."""
    import pyarrow.parquet as pq

    try:
        meta = pq.read_schema(path).metadata or {}
    except Exception:
        return _UNREADABLE
    return meta.get(_RUN_ID_KEY, LEGACY_RUN.encode()).decode(errors="replace")


def _parts(log_dir: Path) -> list[tuple[Path, str, int | None]]:
    """``(path, run_id, step)`` of every part: the run id from the name spectra gives parts, else from the
    file's metadata (``"legacy"`` for first-release parts, ``"<unreadable>"`` for files that cannot be read)."""
    out = []
    for p in sorted((log_dir / "records").glob(PART_GLOB)):
        m = _PART.match(p.name)
        out.append((p, m.group(2), int(m.group(1))) if m else (p, _run_of(p), None))
    return out


def supersede_after(log_dir: str | Path, run_id: str, step: int) -> list[Path]:
    """Move the parts of ``run_id`` with steps after ``step`` into ``records/superseded/``; their new paths."""
    log_dir = Path(log_dir)
    moved = []
    for p, rid, s in _parts(log_dir):
        if rid == run_id and s is not None and s > step:
            dest = log_dir / "records" / "superseded" / p.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                p.replace(dest)
            except FileNotFoundError:  # another rank of the same run moved it first
                pass
            moved.append(dest)
    return moved


def _read_meta(path: Path) -> dict[str, Any] | None:
    """A meta file's ``{"attrs": dict, "layers": list}``, or None (with a warning naming it) when malformed."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(meta, dict):
            raise ValueError(f"holds a {type(meta).__name__}, expected a JSON object")
        attrs, layers = meta.get("attrs", {}), meta.get("layers", [])
        if not isinstance(attrs, dict) or not isinstance(layers, list) or not all(isinstance(r, dict) for r in layers):
            raise ValueError("expected 'attrs' to be an object and 'layers' a list of objects")
        layers_frame(layers)
    except Exception as exc:
        warnings.warn(f"ignoring unreadable meta file {path}: {exc}", RuntimeWarning, stacklevel=3)
        return None
    return {**meta, "attrs": attrs, "layers": layers}


def list_runs(log_dir: str | Path) -> dict[str, dict[str, Any]]:
    """The runs of a log directory: ``{run_id: {"run": name, "steps": [...], "meta": meta or None}}``."""
    log_dir = Path(log_dir)
    runs: dict[str, dict[str, Any]] = {}
    for p in sorted((log_dir / "runs").glob("*.json")):
        if _RUN_ID.match(p.stem):
            meta = _read_meta(p)
            runs[p.stem] = {"run": (meta or {}).get("attrs", {}).get("run"), "steps": [], "meta": meta}
    for p, rid, s in _parts(log_dir):
        if rid == _UNREADABLE:
            warnings.warn(f"skipping unreadable results part {p.name}: not a readable parquet file (truncated, "
                          "empty or not written by spectra)", RuntimeWarning, stacklevel=3)
            continue
        entry = runs.setdefault(rid, {"run": None, "steps": [], "meta": None})
        if s is not None:
            entry["steps"].append(s)
    if LEGACY_RUN in runs and (log_dir / "meta.json").exists():
        runs[LEGACY_RUN]["meta"] = _read_meta(log_dir / "meta.json")
    for entry in runs.values():
        entry["steps"] = sorted(set(entry["steps"]))
    return runs


def _check_part(df: Any) -> None:
    """Raise ValueError unless ``df`` has every column of the tidy table with a type spectra writes there."""
    import pandas as pd

    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"not a spectra records part: columns {missing} are missing")
    for c in ("step", "index"):
        if not (pd.api.types.is_integer_dtype(df[c]) or df[c].isna().all()):
            raise ValueError(f"column {c!r} holds {df[c].dtype} values, expected integers")
    if not pd.api.types.is_float_dtype(df["value"]):
        raise ValueError(f"column 'value' holds {df['value'].dtype} values, expected floats")
    for c in ("run", "layer", "view", "matrix", "analyzer", "metric", "status", "message"):
        if not all(isinstance(v, str) for v in df[c].dropna().tolist()):
            raise ValueError(f"column {c!r} holds values that are not strings")


def _read_part(path: Path) -> Any | None:
    """One part's frame, or None (with a warning naming the file) when it is unreadable or not a spectra part."""
    try:
        df, _ = read_parquet_table(path)
        _check_part(df)
        return normalize_frame(df)
    except Exception as exc:  # a truncated, foreign or mistyped file: skip it, keep the rest
        warnings.warn(f"skipping unreadable results part {path.name}: {exc}", RuntimeWarning, stacklevel=3)
        return None


def _describe_runs(runs: dict[str, dict[str, Any]]) -> str:
    parts = []
    for rid, e in runs.items():
        steps = e["steps"]
        span = f"steps {steps[0]}-{steps[-1]} ({len(steps)} analyzed)" if steps else "no records"
        parts.append(f"{rid} (run={e['run']!r}, {span})")
    return "; ".join(parts)


def read_log_dir(log_dir: str | Path, run_id: str | None = None) -> TableData:
    """Reload one run (or every run, side by side) from a log directory.

    Args:
        log_dir: the directory.
        run_id: which run; ``None`` is allowed when the directory holds one run; ``"all"`` returns every run,
            with a ``run_id`` column telling them apart (attrs and layers are then the first run's).

    Returns:
        The run's rows in step order and, within a step, in the layers table's order (parts of several ranks
        interleave layers), with its attrs (``attrs["run_id"]`` included) and layers table.

    Raises:
        ValueError: ``run_id`` is None and the directory holds several runs (the message lists them), or the
            requested run is not there.
    """
    import pandas as pd

    log_dir = Path(log_dir)
    runs = list_runs(log_dir)
    if run_id is None:
        if len(runs) > 1:
            raise ValueError(
                f"{log_dir} holds {len(runs)} runs, and spectra never merges runs: {_describe_runs(runs)}. Pass "
                f"run_id=<one of them>, or run_id='all' to read them side by side with a run_id column"
            )
        run_id = next(iter(runs), None)
    elif run_id != ALL_RUNS and run_id not in runs:
        raise ValueError(f"{log_dir} holds no run {run_id!r}; runs: {_describe_runs(runs) or 'none'}")
    chosen = list(runs) if run_id == ALL_RUNS else ([run_id] if run_id is not None else [])
    first_meta = next((runs[r]["meta"] for r in chosen if runs[r]["meta"]), None) or {}
    attrs, layers = dict(first_meta.get("attrs", {})), first_meta.get("layers", [])
    frames = []
    for rid in chosen:
        meta = runs[rid]["meta"] or {}
        order = {name: i for i, name in enumerate(dict.fromkeys(r.get("layer") for r in meta.get("layers", [])))}
        got = [f for p, r, _ in _parts(log_dir) if r == rid for f in [_read_part(p)] if f is not None]
        if not got:
            continue
        df = concat_frames(got)
        position = df["layer"].map(order).astype("Float64").fillna(len(order)).astype("int64")
        df = (df.assign(_pos=position).sort_values(["step", "_pos"], kind="stable")
              .drop(columns="_pos").reset_index(drop=True))
        if run_id == ALL_RUNS:
            df["run_id"] = rid
        frames.append(df)
    df = concat_frames(frames)
    if run_id not in (None, ALL_RUNS):
        attrs.setdefault("run_id", run_id)
    return TableData(df, attrs, layers_frame(layers))
