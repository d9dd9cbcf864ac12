"""The cheapest exact route to what is asked of one matrix, computed once and shared.

A :class:`Decomposer` wraps one real matrix A (N × M, n = min(N, M)) and serves:

* :meth:`Decomposer.eigvals`: all n eigenvalues of the smaller Gram matrix (σ_i², ascending);
* :meth:`Decomposer.top_svd`: the top-k singular triplets, descending, deterministic signs.

Routes (the matrix is handled as its tall orientation T, TᵀT being the smaller Gram matrix):

``gram``
    One product G = TᵀT and one tridiagonal reduction (:mod:`spectra.functional.tridiag`) serve both: every
    eigenvalue from ``dsterf``, the top-k eigenvectors from ``dstebz`` + ``dstein`` + the back-transform,
    then a Rayleigh–Ritz step (SVD of the N × k projection T·X) for consistent, orthonormal U and V.
``gram+refine``
    When some of the smallest eigenvalues fail the error bound of :mod:`spectra.functional.certify` (typical
    of square layers, whose Marchenko–Pastur spectrum reaches down to ~0), their eigenvectors come from the
    same reduction and a Rayleigh–Ritz step on T itself recomputes those values with the accuracy of an SVD;
    each is accepted only with a Kato–Temple certificate (relative width ≤ rtol).
``qr``
    Numerically low-rank matrices (e.g. a batch-B SGD update of rank B): pivoted partial Cholesky on G picks
    B columns, QR of that thin factor and the SVD of the small core (:mod:`spectra.functional.lowrank`).
``deflate``
    When the top-k reaches below what the Gram route resolves (k > rank, or rank-B plus float32 rounding
    noise), the certified top part is deflated (T − UΣVᵀ) and the remainder goes through the same routes on
    its own, much smaller, scale; one Rayleigh–Ritz step on the union of the subspaces and a certificate for
    every value (interlacing below, Temple above) finish it.
``svd`` / ``svdvals``
    The full SVD (LAPACK ``gesdd``), only when k > :data:`SVD_FULL_FRACTION`·n or k is None, or when a route
    above could not certify its numbers (rank-deficient spectra asked for all eigenvalues, clusters).

Routes are reported in :attr:`Decomposer.routes` (e.g. ``"deflate:qr(8)+gram(2)"``: a QR stage resolved 8
triplets, a Gram stage on the deflated residual 2 more). With ``strict=True`` (default) every number is within
``rtol`` (1e-10) relative of the full SVD's, except values below the rank floor σ₁·max(N, M)·eps, which no
method resolves (they agree absolutely, to the floor); with ``strict=False``, within ``rtol`` relative or the
SVD's own absolute accuracy ≈ 2·eps·σ₁. The bounds: :mod:`spectra.functional.certify`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._planned import PlannedDecomposition
from ._validate import as_matrix
from .certify import EVALS_RTOL, gram_error_bound, rank_floor, rounding_error, temple_lower_bounds, untrusted_bottom
from .topk import Fallback, fix_signs, full_svd, rayleigh_ritz, staged_top
from .tridiag import gram_of, gram_reduce, reduction_eigh_range, reduction_eigvalsh

__all__ = ["Decomposer", "SVD_FULL_FRACTION", "EIGVALS_METHODS", "fix_signs"]

# a truncated SVD is used when k <= SVD_FULL_FRACTION * min(N, M); otherwise the full thin SVD is cheaper
SVD_FULL_FRACTION = 0.1
EIGVALS_METHODS = ("auto", "eigh", "svd")
# the smallest eigenvalues are refined (not recomputed by an SVD) when at most this many fail the bound
REFINE_MAX_FRACTION = 0.125
REFINE_MIN = 8
_REFINE_EXTRA = 4  # extra eigenvectors in the refinement subspace


class Decomposer(PlannedDecomposition):
    """Shared, lazily computed decompositions of one real matrix (see the module docstring).

    Args:
        A: a 2-D torch tensor (any float dtype, any device; CUDA tensors are copied to the host) or array-like.
        name: the name used in validation errors.
        strict: the accuracy contract of the cheap routes. ``True`` (default): a value is accepted only when
            its certified error plus the rounding any SVD leaves (:func:`~spectra.functional.certify.
            rounding_error`) is within ``rtol`` relative, so it reproduces ``scipy.linalg.svd`` to ``rtol``;
            values between the rank floor and ~(4·eps/rtol)·σ₁ ≈ 1e-5·σ₁, which no method but the very same
            SVD reproduces to 1e-10, then make the full SVD run; singular vectors of the deflation routes are
            certified the same way (Davis–Kahan: residual / gap ≤ rtol). ``False``: within ``rtol`` relative
            *or* the SVD's own absolute accuracy (≈ 2·eps·σ₁ on σ_i, LAPACK's contract), which lets e.g. the
            float32 rounding tail of a low-rank SGD update take the QR route.

    Raises:
        ValueError: ``A`` is not 2-D, is empty or holds NaN/Inf. TypeError: complex or non-numeric.
    """

    def __init__(self, A: Any, *, name: str = "A", strict: bool = True) -> None:
        self.strict = bool(strict)
        if isinstance(A, np.ndarray) and A.dtype == np.float64 and A.ndim == 2 and A.size and np.isfinite(
            np.einsum("ij->", A)
        ):
            X = A  # finite (a NaN or Inf would make the sum non-finite): skip the entrywise check
        else:
            X = as_matrix(A, name=name)
            if not isinstance(X, np.ndarray):  # float64 CUDA tensor
                X = X.cpu().numpy()
        self._A = X
        self._transposed = X.shape[0] < X.shape[1]
        self._T = X.T if self._transposed else X
        self._G: np.ndarray | None = None
        self._Gscale = 1.0
        self._red: Any = None
        self._lam: np.ndarray | None = None
        self._raw: np.ndarray | None = None
        self._evals: dict[tuple[str, float], np.ndarray] = {}
        self._full: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._top: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._want_evals = False
        self._want_k: int | None = 0
        self.routes: dict[str, str] = {}  # what was computed, by request ("evals", "svd"): for tests/profiles

    @property
    def matrix(self) -> np.ndarray:
        """The validated float64 matrix (do not modify it)."""
        return self._A

    @property
    def shape(self) -> tuple[int, int]:
        """(N, M) of the matrix."""
        return self._A.shape  # type: ignore[return-value]

    @property
    def n(self) -> int:
        """min(N, M): the number of eigenvalues / singular values."""
        return min(self._A.shape)

    # ------------------------------------------------------------------ shared pieces
    def _gram(self) -> None:
        if self._G is None and self._red is None:
            self._G, self._Gscale = gram_of(self._T)

    def _reduction(self) -> Any:
        if self._red is None:
            self._gram()
            self._red = gram_reduce(self._T, self._G, self._Gscale)
            self._G = None  # overwritten by the reduction
        return self._red

    def fro2(self) -> float:
        """‖A‖²_F (from the Gram matrix's trace)."""
        self._gram()  # a no-op once the Gram matrix or its reduction exists
        return self.known_fro2()  # type: ignore[return-value]

    def known_fro2(self) -> float | None:
        """‖A‖²_F if the Gram matrix (or its reduction) is already formed, so that it costs nothing; else ``None``."""
        if self._red is not None:
            return self._red.fro2
        if self._G is not None:
            return float(np.trace(self._G)) * self._Gscale
        return None

    def _svdvals_sq(self) -> np.ndarray:
        from scipy.linalg import svdvals

        return np.sort(svdvals(self._A, check_finite=False).astype(np.float64) ** 2)

    # ------------------------------------------------------------------ eigenvalues
    def eigvals(self, method: str = "auto", rtol: float = EVALS_RTOL) -> np.ndarray:
        """All eigenvalues σ_i² of the smaller Gram matrix, ascending, float64 (no normalisation).

        Args:
            method: ``"auto"`` (Gram route; untrusted small eigenvalues refined with a certificate, an SVD only
                when that fails), ``"eigh"`` (Gram route as is) or ``"svd"`` (singular values squared).
            rtol: the relative accuracy ``"auto"`` guarantees (down to the rank floor).

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
            red = self._reduction()  # LinAlgError here: the Gram matrix overflowed
            try:
                if self._lam is None:
                    self._raw = reduction_eigvalsh(red)  # unclipped: the shifts of inverse iteration
                    self._lam = np.clip(self._raw, 0.0, None)
                lam, route = self._lam, "gram"
                if method == "auto":
                    lam, route = self._auto(lam, rtol)
            except np.linalg.LinAlgError:  # dsterf did not converge (rare): the SVD's values
                lam, route = self._svdvals_sq(), "svdvals (fallback)"
        self.routes["evals"] = route
        self._evals[key] = lam
        return lam

    def _auto(self, lam: np.ndarray, rtol: float) -> tuple[np.ndarray, str]:
        delta = gram_error_bound(self._red.fro2)
        s = untrusted_bottom(lam, delta, rtol)
        if s == 0:
            return lam, "gram"
        if s < self.n and s <= max(REFINE_MIN, int(REFINE_MAX_FRACTION * self.n)):
            try:
                out = self._refine_bottom(lam, s, delta, rtol)
            except np.linalg.LinAlgError:
                out = None
            if out is not None:
                return out, f"gram+refine({s})"
        return self._svdvals_sq(), "svdvals"

    def _refine_bottom(self, lam: np.ndarray, s: int, delta: float, rtol: float) -> np.ndarray | None:
        """Recompute the ``s`` smallest eigenvalues by Rayleigh–Ritz on T; ``None`` unless all are certified."""
        T, n = self._T, self.n
        s2 = min(n, s + _REFINE_EXTRA)
        _, Z = reduction_eigh_range(self._red, 0, s2 - 1, self._raw)
        if not np.isfinite(Z).all():  # inverse iteration lost the vectors (extreme dynamic range): use the SVD
            return None
        U, sig, V = rayleigh_ritz(T, Z)
        U, sig, V = U[:, ::-1], sig[::-1], V[:, ::-1]  # ascending
        rho = sig * np.linalg.norm(T.T @ U - V * sig, axis=0)  # ‖TᵀT v − σ² v‖ = σ‖Tᵀu − σv‖
        theta = sig**2
        beta_next = np.append(lam[1 : s2 + 1] - delta, np.inf)[:s2]  # lower bounds on λ_{i+1}
        lb = temple_lower_bounds(theta, rho, beta_next)[:s]
        th = theta[:s]
        rnd = rounding_error(np.sqrt(lam[-1]), sig[:s])
        ok = (th - lb + rnd <= rtol * lb) if self.strict else (th - lb <= rtol * lb + rnd)
        zero = th <= rank_floor(np.sqrt(lam[-1]), self.shape) ** 2  # in [0, floor²]: numerically zero
        if not np.all(((lb > 0) & ok) | zero):
            return None
        out = lam.copy()
        out[:s] = th
        return np.sort(out)

    # ------------------------------------------------------------------ singular triplets
    def _full_svd_for(self, k: int | None) -> bool:
        n = self.n
        return k is None or k >= n or k > SVD_FULL_FRACTION * n

    def _probe_gram(self) -> np.ndarray:
        """The Gram matrix for the low-rank probe (kept: it becomes the reduction's input if needed)."""
        self._gram()
        return self._G

    def top_svd(self, k: int | None, *, rtol: float = EVALS_RTOL) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
        """Top-``k`` singular triplets, as :func:`spectra.functional.alignment.top_svd` returns them.

        Returns:
            ``(U, S, Vh, is_full)``: N × k, k values descending, k × M; ``is_full`` when S holds every singular
            value. Signs: each column of U has its largest-magnitude entry positive.
        """
        if k is not None and (isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1):
            raise ValueError(f"k must be a positive integer or None, got {k!r}")
        if k is not None and k >= self.n:
            k = None
        if self._full_svd_for(k) or self._full is not None:
            if self._full is None:
                U, S, Vh = full_svd(self._A)
                U, Vh = fix_signs(np.ascontiguousarray(U), np.ascontiguousarray(Vh))
                self._full = (U, S, Vh)
                self.routes["svd"] = "svd"
            U, S, Vh = self._full
            if k is None:
                return U, S, Vh, True
            return U[:, :k], S[:k], Vh[:k], False
        if self._top is None or self._top[1].size < k:
            self._top = self._compute_top(int(k), rtol)
        U, S, Vh = self._top
        return U[:, :k], S[:k], Vh[:k], False

    def _compute_top(self, k: int, rtol: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        N, M = self._T.shape
        if self.fro2() == 0.0:
            U, S, V, route = np.eye(N, k), np.zeros(k), np.eye(M, k), "zero"
        else:
            allow_qr = self._red is None and not self._want_evals
            try:
                U, S, V, route = staged_top(
                    self._T, k, rtol=rtol, strict=self.strict, reduction=self._reduction,
                    probe_gram=self._probe_gram if allow_qr else None, fro2=self.fro2(), eigvals=self._raw,
                )
            except (Fallback, np.linalg.LinAlgError):
                U, S, Vh = full_svd(self._A)
                self.routes["svd"] = "svd (fallback)"
                U, Vh = fix_signs(np.ascontiguousarray(U), np.ascontiguousarray(Vh))
                self._full = (U, S, Vh)  # serves every later k, and the eigenvalues
                return U[:, :k], S[:k], Vh[:k]
        self.routes["svd"] = route
        if self._transposed:
            U, V = V, U
        U, Vh = fix_signs(np.ascontiguousarray(U), np.ascontiguousarray(V.T))
        return U, S, Vh
