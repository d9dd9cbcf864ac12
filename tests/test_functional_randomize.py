"""The randomisation null against WeightWatcher 0.7.7's randomize=True, with the same permutations."""

from __future__ import annotations

import contextlib
import io
import logging
import math
import warnings

import numpy as np
import pytest
import torch
from scipy import stats

from spectra.functional.randomize import rand_distance, randomized_esd, shuffle_matrix


@contextlib.contextmanager
def _ww_quiet():
    """WeightWatcher logs and prints freely, and draws from numpy's global generator: restore both."""
    state = np.random.get_state()
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(logging.NOTSET)
        np.random.set_state(state)


def _planted(seed: int, traps: int, shape=(400, 200)) -> np.ndarray:
    """A Gaussian matrix with ``traps`` large entries: each makes one spike that shuffling keeps."""
    rng = np.random.default_rng(seed)
    W = rng.standard_normal(shape) * 0.05
    idx = rng.choice(W.size, traps, replace=False)
    W.ravel()[idx] = rng.choice([-1.0, 1.0], traps) * rng.uniform(2.0, 4.0, traps)
    return W.astype(np.float32).astype(np.float64)


def test_shuffle_is_a_seeded_permutation_of_the_entries():
    W = np.random.default_rng(0).standard_normal((30, 20))
    st = np.random.get_state()[1].copy()
    a, b = shuffle_matrix(W, 5), shuffle_matrix(W, 5)
    assert np.array_equal(a, b) and not np.array_equal(a, shuffle_matrix(W, 6))
    assert np.array_equal(np.sort(a.ravel()), np.sort(W.ravel())) and a.shape == W.shape
    assert np.array_equal(np.random.get_state()[1], st)
    stack = np.random.default_rng(1).standard_normal((4, 10, 8))
    s = shuffle_matrix(stack, np.random.default_rng(2))
    for S, T in zip(stack, s):  # each slice keeps its own entries
        assert np.array_equal(np.sort(S.ravel()), np.sort(T.ravel()))
    with pytest.raises(ValueError):
        shuffle_matrix(W, permutation=np.zeros(W.size, dtype=int))


def test_same_permutation_as_weightwatcher_random_eigenvalues():
    with _ww_quiet():
        from weightwatcher import WeightWatcher
        from weightwatcher.RMT_Util import jensen_shannon_distance

        W = _planted(1, 3).astype(np.float32)
        np.random.seed(77)
        ww_rand = WeightWatcher().random_eigenvalues([W], n_comp=min(W.shape), num_replicas=1)
    perm = np.random.RandomState(77).permutation(W.size)  # what np.random.shuffle did after seed(77)
    ours = randomized_esd(W.astype(np.float64), permutation=perm)
    np.testing.assert_allclose(ours.rand_evals, ww_rand, rtol=1e-9, atol=1e-12)
    lam = np.linalg.svd(W.astype(np.float64), compute_uv=False) ** 2
    assert rand_distance(lam, ours.rand_evals) == pytest.approx(jensen_shannon_distance(np.sort(lam), ww_rand),
                                                                 rel=1e-9)


def test_reproduces_weightwatcher_analyze_randomize():
    """WW's analyze(randomize=True) shuffles twice: max_rand_eval from the first permutation, rand_distance and
    ww_softrank from a second; with numpy's global seed fixed both are reproduced exactly."""
    W = _planted(2, 3).astype(np.float32)
    lin = torch.nn.Linear(W.shape[1], W.shape[0], bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(W))
    with _ww_quiet():
        import weightwatcher as ww

        np.random.seed(123)
        row = ww.WeightWatcher(model=torch.nn.Sequential(lin)).analyze(randomize=True).iloc[0]
    rs = np.random.RandomState(123)
    first, second = rs.permutation(W.size), rs.permutation(W.size)
    W64 = W.astype(np.float64)
    a = randomized_esd(W64, permutation=first)
    b = randomized_esd(W64, permutation=second)
    assert a.rand_lambda_max == pytest.approx(row["max_rand_eval"], rel=1e-9)
    assert b.rand_distance == pytest.approx(row["rand_distance"], rel=1e-9)
    assert b.ww_softrank == pytest.approx(row["ww_softrank"], rel=1e-9)
    assert b.ww_maxdist == pytest.approx(row["ww_maxdist"], rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("traps", [0, 3, 5])
def test_traps_are_counted(traps):
    res = randomized_esd(_planted(3, traps), np.random.default_rng(0))
    assert res.rand_num_spikes == traps
    assert res.rand_bulk_max < res.rand_lambda_max or traps == 0
    if traps == 0:  # pure noise: the null sits at its MP edge
        assert res.rand_lambda_max == pytest.approx(res.rand_bulk_max, rel=0.05)


def test_trap_counts_agree_with_weightwatcher_on_clear_cases():
    for traps in (0, 3):
        W = _planted(4, traps).astype(np.float32)
        lin = torch.nn.Linear(W.shape[1], W.shape[0], bias=False)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(W))
        with _ww_quiet():
            import weightwatcher as ww

            np.random.seed(5)
            row = ww.WeightWatcher(model=torch.nn.Sequential(lin)).analyze(randomize=True).iloc[0]
        ours = randomized_esd(W.astype(np.float64), np.random.default_rng(5))
        assert int(row["rand_num_spikes"]) == ours.rand_num_spikes == traps


def test_wasserstein_distance_option():
    rng = np.random.default_rng(6)
    a, b = rng.uniform(1, 10, 200), rng.uniform(2, 20, 200)
    assert rand_distance(a, b, distance="wasserstein") == pytest.approx(
        stats.wasserstein_distance(np.log10(a), np.log10(b)), rel=1e-12)
    assert rand_distance(a, a) == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError):
        rand_distance(a, b[:10])
    with pytest.raises(ValueError):
        rand_distance(a, b, distance="kl")


def test_structured_matrix_is_far_from_its_null():
    rng = np.random.default_rng(7)
    low_rank = rng.standard_normal((300, 5)) @ rng.standard_normal((5, 150)) + 0.01 * rng.standard_normal((300, 150))
    noise = rng.standard_normal((300, 150))
    d_struct = randomized_esd(low_rank, 1).rand_distance
    d_noise = randomized_esd(noise, 1).rand_distance
    assert d_struct > 10 * d_noise
    zero = randomized_esd(np.zeros((4, 3)), 0)  # nothing to compare: NaN, not a number that looks fine
    assert math.isnan(zero.rand_distance) and math.isnan(zero.rand_bulk_max) and zero.rand_num_spikes == 0
