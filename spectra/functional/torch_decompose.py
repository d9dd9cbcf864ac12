"""The decomposition routes on a torch tensor's own device (CUDA, or CPU for tests).

:class:`TorchDecomposer` has the interface of :class:`spectra.functional.decompose.Decomposer` and the same
routes, run with ``torch.linalg`` where the matrix lives; only eigenvalues, the top-k singular triplets and
small vectors of certificate data (Ritz values, residual norms) come back to the host. The matrix is handled as
its tall orientation T (a view, never a copy), TᵀT being the smaller Gram matrix:

``gram``
    One product G = TᵀT on the device. Eigenvalues from ``torch.linalg.eigvalsh(G)``; when top-k vectors are
    planned too, one ``torch.linalg.eigh(G)`` serves both (torch has no subset eigensolver, so the
    tridiagonal reduction of :mod:`spectra.functional.tridiag` is replaced by the full symmetric eigensolve).
    The top-k eigenvectors X then go through a Rayleigh–Ritz step, the SVD of the N × k projection T·X
    (``torch.linalg.svd``), for consistent, orthonormal U and V.
``gram+refine``
    When a few of the smallest eigenvalues fail the a-posteriori bound of :mod:`spectra.functional.certify`,
    their eigenvectors come from ``eigh(G)`` and a Rayleigh–Ritz step on T itself recomputes them, each
    accepted only with its Kato–Temple certificate, exactly as the LAPACK route does.
``qr`` / ``deflate``
    Numerically low-rank matrices: a pivoted partial Cholesky of G picks columns, QR of that thin factor,
    subspace iteration and the SVD of the small core, all on the device; deflation of what is certified and
    the same stages on the residual; one Rayleigh–Ritz step on the union of the subspaces, certified value by
    value (interlacing, Kato–Temple) and vector by vector (Davis–Kahan).
``svd`` / ``svdvals``
    ``torch.linalg.svd`` / ``torch.linalg.svdvals`` on the device, when k is large or a certificate fails.

Every bound is the one the LAPACK :class:`~spectra.functional.decompose.Decomposer` uses (the functions of
:mod:`spectra.functional.certify`, evaluated on the host on a few scalars per value), so in float64
(``precision="fp64"``, the default) the accuracy contract is the same: every number within 1e-10 relative of
the full SVD's, down to the rank floor (``strict=True``), or within 1e-10 relative or the SVD's own absolute
accuracy (``strict=False``).

``precision="fp32"`` computes in float32 and certifies nothing: every eigenvalue carries the absolute error
bound δ₃₂ = 8·eps₃₂·‖A‖²_F of the Gram route (:func:`spectra.functional.certify.gram_error_bound` with
float32's eps; :attr:`TorchDecomposer.error_bound`), larger when torch's float32 matmuls are allowed TF32 or
bfloat16 (``torch.set_float32_matmul_precision``). docs/gpu.md gives its measured accuracy.

:func:`batched_eigvals` computes the eigenvalues of a stack of same-shape matrices with one batched
``eigvalsh``; :func:`torch_esd_from` and :func:`torch_esd_pooled` are :func:`spectra.functional.esd.esd_from`
and :func:`~spectra.functional.esd.esd_pooled` for this backend.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._validate import _is_torch_tensor, as_finite_stack, as_matrix
from .certify import (
    EPS,
    EVALS_RTOL,
    gram_error_bound,
    rank_floor,
    rounding_error,
    temple_lower_bounds,
    temple_upper_bounds,
    trusted_top,
    untrusted_bottom,
)
from .decompose import _REFINE_EXTRA, EIGVALS_METHODS, REFINE_MAX_FRACTION, REFINE_MIN, SVD_FULL_FRACTION
from .esd import _TINY, _check_method, _overflow
from .lowrank import LOWRANK_ENERGY
from .topk import _MAX_STAGES, Fallback, _probe_rank, fix_signs

__all__ = [
    "TorchDecomposer",
    "PRECISIONS",
    "batched_eigvals",
    "torch_esd_from",
    "torch_esd_pooled",
    "matmul_eps",
]

PRECISIONS = ("fp64", "fp32")
# trace(G) outside [2**-e, 2**e] triggers a power-of-two rescaling of the matrix before the product
_SAFE_EXP = {"fp64": 600, "fp32": 50}


def _torch() -> Any:
    import torch

    return torch


def _linalg_errors() -> tuple[type[BaseException], ...]:
    return (np.linalg.LinAlgError, _torch().linalg.LinAlgError)


class _GramOverflow(np.linalg.LinAlgError):
    """The Gram matrix (its eigenvalues) overflow float64 even after scaling."""


def check_precision(precision: str) -> str:
    """Validate a ``precision=`` value (``"fp64"`` or ``"fp32"``)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; allowed: {', '.join(PRECISIONS)}")
    return precision


