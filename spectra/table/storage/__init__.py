"""On-disk formats of the tidy table: one writer and one reader per format.

* :mod:`.parquet`: one file, attrs and the layers table in its metadata.
* :mod:`.csvfile`: CSV with a ``.meta.json`` sidecar that makes the round trip exact.
* :mod:`.logdir`: a streaming run's directory: one part per step, run and rank, and a meta file per run.

Every file is written to a temporary sibling, fsynced and renamed into place (:func:`.files.atomic_write`),
so a kill at any moment leaves the whole new file or the old one, and a failed write removes its temporary
file. Readers return a :class:`TableData` (frame, attrs, layers); :class:`~spectra.table.results.Results`
wraps it.
"""

from __future__ import annotations

from pathlib import Path

from .csvfile import read_csv, write_csv
from .files import TableData, atomic_write
from .logdir import (
    ALL_RUNS,
    LEGACY_RUN,
    PART_GLOB,
    list_runs,
    new_run_id,
    read_log_dir,
    run_meta_path,
    supersede_after,
    write_part,
    write_run_meta,
)
from .parquet import read_parquet, write_parquet

__all__ = [
    "TableData", "atomic_write", "write_parquet", "read_parquet", "write_csv", "read_csv", "write_part",
    "write_run_meta", "run_meta_path", "read_log_dir", "list_runs", "new_run_id", "supersede_after", "read_table", "PART_GLOB",
    "LEGACY_RUN", "ALL_RUNS",
]


def read_table(path: str | Path, *, run_id: str | None = None) -> TableData:
    """Read a parquet file, a CSV file or a log directory (``run_id`` picks a run of a log directory).

    Raises:
        FileNotFoundError: nothing at ``path``.
        ValueError: a file that is neither ``.parquet`` nor ``.csv``, a truncated or malformed file, or a log
            directory with several runs and no ``run_id``.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no results at {path}")
    if path.is_dir():
        return read_log_dir(path, run_id=run_id)
    if run_id is not None:
        raise ValueError(f"run_id= selects a run of a log directory; {path} is a file")
    if path.suffix == ".parquet":
        return read_parquet(path)
    if path.suffix == ".csv":
        return read_csv(path)
    raise ValueError(f"cannot read results from {path}: expected .parquet, .csv or a log directory")
