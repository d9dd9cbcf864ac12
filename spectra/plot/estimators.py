"""Figures of the tail tests and the new estimators: LLR and p-values per layer, FARMS vs plain α, and the
shuffled-vs-real ESD overlay of the randomisation null.

Inputs are a :class:`spectra.Results` or its tidy frame (``tail`` with ``compare=True``/``bootstrap=N``,
``farms``, ``randomize``), except :func:`plot_shuffled_esd`, which also takes two spectra directly. Rows that
failed or were skipped are drawn as grey hatched "no value" bars, never as numbers.
"""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from .figure import DATA_COLOR, FAILED_COLOR, FIT_COLOR, XMIN_COLOR, finish, line_colors, new_figure, \
    shade_alpha_bands
from .selection import as_frame, layer_label, pick_run

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["plot_tail_tests", "plot_farms_alpha", "plot_shuffled_esd"]

_LLR = ("llr_exponential", "llr_lognormal", "llr_tpl")
_P = ("p_exponential", "p_lognormal", "p_tpl", "pl_pvalue")
_LABEL = MappingProxyType({
    "llr_exponential": "vs exponential", "llr_lognormal": "vs lognormal", "llr_tpl": "vs truncated PL",
    "p_exponential": "vs exponential", "p_lognormal": "vs lognormal", "p_tpl": "vs truncated PL",
    "pl_pvalue": "bootstrap GoF", "alpha": "α (tail fit)", "alpha_hill": "α Hill-median", "alpha_farms": "α FARMS",
})


def _wide(df: "pd.DataFrame", metrics: Sequence[str], step: int | None, run: str | None, what: str):
    """Rows of ``metrics`` (weight, scalar) at one step: (layer labels, {metric: values}, {metric: ok mask}, step)."""
    sub = df[df["metric"].isin(metrics) & df["index"].isna() & (df["matrix"] == "weight")]
    present = [m for m in metrics if (sub["metric"] == m).any()]
    if not present:
        have = sorted(set(df["metric"].dropna().astype(str)))
        raise ValueError(f"{what} needs at least one of {list(metrics)}; the table has {have}")
    sub = pick_run(sub, run)
    steps = sorted(int(s) for s in sub["step"].dropna().unique())
    if step is None:
        step = steps[-1]
    elif step not in steps:
        raise ValueError(f"no {what} rows at step {step}; available steps: {steps}")
    sub = sub[sub["step"] == step].drop_duplicates(["layer", "view", "metric"], keep="last")
    keys = list(dict.fromkeys(zip(sub["layer"].astype(str), sub["view"].astype(str))))
    multi = {}
    for layer, _ in keys:
        multi[layer] = multi.get(layer, 0) + 1
    labels = [layer_label(l, v, multi[l] > 1) for l, v in keys]
    pos = {k: i for i, k in enumerate(keys)}
    values = {m: np.full(len(keys), np.nan) for m in present}
    ok = {m: np.zeros(len(keys), dtype=bool) for m in present}
    for layer, view, metric, value, status in zip(sub["layer"].astype(str), sub["view"].astype(str), sub["metric"],
                                                  sub["value"].to_numpy(float), sub["status"].astype(str)):
        i = pos[(layer, view)]
        values[metric][i] = value
        ok[metric][i] = status in ("ok", "warn") and np.isfinite(value)
    return labels, values, ok, step


def _grouped_bars(ax: "Axes", labels: list[str], values: dict, ok: dict, colors: list, *, log: bool = False,
                  floor: float = 0.0) -> None:
    n, k = len(labels), len(values)
    width = 0.8 / max(k, 1)
    x = np.arange(n)
    for j, (metric, vals) in enumerate(values.items()):
        xs = x - 0.4 + width * (j + 0.5)
        good = ok[metric]
        shown = np.where(good, vals, np.nan)
        base = floor if log else 0.0
        if log:
            shown = np.maximum(shown, floor * 1.0001)  # p = 0 (no replicate as bad): drawn at the floor
        ax.bar(xs[good], shown[good] - base, width=width * 0.95, color=colors[j], edgecolor="black", linewidth=0.4,
               label=_LABEL.get(metric, metric), zorder=2, bottom=base)
        if (~good).any():
            ax.bar(xs[~good], np.ones((~good).sum()), width=width * 0.95, color=FAILED_COLOR, alpha=0.35,
                   hatch="//", edgecolor="black", linewidth=0.4, zorder=2, transform=ax.get_xaxis_transform(),
                   label="_nolegend_")
    rot = 60 if n > 4 else 0
    ax.set_xticks(x, labels, rotation=rot, ha="right" if rot else "center", fontsize=8 if n > 12 else 9)
    ax.set_xlim(-0.6, n - 0.4)
    ax.grid(True, axis="y", alpha=0.3, zorder=1)


