"""Per-head attention views (``layer_rules={"attention_heads": True}``), checked against brute-force splits.

The brute force reshapes each projection by heads (``W.view(H, d, E)``, ``W.view(E, H, d)``) instead of slicing,
and, for ``nn.MultiheadAttention``, rebuilds the module's output from the per-head views alone.
"""

from __future__ import annotations

import math
import types

import pytest
import torch
from torch import nn

import spectra
from spectra.layers import BuiltinLayerRules, discover_layers
from spectra.pipeline import Pipeline, Settings
from spectra.plugins import get_plugin_manager


def _views(model, **rules):
    """{layer: {view: tensor}} as the pipeline discovers them (it binds the model to the rules)."""
    settings = Settings.build("analyze", layer_rules=rules)
    p = Pipeline(settings, model, source="analyze")
    return {e.layer: {v.name: v.tensor for v in e.views()} for e in p.entries}


def _names(prefix, n):
    return [f"{prefix}.h{i}" for i in range(n)]


# ---------------------------------------------------------------------------------------------- MultiheadAttention
class _MHA(nn.Module):
    def __init__(self, E=12, H=3, **kw):
        super().__init__()
        torch.manual_seed(0)
        self.attn = nn.MultiheadAttention(E, H, **kw)


def test_fused_in_proj_and_out_proj_split_per_head_like_a_reshape():
    E, H = 12, 3
    m = _MHA(E, H)
    d = E // H
    views = _views(m, attention_heads=True)
    qkv = views["attn.in_proj_weight"]
    assert list(qkv) == _names("q", H) + _names("k", H) + _names("v", H)
    brute = m.attn.in_proj_weight.detach().view(3, H, d, E)
    for j, role in enumerate("qkv"):
        for h in range(H):
            assert torch.equal(qkv[f"{role}.h{h}"], brute[j, h])
    out = views["attn.out_proj"]
    assert list(out) == _names("out", H)
    brute_out = m.attn.out_proj.weight.detach().view(E, H, d)
    for h in range(H):
        assert torch.equal(out[f"out.h{h}"], brute_out[:, h, :])


