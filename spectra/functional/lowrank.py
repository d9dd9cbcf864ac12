"""The QR route for numerically low-rank matrices (e.g. the rank-B update of a batch-B SGD step).

A matrix of rank r ≪ min(N, M) needs neither a full SVD nor a tridiagonal reduction of its Gram matrix:

1. :func:`lowrank_columns`: a pivoted partial Cholesky factorisation of G = AᵀA (r steps of O(M·r)) picks
   the columns J of A that carry its energy. In exact arithmetic this is QR with column pivoting of A (the
   trailing diagonal is the squared norm of each column once the chosen ones are projected out), and its
   trace bounds what is left. It stops as soon as the trailing energy is below
   ``LOWRANK_ENERGY · ‖A‖²_F`` and the next pivot no longer removes most of what remains, or as soon as more
   energy is left than any matrix of the probed rank could keep (it is then not low rank).
2. :func:`qr_stage`: QR of the thin factor A[:, J] gives an orthonormal basis Q of the dominant column
   space; the small core C = QᵀA gives the row space; subspace-iteration steps (AᵀA times that basis; one is
   enough when the rank gap is clear) remove what the noise in A[:, J] leaked into it; a Rayleigh–Ritz step
   (SVD of the N × r core A·V) gives the triplets with A·v_i = σ_i·u_i exactly.

The result is exact when verified: the caller computes residuals and certifies every value (see
:mod:`spectra.functional.certify`), deflates what is left (``A − U Σ Vᵀ``) and treats it as a new matrix.

:func:`svd_from_factors` is the same idea when the factors are known (A = L Rᵀ, e.g. per-sample gradients
times inputs): QR of both thin factors and the SVD of the r × r core.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._validate import as_matrix

__all__ = ["LOWRANK_ENERGY", "lowrank_columns", "qr_stage", "svd_from_factors"]

# the QR route is taken when at most `max_rank` pivots leave less than this fraction of ‖A‖²_F
LOWRANK_ENERGY = 1e-6
# early exit of the probe: a pivot at the largest diagonal entry of a PSD Schur complement S removes at least
# trace(S)/rank(S), so a Gram matrix of rank ≤ R keeps at most (R − i)/R of its trace after i pivots; more than
# that (plus a margin for the noise around a numerically low rank) after a few pivots means full rank, and the
# probe stops (a full-rank 750 × 500 layer: 5 pivots instead of 26; only the route depends on it)
_EXIT_AFTER = 4
_EXIT_MARGIN = 0.02


def lowrank_columns(G: np.ndarray, max_rank: int, energy: float = LOWRANK_ENERGY) -> np.ndarray | None:
    """Pivot columns of A from its Gram matrix G = AᵀA when A is numerically of rank ≤ ``max_rank``.

    Args:
        G: the M × M Gram matrix (not modified).
        max_rank: the largest rank worth the QR route.
        energy: the trailing energy (fraction of trace(G)) below which the rank is considered found.

    Returns:
        The pivot indices (r ≤ max_rank of them) or ``None`` when the trailing energy after ``max_rank``
        pivots is still above ``energy · trace(G)``.
    """
    n = G.shape[0]
    max_rank = min(int(max_rank), n)
    diag = np.array(G.diagonal(), dtype=np.float64)
    total = float(diag.sum())
    if max_rank < 1 or not total > 0:
        return None
    L = np.zeros((max_rank, n))
    piv: list[int] = []
    found = False
    trailing = total
    for i in range(max_rank):
        j = int(np.argmax(diag))
        dj = float(diag[j])
        if not dj > 0:
            break
        row = (G[j] - L[:i, j] @ L[:i]) / np.sqrt(dj)
        new_diag = np.clip(diag - row * row, 0.0, None)
        new_diag[j] = 0.0
        new = float(new_diag.sum())
        if found and new > 0.1 * trailing:
            break  # this pivot would only pick up noise: the rank is found
        L[i], diag, trailing = row, new_diag, new
        piv.append(j)
        if not found and new <= energy * total:
            found = True
        if not found and i >= _EXIT_AFTER and new > total * ((max_rank - 1 - i) / max_rank + _EXIT_MARGIN):
            break  # more energy left than any rank-max_rank matrix keeps after i + 1 pivots: not low rank
    return np.asarray(piv, dtype=np.intp) if found else None


def qr_stage(
    A: np.ndarray, cols: np.ndarray, *, tol: float = 1e-10, max_steps: int = 4
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Top-r triplets of a numerically rank-r matrix from r of its columns (r = ``len(cols)``).

    Subspace-iteration steps (AᵀA times the basis) are repeated, up to ``max_steps``, until every triplet whose
    σ² stands above the residual energy τ = ‖A − UΣVᵀ‖²_F has ‖AᵀA v − σ²v‖ ≤ tol·(σ² − τ), i.e. (Davis–Kahan)
    its vector is within ~tol of the exact one; the caller certifies the result anyway.

    Args:
        A: the N × M matrix.
        cols: pivot columns from :func:`lowrank_columns`.
        tol: target residual relative to the gap σ² − τ.
        max_steps: most subspace-iteration steps.

    Returns:
        ``(U, S, V, R)``: N × r, r values descending, M × r, with A @ V = U · S to rounding, orthonormal V, and
        the residual R = A − U·diag(S)·Vᵀ = A(I − VVᵀ).
    """
    from scipy.linalg import svd

    Q, _ = np.linalg.qr(A[:, cols])
    V, _ = np.linalg.qr((Q.T @ A).T)  # row space of the small core C = QᵀA
    for _ in range(max(1, int(max_steps))):
        V, _ = np.linalg.qr(A.T @ (A @ V))  # one subspace-iteration step on AᵀA
        U, S, Zh = svd(A @ V, full_matrices=False, lapack_driver="gesdd", check_finite=False)
        V = V @ Zh.T
        R = A - (U * S) @ V.T
        tau = float(np.einsum("ij,ij->", R, R))
        rho = S * np.linalg.norm(A.T @ U - V * S, axis=0)
        sig = S**2 > tau
        if np.all(rho[sig] <= tol * (S[sig] ** 2 - tau)):
            break
    return U, S, V, R


