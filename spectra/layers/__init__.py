"""Which parameters are matrices, and how to view them: layer discovery with explicit skip reasons.

Four modules, one job each:

* :mod:`spectra.layers.views`: :class:`MatrixView` (one matrix, or a stack whose eigenvalues are pooled, seen
  in a parameter), :class:`ViewShape`, and the coercion of ``spectra_as_matrices`` answers into views.
* :mod:`spectra.layers.rules`: :class:`BuiltinLayerRules`, the built-in answers to the layer hooks (Linear,
  Conv kernel slices pooled or separate, Embedding, fused attention q/k/v, RNN gates, transposed Conv1D,
  generic ≥ 2-D), registered ``trylast`` so third-party plugins override them.
* :mod:`spectra.layers.discovery`: :func:`discover_layers` (one :class:`LayerEntry` per parameter, analyzed
  or skipped with a reason), tied weights, :func:`layers_table_rows` and :func:`unwrap_model`.
* :mod:`spectra.layers.selection`: the ``layers=`` selectors (glob, regex, module types, predicate) and
  :func:`selector_miss_message`, the warning for a selector that matches no parameter.

Every public name is re-exported here; the plugin registry loads the built-in rules as
``spectra.layers:BuiltinLayerRules``.
"""

from __future__ import annotations

from . import discovery, rules, selection
from .discovery import LayerEntry, discover_layers, layers_table_rows, strip_compile_prefix, unwrap_model
from .rules import CONV_SLICE_MODES, GRU_GATES, LSTM_GATES, QKV, REASON_1D, BuiltinLayerRules, skip_reason_for
from .selection import describe_selector, selector_miss_message, selector_predicate
from .views import MatrixView, ViewShape

__all__ = ["MatrixView", "ViewShape", *discovery.__all__, *rules.__all__, *selection.__all__]
