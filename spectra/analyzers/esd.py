"""The ``esd`` analyzer: norm metrics, Marchenko–Pastur description and (opt-in) the full spectrum."""

from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np

from ..functional.mp import count_outliers, mp_fit
from ..functional.norms import dtype_eps, noise_floor, norm_metrics
from ..hookspecs import hookimpl
from ..snapshot import Request
from .base import Analyzer, Measurement

__all__ = ["EsdAnalyzer", "EsdPlugin"]


class EsdAnalyzer(Analyzer):
    """Eigenvalue-spectrum metrics of each weight matrix (WeightWatcher names where the meaning is the same).

    Emits, for ``matrix="weight"``: ``num_evals, lambda_max, sv_max, norm, log_norm, log_spectral_norm,
    stable_rank, matrix_rank, entropy`` (see :mod:`spectra.functional.norms`); the robust MP description
    ``mp_sigma2, bulk_min, bulk_max, num_spikes, mp_softrank`` (see :mod:`spectra.functional.mp`); with
    ``reference_edge``, ``num_outliers`` = #{λ > edge} and ``lambda_max_over_edge``; with ``spectrum=True``,
    every eigenvalue as metric ``eigenvalue`` with ``index`` = its ascending rank.

    Args:
        spectrum: also emit the full spectrum (one row per eigenvalue).
        reference_edge: a fixed edge to count outliers against (e.g. the MP edge at initialisation). A float,
            or a callable ``(N, M) -> float`` evaluated per matrix.
        matrices: which matrices to describe: ``("weight",)`` by default; add ``"update"`` or ``"grad"`` for
            the spectra of updates and gradients.
        schedule: optional own schedule.
    """

    name = "esd"

    def __init__(
        self,
        *,
        spectrum: bool = False,
        reference_edge: float | Any = None,
        matrices: Iterable[str] = ("weight",),
        schedule: Any = None,
    ) -> None:
        super().__init__(schedule=schedule)
        self.spectrum = bool(spectrum)
        if reference_edge is not None and not callable(reference_edge):
            reference_edge = float(reference_edge)
            if not reference_edge > 0:
                raise ValueError(f"reference_edge must be positive, got {reference_edge!r}")
        self.reference_edge = reference_edge
        self.matrices = tuple(matrices)
        bad = [m for m in self.matrices if m not in ("weight", "update", "grad")]
        if bad or not self.matrices:
            raise ValueError(f"matrices must be a non-empty subset of ('weight', 'update', 'grad'), got {bad}")
        # capture what is asked for; a missing gradient (frozen step) just yields no grad rows
        self.needs = frozenset(self.matrices) | {"weight"}

    def config(self) -> dict[str, Any]:
        edge = self.reference_edge
        return {
            "spectrum": self.spectrum,
            "reference_edge": edge if not callable(edge) else getattr(edge, "__name__", repr(edge)),
            "matrices": list(self.matrices),
        }

    def requests(self, layer: Any) -> Iterable[Request]:
        """All eigenvalues of each described matrix the snapshot holds."""
        return [Request(kind, evals=True) for kind in self.matrices if layer.has(kind)]

    def analyze(self, layer: Any) -> Iterable[Measurement]:
        for kind in self.matrices:
            if not layer.has(kind):
                continue
            yield from self._describe(layer, kind)

    def _describe(self, layer: Any, kind: str) -> Iterable[Measurement]:
        lam = layer.evals(kind)
        rows, cols = layer.shape(kind)
        N, M = max(rows, cols), min(rows, cols)
        yield Measurement("num_evals", float(lam.size), kind)
        eps = dtype_eps(getattr(layer.tensors.get(kind), "dtype", None))
        zero = not lam.max() > 0
        floor = noise_floor(float(lam.max()), N, M, eps) if not zero else 0.0
        # matrix_rank: the eigenvalues above the rounding noise of the weights' own dtype
        for metric, value in norm_metrics(lam, N=N, rank_floor=floor).items():
            if math.isfinite(value):
                yield Measurement(metric, value, kind)
            else:
                why = "undefined for an all-zero matrix" if zero else f"{metric} is not finite ({value})"
                yield Measurement(metric, math.nan, kind, status="skipped" if zero else "warn", message=why)
        if not zero:
            # eigenvalues at the rounding-noise floor are zeros: a rank-r matrix without a bulk has r spikes
            fit = mp_fit(np.where(lam <= floor, 0.0, lam) / layer.eig_scale, N, M, normalize=layer.normalize)
            s = layer.eig_scale
            yield Measurement("mp_sigma2", fit.sigma2, kind)
            yield Measurement("bulk_min", fit.bulk_min * s, kind)
            yield Measurement("bulk_max", fit.bulk_max * s, kind)
            yield Measurement("num_spikes", float(fit.num_spikes), kind)
            yield Measurement("mp_softrank", fit.mp_softrank, kind)
        else:
            msg = "all eigenvalues are zero: no MP description"
            for metric in ("mp_sigma2", "bulk_min", "bulk_max", "num_spikes", "mp_softrank"):
                yield Measurement(metric, math.nan, kind, status="skipped", message=msg)
        if self.reference_edge is not None:
            edge = self.reference_edge(N, M) if callable(self.reference_edge) else self.reference_edge
            yield Measurement("num_outliers", float(count_outliers(lam, edge)), kind)
            yield Measurement("lambda_max_over_edge", float(lam.max() / edge), kind)
        if self.spectrum:
            for i, v in enumerate(lam):
                yield Measurement("eigenvalue", float(v), kind, index=i)


class EsdPlugin:
    """Built-in plugin registering :class:`EsdAnalyzer`."""

    @hookimpl
    def spectra_register_analyzers(self, register: Any) -> None:
        register(EsdAnalyzer)
