"""The CSN semi-parametric bootstrap: identical to the plain loop over the library's own fit, seeded, and with
the p-value distributions CSN 2009 predicts (≈ uniform for true power laws, ≈ 0 for Marchenko–Pastur)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from spectra.functional.bootstrap import bootstrap_pvalue, bootstrap_samples
from spectra.functional.powerlaw import fit_power_law


def _mp(seed: int, n: int = 300, q: int = 2) -> np.ndarray:
    W = np.random.default_rng(seed).standard_normal((q * n, n))
    return np.linalg.eigvalsh(W.T @ W)


def _student(seed: int, df: float = 3.0, n: int = 300) -> np.ndarray:
    W = np.random.default_rng(seed).standard_t(df, (2 * n, n))
    return np.linalg.eigvalsh(W.T @ W)


def _pareto(seed: int, a: float = 1.5, n: int = 400) -> np.ndarray:
    return np.random.default_rng(seed).pareto(a, n) + 1.0


@pytest.mark.parametrize("evals", [_pareto(0), _pareto(1, 2.0), _mp(2), _student(3), _student(4, 2.0)],
                         ids=["pareto1.5", "pareto2", "mp", "t3", "t2"])
def test_vectorized_equals_the_plain_loop(evals):
    vec = bootstrap_pvalue(evals, 300, seed=7)
    loop = bootstrap_pvalue(evals, 300, seed=7, engine="loop")
    assert vec.status == loop.status == "ok"
    assert vec.n_worse == loop.n_worse and vec.pvalue == loop.pvalue
    fit = fit_power_law(evals)
    assert (vec.D, vec.alpha, vec.xmin, vec.n_tail) == (fit.D, fit.alpha, fit.xmin, fit.n_tail)


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
    # the first replicates do not depend on how many are drawn
    assert np.array_equal(bootstrap_samples(evals, 200, seed=4)[:128], bootstrap_samples(evals, 128, seed=4))


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
