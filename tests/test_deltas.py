"""Deltas against a base: ``spectra.analyze(model, base=...)`` gives rows about ΔW = W − W_base (``matrix="delta"``).

Brute force: the delta rows of esd/tail equal those of ``analyze`` on a state_dict holding ΔW itself; the
alignment rows equal the alignment analyzer on a hand-built snapshot (W_{t−1} = W_base), and its subspace
fraction a direct numpy computation; LoRA deltas equal scaling·B·A computed by hand.
"""

from __future__ import annotations

import copy
import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import spectra
from spectra.analyzers.alignment import AlignmentAnalyzer
from spectra.pipeline import Settings
from spectra.pipeline.settings import DELTA_ANALYZERS
from spectra.snapshot import LayerState

_KEY = ["layer", "view", "analyzer", "metric", "index"]


def _pair(seed=0, scale=0.05):
    torch.manual_seed(seed)
    base = nn.Sequential(nn.Linear(30, 40), nn.Tanh(), nn.Linear(40, 20))
    tuned = copy.deepcopy(base)
    with torch.no_grad():
        for p in tuned.parameters():
            p.add_(scale * torch.randn_like(p))
    return base, tuned


def _deltas(base, tuned):
    b = dict(base.named_parameters())
    return {n: (p.detach().double() - b[n].detach().double()) for n, p in tuned.named_parameters() if p.dim() == 2}


def _rows(df, **eq):
    for k, v in eq.items():
        df = df[df[k] == v]
    return df.sort_values(_KEY).reset_index(drop=True)


# ---------------------------------------------------------------------------------------------- full fine-tuning
def test_delta_esd_and_tail_equal_the_analysis_of_delta_w_itself():
    base, tuned = _pair()
    res = spectra.analyze(tuned, base=base, analyzer_options={"esd": {"spectrum": True}})
    df = res.to_pandas()
    assert set(df.matrix) == {"weight", "delta"}
    ref = spectra.analyze(_deltas(base, tuned), analyzer_options={"esd": {"spectrum": True}}).to_pandas()
    got = _rows(df[df.analyzer.isin(["esd", "tail"])], matrix="delta").drop(columns="matrix")
    want = _rows(ref, matrix="weight").drop(columns="matrix").assign(run="analyze")
    pd.testing.assert_frame_equal(got[_KEY + ["status", "message"]], want[_KEY + ["status", "message"]])
    np.testing.assert_allclose(got["value"], want["value"], rtol=1e-9, atol=1e-12)
    lam = np.linalg.eigvalsh(_deltas(base, tuned)["0.weight"].numpy().T @ _deltas(base, tuned)["0.weight"].numpy())
    np.testing.assert_allclose(res.spectra("0", matrix="delta")[0], np.sort(lam), rtol=1e-9, atol=1e-12)


def test_delta_alignment_is_a_monitor_step_from_the_base():
    base, tuned = _pair()
    df = spectra.analyze(tuned, base=base).to_pandas()
    assert set(df.analyzer) == set(DELTA_ANALYZERS)
    W, Wb = tuned[0].weight.detach(), base[0].weight.detach().double()
    st = LayerState(layer="0", view="W", step=0, tensors={"weight": W, "previous": Wb, "update": W.double() - Wb})
    want = {(m.metric, m.index): m.value for m in AlignmentAnalyzer().analyze(st)}
    assert {m.matrix for m in AlignmentAnalyzer().analyze(st)} == {"update"}
    got = _rows(df, layer="0", analyzer="alignment")
    assert set(got.matrix) == {"delta"} and len(got) == len(want)
    for r in got.itertuples():
        idx = None if pd.isna(r.index) else int(r.index)
        assert r.value == pytest.approx(want[(r.metric, idx)], rel=1e-9, abs=1e-12), r.metric
    # brute force: the share of dW inside W_base's top-10 singular subspaces
    X = (W.double() - Wb).numpy()
    U, _, Vh = np.linalg.svd(Wb.numpy())
    frac = np.linalg.norm(U[:, :10].T @ X @ Vh[:10].T) ** 2 / np.linalg.norm(X) ** 2
    assert got[got.metric == "subspace_fraction_before"]["value"].item() == pytest.approx(frac, rel=1e-9)
    rel = got[got.metric == "relative_norm"]["value"].item()
    assert rel == pytest.approx(np.linalg.norm(X) / np.linalg.norm(Wb.numpy()), rel=1e-12)


def test_weight_rows_are_those_without_a_base():
    base, tuned = _pair()
    with_base = spectra.analyze(tuned, base=base).to_pandas()
    alone = spectra.analyze(tuned).to_pandas()
    pd.testing.assert_frame_equal(_rows(with_base, matrix="weight"), _rows(alone, matrix="weight"))


def test_base_as_state_dict_or_checkpoint_gives_the_same_table(tmp_path):
    base, tuned = _pair()
    path = tmp_path / "base.pt"
    torch.save(base.state_dict(), path)
    a = spectra.analyze(tuned, base=base)
    b = spectra.analyze(tuned, base=base.state_dict())
    c = spectra.analyze(tuned, base=str(path))
    pd.testing.assert_frame_equal(a.to_pandas(), b.to_pandas())
    pd.testing.assert_frame_equal(a.to_pandas(), c.to_pandas())
    assert a.attrs["base"] == "module torch.nn.modules.container.Sequential (4 parameters)"
    assert b.attrs["base"] == "state_dict (4 tensors)" and c.attrs["base"] == f"checkpoint {path}"
    assert "W_base" in a.attrs["delta"] and "lora" not in a.attrs
    assert "base" not in spectra.analyze(tuned).attrs


def test_missing_layer_and_other_shape_give_status_rows_not_a_crash():
    base, tuned = _pair()
    sd = base.state_dict()
    del sd["2.weight"]
    sd["0.weight"] = sd["0.weight"][:, :10].clone()
    with pytest.warns(RuntimeWarning, match=r"layer '0' cannot be compared with the base: ValueError: parameter "
                                            r"'0.weight' has shape \(40, 30\), the base's '0.weight' \(40, 10\)"):
        df = spectra.analyze(tuned, base=sd).to_pandas()
    delta = df[df.matrix == "delta"]
    assert len(delta) == 2 and set(delta.analyzer) == {"base"}
    skipped = delta[delta.layer == "2"].iloc[0]
    assert (skipped.status, skipped.metric, skipped.message) == ("skipped", "delta",
                                                                 "the base has no parameter '2.weight'")
    failed = delta[delta.layer == "0"].iloc[0]
    assert failed.status == "failed" and failed.metric == "error" and "(40, 10)" in failed.message
    assert set(df[df.matrix == "weight"].layer) == {"0", "2"}  # the weights are still described
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        spectra.analyze(tuned, base=sd, on_error="ignore")


def test_unchanged_layers_give_status_rows():
    base, _ = _pair()
    df = spectra.analyze(base, base=copy.deepcopy(base)).to_pandas()
    delta = df[df.matrix == "delta"]
    assert set(delta.layer) == {"0", "2"} and "failed" not in set(delta[delta.analyzer != "tail"].status)
    for metric in ("subspace_fraction_before", "alpha", "mp_sigma2"):
        assert (delta.loc[delta.metric == metric, "status"] == "skipped").all(), metric
    assert (delta.loc[delta.metric == "relative_norm", "value"] == 0).all()


# ---------------------------------------------------------------------------------------------- settings
def test_base_is_an_analyze_option_only():
    base, tuned = _pair()
    opt = torch.optim.SGD(tuned.parameters(), lr=0.1)
    with pytest.raises(TypeError, match=r"base: only spectra.analyze compares a model with a base model"):
        spectra.SpectraMonitor(tuned, opt, base=base)
    with pytest.raises(TypeError, match=r"base: only spectra.analyze"):
        Settings.build("monitor", Settings.build("analyze", base=base))
    with pytest.raises(TypeError, match=r"base must be a torch.nn.Module, a state_dict \(mapping of names to "
                                        r"tensors\) or a path to a checkpoint, got int 3"):
        spectra.analyze(tuned, base=3)
    with pytest.raises(FileNotFoundError):
        spectra.analyze(tuned, base="/nonexistent/base.pt")
    assert Settings.build("analyze", base=base).analyzers == DELTA_ANALYZERS
    assert Settings.build("analyze", base=base, analyzers=["esd"]).analyzers == ("esd",)
    assert Settings.build("analyze").analyzers == ("esd", "tail")


def test_fingerprint_records_the_base():
    from spectra.pipeline import Pipeline

    base, tuned = _pair()
    p = Pipeline(Settings.build("analyze", base=base), tuned, source="analyze")
    fp = p.settings.fingerprint(analyzers=p.analyzers, entries=p.entries, mode="shard")
    assert fp["base"] == '"module torch.nn.modules.container.Sequential (4 parameters)"'
    q = Pipeline(Settings.build("analyze"), tuned, source="analyze")
    assert "base" not in q.settings.fingerprint(analyzers=q.analyzers, entries=q.entries, mode="shard")


# ---------------------------------------------------------------------------------------------- LoRA
class _LoraLinear(nn.Module):
    """Mimics peft >= 0.7: base_layer, lora_A/lora_B ModuleDicts by adapter, scaling per adapter."""

    def __init__(self, base: nn.Linear, r=3, alpha=6.0):
        super().__init__()
        self.base_layer = base
        self.lora_A = nn.ModuleDict({"default": nn.Linear(base.in_features, r, bias=False)})
        self.lora_B = nn.ModuleDict({"default": nn.Linear(r, base.out_features, bias=False)})
        self.scaling = {"default": alpha / r}
        nn.init.normal_(self.lora_B["default"].weight)

    def delta(self):
        B, A = self.lora_B["default"].weight.detach().double(), self.lora_A["default"].weight.detach().double()
        return (B @ A) * self.scaling["default"]


class _OldLora(nn.Linear):
    """Mimics early peft: the Linear itself, with lora_A/lora_B Linears and lora_alpha, r numbers."""

    def __init__(self, base: nn.Linear, r=2, alpha=8):
        super().__init__(base.in_features, base.out_features)
        self.load_state_dict(base.state_dict())
        self.lora_A = nn.Linear(base.in_features, r, bias=False)
        self.lora_B = nn.Linear(r, base.out_features, bias=False)
        self.lora_alpha, self.r = alpha, r
        nn.init.normal_(self.lora_B.weight)

    def delta(self):
        B, A = self.lora_B.weight.detach().double(), self.lora_A.weight.detach().double()
        return (B @ A) * (self.lora_alpha / self.r)


class _Wrapper(nn.Module):  # PeftModel's naming: base_model.model.<the model's names>
    def __init__(self, model):
        super().__init__()
        self.base_model = nn.Module()
        self.base_model.model = model


def _lora_pair():
    torch.manual_seed(3)
    base = nn.Sequential(nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 10), nn.Linear(10, 10))
    tuned = copy.deepcopy(base)
    tuned[0] = _LoraLinear(tuned[0])
    tuned[2] = _OldLora(tuned[2])
    return base, tuned


def test_lora_deltas_are_scaling_b_a_and_weights_are_merged():
    base, tuned = _lora_pair()
    res = spectra.analyze(_Wrapper(tuned), base=base, analyzer_options={"esd": {"spectrum": True}})
    df = res.to_pandas()
    for layer, mod, r in (("base_model.model.0.base_layer", tuned[0], 3), ("base_model.model.2", tuned[2], 2)):
        D = mod.delta().numpy()
        np.testing.assert_allclose(res.spectra(layer, matrix="delta")[0],
                                   np.sort(np.linalg.svd(D, compute_uv=False) ** 2), rtol=1e-9, atol=1e-12)
        rank = df[(df.layer == layer) & (df.matrix == "delta") & (df.metric == "matrix_rank")]["value"].item()
        assert rank == r  # exactly low rank: B·A, not a difference with rounding noise
        W0 = (mod.base_layer.weight if hasattr(mod, "base_layer") else mod.weight).detach().double().numpy()
        merged = np.linalg.eigvalsh((W0 + D).T @ (W0 + D)).max()
        lmax = df[(df.layer == layer) & (df.matrix == "weight") & (df.metric == "lambda_max")]["value"].item()
        assert lmax == pytest.approx(merged, rel=1e-9)
    lora = res.attrs["lora"]
    assert lora["base_model.model.0.base_layer.weight"] == {"adapters": ["default"], "rank": [3], "scaling": [2.0],
                                                            "scaling_from": "scaling"}
    assert lora["base_model.model.2.weight"]["scaling"] == [4.0]
    assert lora["base_model.model.2.weight"]["scaling_from"] == "lora_alpha/r"
    factors = df[df.layer.str.contains("lora_")]
    assert set(factors.matrix) == {"weight", "delta"}  # the factors keep their weight rows
    notes = factors[factors.matrix == "delta"]
    assert set(notes.status) == {"skipped"} and len(notes) == 4
    assert notes.message.str.contains("'base_model.model.0.base_layer.weight'").sum() == 2
    # the plain layer: an unchanged weight, a zero delta; alignment rows all present
    assert set(df[(df.layer == "base_model.model.3") & (df.matrix == "delta")].analyzer) == set(DELTA_ANALYZERS)


def test_lora_layer_the_base_lacks_is_compared_with_its_own_frozen_weight():
    base, tuned = _lora_pair()
    sd = {k: v for k, v in base.state_dict().items() if not k.startswith("0.")}
    df = spectra.analyze(tuned, base=sd, analyzers=["esd"]).to_pandas()
    got = df[(df.layer == "0.base_layer") & (df.matrix == "delta") & (df.metric == "lambda_max")]["value"].item()
    D = tuned[0].delta().numpy()
    assert got == pytest.approx(np.linalg.eigvalsh(D.T @ D).max(), rel=1e-9)


def test_lora_in_a_state_dict_uses_scaling_one():
    base, tuned = _lora_pair()
    res = spectra.analyze(tuned.state_dict(), base=base, analyzers=["esd"])
    a, b = tuned[0].lora_A["default"].weight.detach().double(), tuned[0].lora_B["default"].weight.detach().double()
    D = (b @ a).numpy()
    df = res.to_pandas()
    got = df[(df.layer == "0.base_layer") & (df.matrix == "delta") & (df.metric == "lambda_max")]["value"].item()
    assert got == pytest.approx(np.linalg.eigvalsh(D.T @ D).max(), rel=1e-9)
    assert res.attrs["lora"]["0.base_layer.weight"]["scaling_from"].startswith("default 1")


def test_bad_lora_factors_give_a_failed_delta_row():
    base, tuned = _lora_pair()
    with torch.no_grad():
        tuned[2].lora_B = nn.Linear(5, 10, bias=False)  # B's columns no longer match A's rows
    with pytest.warns(RuntimeWarning, match="are not 2-D matrices with B's columns = A's rows"):
        df = spectra.analyze(tuned, base=base, analyzers=["esd"]).to_pandas()
    row = df[(df.layer == "2") & (df.matrix == "delta")]
    assert list(row.status) == ["failed"] and set(df[(df.layer == "2")].matrix) == {"weight", "delta"}


# ---------------------------------------------------------------------------------------------- with other options
def test_deltas_per_attention_head():
    torch.manual_seed(0)
    base = nn.Sequential()
    base.add_module("attn", nn.MultiheadAttention(8, 2))
    tuned = copy.deepcopy(base)
    with torch.no_grad():
        tuned.attn.out_proj.weight.add_(0.1)
    df = spectra.analyze(tuned, base=base, layer_rules={"attention_heads": True}, analyzers=["esd"]).to_pandas()
    delta = df[(df.matrix == "delta") & (df.layer == "attn.out_proj") & (df.metric == "norm")]
    assert list(delta.view) == ["out.h0", "out.h1"]
    assert delta["value"].tolist() == pytest.approx([8 * 4 * 0.01] * 2, rel=1e-5)


def test_cli_base(tmp_path, capsys):
    from spectra.cli import main

    base, tuned = _pair()
    torch.save(base.state_dict(), tmp_path / "base.pt")
    torch.save(tuned.state_dict(), tmp_path / "tuned.pt")
    out = tmp_path / "t.parquet"
    assert main(["analyze", str(tmp_path / "tuned.pt"), "--base", str(tmp_path / "base.pt"), "-q",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "dW = W - W_base (checkpoint" in text and "delta_subspace_fraction_before" in text
    back = spectra.Results.read(out)
    assert "delta" in set(back.to_pandas().matrix) and back.attrs["base"].startswith("checkpoint")
    assert not math.isnan(back.to_pandas().query("matrix == 'delta' and metric == 'alpha'")["value"].iloc[0])


def test_embedding_adapters_are_transposed_and_dora_is_refused():
    torch.manual_seed(5)
    base = nn.Sequential(nn.Embedding(8, 8), nn.Linear(8, 8))
    tuned = copy.deepcopy(base)
    emb = nn.Module()
    emb.base_layer = tuned[0]
    emb.lora_embedding_A = nn.ParameterDict({"default": nn.Parameter(torch.randn(2, 8))})  # (r, num_embeddings)
    emb.lora_embedding_B = nn.ParameterDict({"default": nn.Parameter(torch.randn(8, 2))})  # (embedding_dim, r)
    emb.scaling = {"default": 0.5}
    tuned[0] = emb
    tuned[1] = _LoraLinear(tuned[1])
    tuned[1].lora_magnitude_vector = nn.ParameterDict({"default": nn.Parameter(torch.ones(8))})
    with pytest.warns(RuntimeWarning, match="DoRA"):
        df = spectra.analyze(tuned, base=base, analyzers=["alignment"]).to_pandas()
    B, A = emb.lora_embedding_B["default"].detach().double(), emb.lora_embedding_A["default"].detach().double()
    X = (0.5 * (B @ A)).T.numpy()  # peft's embedding delta: (B·A)ᵀ, in the (num_embeddings, dim) layout
    U, _, Vh = np.linalg.svd(base[0].weight.detach().double().numpy())
    fraction = [np.linalg.norm(U[:, :2].T @ Y @ Vh[:2].T) ** 2 / np.linalg.norm(Y) ** 2 for Y in (X, X.T)]
    assert abs(fraction[0] - fraction[1]) > 1e-3  # the layout matters: the test tells ΔW from ΔWᵀ
    df2 = spectra.analyze(tuned, base=base, analyzers=["alignment"], on_error="ignore",
                          analyzer_options={"alignment": {"k": 2}}).to_pandas()
    got = df2[(df2.layer == "0.base_layer") & (df2.metric == "subspace_fraction_before")]["value"].item()
    assert got == pytest.approx(fraction[0], rel=1e-9)
    dora = df[(df.layer == "1.base_layer") & (df.matrix == "delta")]
    assert list(dora.status) == ["failed"] and "merge the adapter" in dora.message.item()
