"""Optional needs: an analyzer that can do without an update runs at step 0 and offline, and still gets its
update (a copy of W_{t-1}) on due training steps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import spectra
from spectra.analyzers.base import Analyzer, Measurement
from spectra.analyzers.vectors import VectorsAnalyzer
from spectra.functional.vectors import vector_localization
from spectra.layers import discover_layers
from spectra.pipeline.capture import needs_of, take_copies
from spectra.pipeline.engine import runtime_needs
from spectra.plugins import get_plugin_manager


class _Norms(Analyzer):
    """Frobenius norms of whatever it finds: the weight always, the update when there is one."""

    name = "norms"
    needs = frozenset({"weight", "update"})
    optional_needs = frozenset({"update"})

    def analyze(self, layer):
        for kind in ("weight", "update"):
            if layer.has(kind):
                yield Measurement("fro", float(np.linalg.norm(layer.array(kind))), matrix=kind)


class _Strict(_Norms):
    name = "strict"
    optional_needs = frozenset()


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 9), nn.Tanh(), nn.Linear(9, 4))


def _train(model, analyzers, steps=2, **options):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    pm = get_plugin_manager(entrypoints=False)
    mon = spectra.SpectraMonitor(model, opt, every=1, analyzers=analyzers, plugin_manager=pm, **options)
    snapshots = [{n: p.detach().clone() for n, p in model.named_parameters()}]
    for _ in range(steps):
        opt.zero_grad()
        model(torch.randn(8, 6, generator=torch.Generator().manual_seed(len(snapshots)))).pow(2).mean().backward()
        opt.step()
        snapshots.append({n: p.detach().clone() for n, p in model.named_parameters()})
    mon.detach()
    return mon.to_pandas(), snapshots


# ---------------------------------------------------------------------------------------------- the contract
def test_runtime_needs_drop_optional_needs_and_grad():
    assert Analyzer.optional_needs == frozenset()
    assert runtime_needs(_Norms()) == {"weight"}
    assert runtime_needs(_Strict()) == {"weight", "update"}

    class Grad(Analyzer):
        needs = frozenset({"weight", "grad"})

    assert runtime_needs(Grad()) == {"weight"}  # grad is always optional


def test_optional_needs_are_still_copied_on_due_steps():
    model = _mlp()
    pm = get_plugin_manager(entrypoints=False)
    entries = [e for e in discover_layers(model, hook=pm.hook) if e.analyzed]
    assert needs_of([_Norms()]) == {"weight", "update"}
    copies = take_copies(entries, needs_of([_Norms()]))
    assert set(copies) == {id(e.param) for e in entries}
    assert all(set(c) == {"previous"} for c in copies.values())


def test_monitor_runs_an_optional_update_analyzer_from_step_0():
    df, snaps = _train(_mlp(), [_Norms(), _Strict()])
    norms, strict = df[df.analyzer == "norms"], df[df.analyzer == "strict"]
    assert sorted(norms[norms.matrix == "weight"].step.unique()) == [0, 1, 2]
    assert sorted(norms[norms.matrix == "update"].step.unique()) == [1, 2]
    assert sorted(strict.step.unique()) == [1, 2]  # a required update: nothing at step 0
    for step in (1, 2):  # the update rows are ΔW_t = W_t - W_{t-1}, computed here by hand
        row = norms[(norms.step == step) & (norms.matrix == "update") & (norms.layer == "0")]
        dW = (snaps[step]["0.weight"] - snaps[step - 1]["0.weight"]).double()
        assert row["value"].item() == pytest.approx(torch.linalg.norm(dW).item(), rel=1e-6)


def test_analyze_keeps_analyzers_whose_update_is_optional():
    model = _mlp()
    pm = get_plugin_manager(entrypoints=False)
    df = spectra.analyze(model, analyzers=[_Norms(), _Strict()], plugin_manager=pm).to_pandas()
    assert set(df.analyzer) == {"norms"} and set(df.matrix) == {"weight"}
    assert df.loc[df.layer == "2", "value"].item() == pytest.approx(torch.linalg.norm(model[2].weight).item())


# ---------------------------------------------------------------------------------------------- vectors
def test_vectors_with_updates_offline_equals_vectors_on_weights():
    model = _mlp()
    both = spectra.analyze(model, analyzers=["vectors"],
                           analyzer_options={"vectors": {"k": 3, "matrices": ("weight", "update")}}).to_pandas()
    weights = spectra.analyze(model, analyzers=["vectors"], analyzer_options={"vectors": {"k": 3}}).to_pandas()
    pd.testing.assert_frame_equal(both, weights)
    assert len(both) == 2 * 2 * 3
    an = VectorsAnalyzer(matrices=("weight", "update"))
    assert an.optional_needs == {"update"} and runtime_needs(an) == {"weight"}
    assert runtime_needs(VectorsAnalyzer(matrices=("update",))) == {"weight", "update"}


def test_vectors_in_the_monitor_weight_rows_at_step_0_update_rows_after():
    df, snaps = _train(_mlp(), ["vectors"], analyzer_options={"vectors": {"k": 2, "matrices": ("weight", "update")}})
    assert sorted(df[df.matrix == "weight"].step.unique()) == [0, 1, 2]
    assert sorted(df[df.matrix == "update"].step.unique()) == [1, 2]
    dW = (snaps[2]["0.weight"] - snaps[1]["0.weight"]).double().numpy()
    U, S, Vh = np.linalg.svd(dW, full_matrices=False)
    ref = vector_localization(U[:, :2], Vh[:2])["participation_ratio"]
    got = df[(df.step == 2) & (df.matrix == "update") & (df.layer == "0") & (df.metric == "participation_ratio")]
    np.testing.assert_allclose(got.sort_values("index")["value"], ref, rtol=1e-5)
