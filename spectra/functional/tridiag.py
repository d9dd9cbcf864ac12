"""One Gram matrix, one tridiagonal reduction, and everything read from it.

For a real N × M matrix A with N ≥ M (callers transpose a wide matrix first), :func:`gram_reduce` forms the
Gram matrix G = AᵀA once (BLAS ``syrk`` through numpy's ``A.T @ A``) and reduces it to tridiagonal form
T = QᵀGQ with LAPACK ``dsytrd`` (Householder, blocked). From that one reduction:

* :func:`reduction_eigvalsh`: every eigenvalue of G, with ``dsterf`` (root-free QL/QR on T): the same
  kernels and order of operations as ``scipy.linalg.eigh(G, eigvals_only=True, driver="evd")``, which calls
  ``dsyevd`` → ``dsytrd`` + ``dsterf``.
* :func:`reduction_eigh_range`: a contiguous index range of eigenpairs of the tridiagonal matrix, by MRRR
  (``dstemr``, with ``dstebz`` bisection + ``dstein`` inverse iteration where it fails), and the back-transform
  Q·Z (LAPACK ``dormtr``, done here as ``dormqr`` on the reflectors that ``dsytrd`` left below the subdiagonal,
  which is what ``dormtr`` itself calls; SciPy does not wrap ``dormtr``). The vectors agree with
  ``scipy.linalg.eigh(..., subset_by_index=..., driver="evr")`` (which bisects) to rounding.

Matrices whose squared entries would overflow or underflow are scaled by a power of two first (exact), and
the eigenvalues scaled back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _lapack

__all__ = ["GramReduction", "gram_reduce", "reduction_eigvalsh", "reduction_eigh_range", "reduction_eigvals_range",
           "gram_of"]

# trace(G) outside [2**-_SAFE_EXP, 2**_SAFE_EXP] triggers a power-of-two rescaling of A before the product
_SAFE_EXP = 600


@dataclass(frozen=True, eq=False)
class GramReduction:
    """G = AᵀA (M × M, A tall) reduced to tridiagonal form by ``dsytrd`` (lower storage).

    Attributes:
        d: diagonal of T (length M).
        e: subdiagonal of T (length M − 1).
        reflectors: the ``dsytrd`` output array (Fortran order); the Householder vectors are stored below
            the subdiagonal.
        tau: the Householder scalars (length M − 1).
        scale: eigenvalues of T times ``scale`` are the eigenvalues of AᵀA (a power of four; 1.0 unless A was
            rescaled to avoid overflow or underflow).
        fro2: ‖A‖²_F = trace(AᵀA) (already multiplied by ``scale``).
    """

    d: np.ndarray
    e: np.ndarray
    reflectors: np.ndarray
    tau: np.ndarray
    scale: float
    fro2: float

    @property
    def n(self) -> int:
        """Order of the Gram matrix (the smaller dimension of A)."""
        return int(self.d.shape[0])


def _pow2_scale(A: np.ndarray) -> tuple[np.ndarray, float]:
    """A·2^−e with e chosen so that max|A| is near 1 (exact in binary floating point), and 4^e."""
    amax = float(np.max(np.abs(A)))
    if amax == 0.0 or not np.isfinite(amax):
        return A, 1.0
    e = int(np.frexp(amax)[1])
    with np.errstate(over="ignore"):
        return np.ldexp(A, -e), float(np.ldexp(1.0, 2 * e))


def gram_of(A: np.ndarray) -> tuple[np.ndarray, float]:
    """The Gram matrix AᵀA of a tall float64 matrix, rescaled by a power of four if needed.

    Returns:
        ``(G, scale)`` with AᵀA = scale · G (``scale`` is 1.0 unless trace(AᵀA) would overflow or underflow).
    """
    with np.errstate(over="ignore", invalid="ignore"):
        G = A.T @ A
        tr = float(np.trace(G))
        if tr == 0.0 or (np.isfinite(tr) and 2.0**-_SAFE_EXP < tr < 2.0**_SAFE_EXP):
            return G, 1.0
        As, scale = _pow2_scale(A)
        return As.T @ As, scale


def gram_reduce(A: np.ndarray, G: np.ndarray | None = None, scale: float = 1.0) -> GramReduction:
    """Form G = AᵀA (unless given) and reduce it to tridiagonal form with ``dsytrd``.

    Args:
        A: a tall (N ≥ M) float64 matrix.
        G: the Gram matrix, when the caller already formed it (it is overwritten).
        scale: the factor returned by :func:`gram_of` along with ``G``.

    Returns:
        The :class:`GramReduction`.

    Raises:
        numpy.linalg.LinAlgError: LAPACK reported an error (e.g. a non-finite Gram matrix).
    """
    from scipy.linalg import lapack

    if G is None:
        G, scale = gram_of(A)
    n = G.shape[0]
    fro2 = float(np.trace(G)) * scale
    if not np.isfinite(fro2):
        raise np.linalg.LinAlgError("the Gram matrix is not finite")
    lwork = max(1, int(lapack.dsytrd_lwork(n, lower=1)[0]))
    # G is symmetric, so its C-ordered buffer read in Fortran order is G itself: reduce it in place
    c, d, e, tau, info = _lapack.dsytrd(G.T, lwork)
    if info != 0:
        raise np.linalg.LinAlgError(f"dsytrd failed (info={info})")
    return GramReduction(d=d, e=e, reflectors=c, tau=tau, scale=scale, fro2=fro2)


def reduction_eigvalsh(red: GramReduction) -> np.ndarray:
    """Every eigenvalue of AᵀA from the reduction (``dsterf``), ascending, float64.

    Raises:
        numpy.linalg.LinAlgError: ``dsterf`` did not converge.
    """
    if red.n == 1:
        return red.d * red.scale
    w, info = _lapack.dsterf(red.d, red.e)
    if info != 0:
        raise np.linalg.LinAlgError(f"dsterf failed to converge (info={info})")
    return np.sort(w) * red.scale


def _unreduced(red: GramReduction) -> bool:
    """No off-diagonal element is negligible by ``dstebz``'s splitting test (the matrix is one block)."""
    ulp = float(np.finfo(np.float64).eps)
    tiny = float(np.finfo(np.float64).tiny)
    return not bool(np.any(np.abs(red.d[1:] * red.d[:-1]) * ulp**2 + tiny > red.e**2))


