"""Input validation and conversion shared by the pure functions."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["as_matrix", "as_float64_vector", "as_finite_vector"]


def _is_torch_tensor(x: Any) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


def as_matrix(W: Any, *, name: str = "W"):
    """Validate a 2-D real matrix and return it as a float64 numpy array or a float64 CUDA tensor.

    Args:
        W: torch tensor (any float dtype, any device) or array-like.
        name: name used in error messages.

    Returns:
        ``numpy.ndarray`` (float64) for CPU inputs, or a float64 ``torch.Tensor`` on the input's CUDA device.

    Raises:
        ValueError: the input is not 2-D, is empty, or holds NaN/Inf values (the message says how many).
        TypeError: the dtype is not real floating point or integer.
    """
    if _is_torch_tensor(W):
        import torch

        t = W.detach()
        if t.is_quantized:
            raise TypeError(
                f"{name} is a quantized tensor ({t.dtype}); spectra does not guess how to read it: pass "
                f"{name}.dequantize() (or the float weights with their scale applied)"
            )
        if t.is_sparse or t.layout != torch.strided:
            t = t.to_dense()
        if t.is_complex():
            raise TypeError(f"{name} has complex dtype {t.dtype}; spectra analyses real matrices only")
        if t.device.type == "meta":
            raise ValueError(f"{name} is on the meta device and holds no values")
        if t.dim() != 2:
            raise ValueError(f"{name} must be 2-D, got shape {tuple(t.shape)}")
        if t.numel() == 0:
            raise ValueError(f"{name} is empty, shape {tuple(t.shape)}")
        if t.dtype == torch.bool:
            t = t.to(torch.float64)
        t = t.to(torch.float64)
        bad = int((~torch.isfinite(t)).sum())
        if bad:
            raise ValueError(f"{name} holds {bad} non-finite value(s) (NaN or Inf) out of {t.numel()}")
        if t.device.type == "cuda":
            return t
        return t.cpu().numpy()
    a = np.asarray(W)
    if np.iscomplexobj(a):
        raise TypeError(f"{name} has complex dtype {a.dtype}; spectra analyses real matrices only")
    if a.dtype.kind not in "fiub":
        raise TypeError(f"{name} has dtype {a.dtype}; expected a real floating-point or integer array")
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} is empty, shape {a.shape}")
    a = a.astype(np.float64, copy=False)
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(np.einsum("ij->", a)):  # one pass, no temporary: a NaN or Inf makes the sum non-finite
            return a
    bad = int((~np.isfinite(a)).sum())  # the sum overflowed, or there are NaN/Inf entries: count them
    if bad:
        raise ValueError(f"{name} holds {bad} non-finite value(s) (NaN or Inf) out of {a.size}")
    return a


def as_finite_vector(x: Any, *, name: str = "evals") -> np.ndarray:
    """Return a 1-D float64 numpy copy of eigenvalues, refusing complex or non-finite values.

    Raises:
        TypeError: the values are complex (the imaginary part would otherwise be dropped silently).
        ValueError: some values are NaN or Inf (the message says how many).
    """
    if _is_torch_tensor(x):
        if x.is_complex():
            raise TypeError(f"{name} has complex dtype {x.dtype}; eigenvalues of WᵀW are real")
    elif np.iscomplexobj(x):
        raise TypeError(f"{name} is complex; eigenvalues of WᵀW are real")
    a = as_float64_vector(x)
    bad = int(np.count_nonzero(~np.isfinite(a)))
    if bad:
        raise ValueError(f"{name} holds {bad} non-finite value(s) (NaN or Inf) out of {a.size}")
    return a


def as_float64_vector(x: Any) -> np.ndarray:
    """Return a 1-D float64 numpy copy of eigenvalues (torch or array-like), without validation of values."""
    if _is_torch_tensor(x):
        x = x.detach().to("cpu").double().numpy()
    return np.asarray(x, dtype=np.float64).ravel()


def as_finite_stack(W: Any, *, name: str = "W") -> np.ndarray:
    """A 2-D matrix or a 3-D stack of slices as a float64 (slices, rows, cols) numpy array (a matrix is one
    slice).

    Raises:
        ValueError: not 2-D or 3-D, empty, or holding NaN/Inf (the count is given).
    """
    if _is_torch_tensor(W):
        W = W.detach().to("cpu").double().numpy()
    A = np.asarray(W, dtype=np.float64)
    if A.ndim == 2:
        A = A[None]
    if A.ndim != 3 or A.size == 0:
        raise ValueError(f"{name} must be a 2-D matrix or a 3-D stack of slices, got shape {A.shape}")
    bad = int(np.count_nonzero(~np.isfinite(A)))
    if bad:
        raise ValueError(f"{name} holds {bad} non-finite value(s)")
    return A
