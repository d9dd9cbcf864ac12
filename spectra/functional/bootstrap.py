"""Goodness of fit of a power-law tail: the semi-parametric bootstrap p-value of Clauset, Shalizi & Newman.

CSN 2009 (SIAM Review 51, §4.1). Fit the data (xmin, α, KS distance D). Each replicate has the same size N:
with probability n_tail/N a point is drawn from the fitted power law above xmin, otherwise uniformly (with
replacement) from the data below xmin. Every replicate is then fitted *with the same procedure*, xmin scan
included, and ``p`` is the fraction of replicates whose D is at least the observed one. p ≈ uniform on [0, 1]
when the data are a power law above xmin; p ≤ 0.1 rejects the power law.

Speed. A replicate needs one bit: is its fitted D below the observed D0? That is a *decision*, settled for a
block of 256 replicates at once without computing most KS distances:

1. the replicates are drawn already sorted and in log space (:mod:`spectra.functional._bootstrap_sample`:
   Rényi's exponential order statistics for the power-law part, sorted int16 indices for the resampled
   bulk), so nothing is sorted but small integers, and the bulk is assembled only for the replicates that
   reach step 3;
2. the candidate xmin where a replicate's power-law part starts is evaluated over its whole tail, from that
   part alone: if its D is below D0 the replicate is decided (it fits better than the data); otherwise the
   columns of its largest and smallest deviation become the replicate's *probes*;
3. every candidate (α from one suffix sum of the logs) is tested at its replicate's probes: a deviation
   ``|F(x_j) − (j − i)/n| ≥ D0`` at any point certifies "D ≥ D0" for that candidate;
4. anchor rounds: in each undecided replicate the middle uncertified candidate is evaluated over its tail
   as in step 2 (below D0 decides the replicate), and its extremes probe the candidates still uncertified;
   on every candidate while many are left, then on the remaining (replicate, candidate) pairs, until every
   candidate of every undecided replicate is certified (then D ≥ D0).

Steps 2–4 run in float32 with a proven error bound (:mod:`spectra.functional._bootstrap_kernels`): a test
counts only if it clears D0 by that bound, and a curve within it of D0 is re-evaluated in float64. A decision
within a rounding margin (1e-9) of D0 is re-made by the library's own fit of that replicate, so the p-value
equals that of the plain loop ``fit_power_law(replicate).D >= D0`` for the same seed (tested). What it costs,
stage by stage, is in ``benchmarks/results/bootstrap.md``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ._bootstrap_decide import decide_csn, decide_hill
from ._bootstrap_sample import BLOCK_REPLICATES, Block, Buffers
from .powerlaw import TailFit, _as_vector, csn_default_min_tail, fit_power_law

__all__ = ["BootstrapPValue", "bootstrap_pvalue", "bootstrap_samples", "BOOTSTRAP_METHODS"]

BOOTSTRAP_METHODS = ("csn", "hill")


@dataclass(frozen=True)
class BootstrapPValue:
    """Result of :func:`bootstrap_pvalue`.

    Attributes:
        pvalue: fraction of replicates whose fitted D is ``≥`` the observed D (NaN unless status is ok/warn).
        n_replicates: number of replicates.
        n_worse: replicates with D ``≥`` the observed D (``pvalue = n_worse / n_replicates``).
        D, alpha, xmin, n_tail: the observed fit that the replicates are drawn from.
        method: the fit procedure re-run on every replicate (``"csn"`` scan or ``"hill"``).
        seed: the seed (an int, a ``numpy.random.SeedSequence`` or None) of the ``Generator`` that drew them.
        n_refit: replicates whose decision was re-made by the library's fit (within rounding of D).
        status: ``"ok"``, ``"warn"``, ``"skipped"`` or ``"failed"``.
        message: why, when ``status != "ok"``.
    """

    pvalue: float
    n_replicates: int
    n_worse: int
    D: float
    alpha: float
    xmin: float
    n_tail: int
    method: str
    seed: Any
    n_refit: int = 0
    status: str = "ok"
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain ``dict``."""
        return asdict(self)


def _observed(evals: Any, method: str, min_tail: int | None, threshold: float | None, xmin_pos: float):
    x = _as_vector(evals)
    if threshold is None:  # csn: WeightWatcher's EVALS_THRESH as in fit_power_law; hill: positive values only
        threshold = 1e-5 if method == "csn" else 0.0
    thr = threshold
    kw: dict[str, Any] = {"method": method, "threshold": thr}
    if method == "csn":
        kw["min_tail"] = min_tail
    else:
        kw["xmin_pos"] = xmin_pos
    fit = fit_power_law(x, **kw)
    if fit.ok:
        x = np.sort(x[x > thr])
    return x, fit, kw


def bootstrap_samples(evals: Any, n_replicates: int, *, seed: Any = 0, method: str = "csn",
                      min_tail: int | None = None, threshold: float | None = None,
                      xmin_pos: float = 2) -> np.ndarray:
    """The bootstrap replicates :func:`bootstrap_pvalue` draws, as an ``(n_replicates, N)`` array of sorted rows.

    For tests and for the reference loop ``[fit_power_law(r).D for r in bootstrap_samples(...)]``.

    Raises:
        ValueError: the observed fit failed (there is nothing to draw from).
    """
    x, fit, _ = _observed(evals, method, min_tail, threshold, xmin_pos)
    if not fit.ok:
        raise ValueError(f"the observed fit failed ({fit.status}): {fit.message}")
    rng = np.random.default_rng(seed)
    n_bulk = int(x.size - np.count_nonzero(x >= fit.xmin))
    out = []
    for start in range(0, n_replicates, BLOCK_REPLICATES):
        B = min(BLOCK_REPLICATES, n_replicates - start)
        out.append(Block(rng, x, n_bulk, fit.xmin, fit.alpha, B).samples())
    return np.concatenate(out) if out else np.empty((0, x.size))


