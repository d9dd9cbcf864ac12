"""Matplotlib figures for spectra results: ESDs with fitted tails, alpha bars, metrics over steps, overlaps.

Every function builds a fresh :class:`matplotlib.figure.Figure` on an Agg canvas (the object-oriented API:
no ``pyplot``, no global state, the user's backend is never touched) and returns it. With ``path=`` the
figure is also saved as a PNG (120 dpi, tight bounding box; parent folders are created).

Table inputs are either a :class:`spectra.results.Results` or its tidy frame (DESIGN §5 columns
``run, step, layer, view, matrix, analyzer, metric, index, value, status, message``). Rows with
``status="failed"`` or a non-finite value are drawn as failures, never as numbers.

matplotlib is imported lazily inside the functions, so ``import spectra.plot`` is cheap.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "plot_esd",
    "plot_alpha_bars",
    "plot_metric_vs_step",
    "plot_overlap_heatmap",
    "plot_esd_snapshots",
    "ALPHA_BANDS",
]

DPI = 120
#: (low, high, label, colour) of the alpha regimes shaded behind alpha plots (WeightWatcher's 2 / 6 thresholds).
ALPHA_BANDS: tuple[tuple[float, float, str, str], ...] = (
    (0.0, 2.0, "α < 2: over-trained", "#d62728"),
    (2.0, 6.0, "2 ≤ α ≤ 6: typical", "#2ca02c"),
    (6.0, math.inf, "α > 6: under-trained / random-like", "#ff7f0e"),
)
_BAND_METRICS = ("alpha", "alpha_hill")
_DATA_COLOR = "#1f77b4"
_FIT_COLOR = "#d62728"
_XMIN_COLOR = "#555555"
_FAILED_COLOR = "#9e9e9e"


# --------------------------------------------------------------------------- helpers
def _new_figure(figsize: tuple[float, float]) -> "Figure":
    """A Figure bound to its own Agg canvas (independent of pyplot and the user's backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _finish(fig: "Figure", path: str | Path | None) -> "Figure":
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=DPI, bbox_inches="tight", format="png")
    return fig


def _as_frame(obj: Any) -> "pd.DataFrame":
    """Accept a Results (anything with ``to_pandas``) or a tidy DataFrame; return the tidy frame."""
    import pandas as pd

    if hasattr(obj, "to_pandas") and not isinstance(obj, pd.DataFrame):
        df = obj.to_pandas()
    elif isinstance(obj, pd.DataFrame):
        df = obj
    else:
        raise TypeError(f"expected spectra.Results or a tidy pandas DataFrame, got {type(obj).__name__}")
    needed = ("step", "layer", "metric", "value")
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise ValueError(f"not a tidy spectra table: missing columns {missing} (have {list(df.columns)})")
    df = df.copy()
    defaults = {"run": "", "view": "", "matrix": "weight", "status": "ok", "message": ""}
    for col, default in defaults.items():
        if col not in df.columns:
            df[col] = default
    if "index" not in df.columns:
        df["index"] = pd.array([pd.NA] * len(df), dtype="Int64")
    df["value"] = pd.to_numeric(df["value"], errors="coerce").astype("float64")
    for col in ("run", "view", "matrix", "status", "message"):
        df[col] = df[col].astype("string").fillna("")
    return df


def _failed_mask(df: "pd.DataFrame") -> np.ndarray:
    return (df["status"].to_numpy(dtype=object) == "failed") | ~np.isfinite(df["value"].to_numpy(dtype=float))


def _select_metric(df: "pd.DataFrame", metric: str, *, scalar: bool | None) -> "pd.DataFrame":
    """Rows of ``metric``; ``scalar=True`` keeps index-less rows, ``False`` indexed rows, ``None`` both."""
    available = sorted(set(df["metric"].dropna().astype(str)))
    if metric not in available:
        raise ValueError(f"unknown metric {metric!r}; available metrics: {available}")
    sub = df[df["metric"] == metric]
    if scalar is True:
        out = sub[sub["index"].isna()]
        if out.empty:
            scalars = sorted(set(df.loc[df["index"].isna(), "metric"].dropna().astype(str)))
            raise ValueError(f"metric {metric!r} is vector-valued (it has an index); scalar metrics: {scalars}")
        return out
    if scalar is False:
        out = sub[sub["index"].notna()]
        if out.empty:
            vectors = sorted(set(df.loc[df["index"].notna(), "metric"].dropna().astype(str)))
            raise ValueError(f"metric {metric!r} is scalar (no index); vector-valued metrics: {vectors}")
        return out
    return sub


