"""Is the tail a power law at all? Likelihood-ratio tests against exponential, lognormal and truncated power law.

All four models are continuous densities on ``x ≥ xmin`` (the tail of a fitted power law), with no upper cut
(``xmax=None``), as in Clauset, Shalizi & Newman (2009, SIAM Review 51, §5) and ``powerlaw`` 1.5
(``Fit(data, xmin=xmin, discrete=False).distribution_compare(...)``):

=======================  ================================================  ===================================
model                    density on x ≥ xmin                               maximum likelihood here
=======================  ================================================  ===================================
power law                (α−1)/xmin · (x/xmin)^(−α)                        closed form (the tail fit's α)
exponential              λ e^(−λ(x−xmin))                                  closed form, λ = 1/(mean(x) − xmin)
lognormal                φ((ln x − μ)/σ) / (σ x Φ((μ − ln xmin)/σ))       2-parameter convex problem
truncated power law      x^(−α) e^(−λx) / (xmin^(1−α) E_α(λ·xmin))         2-parameter convex problem, λ ≥ 0
=======================  ================================================  ===================================

The lognormal and truncated power law are exponential families in (ln x, ln² x) and (ln x, x): their negative
log-likelihoods are convex in the natural parameters and depend on the data only through two means, so they
are minimised exactly (L-BFGS-B to ~1e-10 in the parameters) rather than with ``powerlaw``'s Nelder–Mead at
its default tolerances (1e-4 in parameters and log-likelihood). Both families contain the power law as a
boundary case (σ → ∞ with (μ − ln xmin)/σ² fixed; λ = 0); when the maximum lies there the two models
coincide and the test reports ``R = 0``, ``p = 1``.

The test statistic is ``powerlaw``'s: R = Σ (ℓ_PL(x_i) − ℓ_alt(x_i)) with ``normalized_ratio=True``, i.e.
``R/(√n·s)`` with s the standard deviation of the pointwise differences (Vuong's z). Positive favours the
power law. The p-value is Vuong's two-sided ``erfc(|R|/√(2 n s²))`` for the non-nested exponential and
lognormal, and Wilks' χ²₁ ``P(χ²₁ > 2|R|)`` for the nested truncated power law (``powerlaw`` computes the same
as ``1 − chi2.cdf``, which loses digits below 1e-16; the χ²₁ reference ignores that λ = 0 is a boundary,
which makes it conservative by a factor of two).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np
from scipy import optimize, special

from ._special import log_expint, log_scaled_upper_gamma

__all__ = [
    "ALTERNATIVES",
    "TailComparison",
    "compare_distributions",
    "loglikelihood_ratio",
    "power_law_loglikelihoods",
    "exponential_loglikelihoods",
    "lognormal_loglikelihoods",
    "truncated_power_law_loglikelihoods",
    "fit_exponential",
    "fit_lognormal",
    "fit_truncated_power_law",
]

ALTERNATIVES = ("exponential", "lognormal", "truncated_power_law")
#: A comparison needs at least this many tail points (below it the normal approximations are meaningless).
MIN_TAIL = 10
_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


@dataclass(frozen=True)
class TailComparison:
    """Likelihood-ratio tests of a power-law tail against three alternatives (see the module docstring).

    Attributes:
        n_tail: number of points in the tail ``x ≥ xmin``.
        xmin, alpha: the power law compared (α is the closed-form MLE at xmin).
        llr_exponential, llr_lognormal, llr_tpl: normalised log-likelihood ratios R/(√n·s); > 0 favours the
            power law.
        p_exponential, p_lognormal, p_tpl: significance of the sign of R (two-sided Vuong; χ²₁ for the TPL).
        loglik_power_law, loglik_exponential, loglik_lognormal, loglik_tpl: maximised total log-likelihoods
            (the raw ratio is ``loglik_power_law − loglik_<alt>``).
        exp_lambda: exponential rate; lognormal_mu, lognormal_sigma: lognormal parameters (``−inf``/``inf``
            at the power-law limit); tpl_alpha, tpl_lambda: truncated power law x^(−α) e^(−λx).
        status: ``"ok"``, ``"warn"`` or ``"skipped"``/``"failed"`` (then every number is NaN).
        message: why, when ``status != "ok"``.
    """

    n_tail: int
    xmin: float
    alpha: float
    llr_exponential: float
    p_exponential: float
    llr_lognormal: float
    p_lognormal: float
    llr_tpl: float
    p_tpl: float
    loglik_power_law: float
    loglik_exponential: float
    loglik_lognormal: float
    loglik_tpl: float
    exp_lambda: float
    lognormal_mu: float
    lognormal_sigma: float
    tpl_alpha: float
    tpl_lambda: float
    status: str = "ok"
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain ``dict``."""
        return asdict(self)