def _dtype(precision: str) -> Any:
    torch = _torch()
    return torch.float64 if precision == "fp64" else torch.float32


def matmul_eps(precision: str, device: Any = None) -> float:
    """The machine epsilon of the Gram product in this precision.

    float64: eps = 2⁻⁵². float32: 2⁻²³, or TF32's 2⁻¹⁰ when torch may use it for float32 matmuls
    (``torch.set_float32_matmul_precision("high")``, ``torch.backends.cuda.matmul.allow_tf32``), or
    bfloat16's 2⁻⁷ under ``"medium"``. Only reads torch's settings.
    """
    if check_precision(precision) == "fp64":
        return EPS
    torch = _torch()
    mode = torch.get_float32_matmul_precision()
    if mode == "medium":
        return 2.0**-7
    tf32 = mode == "high"
    if getattr(device, "type", None) == "cuda":
        cm = torch.backends.cuda.matmul
        tf32 = tf32 or bool(getattr(cm, "allow_tf32", False)) or getattr(cm, "fp32_precision", "") == "tf32"
    return 2.0**-10 if tf32 else float(np.finfo(np.float32).eps)


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


class TorchDecomposer:
    """Shared, lazily computed decompositions of one real matrix, on its torch device (module docstring).

    The interface is :class:`spectra.functional.decompose.Decomposer`'s: ``plan``, ``compute``, ``fro2``,
    ``eigvals``, ``top_svd`` (numpy results on the host, signs by
    :func:`~spectra.functional.topk.fix_signs`) and ``routes``.

    Args:
        A: a 2-D torch tensor (any float dtype, any device; it stays there) or array-like (a CPU tensor is made).
        name: the name used in validation errors.
        strict: the accuracy contract of the cheap routes, as for the LAPACK ``Decomposer`` (float64 only).
        precision: ``"fp64"`` (default; the certified routes) or ``"fp32"`` (float32 throughout: Gram route and
            Rayleigh–Ritz, no certificate; each eigenvalue within :attr:`error_bound` of the exact one).

    Raises:
        ValueError: ``A`` is not 2-D, is empty or holds NaN/Inf; ``precision`` is unknown; with ``"fp32"``,
            entries beyond float32's range. TypeError: complex, quantized or non-numeric.
    """

    backend = "torch"

    def __init__(self, A: Any, *, name: str = "A", strict: bool = True, precision: str = "fp64") -> None:
        self.precision = check_precision(precision)
        self.strict = bool(strict)
        X = _validated(A, name=name, precision=precision)
        self._A = X
        self._transposed = X.shape[0] < X.shape[1]
        self._T = X.T if self._transposed else X
        self._G: Any = None
        self._Gscale = 1.0
        self._fro2: float | None = None
        self._eig: tuple[np.ndarray, Any] | None = None  # (eigenvalues ascending on the host, vectors)
        self._lam: np.ndarray | None = None
        self._evals: dict[tuple[str, float], np.ndarray] = {}
        self._full: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._top: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._want_evals = False
        self._want_k: int | None = 0
        self.routes: dict[str, str] = {}

    # ------------------------------------------------------------------ properties
    @property
    def matrix(self) -> Any:
        """The validated matrix, a tensor on its device in the compute dtype (do not modify it)."""
        return self._A

    @property
    def device(self) -> Any:
        """The torch device the work runs on."""
        return self._A.device

    @property
    def shape(self) -> tuple[int, int]:
        """(N, M) of the matrix."""
        return tuple(self._A.shape)  # type: ignore[return-value]

    @property
    def n(self) -> int:
        """min(N, M): the number of eigenvalues / singular values."""
        return min(self.shape)

    @property
    def error_bound(self) -> float:
        """δ: the bound on |λ̂_i − σ_i²| of every Gram-route eigenvalue (8·eps·‖A‖²_F with the eps of
        :func:`matmul_eps`); float64 certificates build on it, float32 results carry it."""
        return gram_error_bound(self.fro2()) * (matmul_eps(self.precision, self.device) / EPS)

    # ------------------------------------------------------------------ plan
    def plan(self, *, evals: bool = False, k: int | None = 0) -> None:
        """Declare what will be asked (see :meth:`spectra.functional.decompose.Decomposer.plan`)."""
        self._want_evals = self._want_evals or bool(evals)
        if k is None or self._want_k is None:
            self._want_k = None
        else:
            self._want_k = max(self._want_k, int(k))

    def compute(self, *, method: str = "auto", rtol: float = EVALS_RTOL) -> None:
        """Compute everything declared with :meth:`plan` now."""
        k = self._want_k
        if k is None or (k and self._full_svd_for(k)):
            self.top_svd(k)
        if self._want_evals:
            self.eigvals(method, rtol)
        if k:
            self.top_svd(k, rtol=rtol)

    # ------------------------------------------------------------------ shared pieces
    def _gram(self) -> None:
        if self._fro2 is None:
            self._G, self._Gscale, self._fro2 = _gram(self._T, self.precision)

    def _gram_matrix(self) -> Any:
        if self._G is None:
            self._G, self._Gscale, self._fro2 = _gram(self._T, self.precision)
        return self._G

    def _check_gram(self) -> None:
        self._gram()
        if not math.isfinite(self._fro2):  # type: ignore[arg-type]
            raise _GramOverflow("the Gram matrix is not finite")

    def _eigh(self) -> tuple[np.ndarray, Any]:
        """All eigenpairs of TᵀT (values ascending on the host, vectors on the device), computed once."""
        if self._eig is None:
            self._check_gram()
            w, Z = _torch().linalg.eigh(self._gram_matrix())
            self._eig = (_host(w) * self._Gscale, Z)
            self._G = None  # what the eigensolver needs is in the pairs now
        return self._eig

    def fro2(self) -> float:
        """‖A‖²_F (from the Gram matrix's trace)."""
        self._gram()
        return float(self._fro2)  # type: ignore[arg-type]

    def _svdvals_sq(self) -> np.ndarray:
        return np.sort(_host(_torch().linalg.svdvals(self._T)) ** 2)

    # ------------------------------------------------------------------ eigenvalues
    def _gram_eigvals(self) -> np.ndarray:
        if self._lam is None:
            if self._eig is None and not (self._want_k and not self._full_svd_for(self._want_k)):
                self._check_gram()
                lam = _host(_torch().linalg.eigvalsh(self._gram_matrix())) * self._Gscale
            else:  # top-k vectors are wanted too: one eigh serves both
                lam = self._eigh()[0]
            self._lam = np.clip(lam, 0.0, None)
        return self._lam

    def eigvals(self, method: str = "auto", rtol: float = EVALS_RTOL) -> np.ndarray:
        """All eigenvalues σ_i² of the smaller Gram matrix, ascending, float64 on the host.

        Args:
            method: ``"auto"``, ``"eigh"`` or ``"svd"``, as for the LAPACK ``Decomposer``; with
                ``precision="fp32"``, ``"auto"`` is the Gram route as is.
            rtol: the relative accuracy ``"auto"`` guarantees in float64 (down to the rank floor).

        Raises:
            ValueError: unknown method.
            numpy.linalg.LinAlgError: the Gram matrix overflowed (callers report it).
        """
        if method not in EIGVALS_METHODS:
            raise ValueError(f"unknown esd method {method!r}; allowed: {', '.join(EIGVALS_METHODS)}")
        key = (method, float(rtol))
        if key in self._evals:
            return self._evals[key]
        if method == "svd":
            lam, route = self._svdvals_sq(), "svdvals"
        elif method == "auto" and self._full is not None:
            lam, route = np.sort(self._full[1] ** 2), "svd (shared)"
        else:
            try:
                lam, route = self._gram_eigvals(), "gram"
                if method == "auto" and self.precision == "fp64":
                    lam, route = self._auto(lam, rtol)
            except _GramOverflow:
                raise
            except _linalg_errors():
                lam, route = self._svdvals_sq(), "svdvals (fallback)"  # the eigensolver did not converge
        self.routes["evals"] = route
        self._evals[key] = lam
        return lam

    def _auto(self, lam: np.ndarray, rtol: float) -> tuple[np.ndarray, str]:
        delta = gram_error_bound(self.fro2())
        s = untrusted_bottom(lam, delta, rtol)
        if s == 0:
            return lam, "gram"
        if _must_refine(self.n, s):
            try:
                Z = self._eigh()[1][:, : min(self.n, s + _REFINE_EXTRA)]
                out = _refine_bottom(self._T, lam, Z, s, delta, rtol, self.strict)
            except _linalg_errors():
                out = None
            if out is not None:
                return out, f"gram+refine({s})"
        return self._svdvals_sq(), "svdvals"

    # ------------------------------------------------------------------ singular triplets
    def _full_svd_for(self, k: int | None) -> bool:
        n = self.n
        return k is None or k >= n or k > SVD_FULL_FRACTION * n

    def _full_svd(self, route: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        U, S, Vh = _torch().linalg.svd(self._T, full_matrices=False)
        U, S, V = _host(U), _host(S), _host(Vh).T
        if self._transposed:
            U, V = V, U
        U, Vh = fix_signs(np.ascontiguousarray(U), np.ascontiguousarray(V.T))
        self._full = (U, S, Vh)
        self.routes["svd"] = route
        return self._full

    def top_svd(self, k: int | None, *, rtol: float = EVALS_RTOL) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
        """Top-``k`` singular triplets, as :meth:`spectra.functional.decompose.Decomposer.top_svd` returns them.

        Returns:
            ``(U, S, Vh, is_full)`` as float64 numpy arrays on the host: N × k, k values descending, k × M;
            ``is_full`` when S holds every singular value. Signs: each column of U has its largest-magnitude
            entry positive.
        """
        if k is not None and (isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1):
            raise ValueError(f"k must be a positive integer or None, got {k!r}")
        if k is not None and k >= self.n:
            k = None
        if self._full_svd_for(k) or self._full is not None:
            U, S, Vh = self._full if self._full is not None else self._full_svd("svd")
            if k is None:
                return U, S, Vh, True
            return U[:, :k], S[:k], Vh[:k], False
        if self._top is None or self._top[1].size < k:
            self._top = self._compute_top(int(k), rtol)
        U, S, Vh = self._top
        return U[:, :k], S[:k], Vh[:k], False

    def _compute_top(self, k: int, rtol: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        N, M = self._T.shape
        try:
            fro2 = self.fro2()
            if fro2 == 0.0:
                U, S, V, route = np.eye(N, k), np.zeros(k), np.eye(M, k), "zero"
            else:
                if not math.isfinite(fro2):
                    raise _GramOverflow("the Gram matrix is not finite")
                if self.precision == "fp32":
                    Ut, St, Vt, route = self._gram_top(k)
                else:
                    Ut, St, Vt, route = self._staged_top(k, rtol)
                U, S, V = _host(Ut), _host(St), _host(Vt)
        except (Fallback, *_linalg_errors()):
            U, S, Vh = self._full_svd("svd (fallback)")  # serves every later k, and the eigenvalues
            return U[:, :k], S[:k], Vh[:k]
        self.routes["svd"] = route
        if self._transposed:
            U, V = V, U
        U, Vh = fix_signs(np.ascontiguousarray(U), np.ascontiguousarray(V.T))
        return U, S, Vh

    def _gram_top(self, k: int) -> tuple[Any, Any, Any, str]:
        """float32: the top-k eigenvectors of the Gram matrix and one Rayleigh–Ritz step, uncertified."""
        _, Z = self._eigh()
        U, S, V = _rayleigh_ritz(self._T, Z[:, -k:].flip(1))
        return U, S, V, "gram"

    def _staged_top(self, k: int, rtol: float) -> tuple[Any, Any, Any, str]:
        """:func:`spectra.functional.topk.staged_top` on the device (same stages, same certificates)."""
        torch = _torch()
        T, strict = self._T, self.strict
        shape = tuple(T.shape)
        allow_qr = self._eig is None and self._lam is None and not self._want_evals
        X, got, blocks, caps, names = T, 0, [], [], []
        floor2 = fro2x = s1 = 0.0
        G: Any = None
        for depth in range(_MAX_STAGES):
            remaining = k - got
            probe = _probe_rank(shape[1], remaining)
            if depth == 0:
                cols = _lowrank_columns(self._gram_matrix(), probe) if allow_qr and probe >= 1 else None
                fro2x = self.fro2()
            else:
                if fro2x <= floor2:  # the rest is numerically zero
                    blocks.append(_completion(X, blocks, remaining))
                    caps.append((got, np.empty(0), fro2x))
                    names.append("zero")
                    break
                if strict and math.sqrt(fro2x) < float(rounding_error(s1, 1.0)) / rtol:
                    raise Fallback("values below the reproducible range")
                G, scale, fro2_g = _gram(X, self.precision)
                if not math.isfinite(fro2_g):
                    raise _GramOverflow("the Gram matrix is not finite")
                cols = _lowrank_columns(G, probe) if probe >= 1 else None
            if cols is not None:
                U, S, V, R = _qr_stage(X, cols, tol=rtol)
                S_h = _host(S)
                t = int(np.count_nonzero(S_h**2 > float((R * R).sum())))
                if t:
                    if t < S_h.size:
                        U, S, V, S_h = U[:, :t], S[:t], V[:, :t], S_h[:t]
                        R = X - (U * S) @ V.T
                    X = R
                    caps.append((got, np.empty(0), fro2x))
                    blocks.append(V)
                    got += t
                    fro2x = float((X * X).sum())
                    caps.append((got, np.empty(0), fro2x))
                    names.append(f"qr({t})")
                    s1 = s1 or float(S_h[0])
                    floor2 = floor2 or rank_floor(s1, shape) ** 2
                    if got >= k:
                        break
                    continue
            if depth == 0:
                w, Z = self._eigh()
                fro2_red = self.fro2()
            else:
                w_t, Z = torch.linalg.eigh(G)
                w, fro2_red = _host(w_t) * scale, fro2_g
            nn = w.size
            m = min(remaining + 1, nn)
            wd, Zd = w[nn - m :][::-1], Z[:, nn - m :].flip(1)
            kk = min(remaining, nn)
            U, S, V = _rayleigh_ritz(X, Zd[:, :kk])
            delta = gram_error_bound(fro2_red)
            t = trusted_top(wd[:kk], delta, rtol)
            if depth == 0 and t == kk:
                return U, S, V, "gram"
            s1 = s1 or float(S[0])
            floor2 = floor2 or rank_floor(s1, shape) ** 2
            caps.append((got, wd + delta, float(wd[-1] + delta)))
            names.append(f"gram({t})")
            if t == 0:
                raise Fallback("nothing trusted at this stage")
            blocks.append(V[:, :t])
            got += t
            if t == kk:
                break
            X = X - (U[:, :t] * S[:t]) @ V[:, :t].T
            fro2x = float((X * X).sum())
        else:
            raise Fallback("too many deflation stages")
        U, S, V = _certified_union(T, blocks, caps, k, rtol, strict)
        return U, S, V, "deflate:" + "+".join(names)


# ---------------------------------------------------------------------------------------------- ESD helpers
def _check_underflow(A: Any) -> None:
    """:func:`spectra.functional.esd.esd_from`'s underflow refusal (σ_max ≥ max|a|: λ_max would be subnormal)."""
    peak = float(abs(A).max())
    if peak > 0 and peak * peak < _TINY:
        raise ValueError(
            f"the eigenvalues of WᵀW underflow float64 (largest |W| entry {peak:.3g}, shape {tuple(A.shape)}): "
            "they would come out as zeros or subnormals; rescale W first (eigenvalues scale with the square of W)"
        )


def torch_esd_from(decomposer: TorchDecomposer, *, normalize: bool = False, method: str = "auto") -> np.ndarray:
    """:func:`spectra.functional.esd.esd_from` for a :class:`TorchDecomposer` (the same checks and messages,
    with the matrix left on its device).

    Raises:
        ValueError: the eigenvalues overflow or underflow float64, or ``method`` is unknown.
    """
    _check_method(method)
    err = None
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            lam = decomposer.eigvals(method)
    except np.linalg.LinAlgError as exc:
        lam, err = None, exc
    if lam is None or not np.all(np.isfinite(lam)):
        raise _overflow(decomposer.matrix) from err
    if lam.size and lam[-1] < _TINY:
        _check_underflow(decomposer.matrix)
    if normalize:
        lam = lam / float(max(decomposer.shape))
    return lam


def _validated_stack(W: Any, *, name: str, precision: str) -> Any:
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


def batched_eigvals(
    W: Any, *, method: str = "auto", precision: str = "fp64", rtol: float = EVALS_RTOL, strict: bool = True,
    name: str = "W",
) -> np.ndarray:
    """Eigenvalues of the smaller Gram matrix of every slice of a (B, N, M) stack, with one batched solve.

    The B Gram products and one batched ``torch.linalg.eigvalsh`` run on the stack's device. With
    ``method="auto"`` in float64, each slice's values go through the same certificate as
    :meth:`TorchDecomposer.eigvals`: slices with untrusted small eigenvalues are refined (one batched ``eigh``
    for those slices, then a Rayleigh–Ritz step each) or, failing that, recomputed by ``svdvals``; slices whose
    Gram trace overflows or underflows go through :class:`TorchDecomposer` one by one (power-of-two scaling).

    Args:
        W: a 3-D tensor or array (a 2-D matrix is one slice).
        method: ``"auto"``, ``"eigh"`` (the Gram route as is) or ``"svd"`` (batched ``svdvals``, squared).
        precision: ``"fp64"`` or ``"fp32"`` (as for :class:`TorchDecomposer`).
        rtol: the relative accuracy ``"auto"`` guarantees in float64.
        strict: the certificate's contract (see :class:`TorchDecomposer`).
        name: the name used in validation errors.

    Returns:
        A (B, min(N, M)) float64 array, each row ascending, no normalisation.

    Raises:
        ValueError: not a 2-D/3-D stack, empty, non-finite, or an unknown method or precision.
        numpy.linalg.LinAlgError: a slice's Gram matrix overflows float64.
    """
    _check_method(method)
    check_precision(precision)
    torch = _torch()
    X = _validated_stack(W, name=name, precision=precision)
    T = X if X.shape[1] >= X.shape[2] else X.transpose(1, 2)
    B, N, n = T.shape
    if method == "svd":
        return np.sort(_host(torch.linalg.svdvals(T)) ** 2, axis=1)
    G = T.transpose(1, 2) @ T
    tr = _host(torch.diagonal(G, dim1=1, dim2=2).sum(dim=1))
    lim = 2.0 ** _SAFE_EXP[precision]
    plain = np.isfinite(tr) & (tr > 1.0 / lim) & (tr < lim)  # others (zero trace too) one by one
    lam = np.empty((B, n))
    good = np.flatnonzero(plain)
    if good.size:
        idx = torch.as_tensor(good, device=G.device)
        Gg = G if good.size == B else G[idx]
        lam[good] = np.clip(_host(torch.linalg.eigvalsh(Gg)), 0.0, None)
    for b in np.flatnonzero(~plain):  # power-of-two scaling, or the overflow error, slice by slice
        lam[b] = TorchDecomposer(X[b], name=name, strict=strict, precision=precision).eigvals(method, rtol)
    if method != "auto" or precision != "fp64":
        return lam
    deltas = [gram_error_bound(float(tr[b])) for b in range(B)]
    counts = {b: untrusted_bottom(lam[b], deltas[b], rtol) for b in good}
    refine = [b for b, s in counts.items() if _must_refine(n, s)]
    redo = [b for b, s in counts.items() if s and b not in refine]
    if refine:
        idx = torch.as_tensor(refine, device=G.device)
        s2 = min(n, max(counts[b] for b in refine) + _REFINE_EXTRA)
        Z = torch.linalg.eigh(G[idx])[1][:, :, :s2]
        for i, b in enumerate(refine):
            s = counts[b]
            try:
                out = _refine_bottom(T[b], lam[b], Z[i, :, : min(n, s + _REFINE_EXTRA)], s, deltas[b], rtol, strict)
            except _linalg_errors():
                out = None
            if out is None:
                redo.append(b)
            else:
                lam[b] = out
    if redo:
        idx = torch.as_tensor(sorted(redo), device=G.device)
        lam[sorted(redo)] = np.sort(_host(torch.linalg.svdvals(T[idx])) ** 2, axis=1)
    return lam


def torch_esd_pooled(
    matrices: Any, *, scale: float = 1.0, normalize: bool = False, method: str = "auto", precision: str = "fp64",
    strict: bool = True,
) -> np.ndarray:
    """:func:`spectra.functional.esd.esd_pooled` of a (slices, rows, cols) stack with :func:`batched_eigvals`.

    Raises:
        ValueError: as :func:`batched_eigvals`, and when the eigenvalues overflow float64.
    """
    try:
        lam = batched_eigvals(matrices, method=method, precision=precision, strict=strict)
    except np.linalg.LinAlgError as exc:
        raise _overflow(matrices) from exc
    if not np.all(np.isfinite(lam)):
        raise _overflow(matrices)
    for b in np.flatnonzero(lam[:, -1] < _TINY):  # as esd() checks each slice
        _check_underflow(matrices[b])
    if normalize:
        lam = lam / float(max(matrices.shape[-2:]))
    return np.sort(lam.ravel()) * scale
