"""Per-layer bar charts of one scalar metric (alpha by default) at one step."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .figure import DATA_COLOR, FAILED_COLOR, finish, metric_label, new_figure, shade_alpha_bands, uses_bands
from .selection import as_frame, failed_mask, layer_label, pick_matrix, pick_run, select_metric

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = ["plot_alpha_bars"]


def plot_alpha_bars(
    results_or_frame: Any,
    *,
    step: int | None = None,
    metric: str = "alpha",
    matrix: str | None = None,
    run: str | None = None,
    path: str | Path | None = None,
) -> "Figure":
    """Per-layer bar chart of a scalar metric (alpha by default) at one step.

    For alpha, the regimes α < 2 (over-trained), 2–6 (typical) and > 6 (under-trained / random-like) are
    shaded. Failed fits are drawn as grey hatched bars labelled "failed" (their value is not plotted).

    Args:
        results_or_frame: a :class:`spectra.results.Results` or its tidy frame.
        step: the step to show; ``None`` takes the latest step that has ``metric``.
        metric: a scalar metric name (``alpha``, ``alpha_hill``, ``stable_rank``, ...).
        matrix: ``weight | update | grad``; ``None`` prefers ``weight`` when several are present.
        run: which run, when the table holds several.
        path: if given, save the figure as a PNG there.

    Returns:
        The Figure. Its single Axes holds one bar per layer view, in table order.

    Raises:
        ValueError: unknown metric (the message lists the available ones), unknown step, run or matrix.
    """
    df = as_frame(results_or_frame)
    sub = pick_run(pick_matrix(select_metric(df, metric, scalar=True), matrix, metric), run)
    steps = sorted(int(s) for s in sub["step"].dropna().unique())
    if step is None:
        if not steps:
            raise ValueError(f"metric {metric!r} has no rows with a step")
        step = steps[-1]
    elif step not in steps:
        raise ValueError(f"no {metric!r} rows at step {step}; available steps: {steps}")
    sub = sub[sub["step"] == step].drop_duplicates(["layer", "view"], keep="last")

    views_per_layer = sub.groupby("layer", sort=False)["view"].nunique()
    multi = {layer: n > 1 for layer, n in views_per_layer.items()}
    labels = [layer_label(str(l), str(v), multi[l]) for l, v in zip(sub["layer"], sub["view"])]
    values = sub["value"].to_numpy(dtype=float)
    failed = failed_mask(sub)
    ok_vals = values[~failed]

    bands = uses_bands(metric)
    top = float(np.nanmax(ok_vals)) * 1.12 if ok_vals.size else 1.0
    if bands:
        top = max(top, 8.0)
    bottom = min(0.0, float(np.nanmin(ok_vals)) * 1.12) if ok_vals.size else 0.0

    nbar = len(labels)
    width = float(np.clip(2.5 + 0.32 * nbar, 6.0, 28.0))
    fig = new_figure((width, 4.8))
    ax = fig.add_subplot()
    handles = shade_alpha_bands(ax, top) if bands else []

    x = np.arange(nbar)
    heights = np.where(failed, top - bottom, values)
    bottoms = np.where(failed, bottom, 0.0)
    colors = [FAILED_COLOR if f else DATA_COLOR for f in failed]
    bars = ax.bar(x, heights, bottom=bottoms, color=colors, edgecolor="black", linewidth=0.6, zorder=2,
                  width=0.75, label="_metric_bars")
    for bar, f in zip(bars, failed):
        if f:
            bar.set_hatch("//")
            bar.set_alpha(0.35)
            ax.text(bar.get_x() + bar.get_width() / 2, bottom + 0.5 * (top - bottom), "failed", rotation=90,
                    ha="center", va="center", fontsize=8, color="black", zorder=3)
    if nbar <= 30 and ok_vals.size:
        for xi, v, f in zip(x, values, failed):
            if not f:
                ax.annotate(f"{v:.2f}", (xi, v), xytext=(0, 2), textcoords="offset points", ha="center",
                            va="bottom", fontsize=7, zorder=3)
    if failed.any():
        from matplotlib.patches import Patch

        handles.append(Patch(facecolor=FAILED_COLOR, alpha=0.35, hatch="//", edgecolor="black",
                             label="failed fit"))
    ax.set_xticks(x, labels, rotation=60 if nbar > 4 else 0, ha="right" if nbar > 4 else "center",
                  fontsize=8 if nbar > 12 else 9)
    ax.set_xlim(-0.6, nbar - 0.4)
    ax.set_ylim(bottom, top)
    ax.set_ylabel(metric_label(metric))
    ax.set_xlabel("layer")
    mat = ", ".join(sorted(set(sub["matrix"].astype(str))))
    ax.set_title(f"{metric} per layer at step {step}" + (f" ({mat})" if mat and mat != "weight" else ""))
    ax.grid(True, axis="y", alpha=0.3, zorder=1)
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return finish(fig, path)
