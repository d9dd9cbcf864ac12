"""RELIABILITY.md is exactly the rendering of the tested fault matrix (regenerate: python -m tests.reliability.render)."""

from __future__ import annotations

from .render import DOC, render


def test_reliability_md_matches_the_tested_fault_matrix():
    assert DOC.exists(), "RELIABILITY.md is missing; run python -m tests.reliability.render"
    assert DOC.read_text() == render(), "RELIABILITY.md is out of date; run python -m tests.reliability.render"