def _pick_matrix(df: "pd.DataFrame", matrix: str | None, metric: str) -> "pd.DataFrame":
    present = sorted(set(df["matrix"].astype(str)))
    if matrix is None:
        if len(present) > 1 and "weight" in present:
            return df[df["matrix"] == "weight"]
        return df
    if matrix not in present:
        raise ValueError(f"metric {metric!r} has no rows for matrix={matrix!r}; available: {present}")
    return df[df["matrix"] == matrix]


def _pick_run(df: "pd.DataFrame", run: str | None) -> "pd.DataFrame":
    runs = sorted(set(df["run"].astype(str)))
    if run is not None:
        if run not in runs:
            raise ValueError(f"unknown run {run!r}; available runs: {runs}")
        return df[df["run"] == run]
    if len(runs) > 1:
        raise ValueError(f"the table holds several runs {runs}; pass run=... to choose one")
    return df


def _layer_label(layer: str, view: str, multi_view: bool) -> str:
    return f"{layer}[{view}]" if multi_view and view else layer


def _uses_bands(metric: str) -> bool:
    return metric in _BAND_METRICS


def _shade_alpha_bands(ax: "Axes", top: float) -> list:
    """Shade the alpha regimes behind the data; returns the band artists (for a legend)."""
    handles = []
    for low, high, label, color in ALPHA_BANDS:
        if low >= top:
            continue
        handles.append(ax.axhspan(low, min(high, top), color=color, alpha=0.12, lw=0, label=label, zorder=0))
    return handles


def _check_evals(evals: Any, name: str = "evals") -> np.ndarray:
    lam = np.asarray(evals, dtype=np.float64).ravel()
    if lam.size == 0:
        raise ValueError(f"{name} is empty: need at least one eigenvalue")
    lam = lam[np.isfinite(lam)]
    pos = lam[lam > 0]
    if pos.size == 0:
        raise ValueError(f"{name} has no positive finite eigenvalues to draw on a log scale")
    return pos


