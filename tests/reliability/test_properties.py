"""Property-based tests (hypothesis) of the estimators: invariances that must hold exactly or to rounding.

Which property holds for which estimator, and why:

* Scaling λ → c·λ: every candidate's MLE α = 1 + n / Σ ln(λ_j/λ_i) and KS distance depend on ratios only, so α
  is unchanged and xmin scales by c, for csn, ww and hill alike. The default threshold (1e-5) is absolute, so
  it must scale too; the tests pass ``threshold=0`` (nothing dropped) to state the property exactly.
* Permutation: the fits sort their input first, so any order gives bit-identical results.
* Adding eigenvalues below xmin:
  - fixed ``xmin``: the tail {λ ≥ xmin} is unchanged, so the fit is bit-identical;
  - Hill: xmin is the ⌊n/2⌋-th order statistic, so extra values *move* xmin; what holds is that α_hill equals
    the fixed-xmin fit at Hill's own xmin, which is then unaffected by values added below it;
  - csn scan with a fixed ``min_tail``: every old candidate keeps its tail, α and D; the new values only add
    candidates. So the selected D can only go down, and if the old xmin is still selected α is identical.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from spectra.functional import esd, fit_power_law, norm_metrics

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _pareto(seed: int, n: int, alpha: float) -> np.ndarray:
    """n samples of a continuous power law p(x) ∝ x^-alpha, x ≥ 1 (continuous: ties have probability 0)."""
    rng = np.random.default_rng(seed)
    return (1.0 - rng.random(n)) ** (-1.0 / (alpha - 1.0))


spectra_st = st.builds(_pareto, st.integers(0, 2**32 - 1), st.integers(30, 150), st.floats(1.6, 4.0))
methods = st.sampled_from(["csn", "ww", "hill"])


@SETTINGS
@given(lam=spectra_st, method=methods, log2c=st.integers(-30, 30), frac=st.floats(0.25, 4.0))
def test_alpha_invariant_to_scaling(lam, method, log2c, frac):
    c = 2.0**log2c * frac
    a = fit_power_law(lam, method=method, threshold=0)
    b = fit_power_law(lam * c, method=method, threshold=0)
    assert a.status == b.status
    assume(a.ok)
    assert b.alpha == pytest.approx(a.alpha, rel=1e-9)
    assert b.xmin == pytest.approx(a.xmin * c, rel=1e-12)
    assert b.n_tail == a.n_tail and b.D == pytest.approx(a.D, abs=1e-9)


@SETTINGS
@given(lam=spectra_st, method=methods, seed=st.integers(0, 2**32 - 1))
def test_fit_invariant_to_permutation(lam, method, seed):
    perm = np.random.default_rng(seed).permutation(lam.size)
    a, b = fit_power_law(lam, method=method), fit_power_law(lam[perm], method=method)
    assert a.to_dict().keys() == b.to_dict().keys()
    for k, v in a.to_dict().items():
        w = b.to_dict()[k]
        assert (v == w) or (isinstance(v, float) and math.isnan(v) and math.isnan(w)), k
    t = torch.from_numpy(lam[perm])
    assert fit_power_law(t, method=method).alpha == pytest.approx(a.alpha, rel=0, abs=0) or not a.ok


@SETTINGS
@given(lam=spectra_st, q=st.floats(0.2, 0.8), k=st.integers(1, 60), seed=st.integers(0, 2**32 - 1))
def test_fixed_xmin_fit_ignores_values_below_xmin(lam, q, k, seed):
    xmin = float(np.quantile(lam, q))
    low = np.random.default_rng(seed).uniform(0.01, 0.999, k) * xmin
    a = fit_power_law(lam, xmin=xmin, threshold=0)
    b = fit_power_law(np.concatenate([lam, low]), xmin=xmin, threshold=0)
    assert a.status == b.status == "ok"
    assert (a.alpha, a.xmin, a.D, a.n_tail) == (b.alpha, b.xmin, b.D, b.n_tail)


@SETTINGS
@given(lam=spectra_st, k=st.integers(1, 60), seed=st.integers(0, 2**32 - 1))
def test_hill_equals_fixed_xmin_fit_at_its_xmin_and_that_is_stable(lam, k, seed):
    h = fit_power_law(lam, method="hill")
    assert h.ok
    fixed = fit_power_law(lam, xmin=h.xmin, threshold=0)
    assert fixed.alpha == pytest.approx(h.alpha, rel=1e-12) and fixed.n_tail == h.n_tail
    low = np.random.default_rng(seed).uniform(0.01, 0.999, k) * lam.min()
    more = fit_power_law(np.concatenate([lam, low]), xmin=h.xmin, threshold=0)
    assert more.alpha == fixed.alpha
    moved = fit_power_law(np.concatenate([lam, low]), method="hill")  # Hill itself moves: its xmin is a rank
    assert moved.xmin <= h.xmin


@SETTINGS
@given(lam=spectra_st, k=st.integers(1, 60), seed=st.integers(0, 2**32 - 1), min_tail=st.integers(5, 25))
def test_csn_scan_stable_to_values_below_xmin(lam, k, seed, min_tail):
    a = fit_power_law(lam, min_tail=min_tail, threshold=0)
    assume(a.ok)
    low = np.random.default_rng(seed).uniform(0.01, 0.999, k) * a.xmin
    b = fit_power_law(np.concatenate([lam, low]), min_tail=min_tail, threshold=0)
    assert b.ok
    assert b.D <= a.D + 1e-12
    if b.xmin == a.xmin:
        assert b.alpha == pytest.approx(a.alpha, rel=1e-12) and b.n_tail == a.n_tail
    else:
        assert b.xmin < a.xmin  # a new, lower candidate with a strictly better (or tied, earlier) D


shapes = st.tuples(st.integers(1, 12), st.integers(1, 12))


@SETTINGS
@given(shape=shapes, seed=st.integers(0, 2**32 - 1), method=st.sampled_from(["auto", "eigh", "svd"]))
def test_esd_invariant_to_transpose_and_rotation(shape, seed, method):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal(shape) * rng.uniform(0.01, 100)
    if rng.random() < 0.3:  # low rank as well
        r = int(rng.integers(1, min(shape) + 1))
        W = rng.standard_normal((shape[0], r)) @ rng.standard_normal((r, shape[1]))
    Q = np.linalg.qr(rng.standard_normal((shape[0], shape[0])))[0]
    R = np.linalg.qr(rng.standard_normal((shape[1], shape[1])))[0]
    lam = esd(W, method=method)
    scale = max(float(lam.max()), 1e-300)
    np.testing.assert_allclose(esd(W.T, method=method), lam, rtol=0, atol=1e-12 * scale)
    np.testing.assert_allclose(esd(Q @ W @ R, method=method), lam, rtol=0, atol=1e-11 * scale)
    ref = np.sort(np.linalg.svd(W, compute_uv=False) ** 2)
    np.testing.assert_allclose(lam, ref, rtol=0, atol=1e-11 * scale)


finite_or_not = st.floats(allow_nan=True, allow_infinity=True, width=64)


@SETTINGS
@given(vals=st.lists(finite_or_not, min_size=0, max_size=80), method=methods)
def test_fit_outputs_finite_or_status_says_why(vals, method):
    fit = fit_power_law(np.array(vals, dtype=np.float64), method=method)
    assert fit.status in ("ok", "warn", "failed", "skipped")
    if fit.ok:
        assert all(math.isfinite(getattr(fit, f)) for f in ("alpha", "xmin", "xmax", "D", "sigma"))
        assert fit.alpha > 1 or fit.method == "ww"
        assert fit.n_tail >= 1 and (fit.status == "ok") == (fit.message == "")
    else:
        assert fit.message and math.isnan(fit.alpha)


@SETTINGS
@given(W=arrays(np.float64, shapes, elements=st.floats(allow_nan=True, allow_infinity=True, width=64)))
def test_esd_and_norms_finite_or_clear_error(W):
    try:
        lam = esd(W)
    except ValueError as exc:
        if "underflow float64" in str(exc):  # refused only when max|w|² is below the smallest normal float64
            # compare |w| with √tiny: squaring a 1e-197 entry in the check itself would underflow to 0
            assert np.isfinite(W).all() and 0 < np.abs(W).max() < np.sqrt(np.finfo(np.float64).tiny)
            return
        assert "non-finite" in str(exc) or "overflow float64" in str(exc)
        assert (not np.isfinite(W).all()) or "overflow" in str(exc)
        return
    assert lam.shape == (min(W.shape),) and np.isfinite(lam).all() and (lam >= 0).all()
    m = norm_metrics(lam, N=max(W.shape))
    for k, v in m.items():  # finite, or -inf / NaN exactly when the matrix is zero (documented)
        assert math.isfinite(v) or (lam.max() == 0 and k in ("log_norm", "log_spectral_norm", "stable_rank")), k


# ---------------------------------------------------------------------------------------------- shape metrics
SHAPE_METRICS = ("alpha", "alpha_hill", "D", "n_tail", "stable_rank", "matrix_rank", "num_spikes", "mp_softrank",
                 "entropy")


def _shape_rows(W: torch.Tensor, **kw) -> dict[str, tuple[float, str]]:
    import warnings

    import spectra

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        df = spectra.analyze({"w.weight": W}, **kw).to_pandas()
    df = df[df["metric"].isin(SHAPE_METRICS)]
    return {m: (float(v), s) for m, v, s in zip(df["metric"], df["value"], df["status"])}


def _same(a: dict, b: dict, rtol: float = 1e-7) -> None:
    assert a.keys() == b.keys()
    for m in a:
        (va, sa), (vb, sb) = a[m], b[m]
        assert sa == sb, (m, sa, sb)
        assert (math.isnan(va) and math.isnan(vb)) or math.isclose(va, vb, rel_tol=rtol, abs_tol=1e-12), (m, va, vb)


matrices = st.builds(
    lambda seed, n, m, tail: torch.from_numpy(
        np.random.default_rng(seed).standard_t(tail, size=(n, m))), st.integers(0, 2**31), st.integers(24, 60),
    st.integers(12, 40), st.sampled_from([2.5, 4.0, 50.0]))


@SETTINGS
@given(matrices, st.floats(-1.5, 1.5))
def test_shape_metrics_invariant_to_scaling_the_matrix(W, log10c):
    """W → cW multiplies every eigenvalue by c²: no shape metric moves. (The csn fit's default threshold, 1e-5,
    is absolute — WeightWatcher's convention — so the scales drawn keep every eigenvalue of these matrices
    above it; ``normalize`` below shows the threshold following the eigenvalues when they are rescaled by us.)"""
    assume(float(torch.linalg.matrix_norm(W, -2)) ** 2 * 10 ** (2 * log10c) > 1e-4)
    _same(_shape_rows(W), _shape_rows(W * 10**log10c))


@SETTINGS
@given(matrices, st.integers(0, 2**31))
def test_shape_metrics_invariant_to_normalize_transpose_and_rotation(W, seed):
    base = _shape_rows(W)
    _same(base, _shape_rows(W, normalize=True))
    _same(base, _shape_rows(W.T.contiguous()))
    q, _ = torch.linalg.qr(torch.from_numpy(np.random.default_rng(seed).standard_normal((W.shape[0],) * 2)))
    _same(base, _shape_rows(q @ W), rtol=1e-6)


@SETTINGS
@given(st.integers(0, 2**31), st.integers(1, 6), st.sampled_from([torch.float32, torch.float64]))
def test_rank_deficient_family_never_reports_noise_as_signal(seed, rank, dtype):
    g = torch.Generator().manual_seed(seed)
    W = (torch.randn(48, rank, generator=g, dtype=dtype) @ torch.randn(rank, 40, generator=g, dtype=dtype))
    rows = _shape_rows(W)
    assert rows["matrix_rank"][0] == rank and rows["num_spikes"][0] == rank
    assert rows["alpha_hill"][1] == "failed"  # its median eigenvalue is rounding noise
