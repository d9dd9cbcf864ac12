"""The wide summary: one row per (run, probed step) with the paper's quantities as columns.

Every number is read from the monitor's tidy table; the only additions are ratios against the theoretical MP
edge (via :func:`spectra.functional.mp_edges`), differences from step 0 of the same run, the measured one-step
thresholds η* (PAPER §7) and the student's own training MSE, which is not a spectral quantity.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pandas as pd

from spectra.functional import mp_edges

__all__ = ["build_summary", "SUMMARY_METRICS"]

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
        ``student_mse``, ``n_failed`` (failed analyzer rows at that step) and ``diverged``.
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
                         "diverged": bool(out.diverged)})
    base = pd.DataFrame(rows)
    if base.empty:
        return base
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
    edges = np.array([mp_edges(h, d)[1] for h, d in zip(df["h"], df["d"])])
    root = np.sqrt(edges)  # √h + √d
    df["lambda1_over_edge"] = df["lambda_max"] / edges
    df["n_out_frac"] = df["n_out"] / df["d"]
    for c in ("alpha_hill", "train_loss", "test_loss", "n_out"):
        init = df[df["step"] == 0].set_index("run")[c]
        df[f"d_{c}"] = df[c] - df["run"].map(init)
    # measured one-step thresholds (PAPER §7): from the gradient at W₀ (GD) or Adam's first update / η
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
