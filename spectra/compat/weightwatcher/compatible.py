"""The WeightWatcher-compatible analysis mode: :func:`spectra.analyze` with WeightWatcher 0.7.7's conventions.

:func:`analyze_ww_compatible` keeps WeightWatcher's layer selection and skip rules (from
:func:`~spectra.compat.weightwatcher.ww_layer_plan`), pools Conv2d slices with λ×½, fits with ``fit="ww"``
and reports the norm metrics with WeightWatcher's N/M bookkeeping through :class:`WWEsdAnalyzer`. It does not
need WeightWatcher installed. The conventions are tabulated in docs/weightwatcher.md.
"""

from __future__ import annotations

import warnings
from typing import Any, Iterable, Mapping

from ...analyzers.base import Analyzer, Measurement
from .plan import WW_MAX_EVALS, WW_MAX_N, WW_MIN_EVALS, name_matcher, param_name, ww_layer_plan
from .runner import WW_EPSILON, WW_EVALS_THRESH, WW_VERSION

__all__ = ["WWEsdAnalyzer", "analyze_ww_compatible", "WW_SHAPE_METRICS"]

# spectra metric name -> emitted name (the WW-convention analyzer prefixes N/M/Q/rf to avoid clashing with the
# layers table's N/M/Q in ``Results.to_wide``)
WW_SHAPE_METRICS = {"ww_N": "N", "ww_M": "M", "ww_Q": "Q", "ww_rf": "rf"}


class WWEsdAnalyzer(Analyzer):
    """ESD metrics with WeightWatcher 0.7.7's definitions and N/M bookkeeping (the ww-compatible ``esd``).

    Emits ``num_evals, lambda_max, sv_max, norm, log_norm, log_spectral_norm, stable_rank, matrix_rank,
    entropy`` (see :mod:`spectra.functional.norms`; ``matrix_rank``/``entropy`` use WeightWatcher's N, which
    for Conv2d carries its per-slice N/M swap) and WeightWatcher's shape columns as ``ww_N, ww_M, ww_Q,
    ww_rf``. No MP fit (WeightWatcher runs one only with ``mp_fit=True``).
    """

    name = "ww_esd"

    def __init__(self, *, shapes: Mapping[str, tuple[int, int, int]] | None = None, schedule: Any = None) -> None:
        """Args:
            shapes: layer name → WeightWatcher's (N, M, rf), e.g. from :func:`ww_layer_plan`; layers not in it
                get N = max dim, M = min dim (Conv stacks: WeightWatcher's swap rule, assuming its channel
                detection succeeds).
            schedule: optional own schedule.
        """
        super().__init__(schedule=schedule)
        self.shapes = dict(shapes or {})

    def config(self) -> dict[str, Any]:
        """The analyzer's settings, for the table's attrs."""
        return {"conventions": "weightwatcher-0.7.7", "shapes_from_plan": len(self.shapes)}

    def analyze(self, layer: Any) -> Iterable[Measurement]:
        """Yield the norm metrics and WeightWatcher's shape columns of one layer view.

        Args:
            layer: a :class:`spectra.snapshot.LayerState` with its ``weight`` eigenvalues.

        Yields:
            One :class:`Measurement` per metric.
        """
        from ...functional.norms import norm_metrics

        lam = layer.evals("weight")
        shape = tuple(int(s) for s in layer.tensors["weight"].shape)
        if layer.view == "W" and layer.layer in self.shapes:
            N, M, rf = self.shapes[layer.layer]
        elif len(shape) == 3:  # pooled kernel slices (rf, out, in)
            rf, out, inn = shape
            N, M = (inn, out) if (out < inn and rf % 2 == 1) else (out, inn)
        else:
            rf, N, M = 1, max(shape), min(shape)
        yield Measurement("num_evals", float(lam.size))
        metrics = norm_metrics(lam, N=N)
        for key in ("lambda_max", "sv_max", "norm", "log_norm", "log_spectral_norm", "stable_rank",
                    "matrix_rank", "entropy"):
            yield Measurement(key, float(metrics[key]))
        yield Measurement("ww_N", float(N))
        yield Measurement("ww_M", float(M))
        yield Measurement("ww_Q", N / M if M else -1.0)
        yield Measurement("ww_rf", float(rf))


