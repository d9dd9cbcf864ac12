"""PNG figures of the reproduction (matplotlib object-oriented API, no pyplot state).

Every figure is drawn from the tables: the summary (one row per run and probed step) and the monitor's tidy
table (for eigenvalues and overlap blocks). Each function returns the paths it wrote; a figure whose data the
preset did not produce is skipped.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spectra.functional import mp_edges

__all__ = ["write_figures"]

log = logging.getLogger(__name__)
DPI = 110
_COL = {"gd": "#1f77b4", "adam": "#d62728"}
_LABEL = {"gd": "GD", "adam": "FB-Adam"}
_METRIC_LABEL = {
    "alpha_hill": "α_Hill", "alpha_ks": "α_KS", "n_out": "n_out (λ > 1.05·edge)", "lambda1_over_edge": "λ1 / MP edge",
    "sim": "sim(W, β*)", "train_loss": "probe-ridge train loss", "test_loss": "test loss", "kta": "KTA",
    "overlap_top1_left_before": "overlap²(u₁(M_t), u₁(W_t−1))", "update_stable_rank": "stable rank of M_t",
}


def _figure(nrows: int, ncols: int, w: float = 3.6, h: float = 2.9):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w * ncols, h * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    return path


def _evals(tidy: pd.DataFrame, run: str, step: int) -> np.ndarray:
    sel = tidy[(tidy["run"] == run) & (tidy["step"] == step) & (tidy["metric"] == "eigenvalue")
               & (tidy["status"] == "ok")]
    return np.sort(sel["value"].to_numpy(float))


def _metric_vs_lr(summary: pd.DataFrame, out: Path) -> list[Path]:
    grid = summary[summary["group"] == "grid"]
    paths = []
    if grid.empty:
        return paths
    metrics = [m for m in _METRIC_LABEL if m in grid and grid[m].notna().any()]
    for step in sorted(grid["step"].unique()):
        if step == 0:
            continue
        sub = grid[grid["step"] == step]
        ncols = 4
        nrows = math.ceil(len(metrics) / ncols)
        fig, axes = _figure(nrows, ncols)
        for ax, m in zip(axes.flat, metrics):
            for opt in ("gd", "adam"):
                o = sub[sub["optimizer"] == opt]
                if o.empty:
                    continue
                g = o.groupby("lr")[m]
                mean, std = g.mean(), g.std(ddof=1).fillna(0.0)
                ax.errorbar(np.log10(mean.index.to_numpy(float)), mean.to_numpy(float), yerr=std.to_numpy(float),
                            marker="o", ms=4, capsize=3, color=_COL[opt], label=_LABEL[opt])
            init = grid[grid["step"] == 0][m] if m in grid else None
            if init is not None and init.notna().any() and m not in ("n_out",):
                ax.axhline(float(init.mean()), color="grey", lw=0.8, ls="--", label="init")
            ax.set_xlabel("log10 η")
            ax.set_title(_METRIC_LABEL[m], fontsize=10)
            if m == "n_out" and (sub[m] > 0).any():
                ax.set_yscale("symlog", linthresh=1.0)
            if m == "lambda1_over_edge" and (sub[m] > 0).all():
                ax.set_yscale("log")
        for ax in list(axes.flat)[len(metrics):]:
            ax.set_visible(False)
        axes.flat[0].legend(fontsize=8)
        reps = int(grid["repeat"].nunique())
        fig.suptitle(f"lr grid after step {step} (mean ± std over {reps} repeat{'s' if reps > 1 else ''})")
        paths.append(_save(fig, out / f"metrics_vs_lr_step{step}.png"))
    return paths


def _esd_init_vs_final(summary: pd.DataFrame, tidy: pd.DataFrame, out: Path) -> list[Path]:
    """Init vs final ESD of a few grid runs of the first repeat."""
    grid = summary[(summary["group"] == "grid") & (summary["repeat"] == summary["repeat"].min())]
    if grid.empty:
        return []
    picks = []
    for opt, lrs in (("adam", (0.1, 1.0, 10.0)), ("gd", (1000.0, 3000.0))):
        o = grid[grid["optimizer"] == opt]
        for lr in lrs:
            r = o[np.isclose(o["lr"], lr)]
            if len(r):
                picks.append((opt, lr, str(r["run"].iloc[0]), int(r["steps"].iloc[0])))
    picks = [p for p in picks if _evals(tidy, p[2], 0).size]
    if not picks:
        return []
    fig, axes = _figure(1, len(picks), w=3.4, h=3.0)
    for ax, (opt, lr, run, T) in zip(axes.flat, picks):
        r = grid[grid["run"] == run].iloc[0]
        edge = mp_edges(int(r["h"]), int(r["d"]))[1]
        l0, lT = _evals(tidy, run, 0), _evals(tidy, run, T)
        allv = np.log10(np.concatenate([l0[l0 > 0], lT[lT > 0]]))
        bins = np.linspace(allv.min(), allv.max(), 60)
        ax.hist(np.log10(l0[l0 > 0]), bins=bins, density=True, alpha=0.55, color="grey", label="init")
        ax.hist(np.log10(lT[lT > 0]), bins=bins, density=True, alpha=0.55, color=_COL[opt], label=f"step {T}")
        ax.axvline(math.log10(edge), color="k", ls=":", lw=1, label="MP edge")
        ax.set_yscale("log")
        ax.set_xlabel("log10 λ (eigenvalues of WᵀW)")
        ax.set_title(f"{_LABEL[opt]} η={lr:g}", fontsize=10)
        ax.legend(fontsize=7)
    fig.suptitle("ESD at init vs after training (repeat 0)")
    return [_save(fig, out / "esd_init_vs_final.png")]


def _run_label(first: pd.Series, group: str) -> str:
    label = f"{_LABEL[first['optimizer']]} η={first['lr']:g}"
    if group == "schedule":
        label += " const" if first["gamma"] == 1 else f" γ={first['gamma']:g}"
    if group == "weightnorm":
        label += " WN on" if first["weight_norm"] else " WN off"
    return label


def _band(ax: Any, sub: pd.DataFrame, m: str, label: str, **kw: Any) -> None:
    """Mean over repeats vs step, with a ±1 sd band when there are several repeats."""
    g = sub.groupby("step")[m]
    mean, std = g.mean(), g.std(ddof=1)
    line = ax.plot(mean.index, mean.to_numpy(float), marker="o", ms=3, label=label, **kw)[0]
    if std.notna().any():
        ax.fill_between(mean.index, (mean - std).to_numpy(float), (mean + std).to_numpy(float),
                        color=line.get_color(), alpha=0.2, lw=0)


def _per_step(summary: pd.DataFrame, out: Path) -> list[Path]:
    paths = []
    base = ["n_out", "alpha_hill", "lambda1_over_edge", "sim", "train_loss", "test_loss"]
    for group in ("overlap", "schedule", "weightnorm", "main"):
        sub = summary[summary["group"] == group]
        if sub.empty or sub["step"].nunique() < 3:
            continue
        metrics = base + (["overlap_top1_left_before", "update_stable_rank"] if group == "overlap" else [])
        ncols = 4 if group == "overlap" else 3
        fig, axes = _figure(2, ncols)
        reps = int(sub["repeat"].nunique())
        # one curve per configuration, averaged over its repeats (runs differ only in the repeat index)
        sub = sub.assign(_cfg=[_run_label(r, group) for _, r in sub.iterrows()])
        for ax, m in zip(axes.flat, metrics):
            for label, r in sub.groupby("_cfg", sort=False):
                if m not in r or r[m].isna().all():
                    continue
                _band(ax, r, m, label)
            if m == "overlap_top1_left_before":
                for thr, ls in ((0.8, "--"), (0.7, ":")):
                    ax.axhline(thr, color="grey", lw=0.8, ls=ls)
            ax.set_xlabel("step")
            ax.set_title(_METRIC_LABEL.get(m, m), fontsize=10)
            if m == "n_out":
                ax.set_yscale("symlog", linthresh=1.0)
            if m in ("lambda1_over_edge", "update_stable_rank"):
                ax.set_yscale("log")
        for ax in list(axes.flat)[len(metrics):]:
            ax.set_visible(False)
        axes.flat[0].legend(fontsize=7)
        fig.suptitle(f"per-step metrics: {group} (mean ± sd over {reps} repeat{'s' if reps > 1 else ''})")
        paths.append(_save(fig, out / f"per_step_{group}.png"))
    return paths


def _margins(claims: pd.DataFrame | None, out: Path) -> list[Path]:
    """Every judged check's margin in standard errors (clipped to ±10; ∞ drawn at the clip), ±2 marked."""
    if claims is None or claims.empty:
        return []
    j = claims[claims["verdict"].isin(["PASS", "FAIL"])].reset_index(drop=True)
    if j.empty:
        return []
    z = pd.to_numeric(j["margin"], errors="coerce").to_numpy(float)
    zc = np.clip(np.nan_to_num(z, nan=0.0, posinf=10.0, neginf=-10.0), -10, 10)
    fig, axes = _figure(1, 1, w=7.0, h=max(3.0, 0.22 * len(j) + 1.0))
    ax = axes[0, 0]
    y = np.arange(len(j))[::-1]
    colors = ["#2ca02c" if v == "PASS" else "#d62728" for v in j["verdict"]]
    ax.scatter(zc, y, c=colors, s=18, zorder=3)
    for yi, zi, zr in zip(y, zc, z):
        if not math.isfinite(zr):
            ax.annotate("∞" if not math.isnan(zr) else "n/a", (zi, yi), xytext=(4, -3), textcoords="offset points",
                        fontsize=6)
    for x in (-2, 2):
        ax.axvline(x, color="grey", ls="--", lw=0.8)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(y, list(j["check"]), fontsize=6)
    ax.set_xlim(-10.5, 10.5)
    ax.set_xlabel("margin to the threshold in standard errors (clipped at ±10; green PASS, red FAIL)")
    ax.set_title("how firm each verdict is: |margin| > 2 should survive a new seed", fontsize=9)
    return [_save(fig, out / "claim_margins.png")]