def _failed_patch(any_failed: bool) -> list:
    if not any_failed:
        return []
    from matplotlib.patches import Patch

    return [Patch(facecolor=FAILED_COLOR, alpha=0.35, hatch="//", edgecolor="black", label="skipped / failed")]


def plot_tail_tests(results_or_frame: Any, *, step: int | None = None, run: str | None = None,
                    significance: float = 0.1, path: str | Path | None = None) -> "Figure":
    """Is each layer's tail a power law? Likelihood ratios (top) and p-values (bottom) per layer.

    Top: the normalised log-likelihood ratios ``llr_exponential``, ``llr_lognormal``, ``llr_tpl`` (> 0 favours
    the power law; ±1.96 marks two-sided 5 % for a standard normal z). Bottom: their p-values and the
    bootstrap ``pl_pvalue`` on a log axis with the ``significance`` line (below it the sign of R, or for
    ``pl_pvalue`` the rejection of the power law, is significant).

    Args:
        results_or_frame: a Results or tidy frame holding ``tail`` rows with ``compare=True`` and/or
            ``bootstrap=N``.
        step: the step to show (default: the latest).
        run: which run, when the table holds several.
        significance: the p-value line.
        path: if given, save the figure as a PNG there.

    Returns:
        The Figure, with two Axes (LLR, p-value).

    Raises:
        ValueError: the table has none of these metrics, or an unknown step/run.
    """
    df = as_frame(results_or_frame)
    labels, values, ok, step = _wide(df, _LLR + _P, step, run, "plot_tail_tests")
    llr = {m: values[m] for m in _LLR if m in values}
    pv = {m: values[m] for m in _P if m in values}
    n = len(labels)
    fig = new_figure((float(np.clip(3.0 + 0.55 * n, 7.0, 28.0)), 7.2))
    ax_r, ax_p = fig.subplots(2, 1, sharex=True)
    colors = line_colors(4)
    if llr:
        _grouped_bars(ax_r, labels, llr, {m: ok[m] for m in llr}, colors)
        for y in (-1.96, 1.96):
            ax_r.axhline(y, color=XMIN_COLOR, ls=":", lw=0.9, zorder=1)
        ax_r.axhline(0.0, color="black", lw=0.8, zorder=1)
    else:
        ax_r.text(0.5, 0.5, "no likelihood-ratio rows (tail compare=True)", transform=ax_r.transAxes, ha="center")
    ax_r.set_ylabel("normalised LLR R/(√n·s)\n> 0: power law preferred")
    ax_r.set_title(f"tail tests per layer at step {step}")
    floor = 1e-6
    if pv:
        _grouped_bars(ax_p, labels, pv, {m: ok[m] for m in pv}, colors, log=True, floor=floor)
        ax_p.set_yscale("log")
        ax_p.set_ylim(floor, 1.5)
        ax_p.axhline(significance, color=FIT_COLOR, ls="--", lw=1.0, zorder=3, label=f"p = {significance:g}")
    ax_p.set_ylabel(f"p-value (floor {floor:g})")
    ax_p.set_xlabel("layer")
    any_failed = any((~o).any() for o in ok.values())
    for ax in (ax_r, ax_p):
        handles, _ = ax.get_legend_handles_labels()
        handles += _failed_patch(any_failed)
        if handles:
            ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return finish(fig, path)


