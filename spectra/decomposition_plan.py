"""What the analyzers will ask of a view's matrices: :class:`Request` values merged into a :class:`DecompositionPlan`.

The pipeline collects every due analyzer's ``requests(layer)`` into one plan per layer view before any of them
runs, so that each matrix is decomposed once, by the cheapest exact route that serves them all
(:mod:`spectra.snapshot`), and so that each analyzer can start as soon as the kinds it asked for are ready.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import numpy as np

__all__ = ["MATRIX_KINDS", "Request", "DecompositionPlan"]

logger = logging.getLogger(__name__)

MATRIX_KINDS = ("weight", "previous", "update", "grad")


@dataclass(frozen=True)
class Request:
    """What an analyzer will ask of one matrix kind of a view.

    Attributes:
        kind: the matrix kind (one of :data:`MATRIX_KINDS`).
        evals: all eigenvalues (``LayerState.evals(kind)``) will be asked for.
        k: the number of top singular triplets (``LayerState.svd(kind, k)``): 0 for none, ``None`` for all.
    """

    kind: str
    evals: bool = False
    k: int | None = 0

    def __post_init__(self) -> None:
        if self.kind not in MATRIX_KINDS:
            raise ValueError(f"unknown matrix kind {self.kind!r}; allowed: {', '.join(MATRIX_KINDS)}")
        k = self.k
        if k is not None and (isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0):
            raise ValueError(f"k must be a non-negative integer or None, got {k!r}")


class DecompositionPlan:
    """The merged :class:`Request` values for one view: per kind, eigenvalues or not and the largest k.

    Args:
        requests: requests to merge (more can be added with :meth:`add`).
        strict: the accuracy contract of the cheap routes (see
            :class:`~spectra.functional.decompose.Decomposer`). ``True`` (default): every value reproduces the
            full SVD's to 1e-10 relative, so singular values between the rank floor and ~1e-5·σ₁ (e.g. the
            float32 rounding tail of a rank-8 SGD update asked for k = 10) make the full SVD run. ``False``: such
            values are certified to the SVD's own absolute accuracy (≈ 2·eps·σ₁) instead, and take the QR route.
    """

    def __init__(self, requests: Iterable[Request] = (), *, strict: bool = True) -> None:
        self._needs: dict[str, tuple[bool, int | None]] = {}
        #: per analyzer name (from :meth:`collect`), the kinds it asked for; ``None``: unknown (no method, or
        #: it raised), so whoever waits on its behalf waits for every kind
        self.asked: dict[str, frozenset[str] | None] = {}
        self.strict = bool(strict)
        for r in requests:
            self.add(r)

    def add(self, request: Request) -> None:
        """Merge one request: eigenvalues if anyone asks; k = the largest asked (``None`` wins)."""
        if not isinstance(request, Request):
            raise TypeError(f"expected a spectra.snapshot.Request, got {type(request).__name__}")
        ev, k = self._needs.get(request.kind, (False, 0))
        rk = request.k
        merged = None if (k is None or rk is None) else max(k, int(rk))
        self._needs[request.kind] = (ev or request.evals, merged)

    @classmethod
    def collect(cls, analyzers: Iterable[Any], layer: Any, *, strict: bool = True) -> "DecompositionPlan":
        """The plan of every analyzer's ``requests(layer)``; analyzers without the method ask nothing.

        A ``requests`` method that raises is skipped (logged at debug level): the plan only saves work, and
        the analyzer's own ``analyze`` still runs and reports its errors.
        """
        plan = cls(strict=strict)
        for an in analyzers:
            fn, name = getattr(an, "requests", None), getattr(an, "name", repr(an))
            plan.asked[name] = None
            if fn is None:
                continue
            try:
                requests = list(fn(layer) or ())
                for r in requests:
                    plan.add(r)
                plan.asked[name] = frozenset(r.kind for r in requests)
            except Exception as exc:  # an optimisation hint must not break the step
                logger.debug("requests() of %r failed: %r", an, exc)
        return plan

    def needs(self, kind: str) -> tuple[bool, int | None]:
        """``(evals, k)`` for a kind (``(False, 0)`` when nothing is asked)."""
        return self._needs.get(kind, (False, 0))

    def items(self) -> Iterator[tuple[str, tuple[bool, int | None]]]:
        """``(kind, (evals, k))`` pairs, in the order the kinds were first asked for."""
        return iter(list(self._needs.items()))

    def __bool__(self) -> bool:
        return any(ev or k != 0 for ev, k in self._needs.values())

    def __repr__(self) -> str:
        inner = ", ".join(f"{kind}: evals={ev}, k={k}" for kind, (ev, k) in self._needs.items())
        return f"DecompositionPlan({inner}{', strict=False' if not self.strict else ''})"
