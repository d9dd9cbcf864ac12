"""Fault matrix, round two: numbers marked "ok" that were not. A value is ``ok`` only when it is finite and
its estimator's preconditions hold; otherwise the row says ``warn``/``failed`` and why."""

from __future__ import annotations

import math

import numpy as np
import torch

import spectra
from spectra.functional import fit_power_law

from .matrix import ENTRY_ANALYZE, ENTRY_FUNCTIONAL, case


def _rows(sd, **kw):
    return spectra.analyze(sd, **kw).to_pandas().set_index("metric")


@case("an orthogonal layer (all singular values 1 up to float32 rounding)", ENTRY_ANALYZE,
      "`alpha` and `alpha_hill` are `failed` ('the tail eigenvalues differ only by rounding'), never 2.6e6 'ok'")
def _(tmp):
    torch.manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(300, 300))
    df = _rows({"q.weight": q})
    for metric in ("alpha", "alpha_hill"):
        assert df.loc[metric, "status"] == "failed" and math.isnan(df.loc[metric, "value"])
        assert "differ only by rounding" in df.loc[metric, "message"]


@case("a rank-8 float32 layer of 64 x 64 (the median eigenvalue is rounding noise)", ENTRY_ANALYZE,
      "`alpha_hill` is `failed` ('xmin ... at the numerical noise floor'), not 1.05 'ok'")
def _(tmp):
    g = torch.Generator().manual_seed(1)
    w = torch.randn(64, 8, generator=g) @ torch.randn(8, 64, generator=g)
    df = _rows({"r.weight": w})
    assert df.loc["alpha_hill", "status"] == "failed" and "noise floor" in df.loc["alpha_hill", "message"]


@case("a layer whose sum of lambda^alpha overflows float64", ENTRY_ANALYZE,
      "`log_alpha_norm` is NaN with `status=warn` and 'overflows float64', never +inf 'ok'")
def _(tmp):
    g = torch.Generator().manual_seed(2)
    w = torch.randn(200, 100, generator=g, dtype=torch.float64) * 1e80  # lambda ~ 1e162, lambda^alpha > 1e308
    df = _rows({"w.weight": w})
    assert df.loc["alpha", "status"] == "ok"
    assert df.loc["log_alpha_norm", "status"] == "warn" and "overflows float64" in df.loc["log_alpha_norm", "message"]


@case("normalize=True", ENTRY_ANALYZE,
      "the csn alpha, its xmin rank and alpha_hill are unchanged (the default threshold scales with the "
      "eigenvalues); xmin and lambda_max scale by 1/N")
def _(tmp):
    g = torch.Generator().manual_seed(3)
    w = torch.randn(400, 200, generator=g) ** 3  # heavy-tailed entries
    a, b = _rows({"w.weight": w}), _rows({"w.weight": w}, normalize=True)
    for metric in ("alpha", "alpha_hill", "n_tail", "D"):
        assert np.isclose(a.loc[metric, "value"], b.loc[metric, "value"], rtol=1e-9), metric
    assert np.isclose(a.loc["xmin", "value"] / 400, b.loc["xmin", "value"], rtol=1e-9)


@case("fit_power_law with resolution= / noise_floor= on degenerate tails", ENTRY_FUNCTIONAL,
      "`failed` with the reason when the tail is rounding noise or starts at the noise floor; a genuine power "
      "law is unaffected (bit-identical fit)")
def _(tmp):
    rng = np.random.default_rng(4)
    flat = 1.0 + rng.normal(0, 1e-9, 500)
    assert fit_power_law(flat, method="hill").status == "ok"  # without the guard: a meaningless huge alpha
    f = fit_power_law(flat, method="hill", resolution=16 * 2.2e-16 * 1e6)
    assert f.status == "failed" and "rounding" in f.message
    pl = (1 - rng.random(800)) ** (-1 / 1.5)
    plain, guarded = fit_power_law(pl), fit_power_law(pl, resolution=1e-6, noise_floor=1e-9)
    assert plain == guarded
    noisy = np.concatenate([np.full(600, 1e-20) + rng.random(600) * 1e-21, pl[:50]])
    g = fit_power_law(noisy, method="hill", noise_floor=1e-12)
    assert g.status == "failed" and "noise floor" in g.message


@case("a rank-1 layer and a float32 rank-8 layer of 64 x 64", ENTRY_ANALYZE,
      "`num_spikes` = 1 and `matrix_rank` = 1 / 8 (eigenvalues at the dtype's rounding-noise floor count as "
      "zero), not 9 spikes and rank 64")
def _(tmp):
    g = torch.Generator().manual_seed(5)
    r1 = torch.randn(20, 1, generator=g) @ torch.randn(1, 30, generator=g)
    r8 = torch.randn(64, 8, generator=g) @ torch.randn(8, 64, generator=g)
    df = spectra.analyze({"r1.weight": r1, "r8.weight": r8}).to_pandas()
    got = df.pivot_table(index="layer", columns="metric", values="value", aggfunc="first")
    assert got.loc["r1", "num_spikes"] == 1 and got.loc["r1", "matrix_rank"] == 1
    assert got.loc["r8", "matrix_rank"] == 8 == np.linalg.matrix_rank(r8.numpy())
    assert got.loc["r8", "num_spikes"] == 8


@case("a tiny but finite matrix (|w| ~ 1e-170)", ENTRY_FUNCTIONAL,
      "ValueError: 'the eigenvalues of WᵀW underflow float64 ... rescale W first', never all zeros silently")
def _(tmp):
    import pytest

    from spectra.functional import esd

    w = np.random.default_rng(6).standard_normal((30, 20)) * 1e-170
    with pytest.raises(ValueError, match="underflow float64"):
        esd(w)
    assert esd(w * 1e160)[-1] > 0  # the same matrix rescaled is fine
