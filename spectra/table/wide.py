"""The wide view, in WeightWatcher's vocabulary: one row per (run, step, layer, view), WW 0.7.7's ``details``
column names wherever the meaning is the same, and its ``get_summary()``.

Columns, besides the ``run, step, layer, view`` key and one column per scalar metric:

* ``layer_id`` (the layer's position in depth order: the layers table's order, every parameter counted; WW
  numbers ``named_modules()`` entries instead, so the values differ but the order is the same), ``name`` and
  ``longname`` (the layer), ``layer_type`` (WW's ``dense``/``conv1d``/``conv2d``/``embedding``/``norm``/
  ``unknown`` from the module type; ``dense`` or ``conv`` for a state_dict), ``module_type``, ``N``, ``M``,
  ``Q`` and ``rf`` (the number of kernel slices pooled in the view; 1 for a plain matrix);
* the fit: ``fit`` (the method: ``csn``, ``ww`` or ``hill``, so spectra's default alpha is never taken for
  WeightWatcher's), ``status`` (of the alpha row: ``ok``, ``warn`` or ``failed``; WW writes ``success`` for
  the first two), ``fit_message`` (why a fit is ``warn``/``failed``) and ``warning`` (WW's label:
  ``over-trained`` for alpha < 2, ``under-trained`` for alpha > 6, else empty; empty for a failed fit, where
  WW's alpha is -1 and labelled over-trained);
* from the ESD: ``spectral_norm`` (WW's name for λ_max), ``rank_loss`` (``num_evals − matrix_rank``),
  ``sv_min`` (single-matrix views) and ``weak_rank_loss`` (#λ < 1e-6) when the ``esd`` analyzer reports them
  or the spectrum was recorded (``spectrum=True``), and ``has_esd``.

Counts (``num_evals``, ``matrix_rank``, ``num_pl_spikes``, ``n_tail``, ``rank_loss``, ...) are integers
(nullable ``Int64``), as in WW's ``details``.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

__all__ = ["wide_frame", "ww_summary", "ww_layer_type", "WW_SUMMARY_METRICS", "COUNT_METRICS",
           "WW_OVER_TRAINED", "WW_UNDER_TRAINED", "WEAK_RANK_TOLERANCE"]

KEY = ["run", "step", "layer", "view"]
# WeightWatcher 0.7.7's get_summary(): the mean of these columns over layers, for those present
WW_SUMMARY_METRICS = ("log_norm", "alpha", "alpha_weighted", "log_alpha_norm", "log_spectral_norm", "stable_rank",
                      "mp_softrank")
COUNT_METRICS = ("num_evals", "matrix_rank", "num_pl_spikes", "n_tail", "num_spikes", "num_outliers", "rank_loss",
                 "weak_rank_loss", "k", "num_fingers")
WW_OVER_TRAINED, WW_UNDER_TRAINED = 2.0, 6.0  # weightwatcher/constants.py
WEAK_RANK_TOLERANCE = 1e-6  # WW's WEAK_RANK_LOSS_TOLERANCE, on eigenvalues


def ww_layer_type(module_type: Any, rf: Any) -> str:
    """WeightWatcher's ``layer_type`` for a module class name (``""`` for a state_dict entry)."""
    import pandas as pd

    t = "" if module_type is None or pd.isna(module_type) else str(module_type).lower()
    if not t:
        return "dense" if rf is None or pd.isna(rf) or int(rf) <= 1 else "conv"
    for word, kind in (("conv1d", "conv1d"), ("conv2d", "conv2d"), ("linear", "dense"), ("embedding", "embedding"),
                       ("norm", "norm")):
        if word in t:
            return kind
    return "unknown"


def _ww_warning(alpha: float) -> str:
    if alpha != alpha:
        return ""
    return "over-trained" if alpha < WW_OVER_TRAINED else ("under-trained" if alpha > WW_UNDER_TRAINED else "")


