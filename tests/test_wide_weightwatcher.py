"""The wide view speaks WeightWatcher 0.7.7's language: its details column names with the same meaning and dtype
kind, the same values in the compatible mode, its get_summary() keys, and the fit method named everywhere."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import spectra
from spectra.cli import main
from spectra.table.wide import WW_SUMMARY_METRICS


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Conv2d(3, 16, 3), nn.Linear(128, 40), nn.Embedding(50, 24))


@pytest.fixture(scope="module")
def both():
    from spectra.compat.weightwatcher import ww_layer_plan
    from spectra.compat.weightwatcher.runner import run_ww

    model = _model()
    details, error, _, _ = run_ww(model, ww_layer_plan(model), None, {})
    assert details is not None, error
    ours = spectra.analyze(model, fit="ww", analyzer_options={"esd": {"spectrum": True}}).to_wide()
    return details.reset_index(drop=True), ours


def _kind(dtype) -> str:
    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    if pd.api.types.is_integer_dtype(dtype):
        return "int"
    if pd.api.types.is_float_dtype(dtype):
        return "float"
    return "str"


def test_weightwatcher_columns_are_there_with_the_same_dtype_kind(both):
    details, ours = both
    expected = {"layer_id", "name", "longname", "layer_type", "N", "M", "Q", "rf", "num_evals", "lambda_max",
                "sv_max", "sv_min", "spectral_norm", "norm", "log_norm", "log_spectral_norm", "stable_rank",
                "matrix_rank", "rank_loss", "weak_rank_loss", "entropy", "has_esd", "alpha", "xmin", "xmax", "D",
                "sigma", "num_pl_spikes", "alpha_weighted", "log_alpha_norm", "status", "warning"}
    assert expected <= set(details.columns) and expected <= set(ours.columns)
    for col in expected:
        assert _kind(ours[col].dtype) == _kind(details[col].dtype), (col, ours[col].dtype, details[col].dtype)


def test_weightwatcher_values_in_the_compatible_mode(both):
    details, ours = both
    ours = ours.set_index("name").loc[details["name"].astype(str)].reset_index()
    for col in ("layer_type", "N", "M", "rf", "num_evals", "matrix_rank", "rank_loss", "weak_rank_loss", "has_esd",
                "num_pl_spikes", "warning"):
        assert ours[col].astype(object).tolist() == details[col].tolist(), col
    for col in ("lambda_max", "spectral_norm", "sv_max", "alpha", "xmin", "D", "log_norm", "stable_rank"):
        np.testing.assert_allclose(ours[col].astype(float), details[col].astype(float), rtol=1e-9, err_msg=col)
    single = ours["rf"] == 1  # WW's sv_min of a pooled conv is the largest of the slices' minima
    np.testing.assert_allclose(ours.loc[single, "sv_min"].astype(float), details.loc[single, "sv_min"], rtol=1e-9)
    assert set(details["status"]) == {"success"} and set(ours["status"]) <= {"ok", "warn"}
    assert (ours["fit"] == "ww").all() and ours.attrs["fit"] == "ww"


def test_summary_has_weightwatcher_keys_and_describe_keeps_the_per_metric_table():
    from spectra.compat.weightwatcher.runner import (
        hygiene,
        import_weightwatcher,
        restore_longname,
        ww_cpu_path,
    )

    model = _model()
    res = spectra.analyze(model, fit="ww")
    summary = res.summary()
    ww = import_weightwatcher()
    with hygiene([]), restore_longname(model), ww_cpu_path():
        watcher = ww.WeightWatcher(model=model)
        watcher.analyze()
        theirs = watcher.get_summary()
    assert set(summary) == set(theirs) | {"mp_softrank"}  # WW has mp_softrank only with analyze(mp_fit=True)
    assert set(summary) == set(WW_SUMMARY_METRICS)
    for key in ("alpha", "log_norm", "log_spectral_norm", "stable_rank"):
        assert summary[key] == pytest.approx(theirs[key], rel=1e-9), key
    per_metric = res.describe()
    assert {"run", "step", "matrix", "metric", "mean", "50%"} <= set(per_metric.columns)
    with pytest.raises(ValueError, match="no step 7; steps: \\[0\\]"):
        res.summary(step=7)


def test_fit_method_is_named_in_attrs_wide_view_and_cli(tmp_path, capsys):
    model = _model()
    wide = spectra.analyze(model).to_wide()
    assert (wide["fit"] == "csn").all() and wide.attrs["fit"] == "csn"
    counts = ["num_evals", "matrix_rank", "n_tail", "num_pl_spikes", "num_spikes", "rank_loss", "layer_id", "N", "rf"]
    assert all(pd.api.types.is_integer_dtype(wide[c]) for c in counts)
    torch.save(model.state_dict(), tmp_path / "m.pt")
    assert main(["analyze", str(tmp_path / "m.pt"), "-q"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("alpha: fit=csn") and "not WeightWatcher's alpha" in out
    header = next(line for line in out.splitlines() if line.lstrip().startswith("layer"))
    assert "status" in header and "warning" in header
    assert "get_summary" in out
