"""Runs every row of the fault matrix (``fault_cases.CASES``); RELIABILITY.md is rendered from the same list."""

from __future__ import annotations

import pytest

from .fault_cases import CASES


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_fault_matrix(case, tmp_path):
    case.check(tmp_path)


def test_every_entry_point_is_covered():
    from .fault_cases import ENTRY_ANALYZE, ENTRY_CLI, ENTRY_FUNCTIONAL, ENTRY_MONITOR

    entries = {c.entry for c in CASES}
    assert entries == {ENTRY_FUNCTIONAL, ENTRY_ANALYZE, ENTRY_MONITOR, ENTRY_CLI}
    assert len({c.id for c in CASES}) == len(CASES), "duplicate (entry, input) rows"
