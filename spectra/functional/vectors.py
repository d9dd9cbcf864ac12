"""Eigenvector localization: how many coordinates a top singular vector really uses.

For a unit vector v of length n (Martin & Mahoney, JMLR 2021, §3; WeightWatcher's ``RMT_Util``):

* ``participation_ratio`` = ‖v‖₂/‖v‖₄ = (Σ v_i⁴)^(−1/4): between 1 (one coordinate) and n^(1/4) (flat). Its
  fourth power 1/Σv_i⁴ is the textbook participation number, ≈ n/3 for a random (delocalised) direction.
* ``localization_ratio`` = ‖v‖₁/‖v‖∞: between 1 (one coordinate) and n (flat); ≈ n/√(π ln n) for a
  random direction.

Both are invariant to the sign of v. Low values mean the direction is carried by a few rows or columns: a
localized (often a memorizing or "trap") direction; random-like weights give values near the delocalized
references. WeightWatcher (``vectors=True``) uses the eigenvectors of the smaller Gram matrix, i.e. the
singular vectors on the matrix's *smaller* side; that is the default ``side="small"`` here.
"""

from __future__ import annotations

import numpy as np

__all__ = ["participation_ratio", "localization_ratio", "vector_localization", "SIDES"]

SIDES = ("small", "left", "right")


def participation_ratio(v: np.ndarray) -> np.ndarray:
    """‖v‖₂/‖v‖₄ of a vector, or of each column of a matrix (NaN for a zero vector)."""
    v = np.asarray(v, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.linalg.norm(v, 2, axis=0) / np.sum(v ** 4, axis=0) ** 0.25


def localization_ratio(v: np.ndarray) -> np.ndarray:
    """‖v‖₁/‖v‖∞ of a vector, or of each column of a matrix (NaN for a zero vector)."""
    v = np.abs(np.asarray(v, dtype=np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        return v.sum(axis=0) / v.max(axis=0)


def vector_localization(U: np.ndarray, Vh: np.ndarray, *, side: str = "small") -> dict[str, np.ndarray]:
    """Participation and localization ratios of singular vectors, one value per vector (descending σ).

    Args:
        U: left singular vectors as columns (rows × k).
        Vh: right singular vectors as rows (k × cols).
        side: ``"small"`` (the vectors of length min(rows, cols), as WeightWatcher), ``"left"`` or
            ``"right"``.

    Returns:
        ``{"participation_ratio": (k,), "localization_ratio": (k,)}``.

    Raises:
        ValueError: unknown ``side``.
    """
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    if side == "small":
        side = "left" if U.shape[0] <= Vh.shape[1] else "right"
    X = U if side == "left" else Vh.T
    return {"participation_ratio": participation_ratio(X), "localization_ratio": localization_ratio(X)}
