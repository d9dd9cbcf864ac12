"""Singular-vector alignment between weights, updates and gradients.

Pure float64 numpy/scipy maths used by the ``alignment`` analyzer (the weight–update overlaps of
plugins/spectra_twolayer/PAPER_NOTES.md §5.8, claim 9):

* :func:`top_svd`: the top-k singular triplets of a matrix, descending, with a deterministic sign.
* :func:`overlap_matrix`: squared overlaps (U_aᵀU_b)² between two sets of singular vectors.
* :func:`subspace_fraction`: the share of ‖ΔW‖²_F inside W's top-k singular subspaces.
* :func:`principal_angles`: principal angles between two column spans, ascending.
* :func:`frobenius_cosine`: ⟨A, B⟩_F / (‖A‖_F ‖B‖_F).

How :func:`top_svd` picks its method (measured with ``OPENBLAS_NUM_THREADS=1`` on the project's 2-core AMD
CPU, k = 10, Gaussian matrices; all methods agreed with the full SVD to ≤ 3e-15 on σ/σ₁ and on |u_iᵀû_i|):

=============  ===========  ===================  ===============
shape          full gesdd   Gram eigh + RR (k)   ARPACK ``svds``
=============  ===========  ===================  ===============
200 × 300          6 ms              2 ms               4 ms
500 × 750         75 ms             14 ms              21 ms
1000 × 1500      499 ms             83 ms             104 ms
768 × 3072       569 ms             64 ms             168 ms
=============  ===========  ===================  ===============

The Gram route grows slowly with k (500 × 750: 14 ms at k = 1, 24 ms at k = 50; 1000 × 1500: 83 → 103 ms) and
stays below the full SVD up to ``k = SVD_FULL_FRACTION · min(N, M)``. PROPACK (``svds(solver="propack")``)
failed to converge on plain Gaussian matrices, and randomized/block subspace iteration needs many iterations
for the small relative gaps of Marchenko–Pastur spectra, so neither is used.

The truncated method ("Gram + Rayleigh–Ritz", :class:`spectra.functional.decompose.Decomposer`): form the
smaller Gram matrix G, reduce it to tridiagonal form once, take its top k eigenvectors (``dstebz`` +
``dstein`` + back-transform, the kernels of ``scipy.linalg.eigh(subset_by_index=..., driver="evr")``), project
A onto that k-dimensional subspace and take the thin SVD of the small projection. The projection step makes U
and V exactly orthonormal and consistent with each other, so no division by small σ occurs. When the error
bound of :mod:`spectra.functional.certify` says the Gram route cannot resolve σ_k (rank-deficient or nearly
low-rank matrices, e.g. the rank-B update of a batch-B SGD step), a QR route (pivoted columns, QR of the thin
factor, SVD of the small core) and/or deflation take over, every value certified; the full SVD runs only when
the certificate fails. :data:`GRAM_RCOND` is the threshold earlier versions used for that decision.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._validate import as_matrix
from .decompose import SVD_FULL_FRACTION, Decomposer  # SVD_FULL_FRACTION: re-exported

__all__ = [
    "sq_norm",
    "top_svd",
    "overlap_matrix",
    "overlap_matrix_of",
    "subspace_fraction",
    "subspace_fractions_of",
    "principal_angles",
    "principal_angles_of",
    "frobenius_cosine",
    "frobenius_cosine_of",
    "GRAM_RCOND",
    "SVD_FULL_FRACTION",
]

# earlier versions abandoned the truncated (Gram) route for the full SVD when σ_k² < GRAM_RCOND · σ₁²; the
# error bound of spectra.functional.certify decides now (kept for compatibility)
GRAM_RCOND = 1e-6


def _as_host_matrix(A: Any, name: str) -> np.ndarray:
    """Validated float64 numpy copy (CUDA tensors are copied to the host)."""
    M = as_matrix(A, name=name)
    if not isinstance(M, np.ndarray):  # float64 CUDA tensor
        M = M.cpu().numpy()
    return M


def top_svd(A: Any, k: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """Top-``k`` singular triplets of a matrix, singular values descending.

    Args:
        A: a 2-D torch tensor (any float dtype, any device) or array-like. CUDA tensors are copied to the host.
        k: number of triplets; ``None`` for all of them. A ``k`` above min(N, M) is clamped to it.

    Returns:
        ``(U, S, Vh, is_full)`` as float64 numpy: ``U`` is N × k, ``S`` has k values (descending), ``Vh`` is
        k × M, so that ``A ≈ U @ diag(S) @ Vh``; ``is_full`` is True when every singular value was computed
        (then k = min(N, M)). Signs are deterministic: each column of ``U`` has its entry of largest magnitude
        positive, and the matching row of ``Vh`` is flipped with it.

    The method: the full thin SVD (LAPACK ``gesdd``) when ``k`` is None or ``k > SVD_FULL_FRACTION·min(N, M)``;
    otherwise the smaller Gram matrix's top-k eigenvectors followed by a Rayleigh–Ritz projection, with the
    QR/deflation routes and certificates of :class:`~spectra.functional.decompose.Decomposer` when the Gram
    route cannot resolve σ_k, and the full SVD only when those cannot certify their values (see the module
    docstring). All routes are deterministic (no random start).

    Raises:
        ValueError: ``A`` is not 2-D, empty or non-finite, or ``k`` is not a positive integer.
        TypeError: ``A`` is complex or not numeric.
    """
    if k is not None and (isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1):
        raise ValueError(f"k must be a positive integer or None, got {k!r}")
    return Decomposer(A, name="A").top_svd(None if k is None else int(k))


def overlap_matrix(U_a: Any, U_b: Any) -> np.ndarray:
    """Squared overlaps O[i, j] = (a_iᵀ b_j)² between the columns of two matrices.

    Args:
        U_a: N × k_a matrix of (unit) column vectors, e.g. the left singular vectors of W.
        U_b: N × k_b matrix of (unit) column vectors, e.g. the left singular vectors of ΔW.

    Returns:
        k_a × k_b float64 array. For orthonormal inputs each entry lies in [0, 1] and each row and column sums
        to at most 1. Squaring makes it independent of the singular vectors' sign.

    Raises:
        ValueError: the inputs are not 2-D or their row counts differ.
    """
    a = _as_host_matrix(U_a, "U_a")
    b = _as_host_matrix(U_b, "U_b")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"U_a and U_b must have the same number of rows, got {a.shape} and {b.shape}")
    return overlap_matrix_of(a, b)


def overlap_matrix_of(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """:func:`overlap_matrix` of validated float64 arrays with the same number of rows (no checks, no copy)."""
    return (a.T @ b) ** 2


def sq_norm(A: np.ndarray) -> float:
    """‖A‖²_F in one BLAS pass (``ddot``, no temporary), for float64 arrays."""
    flat = A.reshape(-1) if A.flags.c_contiguous or A.flags.f_contiguous else np.ravel(A)
    return float(np.dot(flat, flat))


def subspace_fraction(dW: Any, U_k: Any, V_k: Any) -> float:
    """Fraction of ΔW's squared Frobenius norm inside the subspaces spanned by U_k (left) and V_k (right).

    ‖U_kᵀ ΔW V_k‖²_F / ‖ΔW‖²_F, in [0, 1] for orthonormal U_k and V_k.

    Args:
        dW: N × M matrix (the update ΔW or a gradient).
        U_k: N × k orthonormal columns (W's top-k left singular vectors).
        V_k: M × k orthonormal columns (W's top-k right singular vectors; pass ``Vh[:k].T``).

    Returns:
        The fraction as a float; ``nan`` when ΔW is zero (callers report that as a skipped measurement).

    Raises:
        ValueError: shapes do not match.
    """
    D = _as_host_matrix(dW, "dW")
    U = _as_host_matrix(U_k, "U_k")
    V = _as_host_matrix(V_k, "V_k")
    if U.shape[0] != D.shape[0] or V.shape[0] != D.shape[1]:
        raise ValueError(
            f"shapes do not match: dW is {D.shape}, U_k is {U.shape} (needs {D.shape[0]} rows), "
            f"V_k is {V.shape} (needs {D.shape[1]} rows)"
        )
    return subspace_fractions_of(D, [(U, V)], sq_norm(D))[0]


def subspace_fractions_of(D: np.ndarray, bases: list[tuple[np.ndarray, np.ndarray]], total: float) -> list[float]:
    """:func:`subspace_fraction` of validated float64 arrays, for several (U_k, V_k) pairs, with ‖D‖²_F known.

    The kernel behind :func:`subspace_fraction`, for callers that hold checked host arrays and their norms (the
    alignment analyzer computes each matrix's norm once per snapshot); no validation. The products U_kᵀ D of
    all pairs are one product (their U_k side by side), so D, the large operand, is read once.
    """
    if total == 0.0:
        return [float("nan")] * len(bases)
    UD = np.hstack([U for U, _ in bases]).T @ D
    out, row = [], 0
    for U, V in bases:
        out.append(sq_norm(UD[row : row + U.shape[1]] @ V) / total)
        row += U.shape[1]
    return out


def principal_angles(U_a: Any, U_b: Any) -> np.ndarray:
    """Principal angles between the column spans of two orthonormal matrices, ascending, in radians.

    Same values as :func:`scipy.linalg.subspace_angles` (which returns them descending and orthonormalises its
    inputs first), here for inputs that are already orthonormal: the cosines are the singular values of
    U_aᵀU_b; angles below π/4 are taken from the sines (singular values of the residual
    U_b − U_a U_aᵀU_b), which keeps small angles accurate where ``arccos`` would lose them.

    Args:
        U_a: N × k_a orthonormal columns.
        U_b: N × k_b orthonormal columns.

    Returns:
        min(k_a, k_b) angles in [0, π/2], ascending.

    Raises:
        ValueError: the row counts differ.
    """
    a = _as_host_matrix(U_a, "U_a")
    b = _as_host_matrix(U_b, "U_b")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"U_a and U_b must have the same number of rows, got {a.shape} and {b.shape}")
    return principal_angles_of(a, b)


def principal_angles_of(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """:func:`principal_angles` of validated float64 orthonormal arrays with the same number of rows (no checks)."""
    from scipy.linalg import svdvals

    if a.shape[1] < b.shape[1]:
        a, b = b, a  # angles are symmetric; the residual formula needs k_a ≥ k_b
    C = a.T @ b
    cos = np.clip(svdvals(C, check_finite=False), 0.0, 1.0)  # descending → angles ascending
    theta = np.arccos(cos)
    small = cos**2 >= 0.5
    if small.any():
        sin = np.clip(svdvals(b - a @ C, check_finite=False), 0.0, 1.0)[::-1]  # ascending sines
        theta = np.where(small, np.arcsin(sin), theta)
    return np.sort(theta)


def frobenius_cosine(A: Any, B: Any) -> float:
    """Cosine similarity ⟨A, B⟩_F / (‖A‖_F ‖B‖_F) of two same-shape matrices.

    Returns:
        A float in [−1, 1]; ``nan`` when either matrix is zero. For plain gradient descent, ΔW = −ηG, so
        cos(ΔW, G) = −1.

    Raises:
        ValueError: the shapes differ.
    """
    a = _as_host_matrix(A, "A")
    b = _as_host_matrix(B, "B")
    if a.shape != b.shape:
        raise ValueError(f"A and B must have the same shape, got {a.shape} and {b.shape}")
    return frobenius_cosine_of(a, b, sq_norm(a), sq_norm(b))


def frobenius_cosine_of(a: np.ndarray, b: np.ndarray, a2: float, b2: float) -> float:
    """:func:`frobenius_cosine` of validated same-shape float64 arrays with known squared norms ``a2``, ``b2``."""
    na = math.sqrt(a2)
    nb = math.sqrt(b2)
    if na == 0.0 or nb == 0.0:
        return float("nan")
    return float(np.clip(np.vdot(a, b) / (na * nb), -1.0, 1.0))