def test_per_head_views_rebuild_the_attention_output():
    """Σ_h softmax(q_h k_hᵀ/√d) v_h W_out,hᵀ from the views alone equals nn.MultiheadAttention's output."""
    E, H, L = 12, 3, 5
    m = _MHA(E, H)
    a = m.attn
    views = _views(m, attention_heads=True)
    qkv, out = views["attn.in_proj_weight"], views["attn.out_proj"]
    x = torch.randn(L, E, generator=torch.Generator().manual_seed(1))
    bq, bk, bv = a.in_proj_bias.detach().view(3, H, E // H)
    y = a.out_proj.bias.detach().clone()
    with torch.no_grad():
        ref = a(x, x, x, need_weights=False)[0]
        y = y.expand(L, E).clone()
        for h in range(H):
            q = x @ qkv[f"q.h{h}"].T + bq[h]
            k = x @ qkv[f"k.h{h}"].T + bk[h]
            v = x @ qkv[f"v.h{h}"].T + bv[h]
            w = torch.softmax(q @ k.T / math.sqrt(E // H), dim=-1)
            y += (w @ v) @ out[f"out.h{h}"].T
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-6)


def test_separate_q_k_v_proj_weights_with_kdim_vdim():
    E, H, kdim, vdim = 8, 2, 5, 7
    m = _MHA(E, H, kdim=kdim, vdim=vdim)
    views = _views(m, attention_heads=True)
    d = E // H
    for role, cols in (("q", E), ("k", kdim), ("v", vdim)):
        got = views[f"attn.{role}_proj_weight"]
        assert list(got) == _names(role, H)
        brute = getattr(m.attn, f"{role}_proj_weight").detach().view(H, d, cols)
        for h in range(H):
            assert torch.equal(got[f"{role}.h{h}"], brute[h])
    assert list(views["attn.out_proj"]) == _names("out", H)


# ---------------------------------------------------------------------------------------------- transformer-style
class _Attention(nn.Module):
    """LLaMA-style grouped-query attention: heads on the module or on its config."""

    def __init__(self, E=16, H=4, kv=2, names=("q_proj", "k_proj", "v_proj", "o_proj"), on_config=False):
        super().__init__()
        d = E // H
        if on_config:
            self.config = types.SimpleNamespace(num_attention_heads=H, num_key_value_heads=kv)
        else:
            self.num_heads, self.num_key_value_heads = H, kv
        self.head_dim = d
        q, k, v, o = names
        setattr(self, q, nn.Linear(E, H * d))
        setattr(self, k, nn.Linear(E, kv * d))
        setattr(self, v, nn.Linear(E, kv * d))
        setattr(self, o, nn.Linear(H * d, E))


class _Block(nn.Module):
    def __init__(self, attn):
        super().__init__()
        torch.manual_seed(0)
        self.attn = attn
        self.mlp = nn.Sequential()
        self.mlp.add_module("proj", nn.Linear(16, 16))  # an MLP "proj": its parent is not an attention module


@pytest.mark.parametrize("on_config", [False, True], ids=["attributes", "config"])
def test_grouped_query_projections_split_by_their_own_heads(on_config):
    E, H, kv = 16, 4, 2
    d = E // H
    m = _Block(_Attention(E, H, kv, on_config=on_config))
    views = _views(m, attention_heads=True)
    a = m.attn
    for role, lin, heads in (("q", a.q_proj, H), ("k", a.k_proj, kv), ("v", a.v_proj, kv)):
        got = views[f"attn.{role}_proj"]
        assert list(got) == _names(role, heads)
        brute = lin.weight.detach().view(heads, d, E)
        for h in range(heads):
            assert torch.equal(got[f"{role}.h{h}"], brute[h])
    brute_o = a.o_proj.weight.detach().view(E, H, d)
    assert [torch.equal(v, brute_o[:, h]) for h, v in enumerate(views["attn.o_proj"].values())] == [True] * H
    assert list(views["mlp.proj"]) == ["W"]


def test_bert_and_t5_style_names_and_heads_attributes():
    class Bert(nn.Module):
        def __init__(self):
            super().__init__()
            self.num_attention_heads = 2
            self.query, self.key, self.value = (nn.Linear(8, 8) for _ in range(3))

    class T5(nn.Module):
        def __init__(self):
            super().__init__()
            self.n_heads = 4
            self.q, self.k, self.v, self.o = (nn.Linear(8, 8) for _ in range(4))

    m = nn.ModuleDict({"bert": Bert(), "t5": T5()})
    views = _views(m, attention_heads=True)
    assert {k: list(v) for k, v in views.items()} == {
        "bert.query": _names("q", 2), "bert.key": _names("k", 2), "bert.value": _names("v", 2),
        "t5.q": _names("q", 4), "t5.k": _names("k", 4), "t5.v": _names("v", 4), "t5.o": _names("out", 4),
    }
    assert torch.equal(views["t5.o"]["out.h3"], m["t5"].o.weight.detach()[:, 6:8])


# ---------------------------------------------------------------------------------------------- heads unknown
def test_heads_that_cannot_be_read_keep_todays_views():
    class NoHeads(nn.Module):  # attention-like names, no number of heads anywhere
        def __init__(self):
            super().__init__()
            self.q_proj, self.k_proj = nn.Linear(8, 8), nn.Linear(8, 8)

    class Indivisible(nn.Module):
        def __init__(self):
            super().__init__()
            self.num_heads = 3
            self.q_proj, self.k_proj = nn.Linear(8, 8), nn.Linear(8, 8)

    m = nn.ModuleDict({"a": NoHeads(), "b": Indivisible(), "mha": nn.MultiheadAttention(6, 2)})
    on, off = _views(m, attention_heads=True), _views(m)
    assert {k: list(v) for k, v in on.items() if k.startswith(("a.", "b."))} == {
        "a.q_proj": ["W"], "a.k_proj": ["W"], "b.q_proj": ["W"], "b.k_proj": ["W"]}
    # a state_dict has no modules, hence no heads: the views of today
    res = spectra.analyze(m.state_dict(), layer_rules={"attention_heads": True})
    assert set(res.layers.dropna(subset=["view"])["view"]) == {"q", "k", "v", "W"}
    assert list(off["mha.in_proj_weight"]) == ["q", "k", "v"]


def test_unbound_rules_never_guess_a_parent():
    """discover_layers without the pipeline's binding: fused MHA projections still split (the heads are on the
    module), child projections (out_proj) keep their views."""
    pm = get_plugin_manager(entrypoints=False, builtin_options={"spectra.layers": {"attention_heads": True}})
    m = _MHA(12, 3)
    got = {e.layer: e.view_names for e in discover_layers(m, hook=pm.hook) if e.analyzed}
    assert got == {"attn.in_proj_weight": tuple(_names("q", 3) + _names("k", 3) + _names("v", 3)),
                   "attn.out_proj": ("W",)}


# ---------------------------------------------------------------------------------------------- default, options
def test_option_off_is_todays_behaviour():
    m = _Block(_Attention())
    m.add_module("mha", nn.MultiheadAttention(8, 2))
    explicit, default = _views(m, attention_heads=False), _views(m)
    assert {k: list(v) for k, v in explicit.items()} == {k: list(v) for k, v in default.items()}
    assert all(list(v) in (["W"], ["q", "k", "v"]) for v in default.values())
    a = spectra.analyze(m, layer_rules={"attention_heads": False}).to_pandas()
    b = spectra.analyze(m).to_pandas()
    assert a.equals(b)


def test_per_head_rows_in_the_table_and_attrs():
    m = _MHA(12, 3)
    res = spectra.analyze(m, layer_rules={"attention_heads": True})
    df = res.to_pandas()
    assert set(df.loc[df["layer"] == "attn.out_proj", "view"]) == set(_names("out", 3))
    assert res.attrs["layer_rules"] == {"attention_heads": True}
    lam = torch.linalg.svdvals(m.attn.out_proj.weight.detach()[:, 4:8].double()) ** 2
    row = df[(df["view"] == "out.h1") & (df["metric"] == "lambda_max")]
    assert row["value"].item() == pytest.approx(lam.max().item(), rel=1e-10)


def test_attention_heads_is_validated_like_every_rule():
    with pytest.raises(TypeError, match=r"attention_heads must be True or False, got str 'yes'"):
        Settings.build("analyze", layer_rules={"attention_heads": "yes"})
    with pytest.raises(ValueError, match=r"unknown layer rule option\(s\) \['heads'\]; allowed: conv_slices, "
                                         r"attention_heads"):
        Settings.build("analyze", layer_rules={"heads": True})
    rules = BuiltinLayerRules(attention_heads=True)
    assert repr(rules) == "BuiltinLayerRules(conv_slices='pooled', attention_heads=True)"


# ---------------------------------------------------------------------------------------------- Hugging Face
def test_gpt2_and_llama_attention_per_head():
    transformers = pytest.importorskip("transformers")
    E, H = 16, 4
    d = E // H
    gpt2 = transformers.GPT2Model(transformers.GPT2Config(n_embd=E, n_layer=1, n_head=H, n_positions=8,
                                                          vocab_size=11, bos_token_id=0, eos_token_id=0))
    views = _views(gpt2, attention_heads=True)
    c_attn = gpt2.h[0].attn.c_attn.weight.detach().T.reshape(3, H, d, E)  # Conv1D stores (in, out)
    got = views["h.0.attn.c_attn"]
    assert list(got) == _names("q", H) + _names("k", H) + _names("v", H)
    assert all(torch.equal(got[f"{r}.h{h}"], c_attn[j, h]) for j, r in enumerate("qkv") for h in range(H))
    c_proj = gpt2.h[0].attn.c_proj.weight.detach().T.reshape(E, H, d)
    assert all(torch.equal(views["h.0.attn.c_proj"][f"out.h{h}"], c_proj[:, h]) for h in range(H))
    assert list(views["h.0.mlp.c_proj"]) == ["W"]  # the MLP's c_proj: not an attention module's

    llama = transformers.LlamaModel(transformers.LlamaConfig(
        hidden_size=E, intermediate_size=24, num_hidden_layers=1, num_attention_heads=H, num_key_value_heads=2,
        vocab_size=11))
    views = _views(llama, attention_heads=True)
    attn = llama.layers[0].self_attn
    assert list(views["layers.0.self_attn.q_proj"]) == _names("q", H)
    assert list(views["layers.0.self_attn.k_proj"]) == _names("k", 2)
    assert torch.equal(views["layers.0.self_attn.v_proj"]["v.h1"], attn.v_proj.weight.detach().view(2, d, E)[1])
    assert list(views["layers.0.self_attn.o_proj"]) == _names("out", H)
    assert list(views["layers.0.mlp.down_proj"]) == ["W"]
