"""Error bounds that decide which route's numbers can be trusted.

**The Gram route's bound.** The eigenvalues λ̂_i of the computed Gram matrix fl(AᵀA) differ from the exact
σ_i(A)² by the rounding of the product plus the backward error of the symmetric eigensolver. By Weyl's
inequality both are absolute perturbations, the same for every i:

    |λ̂_i − σ_i²| ≤ δ = GRAM_ERROR_FACTOR · eps · ‖A‖²_F.

The worst-case bound of the product is γ_N·‖A‖²_F with γ_N ≈ N·eps (‖E‖₂ ≤ ‖E‖_F ≤ γ_N ‖|A|ᵀ|A|‖_F ≤
γ_N‖A‖²_F); rounding errors of blocked, FMA-based BLAS accumulate like √N at most and in practice do not
grow with N at all, and LAPACK's own error-bound guidance takes the eigensolver's p(n) as 1. Measured on
Marchenko–Pastur, spiked, power-law, heavy-tailed, row-scaled, rank-deficient and float32-origin matrices from
24 × 16 to 16384 × 128 and 2000 × 2000, the largest error was 1.9·eps·‖A‖²_F against 40-digit singular values
(mpmath) and 1.4·eps·‖A‖²_F against LAPACK's SVD on the larger ones, so the factor 8 leaves a margin of 4× or
more (``tests/test_functional_decompose.py`` checks it). ‖A‖²_F = trace(fl(AᵀA)) is known once the product is
formed: the bound is a-posteriori. δ ≥ 8·eps·λ_max also covers the eigensolver's backward error at the top.

An eigenvalue is trusted to relative accuracy ``rtol`` when δ ≤ rtol·(λ̂_i − δ), i.e. λ̂_i ≥ δ(1 + 1/rtol).
Only the smallest eigenvalues can fail (δ is the same for all), and only when ‖A‖²_F/λ_i ≳ rtol/(8·eps):
the hard edge of square layers, rank-deficient and ill-conditioned matrices.

**Certificates for refined values.** Ritz pairs (θ, x) computed from any orthonormal subspace carry their
own proof of accuracy. Interlacing (Cauchy) bounds them on one side: the i-th largest Ritz value is ≤ the i-th
largest eigenvalue, the i-th smallest is ≥ the i-th smallest. The Kato–Temple inequality bounds the other:
with ρ = ‖Hx − θx‖, if the next eigenvalue is known to lie beyond β (θ < β ≤ λ_{i+1} for the ascending
order), then λ_i ≥ θ − ρ²/(β − θ); mirrored for the descending order (:func:`temple_lower_bounds`,
:func:`temple_upper_bounds`). The β come from the Gram route's values ± δ, from a deflated residual's norm
(min–max) or from the previous certified bound, so the bounds chain along the spectrum. The error is second
order in the residual, which is why one Rayleigh–Ritz step on A itself makes the small eigenvalues accurate
again. Vectors are certified by Davis–Kahan: sin∠(x, exact) ≤ ρ / gap, the gap bounded by the neighbours'
Ritz values and upper bounds.

Computing θ itself rounds like any backward-stable SVD (σ_i moves by ~eps·σ_max), so :func:`rounding_error`
enters every certificate. ``strict`` certificates require bracket + rounding ≤ rtol·λ_i (and residual +
rounding ≤ rtol·gap for vectors), so an accepted value reproduces the full SVD's to rtol; that excludes values
between the rank floor and ~(4·eps/rtol)·σ_max ≈ 1e-5·σ_max at rtol = 1e-10, which only the very same SVD
reproduces to 1e-10 (``scipy.linalg.svd`` of Aᵀ differs from that of A by ~1e-10 relative at σ_i = 1e-8·σ₁).
Non-strict certificates require bracket ≤ rtol·λ_i + rounding: LAPACK's own contract for singular values.
Values below the rank floor σ_max·max(N, M)·eps (:func:`rank_floor`) are numerically zero for every method and
are accepted when their upper bound is below it.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "EVALS_RTOL",
    "GRAM_ERROR_FACTOR",
    "gram_error_bound",
    "untrusted_bottom",
    "trusted_top",
    "temple_lower_bounds",
    "temple_upper_bounds",
    "rank_floor",
    "rounding_error",
]

EPS = float(np.finfo(np.float64).eps)
# relative accuracy asked of eigenvalues and singular values unless a request says otherwise
EVALS_RTOL = 1e-10
# δ = GRAM_ERROR_FACTOR · eps · ‖A‖²_F bounds the absolute error of every Gram-route eigenvalue
GRAM_ERROR_FACTOR = 8.0


def gram_error_bound(fro2: float) -> float:
    """δ: the bound on |λ̂_i − σ_i²| for every eigenvalue of the Gram route, given ‖A‖²_F."""
    return GRAM_ERROR_FACTOR * EPS * float(fro2)


def _threshold(delta: float, rtol: float) -> float:
    return delta * (1.0 + 1.0 / rtol) if rtol > 0 else np.inf


def untrusted_bottom(lam: np.ndarray, delta: float, rtol: float) -> int:
    """How many of the smallest Gram eigenvalues (``lam`` ascending) fail δ ≤ rtol·(λ̂ − δ)."""
    if delta <= 0:
        return 0
    return int(np.searchsorted(lam, _threshold(delta, rtol), side="left"))


def trusted_top(lam_desc: np.ndarray, delta: float, rtol: float) -> int:
    """How many of the largest Gram eigenvalues (``lam_desc`` descending) pass δ ≤ rtol·(λ̂ − δ), counted
    from the top until the first failure."""
    if delta <= 0:
        return int(lam_desc.size)
    bad = np.flatnonzero(lam_desc < _threshold(delta, rtol))
    return int(bad[0]) if bad.size else int(lam_desc.size)


def temple_lower_bounds(theta: np.ndarray, rho: np.ndarray, beta_next: np.ndarray) -> np.ndarray:
    """Lower bounds on the smallest eigenvalues λ_1 ≤ λ_2 ≤ … from ascending Ritz pairs.

    Args:
        theta: ascending Ritz values θ_1 ≤ … ≤ θ_s (each ≥ the matching λ_i by interlacing).
        rho: residual norms ‖Hx_i − θ_i x_i‖.
        beta_next: ``beta_next[i]`` is a known lower bound on λ_{i+1} (e.g. a Gram value minus δ); the chain
            also uses the bound it derives for λ_{i+1} itself when that is larger.

    Returns:
        A lower bound on each λ_i (``-inf`` where Temple's condition θ_i < β fails).
    """
    s = theta.size
    lb = np.full(s, -np.inf)
    beta = -np.inf
    for i in range(s - 1, -1, -1):
        beta = max(beta, float(beta_next[i]))
        if theta[i] < beta:
            lb[i] = theta[i] - rho[i] ** 2 / (beta - theta[i])
        beta = lb[i]
    return lb


def temple_upper_bounds(theta: np.ndarray, rho: np.ndarray, caps: np.ndarray) -> np.ndarray:
    """Upper bounds on the largest eigenvalues μ_1 ≥ μ_2 ≥ … from descending Ritz pairs.

    Args:
        theta: descending Ritz values θ_1 ≥ … ≥ θ_q (each ≤ the matching μ_i by interlacing).
        rho: residual norms.
        caps: q + 1 known upper bounds, ``caps[i]`` ≥ μ_{i+1} (0-based: caps[i] bounds the (i+1)-th largest;
            ``caps[q]`` bounds μ_{q+1}); ``inf`` where nothing is known.

    Returns:
        An upper bound on each μ_i: the smaller of its cap and the Temple bound θ_i + ρ_i²/(θ_i − β), with β
        the upper bound on μ_{i+1}.
    """
    q = theta.size
    ub = np.asarray(caps[:q], dtype=np.float64).copy()
    beta = float(caps[q])
    for i in range(q - 1, -1, -1):
        if theta[i] > beta:
            ub[i] = min(ub[i], theta[i] + rho[i] ** 2 / (theta[i] - beta))
        beta = ub[i]
    return ub


def rounding_error(sigma_max: float, sigma: np.ndarray) -> np.ndarray:
    """4·eps·σ_max·σ_i: the error on σ_i² that the rounding of a Rayleigh–Ritz step (or of any backward-stable
    SVD, whose σ_i move by ~eps·σ_max) can leave; added to every certificate's width."""
    return 4.0 * EPS * float(sigma_max) * np.asarray(sigma, dtype=np.float64)


def rank_floor(sigma_max: float, shape: tuple[int, int]) -> float:
    """σ_max · max(N, M) · eps: singular values below it are numerically zero (``numpy.linalg.matrix_rank``'s
    rule, and :func:`spectra.functional.matrix_rank`'s); no backward-stable method resolves them."""
    return float(sigma_max) * max(shape) * EPS