# ----------------------------------------------------------------------------------------------- pointwise
def power_law_loglikelihoods(x: np.ndarray, xmin: float, alpha: float) -> np.ndarray:
    """ln p(x) of the continuous power law (α−1)/xmin·(x/xmin)^(−α) on x ≥ xmin."""
    x = np.asarray(x, dtype=np.float64)
    return math.log(alpha - 1.0) - math.log(xmin) - alpha * np.log(x / xmin)


def exponential_loglikelihoods(x: np.ndarray, xmin: float, lam: float) -> np.ndarray:
    """ln p(x) of the shifted exponential λ e^(−λ(x − xmin)) on x ≥ xmin."""
    x = np.asarray(x, dtype=np.float64)
    return math.log(lam) + lam * (xmin - x)


def lognormal_loglikelihoods(x: np.ndarray, xmin: float, mu: float, sigma: float) -> np.ndarray:
    """ln p(x) of the lognormal(μ, σ) truncated to x ≥ xmin.

    Evaluated in the natural parameters of u = ln(x/xmin) (b = (μ − ln xmin)/σ², c = 1/(2σ²)), which stays
    accurate where μ → −∞ and σ → ∞ (the power-law limit), unlike the textbook form.
    """
    c = 1.0 / (2.0 * sigma * sigma)
    return _lognormal_ll_natural(x, xmin, (mu - math.log(xmin)) * 2.0 * c, c)


def _lognormal_ll_natural(x: np.ndarray, xmin: float, b: float, c: float) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    u = np.log(x / xmin)
    return b * u - c * u * u - _lognormal_logpartition(b, c) - np.log(x)


def truncated_power_law_loglikelihoods(x: np.ndarray, xmin: float, alpha: float, lam: float) -> np.ndarray:
    """ln p(x) of the truncated power law x^(−α) e^(−λx) / ∫_xmin^∞ t^(−α) e^(−λt) dt on x ≥ xmin."""
    x = np.asarray(x, dtype=np.float64)
    c = lam * xmin
    log_g = log_scaled_upper_gamma(1.0 - alpha, c)  # ln E_α(c) = −c + ln G(1−α, c)
    return -alpha * np.log(x / xmin) - lam * (x - xmin) - math.log(xmin) - log_g


# ----------------------------------------------------------------------------------------------- fits
def fit_exponential(x: np.ndarray, xmin: float) -> float:
    """MLE rate of the shifted exponential on x ≥ xmin: λ = 1/(mean(x) − xmin) (``inf`` if all x = xmin)."""
    d = float(np.mean(np.asarray(x, dtype=np.float64))) - float(xmin)
    return 1.0 / d if d > 0 else math.inf


