"""Lining WeightWatcher 0.7.7 and spectra up, layer by layer: :func:`compare_weightwatcher` and its summary.

:func:`compare_weightwatcher` runs WeightWatcher (through :func:`~.runner.run_ww`) and spectra's
WeightWatcher-compatible mode on the same model, then builds one row per layer view: ``<metric>_spectra``,
``<metric>_ww`` and ``<metric>_rel_diff`` for every metric both define, plus rows for layers only one side
analyzed, with the reason. :func:`summarize_comparison` reduces that table to one row per metric.

Relative difference: ``|s − w| / max(|s|, |w|)`` (0 when both are 0, NaN when either is missing). Failed fits on
either side (WeightWatcher's ``alpha = -1`` / ``status = 'failed'``) are NaN, never compared or averaged.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from .compatible import WW_SHAPE_METRICS, analyze_ww_compatible
from .plan import WWLayerPlan, name_matcher, not_seen_reason, param_name, ww_layer_plan
from .runner import import_weightwatcher, run_ww

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = [
    "compare_weightwatcher",
    "summarize_comparison",
    "COMPARED_METRICS",
    "FIT_METRICS",
    "ALLOWED_WW_OPTIONS",
]

#: The metrics both sides define, compared column by column.
COMPARED_METRICS = (
    "alpha", "xmin", "xmax", "D", "sigma", "num_pl_spikes",
    "lambda_max", "sv_max", "log_norm", "log_spectral_norm", "alpha_weighted", "log_alpha_norm",
    "stable_rank", "entropy", "N", "M", "Q", "num_evals",
)  # fmt: skip
#: The metrics that come from the power-law fit (NaN on a failed fit).
FIT_METRICS = ("alpha", "xmin", "xmax", "D", "sigma", "num_pl_spikes", "alpha_weighted", "log_alpha_norm")

# WeightWatcher.analyze options that only add columns or change skip thresholds; anything else would change
# what is compared (pooling, scaling, fit variants) and is refused.
ALLOWED_WW_OPTIONS = ("min_evals", "max_evals", "max_N", "mp_fit", "detX", "ERG", "tolerance", "vectors")


def _rel_diff(s: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Elementwise ``|s - w| / max(|s|, |w|)``: 0 when both are 0, NaN when either is NaN."""
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.maximum(np.abs(s), np.abs(w))
        out = np.abs(s - w) / scale
    out = np.where((scale == 0) & np.isfinite(s) & np.isfinite(w), 0.0, out)
    return out


def _ww_value(row: Mapping[str, Any], metric: str, failed: bool) -> float:
    """One WeightWatcher number as a finite float (NaN when missing, not a number, or a failed fit's)."""
    if failed and metric in FIT_METRICS:
        return math.nan
    return _num(row.get(metric, math.nan))


