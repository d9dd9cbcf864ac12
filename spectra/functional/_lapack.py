"""The LAPACK kernels of the Gram route, called without holding the GIL.

SciPy's f2py wrappers (``scipy.linalg.lapack.dsytrd`` and friends) hold the GIL while LAPACK runs, so two
threads reducing two matrices take as long as one thread reducing both. The very same routines of the very same
LAPACK library are also exported as C function pointers by :mod:`scipy.linalg.cython_lapack`; a call through
:mod:`ctypes` releases the GIL for its duration. Same library, same arguments (the workspace size included):
the results are bit-for-bit those of the f2py wrappers (tested), and the decompositions of a due step's
matrices can run in parallel threads (:mod:`spectra.pipeline.engine`).

Where the function pointers cannot be had (another SciPy build), every function falls back to the f2py
wrapper, with the same results and the GIL held.
"""

from __future__ import annotations

import ctypes
from functools import lru_cache
from typing import Any

import numpy as np

__all__ = ["dsytrd", "dsterf", "dstebz_index", "dstein", "dstemr_index", "dormqr_left", "nogil_available"]

_INT = ctypes.POINTER(ctypes.c_int)
_DBL = ctypes.POINTER(ctypes.c_double)
_STR = ctypes.c_char_p

# argument types of the Fortran interfaces (all by reference), as scipy.linalg.cython_lapack declares them
_SIGNATURES = {
    "dsytrd": (_STR, _INT, _DBL, _INT, _DBL, _DBL, _DBL, _DBL, _INT, _INT),
    "dsterf": (_INT, _DBL, _DBL, _INT),
    "dstebz": (_STR, _STR, _INT, _DBL, _DBL, _INT, _INT, _DBL, _DBL, _DBL, _INT, _INT, _DBL, _INT, _INT, _DBL,
               _INT, _INT),
    "dstein": (_INT, _DBL, _DBL, _INT, _DBL, _INT, _INT, _DBL, _INT, _DBL, _INT, _INT, _INT),
    "dormqr": (_STR, _STR, _INT, _INT, _INT, _DBL, _INT, _DBL, _DBL, _INT, _DBL, _INT, _INT),
    "dstemr": (_STR, _STR, _INT, _DBL, _DBL, _DBL, _DBL, _INT, _INT, _INT, _DBL, _DBL, _INT, _INT, _INT, _INT, _DBL,
               _INT, _INT, _INT, _INT),
}


@lru_cache(maxsize=None)
def _routine(name: str) -> Any:
    """The ctypes function of a LAPACK routine from SciPy's Cython capsules, or ``None`` when unavailable.

    Cached: the pointer is a constant of the loaded SciPy (no mutable state is kept).
    """
    try:
        from scipy.linalg import cython_lapack

        capsule = cython_lapack.__pyx_capi__[name]
        get_name = ctypes.pythonapi.PyCapsule_GetName
        get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
        get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
        get_pointer.restype, get_pointer.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
        pointer = get_pointer(capsule, get_name(capsule))
    except Exception:  # pragma: no cover - depends on the SciPy build
        return None
    if not pointer:  # pragma: no cover
        return None
    return ctypes.CFUNCTYPE(None, *_SIGNATURES[name])(pointer)


def nogil_available() -> bool:
    """Whether every kernel here runs without the GIL (SciPy exports them as Cython capsules)."""
    return all(_routine(name) is not None for name in _SIGNATURES)


def _i(v: int) -> Any:
    return ctypes.byref(ctypes.c_int(int(v)))


def _p(a: np.ndarray, offset: int = 0) -> Any:
    """Pointer to element ``offset`` (in elements) of a float64 array's buffer."""
    return ctypes.cast(a.ctypes.data + 8 * offset, _DBL)


def _ip(a: np.ndarray) -> Any:
    return a.ctypes.data_as(_INT)


