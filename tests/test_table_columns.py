"""Records held as columns (spectra.table.columns): the same rows and frame as the Record objects they hold."""

from __future__ import annotations

import math
import sys

import numpy as np
import pandas as pd

from spectra.table.columns import RecordColumns
from spectra.table.results import Results
from spectra.table.schema import Record, records_frame


def _records(step: int, n: int = 7, tags=None) -> list[Record]:
    tags = {"seed": 3, "lr": 0.5} if tags is None else tags
    out = []
    for i in range(n):
        out.append(Record("run", step, f"layer{i % 3}", "W", ("weight", "update")[i % 2], "esd", f"m{i}",
                          math.nan if i == 4 else i / 7, None if i % 3 else i, "ok" if i != 4 else "failed",
                          "" if i != 4 else "ValueError: x", tags))
    return out


def _same(a: list[Record], b: list[Record]) -> bool:
    """Equal rows (NaN values compare equal)."""
    return [repr(r) for r in a] == [repr(r) for r in b]


def test_block_round_trips_records_and_builds_the_same_frame():
    recs = _records(2) + _records(3, tags={"seed": 4, "note": "b"})
    block = RecordColumns.from_records(recs)
    assert len(block) == len(recs) and _same(block.records(), recs)
    pd.testing.assert_frame_equal(block.frame(), records_frame(recs))
    assert list(block.frame().columns)[-3:] == ["seed", "lr", "note"]


def test_concat_keeps_order_and_empty_blocks_have_the_schema():
    a, b = _records(0), _records(5, n=3)
    joined = RecordColumns.concat([RecordColumns.from_records(a), RecordColumns.from_records(b)])
    assert _same(joined.records(), a + b)
    pd.testing.assert_frame_equal(RecordColumns.concat([]).frame(), records_frame([]))


def test_results_hold_columns_not_record_objects():
    res = Results()
    for step in range(50):
        res.extend(_records(step))
    assert len(res) == 350 and not any(isinstance(v, Record) for v in vars(res).values())
    assert all(isinstance(b, RecordColumns) for b in res._blocks)
    pd.testing.assert_frame_equal(res.to_pandas(), records_frame([r for s in range(50) for r in _records(s)]),
                                  check_flags=False)
    assert len(res._blocks) == 1  # the frame concatenated the blocks once
    res.extend(_records(50))
    assert len(res.to_pandas()) == 357 and res.records[-1].step == 50
    assert _same(res.with_layers([]).records, res.records)


def test_a_block_is_smaller_than_its_record_objects():
    recs = [Record("run", s, "enc.0.fc1", "W", "update", "alignment", "sv", float(i), i, "ok", "", {})
            for s in range(20) for i in range(10)]
    block = RecordColumns.from_records(recs)
    per_object = sum(sys.getsizeof(r) + sys.getsizeof(r.value) for r in recs)  # slots + the float, strings shared
    per_column = (sum(sys.getsizeof(v) for v in block.text.values()) + block.step.nbytes + block.index.nbytes
                  + block.has_index.nbytes + block.value.nbytes + sys.getsizeof(block.tags))
    assert per_column < 0.7 * per_object  # ~100 bytes a row instead of ~160 (strings are shared either way)
    assert np.array_equal(block.value, np.tile(np.arange(10.0), 20))
