"""Device-side building blocks of the torch backend (:mod:`spectra.functional.torch_decompose`,
:mod:`spectra.functional.torch_esd`): everything runs with ``torch.linalg`` where the tensor lives, and only
small vectors (Ritz values, residual norms) come to the host for the certificates of
:mod:`spectra.functional.certify`.

* input validation: a matrix or a stack as a tensor in the compute dtype, with the messages of
  :mod:`spectra.functional._validate`;
* the Gram product G = TᵀT with power-of-two rescaling when its trace would overflow or underflow;
* Rayleigh–Ritz steps, and the refinement of the smallest eigenvalues with Kato–Temple certificates;
* the low-rank / deflation stages (pivoted partial Cholesky, QR stage, completion) and the certified
  Rayleigh–Ritz step on the union of their subspaces.

Each mirrors its LAPACK counterpart in :mod:`spectra.functional.lowrank`, :mod:`spectra.functional.topk` or
:class:`spectra.functional.decompose.Decomposer`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._validate import _is_torch_tensor, as_finite_stack, as_matrix
from .certify import rank_floor, rounding_error, temple_lower_bounds, temple_upper_bounds
from .decompose import REFINE_MAX_FRACTION, REFINE_MIN
from .lowrank import LOWRANK_ENERGY
from .topk import Fallback

# trace(G) outside [2**-e, 2**e] triggers a power-of-two rescaling of the matrix before the product
_SAFE_EXP = {"fp64": 600, "fp32": 50}


def _torch() -> Any:
    import torch

    return torch


def _linalg_errors() -> tuple[type[BaseException], ...]:
    return (np.linalg.LinAlgError, _torch().linalg.LinAlgError)


class _GramOverflow(np.linalg.LinAlgError):
    """The Gram matrix (its eigenvalues) overflow float64 even after scaling."""


def _dtype(precision: str) -> Any:
    """The torch compute dtype of a precision (``"fp64"`` → float64, ``"fp32"`` → float32)."""
    torch = _torch()
    return torch.float64 if precision == "fp64" else torch.float32


def _validated(A: Any, *, name: str, precision: str) -> Any:
    """A as a 2-D tensor in the compute dtype on its own device (numpy input: a CPU tensor), validated with
    :func:`spectra.functional._validate.as_matrix`'s messages."""
    torch = _torch()
    dtype = _dtype(precision)
    if not _is_torch_tensor(A):
        return torch.from_numpy(as_matrix(A, name=name)).to(dtype)
    t = A.detach()
    if t.is_quantized or t.is_complex() or t.device.type == "meta" or t.dim() != 2 or t.numel() == 0:
        return as_matrix(t, name=name)  # raises the shared message
    if t.is_sparse or t.layout != torch.strided:
        t = t.to_dense()
    src_finite = t.dtype == torch.bool or not t.is_floating_point()
    t = t.to(dtype)
    if not src_finite and not bool(torch.isfinite(t.sum())):  # one reduction; count only when it fails
        bad = int((~torch.isfinite(t)).sum())
        if bad:
            if precision == "fp32" and bool(torch.isfinite(A.detach().to(torch.float64)).all()):
                raise ValueError(
                    f"{name} has entries beyond float32's range (largest |{name}| entry "
                    f"{float(A.detach().abs().max()):.3g}); use precision='fp64'"
                )
            raise ValueError(f"{name} holds {bad} non-finite value(s) (NaN or Inf) out of {t.numel()}")
    return t


def _validated_stack(W: Any, *, name: str, precision: str) -> Any:
    """A 2-D matrix or a 3-D stack as a (slices, rows, cols) tensor in the compute dtype on its own device
    (numpy input: a CPU tensor), validated with :func:`spectra.functional._validate.as_finite_stack`'s
    messages."""
    torch = _torch()
    dtype = _dtype(precision)
    if not _is_torch_tensor(W):
        return torch.from_numpy(as_finite_stack(W, name=name)).to(dtype)
    t = W.detach()
    if t.dim() == 2:
        t = t[None]
    if t.dim() != 3 or t.numel() == 0 or t.is_complex():
        if t.is_complex():
            raise TypeError(f"{name} has complex dtype {t.dtype}; spectra analyses real matrices only")
        raise ValueError(f"{name} must be a 2-D matrix or a 3-D stack of slices, got shape {tuple(W.shape)}")
    t = t.to(dtype)
    bad = int((~torch.isfinite(t)).sum()) if not bool(torch.isfinite(t.sum())) else 0
    if bad:
        raise ValueError(f"{name} holds {bad} non-finite value(s)")
    return t


