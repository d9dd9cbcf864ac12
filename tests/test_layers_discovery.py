"""Tests for spectra.layers.discovery and .selection: skip reasons, ties, plugins, state_dicts, selectors, table."""

from __future__ import annotations

import re

import pluggy
import pytest
import torch
from torch import nn

import spectra.hookspecs
from spectra import hookimpl
from spectra.layers.discovery import discover_layers, layers_table_rows, unwrap_model
from spectra.layers.selection import describe_selector, selector_miss_message
from spectra.layers.views import MatrixView
from spectra.plugins import PluginError
from test_layers_helpers import by_layer, make_pm, raising_plugin, zoo


@pytest.fixture
def pm():
    return make_pm()


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


def test_no_rules_registered_gives_reason():
    bare = pluggy.PluginManager("spectra")
    bare.add_hookspecs(spectra.hookspecs)
    (e, _) = discover_layers(nn.Linear(3, 3), hook=bare.hook)
    assert "no layer rule" in e.skip_reason


# --------------------------------------------------------------------------------------------- state_dict
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


# --------------------------------------------------------------------------------------------- table, invariants
def test_layers_table_rows(pm):
    from spectra import Results
    from spectra.table.schema import LAYER_COLUMNS

    entries = discover_layers(zoo(), hook=pm.hook)
    rows = layers_table_rows(entries)
    assert all(tuple(r) == LAYER_COLUMNS for r in rows)
    n_views = sum(len(e.shapes) for e in entries if e.skip_reason is None)
    n_skipped = sum(e.skip_reason is not None for e in entries)
    assert len(rows) == n_views + n_skipped
    df = Results(layers=rows).layers
    q = df[(df.layer == "attn.in_proj_weight")]
    assert list(q.view) == ["q", "k", "v"] and list(q.N) == [8, 8, 8]
    bias = df[df.layer == "fc.bias"].iloc[0]
    assert bias.skip_reason == "1-D parameter (bias/norm)" and bias.view is pd_na()
    conv = df[df.layer == "conv"].iloc[0]
    assert (conv.N, conv.M, conv.num_matrices) == (5, 3, 6) and conv.Q == pytest.approx(5 / 3)


def pd_na():
    import pandas as pd

    return pd.NA


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


def test_include_hook_failure_is_named(pm):
    with raising_plugin(pm, "spectra_include_param", KeyError("nope")):
        with pytest.raises(PluginError, match=r"spectra_include_param raised for parameter '0.weight'.*nope"):
            discover_layers(nn.Sequential(nn.Linear(3, 3)), hook=pm.hook)


# --------------------------------------------------------------------------------------------- selector misses
def test_selector_miss_message_names_selector_and_a_few_layers(pm):
    m = zoo()
    assert discover_layers(m, hook=pm.hook, select="enc*") == []
    everything = discover_layers(m, hook=pm.hook)
    msg = selector_miss_message("enc*", everything)
    analyzed = list(dict.fromkeys(e.layer for e in everything if e.analyzed))
    assert msg == (
        f"layers='enc*' matches no parameter; available layers (5 of {len({e.layer for e in everything})}): "
        + ", ".join(repr(n) for n in analyzed[:5]) + ", ..."
    )
    assert "fc.bias" not in msg  # analyzed layers are listed before skipped ones
    # layer names work too, listed once each, and the whole list when it is short
    assert selector_miss_message("x", ["b", "a", "b"]) == "layers='x' matches no parameter; available layers: 'b', 'a'"
    assert selector_miss_message("x", ["a", "b", "c"], limit=2).endswith("(2 of 3): 'a', 'b', ...")
    assert selector_miss_message("x", []) == "layers='x' matches no parameter; the model has no parameters"


def test_selector_miss_message_describes_every_selector_form():
    def only_big(layer, param, module):
        return param.numel() > 10**9

    forms = {
        re.compile(r"^enc\."): "layers=re.compile('^enc\\\\.')",
        nn.Linear: "layers=Linear",
        (nn.Conv1d, nn.Embedding): "layers=(Conv1d, Embedding)",
        only_big: "layers=predicate test_selector_miss_message_describes_every_selector_form.<locals>.only_big",
        ("dec*", nn.GRU): "layers=['dec*', GRU]",
        None: "layers=None",
    }
    for select, head in forms.items():
        assert selector_miss_message(select, ["fc"]) == f"{head} matches no parameter; available layers: 'fc'"
    assert describe_selector(["a", re.compile("b")]) == "['a', re.compile('b')]"
    with pytest.raises(TypeError, match="select must be.*got int 3"):
        selector_miss_message(3, ["fc"])
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="limit must be an int >= 1"):
            selector_miss_message("x", ["fc"], limit=bad)


# --------------------------------------------------------------------------------------------- wrappers, exports
def test_unwrap_model_strips_data_parallel():
    inner = nn.Linear(3, 4)
    assert unwrap_model(inner) is inner
    assert unwrap_model(nn.DataParallel(nn.DataParallel(inner))) is inner


def test_package_reexports_every_public_name():
    import spectra.layers as layers
    from spectra.layers import discovery, rules, selection, views
    from spectra.plugins import DEFAULT_PLUGINS

    old_public = {
        "MatrixView", "ViewShape", "LayerEntry", "BuiltinLayerRules", "CONV_SLICE_MODES", "LSTM_GATES", "GRU_GATES",
        "QKV", "REASON_1D", "discover_layers", "layers_table_rows", "skip_reason_for",
    }
    assert old_public | {"selector_miss_message", "unwrap_model"} <= set(layers.__all__)
    homes = {name: mod for mod in (discovery, rules, selection, views) for name in mod.__all__}
    for name in layers.__all__:
        assert getattr(layers, name) is getattr(homes[name], name), name
    module, _, attr = DEFAULT_PLUGINS["spectra.layers"].partition(":")
    assert module == "spectra.layers" and getattr(layers, attr) is rules.BuiltinLayerRules
