"""Power-law fits of the upper tail of an eigenvalue spectrum.

Three estimators share one engine (see :func:`fit_power_law`):

* ``"csn"`` (default): the Clauset–Shalizi–Newman continuous power-law fit. For every candidate ``xmin``
  (each distinct eigenvalue with at least ``min_tail`` eigenvalues at or above it) the closed-form MLE
  ``α = 1 + n / Σ ln(λ_j / xmin)`` is computed, then the one-sided Kolmogorov–Smirnov distance
  ``D = max_k |1 − (λ_{i+k}/xmin)^(1−α) − k/n|``; the candidate with the smallest ``D`` wins (first index on
  ties). Candidates with ``α ≤ 1`` are excluded (their ``D`` counts as 1); ``α`` is never clamped.
* ``"ww"``: a reproduction of WeightWatcher 0.7.7's default fit (``WWFit``, ``pl_package='ww'``): the same scan
  with *every* eigenvalue but the largest as a candidate and no minimum tail, and below 20 eigenvalues its
  small-N variant (tails of at least 8, bias-corrected ``α = 1 + (n−1)/Σ ln(λ/xmin)``, argmin ``D``).
* ``"hill"``: ``PL_Alpha_Hill`` of TempBalance/AlphaPruning: ``xmin`` at sorted index ``⌊n/xmin_pos⌋`` (the
  median by default), the same closed-form MLE, no scan.

Speed. The cost of an exact scan is the ~n²/2 power evaluations of the KS distances (WeightWatcher's loop
body is already vectorised). This module returns *the same* argmin with far fewer evaluations by
branch-and-bound: since the fitted CDF ``F`` is increasing and the empirical step ``k/n`` is increasing, the
values of ``F − k/n`` at a few sampled tail points give, for each candidate, a lower bound (the largest sampled
deviation) and an upper bound (on each gap between samples, ``F(b) − (a+1)/n`` and ``(b−1)/n − F(a)``) on its
``D``. A candidate whose lower bound exceeds the smallest upper bound (or the smallest exact ``D`` found so
far) cannot be the minimum and is dropped; the others are re-bounded with 4× denser samples; the few left are
evaluated exactly with WeightWatcher's own formula and float operations, in order of their lower bounds. The
bounds are computed as ``exp((1−α)·(ln λ_j − ln λ_i))`` and carry an explicit rounding margin, so pruning
never removes a candidate that could win or tie. All candidate ``α`` come from one reverse cumulative sum of
the logs (accumulated in extended precision).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .ks_scan import ks_single, scan, suffix_alphas

__all__ = [
    "FIT_METHODS",
    "TailFit",
    "fit_power_law",
    "hill_alpha",
    "csn_default_min_tail",
    "WW_EVALS_THRESH",
]

logger = logging.getLogger(__name__)

FIT_METHODS = ("csn", "ww", "hill")
FIT_STATUSES = ("ok", "warn", "failed", "skipped")

#: WeightWatcher's ``EVALS_THRESH``: eigenvalues ``≤`` this are dropped before ``ww`` and ``csn`` fits.
WW_EVALS_THRESH = 1e-5
#: WeightWatcher 0.7.7 uses its small-N fitter below this many eigenvalues (``SMALL_N_CUTOFF``).
WW_SMALL_N_CUTOFF = 20
#: Minimum tail of WeightWatcher 0.7.7's small-N fitter (``k_min``).
WW_SMALL_N_MIN_TAIL = 8

#: ``csn`` default minimum tail: ``max(CSN_MIN_TAIL_FLOOR, ceil(CSN_MIN_TAIL_FRACTION · n))``.
CSN_MIN_TAIL_FLOOR = 50
CSN_MIN_TAIL_FRACTION = 0.1
#: ``csn`` needs at least this many eigenvalues (after the threshold); fewer gives ``status="skipped"``.
CSN_MIN_EVALS = 10
#: A ``csn`` fit with ``alpha`` above this gets ``status="warn"``: the tail is too light to call a power law.
ALPHA_WARN_HIGH = 8.0

@dataclass(frozen=True)
class TailFit:
    """Result of a power-law tail fit.

    Attributes:
        alpha: power-law exponent of the density p(λ) ∝ λ^(−alpha) for λ ≥ xmin (NaN when failed).
        xmin: lower end of the fitted tail.
        xmax: largest eigenvalue used (the fit itself is unbounded above, ``xmax=None`` in powerlaw terms).
        D: one-sided Kolmogorov–Smirnov distance between the tail and the fitted power law.
        sigma: standard error of alpha, ``(alpha − 1)/sqrt(n_tail)``.
        n_tail: number of eigenvalues in the fitted tail (the candidate's own count; see ``num_pl_spikes``).
        method: the estimator, one of :data:`FIT_METHODS`.
        status: ``"ok"``, ``"warn"`` (a fit was made but see ``message``), ``"failed"`` or ``"skipped"``.
        message: empty when ``status == "ok"``, otherwise why.
        num_pl_spikes: ``#{λ ≥ xmin}`` among the thresholded eigenvalues (WeightWatcher's column).
        n_total: number of eigenvalues fitted after dropping those ``≤ threshold``.
        min_tail: the minimum tail size used by the scan (``None`` for fixed-xmin and Hill fits).
        threshold: eigenvalues ``≤ threshold`` were dropped before fitting (``None``: no filtering).
    """

    alpha: float
    xmin: float
    xmax: float
    D: float
    sigma: float
    n_tail: int
    method: str
    status: str
    message: str = ""
    num_pl_spikes: int = 0
    n_total: int = 0
    min_tail: int | None = None
    threshold: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a plain ``dict`` (for records and tables)."""
        return asdict(self)

    @property
    def ok(self) -> bool:
        """True when a fit was made (``status`` is ``"ok"`` or ``"warn"``)."""
        return self.status in ("ok", "warn")


def csn_default_min_tail(n: int) -> int:
    """Default minimum tail size of the ``csn`` scan for ``n`` eigenvalues.

    ``max(50, ceil(0.1·n))``, reduced to ``n // 2`` when that is smaller. Why: the KS distance of a tail of k
    points fluctuates by ~0.9/√k, so an unconstrained argmin over xmin favours the last few eigenvalues (the
    "fingers" of a Marchenko–Pastur edge or of an isolated outlier) whose D is small by chance, and returns
    α of 10–30 on plain Gaussian or Student-t(4) matrices. 50 points (as in diffract-core) bound that noise to
    ≈0.12, and a tenth of the spectrum keeps the tail a spectral feature rather than a few outliers as n grows.
    Genuine power-law tails (Pareto samples, Student-t(1.5) ESDs) select tails far larger than this, so the
    constraint does not bind on them (tested).
    """
    k = max(CSN_MIN_TAIL_FLOOR, int(math.ceil(CSN_MIN_TAIL_FRACTION * n)))
    return max(2, min(k, n // 2))


# ----------------------------------------------------------------------------------------------- helpers
def _failed(method: str, status: str, message: str, *, n_total: int = 0, threshold: float | None = None,
            min_tail: int | None = None) -> TailFit:
    nan = float("nan")
    return TailFit(nan, nan, nan, nan, nan, 0, method, status, message, 0, n_total, min_tail, threshold)


def _as_vector(evals: Any) -> np.ndarray:
    """float64 1-D numpy copy of evals (torch tensor, numpy array or sequence); raises on unusable input."""
    if type(evals).__module__.startswith("torch") and hasattr(evals, "detach"):
        if evals.is_complex():
            raise TypeError(f"complex dtype {evals.dtype}; eigenvalues of WᵀW are real")
        evals = evals.detach().to("cpu").double().numpy()
    if np.iscomplexobj(evals):
        raise TypeError("complex values; eigenvalues of WᵀW are real")
    a = np.asarray(evals, dtype=np.float64)
    if a.ndim != 1:
        if a.ndim == 0 or sum(d > 1 for d in a.shape) > 1:
            raise ValueError(f"expected a 1-D array of eigenvalues, got shape {a.shape}")
        a = a.ravel()
    return a


# ----------------------------------------------------------------------------------------------- methods
def _fit_ww_small(x: np.ndarray, thr: float | None) -> TailFit:
    """WeightWatcher 0.7.7 ``fit_powerlaw_smallN`` followed by WWFit's argmin-D re-selection."""
    N = x.size
    log_x = np.log(x)
    alphas = np.zeros(N - 1)
    Ds = np.ones(N - 1)
    any_fit = False
    for i in range(N - 1):
        n_int = N - i
        if n_int < WW_SMALL_N_MIN_TAIL:
            continue
        n = float(n_int)
        s = np.sum(log_x[i:]) - n * log_x[i]
        if s <= 1e-12:
            continue
        a = 1.0 + (n - 1.0) / s
        alphas[i] = a
        if a <= 1.0:
            continue
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):  # extreme ratios: D is then inf/NaN
            Ds[i] = float(np.max(np.abs(np.arange(n_int, dtype=np.float64) / n - (1.0 - (x[i:] / x[i]) ** (1.0 - a)))))
        any_fit = True
    if not any_fit:  # WW falls back to the whole sample as the tail
        n = float(N)
        s = np.sum(log_x) - n * log_x[0]
        if s <= 1e-12:
            return _failed("ww", "failed", f"degenerate spectrum: {N} eigenvalues with no spread", n_total=N,
                           threshold=thr)
        alphas[0] = 1.0 + (n - 1.0) / s
        Ds[0] = float(np.max(np.abs(np.arange(N, dtype=np.float64) / n - (1.0 - (x / x[0]) ** (1.0 - alphas[0])))))
    i = int(np.argmin(Ds))
    alpha = float(alphas[i])
    xmin = float(x[i])
    return TailFit(alpha, xmin, float(x[-1]), float(Ds[i]), (alpha - 1.0) / math.sqrt(N - i), N - i, "ww",
                   "warn", f"small-N fit ({N} < {WW_SMALL_N_CUTOFF} eigenvalues): WeightWatcher 0.7.7's "
                   "bias-corrected estimator over tails of at least 8; alpha is unreliable",
                   int(np.count_nonzero(x >= xmin)), N, WW_SMALL_N_MIN_TAIL, thr)


def _fit_scan(x: np.ndarray, method: str, min_tail: int, thr: float | None) -> TailFit:
    N = x.size
    alphas = suffix_alphas(x)
    if method == "ww":
        cand = np.arange(N - 1)
    else:
        first = np.flatnonzero(np.r_[True, x[1:] != x[:-1]])  # one candidate per distinct value
        cand = first[(first <= N - min_tail) & (x[first] < x[-1])]
        if cand.size == 0:
            return _failed(method, "failed", f"no xmin candidate leaves a tail of at least min_tail={min_tail} "
                           f"distinct-valued eigenvalues out of {N}", n_total=N, threshold=thr, min_tail=min_tail)
    a_c = alphas[cand]
    p, D, n_exact = scan(x, cand, a_c)
    i = int(cand[p])
    alpha = float(a_c[p])
    n_tail = N - i
    xmin = float(x[i])
    sigma = (alpha - 1) / math.sqrt(n_tail)
    logger.debug("%s scan: %d candidates, %d evaluated exactly", method, cand.size, n_exact)
    status, msgs = "ok", []
    if not (np.isfinite(alpha) and alpha > 1):
        if method == "ww":
            status = "warn"
            msgs.append("no candidate has alpha > 1; like WeightWatcher 0.7.7 the first candidate is kept with D=1")
        else:
            return _failed(method, "failed", f"every xmin candidate gives alpha <= 1 (first: {alpha:.4g}); "
                           "the tail is not a normalisable power law", n_total=N, threshold=thr, min_tail=min_tail)
    elif method == "csn":
        if alpha > ALPHA_WARN_HIGH:
            msgs.append(f"alpha={alpha:.3g} > {ALPHA_WARN_HIGH:g}: the tail is too light for a meaningful "
                        "power law (e.g. a Marchenko-Pastur bulk)")
        if n_tail == min_tail:
            msgs.append(f"the KS minimum lies at the smallest allowed tail (min_tail={min_tail}); the spectrum "
                        "may have no power-law tail")
        crit = 1.358 / math.sqrt(n_tail)
        if D > crit:
            msgs.append(f"D={D:.3g} exceeds the 5% KS critical value {crit:.3g} for {n_tail} points: poor fit")
        if msgs:
            status = "warn"
    return TailFit(alpha, xmin, float(x[-1]), float(D), float(sigma), int(n_tail), method, status, "; ".join(msgs),
                   int(np.count_nonzero(x >= xmin)), N, min_tail if method == "csn" else 1, thr)


def _fit_fixed(x: np.ndarray, xmin: float, method: str, thr: float | None) -> TailFit:
    tail = x[x >= xmin]
    n = tail.size
    if n < 2:
        return _failed(method, "skipped", f"only {n} eigenvalue(s) >= xmin={xmin:.6g}; need at least 2",
                       n_total=x.size, threshold=thr)
    nf = float(n)
    den = float(np.sum(np.log(tail)) - nf * math.log(xmin))
    if tail[0] == tail[-1] == xmin or not den > 0:
        return _failed(method, "failed", f"all {n} eigenvalues >= xmin={xmin:.6g} equal xmin; alpha undefined",
                       n_total=x.size, threshold=thr)
    alpha = 1 + nf / den
    D = ks_single(tail, xmin, 1.0 - alpha)
    return TailFit(alpha, float(xmin), float(tail[-1]), D, (alpha - 1) / math.sqrt(nf), n, method, "ok", "",
                   n, x.size, None, thr)


def _fit_hill(x: np.ndarray, xmin_pos: float, thr: float | None) -> TailFit:
    N = x.size
    i = int(N / xmin_pos)
    if i >= N - 1:
        return _failed("hill", "skipped", f"xmin index {i} leaves fewer than 2 of {N} eigenvalues in the tail",
                       n_total=N, threshold=thr)
    xmin = float(x[i])
    if not xmin > 0:
        return _failed("hill", "failed", f"xmin = eigenvalue #{i} = {xmin:.6g} is not positive; pass threshold=0 "
                       "to drop non-positive eigenvalues", n_total=N, threshold=thr)
    n = float(N - i)
    log_x = np.log(x[i:])
    den = float(np.sum(log_x) - n * log_x[0])
    if x[-1] == xmin or not den > 0:
        return _failed("hill", "failed", f"the top {N - i} eigenvalues are all equal to {xmin:.6g}; alpha "
                       "undefined", n_total=N, threshold=thr)
    alpha = 1 + n / den
    D = ks_single(x[i:], xmin, -alpha + 1)
    return TailFit(alpha, xmin, float(x[-1]), D, (alpha - 1) / math.sqrt(n), N - i, "hill", "ok", "",
                   int(np.count_nonzero(x >= xmin)), N, None, thr)


def fit_power_law(
    evals: Any,
    *,
    method: str = "csn",
    xmin: float | None = None,
    min_tail: int | None = None,
    xmin_pos: float = 2,
    threshold: float | None = None,
    resolution: float | None = None,
    noise_floor: float | None = None,
) -> TailFit:
    """Fit a continuous power law ``p(λ) ∝ λ^(−α)`` to the upper tail of a spectrum.

    Never raises on bad data: NaN/Inf, too few values, all-equal or non-positive values give a
    :class:`TailFit` with ``status="failed"`` or ``"skipped"`` and a message. ``α`` is never clamped.

    Args:
        evals: eigenvalues (any order): numpy array, torch tensor or sequence.
        method: ``"csn"`` (Clauset–Shalizi–Newman scan with a minimum tail, the default), ``"ww"``
            (WeightWatcher 0.7.7's ``WWFit``: every eigenvalue but the largest is a candidate xmin, no minimum
            tail, its small-N path below 20 eigenvalues; agrees with ``WWFit`` to ~1e-13 relative on alpha and
            D and selects the same xmin except at exact near-ties of D) or ``"hill"`` (``PL_Alpha_Hill``: xmin
            at sorted index ``⌊n/xmin_pos⌋``).
        xmin: fit α at this fixed xmin instead (tail = eigenvalues ``≥ xmin``), for any method.
        min_tail: smallest tail the ``csn`` scan considers; default :func:`csn_default_min_tail` (50 or a tenth
            of the spectrum, whichever is larger). ``min_tail=1`` reproduces ``powerlaw`` 1.5
            ``Fit(data, xmax=None)``. Ignored by ``"ww"`` and ``"hill"``.
        xmin_pos: Hill xmin position divisor (2 = median).
        threshold: drop eigenvalues ``≤ threshold`` first. Default: ``1e-5`` (WeightWatcher's
            ``EVALS_THRESH``, in the unnormalised λ = σ² convention) for ``"csn"`` and ``"ww"``; no filtering
            for ``"hill"``.
        resolution: the eigenvalues' relative precision (e.g. 16·eps of the weights' dtype). A tail whose mean
            log-ratio ``mean(log(λ/xmin)) = 1/(α−1)`` is below it differs from a constant only by rounding (an
            orthogonal or scaled-orthogonal matrix): ``status="failed"`` instead of a huge α. Default: none.
        noise_floor: eigenvalues at or below it are numerically zero (e.g. ``λ_max·(max(N, M)·eps)²``, numpy's
            ``matrix_rank`` rule); an xmin there means the fit describes rounding noise of a rank-deficient
            matrix: ``status="failed"``. Default: none.

    Returns:
        The :class:`TailFit`.

    Raises:
        ValueError: ``method`` is not one of :data:`FIT_METHODS`, or ``min_tail``/``xmin_pos`` are out of range.
    """
    fit = _fit_power_law(evals, method=method, xmin=xmin, min_tail=min_tail, xmin_pos=xmin_pos,
                         threshold=threshold)
    return _check_preconditions(fit, resolution, noise_floor)


def _check_preconditions(fit: TailFit, resolution: float | None, noise_floor: float | None) -> TailFit:
    """``fit`` itself, or a failed fit when its tail is rounding noise (see :func:`fit_power_law`)."""
    if fit.status not in ("ok", "warn") or not math.isfinite(fit.alpha):
        return fit
    if noise_floor is not None and fit.xmin <= noise_floor:
        return _failed(fit.method, "failed", f"xmin={fit.xmin:.3g} is at the numerical noise floor "
                       f"({noise_floor:.3g}): the matrix is rank-deficient and the tail starts in its rounding "
                       "noise; alpha undefined", n_total=fit.n_total, threshold=fit.threshold,
                       min_tail=fit.min_tail)
    if resolution is not None and fit.alpha > 1 and 1.0 / (fit.alpha - 1) <= resolution:
        return _failed(fit.method, "failed", f"the {fit.n_tail} tail eigenvalues differ only by rounding "
                       f"(mean log-ratio {1.0 / (fit.alpha - 1):.2g} <= resolution {resolution:.2g}; an orthogonal "
                       "or scaled-orthogonal matrix): alpha undefined", n_total=fit.n_total,
                       threshold=fit.threshold, min_tail=fit.min_tail)
    return fit


def _fit_power_law(evals: Any, *, method: str, xmin: float | None, min_tail: int | None, xmin_pos: float,
                   threshold: float | None) -> TailFit:
    if method not in FIT_METHODS:
        raise ValueError(f"unknown power-law fit method {method!r}; allowed: {', '.join(FIT_METHODS)}")
    if min_tail is not None and (isinstance(min_tail, bool) or int(min_tail) != min_tail or min_tail < 1):
        raise ValueError(f"min_tail must be a positive integer or None, got {min_tail!r}")
    if not (isinstance(xmin_pos, (int, float)) and xmin_pos >= 1):
        raise ValueError(f"xmin_pos must be a number >= 1, got {xmin_pos!r}")
    if threshold is None and method != "hill":
        threshold = WW_EVALS_THRESH
    try:
        raw = _as_vector(evals)
    except (TypeError, ValueError) as err:
        return _failed(method, "failed", f"cannot read eigenvalues: {err}", threshold=threshold)
    bad = int(np.count_nonzero(~np.isfinite(raw)))
    if bad:
        return _failed(method, "failed", f"{bad} of {raw.size} eigenvalues are NaN or Inf", threshold=threshold)
    x = np.sort(raw[raw > threshold]) if threshold is not None else np.sort(raw)
    N = x.size
    if xmin is not None:
        xmin = float(xmin)
        if not (math.isfinite(xmin) and xmin > 0):
            return _failed(method, "failed", f"xmin must be a positive finite number, got {xmin!r}", n_total=N,
                           threshold=threshold)
        return _fit_fixed(x, xmin, method, threshold)
    if method == "hill":
        if N < 2:
            return _failed(method, "skipped", f"{N} eigenvalue(s); the Hill fit needs at least 2", n_total=N,
                           threshold=threshold)
        return _fit_hill(x, float(xmin_pos), threshold)
    if N and x[0] <= 0:
        return _failed(method, "failed", f"{int(np.count_nonzero(x <= 0))} eigenvalue(s) are not positive "
                       f"after threshold={threshold!r}; a power law needs positive values", n_total=N,
                       threshold=threshold)
    if method == "ww":
        if N < 2:
            return _failed(method, "skipped", f"{N} eigenvalue(s) above threshold={threshold:g}; need at least 2",
                           n_total=N, threshold=threshold)
        if x[0] == x[-1]:
            return _failed(method, "failed", f"all {N} eigenvalues equal {x[0]:.6g}; no tail to fit", n_total=N,
                           threshold=threshold)
        if N < WW_SMALL_N_CUTOFF:
            return _fit_ww_small(x, threshold)
        return _fit_scan(x, "ww", 1, threshold)
    # csn
    if N < CSN_MIN_EVALS:
        return _failed(method, "skipped", f"{N} eigenvalue(s) above threshold={threshold:g}; the csn fit needs at "
                       f"least {CSN_MIN_EVALS}", n_total=N, threshold=threshold)
    if x[0] == x[-1]:
        return _failed(method, "failed", f"all {N} eigenvalues equal {x[0]:.6g}; no tail to fit", n_total=N,
                       threshold=threshold)
    mt = csn_default_min_tail(N) if min_tail is None else max(2, int(min_tail))
    return _fit_scan(x, "csn", mt, threshold)


def hill_alpha(evals: Any, xmin_pos: float = 2) -> float:
    """``PL_Alpha_Hill``: the Hill estimator of α with xmin at sorted index ``⌊n/xmin_pos⌋`` (NaN if it fails)."""
    return fit_power_law(evals, method="hill", xmin_pos=xmin_pos).alpha
