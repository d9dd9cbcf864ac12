"""The figure itself: a fresh Agg-backed Figure, saving it, the DPI, the colours and the alpha bands.

Every plotting function of :mod:`spectra.plot` starts from :func:`new_figure` and ends with :func:`finish`,
so no figure ever touches ``pyplot`` or the user's backend. matplotlib is imported inside the functions.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "DPI",
    "ALPHA_BANDS",
    "BAND_METRICS",
    "DATA_COLOR",
    "FIT_COLOR",
    "XMIN_COLOR",
    "FAILED_COLOR",
    "new_figure",
    "finish",
    "uses_bands",
    "shade_alpha_bands",
    "metric_label",
    "line_colors",
]

#: Resolution of the saved PNGs.
DPI = 120
#: (low, high, label, colour) of the alpha regimes shaded behind alpha plots (WeightWatcher's 2 / 6 thresholds).
ALPHA_BANDS: tuple[tuple[float, float, str, str], ...] = (
    (0.0, 2.0, "α < 2: over-trained", "#d62728"),
    (2.0, 6.0, "2 ≤ α ≤ 6: typical", "#2ca02c"),
    (6.0, math.inf, "α > 6: under-trained / random-like", "#ff7f0e"),
)
#: Metrics drawn over the shaded alpha regimes.
BAND_METRICS = ("alpha", "alpha_hill")
#: Colours of the data, the fitted tail, the xmin marker and failed rows.
DATA_COLOR = "#1f77b4"
FIT_COLOR = "#d62728"
XMIN_COLOR = "#555555"
FAILED_COLOR = "#9e9e9e"


def new_figure(figsize: tuple[float, float]) -> "Figure":
    """A Figure bound to its own Agg canvas (independent of pyplot and the user's backend).

    Args:
        figsize: (width, height) in inches.

    Returns:
        An empty Figure with the constrained layout.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def finish(fig: "Figure", path: str | Path | None) -> "Figure":
    """Save ``fig`` as a PNG at ``path`` (if given) and return it.

    Args:
        fig: the figure to finish.
        path: where to write the PNG (DPI :data:`DPI`, tight bounding box); parent folders are created.
            ``None`` saves nothing.

    Returns:
        ``fig`` itself.
    """
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=DPI, bbox_inches="tight", format="png")
    return fig


def uses_bands(metric: str) -> bool:
    """Whether ``metric`` is drawn over the shaded alpha regimes (:data:`ALPHA_BANDS`)."""
    return metric in BAND_METRICS


def shade_alpha_bands(ax: "Axes", top: float) -> list:
    """Shade the alpha regimes behind the data.

    Args:
        ax: the Axes to shade.
        top: the upper y limit; bands starting above it are skipped, the last one is cut there.

    Returns:
        The band artists, for a legend.
    """
    handles = []
    for low, high, label, color in ALPHA_BANDS:
        if low >= top:
            continue
        handles.append(ax.axhspan(low, min(high, top), color=color, alpha=0.12, lw=0, label=label, zorder=0))
    return handles


def metric_label(metric: str) -> str:
    """The y-axis label of ``metric`` (a spelled-out name for alpha, the metric name otherwise)."""
    return {"alpha": "power-law exponent α", "alpha_hill": "Hill estimate α"}.get(metric, metric)


def line_colors(n: int) -> list:
    """``n`` distinct line colours: tab10, then tab20, then evenly spaced viridis for more lines.

    Args:
        n: the number of lines.

    Returns:
        A list of ``n`` RGBA tuples.
    """
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    cmap = colormaps["viridis"]
    return [cmap(i / max(n - 1, 1)) for i in range(n)]
