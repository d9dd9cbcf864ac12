"""Shared fixtures. Tests build everything in-process from seeded RNGs and download nothing."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from hypothesis import settings

# Property tests draw the same examples on every run (CI must not turn red on a draw it never saw before);
# SPECTRA_HYPOTHESIS=explore draws fresh examples, to hunt for new counterexamples locally.
settings.register_profile("reproducible", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile("explore" if os.environ.get("SPECTRA_HYPOTHESIS") == "explore" else "reproducible")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


@pytest.fixture(autouse=True, scope="session")
def _one_blas_thread():
    """Multi-threaded OpenBLAS spins under CPU contention (docs/design.md, "Conventions"): 0.03 s tests then take seconds."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.fixture(autouse=True)
def _seed_torch():
    torch.manual_seed(0)
    yield


@pytest.fixture
def pm():
    """A plugin manager with the built-ins only (no installed entry points)."""
    from spectra.plugins import get_plugin_manager

    return get_plugin_manager(entrypoints=False)


@pytest.fixture(autouse=True)
def _no_ok_row_is_non_finite(monkeypatch):
    """Every test: no record the analyzers produce with ``status="ok"`` holds a non-finite value.

    A value is "ok" only when it is finite and its estimator's preconditions hold; anything else must be
    ``warn``/``failed``/``skipped`` with the reason. The wrapper only collects (raising inside the pipeline would
    be swallowed by the monitor's error policy); the assertion runs when the test ends.
    """
    import math

    from spectra.pipeline import engine, pipeline

    bad: list = []
    original = engine.run_analyzers

    def checked(*args, **kwargs):
        records = original(*args, **kwargs)
        bad.extend(r for r in records if r.status == "ok" and not math.isfinite(r.value))
        return records

    monkeypatch.setattr(engine, "run_analyzers", checked)
    monkeypatch.setattr(pipeline, "run_analyzers", checked)
    yield
    assert not bad, "ok rows with non-finite values: " + "; ".join(
        f"{r.analyzer}/{r.matrix}/{r.metric}={r.value} (layer {r.layer!r}, step {r.step})" for r in bad[:8])