def analyze_ww_compatible(
    obj: Any,
    *,
    layers: Any = None,
    fit: str = "ww",
    ww_skips: bool = True,
    min_evals: int = WW_MIN_EVALS,
    max_evals: int = WW_MAX_EVALS,
    max_N: int = WW_MAX_N,
    esd_method: str = "auto",
    progress: bool | None = None,
) -> Any:
    """Run :func:`spectra.analyze` so that its numbers reproduce WeightWatcher 0.7.7 (CPU path).

    Conventions: λ = σ² of each module's ``weight`` (no 1/N); Conv2d kernel slices pooled with λ×½; the
    power-law fit drops λ ≤ 1e-5 and scans every eigenvalue but the largest as xmin with no minimum tail
    (``fit="ww"``, including 0.7.7's small-N rule); norm metrics on all eigenvalues; ``matrix_rank`` and
    ``entropy`` with WeightWatcher's N (ε = 1e-10). WeightWatcher squares scipy's singular values; spectra's
    default ``esd_method="auto"`` (Gram + eigh, SVD when ill-conditioned) gives the same eigenvalues to ~1e-12
    relative and is 2-4x faster; ``"svd"`` mirrors WeightWatcher's route exactly.

    Args:
        obj: an ``nn.Module``, a state_dict or a checkpoint path (as :func:`spectra.analyze`).
        layers: keep only layers whose name (or ``<name>.weight``) matches: a glob, a compiled regex, or a list.
        fit: the ``tail`` fit method; ``"ww"`` reproduces WeightWatcher, others show spectra's own fits.
        ww_skips: apply WeightWatcher's layer selection and skip rules (type, ``min_evals``, ``max_evals``,
            ``max_N``). ``False`` analyzes every weight spectra would (used by :func:`compare_weightwatcher`
            to report what WeightWatcher misses); WeightWatcher's reasons are in ``attrs["ww_skipped"]``
            either way.
        min_evals, max_evals, max_N: WeightWatcher's thresholds.
        esd_method: passed to :func:`spectra.analyze`.
        progress: passed to :func:`spectra.analyze`.

    Returns:
        :class:`spectra.Results`. Metrics (wide view): ``alpha, xmin, xmax, D, sigma, n_tail, num_pl_spikes,
        alpha_weighted, log_alpha_norm`` (``tail``), ``num_evals, lambda_max, sv_max, norm, log_norm,
        log_spectral_norm, stable_rank, matrix_rank, entropy, ww_N, ww_M, ww_Q, ww_rf`` (``ww_esd``).
        ``attrs["ww_compat"]`` records the settings, ``attrs["ww_skipped"]`` maps layer → WeightWatcher's reason.
    """
    from ...analyze import analyze, load_target
    from ...analyzers.tail import TailAnalyzer

    target = load_target(obj)
    plan = ww_layer_plan(target, min_evals=min_evals, max_evals=max_evals, max_N=max_N)
    match = name_matcher(layers)
    ww_keep = {p.layer for p in plan if p.analyzed}
    shapes = {p.layer: (p.N, p.M, p.rf) for p in plan if p.N > 0}
    if ww_skips:
        def select(layer: str, param: Any, module: Any) -> bool:
            return layer in ww_keep and match(layer, param_name(layer))
    else:
        def select(layer: str, param: Any, module: Any) -> bool:
            return match(layer, param_name(layer))

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="spectra.analyze: nothing to analyze")
        res = analyze(
            target,
            analyzers=[TailAnalyzer(method=fit, hill=False), WWEsdAnalyzer(shapes=shapes)],
            layers=select,
            fit=fit,
            conv_slices="pooled",
            normalize=False,
            esd_method=esd_method,
            progress=progress,
        )
    res.attrs["ww_compat"] = {
        "ww_version": WW_VERSION, "fit": fit, "ww_skips": ww_skips, "min_evals": min_evals,
        "max_evals": max_evals, "max_N": max_N, "evals_thresh": WW_EVALS_THRESH, "entropy_epsilon": WW_EPSILON,
        "conv2d": "pooled slices, eigenvalues x1/2", "esd_method": esd_method,
    }  # fmt: skip
    res.attrs["ww_skipped"] = {p.layer: p.skip_reason or "" for p in plan if not p.analyzed}
    return res
