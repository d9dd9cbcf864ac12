"""The ``tail`` analyzer: a power-law fit of the ESD's tail, with the Hill-median estimate alongside, and
(opt-in) likelihood-ratio tests against other tails and a bootstrap goodness-of-fit p-value."""

from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np

from ..hookspecs import hookimpl
from ..snapshot import Request
from ._seeding import layer_seed
from .base import Analyzer, Measurement

__all__ = ["TailAnalyzer", "TailPlugin"]

_FIT_FIELDS = ("alpha", "xmin", "xmax", "D", "sigma", "n_tail")
#: metrics of ``compare=True``, in emission order (each is the field of the same name of
#: :class:`~spectra.functional.distributions.TailComparison`)
_COMPARE_FIELDS = ("llr_exponential", "p_exponential", "llr_lognormal", "p_lognormal", "llr_tpl", "p_tpl",
                   "tpl_alpha", "tpl_lambda")


class TailAnalyzer(Analyzer):
    """Fit p(λ) ∝ λ^(−α) to the tail of each weight ESD.

    Emits ``alpha, xmin, xmax, D, sigma, n_tail, num_pl_spikes`` for the chosen ``method`` (the fit's status
    and message carried on every row), ``alpha_weighted`` (α·log10 λ_max) and ``log_alpha_norm``
    (log10 Σλ^α) from that α, and — unless ``method="hill"`` already — ``alpha_hill``, the Hill estimate with
    xmin at the ⌊n/xmin_pos⌋-th eigenvalue (TempBalance's PL_Alpha_Hill), which is O(n) and robust when the
    scan picks small tails.

    With ``compare=True`` it also emits the likelihood-ratio tests of the fitted tail against exponential,
    lognormal and truncated power-law tails (``llr_*``, ``p_*``) and the truncated power law's ``tpl_alpha``,
    ``tpl_lambda`` (:func:`spectra.functional.distributions.compare_distributions`); with ``bootstrap=N`` the
    CSN goodness-of-fit ``pl_pvalue`` from N semi-parametric bootstrap replicates, each re-fitted with this
    analyzer's method (:func:`spectra.functional.bootstrap.bootstrap_pvalue`). Both are opt-in: the default
    analyzer costs what it did.

    Args:
        method: ``"csn"`` (default: KS scan with a minimum tail), ``"ww"`` (WeightWatcher 0.7.7 exactly) or
            ``"hill"``; see :func:`spectra.functional.fit_power_law`.
        min_tail: minimum tail size for ``"csn"`` (``None``: the fitter's default).
        xmin_pos: the Hill estimator's xmin position (2 = median).
        hill: also emit ``alpha_hill``.
        fit_options: extra keyword arguments for :func:`~spectra.functional.fit_power_law`.
        compare: also emit the likelihood-ratio tests and the truncated-power-law fit.
        bootstrap: number of bootstrap replicates for ``pl_pvalue`` (0: none; CSN use 2,500 for ±0.01).
        seed: non-negative integer seed of the bootstrap (each layer, view and step gets its own stream
            derived from it); ``None`` draws fresh entropy and is not reproducible.
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
        compare: bool = False,
        bootstrap: int = 0,
        seed: int | None = 0,
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
        self.compare = bool(compare)
        if isinstance(bootstrap, bool) or not isinstance(bootstrap, (int, np.integer)) or bootstrap < 0:
            raise ValueError(f"tail option bootstrap must be a non-negative integer, got {bootstrap!r}")
        self.bootstrap = int(bootstrap)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
            raise ValueError(f"tail option seed must be a non-negative integer or None, got {seed!r}")
        self.seed = None if seed is None else int(seed)

    def config(self) -> dict[str, Any]:
        cfg = {"method": self.method, "min_tail": self.min_tail, "xmin_pos": self.xmin_pos, **self.fit_options}
        if self.compare:
            cfg["compare"] = True
        if self.bootstrap:
            cfg.update(bootstrap=self.bootstrap, seed=self.seed)
        return cfg

    def requests(self, layer: Any) -> Iterable[Request]:
        """All eigenvalues of the weight."""
        return [Request("weight", evals=True)]

    def analyze(self, layer: Any) -> Iterable[Measurement]:
        from ..functional.powerlaw import fit_power_law

        lam = layer.evals("weight")
        kwargs = dict(self.fit_options)
        if self.method == "csn" and self.min_tail is not None:
            kwargs["min_tail"] = self.min_tail
        if self.method == "hill":
            kwargs["xmin_pos"] = self.xmin_pos
        guards = _precision_guards(layer, lam)
        if getattr(layer, "normalize", False) and "threshold" not in kwargs and self.method != "hill":
            # the default threshold is in unnormalised units: scale it with the eigenvalues (alpha is unchanged)
            from ..functional.powerlaw import WW_EVALS_THRESH

            kwargs["threshold"] = WW_EVALS_THRESH / max(layer.shape("weight"))
        fit = fit_power_law(lam, method=self.method, **kwargs, **guards)
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
            if math.isfinite(s) and s > 0:
                yield Measurement("log_alpha_norm", math.log10(s), status=status, message=message)
            else:
                yield Measurement("log_alpha_norm", math.nan, status="warn",
                                  message=f"sum of lambda^alpha {'overflows float64' if s > 0 else 'is zero'} "
                                          f"(alpha={fit.alpha:.3g}, lambda_max={lmax:.3g})")
        if self.hill and self.method != "hill":
            h = fit_power_law(lam, method="hill", xmin_pos=self.xmin_pos, **guards)
            ok = h.status in ("ok", "warn")
            yield Measurement("alpha_hill", float(h.alpha) if ok else math.nan, status=h.status, message=h.message)
        if self.compare:
            yield from self._compare(lam, fit, usable)
        if self.bootstrap:
            yield self._bootstrap(lam, fit, usable, layer)

    def _compare(self, lam: np.ndarray, fit: Any, usable: bool) -> Iterable[Measurement]:
        from ..functional.distributions import compare_distributions

        if not usable:
            msg = f"no power-law fit to compare ({fit.status}): {fit.message}"
            for metric in _COMPARE_FIELDS:
                yield Measurement(metric, math.nan, status="skipped", message=msg)
            return
        cmp = compare_distributions(lam, fit.xmin)
        for metric in _COMPARE_FIELDS:
            yield Measurement(metric, float(getattr(cmp, metric)), status=cmp.status, message=cmp.message)

    def _bootstrap(self, lam: np.ndarray, fit: Any, usable: bool, layer: Any) -> Measurement:
        from ..functional.bootstrap import BOOTSTRAP_METHODS, bootstrap_pvalue

        if self.method not in BOOTSTRAP_METHODS or "xmin" in self.fit_options:
            why = f"method={self.method!r}" if self.method not in BOOTSTRAP_METHODS else "a fixed xmin"
            return Measurement("pl_pvalue", math.nan, status="skipped",
                               message=f"the bootstrap re-fits csn or hill scans; not available for {why}")
        if not usable:
            return Measurement("pl_pvalue", math.nan, status="skipped",
                               message=f"no power-law fit to test ({fit.status}): {fit.message}")
        kw: dict[str, Any] = {"method": self.method, "xmin_pos": self.xmin_pos}
        if self.method == "csn":
            kw["min_tail"] = self.min_tail
            kw["threshold"] = self.fit_options.get("threshold")
        res = bootstrap_pvalue(lam, self.bootstrap, seed=layer_seed(self.seed, layer), **kw)
        msg = res.message
        if res.status in ("ok", "warn") and res.pvalue < 0.1:
            msg = "; ".join(filter(None, [msg, f"p={res.pvalue:.3g} < 0.1: the power law is rejected (CSN 2009)"]))
        return Measurement("pl_pvalue", float(res.pvalue), status=res.status, message=msg)


def _precision_guards(layer: Any, lam: np.ndarray) -> dict[str, float]:
    """The fit's precondition checks for this view, from the weights' dtype: the rounding resolution of the
    eigenvalues and the noise floor below which they are numerically zero."""
    from ..functional.norms import dtype_eps, noise_floor, rounding_resolution

    t = layer.tensors.get("weight") if hasattr(layer, "tensors") else None
    eps = dtype_eps(getattr(t, "dtype", np.float64))
    N, M = layer.shape("weight")
    out = {"resolution": rounding_resolution(N, M, eps)}
    if lam.size and np.isfinite(lam).all():
        out["noise_floor"] = noise_floor(float(lam.max()), N, M, eps)
    return out


class TailPlugin:
    """Built-in plugin registering :class:`TailAnalyzer`."""

    @hookimpl
    def spectra_register_analyzers(self, register: Any) -> None:
        register(TailAnalyzer)
