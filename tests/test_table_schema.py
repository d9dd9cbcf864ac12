"""schema: the Record row, Record.failed, and the frame builders' columns, order and dtypes."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest

from spectra.table.schema import (
    COLUMNS,
    LAYER_COLUMNS,
    MATRICES,
    STATUSES,
    Record,
    jsonable,
    layers_frame,
    normalize_frame,
    records_frame,
)

_DTYPES = {"run": "string", "step": "Int64", "layer": "string", "view": "string", "matrix": "string",
           "analyzer": "string", "metric": "string", "index": "Int64", "value": "float64", "status": "string",
           "message": "string"}


def test_constants():
    assert COLUMNS == ("run", "step", "layer", "view", "matrix", "analyzer", "metric", "index", "value", "status",
                       "message")
    assert STATUSES == ("ok", "warn", "failed", "skipped")
    assert MATRICES == ("weight", "update", "grad", "delta")
    assert LAYER_COLUMNS[:2] == ("layer", "view") and "skip_reason" in LAYER_COLUMNS
    assert set(_DTYPES) == set(COLUMNS)


def test_record_defaults_and_frozen():
    r = Record("r", 1, "fc", "W", "weight", "esd", "alpha", 2.5)
    assert (r.index, r.status, r.message, r.tags) == (None, "ok", "", {})
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.value = 3.0  # type: ignore[misc]


def test_record_failed_fields():
    tags = {"lr": 0.1}
    r = Record.failed(run="exp", step=7, layer="enc.fc", view="q", analyzer="tail", message="ValueError: bad",
                      tags=tags)
    assert (r.run, r.step, r.layer, r.view, r.analyzer) == ("exp", 7, "enc.fc", "q", "tail")
    assert r.matrix == "weight"
    assert r.metric == "error"
    assert math.isnan(r.value)
    assert r.index is None
    assert r.status == "failed"
    assert r.message == "ValueError: bad"
    assert r.tags == {"lr": 0.1} and r.tags is not tags
    tags["lr"] = 5
    assert r.tags == {"lr": 0.1}


def test_record_failed_options():
    r = Record.failed(run="x", step=0, layer="l", view="", analyzer="capture", message="m", matrix="update")
    assert r.matrix == "update" and r.view == "" and r.tags == {}
    with pytest.raises(TypeError):
        Record.failed("x", 0, "l", "", "capture", "m")  # keyword-only: no positional mix-ups


def test_records_frame_of_nothing_has_the_schema_in_order():
    df = records_frame([])
    assert list(df.columns) == list(COLUMNS)
    assert len(df) == 0
    assert {c: str(df[c].dtype) for c in df.columns} == _DTYPES


def test_records_frame_dtypes_values_and_tag_order():
    recs = [
        Record("r", 0, "a", "W", "weight", "esd", "lambda_max", 3.0, None, "ok", "", {"seed": 1}),
        Record("r", 0, "a", "W", "weight", "esd", "sv", 1.5, 2, "warn", "tail short", {"seed": 1, "lr": 0.1}),
        Record.failed(run="r", step=5, layer="b", view="", analyzer="tail", message="E", tags={"lr": 0.2}),
    ]
    df = records_frame(recs)
    assert list(df.columns) == list(COLUMNS) + ["seed", "lr"]
    assert {c: str(df[c].dtype) for c in COLUMNS} == _DTYPES
    assert df["step"].tolist() == [0, 0, 5]
    assert df["index"].isna().tolist() == [True, False, True] and df["index"].iloc[1] == 2
    assert df["value"].iloc[0] == 3.0 and np.isnan(df["value"].iloc[2])
    assert df["status"].tolist() == ["ok", "warn", "failed"]
    assert df["message"].tolist() == ["", "tail short", "E"]
    assert df["seed"].iloc[0] == 1 and pd.isna(df["seed"].iloc[2])
    assert df["lr"].iloc[1] == pytest.approx(0.1) and pd.isna(df["lr"].iloc[0])


def test_records_frame_drops_tags_named_like_columns():
    r = Record("r", 0, "a", "W", "weight", "esd", "m", 1.0, tags={"step": 99, "extra": "x"})
    df = records_frame([r])
    assert list(df.columns) == list(COLUMNS) + ["extra"]
    assert df["step"].tolist() == [0]


def test_normalize_frame_orders_casts_and_fills():
    raw = pd.DataFrame({"value": ["1.5", "oops"], "extra": [1, 2], "step": ["3", "4"], "run": ["r", "r"]})
    df = normalize_frame(raw)
    assert list(df.columns) == list(COLUMNS) + ["extra"]
    assert {c: str(df[c].dtype) for c in COLUMNS} == _DTYPES
    assert df["step"].tolist() == [3, 4]
    assert df["value"].iloc[0] == 1.5 and np.isnan(df["value"].iloc[1])
    assert df["layer"].isna().all() and df["index"].isna().all()
    assert list(raw.columns) == ["value", "extra", "step", "run"]  # the input is not modified


def test_normalize_frame_is_idempotent():
    recs = [Record("r", 1, "a", "W", "weight", "esd", "m", 1.0, 0, tags={"t": "x"})]
    once = records_frame(recs)
    pd.testing.assert_frame_equal(normalize_frame(once), once)


def test_layers_frame_columns_and_dtypes():
    empty = layers_frame([])
    assert list(empty.columns) == list(LAYER_COLUMNS) and len(empty) == 0
    rows = [
        {"layer": "0", "view": "W", "module_type": "Linear", "N": 8, "M": 6, "Q": 8 / 6, "num_matrices": 1,
         "dtype": "float32", "skip_reason": None},
        {"layer": "0.bias", "view": None, "module_type": "Linear", "N": None, "M": None, "Q": None,
         "num_matrices": None, "dtype": "float32", "skip_reason": "1-D parameter"},
    ]
    df = layers_frame(rows)
    assert list(df.columns) == list(LAYER_COLUMNS)
    assert str(df["N"].dtype) == "Int64" and str(df["Q"].dtype) == "float64"
    assert str(df["layer"].dtype) == "string" and str(df["skip_reason"].dtype) == "string"
    assert df["N"].tolist()[0] == 8 and pd.isna(df["N"].iloc[1])
    assert pd.isna(df["skip_reason"].iloc[0]) and df["skip_reason"].iloc[1] == "1-D parameter"
    for c in ("N", "M", "num_matrices"):
        assert str(empty[c].dtype) == "Int64"


def test_jsonable():
    class Thing:
        def __str__(self):
            return "thing"

    got = jsonable({"a": np.int64(3), "b": np.float32(0.5), "c": (1, [np.int8(2)]), 4: None, "d": Thing(),
                    "e": True})
    assert got == {"a": 3, "b": 0.5, "c": [1, [2]], "4": None, "d": "thing", "e": True}
    assert type(got["a"]) is int and type(got["b"]) is float
