"""capture: what is copied before a step (from the due analyzers' needs) and how copies become snapshots.

No optimizer anywhere: parameters are changed by hand between :func:`take_copies` and :func:`layer_states`.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from spectra.analyzers.base import Analyzer
from spectra.layers import discover_layers
from spectra.pipeline.capture import layer_states, needs_of, take_copies
from spectra.plugins import get_plugin_manager


class _Needs(Analyzer):
    name = "needs"

    def __init__(self, needs):
        super().__init__()
        self.needs = frozenset(needs)

    def analyze(self, layer):  # pragma: no cover - never run here
        return ()


def _entries(model, **rules):
    pm = get_plugin_manager(entrypoints=False, builtin_options={"spectra.layers": rules})
    return [e for e in discover_layers(model, hook=pm.hook) if e.analyzed]


def _model(dtype=torch.float32):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).to(dtype)


def _give_grads(model, seed=3):
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=g).to(p.dtype)


# ---------------------------------------------------------------------------------------------- needs_of
def test_needs_of_is_the_union_of_declared_needs():
    assert needs_of([]) == frozenset()
    assert needs_of([_Needs({"weight"})]) == {"weight"}
    assert needs_of([_Needs({"weight"}), _Needs({"weight", "grad"}), _Needs({"update"})]) == {
        "weight", "grad", "update"}


# ---------------------------------------------------------------------------------------------- take_copies
def test_weight_only_copies_nothing():
    model = _model()
    _give_grads(model)
    entries = _entries(model)
    assert take_copies(entries, needs_of([_Needs({"weight"})])) == {}
    assert take_copies(entries, frozenset()) == {}


def test_copies_only_what_is_needed():
    model = _model()
    _give_grads(model)
    entries = _entries(model)
    ids = {id(e.param) for e in entries}
    prev = take_copies(entries, frozenset({"weight", "update"}))
    assert set(prev) == ids and all(set(item) == {"previous"} for item in prev.values())
    grad = take_copies(entries, frozenset({"weight", "grad"}))
    assert set(grad) == ids and all(set(item) == {"grad"} for item in grad.values())
    both = take_copies(entries, frozenset({"update", "grad"}))
    assert all(set(item) == {"previous", "grad"} for item in both.values())
    for e in entries:
        assert torch.equal(both[id(e.param)]["previous"], e.param.detach())
        assert torch.equal(both[id(e.param)]["grad"], e.param.grad)


def test_no_grad_no_grad_copy():
    model = _model()  # no backward yet: every .grad is None
    entries = _entries(model)
    copies = take_copies(entries, frozenset({"update", "grad"}))
    assert all(set(item) == {"previous"} for item in copies.values())
    assert all(item == {} for item in take_copies(entries, frozenset({"grad"})).values())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_is_copied_in_float32(dtype):
    model = _model(dtype)
    _give_grads(model)
    for e in _entries(model):
        assert e.param.dtype == dtype
        item = take_copies([e], frozenset({"update", "grad"}))[id(e.param)]
        assert item["previous"].dtype == torch.float32
        assert item["grad"].dtype == torch.float32
        assert torch.equal(item["previous"], e.param.detach().float())
        assert torch.equal(item["grad"], e.param.grad.float())


def test_float64_stays_float64():
    model = _model(torch.float64)
    _give_grads(model)
    for item in take_copies(_entries(model), frozenset({"update", "grad"})).values():
        assert item["previous"].dtype == torch.float64 and item["grad"].dtype == torch.float64


def test_sparse_grad_is_densified():
    torch.manual_seed(0)
    emb = nn.Embedding(10, 4, sparse=True)
    emb(torch.tensor([1, 3, 3, 7])).sum().backward()
    assert emb.weight.grad.is_sparse
    (entry,) = _entries(emb)
    g = take_copies([entry], frozenset({"grad"}))[id(emb.weight)]["grad"]
    assert g.layout == torch.strided and not g.is_sparse
    assert g.dtype == torch.float32
    assert torch.equal(g, emb.weight.grad.to_dense())
    assert g[3].eq(2).all() and g[0].eq(0).all()


def test_copies_never_alias_the_live_tensors():
    model = _model()
    _give_grads(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    grads_before = {n: p.grad.clone() for n, p in model.named_parameters()}
    entries = _entries(model)
    copies = take_copies(entries, frozenset({"update", "grad"}))
    for e in entries:
        item = copies[id(e.param)]
        assert item["previous"].data_ptr() != e.param.data_ptr()
        assert item["grad"].data_ptr() != e.param.grad.data_ptr()
        assert not item["previous"].requires_grad
        item["previous"].add_(1.0)
        item["grad"].mul_(-3.0)
    for n, p in model.named_parameters():
        assert torch.equal(p.detach(), before[n]), n
        assert torch.equal(p.grad, grads_before[n]), n


def test_include_restricts_the_copies():
    model = _model()
    _give_grads(model)
    entries = _entries(model)
    first = entries[0].param
    copies = take_copies(entries, frozenset({"update", "grad"}), include={id(first)})
    assert set(copies) == {id(first)}
    assert take_copies(entries, frozenset({"update"}), include=set()) == {}


def test_taking_copies_changes_nothing_about_the_params():
    model = _model()
    _give_grads(model)
    entries = _entries(model)
    versions = [e.param._version for e in entries]
    take_copies(entries, frozenset({"update", "grad"}))
    assert [e.param._version for e in entries] == versions
    assert all(e.param.requires_grad for e in entries)


# ---------------------------------------------------------------------------------------------- layer_states
def _step_by_hand(model, scale=0.01, seed=5):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g).to(p.dtype), alpha=scale)


def test_layer_states_build_the_update_exactly():
    model = _model()
    _give_grads(model)
    entries = _entries(model)
    copies = take_copies(entries, frozenset({"update", "grad"}))
    w_prev = {id(e.param): e.param.detach().clone() for e in entries}
    _step_by_hand(model)
    for e in entries:
        (st,) = layer_states(e, 4, copies[id(e.param)], normalize=True, esd_method="svd")
        manual = e.param.detach() - w_prev[id(e.param)]
        assert torch.equal(st.tensors["update"], manual)
        assert torch.equal(st.tensors["previous"], w_prev[id(e.param)])
        assert torch.equal(st.tensors["weight"], e.param.detach())
        assert torch.equal(st.tensors["grad"], e.param.grad)
        assert (st.layer, st.view, st.step) == (e.layer, "W", 4)
        assert st.normalize is True and st.esd_method == "svd"
        assert st.module_type == "Linear" and st.context["param_name"] == e.param_name


def test_layer_states_bfloat16_update_is_the_float32_difference():
    model = _model(torch.bfloat16)
    entries = _entries(model)
    copies = take_copies(entries, frozenset({"update"}))
    w_prev = {id(e.param): e.param.detach().float() for e in entries}
    _step_by_hand(model, scale=0.1)
    for e in entries:
        (st,) = layer_states(e, 1, copies[id(e.param)], normalize=False, esd_method="auto")
        assert st.tensors["update"].dtype == torch.float32
        assert torch.equal(st.tensors["update"], e.param.detach().float() - w_prev[id(e.param)])
        assert st.tensors["update"].abs().sum() > 0


def test_layer_states_one_per_view():
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2)
    (entry, _) = _entries(mha)
    assert entry.view_names == ("q", "k", "v")
    item = take_copies([entry], frozenset({"update"}))[id(entry.param)]
    w_prev = entry.param.detach().clone()
    _step_by_hand(mha)
    states = layer_states(entry, 2, item, normalize=False, esd_method="auto")
    assert [s.view for s in states] == ["q", "k", "v"]
    delta = entry.param.detach() - w_prev
    for i, st in enumerate(states):
        assert torch.equal(st.tensors["update"], delta[8 * i: 8 * (i + 1)])
        assert not st.has("grad")


def test_layer_states_without_copies_hold_only_the_weight():
    model = _model()
    (e, _) = _entries(model)
    (st,) = layer_states(e, 0, {}, normalize=False, esd_method="auto")
    assert set(st.tensors) == {"weight"} and not st.has("update")


def test_layer_states_raise_on_shape_change():
    model = _model()
    (e, _) = _entries(model)
    item = {"previous": torch.zeros(3, 3)}
    with pytest.raises(ValueError, match=r"parameter '0.weight' changed shape from \(3, 3\) to \(7, 5\)"):
        layer_states(e, 1, item, normalize=False, esd_method="auto")


def test_layer_states_skip_a_grad_of_the_wrong_shape():
    model = _model()
    (e, _) = _entries(model)
    item = {"previous": e.param.detach().clone(), "grad": torch.ones(2, 2)}
    (st,) = layer_states(e, 1, item, normalize=False, esd_method="auto")
    assert st.has("update") and not st.has("grad")
