"""The randomize analyzer: seeded per layer, same numbers as the functional null, status rows when degenerate."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import spectra
from spectra.analyzers._seeding import layer_seed
from spectra.analyzers.randomize import RandomizeAnalyzer
from spectra.functional.randomize import randomized_esd
from spectra.snapshot import LayerState


def _state(W, layer="fc", **kw):
    return LayerState(layer=layer, view="W", step=0, tensors={"weight": W}, **kw)


def _rows(an, st):
    return {(m.metric, m.index): m for m in an.analyze(st)}


def test_rows_equal_the_function_with_the_layer_seed():
    W = np.random.default_rng(0).standard_normal((120, 60))
    W[3, 4] = 25.0  # one trap
    st = _state(W)
    rows = _rows(RandomizeAnalyzer(seed=4, spectrum=True), st)
    ref = randomized_esd(W, np.random.default_rng(layer_seed(4, st)), evals=st.evals("weight"))
    assert rows[("rand_lambda_max", None)].value == ref.rand_lambda_max
    assert rows[("rand_distance", None)].value == ref.rand_distance
    assert rows[("rand_num_spikes", None)].value == ref.rand_num_spikes == 1
    assert rows[("ww_softrank", None)].value == ref.ww_softrank
    spec = [rows[("rand_eigenvalue", i)].value for i in range(60)]
    np.testing.assert_array_equal(spec, ref.rand_evals)
    # reproducible, and a different layer gets a different permutation
    again = _rows(RandomizeAnalyzer(seed=4), _state(W))
    other = _rows(RandomizeAnalyzer(seed=4), _state(W, layer="fc2"))
    assert again[("rand_lambda_max", None)].value == ref.rand_lambda_max
    assert other[("rand_lambda_max", None)].value != ref.rand_lambda_max


def test_normalize_and_conv_scale_keep_the_units_of_the_view():
    W = np.random.default_rng(1).standard_normal((100, 50))
    plain = _rows(RandomizeAnalyzer(), _state(W))
    norm = _rows(RandomizeAnalyzer(), _state(W, normalize=True))
    assert norm[("rand_lambda_max", None)].value == pytest.approx(plain[("rand_lambda_max", None)].value / 100)
    assert norm[("ww_softrank", None)].value == pytest.approx(plain[("ww_softrank", None)].value)
    torch.manual_seed(0)
    df = spectra.analyze(torch.nn.Sequential(torch.nn.Conv2d(16, 32, 3)), analyzers=["esd", "randomize"]).to_pandas()
    lmax = df[df.metric == "lambda_max"].value.iloc[0]
    rmax = df[df.metric == "rand_lambda_max"].value.iloc[0]
    assert 0.5 < rmax / lmax < 2.0  # both in the pooled, x1/2 convention


@pytest.mark.parametrize("W,why", [(np.zeros((20, 10)), "zero"), (np.ones((20, 10)), "median 0"),
                                   (np.random.default_rng(2).standard_normal((8, 1)), "one row or column")])
def test_degenerate_matrices(W, why):
    rows = _rows(RandomizeAnalyzer(), _state(W))
    assert rows[("rand_num_spikes", None)].status == "skipped" and why in rows[("rand_num_spikes", None)].message
    assert math.isnan(rows[("rand_num_spikes", None)].value) and math.isnan(rows[("rand_bulk_max", None)].value)


def test_unseeded_runs_and_bad_options():
    W = np.random.default_rng(3).standard_normal((30, 20))
    assert _rows(RandomizeAnalyzer(seed=None), _state(W))[("rand_lambda_max", None)].status == "ok"
    for opts in ({"seed": -1}, {"seed": "x"}, {"distance": "kl"}):
        with pytest.raises(ValueError):
            RandomizeAnalyzer(**opts)


def test_shuffled_esd_figure(tmp_path):
    from spectra.plot import plot_shuffled_esd

    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Linear(80, 160))
    res = spectra.analyze(model, analyzers=["esd", "randomize"],
                          analyzer_options={"esd": {"spectrum": True}, "randomize": {"spectrum": True}})
    fig = plot_shuffled_esd(res, layer="0", path=tmp_path / "null.png")
    assert (tmp_path / "null.png").stat().st_size > 5000
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any("shuffled" in s for s in labels) and any("MP edge" in s for s in labels)
    W = np.random.default_rng(0).standard_normal((60, 30))
    ref = randomized_esd(W, 0)
    fig = plot_shuffled_esd(np.linalg.svd(W, compute_uv=False) ** 2, ref.rand_evals, rand_bulk_max=ref.rand_bulk_max)
    assert len(fig.axes) == 1
    with pytest.raises(ValueError, match="spectrum=True"):
        plot_shuffled_esd(spectra.analyze(model, analyzers=["esd", "randomize"]), layer="0")
