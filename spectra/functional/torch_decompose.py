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

The device kernels are in :mod:`spectra.functional._torch_kernels`, the precisions in
:mod:`spectra.functional.torch_precision`; :mod:`spectra.functional.torch_esd` holds the batched eigenvalues of
a stack (:func:`~spectra.functional.torch_esd.batched_eigvals`), and :func:`spectra.functional.esd.esd_from`
serves both decomposers.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._planned import PlannedDecomposition
from ._torch_kernels import (
    _certified_union,
    _completion,
    _gram,
    _GramOverflow,
    _host,
    _linalg_errors,
    _lowrank_columns,
    _must_refine,
    _qr_stage,
    _rayleigh_ritz,
    _refine_bottom,
    _torch,
    _validated,
)
from .certify import EPS, EVALS_RTOL, gram_error_bound, rank_floor, rounding_error, trusted_top, untrusted_bottom
from .decompose import _REFINE_EXTRA, EIGVALS_METHODS, SVD_FULL_FRACTION
from .topk import _MAX_STAGES, Fallback, _probe_rank, fix_signs
from .torch_precision import PRECISIONS, check_precision, matmul_eps

__all__ = ["TorchDecomposer", "PRECISIONS", "check_precision", "matmul_eps"]


class TorchDecomposer(PlannedDecomposition):
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

