"""The fault matrix's data model: one :class:`Case` per (input, entry point), registered with :func:`case`.

The cases live in ``fault_cases.py`` (the first round) and ``cases_*.py`` (one module per class of fault);
:func:`all_cases` imports every one of them. ``test_fault_matrix.py`` runs them and ``render.py`` writes the
same list into RELIABILITY.md.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

CASE_MODULES = ("fault_cases", "cases_runs", "cases_storage", "cases_numbers", "cases_files", "cases_cli")

ENTRY_FUNCTIONAL = "functional (esd / fit_power_law / norm_metrics / mp_fit)"
ENTRY_ANALYZE = "spectra.analyze"
ENTRY_MONITOR = "SpectraMonitor"
ENTRY_CLI = "CLI `spectra analyze`"
ENTRY_STORAGE = "storage (Results.read / to_parquet / to_csv / log_dir)"
ENTRIES = (ENTRY_FUNCTIONAL, ENTRY_ANALYZE, ENTRY_MONITOR, ENTRY_CLI, ENTRY_STORAGE)


@dataclass(frozen=True)
class Case:
    """One row of the fault matrix."""

    input: str
    entry: str
    outcome: str
    check: Callable[[Path], None]

    @property
    def id(self) -> str:
        return f"{self.entry.split()[0]}::{self.input}"


CASES: list[Case] = []


def case(input: str, entry: str, outcome: str):
    def deco(fn: Callable[[Path], None]) -> Callable[[Path], None]:
        CASES.append(Case(input, entry, outcome, fn))
        return fn

    return deco


def all_cases() -> list[Case]:
    """Every registered case, in module order (importing a case module registers its cases)."""
    for name in CASE_MODULES:
        importlib.import_module(f"{__package__}.{name}")
    return list(CASES)