def _minimize(f: Callable[[np.ndarray], float], x0: np.ndarray, lower: np.ndarray) -> tuple[np.ndarray, float]:
    """Minimise a smooth convex f of two variables with lower bounds (L-BFGS-B, central-difference gradient)."""

    def fg(z: np.ndarray) -> tuple[float, np.ndarray]:
        f0 = f(z)
        g = np.empty(2)
        for i in range(2):
            h = 1e-6 * max(1.0, abs(z[i]))
            zp, zm = z.copy(), z.copy()
            zp[i] += h
            if z[i] - h >= lower[i]:
                zm[i] -= h
                g[i] = (f(zp) - f(zm)) / (2 * h)
            else:  # on (or next to) the bound: one-sided
                g[i] = (f(zp) - f0) / h
        if not np.isfinite(f0):
            return 1e300, np.zeros(2)
        return f0, g

    bounds = [(lo if np.isfinite(lo) else None, None) for lo in lower]
    res = optimize.minimize(fg, np.asarray(x0, float), jac=True, method="L-BFGS-B", bounds=bounds,
                            options={"ftol": 1e-15, "gtol": 1e-11, "maxiter": 500, "maxcor": 20})
    return np.asarray(res.x, float), float(res.fun)


def _log_erfcx(t: float) -> float:
    return math.log(special.erfcx(t)) if t >= 0 else t * t + math.log(special.erfc(t))


def _lognormal_logpartition(b: float, c: float) -> float:
    """ln ∫_0^∞ exp(b u − c u²) du, for c ≥ 0 (``inf`` where it diverges)."""
    if c <= 0.0:
        return -math.log(-b) if b < 0 else math.inf
    sc = math.sqrt(c)
    return math.log(math.sqrt(math.pi) / (2.0 * sc)) + _log_erfcx(-b / (2.0 * sc))


def _fit_lognormal_natural(x: np.ndarray, xmin: float) -> tuple[float, float]:
    """(b, c) of the truncated lognormal MLE in the natural parameters of u = ln(x/xmin) (see fit_lognormal)."""
    u = np.log(np.asarray(x, dtype=np.float64) / xmin)
    m1, m2 = float(np.mean(u)), float(np.mean(u * u))
    sd = float(np.std(u))
    if not (m1 > 0 and sd > 0):
        return math.nan, math.nan
    z, _ = _minimize(lambda p: _lognormal_logpartition(p[0], p[1]) - p[0] * m1 + p[1] * m2,
                     np.array([m1 / (sd * sd), 1.0 / (2.0 * sd * sd)]), np.array([-np.inf, 0.0]))
    return float(z[0]), max(float(z[1]), 0.0)


def fit_lognormal(x: np.ndarray, xmin: float) -> tuple[float, float]:
    """MLE (μ, σ) of the lognormal truncated to x ≥ xmin.

    Solved in the natural parameters of u = ln(x/xmin): density ∝ exp(b·u − c·u²) with c = 1/(2σ²) ≥ 0 and
    b = (μ − ln xmin)/σ², whose negative log-likelihood ``ln Z(b, c) − b·mean(u) + c·mean(u²)`` is convex.
    Starts where ``powerlaw`` does (mean and standard deviation of ln x).

    Returns:
        (μ, σ); ``(−inf, inf)`` when the maximum is the power-law limit c = 0.
    """
    b, c = _fit_lognormal_natural(x, xmin)
    if not c > 0:
        return (-math.inf, math.inf) if c == 0 else (math.nan, math.nan)
    sigma = 1.0 / math.sqrt(2.0 * c)
    return math.log(xmin) + b * sigma * sigma, sigma