def reduction_eigvals_range(
    red: GramReduction, lo: int, hi: int, eigvals: np.ndarray | None = None
) -> np.ndarray:
    """Eigenvalues ``lo..hi`` (0-based, inclusive, ascending) of AᵀA from the reduction, without vectors: read
    from ``eigvals`` (every eigenvalue, ascending, as :func:`reduction_eigvalsh` returns them) when given, else
    by bisection (``dstebz``), as :func:`reduction_eigh_range` computes them.

    Raises:
        ValueError: the range is empty or outside [0, M).
        numpy.linalg.LinAlgError: the bisection failed.
    """
    n = red.n
    if not 0 <= lo <= hi < n:
        raise ValueError(f"eigenvalue range {lo}..{hi} is outside 0..{n - 1}")
    if eigvals is not None and eigvals.shape == (n,):
        return np.array(eigvals[lo : hi + 1], dtype=np.float64)
    if n == 1:
        return red.d * red.scale
    w = _bisect(red, lo, hi)[0]
    return np.sort(w) * red.scale


def _bisect(red: GramReduction, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eigenvalues ``lo..hi`` of the tridiagonal matrix by bisection (``dstebz``, unscaled, in its block order),
    with the block indices and splitting points ``dstein`` takes."""
    m, w, iblock, isplit, info = _lapack.dstebz_index(red.d, red.e, lo + 1, hi + 1)
    if info != 0 or m != hi - lo + 1:
        raise np.linalg.LinAlgError(f"dstebz failed (info={info}, found {m} of {hi - lo + 1} eigenvalues)")
    return w[:m], iblock, isplit


def _inverse_iteration(red: GramReduction, lo: int, hi: int, eigvals: np.ndarray | None
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Eigenpairs ``lo..hi`` of the tridiagonal matrix (unscaled values ascending, vectors before the
    back-transform) by inverse iteration (``dstein``) on ``eigvals[lo..hi]`` (every eigenvalue of AᵀA, for an
    unreduced matrix) or, without them, on bisected values (``dstebz``).

    Raises:
        numpy.linalg.LinAlgError: bisection or inverse iteration failed.
    """
    n = red.n
    if eigvals is not None:
        w = np.ascontiguousarray(eigvals[lo : hi + 1]) / red.scale
        iblock = np.ones(n, dtype=np.int32)
        isplit = np.zeros(n, dtype=np.int32)
        isplit[0] = n
    else:
        w, iblock, isplit = _bisect(red, lo, hi)
    Z, info = _lapack.dstein(red.d, red.e, w, iblock, isplit)
    if info != 0:
        raise np.linalg.LinAlgError(f"dstein failed to converge for {info} eigenvector(s)")
    order = np.argsort(w, kind="stable")
    return w[order], np.asfortranarray(Z[:, order])


def reduction_eigh_range(
    red: GramReduction, lo: int, hi: int, eigvals: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Eigenpairs ``lo..hi`` (0-based, inclusive, ascending order) of AᵀA from the reduction.

    The eigenpairs of the tridiagonal matrix come from MRRR (``dstemr``: 1.3-1.6x faster than bisection and
    inverse iteration for 10 pairs at n = 256 to 1024, ``benchmarks/bench_kernels.py``), or, when ``dstemr``
    fails, from bisection (``dstebz``) and inverse iteration (``dstein``); then the back-transform by the
    ``dsytrd`` reflectors (``dormqr`` on the lower part, i.e. ``dormtr``). When every eigenvalue is already
    known (``eigvals``, from :func:`reduction_eigvalsh`) and the tridiagonal matrix does not split, only inverse
    iteration runs: it needs eigenvalues accurate to eps·‖T‖, which ``dsterf``'s are.

    Args:
        red: the reduction.
        lo, hi: the index range.
        eigvals: all eigenvalues of AᵀA, ascending, as :func:`reduction_eigvalsh` returns them (optional).

    Returns:
        ``(w, X)``: the eigenvalues ascending (length hi − lo + 1) and the orthonormal eigenvectors of AᵀA as
        the columns of X (M × (hi − lo + 1)).

    Raises:
        ValueError: the range is empty or outside [0, M).
        numpy.linalg.LinAlgError: bisection or inverse iteration failed.
    """
    n = red.n
    if not 0 <= lo <= hi < n:
        raise ValueError(f"eigenpair range {lo}..{hi} is outside 0..{n - 1}")
    if n == 1:
        return red.d * red.scale, np.ones((1, 1))
    if eigvals is not None and eigvals.shape == (n,) and _unreduced(red):  # inverse iteration is cheaper then
        w, Z = _inverse_iteration(red, lo, hi, eigvals)
    else:
        w, Z, info = _lapack.dstemr_index(red.d, red.e, lo + 1, hi + 1)
        if info != 0:  # MRRR failed: bisection
            w, Z = _inverse_iteration(red, lo, hi, None)
    info = _lapack.dormqr_left(red.reflectors, red.tau, Z)
    if info != 0:
        raise np.linalg.LinAlgError(f"dormqr failed (info={info})")
    return w * red.scale, Z
