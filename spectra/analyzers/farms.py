"""The ``farms`` analyzer: α without aspect-ratio bias, from the pooled ESD of fixed-shape windows (FARMS)."""

from __future__ import annotations

import math
from typing import Any, Iterable

from ..functional.farms import farms_alpha
from ..functional.powerlaw import FIT_METHODS
from ..hookspecs import hookimpl
from .matrices import check_matrices, raw_stack
from .base import Analyzer, Measurement

__all__ = ["FarmsAnalyzer", "FarmsPlugin"]


class FarmsAnalyzer(Analyzer):
    """FARMS α (Liu et al., ICML 2025): the power-law exponent of the pooled ESD of a grid of fixed-shape
    windows (100 × 200 on a 10 × 10 grid by default), so that matrices of any aspect ratio Q are measured on
    the same footing (see :mod:`spectra.functional.farms`). Report it beside the plain ``alpha``/``alpha_hill``
    of the ``tail`` analyzer: for random matrices those rise with Q, ``alpha_farms`` does not.

    Emits, per matrix in ``matrices``: ``alpha_farms`` (status and message of the fit) and
    ``farms_num_windows``. Matrices too small for a ``min_window`` window give ``skipped`` rows.

    Args:
        window: rows of a window (FARMS: 100).
        q: aspect ratio of a window (FARMS: 2).
        per_dim: windows per axis (FARMS: 10).
        method: fit of the pooled ESD: ``"hill"`` (FARMS's Hill-median, default), ``"csn"`` or ``"ww"``.
        xmin_pos: Hill xmin position (2 = median).
        min_window: the smallest window rows allowed when a matrix is smaller than the window.
        matrices: which matrices: ``("weight",)`` by default.
        schedule: optional own schedule.
    """

    name = "farms"

    def __init__(self, *, window: int = 100, q: float = 2.0, per_dim: int = 10, method: str = "hill",
                 xmin_pos: float = 2, min_window: int = 8, matrices: Iterable[str] = ("weight",),
                 schedule: Any = None) -> None:
        super().__init__(schedule=schedule)
        if method not in FIT_METHODS:
            raise ValueError(f"farms option method must be one of {FIT_METHODS}, got {method!r}")
        for opt, v, lo in (("window", window, 2), ("per_dim", per_dim, 1), ("min_window", min_window, 2)):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"farms option {opt} must be an integer >= {lo}, got {v!r}")
        if not (isinstance(q, (int, float)) and q >= 1):
            raise ValueError(f"farms option q must be a number >= 1, got {q!r}")
        self.window, self.q, self.per_dim = int(window), float(q), int(per_dim)
        self.method, self.xmin_pos, self.min_window = method, xmin_pos, int(min_window)
        self.matrices = check_matrices(matrices, "farms")
        self.needs = frozenset(self.matrices) | {"weight"}

    def config(self) -> dict[str, Any]:
        return {"window": self.window, "q": self.q, "per_dim": self.per_dim, "method": self.method,
                "xmin_pos": self.xmin_pos, "matrices": list(self.matrices)}

    def analyze(self, layer: Any) -> Iterable[Measurement]:
        for kind in self.matrices:
            if not layer.has(kind):
                continue
            fit, pooled = farms_alpha(raw_stack(layer, kind), window=self.window, q=self.q, per_dim=self.per_dim,
                                      scale=layer.eig_scale, method=self.method, xmin_pos=self.xmin_pos,
                                      min_window=self.min_window)
            ok = fit.status in ("ok", "warn") and math.isfinite(fit.alpha)
            msg = fit.message
            default = (self.window, round(self.q * self.window))
            if pooled is not None and (pooled.transposed or pooled.window != default):
                note = f"windows {pooled.window[0]}x{pooled.window[1]}"
                note += " of the transpose" if pooled.transposed else ""
                msg = "; ".join(filter(None, [msg, note]))
            yield Measurement("alpha_farms", float(fit.alpha) if ok else math.nan, kind, status=fit.status,
                              message=msg)
            yield Measurement("farms_num_windows", float(pooled.n_windows) if pooled else math.nan, kind,
                              status="ok" if pooled else "skipped", message="" if pooled else fit.message)


class FarmsPlugin:
    """Built-in plugin registering :class:`FarmsAnalyzer`."""

    @hookimpl
    def spectra_register_analyzers(self, register: Any) -> None:
        register(FarmsAnalyzer)
