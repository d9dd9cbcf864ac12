"""Per-layer seeds for the analyzers that draw random numbers (the bootstrap, the shuffled null).

A user gives one integer ``seed``; every (layer, view, step) gets its own stream derived from it, so that two
layers never share random numbers, a layer's numbers do not depend on which other layers are analysed or on
which process analyses it (distributed sharding), and a rerun with the same seed reproduces every value. The
global numpy and torch generators are never touched.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

__all__ = ["layer_seed"]


def layer_seed(seed: int | None, layer: Any) -> np.random.SeedSequence | None:
    """The seed sequence of one layer view at one step: ``SeedSequence([seed, crc32(layer/view), step])``.

    Args:
        seed: the user's seed; ``None`` means fresh OS entropy (not reproducible).
        layer: a :class:`~spectra.snapshot.LayerState` (its ``layer``, ``view`` and ``step`` are used).

    Returns:
        A :class:`numpy.random.SeedSequence` to build a ``numpy.random.Generator`` from, or ``None``.
    """
    if seed is None:
        return None
    name = f"{getattr(layer, 'layer', '')}/{getattr(layer, 'view', '')}".encode()
    return np.random.SeedSequence([int(seed), zlib.crc32(name), int(getattr(layer, "step", 0))])
