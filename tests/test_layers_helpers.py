"""Shared helpers of the spectra.layers tests (no tests here): a plugin manager with the built-in rules, and models."""

from __future__ import annotations

import contextlib
from typing import Iterator

import pluggy
import torch
from torch import nn

import spectra.hookspecs
from spectra import hookimpl
from spectra.layers.discovery import LayerEntry
from spectra.layers.rules import BuiltinLayerRules


def make_pm(**opts) -> pluggy.PluginManager:
    pm = pluggy.PluginManager("spectra")
    pm.add_hookspecs(spectra.hookspecs)
    pm.register(BuiltinLayerRules(**opts))
    return pm


@contextlib.contextmanager
def raising_plugin(pm: pluggy.PluginManager, hook_name: str, exc: Exception) -> Iterator[None]:
    """Register, for the ``with`` block, a plugin whose layer hook ``hook_name`` raises ``exc``."""

    def impl(self, name, param, module):
        raise exc

    plugin = type("Raises", (), {hook_name: hookimpl(impl)})()
    pm.register(plugin)
    try:
        yield
    finally:
        pm.unregister(plugin)


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