def dsytrd(G: np.ndarray, lwork: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Reduce the symmetric ``G`` (lower triangle used) to tridiagonal form, in place.

    Args:
        G: an n × n float64 array in Fortran order (a C-ordered symmetric matrix passed as ``G.T``); it is
            overwritten by the reflectors, as ``dsytrd(..., overwrite_a=1)`` does.
        lwork: the workspace size (``scipy.linalg.lapack.dsytrd_lwork``; it sets the blocking, hence the
            rounding: pass the same value for the same bits).

    Returns:
        ``(reflectors, d, e, tau, info)`` as the f2py wrapper returns them.
    """
    f = _routine("dsytrd")
    if f is None or not (G.flags.f_contiguous and G.dtype == np.float64):
        from scipy.linalg import lapack

        return lapack.dsytrd(G, lower=1, lwork=lwork, overwrite_a=1)
    n = G.shape[0]
    d, e, tau = np.empty(n), np.empty(max(n - 1, 0)), np.empty(max(n - 1, 0))
    work = np.empty(max(1, lwork))
    info = ctypes.c_int(0)
    f(b"L", _i(n), _p(G), _i(max(1, n)), _p(d), _p(e), _p(tau), _p(work), _i(work.size), ctypes.byref(info))
    return G, d, e, tau, int(info.value)


def dsterf(d: np.ndarray, e: np.ndarray) -> tuple[np.ndarray, int]:
    """All eigenvalues of the symmetric tridiagonal matrix (``d``, ``e``), ascending; the inputs are kept."""
    f = _routine("dsterf")
    if f is None:
        from scipy.linalg import lapack

        return lapack.dsterf(d, e)
    w = np.array(d, dtype=np.float64, copy=True)
    ework = np.array(e, dtype=np.float64, copy=True)
    info = ctypes.c_int(0)
    f(_i(w.size), _p(w), _p(ework), ctypes.byref(info))
    return w, int(info.value)


def dstebz_index(d: np.ndarray, e: np.ndarray, il: int, iu: int
                 ) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, int]:
    """Eigenvalues ``il..iu`` (1-based, inclusive) of the symmetric tridiagonal (``d``, ``e``) by bisection.

    ``dstebz`` with RANGE='I', ORDER='B' and ABSTOL=0 (LAPACK then bisects to ulp·‖T‖): what
    ``scipy.linalg.lapack.dstebz(d, e, 2, 0.0, 0.0, il, iu, 0.0, b"B")`` computes.

    Returns:
        ``(m, w, iblock, isplit, info)`` as the f2py wrapper returns them (``w``, ``iblock``, ``isplit`` of
        length n; the first ``m`` entries of ``w`` and ``iblock`` are the eigenvalues and their blocks).
    """
    f = _routine("dstebz")
    if f is None:
        from scipy.linalg import lapack

        return lapack.dstebz(d, e, 2, 0.0, 0.0, il, iu, 0.0, b"B")
    n = int(d.size)
    d = np.ascontiguousarray(d, dtype=np.float64)
    e = np.ascontiguousarray(e, dtype=np.float64)
    w = np.zeros(n)
    iblock, isplit = np.zeros(n, dtype=np.intc), np.zeros(n, dtype=np.intc)
    work, iwork = np.empty(4 * max(n, 1)), np.empty(3 * max(n, 1), dtype=np.intc)
    vl, vu, abstol = ctypes.c_double(0.0), ctypes.c_double(0.0), ctypes.c_double(0.0)
    m, nsplit, info = ctypes.c_int(0), ctypes.c_int(0), ctypes.c_int(0)
    f(b"I", b"B", _i(n), ctypes.byref(vl), ctypes.byref(vu), _i(il), _i(iu), ctypes.byref(abstol), _p(d),
      _p(e), ctypes.byref(m), ctypes.byref(nsplit), _p(w), _ip(iblock), _ip(isplit), _p(work), _ip(iwork),
      ctypes.byref(info))
    return int(m.value), w, iblock, isplit, int(info.value)


def dstein(d: np.ndarray, e: np.ndarray, w: np.ndarray, iblock: np.ndarray,
           isplit: np.ndarray) -> tuple[np.ndarray, int]:
    """Eigenvectors of the tridiagonal matrix for the eigenvalues ``w`` (inverse iteration), n × m, Fortran."""
    f = _routine("dstein")
    if f is None:
        from scipy.linalg import lapack

        return lapack.dstein(d, e, w, iblock, isplit)
    n, m = int(d.size), int(w.size)
    d, e, w = (np.ascontiguousarray(x, dtype=np.float64) for x in (d, e, w))
    iblock, isplit = (np.ascontiguousarray(x, dtype=np.intc) for x in (iblock, isplit))
    Z = np.zeros((n, m), dtype=np.float64, order="F")
    work, iwork, ifail = np.empty(5 * n), np.empty(n, dtype=np.intc), np.empty(max(m, 1), dtype=np.intc)
    info = ctypes.c_int(0)
    f(_i(n), _p(d), _p(e), _i(m), _p(w), _ip(iblock), _ip(isplit), _p(Z), _i(max(1, n)), _p(work), _ip(iwork),
      _ip(ifail), ctypes.byref(info))
    return Z, int(info.value)


def dstemr_index(d: np.ndarray, e: np.ndarray, il: int, iu: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Eigenpairs ``il..iu`` (1-based, inclusive) of the symmetric tridiagonal (``d``, ``e``) by MRRR (``dstemr``).

    JOBZ='V', RANGE='I', TRYRAC=true and the documented minimal workspaces: what
    ``scipy.linalg.lapack.dstemr(d, e, 2, 0.0, 0.0, il, iu)`` computes (tested bit for bit), without its n × n
    output; the inputs are kept.

    Returns:
        ``(w, Z, info)``: the m = iu − il + 1 eigenvalues ascending and the n × m eigenvectors (Fortran order);
        empty arrays and a nonzero ``info`` when ``dstemr`` failed (callers then bisect instead).
    """
    n, m = int(d.size), int(iu - il + 1)
    ew = np.zeros(max(n, 1))
    ew[: n - 1] = e
    f = _routine("dstemr")
    if f is None:
        from scipy.linalg import lapack

        found, w, Z, info = lapack.dstemr(np.array(d, dtype=np.float64), ew, 2, 0.0, 0.0, il, iu)
        if info != 0 or found != m:
            return w[:0], Z[:, :0], int(info) or -1
        return w[:m], np.asfortranarray(Z[:, :m]), 0
    dw = np.array(d, dtype=np.float64, copy=True)
    w, Z = np.zeros(max(n, 1)), np.zeros((n, max(m, 1)), order="F")
    isuppz = np.zeros(2 * max(m, 1), dtype=np.intc)
    vl, vu, tryrac = ctypes.c_double(0.0), ctypes.c_double(0.0), ctypes.c_int(1)
    lwork, liwork = max(1, 18 * n), max(1, 10 * n)  # the documented minima for JOBZ='V'
    work, iwork = np.empty(lwork), np.empty(liwork, dtype=np.intc)
    found, info = ctypes.c_int(0), ctypes.c_int(0)
    f(b"V", b"I", _i(n), _p(dw), _p(ew), ctypes.byref(vl), ctypes.byref(vu), _i(il), _i(iu), ctypes.byref(found),
      _p(w), _p(Z), _i(max(1, n)), _i(Z.shape[1]), _ip(isuppz), ctypes.byref(tryrac), _p(work), _i(lwork),
      _ip(iwork), _i(liwork), ctypes.byref(info))
    if info.value != 0 or found.value != m:
        return w[:0], Z[:, :0], int(info.value) or -1
    return w[:m], Z, 0


#: below this many vectors the back-transform runs LAPACK's unblocked code: the blocked code's triangular factors
#: (``dlarft``, O(n²·32) flops whatever the number of vectors) cost more than the level-3 products save: on one
#: thread, 1.9-2.5x faster at 10 vectors for n = 256 to 1024, break-even at ~32 (benchmarks/bench_kernels.py)
UNBLOCKED_BELOW = 32


def dormqr_left(reflectors: np.ndarray, tau: np.ndarray, Z: np.ndarray, *, blocked: bool | None = None) -> int:
    """Z[1:, :] ← Q·Z[1:, :] in place, Q the ``dsytrd`` (lower) reflectors: the back-transform of ``dormtr``.

    Unblocked, the workspace is the minimum (one entry per vector), which makes ``dormqr`` apply the reflectors
    one by one (its ``dorm2r`` path); blocked, the optimal workspace. The numbers differ from one choice to the
    other by rounding only, and each is reproducible.

    Args:
        reflectors: the n × n Fortran-ordered ``dsytrd`` output (the vectors lie below the subdiagonal).
        tau: its n − 1 scalars.
        Z: n × m eigenvectors of the tridiagonal matrix, Fortran order (overwritten).
        blocked: LAPACK's blocked code or not; ``None`` (default): blocked from :data:`UNBLOCKED_BELOW` vectors.

    Returns:
        LAPACK's ``info``.
    """
    n, m = Z.shape
    f = _routine("dormqr")
    if n < 2:
        return 0
    if blocked is None:
        blocked = m >= UNBLOCKED_BELOW
    if f is None or not (reflectors.flags.f_contiguous and Z.flags.f_contiguous):
        from scipy.linalg import lapack

        a = reflectors[1:, : n - 1]
        lwork = int(lapack.dormqr(b"L", b"N", a, tau, Z[1:, :], -1)[1][0]) if blocked else m
        Zq, _, info = lapack.dormqr(b"L", b"N", a, tau, Z[1:, :], max(1, lwork), overwrite_c=1)
        Z[1:, :] = Zq
        return int(info)
    k = n - 1
    info = ctypes.c_int(0)
    args = (_i(k), _i(m), _i(k), _p(reflectors, 1), _i(n), _p(tau), _p(Z, 1), _i(n))
    lwork = m
    if blocked:
        query = np.empty(1)
        f(b"L", b"N", *args, _p(query), _i(-1), ctypes.byref(info))
        lwork = int(query[0])
    work = np.empty(max(1, lwork))
    f(b"L", b"N", *args, _p(work), _i(work.size), ctypes.byref(info))
    return int(info.value)