# --------------------------------------------------------------------------- ESD
def plot_esd(
    evals: Any,
    *,
    fit: Any = None,
    ax: "Axes | None" = None,
    path: str | Path | None = None,
    title: str | None = None,
    bins: int = 100,
) -> "Figure":
    """Empirical spectral density on log-log axes, with the fitted power-law tail.

    Left panel: histogram density of λ on log-spaced bins. Right panel: the empirical complementary CDF
    P(Λ ≥ λ). When ``fit`` is given, the fitted power law p(λ) ∝ λ^-α is drawn over [xmin, xmax] (scaled by
    the tail's share of all eigenvalues so it sits on the histogram) and xmin is marked by a vertical line.

    Args:
        evals: eigenvalues λ (1-D array-like). Non-positive and non-finite values are dropped (log axes).
        fit: a tail fit with attributes ``alpha, xmin, xmax, D, n_tail`` (and optionally ``method``,
            ``status``, ``message``), e.g. :class:`spectra.functional.TailFit`. A failed fit (status
            ``"failed"`` or non-finite alpha) is noted in the legend and not drawn.
        ax: draw a single density panel into this Axes instead of creating a new figure.
        path: if given, save the figure as a PNG there.
        title: figure title.
        bins: number of log-spaced histogram bins.

    Returns:
        The Figure (``ax.figure`` when ``ax`` is given).
    """
    if not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins!r}")
    lam = np.sort(_check_evals(evals))
    n = lam.size
    fit_info = _fit_info(fit, lam)

    if ax is None:
        fig = _new_figure((11.0, 4.4))
        ax_pdf, ax_ccdf = fig.subplots(1, 2)
    else:
        fig, ax_pdf, ax_ccdf = ax.figure, ax, None

    lo, hi = lam[0], lam[-1]
    if hi <= lo:
        lo, hi = lo / 1.5, hi * 1.5
    edges = np.logspace(np.log10(lo), np.log10(hi), int(bins) + 1)
    dens, _ = np.histogram(lam, bins=edges, density=True)
    ax_pdf.stairs(dens, edges, fill=True, color=_DATA_COLOR, alpha=0.45, label=f"ESD ({n} eigenvalues)")
    ax_pdf.stairs(dens, edges, color=_DATA_COLOR, lw=0.8)
    ax_pdf.set_xscale("log")
    ax_pdf.set_yscale("log")
    ax_pdf.set_xlabel("eigenvalue λ")
    ax_pdf.set_ylabel("density p(λ)")
    ax_pdf.set_title("spectral density (log-log)")

    if ax_ccdf is not None:
        ccdf = 1.0 - np.arange(n) / n
        ax_ccdf.step(lam, ccdf, where="post", color=_DATA_COLOR, lw=1.4, label="empirical P(Λ ≥ λ)")
        ax_ccdf.set_xscale("log")
        ax_ccdf.set_yscale("log")
        ax_ccdf.set_xlabel("eigenvalue λ")
        ax_ccdf.set_ylabel("P(Λ ≥ λ)")
        ax_ccdf.set_title("complementary CDF (log-log)")

    if fit_info is not None and fit_info["ok"]:
        alpha, xmin, xmax, frac = fit_info["alpha"], fit_info["xmin"], fit_info["xmax"], fit_info["frac"]
        x = np.logspace(np.log10(xmin), np.log10(xmax), 200)
        pdf = frac * (alpha - 1.0) / xmin * (x / xmin) ** (-alpha)
        ax_pdf.plot(x, pdf, color=_FIT_COLOR, lw=2.2, ls="--", label=fit_info["label"], gid="powerlaw_fit")
        axes = [ax_pdf] if ax_ccdf is None else [ax_pdf, ax_ccdf]
        for a in axes:
            a.axvline(xmin, color=_XMIN_COLOR, lw=1.2, ls=":", label=f"xmin = {xmin:.4g}", gid="xmin")
        if ax_ccdf is not None:
            ax_ccdf.plot(x, frac * (x / xmin) ** (1.0 - alpha), color=_FIT_COLOR, lw=2.2, ls="--",
                         label=f"fit, α = {alpha:.3g}", gid="powerlaw_fit_ccdf")
    elif fit_info is not None:
        ax_pdf.plot([], [], " ", label=fit_info["label"])

    for a in (ax_pdf, ax_ccdf):
        if a is not None:
            a.grid(True, which="major", alpha=0.3)
            a.legend(loc="lower left", fontsize=8, framealpha=0.85)
    if title is not None:
        if ax is None:
            fig.suptitle(title)
        else:
            ax_pdf.set_title(title)
    return _finish(fig, path)


def _fit_info(fit: Any, lam: np.ndarray) -> dict | None:
    """Extract what the ESD plot needs from a duck-typed tail fit."""
    if fit is None:
        return None
    missing = [a for a in ("alpha", "xmin") if not hasattr(fit, a)]
    if missing:
        raise TypeError(f"fit must have attributes alpha, xmin (and xmax, D, n_tail); {type(fit).__name__} "
                        f"lacks {missing}")
    status = str(getattr(fit, "status", "ok") or "ok")
    alpha = _float(getattr(fit, "alpha", None))
    xmin = _float(getattr(fit, "xmin", None))
    xmax = _float(getattr(fit, "xmax", None))
    D = _float(getattr(fit, "D", None))
    method = getattr(fit, "method", None)
    if status == "failed" or not (np.isfinite(alpha) and np.isfinite(xmin) and xmin > 0 and alpha > 1):
        msg = str(getattr(fit, "message", "") or "")
        return {"ok": False, "label": "power-law fit failed" + (f": {msg}" if msg else "")}
    if not np.isfinite(xmax) or xmax <= xmin:
        xmax = float(lam[-1])
    in_tail = int(np.count_nonzero((lam >= xmin) & (lam <= xmax)))
    n_tail = getattr(fit, "n_tail", None)
    n_tail = int(n_tail) if n_tail is not None and np.isfinite(_float(n_tail)) else in_tail
    frac = max(in_tail, 1) / lam.size
    parts = [f"power law α = {alpha:.3g}"]
    if np.isfinite(D):
        parts.append(f"D = {D:.3g}")
    parts.append(f"tail n = {n_tail}")
    label = ", ".join(parts) + (f" ({method})" if method else "")
    return {"ok": True, "alpha": alpha, "xmin": xmin, "xmax": xmax, "frac": frac, "label": label}


