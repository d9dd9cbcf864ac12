"""The CSN semi-parametric bootstrap: identical to the plain loop over the library's own fit, seeded, and with
the p-value distributions CSN 2009 predicts (≈ uniform for true power laws, ≈ 0 for Marchenko–Pastur)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from scipy import stats

from spectra.functional import bootstrap as bootstrap_module
from spectra.functional._bootstrap_decide import TOL, decide_csn
from spectra.functional._bootstrap_kernels import curves32, margin32, probe32, thresholds32
from spectra.functional._bootstrap_sample import BLOCK_REPLICATES, Block
from spectra.functional.bootstrap import bootstrap_pvalue, bootstrap_samples
from spectra.functional.powerlaw import csn_default_min_tail, fit_power_law


def _mp(seed: int, n: int = 300, q: int = 2) -> np.ndarray:
    W = np.random.default_rng(seed).standard_normal((q * n, n))
    return np.linalg.eigvalsh(W.T @ W)


def _student(seed: int, df: float = 3.0, n: int = 300) -> np.ndarray:
    W = np.random.default_rng(seed).standard_t(df, (2 * n, n))
    return np.linalg.eigvalsh(W.T @ W)


def _pareto(seed: int, a: float = 1.5, n: int = 400) -> np.ndarray:
    return np.random.default_rng(seed).pareto(a, n) + 1.0


def _mixed(seed: int, n: int = 400) -> np.ndarray:
    """A uniform bulk below 1 and a Pareto(α = 2.5) tail above it (the benchmark's "mixed")."""
    rng = np.random.default_rng(seed)
    return np.r_[rng.uniform(0.2, 1.0, n // 2), rng.pareto(1.5, n - n // 2) + 1.0]


def _block(evals: np.ndarray, seed: int, min_tail: int | None = None):
    """The first block bootstrap_pvalue draws, with the observed fit and the csn minimum tail."""
    x, fit, _ = bootstrap_module._observed(evals, "csn", min_tail, None, 2)
    mt = csn_default_min_tail(x.size) if min_tail is None else min_tail
    n_bulk = int(x.size - np.count_nonzero(x >= fit.xmin))
    return Block(np.random.default_rng(seed), x, n_bulk, fit.xmin, fit.alpha, BLOCK_REPLICATES), fit, mt


def _loop_D(blk: Block, min_tail: int) -> np.ndarray:
    """The reference: the library's fit of every replicate of the block (a failed fit counts as D = 1)."""
    fits = [fit_power_law(row, min_tail=min_tail) for row in blk.samples()]
    return np.array([f.D if f.ok else 1.0 for f in fits])


@pytest.mark.parametrize("evals", [_pareto(0), _pareto(1, 2.0), _mp(2), _student(3), _student(4, 2.0), _mixed(5)],
                         ids=["pareto1.5", "pareto2", "mp", "t3", "t2", "mixed"])
def test_vectorized_equals_the_plain_loop(evals):
    vec = bootstrap_pvalue(evals, 300, seed=7)
    loop = bootstrap_pvalue(evals, 300, seed=7, engine="loop")
    assert vec.status == loop.status == "ok"
    assert vec.n_worse == loop.n_worse and vec.pvalue == loop.pvalue
    fit = fit_power_law(evals)
    assert (vec.D, vec.alpha, vec.xmin, vec.n_tail) == (fit.D, fit.alpha, fit.xmin, fit.n_tail)


@pytest.mark.parametrize("evals,min_tail", [
    (_pareto(10), None), (_mixed(11), None), (_student(12, 2.0), None), (_mp(13), None),
    (np.round(_student(14), 0) + 1.0, None),  # many repeated values: one candidate per distinct value
    (_pareto(15, 1.2), 5),  # a small minimum tail: candidates up to the last few points
], ids=["pareto", "mixed", "t2", "mp", "ties", "min_tail5"])
def test_every_decision_equals_the_fit_of_its_replicate(evals, min_tail):
    """Per replicate, not only in total: the engine's decision is the loop's (refits resolved by the fit)."""
    blk, fit, mt = _block(evals, seed=21, min_tail=min_tail)
    D = _loop_D(blk, mt)
    ge, refit = decide_csn(blk, fit.D, mt)
    assert np.array_equal(ge[~refit], (D >= fit.D)[~refit])
    assert np.all(np.abs(D[refit] - fit.D) <= 10 * TOL)  # refits only at rounding-level ties


@pytest.mark.parametrize("evals", [_pareto(30), _mixed(31), _student(32, 2.0), _student(33)],
                         ids=["pareto", "mixed", "t2", "t3"])
def test_ties_at_the_observed_D_are_refitted(evals):
    """With D0 set to replicates' own D (exact ties), those replicates are re-fitted and decided as the loop."""
    blk, fit, mt = _block(evals, seed=22)
    D = _loop_D(blk, mt)
    for r in (3, int(np.argsort(D)[BLOCK_REPLICATES // 2])):  # an arbitrary replicate and the median one
        D0 = float(D[r])
        ge, refit = decide_csn(blk, D0, mt)
        assert refit[r]
        assert np.array_equal(ge[~refit], (D >= D0)[~refit])


def test_ties_through_bootstrap_pvalue(monkeypatch):
    """End to end: observed D = the D of one replicate; both engines count it (D ≥ D0), via one refit."""
    evals = _student(34, 2.0)
    tie = fit_power_law(bootstrap_samples(evals, 10, seed=5)[7]).D
    real = bootstrap_module._observed

    def observed_with_tie(*args):
        x, fit, kw = real(*args)
        return x, dataclasses.replace(fit, D=tie), kw

    monkeypatch.setattr(bootstrap_module, "_observed", observed_with_tie)
    vec = bootstrap_pvalue(evals, 60, seed=5)
    loop = bootstrap_pvalue(evals, 60, seed=5, engine="loop")
    assert vec.D == tie and vec.n_refit >= 1
    assert vec.n_worse == loop.n_worse


def test_float32_curves_and_probes_are_within_their_bound():
    """The float32 kernels against float64 on wide-ranged logs and steep exponents: errors stay well inside
    margin32 (half of it), so a test that clears D0 by the margin is right in exact arithmetic."""
    rng = np.random.default_rng(0)
    P, N = 64, 400
    L = np.sort(rng.uniform(-12.0, 9.0, (P, N)), axis=1)
    ref = 0.5 * (L[:, 0] + L[:, -1])
    R = np.maximum(L[:, -1] - ref, ref - L[:, 0])
    L32 = (L - ref[:, None]).astype(np.float32)
    rows = np.repeat(np.arange(P), 4)
    cand = rng.integers(0, N - 20, rows.size)
    e = -rng.uniform(0.05, 12.0, rows.size)
    hi, jhi, lo, jlo = curves32(L32, rows, cand, e.astype(np.float32), N)
    c = np.arange(N)[None, :]
    dev = (N - c) / (N - cand)[:, None] - np.exp(e[:, None] * (L[rows] - L[rows, cand][:, None]))
    dev[c < cand[:, None]] = 0.0
    m = margin32(np.abs(e), R[rows])
    assert np.all(np.abs(hi - dev.max(axis=1)) <= m / 2) and np.all(np.abs(lo - dev.min(axis=1)) <= m / 2)
    k = np.arange(rows.size)  # and the columns returned are where those extremes lie
    assert np.all(np.abs(dev[k, jhi] - hi) <= m / 2) and np.all(np.abs(dev[k, jlo] - lo) <= m / 2)
    j = np.minimum(cand + rng.integers(0, N, rows.size), N - 1)
    exact = np.abs(dev[k, j])
    level = 0.05
    thr = thresholds32(level, e.astype(np.float32), R[rows].astype(np.float64), np.empty(rows.size, np.float32))
    assert np.all(thr >= level + margin32(np.abs(e), R[rows]))
    ok = probe32(L32[rows, j], j, L32[rows, cand], e.astype(np.float32),
                 (1.0 / (N - cand)).astype(np.float32), thr, N)
    assert np.all(exact[ok] >= level) and ok.any()


def test_hill_bootstrap_equals_the_loop():
    for evals in (_pareto(5), _mp(6)):
        vec = bootstrap_pvalue(evals, 200, seed=1, method="hill")
        loop = bootstrap_pvalue(evals, 200, seed=1, method="hill", engine="loop")
        assert vec.n_worse == loop.n_worse


def test_replicates_follow_the_semiparametric_scheme():
    evals = _student(8)
    x = np.sort(evals[evals > 1e-5])
    fit = fit_power_law(x)
    R = bootstrap_samples(evals, 400, seed=3)
    assert R.shape == (400, x.size)
    assert np.all(np.diff(R, axis=1) >= 0)  # drawn sorted
    bulk = x[x < fit.xmin]
    below = R < fit.xmin
    assert np.isin(R[below], bulk).all()  # the bulk is resampled from the data below xmin
    # the number of power-law points is Binomial(N, n_tail/N)
    k = (~below).sum(axis=1)
    assert abs(k.mean() - fit.n_tail) < 4 * math.sqrt(fit.n_tail * (1 - fit.n_tail / x.size) / 400)
    # above xmin the draws follow the fitted power law: (x/xmin)^(1-alpha) is uniform
    u = (R[~below] / fit.xmin) ** (1.0 - fit.alpha)
    assert stats.kstest(u, "uniform").pvalue > 1e-3
    # bulk values are drawn uniformly: each observed bulk value about equally often
    counts = np.bincount(np.searchsorted(bulk, R[below]), minlength=bulk.size)
    assert stats.chisquare(counts).pvalue > 1e-3


def test_seeded_and_leaves_global_state_alone():
    evals = _pareto(9)
    st_np = np.random.get_state()[1].copy()
    import torch

    st_t = torch.random.get_rng_state().clone()
    a = bootstrap_pvalue(evals, 150, seed=11)
    b = bootstrap_pvalue(evals, 150, seed=11)
    c = bootstrap_pvalue(evals, 150, seed=12)
    assert a == b and a.seed == 11
    assert np.array_equal(np.random.get_state()[1], st_np)
    assert torch.equal(torch.random.get_rng_state(), st_t)
    assert np.array_equal(bootstrap_samples(evals, 5, seed=11), bootstrap_samples(evals, 5, seed=11))
    assert not np.array_equal(bootstrap_samples(evals, 5, seed=11), bootstrap_samples(evals, 5, seed=12))
    assert c.n_replicates == 150
    # the first replicates do not depend on how many are drawn (also within a last, partial block)
    for ev in (evals, _student(9)):  # without and with a resampled bulk
        many = bootstrap_samples(ev, BLOCK_REPLICATES + 40, seed=4)
        assert np.array_equal(many[:100], bootstrap_samples(ev, 100, seed=4))
        assert np.array_equal(many[:BLOCK_REPLICATES], bootstrap_samples(ev, BLOCK_REPLICATES, seed=4))


def test_pvalues_uniform_for_power_laws_and_zero_for_mp():
    p_pl = [bootstrap_pvalue(_pareto(100 + s, 1.5 + 0.5 * (s % 3), 300), 100, seed=s).pvalue for s in range(30)]
    assert stats.kstest(p_pl, "uniform").pvalue > 0.01
    assert 0.3 < np.mean(p_pl) < 0.7
    # Marchenko-Pastur edges are not power laws: rejected once the spectrum is large enough (N = 800)
    p_mp = [bootstrap_pvalue(_mp(200 + s, 800), 100, seed=s).pvalue for s in range(3)]
    assert max(p_mp) <= 0.02


@pytest.mark.parametrize("evals,n,status", [
    (np.linspace(1, 2, 5), 100, "skipped"),  # too few eigenvalues for the csn fit
    (np.ones(50), 100, "failed"),  # no spread
    (np.r_[np.ones(30), np.nan], 100, "failed"),
    (_pareto(1), 0, "skipped"),
    (_pareto(1), 50, "warn"),  # coarse p
])
def test_degenerate_input_gives_status(evals, n, status):
    res = bootstrap_pvalue(evals, n, seed=0)
    assert res.status == status and res.message
    if status != "warn":
        assert math.isnan(res.pvalue)


def test_bad_arguments_raise():
    with pytest.raises(ValueError):
        bootstrap_pvalue(_pareto(1), 10, method="ww")
    with pytest.raises(ValueError):
        bootstrap_pvalue(_pareto(1), 10, engine="gpu")
    with pytest.raises(ValueError):
        bootstrap_samples(np.ones(20), 10)
