"""The wide summary: one row per (run, probed step) with the paper's quantities as columns.

Every number is read from the monitor's tidy table; the only additions are ratios against the theoretical MP
edge (via :func:`spectra.functional.mp_edges`), differences from step 0 of the same run, the measured one-step
thresholds η* (PAPER_NOTES.md §7) and the student's own training MSE, which is not a spectral quantity.
:func:`paired_differences` turns the paired designs (schedule, weight normalisation, loss sweeps) into paired
differences with their standard errors.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pandas as pd

from spectra.functional import mp_edges

__all__ = ["build_summary", "SUMMARY_METRICS", "paired_differences"]

# tidy (matrix, metric, index) → summary column
_SCALARS = {
    ("weight", "lambda_max"): "lambda_max",
    ("weight", "stable_rank"): "stable_rank",
    ("weight", "log_norm"): "log_norm",
    ("weight", "num_outliers"): "n_out",
    ("weight", "alpha"): "alpha_ks",
    ("weight", "alpha_hill"): "alpha_hill",
    ("weight", "sim"): "sim",
    ("weight", "train_loss"): "train_loss",
    ("weight", "test_loss"): "test_loss",
    ("weight", "kta"): "kta",
    ("update", "stable_rank"): "update_stable_rank",
    ("update", "overlap_top1_left_before"): "overlap_top1_left_before",
    ("update", "overlap_top1_right_before"): "overlap_top1_right_before",
    ("update", "relative_norm"): "update_relative_norm",
    ("grad", "stable_rank"): "grad_stable_rank",
}
_INDEXED = {
    ("grad", "sv", 0): "grad_sv1",
    ("grad", "sv", 1): "grad_sv2",
    ("update", "sv", 0): "update_sv1",
    ("update", "sv", 1): "update_sv2",
    ("update", "overlap_max_left_before", 1): "overlap_next_left_before",
}
SUMMARY_METRICS = tuple(_SCALARS.values()) + tuple(_INDEXED.values())


def build_summary(tidy: pd.DataFrame, runs: Sequence[Any]) -> pd.DataFrame:
    """Pivot the tidy table to one row per (run, step) and add derived columns.

    Args:
        tidy: the concatenated tidy table of every run.
        runs: the :class:`~spectra_twolayer.train.RunOutput` of every run (specs, student MSE, divergence).

    Returns:
        A DataFrame with the run's tags, ``step``, the columns of :data:`SUMMARY_METRICS` (NaN when a metric was
        not measured or failed), ``lambda1_over_edge``, ``n_out_frac``, ``d_alpha_hill``, ``d_train_loss``,
        ``d_test_loss`` (vs step 0), ``eta_star`` (the run's measured one-step threshold, on every row),
        ``student_mse``, ``test_floor`` (the best odd predictor's MSE on the run's test set), ``n_failed`` (failed
        analyzer rows at that step) and ``diverged``.
    """
    ok = tidy[tidy["status"].isin(["ok", "warn"])]
    key = list(zip(ok["matrix"].astype(str), ok["metric"].astype(str)))
    col = pd.Series([_SCALARS.get(k) for k in key], index=ok.index, dtype="object")
    scal = ok[ok["index"].isna() & col.notna()].assign(column=col)
    idx_key = [(m, me, (int(i) if not pd.isna(i) else None)) for m, me, i in
               zip(ok["matrix"].astype(str), ok["metric"].astype(str), ok["index"])]
    icol = pd.Series([_INDEXED.get(k) for k in idx_key], index=ok.index, dtype="object")
    vec = ok[icol.notna()].assign(column=icol)
    long = pd.concat([scal, vec], ignore_index=True)
    wide = long.pivot_table(index=["run", "step"], columns="column", values="value", aggfunc="first")
    wide.columns.name = None
    failed = tidy[tidy["status"] == "failed"].groupby(["run", "step"]).size().rename("n_failed")
    rows = []
    for out in runs:
        spec = out.spec
        for step in spec.probes:
            rows.append({"run": spec.name, "step": step, **spec.tags(),
                         "student_mse": out.student_mse[step] if step < len(out.student_mse) else math.nan,
                         "test_floor": float(getattr(out, "test_floor", math.nan)),
                         "diverged": bool(out.diverged)})
    base = pd.DataFrame(rows)
    if base.empty:
        return base
    base["sweep_value"] = pd.to_numeric(base["sweep_value"], errors="coerce").astype(float)  # None → NaN
    wide = wide.reset_index()
    wide["run"] = wide["run"].astype(str)
    wide["step"] = wide["step"].astype(int)
    df = base.merge(wide, on=["run", "step"], how="left")
    fail = failed.reset_index()
    if len(fail):
        fail["run"] = fail["run"].astype(str)
        fail["step"] = fail["step"].astype(int)
        df = df.merge(fail, on=["run", "step"], how="left")
    else:
        df["n_failed"] = 0
    df["n_failed"] = df["n_failed"].fillna(0).astype(int)
    for c in SUMMARY_METRICS:
        if c not in df:
            df[c] = np.nan
    # runs whose tail analyzer fitted Hill only report α_Hill as its "alpha" and have no α_KS
    hill_only = df["run"].isin({o.spec.name for o in runs if getattr(o, "alpha_is_hill", False)})
    if hill_only.any():
        df.loc[hill_only, "alpha_hill"] = df.loc[hill_only, "alpha_ks"]
        df.loc[hill_only, "alpha_ks"] = np.nan
    edges = np.array([mp_edges(h, d)[1] for h, d in zip(df["h"], df["d"])])
    root = np.sqrt(edges)  # √h + √d
    df["lambda1_over_edge"] = df["lambda_max"] / edges
    df["n_out_frac"] = df["n_out"] / df["d"]
    for c in ("alpha_hill", "train_loss", "test_loss", "n_out"):
        init = df[df["step"] == 0].set_index("run")[c]
        df[f"d_{c}"] = df[c] - df["run"].map(init)
    # measured one-step thresholds (PAPER_NOTES.md §7): from the gradient at W₀ (GD) or Adam's first update / η
    first = df[df["step"] == 1].set_index("run")
    g1 = first["grad_sv1"]
    sign_norm = first["update_sv1"] / first["lr"]
    eta_gd = (np.sqrt(first["h"]) + np.sqrt(first["d"])) / g1
    eta_adam = (np.sqrt(first["h"]) + np.sqrt(first["d"])) / sign_norm
    df["grad_opnorm0"] = df["run"].map(g1)
    df["sign_grad_opnorm0"] = df["run"].map(sign_norm.where(first["optimizer"] == "adam"))
    df["eta_star_gd"] = df["run"].map(eta_gd)
    df["eta_star_adam"] = df["run"].map(eta_adam.where(first["optimizer"] == "adam"))
    df["eta_star"] = np.where(df["optimizer"] == "gd", df["eta_star_gd"], df["eta_star_adam"])
    del root
    return df


_PAIRED_METRICS = ("alpha_hill", "n_out", "lambda1_over_edge", "train_loss", "test_loss")


def _arms(summary: pd.DataFrame) -> list[tuple[str, pd.DataFrame, str, float]]:
    """(comparison name, its final-step rows, arm column, reference arm value) of every paired design."""
    out = []
    fin = summary[summary["step"] == summary["steps"]]
    sched = fin[fin["group"] == "schedule"]
    if len(sched) and sched["gamma"].nunique() > 1:
        out.append(("schedule (StepLR γ vs constant η)", sched, "gamma", 1.0))
    wn = fin[fin["group"] == "weightnorm"]
    if len(wn) and wn["weight_norm"].nunique() > 1:
        out.append(("weight normalisation (on vs off)", wn.assign(weight_norm=wn["weight_norm"].astype(float)),
                    "weight_norm", 0.0))
    for group in sorted(g for g in fin["group"].unique() if str(g).startswith("losses_")):
        sub = fin[fin["group"] == group]
        if sub["sweep_value"].nunique() < 2:
            continue
        vals = sorted(sub["sweep_value"].unique())
        ref = vals[-1] if group == "losses_n" else vals[0]  # the n sweep against its largest n
        out.append((f"sweep over {group.removeprefix('losses_')}", sub, "sweep_value", float(ref)))
    return out


def paired_differences(summary: pd.DataFrame, metrics: Sequence[str] = _PAIRED_METRICS) -> pd.DataFrame:
    """Final-step paired differences (arm − reference arm, matched by repeat) with their standard errors.

    Every arm of a comparison shares its repeat's random draws (schedule and weight-norm runs share the grid's
    problem; the loss sweeps use common random numbers), so the difference is taken within a repeat and its SE is
    the sd of the per-repeat differences over √R.

    Returns:
        Columns ``comparison, arm, reference, metric, mean_diff, sd, se, repeats`` (empty without a paired design).
    """
    rows = []
    for name, df, col, ref in _arms(summary):
        for arm in sorted(v for v in df[col].unique() if not np.isclose(v, ref)):
            for m in metrics:
                if m not in df or df[m].isna().all():
                    continue
                a = df[np.isclose(df[col], arm)].groupby("repeat")[m].mean()
                b = df[np.isclose(df[col], ref)].groupby("repeat")[m].mean()
                diff = (a - b).dropna()
                if diff.empty:
                    continue
                sd = float(diff.std(ddof=1)) if len(diff) > 1 else math.nan
                rows.append({"comparison": name, "arm": float(arm), "reference": float(ref), "metric": m,
                             "mean_diff": float(diff.mean()), "sd": sd,
                             "se": sd / math.sqrt(len(diff)) if len(diff) > 1 else math.nan,
                             "repeats": int(len(diff))})
    return pd.DataFrame(rows, columns=["comparison", "arm", "reference", "metric", "mean_diff", "sd", "se",
                                       "repeats"])
