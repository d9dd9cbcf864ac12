"""The checks every ESD entry point shares, whatever the backend: the ``method=`` values and the overflow /
underflow refusals with their messages.

:mod:`spectra.functional.esd` (both backends, through their decomposers) and :mod:`spectra.functional.torch_esd`
(the batched solve of a stack on its device) use them; this module imports nothing of spectra, so either can.
Matrices may be numpy arrays or torch tensors on any device: only ``abs(A).max()`` and ``A.shape`` are read.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["ESD_METHODS", "TINY", "check_method", "overflow_error", "check_underflow"]

ESD_METHODS = ("auto", "eigh", "svd")
TINY = float(np.finfo(np.float64).tiny)


def check_method(method: str) -> None:
    """Refuse an unknown ``method=`` (allowed: :data:`ESD_METHODS`).

    Raises:
        ValueError: ``method`` is not one of :data:`ESD_METHODS`.
    """
    if method not in ESD_METHODS:
        raise ValueError(f"unknown esd method {method!r}; allowed: {', '.join(ESD_METHODS)}")


def _peak(A: Any) -> float:
    """max |a_ij| as a Python float (numpy array or tensor on any device)."""
    return float(abs(A).max())


def overflow_error(A: Any) -> ValueError:
    """The error to raise when the eigenvalues of AᵀA overflow float64."""
    return ValueError(
        f"the eigenvalues of WᵀW overflow float64 (largest |W| entry {_peak(A):.3g}, shape {tuple(A.shape)}); "
        "rescale W first (eigenvalues scale with the square of W)"
    )


def check_underflow(A: Any) -> None:
    """Refuse a matrix whose eigenvalues underflow float64 (σ_max ≥ max|a|: λ_max would be subnormal or zero).

    Call it only when λ_max < :data:`TINY` (it reads every entry).

    Raises:
        ValueError: 0 < max|a|² < :data:`TINY`.
    """
    peak = _peak(A)
    if peak > 0 and peak * peak < TINY:
        raise ValueError(
            f"the eigenvalues of WᵀW underflow float64 (largest |W| entry {peak:.3g}, shape {tuple(A.shape)}): "
            "they would come out as zeros or subnormals; rescale W first (eigenvalues scale with the square of W)"
        )
