"""Cross-check against WeightWatcher 0.7.7, layer by layer, and a WeightWatcher-compatible analysis mode.

Three public entry points:

* :func:`analyze_ww_compatible` runs :func:`spectra.analyze` with WeightWatcher 0.7.7's conventions (its layer
  selection and skip rules, pooled Conv2d slices with λ×½, the 1e-5 fit threshold and its argmin-KS scan via
  ``fit="ww"``, its N/M bookkeeping for ``matrix_rank``/``entropy``). It does not need WeightWatcher installed.
* :func:`compare_weightwatcher` runs WeightWatcher (lazily imported, CUDA hidden, logging/warnings/stdout
  restored) and spectra on the same model and returns one row per layer: ``<metric>_spectra``, ``<metric>_ww``
  and ``<metric>_rel_diff`` for every metric both define, plus rows for layers only one side analyzed, with the
  reason.
* :func:`summarize_comparison` reduces that table to one row per metric (max abs/rel difference, layers
  compared) for the ``spectra compare-ww`` command.

Modules:
    runner: importing and running WeightWatcher without side effects on the host process.
    plan: WeightWatcher's view of the layers (ids, types, shapes, skip reasons) and its alignment with
        spectra's layer names.
    compatible: the WeightWatcher-compatible analysis mode.
    compare: the layer-by-layer comparison table and its summary.

The WeightWatcher 0.7.7 facts these modules rely on are written up in docs/weightwatcher.md.
"""

from __future__ import annotations

# The constants below are not in __all__ but were public attributes of the old single module.
from .compare import ALLOWED_WW_OPTIONS, COMPARED_METRICS, FIT_METRICS, compare_weightwatcher, summarize_comparison
from .compatible import WWEsdAnalyzer, analyze_ww_compatible
from .plan import WW_MAX_EVALS, WW_MAX_N, WW_MIN_EVALS, WWLayerPlan, ww_layer_plan
from .runner import WW_EPSILON, WW_EVALS_THRESH, WW_INSTALL_HINT, WW_VERSION, import_weightwatcher

# The old single module's private helpers, still reachable under their old names for
# benchmarks/bench_analyze.py (new code imports them from .runner).
from .runner import hygiene as _hygiene  # noqa: F401
from .runner import restore_longname as _restore_longname  # noqa: F401
from .runner import ww_cpu_path as _ww_cpu_path  # noqa: F401

__all__ = [
    "compare_weightwatcher",
    "summarize_comparison",
    "analyze_ww_compatible",
    "ww_layer_plan",
    "import_weightwatcher",
    "WWLayerPlan",
    "WWEsdAnalyzer",
    "COMPARED_METRICS",
    "WW_VERSION",
]
