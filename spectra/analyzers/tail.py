"""The ``tail`` analyzer: a power-law fit of the ESD's tail, with the Hill-median estimate alongside."""

from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np

from ..hookspecs import hookimpl
from .base import Analyzer, Measurement

__all__ = ["TailAnalyzer", "TailPlugin"]

_FIT_FIELDS = ("alpha", "xmin", "xmax", "D", "sigma", "n_tail")


class TailAnalyzer(Analyzer):
    """Fit p(λ) ∝ λ^(−α) to the tail of each weight ESD.

    Emits ``alpha, xmin, xmax, D, sigma, n_tail, num_pl_spikes`` for the chosen ``method`` (the fit's status
    and message carried on every row), ``alpha_weighted`` (α·log10 λ_max) and ``log_alpha_norm``
    (log10 Σλ^α) from that α, and — unless ``method="hill"`` already — ``alpha_hill``, the Hill estimate with
    xmin at the ⌊n/xmin_pos⌋-th eigenvalue (TempBalance's PL_Alpha_Hill), which is O(n) and robust when the
    scan picks small tails.

    Args:
        method: ``"csn"`` (default: KS scan with a minimum tail), ``"ww"`` (WeightWatcher 0.7.7 exactly) or
            ``"hill"``; see :func:`spectra.functional.fit_power_law`.
        min_tail: minimum tail size for ``"csn"`` (``None``: the fitter's default).
        xmin_pos: the Hill estimator's xmin position (2 = median).
        hill: also emit ``alpha_hill``.
        fit_options: extra keyword arguments for :func:`~spectra.functional.fit_power_law`.
        schedule: optional own schedule.
    """

    name = "tail"

    def __init__(
        self,
        *,
        method: str = "csn",
        min_tail: int | None = None,
        xmin_pos: float = 2,
        hill: bool = True,
        fit_options: dict[str, Any] | None = None,
        schedule: Any = None,
    ) -> None:
        super().__init__(schedule=schedule)
        from ..functional.powerlaw import FIT_METHODS

        if method not in FIT_METHODS:
            raise ValueError(f"unknown fit method {method!r}; allowed: {', '.join(FIT_METHODS)}")
        self.method = method
        self.min_tail = min_tail
        self.xmin_pos = xmin_pos
        self.hill = bool(hill)
        self.fit_options = dict(fit_options or {})

    def config(self) -> dict[str, Any]:
        return {"method": self.method, "min_tail": self.min_tail, "xmin_pos": self.xmin_pos, **self.fit_options}

    def analyze(self, layer: Any) -> Iterable[Measurement]:
        from ..functional.powerlaw import fit_power_law

        lam = layer.evals("weight")
        kwargs = dict(self.fit_options)
        if self.method == "csn" and self.min_tail is not None:
            kwargs["min_tail"] = self.min_tail
        if self.method == "hill":
            kwargs["xmin_pos"] = self.xmin_pos
        fit = fit_power_law(lam, method=self.method, **kwargs)
        status, message = fit.status, fit.message
        usable = status in ("ok", "warn") and fit.alpha is not None and math.isfinite(fit.alpha)
        for f in _FIT_FIELDS:
            v = getattr(fit, f)
            yield Measurement(f, float(v) if usable and v is not None else math.nan, status=status, message=message)
        n_spikes = float(np.count_nonzero(lam >= fit.xmin)) if usable else math.nan
        yield Measurement("num_pl_spikes", n_spikes, status=status, message=message)
        if usable:
            lmax = float(lam.max())
            yield Measurement("alpha_weighted", fit.alpha * math.log10(lmax), status=status, message=message)
            with np.errstate(over="ignore"):
                s = float(np.sum(np.clip(lam, 0, None) ** fit.alpha))
            yield Measurement("log_alpha_norm", math.log10(s) if s > 0 else -math.inf, status=status,
                              message=message)
        if self.hill and self.method != "hill":
            h = fit_power_law(lam, method="hill", xmin_pos=self.xmin_pos)
            ok = h.status in ("ok", "warn")
            yield Measurement("alpha_hill", float(h.alpha) if ok else math.nan, status=h.status, message=h.message)


class TailPlugin:
    """Built-in plugin registering :class:`TailAnalyzer`."""

    @hookimpl
    def spectra_register_analyzers(self, register: Any) -> None:
        register(TailAnalyzer)
