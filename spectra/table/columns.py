"""Records held as columns: what a driver keeps in memory between steps, and how the tidy frame is built.

One :class:`~spectra.table.schema.Record` object per row costs ~250 bytes of Python objects (the slots, a float,
an int, a tags dict). A :class:`RecordColumns` block holds a step's rows as one array per numeric column and
one list of shared string objects per text column (~80 bytes a row), and builds the tidy frame from its columns
without creating a Python object per row. Blocks concatenate cheaply (:meth:`RecordColumns.concat`), so a run's
frame is built once from all of its steps instead of by concatenating a pandas frame per step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from .schema import TEXT_COLUMNS as _TEXT
from .schema import Record, columns_frame

__all__ = ["RecordColumns"]


@dataclass(frozen=True, eq=False)
class RecordColumns:
    """A block of records as columns (see the module docstring).

    Attributes:
        text: column name → list of str, for the text columns of :data:`~spectra.table.schema.COLUMNS`.
        step: int64 steps.
        index: int64 indices (valid where ``has_index``).
        has_index: False where the row's ``index`` is missing (a scalar metric).
        value: float64 values.
        tags: per row, the mapping of extra columns (rows of one analyzer call share one mapping).
    """

    text: Mapping[str, list[str]]
    step: np.ndarray
    index: np.ndarray
    has_index: np.ndarray
    value: np.ndarray
    tags: list[Mapping[str, Any]]

    @classmethod
    def from_records(cls, records: Sequence[Record]) -> "RecordColumns":
        """The columns of ``records`` (in order)."""
        n = len(records)
        index = np.zeros(n, dtype=np.int64)
        has_index = np.zeros(n, dtype=bool)
        for i, r in enumerate(records):
            if r.index is not None:
                index[i] = r.index
                has_index[i] = True
        return cls(
            text={c: [getattr(r, c) for r in records] for c in _TEXT},
            step=np.fromiter((r.step for r in records), dtype=np.int64, count=n),
            index=index,
            has_index=has_index,
            value=np.fromiter((r.value for r in records), dtype=np.float64, count=n),
            tags=[r.tags for r in records],
        )

    @classmethod
    def concat(cls, blocks: Sequence["RecordColumns"]) -> "RecordColumns":
        """One block holding the rows of ``blocks`` in order."""
        if len(blocks) == 1:
            return blocks[0]
        if not blocks:
            return cls.from_records([])
        return cls(
            text={c: [v for b in blocks for v in b.text[c]] for c in _TEXT},
            step=np.concatenate([b.step for b in blocks]),
            index=np.concatenate([b.index for b in blocks]),
            has_index=np.concatenate([b.has_index for b in blocks]),
            value=np.concatenate([b.value for b in blocks]),
            tags=[t for b in blocks for t in b.tags],
        )

    def __len__(self) -> int:
        return int(self.value.size)

    def records(self) -> list[Record]:
        """The rows as :class:`Record` objects."""
        t = self.text
        return [
            Record(t["run"][i], int(self.step[i]), t["layer"][i], t["view"][i], t["matrix"][i], t["analyzer"][i],
                   t["metric"][i], float(self.value[i]), int(self.index[i]) if self.has_index[i] else None,
                   t["status"][i], t["message"][i], self.tags[i])
            for i in range(len(self))
        ]

    def frame(self):
        """The tidy frame of the block, in canonical dtypes (tags become extra columns, in order of appearance)."""
        return columns_frame(self.text, step=self.step, index=self.index, has_index=self.has_index,
                             value=self.value, tags=self.tags)
