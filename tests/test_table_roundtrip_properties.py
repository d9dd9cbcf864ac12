"""Property tests: every round trip (parquet, CSV, log directory, state_dict) returns exactly what was written,
for any string a layer, view or tag may hold and any tag value spectra accepts."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spectra import Record, Results
from spectra.table.schema import record_rows, records_from_rows
from spectra.table.storage import read_log_dir, write_part, write_run_meta
from spectra.table.schema import layers_frame

TEXT = st.text(st.characters(codec="utf-8"), max_size=12)
TAG_VALUE = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), TEXT,
                      st.floats(allow_nan=False, allow_infinity=False))
VALUE = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.just(math.nan))


@st.composite
def records(draw):
    n = draw(st.integers(1, 6))
    tag_names = draw(st.lists(st.sampled_from(["lr", "seed", "name", "note"]), unique=True, max_size=3))
    out = []
    for i in range(n):
        tags = {k: draw(TAG_VALUE) for k in tag_names if draw(st.booleans())}
        out.append(Record(draw(TEXT), i, draw(TEXT), draw(TEXT), "weight", "esd", draw(TEXT), draw(VALUE),
                          draw(st.one_of(st.none(), st.integers(0, 10**6))), draw(st.sampled_from(["ok", "warn"])),
                          draw(TEXT), tags))
    return out


FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(records())
def test_parquet_and_csv_round_trips_are_exact(recs):
    res = Results(recs, attrs={"note": "x"})
    want = res.to_pandas()
    with tempfile.TemporaryDirectory() as d:
        for name in ("t.parquet", "t.csv"):
            path = Path(d) / name
            (res.to_parquet if name.endswith("parquet") else res.to_csv)(path)
            back = Results.read(path)
            pd.testing.assert_frame_equal(back.to_pandas(), want)
            assert back.attrs["note"] == "x"


@FAST
@given(records())
def test_log_dir_round_trip_is_exact(recs):
    res = Results(recs)
    with tempfile.TemporaryDirectory() as d:
        write_run_meta(d, "0123456789ab", {"run": "r"}, layers_frame([]))
        for step in sorted({r.step for r in recs}):
            write_part(d, [r for r in recs if r.step == step], step, "0123456789ab")
        back = read_log_dir(d).frame
    pd.testing.assert_frame_equal(back, res.to_pandas())


@FAST
@given(records())
def test_state_dict_rows_round_trip_is_exact(recs):
    back = records_from_rows(record_rows(recs))
    assert [record_rows([r]) for r in back] == [record_rows([r]) for r in recs]