def fit_truncated_power_law(x: np.ndarray, xmin: float, *, alpha_min: float | None = 1.0) -> tuple[float, float]:
    """MLE (α, λ) of the truncated power law x^(−α) e^(−λx) on x ≥ xmin, with λ ≥ 0 and α ≥ ``alpha_min``.

    With y = x/xmin and κ = λ·mean(x) the negative mean log-likelihood is
    ``ln E_α(κ/mean(y)) + α·mean(ln y) + κ`` (plus ln xmin), convex in (α, κ). Starts where ``powerlaw``
    does (the power-law α and λ = 1/mean(x)).

    Args:
        x: the tail (values ≥ xmin).
        xmin: its lower end.
        alpha_min: lower bound on α. The default 1 is ``powerlaw`` 1.5's parameter range (α > 1, as an
            exponent of a decaying power law); ``None`` leaves α free (the density is normalisable for any α
            when λ > 0, and light tails such as a Marchenko–Pastur edge then give large negative α).

    Returns:
        (α, λ); λ = 0 when the maximum is the power law itself.
    """
    x = np.asarray(x, dtype=np.float64)
    y = x / xmin
    ly = float(np.mean(np.log(y)))
    ybar = float(np.mean(y))
    if not (ly > 0 and ybar > 1):
        return math.nan, math.nan
    alpha0 = 1.0 + 1.0 / ly

    def f(p: np.ndarray) -> float:
        a, k = float(p[0]), float(p[1])
        if k <= 0.0 and a <= 1.0:
            return math.inf
        return log_expint(a, k / ybar) + a * ly + k

    lo = -np.inf if alpha_min is None else float(alpha_min)
    z, _ = _minimize(f, np.array([max(alpha0, lo), 1.0]), np.array([lo, 0.0]))
    return float(z[0]), max(float(z[1]), 0.0) / float(np.mean(x))


# ----------------------------------------------------------------------------------------------- tests
def loglikelihood_ratio(ll1: np.ndarray, ll2: np.ndarray, *, nested: bool = False) -> tuple[float, float, float]:
    """Normalised log-likelihood ratio and its p-value, as ``powerlaw.loglikelihood_ratio`` computes them.

    Args:
        ll1, ll2: pointwise log-likelihoods of the same data under the two models.
        nested: model 1 is a special case of model 2 (Wilks' χ²₁ test instead of Vuong's).

    Returns:
        (R/(√n·s), p, R) with R = Σ(ll1 − ll2) and s the standard deviation of ll1 − ll2. Identical models
        (s = 0) give (0, 1, R).
    """
    d = np.asarray(ll1, dtype=np.float64) - np.asarray(ll2, dtype=np.float64)
    n = d.size
    if n == 0:
        return 0.0, 1.0, 0.0
    R = float(np.sum(d))
    var = float(np.sum((d - float(np.mean(d))) ** 2)) / n
    if not var > 0:
        return 0.0, 1.0, R
    if nested:
        from scipy.stats import chi2

        p = float(chi2.sf(abs(2.0 * R), 1))
    else:
        p = float(special.erfc(abs(R) / math.sqrt(2.0 * n * var)))
    return R / math.sqrt(n * var), p, R


def _nan_comparison(n: int, xmin: float, alpha: float, status: str, message: str) -> TailComparison:
    nan = math.nan
    return TailComparison(n, xmin, alpha, *([nan] * 15), status=status, message=message)


def _coincide(ll1: np.ndarray, ll2: np.ndarray) -> bool:
    """The two fitted models are the same density up to rounding (the alternative's MLE is the power law)."""
    return ll1 is ll2 or float(np.max(np.abs(ll1 - ll2))) <= 1e-9 * (1.0 + float(np.max(np.abs(ll1))))


