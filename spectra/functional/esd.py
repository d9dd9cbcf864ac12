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
  :class:`spectra.functional.decompose.Decomposer`.

Where the work runs is :func:`spectra.functional.backend.make_decomposer`'s choice (``backend=``): by default a
CUDA tensor stays on its device, where :class:`~spectra.functional.torch_decompose.TorchDecomposer` runs the same
routes with the same certificates in ``torch.linalg`` (a stack of slices: one batched solve,
:func:`spectra.functional.torch_esd.batched_eigvals`); anything else goes to LAPACK on the host.
``backend="torch"`` takes the device path on a CPU tensor or an array too.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._esd_checks import ESD_METHODS, TINY, check_method, check_underflow, overflow_error
from .backend import make_decomposer, select_backend

__all__ = ["esd", "esd_from", "esd_pooled", "ESD_METHODS", "AUTO_SVD_RCOND"]

# the CUDA-only rule of earlier versions ("auto" took the SVD when λ_min < AUTO_SVD_RCOND · λ_max); no route
# uses it any more (every backend certifies each eigenvalue), it stays importable for existing code
AUTO_SVD_RCOND = 1e-6


def esd_from(decomposer: Any, *, normalize: bool = False, method: str = "auto") -> np.ndarray:
    """:func:`esd` of the matrix held by a decomposer, sharing its work.

    Either backend's decomposer: a :class:`~spectra.functional.decompose.Decomposer` (LAPACK on the host) or a
    :class:`~spectra.functional.torch_decompose.TorchDecomposer` (its matrix stays on its device; only the
    eigenvalues come to the host).

    Args:
        decomposer: the matrix's decomposer (its Gram reduction also serves its top-k singular triplets).
        normalize: divide by N = max(W.shape).
        method: as in :func:`esd`.

    Returns:
        min(W.shape) eigenvalues, ascending, float64 (the decomposer's cached array, or a new one when
        normalised: do not modify it).

    Raises:
        ValueError: the eigenvalues overflow or underflow float64, or ``method`` is unknown.
    """
    check_method(method)
    err = None
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            lam = decomposer.eigvals(method)
    except np.linalg.LinAlgError as exc:  # a Gram matrix that overflowed to inf makes the solver fail
        lam, err = None, exc
    if lam is None or not np.all(np.isfinite(lam)):
        raise overflow_error(decomposer.matrix) from err
    if lam.size and lam[-1] < TINY:  # σ_max ≥ max|w|: λ_max would be subnormal or zero
        check_underflow(decomposer.matrix)
    if normalize:
        lam = lam / float(max(decomposer.shape))
    return lam


def esd(W: Any, *, normalize: bool = False, method: str = "auto", backend: str = "auto") -> np.ndarray:
    """Eigenvalues of WᵀW (the smaller Gram side), ascending, float64.

    Args:
        W: a 2-D torch tensor (any float dtype including bf16/fp16, any device) or array-like.
        normalize: divide by N = max(W.shape) (the (1/N)·WᵀW convention of the HT-SR papers).
        method: ``"auto"`` (Gram + eigh, certified, with refinement or an SVD where the bound fails), ``"eigh"``
            or ``"svd"``. See the module docstring for accuracy.
        backend: ``"auto"`` (a CUDA tensor on its device, anything else with LAPACK on the host), ``"torch"``
            or ``"lapack"``; see :func:`spectra.functional.backend.make_decomposer`.

    Returns:
        ``numpy.ndarray`` of min(W.shape) eigenvalues, ascending, float64. On the torch backend the work runs on
        the tensor's device; only the eigenvalues are copied to the host.

    Raises:
        ValueError: W is not 2-D, is empty, holds NaN/Inf (the count is given), its eigenvalues overflow or
            underflow float64, or ``method`` or ``backend`` is unknown.
        TypeError: W is complex or not numeric.
    """
    check_method(method)
    return esd_from(make_decomposer(W, name="W", backend=backend), normalize=normalize, method=method)


def esd_pooled(
    matrices: Any, *, scale: float = 1.0, normalize: bool = False, method: str = "auto", backend: str = "auto"
) -> np.ndarray:
    """Pooled ESD of a stack of matrices (e.g. the kh·kw slices of a Conv2d), ascending.

    Args:
        matrices: a 3-D tensor/array (batch, rows, cols) or a sequence of 2-D matrices.
        scale: multiply every eigenvalue by this factor (WeightWatcher's Conv2d convention is ½).
        normalize: divide each slice's eigenvalues by its N = max(rows, cols).
        method: as in :func:`esd`.
        backend: as in :func:`esd`. A 3-D stack on the torch backend is solved in one batched call
            (:func:`spectra.functional.torch_esd.torch_esd_pooled`); a sequence is decomposed slice by slice,
            each slice on its own backend.

    Returns:
        The concatenated, scaled eigenvalues of every slice, sorted ascending.
    """
    check_method(method)
    if hasattr(matrices, "dim") and matrices.dim() == 2 or getattr(matrices, "ndim", None) == 2:
        return esd(matrices, normalize=normalize, method=method, backend=backend) * scale
    if getattr(matrices, "ndim", None) == 3 and len(matrices) and select_backend(matrices, backend) == "torch":
        from .torch_esd import torch_esd_pooled

        return torch_esd_pooled(matrices, scale=scale, normalize=normalize, method=method)
    parts = [esd(m, normalize=normalize, method=method, backend=backend) for m in matrices]
    if not parts:
        raise ValueError("esd_pooled needs at least one matrix")
    return np.sort(np.concatenate(parts)) * scale
