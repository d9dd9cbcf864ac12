"""The vectors analyzer: top-k singular-vector localization of weights, and of updates in the monitor."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import spectra
from spectra.analyzers.vectors import VectorsAnalyzer
from spectra.functional.vectors import vector_localization
from spectra.snapshot import LayerState


def _rows(an, st):
    out: dict = {}
    for m in an.analyze(st):
        out.setdefault((m.matrix, m.metric), {})[m.index] = m
    return out


def test_weight_rows_equal_the_function():
    W = np.random.default_rng(0).standard_normal((80, 40)) @ np.diag(np.linspace(1, 2, 40))
    st = LayerState(layer="fc", view="W", step=0, tensors={"weight": W})
    rows = _rows(VectorsAnalyzer(k=5), st)
    U, S, Vh = np.linalg.svd(W, full_matrices=False)
    ref = vector_localization(U[:, :5], Vh[:5])
    for metric in ("participation_ratio", "localization_ratio"):
        got = [rows[("weight", metric)][i].value for i in range(5)]
        np.testing.assert_allclose(got, ref[metric], rtol=1e-8)


def test_clamp_rank_deficient_and_zero():
    rng = np.random.default_rng(1)
    low = rng.standard_normal((30, 2)) @ rng.standard_normal((2, 20))  # rank 2
    rows = _rows(VectorsAnalyzer(k=25), LayerState(layer="a", view="W", step=0, tensors={"weight": low}))
    pr = rows[("weight", "participation_ratio")]
    assert sorted(pr) == list(range(20)) and "clamped" in pr[0].message
    assert pr[0].status == pr[1].status == "ok"
    assert all(pr[i].status == "skipped" and math.isnan(pr[i].value) for i in range(2, 20))
    zero = _rows(VectorsAnalyzer(k=3), LayerState(layer="z", view="W", step=0, tensors={"weight": np.zeros((6, 4))}))
    assert all(m.status == "skipped" for m in zero[("weight", "localization_ratio")].values())


def test_updates_in_the_monitor():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(20, 30), torch.nn.ReLU(), torch.nn.Linear(30, 5))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with spectra.SpectraMonitor(model, opt, every=1, analyzers=["vectors"],
                                analyzer_options={"vectors": {"k": 3, "matrices": ("weight", "update")}}) as mon:
        for _ in range(2):
            opt.zero_grad()
            model(torch.randn(16, 20)).pow(2).mean().backward()
            opt.step()
    df = mon.to_pandas()
    upd = df[df.matrix == "update"]
    assert set(upd.step) == {1, 2} and set(upd.metric) == {"participation_ratio", "localization_ratio"}
    assert set(upd["index"].astype(int)) == {0, 1, 2} and (upd.status == "ok").all()
    assert set(df[df.matrix == "weight"].step) >= {1, 2}


def test_offline_analyze_gives_weight_rows():
    torch.manual_seed(1)
    df = spectra.analyze(torch.nn.Linear(50, 40), analyzers=["vectors"]).to_pandas()
    assert set(df.matrix) == {"weight"} and len(df) == 2 * 10


@pytest.mark.parametrize("opts", [{"k": 0}, {"k": True}, {"side": "up"}, {"matrices": ()}])
def test_bad_options(opts):
    with pytest.raises(ValueError):
        VectorsAnalyzer(**opts)
