"""FARMS α: the reference window scheme, aspect-ratio freedom on random matrices, degenerate shapes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spectra.functional.farms import farms_alpha, farms_esd, farms_windows
from spectra.functional.powerlaw import hill_alpha


def _reference_fixed_sampling(W, num_row_samples=100, Q_ratio=2.0, per_dim=10):
    """FARMS's ``fixed_sampling`` (sampling.py of the reference implementation), in numpy."""
    rows, cols = W.shape
    ncs = int(num_row_samples * Q_ratio)
    row_step = max(1, (rows - num_row_samples) // (per_dim - 1))
    col_step = max(1, (cols - ncs) // (per_dim - 1))
    nrw = min(per_dim, max(1, (rows - num_row_samples) // row_step + 1))
    ncw = min(per_dim, max(1, (cols - ncs) // col_step + 1))
    eigs = []
    for i in range(nrw):
        for j in range(ncw):
            r0 = min(i * row_step, rows - num_row_samples)
            c0 = min(j * col_step, cols - ncs)
            eigs.append(np.linalg.svd(W[r0:r0 + num_row_samples, c0:c0 + ncs], compute_uv=False) ** 2)
    return np.sort(np.concatenate(eigs))


@pytest.mark.parametrize("shape", [(300, 700), (100, 200), (250, 1000), (160, 210)])
def test_windows_match_the_reference_implementation(shape):
    W = np.random.default_rng(1).standard_normal(shape)
    pooled = farms_esd(W)
    ref = _reference_fixed_sampling(W)
    assert not pooled.transposed and pooled.window == (100, 200)
    np.testing.assert_allclose(pooled.evals, ref, rtol=1e-9, atol=1e-9)
    fit, _ = farms_alpha(W)
    assert fit.alpha == pytest.approx(hill_alpha(ref), rel=1e-9)  # FARMS fits with Hill at the median


def test_aspect_ratio_free_on_random_matrices():
    rng = np.random.default_rng(0)
    M = 250
    farms, plain = [], []
    for Q in (1, 2, 4, 8):
        W = rng.standard_normal((Q * M, M))
        farms.append(farms_alpha(W)[0].alpha)
        plain.append(hill_alpha(np.linalg.eigvalsh(W.T @ W)))
    # FARMS stays flat (≈2.7) while the whole-matrix Hill estimate rises with Q (2.1 -> 4.5)
    assert max(farms) - min(farms) < 0.1
    assert 2.55 < np.mean(farms) < 2.85
    assert all(b > a + 0.3 for a, b in zip(plain, plain[1:]))
    assert plain[-1] - plain[0] > 1.8


def test_tall_and_small_matrices_adapt_the_window():
    rng = np.random.default_rng(2)
    tall = rng.standard_normal((1000, 150))  # 100x200 windows fit the transpose only
    p = farms_esd(tall)
    assert p.transposed and p.window == (100, 200)
    np.testing.assert_allclose(p.evals, farms_esd(tall.T).evals)
    small = rng.standard_normal((40, 30))  # no 100x200 window fits: the largest a x 2a one is 20 x 40
    p = farms_esd(small)
    assert p.window == (20, 40) and p.transposed
    assert farms_windows((5, 5)) is None
    fit, pooled = farms_alpha(np.ones((5, 5)))
    assert pooled is None and fit.status == "skipped" and math.isnan(fit.alpha) and "too small" in fit.message


def test_stacks_pool_every_slice_and_scale_does_not_change_alpha():
    rng = np.random.default_rng(3)
    stack = rng.standard_normal((9, 64, 64))
    p = farms_esd(stack, scale=0.5)
    assert p.window == (32, 64) and p.n_windows == 9 * 10 * 1
    per = np.sort(np.concatenate([farms_esd(S).evals for S in stack]))
    np.testing.assert_allclose(p.evals, 0.5 * per)
    a1 = farms_alpha(stack)[0].alpha
    a2 = farms_alpha(stack, scale=0.5)[0].alpha
    assert a1 == pytest.approx(a2, rel=1e-12)


def test_bad_input():
    with pytest.raises(ValueError):
        farms_esd(np.ones(10))
    with pytest.raises(ValueError):
        farms_esd(np.full((300, 300), np.nan))
    rng = np.random.default_rng(4)
    for W in (np.zeros((300, 600)), np.ones((300, 600)), rng.standard_normal((300, 3)) @ rng.standard_normal((3, 600))):
        fit, _ = farms_alpha(W)  # zero, constant, rank 3: no tail to fit, never an 'ok' alpha
        assert fit.status == "failed" and math.isnan(fit.alpha) and fit.message
