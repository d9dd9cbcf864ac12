"""Empirical spectral density: eigenvalues of WᵀW.

Convention (DESIGN §6): the eigenvalues are λ_i = σ_i(W)², taken from the smaller Gram side, with **no 1/N
normalisation** (as in WeightWatcher) unless ``normalize=True``, in which case they are divided by
N = max(rows, cols) (the HT-SR papers' (1/N)·WᵀW). They are returned ascending, as float64 numpy.

Backends (chosen by measurement, see ``benchmarks/bench_esd.py``):

* ``"eigh"``: form the smaller Gram matrix G = WᵀW (or WWᵀ) in float64 and take its eigenvalues with a
  symmetric divide-and-conquer solver (scipy ``eigh(driver="evd")`` on CPU, ``torch.linalg.eigvalsh`` on
  CUDA). Fast; the absolute error of every eigenvalue is about ``eps·λ_max``, so *relative* accuracy is lost on
  eigenvalues far below λ_max.
* ``"svd"``: singular values of W itself (LAPACK ``gesdd``), squared. Relative accuracy on small eigenvalues
  is about ``eps·σ_max/σ_i`` instead of ``eps·λ_max/λ_i``: the square root of the Gram method's error ratio.
* ``"auto"`` (default): ``"eigh"``, then a fallback to ``"svd"`` when the spectrum is ill-conditioned,
  i.e. when ``λ_min < AUTO_SVD_RCOND · λ_max`` (default 1e-6): there the Gram route could carry a relative error
  above ~1e-10 on the smallest eigenvalues. Rank-deficient and nearly low-rank matrices therefore take the SVD
  path; well-conditioned ones (random-init and most trained layers) take the fast path.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._validate import as_matrix

__all__ = ["esd", "esd_pooled", "ESD_METHODS", "AUTO_SVD_RCOND"]

ESD_METHODS = ("auto", "eigh", "svd")
AUTO_SVD_RCOND = 1e-6


def _check_method(method: str) -> None:
    if method not in ESD_METHODS:
        raise ValueError(f"unknown esd method {method!r}; allowed: {', '.join(ESD_METHODS)}")


def _gram_eigvals(A) -> np.ndarray:
    if isinstance(A, np.ndarray):
        from scipy.linalg import eigh

        G = A.T @ A if A.shape[0] >= A.shape[1] else A @ A.T
        return np.asarray(eigh(G, eigvals_only=True, driver="evd", overwrite_a=True, check_finite=False))
    import torch

    G = A.T @ A if A.shape[0] >= A.shape[1] else A @ A.T
    return torch.linalg.eigvalsh(G).cpu().numpy()


def _svd_eigvals(A) -> np.ndarray:
    if isinstance(A, np.ndarray):
        from scipy.linalg import svdvals

        s = svdvals(A, check_finite=False)
        return np.sort(s.astype(np.float64) ** 2)
    import torch

    s = torch.linalg.svdvals(A).cpu().numpy()
    return np.sort(s**2)


def _eigvals(A, method: str) -> np.ndarray:
    if method == "svd":
        return _svd_eigvals(A)
    lam = _gram_eigvals(A)
    # eigenvalues of a PSD Gram matrix that come out slightly negative are rounding noise around zero
    lam = np.clip(lam, 0.0, None)
    if method == "auto" and lam.size and lam[-1] > 0 and lam[0] < AUTO_SVD_RCOND * lam[-1]:
        return _svd_eigvals(A)
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
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            lam = _eigvals(A, method)
    except np.linalg.LinAlgError as exc:  # a Gram matrix that overflowed to inf makes LAPACK fail
        lam, err = None, exc
    if lam is None or not np.all(np.isfinite(lam)):
        peak = float(abs(A).max())
        raise ValueError(
            f"the eigenvalues of WᵀW overflow float64 (largest |W| entry {peak:.3g}, shape {tuple(A.shape)}); "
            "rescale W first (eigenvalues scale with the square of W)"
        ) from (err if lam is None else None)
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
