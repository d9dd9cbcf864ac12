"""The tidy table: its schema, its on-disk formats and the :class:`Results` views over it.

Arrows point one way: :mod:`.schema` ← :mod:`.storage` ← :mod:`.results`.
"""

from .results import Results
from .schema import COLUMNS, LAYER_COLUMNS, MATRICES, SCHEMA_VERSION, STATUSES, Record

__all__ = ["Results", "Record", "COLUMNS", "LAYER_COLUMNS", "MATRICES", "STATUSES", "SCHEMA_VERSION"]