def plot_farms_alpha(results_or_frame: Any, *, step: int | None = None, run: str | None = None,
                     path: str | Path | None = None) -> "Figure":
    """FARMS α beside the plain α per layer (left), and plain against FARMS α (right).

    Plain α (``alpha`` of the tail fit and ``alpha_hill``) depends on each matrix's aspect ratio; ``alpha_farms``
    measures every layer with windows of one shape. On the right, points far from the diagonal are layers whose
    plain α is mostly an aspect-ratio effect.

    Args:
        results_or_frame: a Results or tidy frame with ``farms`` rows (and ``tail`` rows for the plain α).
        step: the step to show (default: the latest).
        run: which run, when the table holds several.
        path: if given, save the figure as a PNG there.

    Returns:
        The Figure, with two Axes (bars, scatter).

    Raises:
        ValueError: no ``alpha_farms`` rows, or an unknown step/run.
    """
    df = as_frame(results_or_frame)
    if not (df["metric"] == "alpha_farms").any():
        raise ValueError("plot_farms_alpha needs alpha_farms rows (the 'farms' analyzer)")
    labels, values, ok, step = _wide(df, ("alpha", "alpha_hill", "alpha_farms"), step, run, "plot_farms_alpha")
    n = len(labels)
    fig = new_figure((float(np.clip(6.0 + 0.45 * n, 10.0, 30.0)), 4.8))
    ax_b, ax_s = fig.subplots(1, 2, width_ratios=[max(2.0, n / 4), 1.2])
    finite = np.concatenate([v[ok[m]] for m, v in values.items()]) if values else np.array([])
    top = max(8.0, float(np.nanmax(finite)) * 1.12) if finite.size else 8.0
    bands = shade_alpha_bands(ax_b, top)
    palette = {"alpha": DATA_COLOR, "alpha_hill": "#9467bd", "alpha_farms": FIT_COLOR}
    _grouped_bars(ax_b, labels, values, ok, [palette[m] for m in values])
    ax_b.set_ylim(0.0, top)
    ax_b.set_ylabel("power-law exponent α")
    ax_b.set_xlabel("layer")
    ax_b.set_title(f"FARMS vs plain α at step {step}")
    handles, _ = ax_b.get_legend_handles_labels()
    handles = [h for h in handles if h not in bands] + bands + _failed_patch(any((~o).any() for o in ok.values()))
    ax_b.legend(handles=handles, loc="upper left", fontsize=7, frameon=False, ncol=2)
    fa, fo = values["alpha_farms"], ok["alpha_farms"]
    lim = [0.0, top]
    ax_s.plot(lim, lim, color=XMIN_COLOR, ls=":", lw=1.0, label="equal")
    for j, m in enumerate(k for k in ("alpha", "alpha_hill") if k in values):
        both = fo & ok[m]
        ax_s.scatter(fa[both], values[m][both], s=22, color=[DATA_COLOR, "#9467bd"][j], edgecolor="black",
                     linewidth=0.4, label=_LABEL[m], zorder=3)
    ax_s.set_xlim(lim)
    ax_s.set_ylim(lim)
    ax_s.set_xlabel("α FARMS")
    ax_s.set_ylabel("plain α")
    ax_s.legend(fontsize=7, frameon=False)
    ax_s.grid(True, alpha=0.3)
    return finish(fig, path)


def _spectrum_rows(df: "pd.DataFrame", metric: str, layer: str, view: str | None, step: int | None,
                   run: str | None) -> tuple[np.ndarray, int, str]:
    sub = df[(df["metric"] == metric) & (df["layer"].astype(str) == layer) & df["index"].notna()]
    if sub.empty:
        have = sorted(set(df.loc[df["metric"] == metric, "layer"].astype(str)))
        hint = {"eigenvalue": "esd analyzer with spectrum=True", "rand_eigenvalue": "randomize with spectrum=True"}
        raise ValueError(f"no {metric!r} rows for layer {layer!r} ({hint.get(metric, '')}); layers with them: {have}")
    sub = pick_run(sub, run)
    views = sorted(set(sub["view"].astype(str)))
    if view is None:
        view = views[0]
    elif view not in views:
        raise ValueError(f"layer {layer!r} has no view {view!r} for {metric!r}; views: {views}")
    sub = sub[sub["view"].astype(str) == view]
    steps = sorted(int(s) for s in sub["step"].unique())
    if step is None:
        step = steps[-1]
    elif step not in steps:
        raise ValueError(f"no {metric!r} rows for layer {layer!r} at step {step}; steps: {steps}")
    sub = sub[sub["step"] == step].sort_values("index")
    return sub["value"].to_numpy(float), step, view


