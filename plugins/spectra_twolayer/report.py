"""report.md: the setting, versions, wall time and load, the claim verdicts judged on every repeat with their numbers,
tolerances and margins, a statistics section, the paired differences of the paired designs, and the figures."""

from __future__ import annotations

import importlib.metadata
import math
import platform
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from .claims import UNDECIDED, allowed_failures, claim_rollup, fmt_margin, statistics_table
from .summary import paired_differences

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


def _verdict(v: str, margin: float | None = None) -> str:
    s = {"PASS": "**PASS**", "FAIL": "**FAIL**", UNDECIDED: f"_{UNDECIDED}_"}.get(v, v)
    if v in ("PASS", "FAIL") and margin is not None and not math.isnan(margin) and abs(margin) <= 2:
        s += " (boundary)"
    return s


def _num(x: Any, nd: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{float(x):.{nd}g}"


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
        by_rep = last.groupby(["repeat", "weight_norm"])[metric].mean().unstack()
        diff = (by_rep[True] - by_rep[False]).dropna() if {True, False} <= set(by_rep.columns) else pd.Series([])
        se = float(diff.std(ddof=1)) / math.sqrt(len(diff)) if len(diff) > 1 else math.nan
        rows.append({"metric": label, "off": round(a, 4), "on": round(b, 4),
                     "paired diff (on − off)": round(float(diff.mean()), 4) if len(diff) else math.nan,
                     "SE": round(se, 4) if not math.isnan(se) else math.nan, "repeats": int(len(diff)),
                     "expected": expect, "observed": "as expected" if b < a else "not as expected"})
    return pd.DataFrame(rows)


def _load_text(load: tuple[float, float] | None, threads: int | None) -> str:
    parts = []
    if load is not None:
        parts.append(f"1-min load average {load[0]:.2f} at the start, {load[1]:.2f} at the end")
    if threads:
        parts.append(f"{threads} torch thread{'s' if threads > 1 else ''}")
    return f" ({'; '.join(parts)})" if parts else ""


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
    load: tuple[float, float] | None = None,
    threads: int | None = None,
) -> Path:
    """Write the Markdown report (PAPER_NOTES.md "Implementation contract", item 4; §8.1–§8.2).

    Args:
        path: where to write.
        cfg: the configuration in force (``TwoLayerConfig.to_dict()``).
        claims: the verdict rows of :func:`spectra_twolayer.claims.evaluate_claims`.
        summary: the wide summary.
        figures: PNG files to embed.
        wall_s: total wall time.
        n_runs: number of runs (trained or reused).
        run_walls: per-run wall times (``run, group, wall_s, reused``).
        ww: the WeightWatcher cross-check table.
        device_name: the GPU's name on CUDA.
        load: 1-minute load average at the start and at the end.
        threads: torch threads used.
    """
    v = versions()
    preset = cfg["preset"]
    L: list[str] = []
    L.append(f"# Two-layer heavy-tail reproduction — preset `{preset}`\n")
    L.append("Reproduces Kothapalli et al., *Crafting Heavy-Tails in Weight Matrix Spectrum without Gradient Noise* "
             "(arXiv:2406.04657): a two-layer tanh student with a frozen second layer trained by full-batch GD or "
             "Adam on a single-index softplus teacher. Every spectral number comes from `spectra.SpectraMonitor`. "
             "The setting, metrics and claims are described in the plugin's `PAPER_NOTES.md`.\n")
    L.append("## Setting\n")
    sizes = f"d={cfg['d']}, h={cfg['h']}, n={cfg['n']}, n_test={cfg['n_test']} (scale: {cfg['scale']})"
    L.append(f"- preset: `{preset}`; claims covered: {_PRESET_CLAIMS.get(preset, 'see below')}")
    L.append(f"- sizes: {sizes}; ρ_e={cfg['label_noise']}, λ={cfg['reg_lambda']}, T={cfg['steps']} steps")
    L.append(f"- lr grid: {', '.join(f'{x:g}' for x in cfg['lr_grid'])} (optimizers: {', '.join(cfg['optimizers'])})"
             if cfg.get("grid") else "- lr grid: not run")
    if cfg.get("losses_sweeps"):
        L.append(f"- loss sweeps: {', '.join(cfg['losses_sweeps'])} at d={cfg['losses_d']}, h={cfg['losses_h']}, "
                 f"n={cfg['losses_n']} (n values {', '.join(str(x) for x in cfg['n_values'])}; ρ_e values "
                 f"{', '.join(f'{x:g}' for x in cfg['label_noise_values'])}), {cfg['losses_repeats']} repeats")
    L.append(f"- base seed {cfg['seed']}; **{cfg['repeats']} repeats** of the grid, overlap, schedule and other runs "
             f"(loss sweeps: {cfg['losses_repeats']}). Within a repeat all runs share β*, W₀, a and the data "
             "(PAPER_NOTES.md §6); the loss sweeps use common random numbers: every arm of every sweep shares the "
             "teacher, init, inputs (nested in n), test set and noise draws, so arm-to-arm differences are paired")
    scale_note = "" if cfg["readout_feature_scale"] == "repo" else \
        " — **the loss numbers stated in claims 11–13 are for 'repo' scaling**"
    L.append(f"- readout feature scale: `{cfg['readout_feature_scale']}` "
             f"(s = {'d' if cfg['readout_feature_scale'] == 'repo' else '√d'}){scale_note}")
    L.append(f"- n_out counts eigenvalues above {cfg['outlier_c']}·(√h+√d)²; α_Hill: Hill estimator at the median "
             "(PAPER_NOTES.md §5.4); α_KS: the library's `tail` analyzer (PAPER_NOTES.md §5.5)")
    reused = int(run_walls["reused"].sum()) if run_walls is not None and "reused" in run_walls else 0
    runs_txt = f"{n_runs} runs" + (f" ({reused} coinciding sweep arms trained once and reused)" if reused else "")
    L.append(f"- device: {cfg['device']}{(' (' + device_name + ')') if device_name else ''}; {runs_txt}; "
             f"wall time **{wall_s:.1f} s**{_load_text(load, threads)}")
    L.append("- versions: " + ", ".join(f"{k} {val}" for k, val in v.items()))
    div = summary.groupby("run")["diverged"].first() if "diverged" in summary else pd.Series(dtype=bool)
    if div.any():
        L.append(f"- diverged runs (non-finite loss or weights; metrics marked failed): {', '.join(div[div].index)}")
    fails = int(summary["n_failed"].sum()) if "n_failed" in summary else 0
    if fails:
        L.append(f"- failed analyzer rows: {fails} (status `failed` in the tidy table)")
    L.append("")

    L.append("## How verdicts are reached (PAPER_NOTES.md §8.1–§8.2)\n")
    L.append("Every check is computed on every repeat: one number per repeat (a value, a paired difference between "
             "two arms of the same repeat, or the worst case over the steps or learning rates the claim covers). "
             "A check **passes when the mean over repeats lies in its band and no more than one repeat in five "
             f"fails** (⌊R/5⌋ of R repeats: {allowed_failures(3)} of 3, {allowed_failures(5)} of 5, "
             f"{allowed_failures(10)} of 10). A wider band for single values is used where the claim states one "
             "(claim 1a). Statements about a mean (claim 11b) judge the mean only and need ≥ 3 repeats; with fewer "
             f"they read *{UNDECIDED}*. Per-step claims (8, 9) are judged on every repeat like the others.\n")
    L.append("The **margin** is the distance to the threshold in units of the matching standard error, positive "
             "inside the band: the mean's distance over its SE (sd/√R), and the deciding repeat's distance over the "
             "per-repeat sd; the check's margin is the smaller. |margin| > 2 marks a verdict that should survive a "
             "new seed; verdicts within ±2 are marked *(boundary)*. ∞ means zero spread (counts equal on every "
             "repeat). A claim's margin is the smallest margin among its checks. Tolerances: stated bands first; "
             "otherwise α_Hill ±0.05, outlier counts ±15%, λ1/edge ±25%, sim ±0.05, losses ±0.03, overlap² "
             "thresholds without slack; monotonicity tolerates reversals ≤ 0.01. Numbers stated only at full size "
             "are judged at other sizes on their scale-free content.\n")

    roll = claim_rollup(claims)
    L.append("## Claims (PAPER_NOTES.md §8)\n")
    counts = roll["verdict"].value_counts()
    undecided = int(counts.get(UNDECIDED, 0))
    L.append(f"Summary: {counts.get('PASS', 0)} PASS, {counts.get('FAIL', 0)} FAIL"
             + (f", {undecided} {UNDECIDED}" if undecided else "")
             + f", {counts.get('not evaluated', 0)} not evaluated by this preset; "
             f"{int(roll['robust'].sum())} of {int(roll['verdict'].isin(['PASS', 'FAIL']).sum())} verdicts have "
             "|margin| > 2.\n")
    r2 = pd.DataFrame({
        "claim": roll["claim"], "verdict": [_verdict(x, m) for x, m in zip(roll["verdict"], roll["margin"])],
        "repeats": roll["repeats"], "checks": roll["checks"], "failed": roll["failed"],
        "margin (SE)": [fmt_margin(m) if x in ("PASS", "FAIL") else "—" for x, m in zip(roll["verdict"], roll["margin"])],
        "statement": roll["statement"]})
    L.append(_md_table(r2))
    L.append("")
    L.append("### Checks\n")
    ch = pd.DataFrame({
        "check": claims["check"], "statement": claims["statement"], "measured": claims["measured"],
        "tolerance": claims["tolerance"], "rule": claims["rule"], "repeats": claims["repeats"],
        "failed repeats": [x or "—" for x in claims["failed_repeats"]],
        "verdict": [_verdict(x, m) for x, m in zip(claims["verdict"], claims["margin"])],
        "margin (SE)": [fmt_margin(m) if x in ("PASS", "FAIL") else "—" for x, m in zip(claims["verdict"],
                                                                                        claims["margin"])],
        "note": claims["note"]})
    L.append(_md_table(ch))
    L.append("")
    st = statistics_table(claims)
    if len(st):
        L.append("## Statistics\n")
        L.append("For each judged check: the measured effect (mean over repeats of the per-repeat statistic), its "
                 "sd and standard error, the threshold, and the margins: the mean's distance to the threshold in "
                 "SEs, the deciding repeat's in sds, and the smaller of the two.\n")
        L.append(_md_table(st))
        L.append("")
    pdiff = paired_differences(summary)
    if len(pdiff):
        L.append("## Paired differences\n")
        L.append("Final step, arm − reference arm within each repeat (same β*, W₀, inputs, test set and noise "
                 "draws), mean ± SE over repeats.\n")
        L.append(_md_table(pd.DataFrame({
            "comparison": pdiff["comparison"], "arm": [f"{x:g}" for x in pdiff["arm"]],
            "reference": [f"{x:g}" for x in pdiff["reference"]], "metric": pdiff["metric"],
            "mean diff": [_num(x) for x in pdiff["mean_diff"]], "SE": [_num(x, 2) for x in pdiff["se"]],
            "diff/SE": [fmt_margin(m / s) if s and not math.isnan(s) else "—"
                        for m, s in zip(pdiff["mean_diff"], pdiff["se"])],
            "repeats": pdiff["repeats"]})))
        L.append("")
    try:  # informational: a problem here must not cost the user the rest of the report
        wn = weightnorm_comparison(summary)
    except Exception as exc:  # noqa: BLE001
        wn = None
        L.append(f"_Weight-normalisation comparison unavailable: {type(exc).__name__}: {exc}_\n")
    if wn is not None:
        L.append("## Weight normalisation (informational, PAPER_NOTES.md §7)\n")
        L.append("Expected pattern: normalising the weights suppresses the spike, leaves a heavier bulk and fewer "
                 "outliers. Final step, same init and data, weight normalisation off vs on (mean over repeats, "
                 "paired difference ± SE):\n")
        L.append(_md_table(wn))
        L.append("")
    if ww is not None and len(ww):
        L.append("## WeightWatcher cross-check\n")
        L.append("WeightWatcher's alpha for the final weights of a few runs, next to ours (same matrix).\n")
        L.append(_md_table(ww))
        L.append("")
    if figures:
        L.append("## Figures\n")
        L.append("Curves are means over repeats with ±1 sd bands or error bars; ESD histograms and overlap heatmaps "
                 "show repeat 0.\n")
        for p in figures:
            L.append(f"### {Path(p).stem.replace('_', ' ')}\n\n![{Path(p).stem}]({Path(p).name})\n")
    if run_walls is not None and len(run_walls):
        L.append("## Run times\n")
        g = run_walls.groupby("group").agg(count=("wall_s", "size"), trained=("reused", lambda x: int((~x).sum())),
                                           sum=("wall_s", "sum"), max=("wall_s", "max")).round(2).reset_index()
        L.append(_md_table(g))
        L.append("")
    L.append("## Files\n")
    L.append("- `results.parquet`, `results.csv`: the monitor's tidy records of every run (tags: group, optimizer, "
             "lr, repeat, ...)\n- `summary.csv`: one row per (run, probed step)\n- `claims.csv`: the verdict rows "
             "(per-repeat statistics, margins)\n- `config.json`: the configuration in force")
    path.write_text("\n".join(L) + "\n", encoding="utf-8")
    return path