def _block(tidy: pd.DataFrame, run: str, step: int, metric: str) -> np.ndarray | None:
    sel = tidy[(tidy["run"] == run) & (tidy["step"] == step) & (tidy["metric"] == metric)
               & (tidy["matrix"] == "update") & (tidy["status"] == "ok")]
    if sel.empty:
        return None
    k = int(round(math.sqrt(len(sel))))
    B = np.full(k * k, np.nan)
    B[sel["index"].astype(int).to_numpy()] = sel["value"].to_numpy(float)
    return B.reshape(k, k)


def _overlaps(summary: pd.DataFrame, tidy: pd.DataFrame, out: Path) -> list[Path]:
    paths = []
    ov = summary[(summary["group"] == "overlap") & (summary["repeat"] == summary["repeat"].min())]
    for run, r in ov.groupby("run", sort=False):
        T = int(r["steps"].iloc[0])
        opt, lr = str(r["optimizer"].iloc[0]), float(r["lr"].iloc[0])
        steps = sorted({s for s in (1, 2, max(2, T // 2), T) if s <= T})
        blocks = {(s, m): _block(tidy, run, s, m) for s in steps for m in ("overlap_left_before", "overlap_right_before")}
        if all(b is None for b in blocks.values()):
            continue
        fig, axes = _figure(2, len(steps) + 1, w=3.0, h=2.8)
        im = None
        for row, m in enumerate(("overlap_left_before", "overlap_right_before")):
            for col, s in enumerate(steps):
                ax = axes[row, col]
                B = blocks[(s, m)]
                if B is None:
                    ax.set_visible(False)
                    continue
                im = ax.imshow(B, vmin=0, vmax=1, cmap="viridis", origin="upper")
                k = B.shape[0]
                ax.set_xticks(range(k), [str(j + 1) for j in range(k)], fontsize=6)
                ax.set_yticks(range(k), [str(i + 1) for i in range(k)], fontsize=6)
                ax.set_xlabel("M_t singular vector j", fontsize=8)
                if col == 0:
                    ax.set_ylabel("W_{t−1} singular vector i", fontsize=8)
                ax.set_title(f"{'left' if 'left' in m else 'right'} overlap², t={s}", fontsize=9)
        if im is not None:
            fig.colorbar(im, ax=axes[:, : len(steps)].ravel().tolist(), shrink=0.8)
        ax = axes[0, len(steps)]
        sv = tidy[(tidy["run"] == run) & (tidy["metric"] == "sv") & (tidy["matrix"] == "update")
                  & (tidy["status"] == "ok")]
        for s, g in sv.groupby("step"):
            g = g.sort_values("index")
            ax.plot(g["index"].astype(int) + 1, g["value"], marker="o", ms=3, label=f"t={int(s)}")
        ax.set_yscale("log")
        ax.set_xlabel("i")
        ax.set_title("singular values of M_t", fontsize=9)
        ax.legend(fontsize=6, ncol=2)
        ax = axes[1, len(steps)]
        rr = r.sort_values("step")
        ax.plot(rr["step"], rr["update_stable_rank"], marker="o", ms=3, label="stable rank of M_t")
        ax.plot(rr["step"], rr["update_sv1"] / rr["update_sv2"], marker="s", ms=3, label="s₁/s₂ of M_t")
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
        fig.suptitle(f"update–weight overlaps: {_LABEL[opt]} η={lr:g} (repeat 0)")
        # bbox_inches="tight" instead of tight_layout, which does not handle the shared colour bar
        fig.savefig(out / f"overlaps_{opt}.png", dpi=DPI, bbox_inches="tight")
        paths.append(out / f"overlaps_{opt}.png")
    return paths


def _esd_evolution(summary: pd.DataFrame, tidy: pd.DataFrame, out: Path) -> list[Path]:
    from spectra.plot import plot_esd_snapshots

    paths = []
    ov = summary[(summary["group"] == "overlap") & (summary["repeat"] == summary["repeat"].min())]
    for run, r in ov.groupby("run", sort=False):
        opt, lr = str(r["optimizer"].iloc[0]), float(r["lr"].iloc[0])
        ev = {int(s): _evals(tidy, run, int(s)) for s in sorted(r["step"].unique())}
        ev = {s: v for s, v in ev.items() if v.size and (v > 0).any()}
        if len(ev) < 2:
            continue
        p = out / f"esd_evolution_{opt}.png"
        plot_esd_snapshots(ev, path=p, title=f"ESD over steps: {_LABEL[opt]} η={lr:g} (repeat 0)", logy=True)
        paths.append(p)
    return paths


def _loss_curves(summary: pd.DataFrame, out: Path) -> list[Path]:
    paths = []
    for group in sorted(g for g in summary["group"].unique() if str(g).startswith("losses_")):
        sub = summary[summary["group"] == group]
        param = group.removeprefix("losses_")
        fig, axes = _figure(1, 2)
        cmap = __import__("matplotlib").colormaps["viridis"]
        vals = sorted(sub["sweep_value"].unique())
        for i, v in enumerate(vals):
            s = sub[np.isclose(sub["sweep_value"], v)]
            color = cmap(i / max(1, len(vals) - 1))
            for ax, m in zip(axes.flat, ("train_loss", "test_loss")):
                g = s.groupby("step")[m]
                mean, std = g.mean(), g.std(ddof=1).fillna(0)
                ax.errorbar(mean.index, mean, yerr=std, marker="o", ms=3, capsize=2, color=color,
                            label=f"{param}={v:g}")
        for ax, m in zip(axes.flat, ("train_loss", "test_loss")):
            ax.set_xlabel("step")
            ax.set_title(_METRIC_LABEL[m], fontsize=10)
        axes.flat[1].legend(fontsize=7)
        reps = int(sub["repeat"].nunique())
        fig.suptitle(f"loss vs step, sweep over {param} (Adam η={float(sub['lr'].iloc[0]):g}; mean ± sd over "
                     f"{reps} paired repeat{'s' if reps > 1 else ''})")
        paths.append(_save(fig, out / f"losses_{param}.png"))
    return paths


def write_figures(summary: pd.DataFrame, tidy: pd.DataFrame, out: Path, *, claims: pd.DataFrame | None = None
                  ) -> list[Path]:
    """Write every figure the tables support into ``out``; return their paths (failures are logged, skipped).

    Args:
        summary: the wide summary (one row per run and probed step).
        tidy: the monitor's tidy table (eigenvalues, overlap blocks).
        out: the output directory.
        claims: the verdict rows; adds the margin plot ``claim_margins.png``.
    """
    out = Path(out)
    paths: list[Path] = []
    for f, args in ((_esd_init_vs_final, (summary, tidy, out)), (_metric_vs_lr, (summary, out)),
                    (_per_step, (summary, out)), (_esd_evolution, (summary, tidy, out)),
                    (_overlaps, (summary, tidy, out)), (_loss_curves, (summary, out)), (_margins, (claims, out))):
        try:
            paths += f(*args)
        except Exception as e:  # noqa: BLE001 - a figure must never sink the run
            log.warning("figure %s failed: %s: %s", f.__name__, type(e).__name__, e)
    return paths
