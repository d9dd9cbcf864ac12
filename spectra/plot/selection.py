"""Turning a Results or a tidy frame into the rows one figure needs.

Table inputs are either a :class:`spectra.Results` or its tidy frame (the columns ``run, step, layer, view,
matrix, analyzer, metric, index, value, status, message``; see docs/design.md, 'The tidy table'). The
helpers here normalise that frame, pick one metric, matrix kind and run with errors that list what exists,
flag failed rows, and label layer views.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["as_frame", "failed_mask", "select_metric", "pick_matrix", "pick_run", "layer_label"]


def as_frame(obj: Any) -> "pd.DataFrame":
    """Accept a Results (anything with ``to_pandas``) or a tidy DataFrame; return the tidy frame.

    Missing optional columns get their defaults (``matrix="weight"``, ``status="ok"``, empty strings, a null
    ``index``), ``value`` becomes float64 and the text columns pandas strings. The input is not modified.

    Args:
        obj: a :class:`spectra.Results` or a tidy :class:`pandas.DataFrame`.

    Returns:
        A normalised copy of the tidy frame.

    Raises:
        TypeError: ``obj`` is neither.
        ValueError: a required column (``step, layer, metric, value``) is missing.
    """
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


def failed_mask(df: "pd.DataFrame") -> np.ndarray:
    """Rows drawn as failures: ``status == "failed"`` or a non-finite value.

    Args:
        df: a normalised tidy frame (see :func:`as_frame`).

    Returns:
        A boolean array, one entry per row.
    """
    return (df["status"].to_numpy(dtype=object) == "failed") | ~np.isfinite(df["value"].to_numpy(dtype=float))


def select_metric(df: "pd.DataFrame", metric: str, *, scalar: bool | None) -> "pd.DataFrame":
    """Rows of ``metric``; ``scalar=True`` keeps index-less rows, ``False`` indexed rows, ``None`` both.

    Args:
        df: a normalised tidy frame.
        metric: the metric name.
        scalar: which kind of rows to keep (see above).

    Returns:
        The selected rows.

    Raises:
        ValueError: an unknown metric, or one of the other kind (the message lists the available ones).
    """
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


def pick_matrix(df: "pd.DataFrame", matrix: str | None, metric: str) -> "pd.DataFrame":
    """Rows of one matrix kind.

    Args:
        df: rows of one metric.
        matrix: ``weight | update | grad``; ``None`` prefers ``weight`` when several kinds are present and
            keeps everything otherwise.
        metric: the metric name, for the error message.

    Returns:
        The selected rows.

    Raises:
        ValueError: ``matrix`` has no rows (the message lists the kinds present).
    """
    present = sorted(set(df["matrix"].astype(str)))
    if matrix is None:
        if len(present) > 1 and "weight" in present:
            return df[df["matrix"] == "weight"]
        return df
    if matrix not in present:
        raise ValueError(f"metric {metric!r} has no rows for matrix={matrix!r}; available: {present}")
    return df[df["matrix"] == matrix]


def pick_run(df: "pd.DataFrame", run: str | None) -> "pd.DataFrame":
    """Rows of one run.

    Args:
        df: a tidy frame.
        run: the run to keep; ``None`` is allowed only when the table holds a single run.

    Returns:
        The selected rows.

    Raises:
        ValueError: an unknown run, or several runs and no ``run``.
    """
    runs = sorted(set(df["run"].astype(str)))
    if run is not None:
        if run not in runs:
            raise ValueError(f"unknown run {run!r}; available runs: {runs}")
        return df[df["run"] == run]
    if len(runs) > 1:
        raise ValueError(f"the table holds several runs {runs}; pass run=... to choose one")
    return df


def layer_label(layer: str, view: str, multi_view: bool) -> str:
    """``layer[view]`` when the layer has several views, else just ``layer``."""
    return f"{layer}[{view}]" if multi_view and view else layer
