"""Metric-over-step figures: one line per layer view (and per run / matrix kind when there are several)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from .figure import FAILED_COLOR, finish, line_colors, metric_label, new_figure, shade_alpha_bands, uses_bands
from .selection import as_frame, failed_mask, layer_label, pick_matrix, select_metric

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = ["plot_metric_vs_step"]


def plot_metric_vs_step(
    results_or_frame: Any,
    metric: str,
    *,
    layers: Sequence[str] | str | None = None,
    matrix: str | None = None,
    logx: bool = False,
    path: str | Path | None = None,
) -> "Figure":
    """A scalar metric against training step, one line per (layer, view) (and per run / matrix if several).

    Failed points (status ``"failed"`` or non-finite) leave gaps and are marked with a grey ``x`` on the
    x-axis. For alpha the 2 / 6 regimes are shaded.

    Args:
        results_or_frame: a :class:`spectra.results.Results` or its tidy frame.
        metric: scalar metric name.
        layers: layer names to draw (``None``: all).
        matrix: ``weight | update | grad``; ``None`` draws every matrix kind the metric has.
        logx: logarithmic step axis (steps ≤ 0 are then dropped by matplotlib; use ``symlog`` yourself).
        path: if given, save the figure as a PNG there.

    Raises:
        ValueError: unknown metric (lists the available ones), a vector-valued metric, a missing layer
            (lists the available ones), or a matrix the metric does not have.
    """
    df = as_frame(results_or_frame)
    sub = select_metric(df, metric, scalar=True)
    if matrix is not None:
        sub = pick_matrix(sub, matrix, metric)
    available = list(dict.fromkeys(sub["layer"].astype(str)))
    if layers is not None:
        wanted = [layers] if isinstance(layers, str) else list(layers)
        missing = [l for l in wanted if l not in available]
        if missing:
            raise ValueError(f"layers {missing} have no {metric!r} rows; available layers: {available}")
        sub = sub[sub["layer"].isin(wanted)]
    sub = sub.sort_values("step", kind="stable")

    keys = ["run", "layer", "view", "matrix"]
    groups = list(sub.groupby(keys, sort=False))
    multi_run = sub["run"].nunique() > 1
    multi_matrix = sub["matrix"].nunique() > 1
    multi_view = sub.groupby("layer")["view"].nunique().gt(1).to_dict()

    fig = new_figure((9.0, 5.0))
    ax = fig.add_subplot()
    cmap = line_colors(len(groups))
    failed_any = False
    for i, ((run, layer, view, mat), g) in enumerate(groups):
        label = layer_label(str(layer), str(view), multi_view.get(layer, False))
        if multi_matrix:
            label += f" ({mat})"
        if multi_run:
            label = f"{run}: {label}"
        steps = g["step"].to_numpy(dtype=float)
        vals = g["value"].to_numpy(dtype=float).copy()
        bad = failed_mask(g)
        vals[bad] = np.nan
        ax.plot(steps, vals, marker="o", ms=3.5, lw=1.5, color=cmap[i], label=label)
        if bad.any():
            failed_any = True
            ax.plot(steps[bad], np.zeros(bad.sum()), ls="none", marker="x", color=FAILED_COLOR, ms=7,
                    transform=ax.get_xaxis_transform(), clip_on=False, zorder=4)
    if uses_bands(metric):
        finite = sub["value"].to_numpy(dtype=float)
        finite = finite[np.isfinite(finite)]
        top = max(8.0, float(finite.max()) * 1.08) if finite.size else 8.0
        shade_alpha_bands(ax, top)
        ax.set_ylim(min(0.0, float(finite.min()) * 1.08) if finite.size else 0.0, top)
    if failed_any:
        ax.plot([], [], ls="none", marker="x", color=FAILED_COLOR, label="failed (on the axis)")
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel("step (completed optimizer steps)")
    ax.set_ylabel(metric_label(metric))
    mats = sorted(set(sub["matrix"].astype(str)))
    ax.set_title(f"{metric} vs step" + (f" ({', '.join(mats)})" if mats != ["weight"] else ""))
    ax.grid(True, alpha=0.3)
    ncol = 1 if len(groups) <= 18 else 2
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False, ncol=ncol)
    return finish(fig, path)
