"""Shared fixtures. Tests build everything in-process from seeded RNGs and download nothing."""

from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


@pytest.fixture(autouse=True, scope="session")
def _one_blas_thread():
    """Multi-threaded OpenBLAS spins under CPU contention (DESIGN §6): 0.03 s tests then take seconds."""
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
