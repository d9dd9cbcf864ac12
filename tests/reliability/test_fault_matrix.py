"""Runs every row of the fault matrix (``matrix.all_cases()``); RELIABILITY.md is rendered from the same list."""

from __future__ import annotations

import pytest

from .matrix import ENTRIES, all_cases

CASES = all_cases()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_fault_matrix(case, tmp_path):
    case.check(tmp_path)


def test_every_entry_point_is_covered():
    assert {c.entry for c in CASES} == set(ENTRIES)
    assert len({c.id for c in CASES}) == len(CASES), "duplicate (entry, input) rows"
