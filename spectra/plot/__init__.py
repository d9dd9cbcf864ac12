"""Matplotlib figures for spectra results: ESDs with fitted tails, alpha bars, metrics over steps, overlaps.

Every function builds a fresh :class:`matplotlib.figure.Figure` on an Agg canvas (the object-oriented API:
no ``pyplot``, no global state, the user's backend is never touched) and returns it. With ``path=`` the
figure is also saved as a PNG (120 dpi, tight bounding box; parent folders are created).

Table inputs are either a :class:`spectra.Results` or its tidy frame (columns ``run, step, layer, view,
matrix, analyzer, metric, index, value, status, message``; see docs/design.md, 'The tidy table'). Rows with
``status="failed"`` or a non-finite value are drawn as failures, never as numbers.

matplotlib is imported lazily inside the functions, so ``import spectra.plot`` is cheap.

Modules:
    figure: a new Agg-backed figure, saving it, the DPI, colours and alpha bands.
    selection: turning a Results or tidy frame into the rows a figure needs (metric, matrix, run, labels).
    esd: :func:`plot_esd` and :func:`plot_esd_snapshots`.
    bars: :func:`plot_alpha_bars`.
    steps: :func:`plot_metric_vs_step`.
    overlap: :func:`plot_overlap_heatmap`.
"""

from __future__ import annotations

from .bars import plot_alpha_bars
from .esd import plot_esd, plot_esd_snapshots
from .estimators import plot_farms_alpha, plot_shuffled_esd, plot_tail_tests  # noqa: F401
from .figure import ALPHA_BANDS, DPI
from .overlap import plot_overlap_heatmap
from .steps import plot_metric_vs_step

__all__ = [
    "plot_esd",
    "plot_alpha_bars",
    "plot_metric_vs_step",
    "plot_overlap_heatmap",
    "plot_esd_snapshots",
    "plot_tail_tests",
    "plot_farms_alpha",
    "plot_shuffled_esd",
    "ALPHA_BANDS",
]
