"""A third-party analyzer as a plugin: the nuclear norm and the effective rank of every weight matrix.

A real package would register ``EffectiveRankPlugin`` under the ``spectra`` entry-point group in its
pyproject.toml; here it is passed explicitly with ``plugins=[...]``.
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np
import torch
from torch import nn

import spectra
from spectra import Analyzer, Measurement


class EffectiveRank(Analyzer):
    """Roy & Vetterli's effective rank exp(H(σ/Σσ)) and the nuclear norm Σσ."""

    name = "effective_rank"
    needs = frozenset({"weight"})

    def analyze(self, layer) -> Iterable[Measurement]:
        s = np.sqrt(np.clip(layer.evals(), 0, None))   # shared, memoized eigenvalues
        p = s / s.sum()
        p = p[p > 0]
        yield Measurement("nuclear_norm", float(s.sum()))
        yield Measurement("effective_rank", float(math.exp(-(p * np.log(p)).sum())))


class EffectiveRankPlugin:
    @spectra.hookimpl
    def spectra_register_analyzers(self, register):
        register(EffectiveRank)


def main() -> "object":
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 8))
    res = spectra.analyze(model, analyzers=("esd", "effective_rank"), plugins=[EffectiveRankPlugin()])
    wide = res.to_wide()
    return wide[["layer", "effective_rank", "nuclear_norm", "stable_rank"]]


if __name__ == "__main__":
    print(main().to_string(index=False))
