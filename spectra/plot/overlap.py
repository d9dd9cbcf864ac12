"""Overlap figures: the k×k block of squared singular-vector overlaps of one layer at one step."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .figure import FAILED_COLOR, finish, new_figure
from .selection import as_frame, failed_mask, layer_label, pick_run, select_metric

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = ["plot_overlap_heatmap"]


def plot_overlap_heatmap(
    results_or_frame: Any,
    *,
    layer: str,
    step: int,
    metric: str = "overlap_left_before",
    view: str | None = None,
    matrix: str | None = None,
    run: str | None = None,
    annotate: bool | None = None,
    path: str | Path | None = None,
) -> "Figure":
    """The k×k block of squared singular-vector overlaps of one layer at one step, as a heatmap.

    Entry (i, j) is (u_i(W)ᵀ u_j(ΔW))² (or the right-vector / gradient variant named by ``metric``), stored
    in the table with ``index = i * k + j`` and ``k = sqrt(number of entries)``. Rows are W's singular
    vectors, columns the update's, both ordered by singular value (1 = largest). Colours span [0, 1].

    Args:
        results_or_frame: a :class:`spectra.results.Results` or its tidy frame.
        layer: layer name.
        step: training step.
        metric: an overlap metric (``overlap_left_before``, ``overlap_right_after``, ...).
        view: the layer's view; required only when the layer has several.
        matrix: ``update`` or ``grad``; required only when the metric is stored for several.
        run: which run, when the table holds several.
        annotate: write the values in the cells (default: when k ≤ 10).
        path: if given, save the figure as a PNG there.

    Raises:
        ValueError: unknown metric, scalar metric, missing layer/step/view/matrix (each lists what exists), or
            an entry count that is not a perfect square.
    """
    df = as_frame(results_or_frame)
    try:
        sub = pick_run(select_metric(df, metric, scalar=False), run)
    except ValueError as exc:
        if metric.startswith("overlap_") and metric not in set(df["metric"].dropna()):
            raise ValueError(f"{exc}. The k x k overlap blocks are recorded only on request: "
                             "analyzer_options={'alignment': {'overlaps': 'full'}}") from exc
        raise
    layers = list(dict.fromkeys(sub["layer"].astype(str)))
    if layer not in layers:
        raise ValueError(f"layer {layer!r} has no {metric!r} rows; available layers: {layers}")
    sub = sub[sub["layer"] == layer]
    steps = sorted(int(s) for s in sub["step"].dropna().unique())
    if step not in steps:
        raise ValueError(f"layer {layer!r} has no {metric!r} rows at step {step}; available steps: {steps}")
    sub = sub[sub["step"] == step]
    views = list(dict.fromkeys(sub["view"].astype(str)))
    if view is None:
        if len(views) > 1:
            raise ValueError(f"layer {layer!r} has several views {views}; pass view=...")
        view = views[0]
    elif view not in views:
        raise ValueError(f"layer {layer!r} has no view {view!r} for {metric!r}; available views: {views}")
    sub = sub[sub["view"] == view]
    mats = sorted(set(sub["matrix"].astype(str)))
    if matrix is None:
        if len(mats) > 1:
            raise ValueError(f"{metric!r} of {layer!r} is stored for several matrices {mats}; pass matrix=...")
        matrix = mats[0]
    elif matrix not in mats:
        raise ValueError(f"{metric!r} of {layer!r} has no rows for matrix={matrix!r}; available: {mats}")
    sub = sub[sub["matrix"] == matrix].drop_duplicates("index", keep="last")

    n = len(sub)
    k = math.isqrt(n)
    if k * k != n:
        raise ValueError(f"{metric!r} of {layer!r} at step {step} has {n} entries, not a k×k block")
    idx = sub["index"].to_numpy(dtype=np.int64)
    if idx.min() < 0 or idx.max() >= n:
        raise ValueError(f"{metric!r} indices must lie in [0, {n}); got [{idx.min()}, {idx.max()}]")
    block = np.full((k, k), np.nan)
    vals = sub["value"].to_numpy(dtype=float).copy()
    vals[failed_mask(sub)] = np.nan
    block[idx // k, idx % k] = vals

    side = float(np.clip(2.5 + 0.45 * k, 5.0, 11.0))
    fig = new_figure((side + 1.3, side))
    ax = fig.add_subplot()
    import matplotlib

    cmap = matplotlib.colormaps["viridis"].with_extremes(bad=FAILED_COLOR)
    im = ax.imshow(np.ma.masked_invalid(block), cmap=cmap, vmin=0.0, vmax=1.0, origin="upper",
                   interpolation="nearest", aspect="equal")
    other = "G" if matrix == "grad" else "ΔW"
    ax.set_ylabel("W singular vector i (1 = largest)")
    ax.set_xlabel(f"{other} singular vector j (1 = largest)")
    tick_step = max(1, k // 12)
    ticks = np.arange(0, k, tick_step)
    ax.set_xticks(ticks, [str(t + 1) for t in ticks])
    ax.set_yticks(ticks, [str(t + 1) for t in ticks])
    side_name = "left (u)" if "left" in metric else "right (v)" if "right" in metric else ""
    ax.set_title(f"{metric}: {layer_label(layer, view, bool(view))}, "
                 f"step {step}" + (f"\n{side_name} singular vectors, squared overlap" if side_name else ""),
                 fontsize=10)
    cbar = fig.colorbar(im, ax=ax, shrink=0.85)
    cbar.set_label("squared overlap (cos²)")
    if annotate if annotate is not None else k <= 10:
        for i in range(k):
            for j in range(k):
                v = block[i, j]
                if np.isfinite(v):
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if v < 0.6 else "black")
    return finish(fig, path)
