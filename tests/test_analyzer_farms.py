"""The farms analyzer: FARMS α per view, registered as a plugin, reported beside the plain α."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import spectra
from spectra.analyzers.farms import FarmsAnalyzer
from spectra.functional.farms import farms_alpha
from spectra.plugins import analyzer_registry
from spectra.snapshot import LayerState


def test_registered_with_the_other_new_analyzers(pm):
    reg = analyzer_registry(pm)
    assert {"farms", "randomize", "vectors"} <= set(reg)
    assert reg["farms"] is FarmsAnalyzer


def test_rows_equal_the_function():
    W = np.random.default_rng(0).standard_normal((400, 250))
    st = LayerState(layer="fc", view="W", step=0, tensors={"weight": W})
    rows = {m.metric: m for m in FarmsAnalyzer().analyze(st)}
    fit, pooled = farms_alpha(W)
    assert rows["alpha_farms"].value == fit.alpha and rows["alpha_farms"].status == fit.status
    assert rows["farms_num_windows"].value == pooled.n_windows == 100


def test_reported_beside_plain_alpha_and_flat_across_aspect_ratios():
    torch.manual_seed(0)
    M = 200
    model = torch.nn.ModuleDict({f"q{Q}": torch.nn.Linear(M, Q * M, bias=False) for Q in (1, 2, 4, 8)})
    wide = spectra.analyze(model, analyzers=["tail", "farms"]).to_wide()
    assert {"alpha", "alpha_hill", "alpha_farms"} <= set(wide.columns)
    wide = wide.set_index("layer").loc[[f"q{Q}" for Q in (1, 2, 4, 8)]]
    farms, hill = wide["alpha_farms"].to_numpy(float), wide["alpha_hill"].to_numpy(float)
    assert farms.max() - farms.min() < 0.15  # random init: the same noise at every Q
    assert hill[-1] - hill[0] > 1.5  # the whole-matrix estimate drifts with Q


def test_conv_and_tiny_layers():
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Conv2d(64, 64, 3), torch.nn.Linear(4, 3))
    df = spectra.analyze(model, analyzers=["farms"]).to_pandas()
    conv = df[(df.layer == "0") & (df.metric == "alpha_farms")].iloc[0]
    assert conv.status in ("ok", "warn") and 1 < conv.value < 10 and "32x64" in conv.message
    tiny = df[(df.layer == "1") & (df.metric == "alpha_farms")].iloc[0]
    assert tiny.status == "skipped" and math.isnan(tiny.value) and "too small" in tiny.message


@pytest.mark.parametrize("opts", [{"q": 0.5}, {"window": 1}, {"method": "mle"}, {"matrices": ("bias",)}])
def test_bad_options(opts):
    with pytest.raises(ValueError):
        FarmsAnalyzer(**opts)


def test_farms_figure(tmp_path):
    from spectra.plot import plot_farms_alpha

    torch.manual_seed(2)
    model = torch.nn.Sequential(torch.nn.Linear(200, 200), torch.nn.Linear(200, 800), torch.nn.Linear(3, 2))
    res = spectra.analyze(model, analyzers=["tail", "farms"])
    fig = plot_farms_alpha(res, path=tmp_path / "farms.png")
    assert len(fig.axes) == 2 and (tmp_path / "farms.png").stat().st_size > 5000
    labels = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert "α FARMS" not in labels and "α Hill-median" in labels
    with pytest.raises(ValueError, match="alpha_farms"):
        plot_farms_alpha(spectra.analyze(model, analyzers=["tail"]))