def plot_shuffled_esd(results_or_evals: Any, rand_evals: Any = None, *, layer: str | None = None,
                      view: str | None = None, step: int | None = None, run: str | None = None,
                      rand_bulk_max: float | None = None, bins: int = 80, title: str | None = None,
                      path: str | Path | None = None) -> "Figure":
    """The real ESD over the ESD of its element-shuffled copy (the randomisation null), on log axes.

    Where the real spectrum leaves the shuffled one, the layer has learned correlations; shuffled eigenvalues
    beyond the null's MP edge (the dashed line) are "correlation traps" made by a few large entries.

    Args:
        results_or_evals: a Results/tidy frame (then ``layer`` is required and the spectra come from the
            ``eigenvalue`` rows of ``esd`` with ``spectrum=True`` and the ``rand_eigenvalue`` rows of
            ``randomize`` with ``spectrum=True``), or the real eigenvalues as an array.
        rand_evals: the shuffled eigenvalues, when the first argument is an array.
        layer, view, step, run: which layer view, step and run (table input).
        rand_bulk_max: the null's MP edge (default: the ``rand_bulk_max`` row of the table, if any).
        bins: number of log-spaced bins.
        title: figure title.
        path: if given, save the figure as a PNG there.

    Returns:
        The Figure, with one Axes.

    Raises:
        ValueError: missing spectra rows (the message says which analyzer option makes them), bad arrays.
    """
    table = hasattr(results_or_evals, "to_pandas") or hasattr(results_or_evals, "columns")
    if not table:
        if rand_evals is None:
            raise ValueError("pass the shuffled eigenvalues as rand_evals when the first argument is an array")
        lam, lam_r = np.asarray(results_or_evals, float).ravel(), np.asarray(rand_evals, float).ravel()
        where = title or "real vs shuffled ESD"
    else:
        if layer is None:
            raise ValueError("pass layer=... to pick the layer from the table")
        df = as_frame(results_or_evals)
        lam, step, view = _spectrum_rows(df, "eigenvalue", layer, view, step, run)
        lam_r, _, _ = _spectrum_rows(df, "rand_eigenvalue", layer, view, step, run)
        if rand_bulk_max is None:
            edge = df[(df["metric"] == "rand_bulk_max") & (df["layer"].astype(str) == layer) &
                      (df["view"].astype(str) == view) & (df["step"] == step)]
            vals = edge["value"].to_numpy(float)
            rand_bulk_max = float(vals[-1]) if vals.size and np.isfinite(vals[-1]) else None
        where = title or f"{layer_label(layer, view, True)} at step {step}: real vs shuffled ESD"
    lam, lam_r = lam[np.isfinite(lam) & (lam > 0)], lam_r[np.isfinite(lam_r) & (lam_r > 0)]
    if lam.size == 0 or lam_r.size == 0:
        raise ValueError("both spectra need positive finite eigenvalues (log axes)")
    lo, hi = min(lam.min(), lam_r.min()), max(lam.max(), lam_r.max())
    if hi <= lo:
        lo, hi = lo / 1.5, hi * 1.5
    edges = np.logspace(np.log10(lo), np.log10(hi), int(bins) + 1)
    fig = new_figure((7.5, 4.6))
    ax = fig.add_subplot()
    d_r, _ = np.histogram(lam_r, bins=edges, density=True)
    d, _ = np.histogram(lam, bins=edges, density=True)
    ax.stairs(d_r, edges, fill=True, color="#9467bd", alpha=0.35, label=f"shuffled ({lam_r.size})")
    ax.stairs(d, edges, color=DATA_COLOR, lw=1.4, label=f"real ({lam.size})")
    if rand_bulk_max is not None and np.isfinite(rand_bulk_max) and rand_bulk_max > 0:
        traps = int(np.count_nonzero(lam_r > rand_bulk_max))
        ax.axvline(rand_bulk_max, color=FIT_COLOR, ls="--", lw=1.1,
                   label=f"null MP edge ({traps} shuffled λ above it)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("eigenvalue λ")
    ax.set_ylabel("density p(λ)")
    ax.set_title(where)
    ax.legend(fontsize=8, frameon=False)
    ax.grid(True, which="both", alpha=0.2)
    return finish(fig, path)