def _pow2(amax: float) -> tuple[float, float]:
    """2^−e with max|A|·2^−e near 1 (exact scaling), and the eigenvalue factor 4^e."""
    e = int(np.frexp(amax)[1])
    with np.errstate(over="ignore"):  # eigenvalues beyond float64: an infinite factor, reported by the caller
        return float(np.ldexp(1.0, -e)), float(np.ldexp(1.0, 2 * e))


def _gram(T: Any, precision: str) -> tuple[Any, float, float]:
    """G = TᵀT of a tall tensor, rescaled by a power of four when its trace would overflow or underflow.

    Returns:
        ``(G, scale, fro2)``: TᵀT = scale·G and ‖T‖²_F (a Python float, possibly ``inf`` when the eigenvalues
        themselves overflow float64).
    """
    torch = _torch()
    lim = 2.0 ** _SAFE_EXP[precision]
    G = T.T @ T
    tr = float(torch.diagonal(G).sum())
    if math.isfinite(tr) and 1.0 / lim < tr < lim:
        return G, 1.0, tr
    amax = float(T.abs().max())  # a zero trace is a zero matrix, or squares that underflowed
    if amax == 0.0 or not math.isfinite(amax):
        return G, 1.0, tr
    f, scale = _pow2(amax)
    Ts = T * f
    G = Ts.T @ Ts
    return G, scale, float(torch.diagonal(G).sum()) * scale


def _host(x: Any) -> np.ndarray:
    """A (small) tensor as a float64 numpy array on the host."""
    return x.detach().cpu().numpy().astype(np.float64, copy=False)


def _rayleigh_ritz(X: Any, V: Any) -> tuple[Any, Any, Any]:
    """Triplets of X on the orthonormal right subspace V: SVD of X·V; X @ V_out = U·S to rounding."""
    torch = _torch()
    U, S, Zh = torch.linalg.svd(X @ V, full_matrices=False)
    return U, S, V @ Zh.T


def _col_norms(X: Any) -> Any:
    return _torch().linalg.vector_norm(X, dim=0)


def _lowrank_columns(G: Any, max_rank: int, energy: float = LOWRANK_ENERGY) -> Any:
    """:func:`spectra.functional.lowrank.lowrank_columns` on the device: pivot columns (a device index tensor)
    when A is numerically of rank ≤ ``max_rank``, else ``None``."""
    torch = _torch()
    n = G.shape[0]
    max_rank = min(int(max_rank), n)
    diag = torch.diagonal(G).clone()
    total = float(diag.sum())
    if max_rank < 1 or not total > 0:
        return None
    L = G.new_zeros((max_rank, n))
    piv: list[int] = []
    found = False
    trailing = total
    for i in range(max_rank):
        dj_t, j_t = torch.max(diag, dim=0)
        j, dj = int(j_t), float(dj_t)
        if not dj > 0:
            break
        row = (G[j] - L[:i, j] @ L[:i]) / math.sqrt(dj)
        new_diag = torch.clamp(diag - row * row, min=0.0)
        new_diag[j] = 0.0
        new = float(new_diag.sum())
        if found and new > 0.1 * trailing:
            break  # this pivot would only pick up noise: the rank is found
        L[i], diag, trailing = row, new_diag, new
        piv.append(j)
        if not found and new <= energy * total:
            found = True
    return torch.tensor(piv, dtype=torch.long, device=G.device) if found else None


def _qr_stage(A: Any, cols: Any, *, tol: float, max_steps: int = 4) -> tuple[Any, Any, Any, Any]:
    """:func:`spectra.functional.lowrank.qr_stage` on the device: ``(U, S, V, R)`` with R = A − U·diag(S)·Vᵀ."""
    torch = _torch()
    Q, _ = torch.linalg.qr(A[:, cols])
    V, _ = torch.linalg.qr((Q.T @ A).T)  # row space of the small core C = QᵀA
    for _ in range(max(1, int(max_steps))):
        V, _ = torch.linalg.qr(A.T @ (A @ V))  # one subspace-iteration step on AᵀA
        U, S, Zh = torch.linalg.svd(A @ V, full_matrices=False)
        V = V @ Zh.T
        R = A - (U * S) @ V.T
        tau = float((R * R).sum())
        rho = S * _col_norms(A.T @ U - V * S)
        sig = S**2 > tau
        if bool(torch.all(rho[sig] <= tol * (S[sig] ** 2 - tau))):
            break
    return U, S, V, R


