"""Tests for spectra.layers.views: MatrixView, and how plugins' spectra_as_matrices answers become views."""

from __future__ import annotations

import math

import pluggy
import pytest
import torch
from torch import nn

import spectra.hookspecs
from spectra import hookimpl
from spectra.layers.discovery import discover_layers
from spectra.layers.views import MatrixView, as_view, hook_error, views_from_hook
from spectra.plugins import PluginError
from test_layers_helpers import by_layer, make_pm, raising_plugin


@pytest.fixture
def pm():
    return make_pm()


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


def test_as_view_coerces_plugin_answers():
    t = torch.zeros(5, 3)
    v = MatrixView("W", t)
    assert as_view(v, "fc") is v
    a = as_view(("top", t), "fc")
    b = as_view(["bottom", t, 2], "fc")
    assert (a.name, a.eig_scale) == ("top", 1.0) and a.tensor is t
    assert (b.name, b.eig_scale) == ("bottom", 2.0) and isinstance(b.eig_scale, float)
    with pytest.raises(TypeError, match=r"'fc'.*\(view_name, matrix\)"):
        as_view(("W",), "fc")
    with pytest.raises(TypeError, match="returned Tensor"):
        as_view(t, "fc")


def test_matrixview_shape_properties():
    flat = MatrixView("W", torch.zeros(5, 3))
    assert (flat.matrix_shape, flat.num_matrices, flat.N, flat.M, flat.Q) == ((5, 3), 1, 5, 3, 5 / 3)
    stack = MatrixView("W", torch.zeros(6, 4, 8), 0.5)
    assert (stack.matrix_shape, stack.num_matrices, stack.N, stack.M, stack.Q) == ((4, 8), 6, 8, 4, 2.0)
    assert math.isnan(MatrixView("W", torch.zeros(0, 3)).Q)


def test_views_from_hook_defers_and_names_failures(pm):
    t = torch.randn(4, 3)
    bare = pluggy.PluginManager("spectra")
    bare.add_hookspecs(spectra.hookspecs)
    assert views_from_hook(bare.hook, "fc.weight", t, None, "fc") is None
    (v,) = views_from_hook(pm.hook, "fc.weight", t, None, "fc")
    assert v.name == "W" and torch.equal(v.tensor, t)

    with raising_plugin(pm, "spectra_as_matrices", ZeroDivisionError("boom")):
        with pytest.raises(PluginError, match=r"spectra_as_matrices raised for parameter 'fc.weight'.*boom"):
            views_from_hook(pm.hook, "fc.weight", t, None, "fc")
    assert isinstance(hook_error("spectra_include_param", "x", ValueError("v")), PluginError)
