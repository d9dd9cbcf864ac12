import math

import numpy as np
import pytest

from spectra.functional import esd, mp_edges, mp_fit, mp_sigma2, norm_metrics, num_spikes
from spectra.functional.mp import count_outliers, mp_median, tracy_widom_scale
from spectra.functional.norms import matrix_entropy, matrix_rank


def test_norm_metrics_match_direct_formulas(rng):
    W = rng.standard_normal((120, 80))
    lam = esd(W)
    s = np.linalg.svd(W, compute_uv=False)
    m = norm_metrics(lam, N=120, alpha=3.0)
    assert m["norm"] == pytest.approx(np.sum(W**2), rel=1e-10)
    assert m["lambda_max"] == pytest.approx(s[0] ** 2, rel=1e-10)
    assert m["sv_max"] == pytest.approx(s[0], rel=1e-10)
    assert m["log_norm"] == pytest.approx(np.log10(np.sum(W**2)), rel=1e-10)
    assert m["log_spectral_norm"] == pytest.approx(np.log10(s[0] ** 2), rel=1e-10)
    assert m["stable_rank"] == pytest.approx(np.sum(s**2) / s[0] ** 2, rel=1e-10)
    assert m["alpha_weighted"] == pytest.approx(3.0 * np.log10(s[0] ** 2), rel=1e-10)
    assert m["log_alpha_norm"] == pytest.approx(np.log10(np.sum(s**6)), rel=1e-10)
    assert m["matrix_rank"] == np.linalg.matrix_rank(W)
    p = s**2 / np.sum(s**2) + 1e-10
    ent = -np.sum(p * np.log(p)) / np.log(np.linalg.matrix_rank(W) + 1e-10)
    assert m["entropy"] == pytest.approx(ent, rel=1e-10)


def test_rank_and_entropy_of_rank_one(rng):
    u, v = rng.standard_normal(50), rng.standard_normal(30)
    lam = esd(np.outer(u, v))
    assert matrix_rank(lam, 50) == 1
    assert matrix_entropy(lam, 50) == pytest.approx(0.0, abs=1e-6)


def test_zero_matrix_is_defined():
    m = norm_metrics(np.zeros(5), N=5)
    assert m["log_norm"] == -math.inf
    assert math.isnan(m["stable_rank"])
    assert m["entropy"] == -1.0


def test_mp_edges_contain_gaussian_spectrum(rng):
    N, M = 1500, 1000
    lam = esd(rng.standard_normal((N, M)) * 0.5)
    lo, hi = mp_edges(N, M, 0.25)
    assert lo == pytest.approx(0.25 * (math.sqrt(N) - math.sqrt(M)) ** 2)
    tw = tracy_widom_scale(N, M, 0.25)
    assert lam.max() < hi + 4 * tw and lam.max() > hi - 8 * tw
    assert lam.min() > lo * 0.9
    assert mp_sigma2(lam, N, M) == pytest.approx(0.25, rel=0.01)
    assert num_spikes(lam, N, M) == 0
    f = mp_fit(lam, N, M)
    assert f.num_spikes == 0 and f.mp_softrank == pytest.approx(1.0, abs=0.03)


def test_mp_median_matches_monte_carlo(rng):
    N, M = 2000, 500
    lam = esd(rng.standard_normal((N, M)))
    assert mp_median(N, M) == pytest.approx(np.median(lam), rel=0.01)
    assert mp_median(N, M, normalize=True) == pytest.approx(np.median(lam) / N, rel=0.01)


@pytest.mark.parametrize("k", [1, 3, 7])
def test_spike_count(rng, k):
    N, M = 800, 400
    W = rng.standard_normal((N, M))
    for i in range(k):
        u = rng.standard_normal(N)
        v = rng.standard_normal(M)
        W += (3 + i) * np.outer(u / np.linalg.norm(u), v / np.linalg.norm(v)) * math.sqrt(math.sqrt(N * M)) * 2
    lam = esd(W)
    assert num_spikes(lam, N, M) == k
    assert mp_fit(lam, N, M).mp_softrank < 0.7


def test_count_outliers_strict():
    assert count_outliers([1, 2, 3, 3], 3) == 0
    assert count_outliers([1, 2, 3, 4], 2.5) == 2


@pytest.mark.parametrize("bad", [(0, 3), (-1, 4)])
def test_bad_dims(bad):
    with pytest.raises(ValueError, match="positive"):
        mp_edges(*bad)


def test_mp_median_matches_high_precision_quadrature():
    import mpmath as mpm

    from spectra.functional.mp import mp_median

    mpm.mp.dps = 30
    for N, M in ((1000, 900), (1000, 500), (2000, 100), (500, 500)):
        y = mpm.mpf(M) / N
        a, b = (1 - mpm.sqrt(y)) ** 2, (1 + mpm.sqrt(y)) ** 2
        cdf = lambda x: mpm.quad(lambda t: mpm.sqrt((b - t) * (t - a)) / (2 * mpm.pi * y * t), [a, x])  # noqa: E731
        ref = float(mpm.findroot(lambda x: cdf(x) - mpm.mpf(1) / 2, (a + b) / 2 * mpm.mpf("0.8")))
        assert abs(mp_median(N, M, normalize=True) - ref) <= 1e-14 * ref