def _num(v: Any) -> float:
    """A finite float, or NaN for None/NaN/NA/inf/non-numbers."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return math.nan
    return f if math.isfinite(f) else math.nan


def compare_weightwatcher(model: Any, *, fit: str = "ww", layers: Any = None, **ww_options: Any) -> pd.DataFrame:
    """Run WeightWatcher 0.7.7 and spectra on the same model and line the numbers up, layer by layer.

    WeightWatcher runs on its CPU path (CUDA hidden, float32 weights → float64 scipy SVD, ε = 1e-10) even on a
    GPU machine, with the host's root logger, warnings filters and stdout left untouched. spectra runs
    :func:`analyze_ww_compatible` with ``ww_skips=False`` so layers WeightWatcher misses are reported too.

    Args:
        model: an ``nn.Module``, a state_dict or a checkpoint path.
        fit: spectra's fit method (``"ww"`` reproduces WeightWatcher; ``"csn"``/``"hill"`` show the
            default-mode differences explained in ``docs/weightwatcher.md``).
        layers: restrict both sides to layers whose name matches (glob, compiled regex, or a list of them).
        **ww_options: passed to ``WeightWatcher.analyze``; allowed: ``min_evals, max_evals, max_N`` (also
            applied to spectra's WW-rule bookkeeping) and the column-adding ``mp_fit, detX, ERG, tolerance,
            vectors``.

    Returns:
        ``pandas.DataFrame``, one row per layer view: ``layer, view, ww_layer_id, ww_longname, ww_layer_type,
        module_type, analyzed_by`` (``both``/``spectra``/``weightwatcher``), ``status_spectra, status_ww,
        reason, compared`` (False when a side is missing or failed, or WeightWatcher's number is not one spectra
        reproduces; ``reason`` says which), then for each metric in :data:`COMPARED_METRICS` the columns
        ``<metric>_spectra``, ``<metric>_ww``, ``<metric>_rel_diff``. Failed fits are NaN with the status set. ``attrs`` records
        ``ww_version, ww_path, spectra_version, fit, ww_options, rel_diff`` and any WeightWatcher error.

    Raises:
        ImportError: WeightWatcher is not installed (with the install command).
        ValueError: an unsupported ``ww_options`` key.
    """
    import pandas as pd

    from ...version import __version__
    from ...analyze import load_target

    bad = sorted(set(ww_options) - set(ALLOWED_WW_OPTIONS))
    if bad:
        raise ValueError(
            f"unsupported WeightWatcher option(s) {bad}: they change what is compared; allowed: "
            f"{', '.join(ALLOWED_WW_OPTIONS)}"
        )
    ww = import_weightwatcher()  # fail early with the install hint
    thresholds = {k: ww_options[k] for k in ("min_evals", "max_evals", "max_N") if k in ww_options}
    target = load_target(model)
    plan = ww_layer_plan(target, **thresholds)
    by_layer = {p.layer: p for p in plan}
    by_longname = {p.longname: p for p in plan}
    match = name_matcher(layers)
    wanted = None if layers is None else {p.layer for p in plan if match(p.layer, param_name(p.layer))}

    res = analyze_ww_compatible(target, layers=layers, fit=fit, ww_skips=False, progress=False, **thresholds)
    sp = _spectra_wide(res)
    skipped = res.layers
    details, ww_error, path, captured = run_ww(target, plan, wanted, ww_options)

    ww_rows: dict[str, dict] = {}
    if details is not None and len(details):
        for rec in details.to_dict("records"):
            p = by_longname.get(str(rec.get("longname", "")))
            if p is None:
                ids = [q for q in plan if q.layer_id == rec.get("layer_id")]
                p = ids[0] if ids else None
            key = p.layer if p is not None else str(rec.get("longname"))
            ww_rows[key] = rec

    rows: list[dict[str, Any]] = []
    seen_ww: set[str] = set()
    for rec in sp.to_dict("records"):
        layer, view = rec["layer"], rec["view"]
        p = by_layer.get(layer)
        w = ww_rows.get(layer) if view == "W" else None
        if w is not None:
            seen_ww.add(layer)
        rows.append(_make_row(layer, view, p, rec, w, ww_error, analyzed_spectra=True))
    # layers WeightWatcher analyzed (or would have) that spectra did not
    spectra_skip = {}
    if len(skipped):
        for r in skipped[skipped["skip_reason"].notna()].to_dict("records"):
            spectra_skip.setdefault(r["layer"], r["skip_reason"])
    for key, w in ww_rows.items():
        if key in seen_ww:
            continue
        p = by_layer.get(key)
        reason = spectra_skip.get(key, "spectra did not analyze this layer")
        rows.append(_make_row(key, "W", p, None, w, "", analyzed_spectra=False, spectra_reason=reason))
    table = pd.DataFrame(rows)
    table.attrs = {
        "ww_version": getattr(ww, "__version__", "?"),
        "ww_path": path or "not run",
        "ww_error": ww_error,
        "ww_log": captured[-20:],
        "spectra_version": __version__,
        "fit": fit,
        "ww_options": dict(ww_options),
        "rel_diff": "|s - w| / max(|s|, |w|); 0 when both are 0; NaN when either is missing or failed",
        "spectra_conventions": {k: v for k, v in res.attrs.items() if k in ("eigenvalues", "esd_method", "fit")},
    }
    return table


def _spectra_wide(res: Any) -> pd.DataFrame:
    """One row per (layer, view) of a ww-compatible Results, with a status/message column (failed included)."""
    import pandas as pd

    df = res.to_pandas()
    df = df[df["index"].isna() & (df["matrix"] == "weight")]
    if df.empty:
        return pd.DataFrame(columns=["layer", "view", "status_spectra", "message_spectra"])
    order = list(dict.fromkeys(zip(df["layer"], df["view"])))
    values = df.drop_duplicates(["layer", "view", "metric"]).set_index(["layer", "view", "metric"])["value"]
    wide = values.unstack("metric").reindex(pd.MultiIndex.from_tuples(order, names=["layer", "view"]))
    wide = wide.reset_index()
    wide.columns.name = None
    rank = {"ok": 0, "warn": 1, "skipped": 2, "failed": 3}
    fit_rows = df[df["metric"].isin(["alpha"])]
    status = fit_rows.groupby(["layer", "view"], sort=False)["status"].first()
    message = fit_rows.groupby(["layer", "view"], sort=False)["message"].first()
    worst = df.assign(r=df["status"].map(rank).fillna(3)).groupby(["layer", "view"], sort=False)["r"].max()
    inv = {v: k for k, v in rank.items()}
    keys = list(zip(wide["layer"], wide["view"]))
    wide["status_spectra"] = [status.get(k, inv[int(worst.get(k, 3))]) for k in keys]
    wide["message_spectra"] = [message.get(k, "") for k in keys]
    return wide.rename(columns=WW_SHAPE_METRICS)


def _make_row(layer: str, view: str, p: WWLayerPlan | None, s: Mapping[str, Any] | None,
              w: Mapping[str, Any] | None, ww_error: str, *, analyzed_spectra: bool,
              spectra_reason: str = "") -> dict[str, Any]:
    """One comparison row: identity columns, statuses, the reason, then each metric on both sides.

    Args:
        layer, view: spectra's layer name and view (``"W"`` for WeightWatcher-only rows).
        p: WeightWatcher's plan entry of the layer (None when it has none).
        s: spectra's wide row (None when spectra did not analyze it).
        w: WeightWatcher's ``details`` record (None when it has none).
        ww_error: WeightWatcher's error message, if it raised.
        analyzed_spectra: whether spectra analyzed the layer.
        spectra_reason: why spectra did not, for WeightWatcher-only rows.

    Returns:
        The row as a dict.
    """
    row: dict[str, Any] = {
        "layer": layer,
        "view": view,
        "ww_layer_id": p.layer_id if p is not None else None,
        "ww_longname": p.longname if p is not None else None,
        "ww_layer_type": p.ww_type if p is not None else None,
        "module_type": p.module_type if p is not None else None,
    }
    ww_failed = w is not None and (str(w.get("status", "")) == "failed" or _ww_value(w, "alpha", False) == -1)
    if w is not None:
        status_ww = "failed" if ww_failed else "ok"
    elif ww_error:
        status_ww = "error"
    else:
        status_ww = "skipped"
    status_sp = (s or {}).get("status_spectra", "skipped") if analyzed_spectra else "skipped"
    row["analyzed_by"] = {(True, True): "both", (True, False): "spectra", (False, True): "weightwatcher"}.get(
        (s is not None, w is not None), "neither")
    reasons = []
    if w is None:
        if ww_error:
            reasons.append(ww_error)
        elif p is None:
            reasons.append(not_seen_reason(layer, view))
        elif view != "W":
            reasons.append(f"spectra splits this matrix into views; WeightWatcher sees {layer} whole")
        elif p.skip_reason:
            reasons.append(p.skip_reason)
        else:
            reasons.append("not in WeightWatcher's output")
    if s is None and spectra_reason:
        reasons.append(f"spectra: {spectra_reason}")
    comparable = s is not None and w is not None and not (p is not None and p.note)
    if p is not None and p.note and w is not None:
        reasons.append(p.note)
    if ww_failed:
        reasons.append("WeightWatcher fit failed (alpha = -1)")
    if status_sp == "failed":
        reasons.append(f"spectra fit failed: {(s or {}).get('message_spectra', '')}")
    row["status_spectra"] = status_sp
    row["status_ww"] = status_ww
    row["reason"] = "; ".join(r for r in reasons if r)
    row["compared"] = comparable
    for m in COMPARED_METRICS:
        sv = math.nan
        if s is not None:
            v = s.get(m, math.nan)
            sv = _num(v)
            if status_sp == "failed" and m in FIT_METRICS:
                sv = math.nan
        wv = _ww_value(w, m, ww_failed) if w is not None else math.nan
        row[f"{m}_spectra"] = sv
        row[f"{m}_ww"] = wv
        row[f"{m}_rel_diff"] = float(_rel_diff(np.float64(sv), np.float64(wv))) if comparable else math.nan
    return row


def summarize_comparison(table: Any) -> pd.DataFrame:
    """Per metric: how many layers both sides report, and the largest absolute and relative differences.

    Args:
        table: the DataFrame returned by :func:`compare_weightwatcher`.

    Returns:
        ``pandas.DataFrame`` with columns ``metric, n_compared, max_abs_diff, max_rel_diff, worst_layer``, one
        row per metric in :data:`COMPARED_METRICS` present in the table; plus ``n_spectra_only``,
        ``n_ww_only`` and ``n_failed`` (either side) as constant columns for a one-glance summary. Failed and
        one-sided rows are never compared.

    Raises:
        ValueError: ``table`` lacks the comparison columns.
    """
    import pandas as pd

    if "analyzed_by" not in getattr(table, "columns", ()) or "compared" not in table.columns:
        raise ValueError("summarize_comparison needs the table returned by compare_weightwatcher")
    out = []
    n_sp = int((table["analyzed_by"] == "spectra").sum())
    n_ww = int((table["analyzed_by"] == "weightwatcher").sum())
    n_failed = int(((table["status_ww"] == "failed") | (table["status_spectra"] == "failed")).sum())
    for m in COMPARED_METRICS:
        cs, cw = f"{m}_spectra", f"{m}_ww"
        if cs not in table or cw not in table:
            continue
        s = table[cs].to_numpy(dtype=float)
        w = table[cw].to_numpy(dtype=float)
        ok = np.isfinite(s) & np.isfinite(w) & table["compared"].to_numpy(dtype=bool)
        if ok.any():
            absd = np.abs(s - w)
            rel = _rel_diff(s, w)
            i = int(np.nanargmax(np.where(ok, rel, -1.0)))
            row = {"metric": m, "n_compared": int(ok.sum()), "max_abs_diff": float(absd[ok].max()),
                   "max_rel_diff": float(rel[ok].max()), "worst_layer": str(table["layer"].iloc[i])}
        else:
            row = {"metric": m, "n_compared": 0, "max_abs_diff": math.nan, "max_rel_diff": math.nan,
                   "worst_layer": ""}
        out.append(row)
    df = pd.DataFrame(out, columns=["metric", "n_compared", "max_abs_diff", "max_rel_diff", "worst_layer"])
    df["n_spectra_only"] = n_sp
    df["n_ww_only"] = n_ww
    df["n_failed"] = n_failed
    df.attrs = dict(getattr(table, "attrs", {}))
    return df