def _fit_columns(df: Any, keys: Any) -> Any:
    """``status`` and ``fit_message`` per key, from the alpha row (or a failed ``tail`` row)."""
    import pandas as pd

    alpha = df[(df["metric"] == "alpha") & df["index"].isna()].drop_duplicates(KEY)
    failed = df[(df["analyzer"] == "tail") & (df["status"] == "failed")].drop_duplicates(KEY)
    fit = pd.concat([alpha, failed[~failed.set_index(KEY).index.isin(alpha.set_index(KEY).index)]])
    fit = fit[KEY + ["status", "message"]].rename(columns={"message": "fit_message"})
    out = keys.merge(fit, on=KEY, how="left")
    out["fit_message"] = out["fit_message"].fillna("").astype("string")
    return out


def _from_spectrum(df: Any, keys: Any) -> Any:
    """``sv_min`` and ``weak_rank_loss`` from recorded eigenvalues (``spectrum=True``), per key."""
    import pandas as pd

    ev = df[(df["metric"] == "eigenvalue") & df["status"].isin(["ok", "warn"])]
    if ev.empty:
        return keys.assign(sv_min=np.nan, weak_rank_loss=pd.array([pd.NA] * len(keys), dtype="Int64"))
    g = ev.groupby(KEY, sort=False)["value"]
    got = pd.DataFrame({"sv_min": np.sqrt(np.clip(g.min(), 0, None)),
                        "weak_rank_loss": g.apply(lambda v: int((v < WEAK_RANK_TOLERANCE).sum()))}).reset_index()
    return keys.merge(got, on=KEY, how="left")


def _is_count(column: str) -> bool:
    """A count metric, of W (``num_evals``) or of ΔW/G (``update_k``)."""
    head, _, rest = column.partition("_")
    return column in COUNT_METRICS or (head in ("update", "grad") and rest in COUNT_METRICS)


def _as_counts(wide: Any, columns: Any) -> None:
    import pandas as pd

    for c in columns:
        if c in wide and wide[c].dtype.kind == "f":
            v = wide[c].to_numpy(dtype=np.float64, na_value=np.nan)
            ok = np.isfinite(v)
            if np.array_equal(v[ok], np.round(v[ok])):
                wide[c] = pd.array([int(x) if f else pd.NA for x, f in zip(v, ok)], dtype="Int64")