def _host(x: Any, name: str) -> np.ndarray:
    m = as_matrix(x, name=name)
    return m if isinstance(m, np.ndarray) else m.cpu().numpy()


def svd_from_factors(L: Any, R: Any, k: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Singular triplets of A = L Rᵀ from its thin factors, without forming A.

    QR of both factors (L = Q_L T_L, R = Q_R T_R) and the SVD of the r × r core T_L T_Rᵀ: A = (Q_L W) Σ
    (Q_R Z)ᵀ. Costs O((N + M)·r²) instead of O(N·M·min(N, M)).

    Args:
        L: N × r factor (torch tensor or array-like).
        R: M × r factor.
        k: number of triplets (``None``: all r, or min(N, M, r)).

    Returns:
        ``(U, S, Vh)``: N × k, k values descending, k × M, so that A ≈ U @ diag(S) @ Vh.

    Raises:
        ValueError: the factors are not 2-D, are empty or non-finite, or their ranks (columns) differ.
    """
    from scipy.linalg import svd

    Lm, Rm = _host(L, "L"), _host(R, "R")
    if Lm.shape[1] != Rm.shape[1]:
        raise ValueError(f"L and R must have the same number of columns, got {Lm.shape} and {Rm.shape}")
    QL, TL = np.linalg.qr(Lm)
    QR, TR = np.linalg.qr(Rm)
    W, S, Zh = svd(TL @ TR.T, full_matrices=False, lapack_driver="gesdd", check_finite=False)
    kk = min(S.size, Lm.shape[0], Rm.shape[0]) if k is None else min(int(k), S.size)
    return QL @ W[:, :kk], S[:kk], (QR @ Zh[:kk].T).T