# ------------------------------------------------------------------------------------------------ driver
def _skipped(status: str, message: str, R: int, method: str, seed: Any, fit: TailFit | None = None):
    nan = math.nan
    f = (nan, nan, nan, 0) if fit is None else (fit.D, fit.alpha, fit.xmin, fit.n_tail)
    return BootstrapPValue(nan, R, 0, f[0], f[1], f[2], int(f[3]), method, seed, 0, status, message)


def bootstrap_pvalue(
    evals: Any,
    n_replicates: int = 1000,
    *,
    seed: Any = 0,
    method: str = "csn",
    min_tail: int | None = None,
    threshold: float | None = None,
    xmin_pos: float = 2,
    engine: str = "vectorized",
) -> BootstrapPValue:
    """CSN's semi-parametric bootstrap goodness-of-fit p-value of the power-law tail (see module docstring).

    Args:
        evals: eigenvalues (any order).
        n_replicates: number of bootstrap replicates (CSN: 2,500 for p to ±0.01).
        seed: seed of the ``numpy.random.Generator`` that draws the replicates: an int, a
            ``numpy.random.SeedSequence`` or None (fresh entropy). Global RNG state is never touched. The same
            seed and size give the same p-value.
        method: the fit re-run on each replicate: ``"csn"`` (the KS scan over xmin with ``min_tail``) or
            ``"hill"`` (xmin at the ⌊N/xmin_pos⌋-th value).
        min_tail: the ``csn`` scan's minimum tail (default :func:`~spectra.functional.powerlaw.
            csn_default_min_tail`, the same for the data and every replicate since all have N points).
        threshold: values ``≤ threshold`` are dropped first (default: ``1e-5`` for ``csn`` as in
            ``fit_power_law``; ``0`` for ``hill``, whose replicates need positive values).
        xmin_pos: the Hill xmin position.
        engine: ``"vectorized"`` (default) or ``"loop"``, the reference: ``fit_power_law`` on every replicate.

    Returns:
        A :class:`BootstrapPValue`; ``status="skipped"``/``"failed"`` (p NaN) when the observed fit is not
        usable or ``n_replicates < 1``, ``"warn"`` when fewer than 100 replicates make p coarse.

    Raises:
        ValueError: unknown ``method`` or ``engine``.
    """
    if method not in BOOTSTRAP_METHODS:
        raise ValueError(f"bootstrap method must be one of {BOOTSTRAP_METHODS}, got {method!r}")
    if engine not in ("vectorized", "loop"):
        raise ValueError(f"engine must be 'vectorized' or 'loop', got {engine!r}")
    R = int(n_replicates)
    if R < 1:
        return _skipped("skipped", f"n_replicates={n_replicates!r}: nothing to draw", 0, method, seed)
    try:
        x, fit, kw = _observed(evals, method, min_tail, threshold, xmin_pos)
    except (TypeError, ValueError) as err:
        return _skipped("failed", f"cannot read eigenvalues: {err}", R, method, seed)
    if not fit.ok:
        return _skipped(fit.status, f"no power-law fit to test: {fit.message}", R, method, seed, fit)
    N = x.size
    mt = (csn_default_min_tail(N) if min_tail is None else max(2, int(min_tail))) if method == "csn" else 0
    n_bulk = int(N - np.count_nonzero(x >= fit.xmin))
    rng = np.random.default_rng(seed)
    worse = refits = 0
    bufs = Buffers()
    for start in range(0, R, BLOCK_REPLICATES):
        blk = Block(rng, x, n_bulk, fit.xmin, fit.alpha, min(BLOCK_REPLICATES, R - start), bufs)
        if engine == "loop":
            ge = np.array([_refit_ge(row, kw, fit.D) for row in blk.samples()])
        else:
            ge, refit = decide_csn(blk, fit.D, mt) if method == "csn" else decide_hill(blk, fit.D, xmin_pos)
            rows = np.flatnonzero(refit)
            if rows.size:
                ge[rows] = [_refit_ge(row, kw, fit.D) for row in blk.samples(rows)]
            refits += int(rows.size)
        worse += int(np.count_nonzero(ge))
    status, msg = "ok", ""
    if R < 100:
        status, msg = "warn", f"only {R} replicates: the p-value's standard error is about {0.5 / math.sqrt(R):.2f}"
    return BootstrapPValue(worse / R, R, worse, fit.D, fit.alpha, fit.xmin, fit.n_tail, method, seed, refits,
                           status, msg)


def _refit_ge(row: np.ndarray, kw: dict[str, Any], D0: float) -> bool:
    """The reference decision: the library's own fit of one replicate (a failed fit counts as D = 1)."""
    f = fit_power_law(row, **kw)
    return (f.D if f.ok else 1.0) >= D0
