"""Top-k singular triplets by stages: Gram + Rayleigh–Ritz, QR for low rank, deflation, one certificate.

Used by :class:`spectra.functional.decompose.Decomposer` (its module docstring lists the routes;
:mod:`spectra.functional.certify` has the bounds). Every stage hands on the residual T − UΣVᵀ = T(I − VVᵀ) of
what it resolved, plus an upper bound on the eigenvalues of TᵀT left in it (min–max: the (start + i)-th
largest eigenvalue of TᵀT is at most the i-th largest of the residual's Gram matrix); the final Rayleigh–Ritz
step on the union of the stages' subspaces is certified value by value with interlacing (below) and
Kato–Temple (above).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .certify import gram_error_bound, rank_floor, rounding_error, temple_upper_bounds, trusted_top
from .lowrank import lowrank_columns, qr_stage
from .tridiag import GramReduction, gram_of, gram_reduce, reduction_eigh_range, reduction_eigvals_range

__all__ = ["Fallback", "fix_signs", "full_svd", "rayleigh_ritz", "completion", "staged_top", "certified_union"]

_MAX_STAGES = 3  # deflation levels before giving up for the full SVD


class Fallback(Exception):
    """A cheap route could not certify its numbers."""


def fix_signs(U: np.ndarray, Vh: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Make each u_i's entry of largest magnitude positive (first one on ties); flip v_i with it."""
    if U.shape[1] == 0:
        return U, Vh
    idx = np.argmax(np.abs(U), axis=0)
    signs = np.sign(U[idx, np.arange(U.shape[1])])
    signs[signs == 0] = 1.0
    return U * signs, Vh * signs[:, None]