def wide_frame(tidy: Any, layers: Any, attrs: Mapping[str, Any], *, matrix: str | None = "weight") -> Any:
    """The wide view of a tidy frame (see the module docstring); ``matrix=None`` keeps every matrix kind and
    prefixes the metrics of ΔW and G with ``"<matrix>_"``."""
    import pandas as pd

    df = tidy[tidy["matrix"] == matrix] if matrix is not None else tidy
    scalars = df[df["index"].isna()]
    name = scalars["metric"].where(scalars["matrix"] == "weight", scalars["matrix"] + "_" + scalars["metric"])
    scalars = scalars.assign(column=name)
    keys = scalars[KEY].drop_duplicates().reset_index(drop=True)
    good = scalars[scalars["status"].isin(["ok", "warn"]) & (scalars["metric"] != "error")]
    if len(good):
        values = good.pivot_table(index=KEY, columns="column", values="value", aggfunc="first", sort=False)
        values.columns.name = None
        wide = keys.merge(values.reset_index(), on=KEY, how="left")
    else:
        wide = keys.copy()
    lay = layers[layers["skip_reason"].isna()] if len(layers) else layers
    order = list(dict.fromkeys(layers["layer"].dropna().astype(str))) if len(layers) else []
    for lname in wide["layer"].astype(str):
        if lname not in order:
            order.append(lname)
    ids = {n: i for i, n in enumerate(order)}
    if len(lay):
        info = lay[["layer", "view", "module_type", "N", "M", "Q", "num_matrices"]].rename(
            columns={"num_matrices": "rf"})
        wide = wide.merge(info, on=["layer", "view"], how="left")
    else:
        for c, dt in (("module_type", "string"), ("N", "Int64"), ("M", "Int64"), ("Q", "float64"), ("rf", "Int64")):
            wide[c] = pd.array([pd.NA] * len(wide), dtype=dt) if dt != "float64" else np.nan
    wide["layer_id"] = pd.array([ids[str(n)] for n in wide["layer"]], dtype="Int64")
    wide["name"] = wide["longname"] = wide["layer"].astype("string")
    wide["layer_type"] = pd.array([ww_layer_type(t, r) for t, r in zip(wide["module_type"], wide["rf"])],
                                  dtype="string")
    if "lambda_max" in wide:
        wide["spectral_norm"] = wide["lambda_max"]
    if {"num_evals", "matrix_rank"} <= set(wide.columns):
        wide["rank_loss"] = wide["num_evals"] - wide["matrix_rank"]
    spectrum = _from_spectrum(df, wide[KEY])
    raw = not attrs.get("normalize", False)  # WW's numbers are of unnormalised eigenvalues
    single = raw & (wide["rf"].fillna(1).to_numpy(dtype=np.int64) == 1)  # WW's sv_min of a pooled stack differs
    for c, keep in (("sv_min", single), ("weak_rank_loss", np.full(len(wide), raw))):
        if c not in wide:
            wide[c] = spectrum[c].where(keep)
    wide["has_esd"] = wide["num_evals"].notna().to_numpy(dtype=bool) if "num_evals" in wide else False
    fit = _fit_columns(df, wide[KEY])
    wide["fit"] = pd.array([attrs.get("fit")] * len(wide), dtype="string")
    wide["status"] = pd.array(fit["status"].tolist(), dtype="string")
    wide["warning"] = pd.array([_ww_warning(a) for a in wide.get("alpha", pd.Series(np.nan, index=wide.index))],
                               dtype="string")
    wide["fit_message"] = pd.array(fit["fit_message"].tolist(), dtype="string")
    _as_counts(wide, [c for c in wide.columns if _is_count(c)])
    front = KEY[:2] + ["layer_id", "name", "longname", "layer", "view", "layer_type", "module_type", "N", "M", "Q",
                       "rf"]
    back = ["spectral_norm", "sv_min", "rank_loss", "weak_rank_loss", "has_esd", "fit", "status", "warning",
            "fit_message"]
    middle = [c for c in wide.columns if c not in front and c not in back]
    wide = wide[[c for c in front + middle + back if c in wide.columns]].reset_index(drop=True)
    wide.attrs = dict(attrs)
    return wide


def ww_summary(wide: Any, *, step: int | None = None, run: str | None = None) -> dict[str, float]:
    """WeightWatcher's ``get_summary()`` of one step of one run: the mean over layer views of
    :data:`WW_SUMMARY_METRICS` (those present). Failed fits are left out, not averaged in as WW's α = −1.

    Raises:
        ValueError: several runs and no ``run``, or a ``run``/``step`` the table does not have (the message
            lists the ones it has).
    """
    if len(wide) == 0:
        return {}
    runs = list(dict.fromkeys(wide["run"].astype(str)))
    if run is None and len(runs) > 1:
        raise ValueError(f"the table holds several runs {runs}; pass run=...")
    run = runs[0] if run is None else run
    sub = wide[wide["run"].astype(str) == run]
    if sub.empty:
        raise ValueError(f"no run {run!r}; runs: {runs}")
    steps = sorted(int(s) for s in sub["step"].dropna().unique())
    step = steps[-1] if step is None else step
    sub = sub[sub["step"] == step]
    if sub.empty:
        raise ValueError(f"run {run!r} has no step {step!r}; steps: {steps}")
    return {m: float(np.nanmean(sub[m].to_numpy(dtype=np.float64, na_value=np.nan)))
            for m in WW_SUMMARY_METRICS if m in sub.columns and sub[m].notna().any()}
