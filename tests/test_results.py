import math

import numpy as np
import pandas as pd
import pytest

from spectra.results import COLUMNS, Record, Results


def _records():
    recs = []
    for step in (0, 10):
        for layer in ("fc1", "fc2"):
            recs.append(Record("r", step, layer, "W", "weight", "tail", "alpha", 2.0 + step / 10, tags={"lr": 0.1}))
            recs.append(Record("r", step, layer, "W", "weight", "esd", "lambda_max", 50.0, tags={"lr": 0.1}))
            for i in range(3):
                recs.append(Record("r", step, layer, "W", "update", "alignment", "sv", 1.0 / (i + 1), i,
                                   tags={"lr": 0.1}))
    recs.append(Record("r", 10, "fc3", "W", "weight", "tail", "alpha", math.nan, None, "failed", "boom",
                       tags={"lr": 0.1}))
    return recs


LAYERS = [
    {"layer": "fc1", "view": "W", "module_type": "Linear", "N": 20, "M": 10, "Q": 2.0, "num_matrices": 1,
     "dtype": "torch.float32", "skip_reason": None},
    {"layer": "fc1.bias", "view": None, "module_type": "Linear", "N": None, "M": None, "Q": None,
     "num_matrices": None, "dtype": "torch.float32", "skip_reason": "1-D parameter"},
]


def test_tidy_schema_and_dtypes():
    df = Results(_records(), layers=LAYERS, attrs={"fit": "csn"}).to_pandas()
    assert list(df.columns[: len(COLUMNS)]) == list(COLUMNS)
    assert "lr" in df.columns
    assert str(df["step"].dtype) == "Int64" and str(df["index"].dtype) == "Int64"
    assert df["value"].dtype == np.float64
    assert df["index"].isna().sum() == 9
    assert df.attrs["fit"] == "csn" and df.attrs["schema_version"] == 1


def test_wide_pivots_scalars_of_weight():
    res = Results(_records(), layers=LAYERS)
    wide = res.to_wide()
    assert len(wide) == 5  # (step, layer) for fc1/fc2, and the failed fc3 with its status, as WW lists failed fits
    assert set(["alpha", "lambda_max"]) <= set(wide.columns)
    row = wide[(wide.step == 10) & (wide.layer == "fc1")].iloc[0]
    assert row["alpha"] == pytest.approx(3.0)
    assert row["N"] == 20
    failed = wide[wide.layer == "fc3"].iloc[0]
    assert failed["status"] == "failed" and failed["fit_message"] == "boom" and np.isnan(failed["alpha"])
    assert failed["warning"] == ""  # WW labels its alpha = -1 "over-trained"; a failed fit gets no label here


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_round_trip_keeps_dtypes_and_attrs(tmp_path, suffix):
    res = Results(_records(), layers=LAYERS, attrs={"fit": "csn", "normalize": False})
    path = tmp_path / f"run{suffix}"
    (res.to_parquet if suffix == ".parquet" else res.to_csv)(path)
    back = Results.read(path)
    a, b = res.to_pandas(), back.to_pandas()
    pd.testing.assert_frame_equal(a[list(COLUMNS)], b[list(COLUMNS)], check_dtype=True)
    assert b.attrs["fit"] == "csn"
    assert back.layers["skip_reason"].tolist()[1] == "1-D parameter"
    assert str(back.layers["N"].dtype) == "Int64"


def test_concat_and_missing_file(tmp_path):
    a = Results(_records()[:3])
    b = Results(_records()[3:6])
    both = Results.concat([a, b])
    assert len(both) == 6
    with pytest.raises(FileNotFoundError):
        Results.read(tmp_path / "nope.parquet")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(ValueError, match="parquet, .csv"):
        Results.read(tmp_path / "x.txt")


def test_empty_results_have_schema():
    df = Results().to_pandas()
    assert list(df.columns) == list(COLUMNS) and len(df) == 0


def test_spectra_by_step_for_snapshots():
    recs = [Record("r", step, "fc1", "W", "weight", "esd", "eigenvalue", float(v), i)
            for step in (0, 5) for i, v in enumerate([1.0 + step, 2.0 + step, 3.0 + step])]
    recs.append(Record("r", 0, "fc2", "W", "weight", "esd", "lambda_max", 9.0))
    res = Results(recs)
    sp = res.spectra("fc1")
    assert list(sp) == [0, 5]
    np.testing.assert_array_equal(sp[5], [6.0, 7.0, 8.0])
    with pytest.raises(ValueError, match="spectrum.*True.*fc1"):
        res.spectra("fc2")
