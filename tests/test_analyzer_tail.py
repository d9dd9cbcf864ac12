"""The tail analyzer's opt-in tests: likelihood ratios (compare=True) and the bootstrap p-value (bootstrap=N)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spectra.analyzers._seeding import layer_seed
from spectra.analyzers.tail import TailAnalyzer
from spectra.functional.bootstrap import bootstrap_pvalue
from spectra.functional.distributions import compare_distributions
from spectra.functional.powerlaw import fit_power_law
from spectra.snapshot import LayerState

NEW = {"llr_exponential", "p_exponential", "llr_lognormal", "p_lognormal", "llr_tpl", "p_tpl", "tpl_alpha",
       "tpl_lambda", "pl_pvalue"}


def _state(W, layer="fc", step=0):
    return LayerState(layer=layer, view="W", step=step, tensors={"weight": W})


def _rows(an, st):
    return {m.metric: m for m in an.analyze(st)}


def test_defaults_unchanged():
    W = np.random.default_rng(0).standard_t(3, (200, 100))
    rows = _rows(TailAnalyzer(), _state(W))
    assert not NEW & set(rows)
    assert "compare" not in TailAnalyzer().config() and "bootstrap" not in TailAnalyzer().config()


def test_compare_and_bootstrap_rows_equal_the_functions():
    W = np.random.default_rng(1).standard_t(2.5, (300, 150))
    st = _state(W, layer="enc.0")
    an = TailAnalyzer(compare=True, bootstrap=120, seed=3)
    rows = _rows(an, st)
    lam = st.evals("weight")
    fit = fit_power_law(lam)
    cmp = compare_distributions(lam, fit.xmin)
    for metric, field in (("llr_exponential", "llr_exponential"), ("p_lognormal", "p_lognormal"),
                          ("llr_tpl", "llr_tpl"), ("tpl_alpha", "tpl_alpha"), ("tpl_lambda", "tpl_lambda")):
        assert rows[metric].value == pytest.approx(getattr(cmp, field), rel=1e-12, abs=0)
        assert rows[metric].status == cmp.status
    ref = bootstrap_pvalue(lam, 120, seed=layer_seed(3, st))
    assert rows["pl_pvalue"].value == ref.pvalue and rows["pl_pvalue"].status == "ok"
    # seeded: the same layer gives the same p-value; another layer name, another stream
    assert _rows(an, _state(W, layer="enc.0"))["pl_pvalue"].value == ref.pvalue
    assert layer_seed(3, _state(W, layer="enc.0")).entropy == layer_seed(3, st).entropy
    assert layer_seed(3, _state(W, layer="enc.1")).entropy != layer_seed(3, st).entropy
    assert layer_seed(3, _state(W, layer="enc.0", step=5)).entropy != layer_seed(3, st).entropy
    assert an.config()["bootstrap"] == 120 and an.config()["seed"] == 3 and an.config()["compare"] is True


def test_hill_method_bootstraps_hill_and_ww_is_skipped():
    W = np.random.default_rng(2).standard_t(3, (200, 100))
    rows = _rows(TailAnalyzer(method="hill", bootstrap=50, compare=True), _state(W))
    assert rows["pl_pvalue"].status == "warn" and 0 <= rows["pl_pvalue"].value <= 1  # 50 < 100 replicates
    assert rows["llr_exponential"].status in ("ok", "warn")
    ww = _rows(TailAnalyzer(method="ww", bootstrap=50), _state(W))
    assert ww["pl_pvalue"].status == "skipped" and math.isnan(ww["pl_pvalue"].value) and "ww" in ww["pl_pvalue"].message


@pytest.mark.parametrize("W", [np.ones((6, 4)), np.zeros((30, 20)), np.random.default_rng(3).standard_normal((5, 3))],
                         ids=["constant", "zero", "tiny"])
def test_degenerate_matrices_give_status_rows(W):
    rows = _rows(TailAnalyzer(compare=True, bootstrap=30), _state(W))
    for metric in NEW:
        assert rows[metric].status in ("skipped", "failed") and rows[metric].message
        assert math.isnan(rows[metric].value)


def test_mp_spectrum_is_rejected():
    W = np.random.default_rng(4).standard_normal((1600, 800))
    rows = _rows(TailAnalyzer(compare=True, bootstrap=100), _state(W))
    assert rows["pl_pvalue"].value <= 0.05 and "rejected" in rows["pl_pvalue"].message
    assert rows["llr_exponential"].value < 0  # an MP edge decays faster than a power law


@pytest.mark.parametrize("opts", [{"bootstrap": -1}, {"bootstrap": True}, {"seed": -2}, {"seed": 1.5}])
def test_bad_options(opts):
    with pytest.raises(ValueError):
        TailAnalyzer(**opts)


def test_tail_tests_figure(tmp_path):
    import torch

    import spectra
    from spectra.plot import plot_tail_tests

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(200, 400), torch.nn.Linear(3, 2))
    res = spectra.analyze(model, analyzers=["tail"], analyzer_options={"tail": {"compare": True, "bootstrap": 40}})
    fig = plot_tail_tests(res, path=tmp_path / "tests.png")
    assert len(fig.axes) == 2 and (tmp_path / "tests.png").stat().st_size > 5000
    ax_r, ax_p = fig.axes
    assert ax_p.get_yscale() == "log" and [t.get_text() for t in ax_p.get_xticklabels()] == ["0", "1"]
    with pytest.raises(ValueError, match="llr_exponential"):
        plot_tail_tests(spectra.analyze(model, analyzers=["tail"]))


def test_figures_import_matplotlib_lazily():
    import subprocess
    import sys

    code = "import sys, spectra.plot.estimators; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr
