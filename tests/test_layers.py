"""Tests for spectra.layers: matrix views of every layer type, skip reasons, plugins, state_dicts, select."""

from __future__ import annotations

import re

import numpy as np
import pluggy
import pytest
import torch
from torch import nn

import spectra.hookspecs
from spectra import hookimpl
from spectra.functional import esd, esd_pooled
from spectra.layers import (
    GRU_GATES,
    LSTM_GATES,
    BuiltinLayerRules,
    LayerEntry,
    MatrixView,
    discover_layers,
    layers_table_rows,
)


def make_pm(**opts) -> pluggy.PluginManager:
    pm = pluggy.PluginManager("spectra")
    pm.add_hookspecs(spectra.hookspecs)
    pm.register(BuiltinLayerRules(**opts))
    return pm


@pytest.fixture
def pm():
    return make_pm()


def by_layer(entries: list[LayerEntry]) -> dict[str, LayerEntry]:
    return {e.layer: e for e in entries}


def same_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


class Conv1D(nn.Module):
    """HF GPT-2 style: y = x @ W + b with W stored (in, out)."""

    def __init__(self, nf: int, nx: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(nx, nf))
        self.bias = nn.Parameter(torch.zeros(nf))


class Odd(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.cube = nn.Parameter(torch.randn(4, 5, 6))
        self.pos = nn.Parameter(torch.randn(1, 10, 8))
        self.cls = nn.Parameter(torch.randn(1, 1, 8))
        self.col = nn.Parameter(torch.randn(7, 1))


def zoo() -> nn.Module:
    torch.manual_seed(0)
    m = nn.ModuleDict(
        {
            "fc": nn.Linear(8, 16),
            "conv": nn.Conv2d(3, 5, (3, 2)),
            "c1": nn.Conv1d(3, 4, 5),
            "c3": nn.Conv3d(2, 3, (2, 3, 4)),
            "emb": nn.Embedding(50, 8),
            "attn": nn.MultiheadAttention(8, 2, add_bias_kv=True),
            "lstm": nn.LSTM(4, 6, num_layers=2, bidirectional=True),
            "gru": nn.GRU(4, 5),
            "c1d": Conv1D(24, 8),
            "bn": nn.BatchNorm1d(4),
            "odd": Odd(),
        }
    )
    return m


# --------------------------------------------------------------------------------------------- layer types
def test_linear_view(pm):
    m = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    e = by_layer(discover_layers(m, hook=pm.hook))
    assert set(e) == {"0", "0.bias", "2", "2.bias"}
    (v,) = e["0"].views()
    assert v.name == "W" and v.eig_scale == 1.0
    assert torch.equal(v.tensor, m[0].weight) and same_storage(v.tensor, m[0].weight)
    assert e["0"].shapes[0][1:] == (16, 8, 2.0, 1)
    assert e["2"].shapes[0][1:] == (16, 3, 16 / 3, 1)
    assert e["0"].param is m[0].weight and e["0"].module is m[0]
    assert e["0.bias"].skip_reason == "1-D parameter (bias/norm)"
    assert e["0"].dtype == "float32" and e["0"].module_type == "Linear"


def brute_pooled_ww(W: np.ndarray) -> np.ndarray:
    """WeightWatcher pooled Conv convention: concatenated ½·σ² over every kernel-position slice W[:, :, pos]."""
    rf_shape = W.shape[2:]
    out = []
    for idx in np.ndindex(*rf_shape):
        s = np.linalg.svd(W[(slice(None), slice(None), *idx)], compute_uv=False)
        out.append(0.5 * s**2)
    return np.sort(np.concatenate(out))


@pytest.mark.parametrize(
    "conv", [nn.Conv1d(6, 9, 5), nn.Conv2d(7, 12, (3, 2)), nn.Conv3d(4, 6, (2, 3, 2)), nn.ConvTranspose2d(5, 8, 3)]
)
def test_conv_pooled_matches_weightwatcher_convention(pm, conv):
    torch.manual_seed(1)
    m = nn.Sequential(conv)
    e = by_layer(discover_layers(m, hook=pm.hook))["0"]
    (v,) = e.views()
    W = conv.weight
    rf = int(np.prod(W.shape[2:]))
    assert v.name == "W" and v.eig_scale == 0.5
    assert tuple(v.tensor.shape) == (rf, W.shape[0], W.shape[1])
    assert same_storage(v.tensor, W)  # a view, not a copy
    assert e.shapes[0][1:] == (max(W.shape[:2]), min(W.shape[:2]), max(W.shape[:2]) / min(W.shape[:2]), rf)
    lam = esd_pooled(v.tensor, scale=v.eig_scale)
    ref = brute_pooled_ww(W.detach().double().numpy())
    assert lam.shape == ref.shape
    np.testing.assert_allclose(lam, ref, rtol=1e-10, atol=1e-12)


def test_conv2d_separate_slices(pm):
    torch.manual_seed(2)
    conv = nn.Conv2d(6, 10, (3, 2))
    e = by_layer(discover_layers(nn.Sequential(conv), hook=make_pm(conv_slices="separate").hook))["0"]
    views = e.views()
    assert [v.name for v in views] == [f"k{i}_{j}" for i in range(3) for j in range(2)]
    W = conv.weight.detach().double().numpy()
    for v in views:
        i, j = (int(x) for x in v.name[1:].split("_"))
        assert v.eig_scale == 3 * 2 / 2
        assert torch.equal(v.tensor, conv.weight[:, :, i, j])
        s = np.linalg.svd(W[:, :, i, j], compute_uv=False)
        np.testing.assert_allclose(esd(v.tensor) * v.eig_scale, np.sort(3.0 * s**2), rtol=1e-10)
    assert all(s.num_matrices == 1 and (s.N, s.M) == (10, 6) for s in e.shapes)


def test_conv1d_conv3d_separate_names(pm):
    rules = make_pm(conv_slices="separate").hook
    e1 = by_layer(discover_layers(nn.Sequential(nn.Conv1d(3, 4, 5)), hook=rules))["0"]
    assert e1.view_names == tuple(f"k{i}" for i in range(5))
    assert {v.eig_scale for v in e1.views()} == {2.5}
    e3 = by_layer(discover_layers(nn.Sequential(nn.Conv3d(2, 3, (2, 3, 4))), hook=rules))["0"]
    assert len(e3.view_names) == 24 and e3.view_names[0] == "k0_0_0" and e3.view_names[-1] == "k1_2_3"
    assert {v.eig_scale for v in e3.views()} == {12.0}


def test_conv_slices_option_validated():
    with pytest.raises(ValueError, match="conv_slices 'x'.*pooled, separate"):
        BuiltinLayerRules(conv_slices="x")


def test_large_embedding_not_capped(pm):
    m = nn.Sequential(nn.Embedding(60_000, 4))
    e = by_layer(discover_layers(m, hook=pm.hook))["0"]
    assert e.skip_reason is None and e.module_type == "Embedding"
    assert e.shapes[0][1:3] == (60_000, 4) and e.shapes[0].Q == 15_000.0


def test_mha_fused_qkv_split(pm):
    torch.manual_seed(3)
    m = nn.Sequential(nn.MultiheadAttention(12, 3))
    e = by_layer(discover_layers(m, hook=pm.hook))
    ent = e["0.in_proj_weight"]
    W = m[0].in_proj_weight
    views = ent.views()
    assert [v.name for v in views] == ["q", "k", "v"]
    for i, v in enumerate(views):
        assert torch.equal(v.tensor, W[i * 12 : (i + 1) * 12]) and same_storage(v.tensor, W)
    assert ent.module_type == "MultiheadAttention"
    assert e["0.out_proj"].view_names == ("W",)
    assert e["0.in_proj_bias"].skip_reason == "1-D parameter (bias/norm)"
    # the views of another tensor of the same shape (a gradient) come from that tensor, not the parameter
    G = torch.randn_like(W)
    for i, v in enumerate(ent.views(G)):
        assert torch.equal(v.tensor, G[i * 12 : (i + 1) * 12])


def test_mha_separate_projections(pm):
    m = nn.Sequential(nn.MultiheadAttention(8, 2, kdim=4, vdim=6, add_bias_kv=True))
    e = by_layer(discover_layers(m, hook=pm.hook))
    assert "0.in_proj_weight" not in e  # registered as None by torch
    for name, cols in (("q", 8), ("k", 4), ("v", 6)):
        ent = e[f"0.{name}_proj_weight"]
        assert ent.view_names == ("W",) and ent.shapes[0][1:3] == (8, cols)
    assert e["0.bias_k"].skip_reason == "effectively 1-D parameter (shape (1, 1, 8))"


@pytest.mark.parametrize(
    "rnn, gates",
    [
        (nn.LSTM(4, 6, num_layers=2, bidirectional=True), LSTM_GATES),
        (nn.GRU(4, 5, bidirectional=True), GRU_GATES),
        (nn.RNN(4, 5), ("W",)),
        (nn.LSTMCell(3, 4), LSTM_GATES),
        (nn.GRUCell(3, 4), GRU_GATES),
    ],
)
def test_rnn_gates(pm, rnn, gates):
    m = nn.Sequential(rnn)
    entries = by_layer(discover_layers(m, hook=pm.hook))
    weights = [n for n, _ in rnn.named_parameters() if n.startswith("weight")]
    assert weights
    for n in weights:
        ent = entries[f"0.{n}"]
        P = getattr(rnn, n)
        views = ent.views()
        assert tuple(v.name for v in views) == gates
        # PyTorch stacks the gates along rows in this order
        for chunk, v in zip(P.chunk(len(gates), 0), views):
            assert torch.equal(v.tensor, chunk) and same_storage(v.tensor, P)
    for n, _ in rnn.named_parameters():
        if n.startswith("bias"):
            assert entries[f"0.{n}"].skip_reason == "1-D parameter (bias/norm)"
    if isinstance(rnn, nn.LSTM) and rnn.bidirectional:
        assert "0.weight_hh_l1_reverse" in entries


def test_lstm_projection_weight(pm):
    rnn = nn.LSTM(4, 6, proj_size=3)
    e = by_layer(discover_layers(nn.Sequential(rnn), hook=pm.hook))
    assert e["0.weight_hr_l0"].view_names == ("W",) and e["0.weight_hr_l0"].shapes[0][1:3] == (6, 3)
    hh = e["0.weight_hh_l0"]
    assert hh.view_names == LSTM_GATES and hh.shapes[0][1:3] == (6, 3)  # (4H, P) split into (H, P)


def test_transformer_conv1d_is_transposed(pm):
    torch.manual_seed(4)
    m = nn.Sequential(Conv1D(24, 8))
    ent = by_layer(discover_layers(m, hook=pm.hook))["0"]
    (v,) = ent.views()
    assert tuple(v.tensor.shape) == (24, 8)  # (out, in), like nn.Linear
    assert torch.equal(v.tensor, m[0].weight.T) and same_storage(v.tensor, m[0].weight)
    assert ent.module_type == "Conv1D"


def test_generic_params(pm):
    m = Odd()
    e = by_layer(discover_layers(m, hook=pm.hook))
    (v,) = e["cube"].views()
    assert torch.equal(v.tensor, m.cube.reshape(4, 30)) and same_storage(v.tensor, m.cube)
    (p,) = e["pos"].views()
    assert tuple(p.tensor.shape) == (10, 8) and torch.equal(p.tensor, m.pos[0])
    assert e["cls"].skip_reason == "effectively 1-D parameter (shape (1, 1, 8))"
    assert e["col"].skip_reason == "effectively 1-D parameter (shape (7, 1))"
    b = by_layer(discover_layers(nn.Sequential(nn.Bilinear(3, 4, 5)), hook=pm.hook))["0"]
    assert b.shapes[0][1:3] == (12, 5)


# --------------------------------------------------------------------------------------------- skips
def test_tied_parameters_analyzed_once(pm):
    m = nn.ModuleDict({"emb": nn.Embedding(30, 8), "head": nn.Linear(8, 30, bias=False)})
    m["head"].weight = m["emb"].weight
    e = discover_layers(m, hook=pm.hook)
    assert [x.layer for x in e] == ["emb", "head"]
    assert e[0].skip_reason is None and e[1].skip_reason == "tied to emb"
    # a shared module reached twice: the second path is the tie
    lin = nn.Linear(4, 4)
    shared = nn.Sequential(lin, lin)
    rows = {(x.layer, x.skip_reason) for x in discover_layers(shared, hook=pm.hook)}
    assert ("0", None) in rows and ("1", "tied to 0") in rows and ("1.bias", "tied to 0.bias") in rows
    # in a state_dict ties are separate tensors sharing storage
    sd = m.state_dict(keep_vars=False)
    assert sd["emb.weight"] is not sd["head.weight"]
    e2 = by_layer(discover_layers(sd, hook=pm.hook))
    assert e2["emb"].skip_reason is None and e2["head"].skip_reason == "tied to emb"


def test_meta_and_uninitialized_skipped(pm):
    m = nn.ModuleDict({"meta": nn.Linear(4, 4, device="meta"), "lazy": nn.LazyLinear(3), "ok": nn.Linear(2, 3)})
    e = by_layer(discover_layers(m, hook=pm.hook))
    assert e["meta"].skip_reason == "meta device (no values)"
    assert e["meta.bias"].skip_reason == "meta device (no values)"
    assert e["lazy"].skip_reason.startswith("uninitialized parameter")
    assert e["ok"].skip_reason is None
    with pytest.raises(ValueError, match="is skipped"):
        e["meta"].views()


def test_dtype_sparse_and_empty_skips(pm):
    sd = {
        "a.weight": torch.ones(3, 4, dtype=torch.int64),
        "b.weight": torch.ones(3, 4, dtype=torch.bool),
        "c.weight": torch.ones(3, 4, dtype=torch.complex64),
        "d.weight": torch.eye(4).to_sparse(),
        "e.weight": torch.empty(0, 4),
        "f.weight": torch.randn(3, 4, dtype=torch.bfloat16),
    }
    e = by_layer(discover_layers(sd, hook=pm.hook))
    assert e["a"].skip_reason == "non-float dtype int64"
    assert e["b"].skip_reason == "non-float dtype bool"
    assert e["c"].skip_reason.startswith("complex dtype complex64")
    assert "sparse" in e["d"].skip_reason
    assert e["e"].skip_reason.startswith("empty tensor")
    assert e["f"].skip_reason is None and e["f"].dtype == "bfloat16"


# --------------------------------------------------------------------------------------------- plugins
class ThirdParty:
    @hookimpl
    def spectra_include_param(self, name, param, module):
        if name.startswith("fc1."):
            return False
        if name == "fc2.bias":
            return True  # overrides the built-in 1-D skip
        return None

    @hookimpl
    def spectra_as_matrices(self, name, param, module):
        if name == "fc2.weight":
            return [("top", param[:2]), ("bottom", param[2:], 3.0)]
        if name == "fc2.bias":
            return [MatrixView("row", param.unsqueeze(0))]
        return None


def test_third_party_plugin_overrides_builtins(pm):
    m = nn.ModuleDict({"fc1": nn.Linear(4, 5), "fc2": nn.Linear(5, 6), "fc3": nn.Linear(6, 2)})
    plugin = ThirdParty()
    pm.register(plugin, name="thirdparty")
    try:
        e = by_layer(discover_layers(m, hook=pm.hook))
        assert e["fc1"].skip_reason == "excluded by a plugin (spectra_include_param returned False)"
        assert e["fc1.bias"].skip_reason == "1-D parameter (bias/norm)"
        top, bottom = e["fc2"].views()
        assert isinstance(top, MatrixView) and top.name == "top" and bottom.eig_scale == 3.0
        assert torch.equal(top.tensor, m["fc2"].weight[:2]) and torch.equal(bottom.tensor, m["fc2"].weight[2:])
        assert e["fc2.bias"].view_names == ("row",) and e["fc2.bias"].shapes[0][1:3] == (6, 1)
        assert e["fc3"].view_names == ("W",)  # the built-in rule still answers where the plugin defers
    finally:
        pm.unregister(plugin)
    assert by_layer(discover_layers(m, hook=pm.hook))["fc1"].skip_reason is None


def test_bad_plugin_answer_is_named(pm):
    class Bad:
        @hookimpl
        def spectra_as_matrices(self, name, param, module):
            return ["not a view"]

    bad = Bad()
    pm.register(bad)
    try:
        with pytest.raises(TypeError, match="'0'.*MatrixView"):
            discover_layers(nn.Sequential(nn.Linear(3, 3)), hook=pm.hook)
    finally:
        pm.unregister(bad)


def test_no_rules_registered_gives_reason():
    bare = pluggy.PluginManager("spectra")
    bare.add_hookspecs(spectra.hookspecs)
    (e, _) = discover_layers(nn.Linear(3, 3), hook=bare.hook)
    assert "no layer rule" in e.skip_reason


# --------------------------------------------------------------------------------------------- state_dict
def test_state_dict_inference_matches_module(pm):
    m = zoo()
    sd = m.state_dict()
    from_mod = by_layer(discover_layers(m, hook=pm.hook))
    from_sd = by_layer(discover_layers(sd, hook=pm.hook))
    assert all(e.module is None and e.module_type == "" for e in from_sd.values())
    # names: module path for '.weight', full key otherwise
    assert {"fc", "conv", "c1", "c3", "emb", "attn.in_proj_weight", "attn.out_proj", "lstm.weight_ih_l0"} <= set(from_sd)
    assert from_sd["bn.num_batches_tracked"].skip_reason == "non-float dtype int64"
    assert from_sd["bn.running_mean"].skip_reason == "1-D parameter (bias/norm)"
    for name in ("fc", "conv", "c1", "c3", "emb", "attn.in_proj_weight", "attn.out_proj", "odd.cube", "odd.pos"):
        a, b = from_mod[name].views(), from_sd[name].views()
        assert [v.name for v in a] == [v.name for v in b], name
        for va, vb in zip(a, b):
            assert va.eig_scale == vb.eig_scale and torch.equal(va.tensor, vb.tensor), name
    # RNN gates and the Conv1D transpose need the module: whole matrices in a state_dict
    assert from_sd["lstm.weight_ih_l0"].view_names == ("W",)
    assert from_sd["c1d"].shapes[0][1:3] == from_mod["c1d"].shapes[0][1:3]


def test_state_dict_bad_inputs(pm):
    with pytest.raises(TypeError, match="'epoch' is a int"):
        discover_layers({"epoch": 3}, hook=pm.hook)
    with pytest.raises(TypeError, match="keys must be str"):
        discover_layers({1: torch.ones(2, 2)}, hook=pm.hook)
    with pytest.raises(TypeError, match="list.*torch.nn.Module"):
        discover_layers([torch.ones(2, 2)], hook=pm.hook)
    with pytest.raises(TypeError, match="hook relay"):
        discover_layers(nn.Linear(2, 2), hook=pm)


# --------------------------------------------------------------------------------------------- select
def test_select_filters(pm):
    m = zoo()
    names = lambda sel: {e.layer for e in discover_layers(m, hook=pm.hook, select=sel)}  # noqa: E731
    assert names("c*") == {"conv", "conv.bias", "c1", "c1.bias", "c3", "c3.bias", "c1d", "c1d.bias"}
    assert names("*.in_proj_weight") == {"attn.in_proj_weight"}
    assert names(re.compile(r"^lstm\.weight_hh")) == {
        "lstm.weight_hh_l0", "lstm.weight_hh_l0_reverse", "lstm.weight_hh_l1", "lstm.weight_hh_l1_reverse"
    }
    assert names(nn.Linear) == {"fc", "fc.bias", "attn.out_proj", "attn.out_proj.bias"}
    assert names((nn.Conv1d, nn.Embedding)) == {"c1", "c1.bias", "emb"}
    assert names(lambda layer, p, mod: p.dim() == 4) == {"conv"}
    assert names(["fc", nn.Embedding]) == {"fc", "emb"}
    assert discover_layers(m.state_dict(), hook=pm.hook, select=nn.Linear) == []
    with pytest.raises(TypeError, match="select must be.*got int 3"):
        discover_layers(m, hook=pm.hook, select=3)


# --------------------------------------------------------------------------------------------- table, views
def test_layers_table_rows(pm):
    from spectra.results import LAYER_COLUMNS, _layers_frame

    entries = discover_layers(zoo(), hook=pm.hook)
    rows = layers_table_rows(entries)
    assert all(tuple(r) == LAYER_COLUMNS for r in rows)
    n_views = sum(len(e.shapes) for e in entries if e.skip_reason is None)
    n_skipped = sum(e.skip_reason is not None for e in entries)
    assert len(rows) == n_views + n_skipped
    df = _layers_frame(rows)
    q = df[(df.layer == "attn.in_proj_weight")]
    assert list(q.view) == ["q", "k", "v"] and list(q.N) == [8, 8, 8]
    bias = df[df.layer == "fc.bias"].iloc[0]
    assert bias.skip_reason == "1-D parameter (bias/norm)" and bias.view is pd_na()
    conv = df[df.layer == "conv"].iloc[0]
    assert (conv.N, conv.M, conv.num_matrices) == (5, 3, 6) and conv.Q == pytest.approx(5 / 3)


def pd_na():
    import pandas as pd

    return pd.NA


def test_views_shape_check_and_matrixview_validation(pm):
    ent = by_layer(discover_layers(nn.Sequential(nn.Linear(3, 4)), hook=pm.hook))["0"]
    with pytest.raises(ValueError, match=r"shape \(3, 4\) differs.*\(4, 3\)"):
        ent.views(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="2-D matrix or a 3-D stack"):
        MatrixView("W", torch.zeros(3))
    with pytest.raises(ValueError, match="eig_scale"):
        MatrixView("W", torch.zeros(3, 3), 0.0)
    with pytest.raises(ValueError, match="non-empty string"):
        MatrixView("", torch.zeros(3, 3))


def test_model_is_never_modified(pm):
    m = zoo()
    m.train()
    before = {k: v.detach().clone() for k, v in m.state_dict(keep_vars=True).items()}
    flags = {n: (p.requires_grad, p.device, p.dtype, id(p)) for n, p in m.named_parameters()}
    for e in discover_layers(m, hook=pm.hook) + discover_layers(m, hook=make_pm(conv_slices="separate").hook):
        if e.skip_reason is None:
            for v in e.views() + e.views(e.param.detach().clone()):
                assert v.tensor.grad_fn is None  # detached aliases: no autograd graph hangs on the model
    after = m.state_dict()
    assert before.keys() == after.keys()
    for k in before:
        a, b = before[k], after[k]
        assert a.dtype == b.dtype and a.shape == b.shape
        assert a.numpy().tobytes() == b.numpy().tobytes(), k
    assert flags == {n: (p.requires_grad, p.device, p.dtype, id(p)) for n, p in m.named_parameters()}
    assert all(p.grad is None for p in m.parameters())


def test_tied_meta_parameters(pm):
    m = nn.ModuleDict({"emb": nn.Embedding(30, 8, device="meta"), "head": nn.Linear(8, 30, bias=False, device="meta")})
    m["head"].weight = m["emb"].weight
    e = by_layer(discover_layers(m, hook=pm.hook))
    assert e["emb"].skip_reason == "meta device (no values)" and e["head"].skip_reason == "tied to emb"


@pytest.mark.slow
def test_conv_views_match_weightwatcher(pm):
    """Pooled and per-slice Conv2d eigenvalues agree with WeightWatcher 0.7.7 itself (independent code)."""
    ww = pytest.importorskip("weightwatcher")
    import logging

    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    torch.manual_seed(5)
    m = nn.Sequential(nn.Conv2d(7, 12, (3, 3)), nn.ReLU(), nn.Conv2d(12, 16, (3, 2)))
    watcher = ww.WeightWatcher(model=m)
    pooled = watcher.analyze(layers=[3], plot=False)
    sliced = watcher.analyze(layers=[3], plot=False, pool=False)
    ww_esd = np.sort(np.asarray(watcher.get_ESD(layer=3), dtype=np.float64))  # unscaled σ² of every slice

    (v,) = by_layer(discover_layers(m, hook=pm.hook))["2"].views()
    ours = esd_pooled(v.tensor, scale=v.eig_scale)
    assert len(ours) == int(pooled["num_evals"].iloc[0])
    np.testing.assert_allclose(ours, 0.5 * ww_esd, rtol=1e-5)
    np.testing.assert_allclose(ours[-1], pooled["lambda_max"].iloc[0], rtol=1e-5)

    views = by_layer(discover_layers(m, hook=make_pm(conv_slices="separate").hook))["2"].views()
    ours_max = np.sort([esd(s.tensor)[-1] * s.eig_scale for s in views])
    np.testing.assert_allclose(ours_max, np.sort(sliced["lambda_max"].to_numpy(dtype=float)), rtol=1e-5)
