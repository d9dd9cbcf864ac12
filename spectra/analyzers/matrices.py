"""Which matrices an opt-in analyzer (farms, randomize, vectors) reads, and how it reads them."""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

__all__ = ["check_matrices", "raw_stack"]

KINDS = ("weight", "update", "grad")


def check_matrices(matrices: Iterable[str], name: str) -> tuple[str, ...]:
    """Validate a ``matrices=`` option: a non-empty subset of ``("weight", "update", "grad")``."""
    out = tuple(matrices)
    bad = [m for m in out if m not in KINDS]
    if bad or not out:
        raise ValueError(f"{name} option matrices must be a non-empty subset of {KINDS}, got {list(out)!r}")
    return out


def raw_stack(layer: Any, kind: str) -> np.ndarray:
    """The matrix of a view as float64 numpy: 2-D, or the (slices, rows, cols) stack of a pooled Conv view."""
    t = layer.tensors[kind]
    if len(tuple(t.shape)) == 3:
        if hasattr(t, "detach"):
            return t.detach().to("cpu").double().numpy()
        return np.asarray(t, dtype=np.float64)
    return layer.array(kind)
