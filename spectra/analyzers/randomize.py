"""The ``randomize`` analyzer: the ESD of an element-shuffled copy of W, the randomisation null."""

from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np

from ..functional.randomize import DISTANCES, randomized_esd
from ..hookspecs import hookimpl
from ..snapshot import Request
from .matrices import raw_stack
from ._seeding import layer_seed
from .base import Analyzer, Measurement

__all__ = ["RandomizeAnalyzer", "RandomizePlugin"]

_METRICS = ("rand_distance", "rand_lambda_max", "rand_bulk_max", "rand_num_spikes", "ww_softrank", "ww_maxdist")


class RandomizeAnalyzer(Analyzer):
    """WeightWatcher's ``randomize=True``, seeded: shuffle W's entries (each Conv slice separately), and
    compare the shuffled ESD with the real one (definitions in :mod:`spectra.functional.randomize`).

    Emits (``matrix="weight"``): ``rand_distance`` (distance between the real and shuffled ESDs),
    ``rand_lambda_max`` (largest shuffled eigenvalue), ``rand_bulk_max`` (MP edge of the shuffled ESD),
    ``rand_num_spikes`` (shuffled eigenvalues above that edge plus a Tracy–Widom scale: "correlation traps"),
    ``ww_softrank`` and ``ww_maxdist``; with ``spectrum=True`` every shuffled eigenvalue as
    ``rand_eigenvalue`` (index = ascending rank, as the ``esd`` analyzer's ``eigenvalue``).

    Args:
        seed: non-negative integer; each layer, view and step gets its own permutation derived from it.
            ``None`` draws fresh entropy (WeightWatcher's behaviour; not reproducible).
        distance: ``"js"`` (WeightWatcher's ``rand_distance``) or ``"wasserstein"`` (W1 between the ESDs of
            log10 λ).
        spectrum: also emit the shuffled spectrum.
        schedule: optional own schedule.
    """

    name = "randomize"

    def __init__(self, *, seed: int | None = 0, distance: str = "js", spectrum: bool = False,
                 schedule: Any = None) -> None:
        super().__init__(schedule=schedule)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
            raise ValueError(f"randomize option seed must be a non-negative integer or None, got {seed!r}")
        if distance not in DISTANCES:
            raise ValueError(f"randomize option distance must be one of {DISTANCES}, got {distance!r}")
        self.seed = None if seed is None else int(seed)
        self.distance = distance
        self.spectrum = bool(spectrum)

    def config(self) -> dict[str, Any]:
        return {"seed": self.seed, "distance": self.distance, "spectrum": self.spectrum}

    def requests(self, layer: Any) -> Iterable[Request]:
        """All eigenvalues of the weight (the real ESD the null is compared with)."""
        return [Request("weight", evals=True)]

    def analyze(self, layer: Any) -> Iterable[Measurement]:
        lam = layer.evals("weight")
        rows, cols = raw_stack(layer, "weight").shape[-2:]
        if not (np.max(lam) > 0):
            msg = "all eigenvalues are zero: nothing to randomise"
            for m in _METRICS:
                yield Measurement(m, math.nan, status="skipped", message=msg)
            return
        rng = np.random.default_rng(layer_seed(self.seed, layer))
        scale = layer.eig_scale / max(rows, cols) if layer.normalize else layer.eig_scale  # the view's λ units
        res = randomized_esd(raw_stack(layer, "weight"), rng, evals=lam, scale=scale, distance=self.distance)
        yield Measurement("rand_distance", res.rand_distance)
        yield Measurement("rand_lambda_max", res.rand_lambda_max)
        if min(rows, cols) < 2 or not res.rand_sigma2 > 0:
            why = ("a matrix with one row or column has no Marchenko-Pastur bulk" if min(rows, cols) < 2 else
                   "the shuffled ESD has median 0 (most entries are zero): no Marchenko-Pastur bulk to count "
                   "traps against")
            yield Measurement("rand_bulk_max", math.nan, status="skipped", message=why)
            yield Measurement("rand_num_spikes", math.nan, status="skipped", message=why)
        else:
            yield Measurement("rand_bulk_max", res.rand_bulk_max)
            yield Measurement("rand_num_spikes", float(res.rand_num_spikes))
        yield Measurement("ww_softrank", res.ww_softrank)
        yield Measurement("ww_maxdist", res.ww_maxdist)
        if self.spectrum:
            for i, v in enumerate(res.rand_evals):
                yield Measurement("rand_eigenvalue", float(v), index=i)


class RandomizePlugin:
    """Built-in plugin registering :class:`RandomizeAnalyzer`."""

    @hookimpl
    def spectra_register_analyzers(self, register: Any) -> None:
        register(RandomizeAnalyzer)
