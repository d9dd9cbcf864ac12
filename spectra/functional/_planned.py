"""What both decomposition backends share: declaring what will be asked (``plan``) and computing it (``compute``).

:class:`~spectra.functional.decompose.Decomposer` (LAPACK) and
:class:`~spectra.functional.torch_decompose.TorchDecomposer` (torch) choose their routes from the plan; they
provide ``_full_svd_for(k)``, ``top_svd(k, rtol=)`` and ``eigvals(method, rtol)``.
"""

from __future__ import annotations

from typing import Any

from .certify import EVALS_RTOL

__all__ = ["PlannedDecomposition"]


class PlannedDecomposition:
    """Mixin: the plan of one matrix's decompositions (all eigenvalues, the top-k triplets) and its computation."""

    _want_evals: bool = False
    _want_k: int | None = 0

    def plan(self, *, evals: bool = False, k: int | None = 0) -> None:
        """Declare what will be asked, before asking (the routes depend on it; the numbers only within the
        accuracy contract).

        Args:
            evals: all eigenvalues will be asked for.
            k: the largest number of top triplets that will be asked for (0: none, ``None``: all).
        """
        self._want_evals = self._want_evals or bool(evals)
        if k is None or self._want_k is None:
            self._want_k = None
        else:
            self._want_k = max(self._want_k, int(k))

    def compute(self, *, method: str = "auto", rtol: float = EVALS_RTOL) -> None:
        """Compute everything declared with :meth:`plan` now (eigenvalues first: they share the reduction)."""
        k = self._want_k
        if k is None or (k and self._full_svd_for(k)):
            self.top_svd(k)
        if self._want_evals:
            self.eigvals(method, rtol)
        if k:
            self.top_svd(k, rtol=rtol)

    # provided by the backend
    def _full_svd_for(self, k: int | None) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def top_svd(self, k: int | None, *, rtol: float = EVALS_RTOL) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def eigvals(self, method: str = "auto", rtol: float = EVALS_RTOL) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError
