"""The ``vectors`` analyzer: localization of the top-k singular vectors of weights (and updates)."""

from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np

from ..functional.vectors import SIDES, vector_localization
from ..hookspecs import hookimpl
from ..snapshot import Request
from .matrices import check_matrices
from .base import Analyzer, Measurement

__all__ = ["VectorsAnalyzer", "VectorsPlugin"]


class VectorsAnalyzer(Analyzer):
    """Participation ratio ‖v‖₂/‖v‖₄ and localization ratio ‖v‖₁/‖v‖∞ of the top-k singular vectors
    (WeightWatcher's ``vectors=True`` definitions; :mod:`spectra.functional.vectors`), index = k (0 = the top
    singular vector).

    Emits ``participation_ratio`` and ``localization_ratio`` for each matrix in ``matrices`` the snapshot
    holds. With ``matrices=("weight", "update")`` in a monitor, the update ΔW_t gets ``matrix="update"`` rows
    from step 1 on, and the weight rows come at every due step, step 0 included: the update (and ``grad``)
    is an optional need (:attr:`~spectra.analyzers.base.Analyzer.optional_needs`), so the analyzer runs on
    the weights alone at step 0 and offline. Without ``"weight"`` in ``matrices`` the update stays required.
    Vectors of a zero singular value (rank below k) are not unique: their rows are ``skipped``.

    Args:
        k: number of top singular vectors (clamped to min(N, M); the message says so).
        side: ``"small"`` (the vectors on the matrix's smaller side, as WeightWatcher), ``"left"`` or
            ``"right"``.
        matrices: ``("weight",)`` by default; add ``"update"`` or ``"grad"``.
        schedule: optional own schedule.
    """

    name = "vectors"

    def __init__(self, *, k: int = 10, side: str = "small", matrices: Iterable[str] = ("weight",),
                 schedule: Any = None) -> None:
        super().__init__(schedule=schedule)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"vectors option k must be a positive integer, got {k!r}")
        if side not in SIDES:
            raise ValueError(f"vectors option side must be one of {SIDES}, got {side!r}")
        self.k, self.side = int(k), side
        self.matrices = check_matrices(matrices, "vectors")
        self.needs = frozenset(self.matrices) | {"weight"}
        # with weight rows to give, the other matrices are optional (weight rows at step 0 and offline)
        self.optional_needs = self.needs - {"weight"} if "weight" in self.matrices else frozenset()

    def config(self) -> dict[str, Any]:
        return {"k": self.k, "side": self.side, "matrices": list(self.matrices)}

    def requests(self, layer: Any) -> Iterable[Request]:
        """The top-k singular triplets of each matrix analysed."""
        out = []
        for kind in self.matrices:
            if layer.has(kind):
                N, M = layer.shape(kind)
                out.append(Request(kind, k=min(self.k, N, M)))
        return out

    def analyze(self, layer: Any) -> Iterable[Measurement]:
        for kind in self.matrices:
            if layer.has(kind):
                yield from self._vectors(layer, kind)

    def _vectors(self, layer: Any, kind: str) -> Iterable[Measurement]:
        N, M = layer.shape(kind)
        k = min(self.k, N, M)
        clamp = f"requested k={self.k} clamped to min(N, M)={k}" if k < self.k else ""
        d = layer.svd(kind, k)
        S = np.asarray(d.S, dtype=np.float64)
        smax = float(S[0]) if S.size else 0.0
        if not smax > 0:
            msg = f"the {kind} matrix is zero: no singular vectors"
            for metric in ("participation_ratio", "localization_ratio"):
                for i in range(k):
                    yield Measurement(metric, math.nan, kind, index=i, status="skipped", message=msg)
            return
        vals = vector_localization(d.U, d.Vh, side=self.side)
        zero = S <= smax * max(N, M) * np.finfo(np.float64).eps
        for metric in ("participation_ratio", "localization_ratio"):
            for i in range(k):
                if zero[i]:
                    yield Measurement(metric, math.nan, kind, index=i, status="skipped",
                                      message=f"singular value {i} is zero (rank < {i + 1}): its vector is not unique")
                else:
                    yield Measurement(metric, float(vals[metric][i]), kind, index=i, message=clamp)


class VectorsPlugin:
    """Built-in plugin registering :class:`VectorsAnalyzer`."""

    @hookimpl
    def spectra_register_analyzers(self, register: Any) -> None:
        register(VectorsAnalyzer)
