"""report.md: the setting, versions, wall time, the claim verdicts with their numbers and tolerances, figures."""

from __future__ import annotations

import importlib.metadata
import platform
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from .claims import claim_rollup

__all__ = ["write_report", "versions"]

_PRESET_CLAIMS = {
    "quick": "all", "paper": "all", "tiny": "all (at toy size: most numbers are not expected to hold)",
    "one-step": "1, 3, 4, 5, 13", "schedule": "1, 10, 13", "overlaps": "1, 8, 9, 13", "losses": "1, 12, 13",
    "weightnorm": "1, 13",
}


def versions() -> dict[str, str]:
    """Versions of Python, spectra and the numerical dependencies."""
    out = {"python": platform.python_version()}
    for pkg in ("spectra", "torch", "numpy", "scipy", "pandas", "matplotlib", "pyarrow", "weightwatcher"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _md_table(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(str(r[c]).replace("|", "\\|").replace("\n", " ") for c in cols) + " |")
    return "\n".join(lines)


def _verdict(v: str, marginal: bool) -> str:
    s = {"PASS": "**PASS**", "FAIL": "**FAIL**"}.get(v, v)
    return s + (" (marginal)" if marginal else "")


def weightnorm_comparison(summary: pd.DataFrame) -> pd.DataFrame | None:
    """Final-step λ1/edge, α_Hill and n_out of the weight-normalisation pair, with the expected direction.

    Returns None when the summary holds no pair of runs differing only in ``weight_norm``.
    """
    need = {"group", "weight_norm", "step", "lambda1_over_edge", "alpha_hill", "n_out"}
    if not need <= set(summary.columns):
        return None
    sub = summary[summary["group"] == "weightnorm"]
    if sub.empty or sub["weight_norm"].nunique() < 2:
        return None
    last = sub[sub["step"] == sub["step"].max()]
    # mean over repeats (each repeat pairs an off and an on run on the same init and data)
    means = last.groupby("weight_norm")[["lambda1_over_edge", "alpha_hill", "n_out"]].mean()
    off, on = means.loc[False], means.loc[True]
    rows = []
    for metric, label, expect in (("lambda1_over_edge", "λ1/edge (spike)", "lower with normalisation"),
                                  ("alpha_hill", "α_Hill (bulk)", "lower (heavier bulk) with normalisation"),
                                  ("n_out", "n_out (outliers)", "fewer with normalisation")):
        a, b = float(off[metric]), float(on[metric])
        rows.append({"metric": label, "off": round(a, 4), "on": round(b, 4), "expected": expect,
                     "observed": "as expected" if b < a else "not as expected"})
    return pd.DataFrame(rows)


def write_report(
    path: Path,
    *,
    cfg: dict[str, Any],
    claims: pd.DataFrame,
    summary: pd.DataFrame,
    figures: Sequence[Path],
    wall_s: float,
    n_runs: int,
    run_walls: pd.DataFrame | None = None,
    ww: pd.DataFrame | None = None,
    device_name: str = "",
) -> Path:
    """Write the Markdown report (PAPER "How the plugin should use this", item 4; §8.1)."""
    v = versions()
    preset = cfg["preset"]
    L: list[str] = []
    L.append(f"# Two-layer heavy-tail reproduction — preset `{preset}`\n")
    L.append("Reproduces Kothapalli et al., *Crafting Heavy-Tails in Weight Matrix Spectrum without Gradient Noise* "
             "(arXiv:2406.04657): a two-layer tanh student with a frozen second layer trained by full-batch GD or "
             "Adam on a single-index softplus teacher. Every spectral number comes from `spectra.SpectraMonitor`.\n")
    L.append("## Setting\n")
    sizes = f"d={cfg['d']}, h={cfg['h']}, n={cfg['n']}, n_test={cfg['n_test']} (scale: {cfg['scale']})"
    L.append(f"- preset: `{preset}`; claims covered: {_PRESET_CLAIMS.get(preset, 'see below')}")
    L.append(f"- sizes: {sizes}; ρ_e={cfg['label_noise']}, λ={cfg['reg_lambda']}, T={cfg['steps']} steps")
    L.append(f"- lr grid: {', '.join(f'{x:g}' for x in cfg['lr_grid'])} (optimizers: {', '.join(cfg['optimizers'])})"
             if cfg.get("grid") else "- lr grid: not run")
    L.append(f"- base seed {cfg['seed']}, repeats {cfg['repeats']} (loss sweeps: {cfg['losses_repeats']}); runs of a "
             "repeat share β*, W₀, a and data (PAPER §6)")
    scale_note = "" if cfg["readout_feature_scale"] == "repo" else \
        " — **the loss numbers stated in claims 11–13 are for 'repo' scaling**"
    L.append(f"- readout feature scale: `{cfg['readout_feature_scale']}` "
             f"(s = {'d' if cfg['readout_feature_scale'] == 'repo' else '√d'}){scale_note}")
    L.append(f"- n_out counts eigenvalues above {cfg['outlier_c']}·(√h+√d)²; α_Hill: Hill estimator at the median "
             "(PAPER §5.4); α_KS: the library's `tail` analyzer (PAPER §5.5)")
    L.append(f"- device: {cfg['device']}{(' (' + device_name + ')') if device_name else ''}; {n_runs} runs; "
             f"wall time **{wall_s:.1f} s**")
    L.append("- versions: " + ", ".join(f"{k} {val}" for k, val in v.items()))
    div = summary.groupby("run")["diverged"].first() if "diverged" in summary else pd.Series(dtype=bool)
    if div.any():
        L.append(f"- diverged runs (non-finite loss or weights; metrics marked failed): {', '.join(div[div].index)}")
    fails = int(summary["n_failed"].sum()) if "n_failed" in summary else 0
    if fails:
        L.append(f"- failed analyzer rows: {fails} (status `failed` in the tidy table)")
    L.append("")

    roll = claim_rollup(claims)
    L.append("## Claims (PAPER §8)\n")
    counts = roll["verdict"].value_counts()
    L.append(f"Summary: {counts.get('PASS', 0)} PASS, {counts.get('FAIL', 0)} FAIL, "
             f"{counts.get('not evaluated', 0)} not evaluated by this preset.\n")
    r2 = roll.assign(verdict=[_verdict(x, m > 0 and x == "FAIL") for x, m in zip(roll["verdict"], roll["marginal"])])
    L.append(_md_table(r2[["claim", "verdict", "checks", "failed", "statement"]]))
    L.append("\nTolerances follow PAPER §8.1: stated bands first; otherwise α_Hill ±0.05, outlier counts ±15%, "
             "λ1/edge ±25%, sim ±0.05, losses ±0.03, overlap² thresholds without slack; monotonicity tolerates "
             "reversals ≤ 0.01. With one repeat, a FAIL within 2 reference std of its threshold is flagged "
             "*marginal*. Numbers stated only at full size are judged at other sizes on their scale-free content.\n")
    L.append("### Checks\n")
    ch = claims.copy()
    ch["verdict"] = [_verdict(x, m) for x, m in zip(ch["verdict"], ch["marginal"])]
    L.append(_md_table(ch[["check", "statement", "measured", "tolerance", "verdict", "note"]]))
    L.append("")
    try:  # informational: a problem here must not cost the user the rest of the report
        wn = weightnorm_comparison(summary)
    except Exception as exc:  # noqa: BLE001
        wn = None
        L.append(f"_Weight-normalisation comparison unavailable: {type(exc).__name__}: {exc}_\n")
    if wn is not None:
        L.append("## Weight normalisation (informational, PAPER §7)\n")
        L.append("Expected pattern: normalising the weights suppresses the spike, leaves a heavier bulk and fewer "
                 "outliers. Final step, same init and data, weight normalisation off vs on:\n")
        L.append(_md_table(wn))
        L.append("")
    if ww is not None and len(ww):
        L.append("## WeightWatcher cross-check\n")
        L.append("WeightWatcher's alpha for the final weights of a few runs, next to ours (same matrix).\n")
        L.append(_md_table(ww))
        L.append("")
    if figures:
        L.append("## Figures\n")
        for p in figures:
            L.append(f"### {Path(p).stem.replace('_', ' ')}\n\n![{Path(p).stem}]({Path(p).name})\n")
    if run_walls is not None and len(run_walls):
        L.append("## Run times\n")
        g = run_walls.groupby("group")["wall_s"].agg(["count", "sum", "max"]).round(2).reset_index()
        L.append(_md_table(g))
        L.append("")
    L.append("## Files\n")
    L.append("- `results.parquet`, `results.csv`: the monitor's tidy records of every run (tags: group, optimizer, "
             "lr, repeat, ...)\n- `summary.csv`: one row per (run, probed step)\n- `claims.csv`: the verdict rows\n"
             "- `config.json`: the configuration in force")
    path.write_text("\n".join(L) + "\n", encoding="utf-8")
    return path
