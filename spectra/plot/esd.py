"""ESD figures: one spectrum with its fitted power-law tail, and one layer's spectra over training steps."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from .figure import DATA_COLOR, FIT_COLOR, XMIN_COLOR, finish, new_figure

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["plot_esd", "plot_esd_snapshots"]


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
        fig = new_figure((11.0, 4.4))
        ax_pdf, ax_ccdf = fig.subplots(1, 2)
    else:
        fig, ax_pdf, ax_ccdf = ax.figure, ax, None

    lo, hi = lam[0], lam[-1]
    if hi <= lo:
        lo, hi = lo / 1.5, hi * 1.5
    edges = np.logspace(np.log10(lo), np.log10(hi), int(bins) + 1)
    dens, _ = np.histogram(lam, bins=edges, density=True)
    ax_pdf.stairs(dens, edges, fill=True, color=DATA_COLOR, alpha=0.45, label=f"ESD ({n} eigenvalues)")
    ax_pdf.stairs(dens, edges, color=DATA_COLOR, lw=0.8)
    ax_pdf.set_xscale("log")
    ax_pdf.set_yscale("log")
    ax_pdf.set_xlabel("eigenvalue λ")
    ax_pdf.set_ylabel("density p(λ)")
    ax_pdf.set_title("spectral density (log-log)")

    if ax_ccdf is not None:
        ccdf = 1.0 - np.arange(n) / n
        ax_ccdf.step(lam, ccdf, where="post", color=DATA_COLOR, lw=1.4, label="empirical P(Λ ≥ λ)")
        ax_ccdf.set_xscale("log")
        ax_ccdf.set_yscale("log")
        ax_ccdf.set_xlabel("eigenvalue λ")
        ax_ccdf.set_ylabel("P(Λ ≥ λ)")
        ax_ccdf.set_title("complementary CDF (log-log)")

    if fit_info is not None and fit_info["ok"]:
        alpha, xmin, xmax, frac = fit_info["alpha"], fit_info["xmin"], fit_info["xmax"], fit_info["frac"]
        x = np.logspace(np.log10(xmin), np.log10(xmax), 200)
        pdf = frac * (alpha - 1.0) / xmin * (x / xmin) ** (-alpha)
        ax_pdf.plot(x, pdf, color=FIT_COLOR, lw=2.2, ls="--", label=fit_info["label"], gid="powerlaw_fit")
        axes = [ax_pdf] if ax_ccdf is None else [ax_pdf, ax_ccdf]
        for a in axes:
            a.axvline(xmin, color=XMIN_COLOR, lw=1.2, ls=":", label=f"xmin = {xmin:.4g}", gid="xmin")
        if ax_ccdf is not None:
            ax_ccdf.plot(x, frac * (x / xmin) ** (1.0 - alpha), color=FIT_COLOR, lw=2.2, ls="--",
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
    return finish(fig, path)


def _fit_info(fit: Any, lam: np.ndarray) -> dict | None:
    """Extract what the ESD plot needs from a duck-typed tail fit.

    Args:
        fit: a tail fit (attributes ``alpha, xmin`` and optionally ``xmax, D, n_tail, method, status,
            message``), or None.
        lam: the sorted positive eigenvalues being drawn.

    Returns:
        None without a fit; ``{"ok": False, "label"}`` for a failed one; otherwise ``{"ok": True, "alpha",
        "xmin", "xmax", "frac", "label"}`` with ``frac`` the tail's share of the eigenvalues.

    Raises:
        TypeError: ``fit`` lacks ``alpha`` or ``xmin``.
    """
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
    """``float(x)``, or NaN when ``x`` is None or not a number."""
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


def _check_evals(evals: Any, name: str = "evals") -> np.ndarray:
    """The positive finite eigenvalues of ``evals``, flattened (what a log axis can show).

    Args:
        evals: eigenvalues (array-like).
        name: how the error messages call them.

    Returns:
        A float64 array of the positive finite values.

    Raises:
        ValueError: ``evals`` is empty or has no positive finite value.
    """
    lam = np.asarray(evals, dtype=np.float64).ravel()
    if lam.size == 0:
        raise ValueError(f"{name} is empty: need at least one eigenvalue")
    lam = lam[np.isfinite(lam)]
    pos = lam[lam > 0]
    if pos.size == 0:
        raise ValueError(f"{name} has no positive finite eigenvalues to draw on a log scale")
    return pos


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

    fig = new_figure((9.0, 5.0))
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
    return finish(fig, path)