def _float(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


# --------------------------------------------------------------------------- alpha bars
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
    df = _as_frame(results_or_frame)
    sub = _pick_run(_pick_matrix(_select_metric(df, metric, scalar=True), matrix, metric), run)
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
    labels = [_layer_label(str(l), str(v), multi[l]) for l, v in zip(sub["layer"], sub["view"])]
    values = sub["value"].to_numpy(dtype=float)
    failed = _failed_mask(sub)
    ok_vals = values[~failed]

    bands = _uses_bands(metric)
    top = float(np.nanmax(ok_vals)) * 1.12 if ok_vals.size else 1.0
    if bands:
        top = max(top, 8.0)
    bottom = min(0.0, float(np.nanmin(ok_vals)) * 1.12) if ok_vals.size else 0.0

    nbar = len(labels)
    width = float(np.clip(2.5 + 0.32 * nbar, 6.0, 28.0))
    fig = _new_figure((width, 4.8))
    ax = fig.add_subplot()
    handles = _shade_alpha_bands(ax, top) if bands else []

    x = np.arange(nbar)
    heights = np.where(failed, top - bottom, values)
    bottoms = np.where(failed, bottom, 0.0)
    colors = [_FAILED_COLOR if f else _DATA_COLOR for f in failed]
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

        handles.append(Patch(facecolor=_FAILED_COLOR, alpha=0.35, hatch="//", edgecolor="black",
                             label="failed fit"))
    ax.set_xticks(x, labels, rotation=60 if nbar > 4 else 0, ha="right" if nbar > 4 else "center",
                  fontsize=8 if nbar > 12 else 9)
    ax.set_xlim(-0.6, nbar - 0.4)
    ax.set_ylim(bottom, top)
    ax.set_ylabel(_metric_label(metric))
    ax.set_xlabel("layer")
    mat = ", ".join(sorted(set(sub["matrix"].astype(str))))
    ax.set_title(f"{metric} per layer at step {step}" + (f" ({mat})" if mat and mat != "weight" else ""))
    ax.grid(True, axis="y", alpha=0.3, zorder=1)
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return _finish(fig, path)


def _metric_label(metric: str) -> str:
    return {"alpha": "power-law exponent α", "alpha_hill": "Hill estimate α"}.get(metric, metric)


# --------------------------------------------------------------------------- metric vs step
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
    df = _as_frame(results_or_frame)
    sub = _select_metric(df, metric, scalar=True)
    if matrix is not None:
        sub = _pick_matrix(sub, matrix, metric)
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

    fig = _new_figure((9.0, 5.0))
    ax = fig.add_subplot()
    cmap = _line_colors(len(groups))
    failed_any = False
    for i, ((run, layer, view, mat), g) in enumerate(groups):
        label = _layer_label(str(layer), str(view), multi_view.get(layer, False))
        if multi_matrix:
            label += f" ({mat})"
        if multi_run:
            label = f"{run}: {label}"
        steps = g["step"].to_numpy(dtype=float)
        vals = g["value"].to_numpy(dtype=float).copy()
        bad = _failed_mask(g)
        vals[bad] = np.nan
        ax.plot(steps, vals, marker="o", ms=3.5, lw=1.5, color=cmap[i], label=label)
        if bad.any():
            failed_any = True
            ax.plot(steps[bad], np.zeros(bad.sum()), ls="none", marker="x", color=_FAILED_COLOR, ms=7,
                    transform=ax.get_xaxis_transform(), clip_on=False, zorder=4)
    if _uses_bands(metric):
        finite = sub["value"].to_numpy(dtype=float)
        finite = finite[np.isfinite(finite)]
        top = max(8.0, float(finite.max()) * 1.08) if finite.size else 8.0
        _shade_alpha_bands(ax, top)
        ax.set_ylim(min(0.0, float(finite.min()) * 1.08) if finite.size else 0.0, top)
    if failed_any:
        ax.plot([], [], ls="none", marker="x", color=_FAILED_COLOR, label="failed (on the axis)")
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel("step (completed optimizer steps)")
    ax.set_ylabel(_metric_label(metric))
    mats = sorted(set(sub["matrix"].astype(str)))
    ax.set_title(f"{metric} vs step" + (f" ({', '.join(mats)})" if mats != ["weight"] else ""))
    ax.grid(True, alpha=0.3)
    ncol = 1 if len(groups) <= 18 else 2
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False, ncol=ncol)
    return _finish(fig, path)


