"""Deprecated location of the table's names: use :mod:`spectra.table` (kept for one release)."""

from .table.results import Results
from .table.schema import COLUMNS, LAYER_COLUMNS, MATRICES, SCHEMA_VERSION, STATUSES, Record, normalize_frame

__all__ = ["Record", "Results", "COLUMNS", "STATUSES", "MATRICES", "LAYER_COLUMNS", "SCHEMA_VERSION", "normalize_frame"]