def compare_distributions(evals: Any, xmin: float, alpha: float | None = None, *,
                          tpl_alpha_min: float | None = 1.0) -> TailComparison:
    """Compare the power-law tail ``evals ≥ xmin`` with exponential, lognormal and truncated power laws.

    Equivalent to ``powerlaw.Fit(evals, xmin=xmin, discrete=False)`` followed by
    ``distribution_compare("power_law", alt, normalized_ratio=True)`` for each alternative, with exact
    maximum-likelihood fits of the alternatives (see the module docstring for the differences).

    Args:
        evals: eigenvalues (any order; values below ``xmin`` are ignored).
        xmin: start of the tail, usually the power-law fit's ``xmin``.
        alpha: the power-law exponent; default its MLE at ``xmin``, ``1 + n/Σ ln(x/xmin)``.
        tpl_alpha_min: lower bound on the truncated power law's α (see :func:`fit_truncated_power_law`).

    Returns:
        A :class:`TailComparison`; ``status="skipped"`` with NaNs for tails shorter than :data:`MIN_TAIL` and
        ``"failed"`` for degenerate tails (all values equal, non-finite input).
    """
    x = np.asarray(evals, dtype=np.float64).ravel()
    xmin = float(xmin)
    if not (math.isfinite(xmin) and xmin > 0):
        return _nan_comparison(0, xmin, math.nan, "failed", f"xmin must be positive and finite, got {xmin!r}")
    if not np.all(np.isfinite(x)):
        return _nan_comparison(0, xmin, math.nan, "failed", "eigenvalues contain NaN or Inf")
    x = np.sort(x[x >= xmin])
    n = int(x.size)
    if n < MIN_TAIL:
        return _nan_comparison(n, xmin, math.nan, "skipped",
                               f"tail of {n} point(s) >= xmin; the likelihood-ratio tests need at least {MIN_TAIL}")
    s_log = float(np.sum(np.log(x / xmin)))
    if not s_log > 0:
        return _nan_comparison(n, xmin, math.nan, "failed", f"all {n} tail points equal xmin; nothing to compare")
    if alpha is None:
        alpha = 1.0 + n / s_log
    alpha = float(alpha)
    if not alpha > 1:
        return _nan_comparison(n, xmin, alpha, "failed", f"alpha={alpha:.4g} <= 1: not a normalisable power law")
    ll_pl = power_law_loglikelihoods(x, xmin, alpha)
    msgs: list[str] = []
    lam = fit_exponential(x, xmin)
    ll_exp = exponential_loglikelihoods(x, xmin, lam)
    b, c = _fit_lognormal_natural(x, xmin)
    ll_ln = _lognormal_ll_natural(x, xmin, b, c) if c > 0 else ll_pl
    if _coincide(ll_pl, ll_ln):
        ll_ln, mu, sigma = ll_pl, -math.inf, math.inf
        msgs.append("the lognormal MLE is the power-law limit (sigma -> inf): the two models coincide")
    else:
        sigma = 1.0 / math.sqrt(2.0 * c)
        mu = math.log(xmin) + b * sigma * sigma
    t_alpha, t_lam = fit_truncated_power_law(x, xmin, alpha_min=tpl_alpha_min)
    ll_tpl = truncated_power_law_loglikelihoods(x, xmin, t_alpha, t_lam) if t_lam > 0 else ll_pl
    if _coincide(ll_pl, ll_tpl):
        ll_tpl, t_alpha, t_lam = ll_pl, alpha, 0.0
        msgs.append("the truncated power law MLE has lambda = 0: it is the power law")
    elif tpl_alpha_min is not None and t_alpha <= tpl_alpha_min:
        msgs.append(f"the truncated power law MLE sits on the bound alpha = {tpl_alpha_min:g}: the tail decays "
                    "faster than a power law, more like an exponential")
    r_exp, p_exp, _ = loglikelihood_ratio(ll_pl, ll_exp)
    r_ln, p_ln, _ = loglikelihood_ratio(ll_pl, ll_ln)
    r_tpl, p_tpl, _ = loglikelihood_ratio(ll_pl, ll_tpl, nested=True)
    status = "ok"
    if n < 50:
        status = "warn"
        msgs.append(f"tail of only {n} points: the normal/chi2 approximations of the p-values are rough")
    return TailComparison(
        n, xmin, alpha, r_exp, p_exp, r_ln, p_ln, r_tpl, p_tpl,
        float(ll_pl.sum()), float(ll_exp.sum()), float(ll_ln.sum()), float(ll_tpl.sum()),
        lam, mu, sigma, t_alpha, t_lam, status, "; ".join(msgs),
    )