def _line_colors(n: int) -> list:
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    cmap = colormaps["viridis"]
    return [cmap(i / max(n - 1, 1)) for i in range(n)]


# --------------------------------------------------------------------------- overlap heatmap
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
    df = _as_frame(results_or_frame)
    sub = _pick_run(_select_metric(df, metric, scalar=False), run)
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
    vals[_failed_mask(sub)] = np.nan
    block[idx // k, idx % k] = vals

    side = float(np.clip(2.5 + 0.45 * k, 5.0, 11.0))
    fig = _new_figure((side + 1.3, side))
    ax = fig.add_subplot()
    import matplotlib

    cmap = matplotlib.colormaps["viridis"].with_extremes(bad=_FAILED_COLOR)
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
    ax.set_title(f"{metric}: {_layer_label(layer, view, bool(view))}, "
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
    return _finish(fig, path)


# --------------------------------------------------------------------------- ESD snapshots
def plot_esd_snapshots(
    evals_by_step: Mapping[int, Any],
    *,
    path: str | Path | None = None,
    title: str | None = None,
    bins: int | None = None,
    logy: bool = False,
) -> "Figure":
    """ESDs of one layer at several steps, overlaid as densities of log10 λ coloured by step.

    All steps share the same bins so the shapes compare directly. Each step is one line through the bin
    centres, coloured from early (dark) to late (light) on the viridis scale with a colour bar in steps; a
    triangle on the top edge marks each step's largest eigenvalue, so outliers leaving the bulk stay visible.

    Args:
        evals_by_step: ``{step: eigenvalues}``; non-positive and non-finite eigenvalues are dropped.
        path: if given, save the figure as a PNG there.
        title: axes title.
        bins: number of shared bins in log10 λ (default: about 2·sqrt(n), between 10 and 80).
        logy: logarithmic density axis (shows sparse tails better).

    Raises:
        ValueError: an empty mapping, or a step with no positive eigenvalues.
    """
    if not isinstance(evals_by_step, Mapping) or len(evals_by_step) == 0:
        raise ValueError("evals_by_step must be a non-empty mapping {step: eigenvalues}")
    if bins is not None and (not isinstance(bins, (int, np.integer)) or bins < 1):
        raise ValueError(f"bins must be a positive integer or None, got {bins!r}")
    steps = sorted(int(s) for s in evals_by_step)
    logs = {s: np.log10(_check_evals(evals_by_step[s], name=f"eigenvalues at step {s}")) for s in steps}
    if bins is None:
        n_min = min(v.size for v in logs.values())
        bins = int(np.clip(round(2 * math.sqrt(n_min)), 10, 80))
    lo = min(float(v.min()) for v in logs.values())
    hi = max(float(v.max()) for v in logs.values())
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, int(bins) + 1)
    centres = 0.5 * (edges[:-1] + edges[1:])

    import matplotlib
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import ListedColormap, Normalize

    fig = _new_figure((9.0, 5.0))
    ax = fig.add_subplot()
    norm = Normalize(vmin=steps[0], vmax=steps[-1] if steps[-1] > steps[0] else steps[0] + 1)
    # viridis without its palest yellows, so the latest step stays readable on white
    cmap = ListedColormap(matplotlib.colormaps["viridis"](np.linspace(0.0, 0.85, 256)), name="viridis_dark")
    for s in steps:
        dens, _ = np.histogram(logs[s], bins=edges, density=True)
        color = cmap(norm(s))
        ax.plot(centres, np.where(dens > 0, dens, np.nan) if logy else dens, color=color, lw=1.8,
                label=f"step {s}", gid=f"esd_step_{s}")
        ax.plot([logs[s].max()], [1.0], marker="v", ms=8, color=color, ls="none", clip_on=False,
                transform=ax.get_xaxis_transform(), gid=f"lambda_max_step_{s}")
    if logy:
        ax.set_yscale("log")
    ax.plot([], [], marker="v", color="0.3", ls="none", label="λ_max (top edge)")
    ax.set_xlabel("log10 eigenvalue λ")
    ax.set_ylabel("density of log10 λ")
    ax.set_title(title or "ESD over training", pad=12)
    ax.grid(True, alpha=0.3)
    cbar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax)
    cbar.set_label("step")
    if len(steps) <= 8:
        ax.legend(loc="upper left", fontsize=8, frameon=True, framealpha=0.85)
    return _finish(fig, path)
