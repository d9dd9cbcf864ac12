"""Tests for spectra.layers.rules: the built-in matrix views of every layer type, in modules and state_dicts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from spectra.functional import esd, esd_pooled
from spectra.layers.discovery import discover_layers
from spectra.layers.rules import GRU_GATES, LSTM_GATES, BuiltinLayerRules
from test_layers_helpers import Conv1D, Odd, by_layer, make_pm, same_storage, zoo


@pytest.fixture
def pm():
    return make_pm()


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


# --------------------------------------------------------------------------------------------- WeightWatcher itself
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