def full_svd(A: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from scipy.linalg import svd

    try:
        return svd(A, full_matrices=False, lapack_driver="gesdd", check_finite=False)
    except np.linalg.LinAlgError:  # gesdd occasionally fails to converge; gesvd is slower but more robust
        return svd(A, full_matrices=False, lapack_driver="gesvd", check_finite=False)


def rayleigh_ritz(X: np.ndarray, V: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Triplets of X on the orthonormal right subspace V: SVD of X·V; X @ V_out = U · S exactly."""
    from scipy.linalg import svd

    U, S, Zh = svd(X @ V, full_matrices=False, lapack_driver="gesdd", check_finite=False)
    return U, S, V @ Zh.T


def completion(X: np.ndarray, blocks: list[np.ndarray], count: int) -> np.ndarray:
    """``count`` orthonormal right vectors orthogonal to ``blocks`` (for numerically zero triplets)."""
    from scipy.linalg import qr

    M = X.shape[1]
    Vp = np.hstack(blocks) if blocks else np.zeros((M, 0))
    norms = np.einsum("ij,ij->j", X, X)
    idx = np.argsort(-norms, kind="stable")[: min(M, count + Vp.shape[1])]
    E = np.zeros((M, idx.size))
    E[idx, np.arange(idx.size)] = 1.0
    for _ in range(2):
        E -= Vp @ (Vp.T @ E)
    Q = qr(E, mode="economic", pivoting=True)[0]
    return Q[:, :count]


def _probe_rank(M: int, k: int) -> int:
    """The largest rank the QR route is tried for (it beats the reduction well below M/8)."""
    return min(M // 8, max(2 * k, k + 16))


def staged_top(
    T: np.ndarray,
    k: int,
    *,
    rtol: float,
    strict: bool,
    reduction: Callable[[], GramReduction],
    probe_gram: Callable[[], np.ndarray] | None,
    fro2: float,
    eigvals: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """Top-k triplets of a tall matrix T: the Gram fast path, else staged QR/Gram deflation, certified.

    Args:
        T: the N × M matrix, N ≥ M.
        k: number of triplets (≤ M).
        rtol: relative accuracy to certify.
        strict: the accuracy contract (see :class:`~spectra.functional.decompose.Decomposer`).
        reduction: returns the (shared, cached) Gram reduction of T.
        probe_gram: returns the Gram matrix of T for the low-rank probe; ``None`` skips the probe (the reduction
            is wanted anyway, e.g. for the eigenvalues).
        fro2: ‖T‖²_F.
        eigvals: every eigenvalue of TᵀT from the shared reduction, when already computed (saves the bisection).

    Returns:
        ``(U, S, V, route)``: N × k, k values descending, M × k (T @ V = U·S), and the route taken.

    Raises:
        Fallback: the numbers could not be certified; the caller runs the full SVD.
    """
    X, got, blocks, caps, names = T, 0, [], [], []
    floor2 = fro2x = s1 = 0.0
    for depth in range(_MAX_STAGES):
        remaining = k - got
        probe = _probe_rank(T.shape[1], remaining)
        if depth == 0:
            cols = None
            if probe_gram is not None and probe >= 1:
                cols = lowrank_columns(probe_gram(), probe)
            G, scale, fro2x = None, 1.0, fro2
        else:
            if fro2x <= floor2:  # the rest is numerically zero
                blocks.append(completion(X, blocks, remaining))
                caps.append((got, np.empty(0), fro2x))
                names.append("zero")
                break
            if strict and np.sqrt(fro2x) < rounding_error(s1, 1.0) / rtol:
                # every value left is below ~1e-5·σ₁ (and not all zero): only the SVD reproduces them
                raise Fallback("values below the reproducible range")
            G, scale = gram_of(X)
            cols = lowrank_columns(G, probe) if probe >= 1 else None
        if cols is not None:
            U, S, V, R = qr_stage(X, cols, tol=rtol)
            # pivots past the rank only pick up noise: keep the triplets above everything left over
            t = int(np.count_nonzero(S**2 > np.einsum("ij,ij->", R, R)))
            if t:
                if t < S.size:
                    U, S, V = U[:, :t], S[:t], V[:, :t]
                    R = X - (U * S) @ V.T
                X = R
                caps.append((got, np.empty(0), fro2x))
                blocks.append(V)
                got += t
                fro2x = float(np.einsum("ij,ij->", X, X))
                caps.append((got, np.empty(0), fro2x))
                names.append(f"qr({t})")
                s1 = s1 or float(S[0])
                floor2 = floor2 or rank_floor(s1, T.shape) ** 2
                if got >= k:
                    break
                continue
        red = reduction() if depth == 0 else gram_reduce(X, G, scale)
        known = eigvals if depth == 0 else None
        kk = min(remaining, red.n)
        w, Z = reduction_eigh_range(red, red.n - kk, red.n - 1, known)
        wd = w[::-1]
        U, S, V = rayleigh_ritz(X, np.ascontiguousarray(Z[:, ::-1]))
        delta = gram_error_bound(red.fro2)
        t = trusted_top(wd, delta, rtol)
        if depth == 0 and t == kk:
            return U, S, V, "gram"
        if kk < red.n:  # the stage's caps also bound what lies below it: the next eigenvalue (its value only)
            wd = np.append(wd, reduction_eigvals_range(red, red.n - kk - 1, red.n - kk - 1, known))
        s1 = s1 or float(S[0])
        floor2 = floor2 or rank_floor(s1, T.shape) ** 2
        caps.append((got, wd + delta, float(wd[-1] + delta)))
        names.append(f"gram({t})")
        if t == 0:
            raise Fallback("nothing trusted at this stage")
        blocks.append(V[:, :t])
        got += t
        if t == kk:
            break
        X = X - (U[:, :t] * S[:t]) @ V[:, :t].T
        fro2x = float(np.einsum("ij,ij->", X, X))
    else:
        raise Fallback("too many deflation stages")
    U, S, V = certified_union(T, blocks, caps, k, rtol, strict)
    return U, S, V, "deflate:" + "+".join(names)


def certified_union(
    T: np.ndarray, blocks: list[np.ndarray], caps: list[tuple[int, np.ndarray, float]], k: int, rtol: float,
    strict: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rayleigh–Ritz of T on the union of the stages' subspaces, every one of the top k values certified.

    ``caps`` holds ``(start, vals, tail)``: the (start + i)-th largest eigenvalue of TᵀT is at most
    ``vals[i - 1]`` (``tail`` past the end of ``vals``), from the stage that began after ``start`` directions.
    """
    Vq, _ = np.linalg.qr(np.hstack(blocks))
    U, S, V = rayleigh_ritz(T, Vq)
    q = S.size
    if q < k:
        raise Fallback("the stages found fewer than k directions")
    theta = S**2
    rho = S * np.linalg.norm(T.T @ U - V * S, axis=0)
    bound = np.full(q + 1, np.inf)  # bound[i] ≥ the (i+1)-th largest eigenvalue of TᵀT
    for start, vals, tail in caps:  # stage caps: λ_{start+i}(TᵀT) ≤ vals[i-1] (then ≤ tail)
        for i in range(max(start, 0), q + 1):
            rel = i + 1 - start
            bound[i] = min(bound[i], vals[rel - 1] if rel <= vals.size else tail)
    ub_all = temple_upper_bounds(theta, rho, bound)
    ub = ub_all[:k]
    floor2 = rank_floor(S[0], T.shape) ** 2
    th = theta[:k]
    rnd = rounding_error(S[0], S[:k])
    ok = (ub - th + rnd <= rtol * th) if strict else (ub - th <= rtol * th + rnd)
    zero = ub <= floor2
    if not np.all(ok | zero):
        raise Fallback("a value could not be certified")
    # vectors (Davis–Kahan): sin∠(v_i, exact) ≤ ρ_i / gap_i, the gap to the other eigenvalues bounded by the
    # neighbours' Ritz values (λ_{i−1} ≥ θ_{i−1}) and upper bounds (λ_{i+1} ≤ ub_{i+1})
    above = np.append(np.inf, theta[: k - 1]) - th
    below = th - np.append(ub_all[1:], bound[q])[:k]
    gap = np.minimum(above, below)
    r = rho[:k]
    vec_ok = (gap > 0) & ((r + rnd <= rtol * gap) if strict else (r <= rtol * gap + rnd))
    if not np.all(vec_ok | zero):
        raise Fallback("a singular vector could not be certified")
    return U[:, :k], S[:k], V[:, :k]