def _completion(X: Any, blocks: list[Any], count: int) -> Any:
    """``count`` orthonormal right vectors orthogonal to ``blocks`` (for numerically zero triplets); as
    :func:`spectra.functional.topk.completion`, with an SVD where LAPACK uses a pivoted QR (torch has none)."""
    torch = _torch()
    M = X.shape[1]
    Vp = torch.cat(blocks, dim=1) if blocks else X.new_zeros((M, 0))
    norms = (X * X).sum(dim=0)
    idx = torch.argsort(-norms, stable=True)[: min(M, count + Vp.shape[1])]
    E = X.new_zeros((M, idx.numel()))
    E[idx, torch.arange(idx.numel(), device=X.device)] = 1.0
    for _ in range(2):
        E = E - Vp @ (Vp.T @ E)
    Q = torch.linalg.svd(E, full_matrices=False)[0]
    return Q[:, :count]


def _certified_union(
    T: Any, blocks: list[Any], caps: list[tuple[int, np.ndarray, float]], k: int, rtol: float, strict: bool
) -> tuple[Any, Any, Any]:
    """:func:`spectra.functional.topk.certified_union` with the Rayleigh–Ritz step on the device and the
    certificates (the same functions of :mod:`~spectra.functional.certify`) on the host."""
    torch = _torch()
    Vq, _ = torch.linalg.qr(torch.cat(blocks, dim=1))
    U, S_t, V = _rayleigh_ritz(T, Vq)
    q = S_t.numel()
    if q < k:
        raise Fallback("the stages found fewer than k directions")
    S = _host(S_t)
    rho = S * _host(_col_norms(T.T @ U - V * S_t))
    theta = S**2
    bound = np.full(q + 1, np.inf)  # bound[i] ≥ the (i+1)-th largest eigenvalue of TᵀT
    for start, vals, tail in caps:
        for i in range(max(start, 0), q + 1):
            rel = i + 1 - start
            bound[i] = min(bound[i], vals[rel - 1] if rel <= vals.size else tail)
    with np.errstate(over="ignore", invalid="ignore"):  # ρ² beyond float64: no certificate (inf)
        ub_all = temple_upper_bounds(theta, rho, bound)
    ub = ub_all[:k]
    floor2 = rank_floor(S[0], tuple(T.shape)) ** 2
    th = theta[:k]
    rnd = rounding_error(S[0], S[:k])
    ok = (ub - th + rnd <= rtol * th) if strict else (ub - th <= rtol * th + rnd)
    zero = ub <= floor2
    if not np.all(ok | zero):
        raise Fallback("a value could not be certified")
    above = np.append(np.inf, theta[: k - 1]) - th
    below = th - np.append(ub_all[1:], bound[q])[:k]
    gap = np.minimum(above, below)
    r = rho[:k]
    vec_ok = (gap > 0) & ((r + rnd <= rtol * gap) if strict else (r <= rtol * gap + rnd))
    if not np.all(vec_ok | zero):
        raise Fallback("a singular vector could not be certified")
    return U[:, :k], S_t[:k], V[:, :k]


def _refine_bottom(
    T: Any, lam: np.ndarray, Z: Any, s: int, delta: float, rtol: float, strict: bool
) -> np.ndarray | None:
    """Recompute the ``s`` smallest eigenvalues by Rayleigh–Ritz on T from the bottom eigenvectors ``Z`` of its
    Gram matrix (as :meth:`spectra.functional.decompose.Decomposer._refine_bottom`); ``None`` unless every one
    is certified."""
    torch = _torch()
    s2 = Z.shape[1]
    if not bool(torch.isfinite(Z).all()):
        return None
    U, sig_t, V = _rayleigh_ritz(T, Z)
    U, sig_t, V = U.flip(1), sig_t.flip(0), V.flip(1)  # ascending
    sig = _host(sig_t)
    rho = sig * _host(_col_norms(T.T @ U - V * sig_t))  # ‖TᵀT v − σ² v‖ = σ‖Tᵀu − σv‖
    theta = sig**2
    beta_next = np.append(lam[1 : s2 + 1] - delta, np.inf)[:s2]  # lower bounds on λ_{i+1}
    with np.errstate(over="ignore", invalid="ignore"):  # ρ² beyond float64: no certificate (−inf)
        lb = temple_lower_bounds(theta, rho, beta_next)[:s]
    th = theta[:s]
    rnd = rounding_error(np.sqrt(lam[-1]), sig[:s])
    ok = (th - lb + rnd <= rtol * lb) if strict else (th - lb <= rtol * lb + rnd)
    zero = th <= rank_floor(np.sqrt(lam[-1]), tuple(T.shape)) ** 2
    if not np.all(((lb > 0) & ok) | zero):
        return None
    out = lam.copy()
    out[:s] = th
    return np.sort(out)


def _must_refine(n: int, s: int) -> bool:
    return 0 < s < n and s <= max(REFINE_MIN, int(REFINE_MAX_FRACTION * n))

