"""Empirical spectral density: eigenvalues of WᵀW.

Convention (docs/design.md, "Conventions"): the eigenvalues are λ_i = σ_i(W)², taken from the smaller Gram side, with **no 1/N
normalisation** (as in WeightWatcher) unless ``normalize=True``, in which case they are divided by
N = max(rows, cols) (the HT-SR papers' (1/N)·WᵀW). They are returned ascending, as float64 numpy.

Backends (chosen by measurement, see ``benchmarks/bench_esd.py`` and ``benchmarks/bench_decompose.py``):

* ``"eigh"``: form the smaller Gram matrix G = WᵀW (or WWᵀ) in float64 and take its eigenvalues with one
  tridiagonal reduction (LAPACK ``dsytrd`` + ``dsterf``, the kernels of scipy's ``eigh(driver="evd")``, whose
  results it reproduces bit for bit) on CPU, ``torch.linalg.eigvalsh`` on CUDA. Fast; the absolute error of
  every eigenvalue is about ``eps·‖W‖²_F``, so *relative* accuracy is lost on eigenvalues far below λ_max.
* ``"svd"``: singular values of W itself (LAPACK ``gesdd``), squared. Relative accuracy on small eigenvalues
  is about ``eps·σ_max/σ_i`` instead of ``eps·λ_max/λ_i``: the square root of the Gram method's error ratio.
* ``"auto"`` (default): ``"eigh"``, then the a-posteriori error bound of :mod:`spectra.functional.certify`
  (δ = 8·eps·‖W‖²_F on every eigenvalue) decides which eigenvalues are trusted to 1e-10 relative. The few
  that are not (the bottom of a square layer's spectrum, which reaches down to ~0) are recomputed from the
  same reduction by a Rayleigh–Ritz step on W with a Kato–Temple certificate; only when that fails
  (rank-deficient or nearly low-rank matrices, clustered tiny eigenvalues) does ``"svd"`` run. See
  :class:`spectra.functional.decompose.Decomposer`. On CUDA, ``"auto"`` keeps the simpler rule of earlier
  versions: ``"svd"`` when ``λ_min < AUTO_SVD_RCOND · λ_max``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._validate import as_matrix

__all__ = ["esd", "esd_from", "esd_pooled", "ESD_METHODS", "AUTO_SVD_RCOND"]

ESD_METHODS = ("auto", "eigh", "svd")
# CUDA tensors only: "auto" takes the SVD when λ_min < AUTO_SVD_RCOND · λ_max (CPU: the error bound decides)
AUTO_SVD_RCOND = 1e-6


def _check_method(method: str) -> None:
    if method not in ESD_METHODS:
        raise ValueError(f"unknown esd method {method!r}; allowed: {', '.join(ESD_METHODS)}")


def _gram_eigvals(A) -> np.ndarray:
    import torch

    G = A.T @ A if A.shape[0] >= A.shape[1] else A @ A.T
    return torch.linalg.eigvalsh(G).cpu().numpy()


def _svd_eigvals(A) -> np.ndarray:
    import torch

    s = torch.linalg.svdvals(A).cpu().numpy()
    return np.sort(s**2)


def _cuda_eigvals(A, method: str) -> np.ndarray:
    if method == "svd":
        return _svd_eigvals(A)
    # eigenvalues of a PSD Gram matrix that come out slightly negative are rounding noise around zero
    lam = np.clip(_gram_eigvals(A), 0.0, None)
    if method == "auto" and lam.size and lam[-1] > 0 and lam[0] < AUTO_SVD_RCOND * lam[-1]:
        return _svd_eigvals(A)
    return lam


_TINY = float(np.finfo(np.float64).tiny)


def _overflow(A: Any) -> ValueError:
    peak = float(abs(A).max())
    return ValueError(
        f"the eigenvalues of WᵀW overflow float64 (largest |W| entry {peak:.3g}, shape {tuple(A.shape)}); "
        "rescale W first (eigenvalues scale with the square of W)"
    )


def esd_from(decomposer: Any, *, normalize: bool = False, method: str = "auto") -> np.ndarray:
    """:func:`esd` of the matrix held by a :class:`~spectra.functional.decompose.Decomposer`, sharing its work.

    Args:
        decomposer: the matrix's decomposer (its Gram reduction also serves its top-k singular triplets).
        normalize: divide by N = max(W.shape).
        method: as in :func:`esd`.

    Returns:
        min(W.shape) eigenvalues, ascending, float64 (the decomposer's cached array, or a new one when
        normalised: do not modify it).

    Raises:
        ValueError: the eigenvalues overflow float64, or ``method`` is unknown.
    """
    _check_method(method)
    err = None
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            lam = decomposer.eigvals(method)
    except np.linalg.LinAlgError as exc:  # a Gram matrix that overflowed to inf makes LAPACK fail
        lam, err = None, exc
    if lam is None or not np.all(np.isfinite(lam)):
        raise _overflow(decomposer.matrix) from err
    peak = float(np.abs(decomposer.matrix).max()) if lam.size and lam[-1] < _TINY else 0.0
    if peak > 0 and peak * peak < _TINY:  # σ_max ≥ max|w|: λ_max would be subnormal or zero
        raise ValueError(
            f"the eigenvalues of WᵀW underflow float64 (largest |W| entry {peak:.3g}, shape "
            f"{tuple(decomposer.shape)}): they would come out as zeros or subnormals; rescale W first "
            "(eigenvalues scale with the square of W)"
        )
    if normalize:
        lam = lam / float(max(decomposer.shape))
    return lam


def esd(W: Any, *, normalize: bool = False, method: str = "auto") -> np.ndarray:
    """Eigenvalues of WᵀW (the smaller Gram side), ascending, float64.

    Args:
        W: a 2-D torch tensor (any float dtype including bf16/fp16, any device) or array-like.
        normalize: divide by N = max(W.shape) (the (1/N)·WᵀW convention of the HT-SR papers).
        method: ``"auto"`` (Gram + eigh with an SVD fallback for ill-conditioned spectra), ``"eigh"`` or
            ``"svd"``. See the module docstring for accuracy.

    Returns:
        ``numpy.ndarray`` of min(W.shape) eigenvalues, ascending, float64. Computed on the tensor's device when
        it is a CUDA tensor; only the eigenvalues are copied to the host.

    Raises:
        ValueError: W is not 2-D, is empty, holds NaN/Inf (the count is given), or ``method`` is unknown.
        TypeError: W is complex or not numeric.
    """
    _check_method(method)
    A = as_matrix(W)
    if isinstance(A, np.ndarray):
        from .decompose import Decomposer

        return esd_from(Decomposer(A, name="W"), normalize=normalize, method=method)
    err = None
    try:
        lam = _cuda_eigvals(A, method)
    except RuntimeError as exc:  # a Gram matrix that overflowed to inf makes the solver fail
        lam, err = None, exc
    if lam is None or not np.all(np.isfinite(lam)):
        raise _overflow(A) from err
    if normalize:
        lam = lam / float(max(A.shape))
    return lam


def esd_pooled(
    matrices: Any, *, scale: float = 1.0, normalize: bool = False, method: str = "auto"
) -> np.ndarray:
    """Pooled ESD of a stack of matrices (e.g. the kh·kw slices of a Conv2d), ascending.

    Args:
        matrices: a 3-D tensor/array (batch, rows, cols) or a sequence of 2-D matrices.
        scale: multiply every eigenvalue by this factor (WeightWatcher's Conv2d convention is ½).
        normalize: divide each slice's eigenvalues by its N = max(rows, cols).
        method: as in :func:`esd`.

    Returns:
        The concatenated, scaled eigenvalues of every slice, sorted ascending.
    """
    _check_method(method)
    if hasattr(matrices, "dim") and matrices.dim() == 2 or getattr(matrices, "ndim", None) == 2:
        return esd(matrices, normalize=normalize, method=method) * scale
    parts = [esd(m, normalize=normalize, method=method) for m in matrices]
    if not parts:
        raise ValueError("esd_pooled needs at least one matrix")
    return np.sort(np.concatenate(parts)) * scale
