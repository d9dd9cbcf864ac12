"""Norm metrics of an ESD, with WeightWatcher 0.7.7's definitions and names.

All metrics are computed on the full (pooled, scaled) eigenvalue array, including eigenvalues below any fit
threshold, exactly as WeightWatcher does:

=====================  ===============================================================
``lambda_max``         max λ (= σ_max², WeightWatcher's ``spectral_norm``)
``sv_max``             √λ_max
``norm``               Σλ (= ‖W‖_F²)
``log_norm``           log10 Σλ
``log_spectral_norm``  log10 λ_max
``alpha_weighted``     α · log10 λ_max (needs α)
``log_alpha_norm``     log10 Σ λ^α (needs α)
``stable_rank``        Σλ / λ_max
``matrix_rank``        #{σ > σ_max · N · eps}, σ = √λ, N = the larger matrix dimension
``entropy``            −Σ p ln p / ln(rank + ε) with p = λ/Σλ + ε, ε = 1e-10; −1 when undefined
=====================  ===============================================================
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._validate import as_finite_vector, as_float64_vector

__all__ = ["norm_metrics", "stable_rank", "matrix_rank", "matrix_entropy", "ENTROPY_EPSILON"]

ENTROPY_EPSILON = 1e-10


def matrix_rank(evals: Any, N: int, *, eps: float | None = None) -> int:
    """Numerical rank from eigenvalues: #{σ > σ_max · N · eps} (numpy.linalg.matrix_rank's rule)."""
    s = np.sqrt(np.clip(as_float64_vector(evals), 0.0, None))
    if s.size == 0:
        return 0
    eps = np.finfo(np.float64).eps if eps is None else eps
    return int(np.count_nonzero(s > s.max() * N * eps))


def matrix_entropy(evals: Any, N: int, *, epsilon: float = ENTROPY_EPSILON) -> float:
    """WeightWatcher's normalised spectral entropy in [0, 1]; −1 when undefined (zero matrix)."""
    lam = np.clip(as_float64_vector(evals), 0.0, None)
    total = lam.sum()
    rank = matrix_rank(lam, N) + epsilon
    if total <= 0 or not np.isfinite(total) or rank <= 1.0 + epsilon:
        return -1.0 if total <= 0 or not np.isfinite(total) else 0.0
    p = lam / total + epsilon
    return float(-np.sum(p * np.log(p)) / np.log(rank))


def stable_rank(evals: Any) -> float:
    """Σλ / λ_max (= ‖W‖_F² / ‖W‖_2²); NaN for an all-zero spectrum."""
    lam = as_float64_vector(evals)
    m = lam.max() if lam.size else 0.0
    return float(lam.sum() / m) if m > 0 else math.nan


def norm_metrics(evals: Any, *, N: int | None = None, alpha: float | None = None,
                 rank_floor: float | None = None) -> dict[str, float]:
    """All WeightWatcher norm metrics of one ESD.

    Args:
        evals: eigenvalues (any order), already pooled and scaled.
        N: the larger dimension of the matrix (for ``matrix_rank`` / ``entropy``); defaults to len(evals).
        alpha: the power-law exponent, for ``alpha_weighted`` and ``log_alpha_norm``; omitted when None or not
            finite.
        rank_floor: when given, ``matrix_rank`` counts the eigenvalues above it (e.g. :func:`noise_floor` of
            the weights' dtype) instead of numpy's float64 rule.

    Returns:
        A dict keyed by WeightWatcher's metric names (see the module docstring). Logarithms of non-positive
        quantities are ``-inf`` (an all-zero matrix), never an exception.

    Raises:
        ValueError: no eigenvalues, or some are NaN/Inf (the count is given).
        TypeError: complex eigenvalues.
    """
    lam = np.clip(as_finite_vector(evals), 0.0, None)
    if lam.size == 0:
        raise ValueError("norm_metrics needs at least one eigenvalue")
    N = int(N) if N is not None else lam.size
    total = float(lam.sum())
    lmax = float(lam.max())
    with np.errstate(divide="ignore"):
        out = {
            "lambda_max": lmax,
            "sv_max": math.sqrt(lmax),
            "norm": total,
            "log_norm": float(np.log10(total)),
            "log_spectral_norm": float(np.log10(lmax)),
            "stable_rank": total / lmax if lmax > 0 else math.nan,
            "matrix_rank": float(matrix_rank(lam, N) if rank_floor is None else np.count_nonzero(lam > rank_floor)),
            "entropy": matrix_entropy(lam, N),
        }
        if alpha is not None and np.isfinite(alpha):
            out["alpha_weighted"] = float(alpha * np.log10(lmax))
            out["log_alpha_norm"] = float(np.log10(np.sum(lam**alpha)))
    return out


def dtype_eps(dtype: Any) -> float:
    """Machine epsilon of a torch or numpy floating dtype (float64's for anything else)."""
    try:
        import torch

        if isinstance(dtype, torch.dtype) and dtype.is_floating_point:
            return float(torch.finfo(dtype).eps)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    try:
        return float(np.finfo(dtype).eps)
    except (TypeError, ValueError):
        return float(np.finfo(np.float64).eps)


def rounding_resolution(N: int, M: int, eps: float) -> float:
    """The relative size of singular-value changes that rounding the weights to ``eps`` can cause:
    ``eps·sqrt(max(N, M))`` (a random rounding perturbation E has ‖E‖₂ ≈ eps·σ_max·sqrt(max(N, M))/σ-scale).
    Eigenvalues of a tail that differ by less than this are equal up to rounding."""
    return float(eps) * math.sqrt(max(int(N), int(M)))


def noise_floor(lam_max: float, N: int, M: int, eps: float) -> float:
    """Eigenvalues ``λ = σ²`` at or below ``λ_max·eps²·max(N, M)`` are rounding noise: the singular values a
    rank-deficient matrix gets from rounding to ``eps`` are about ``σ_max·eps·sqrt(max(N, M))``."""
    return float(lam_max) * float(eps) ** 2 * max(int(N), int(M))
