"""Fixtures for the reliability suite: single-threaded torch (2 shared cores) and no installed plugins leaking."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
