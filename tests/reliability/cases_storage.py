"""Fault matrix, round two: tables that change on a round trip, and files spectra did not write (each case:
input, promised outcome, the check that proves it)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from spectra import Record, Results

from ._util import mlp, train
from .cases_runs import _mon, _quiet, _sgd
from .matrix import ENTRY_STORAGE, case


# ------------------------------------------------------------------------------------------- round trips
_NASTY = ["0.10", "007", "NA", "null", "", "None", "nan", " x ", 'q"uote', "c,omma", "a\rb", "a\r\nb", "ünï", "#"]


def _nasty_results() -> Results:
    recs = [Record("r" if i % 2 else "NA", i, name, "W", "weight", "esd", "lambda_max", float(i), None, "ok",
                   name, {"t": name}) for i, name in enumerate(_NASTY)]
    return Results(recs)


@case("layer names and tags such as 0.10, 007, NA, null, empty, \\r, quotes and commas, through CSV",
      ENTRY_STORAGE, "come back exactly (every cell quoted; the sidecar holds column kinds and missing rows)")
def _(tmp):
    res = _nasty_results()
    back = Results.read(res.to_csv(tmp / "t.csv")).to_pandas()
    pd.testing.assert_frame_equal(back, res.to_pandas())
    assert back["layer"].tolist() == _NASTY


@case("the same names through parquet and a state_dict", ENTRY_STORAGE, "come back exactly")
def _(tmp):
    res = _nasty_results()
    pd.testing.assert_frame_equal(Results.read(res.to_parquet(tmp / "t.parquet")).to_pandas(), res.to_pandas())
    from spectra.table.schema import record_rows, records_from_rows

    assert records_from_rows(record_rows(res.records)) == res.records


@case("two runs whose tags have different types (Results.concat), then saved", ENTRY_STORAGE,
      "the concatenated table saves to parquet and CSV and reloads with every value as written (1 stays int, "
      "'a' str, missing stays missing)")
def _(tmp):
    a = Results([Record("a", 0, "fc", "W", "weight", "esd", "x", 1.0, tags={"tag": 1, "only_a": True})])
    b = Results([Record("b", 0, "fc", "W", "weight", "esd", "x", 2.0, tags={"tag": "one"})])
    both = Results.concat([a, b]).to_pandas()
    assert both["tag"].tolist() == [1, "one"] and both["only_a"].tolist()[0] is True
    for path in (tmp / "t.parquet", tmp / "t.csv"):
        r = Results.from_pandas(both)
        getattr(r, "to_" + path.suffix[1:])(path)
        pd.testing.assert_frame_equal(Results.read(path).to_pandas(), both)


@case("a CSV cut short after it was written", ENTRY_STORAGE,
      "ValueError saying how many rows the file holds and how many its sidecar says (never a short table)")
def _(tmp):
    path = _nasty_results().to_csv(tmp / "t.csv")
    lines = path.read_text(encoding="utf-8").split("\n")
    path.write_text("\n".join(lines[:4]) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="holds 3 rows but its sidecar says 14"):
        Results.read(path)


@case("a truncated parquet file", ENTRY_STORAGE, "ValueError naming the file (never a short table)")
def _(tmp):
    path = _nasty_results().to_parquet(tmp / "t.parquet")
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(ValueError, match="t.parquet is not a readable parquet file"):
        Results.read(path)


@case("an overwrite interrupted mid-write (the writer raises)", ENTRY_STORAGE,
      "the old file is intact and no temporary file is left behind")
def _(tmp):
    from spectra.table import storage

    path = _nasty_results().to_parquet(tmp / "t.parquet")
    before = path.read_bytes()

    def boom(fh):
        fh.write(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        storage.atomic_write(path, boom)
    assert path.read_bytes() == before and sorted(p.name for p in tmp.iterdir()) == ["t.parquet"]


# ------------------------------------------------------------------------------------------- foreign files
def _streamed(log_dir: Path) -> pd.DataFrame:
    with _quiet():
        m = mlp()
        o = _sgd(m)
        _mon(m, o, log_dir, every=1)
        train(m, o, 2)
    return Results.read(log_dir).to_pandas()


def _skipped_and_the_rest_read(log_dir: Path, good: pd.DataFrame, warning: str) -> None:
    """Reading warns (``warning``) about the planted file and returns every spectra part unchanged. A file
    without a run id counts as a legacy run, hence ``run_id="all"``."""
    with pytest.warns(RuntimeWarning, match=warning):
        back = Results.read(log_dir, run_id="all").to_pandas()
    pd.testing.assert_frame_equal(back.drop(columns="run_id"), good)


@case("a foreign parquet file (other columns) among the parts", ENTRY_STORAGE,
      "skipped with a warning naming it; every spectra part still read")
def _(tmp):
    good = _streamed(tmp / "log")
    pd.DataFrame({"a": [1, 2]}).to_parquet(tmp / "log" / "records" / "step-00000001-foreign.parquet")
    _skipped_and_the_rest_read(tmp / "log", good, "step-00000001-foreign.parquet.*columns")


@case("a mistyped part (the right columns, value and step as text)", ENTRY_STORAGE,
      "skipped with a warning naming the column and the file; never coerced into NaN rows")
def _(tmp):
    good = _streamed(tmp / "log")
    bad = good.head(3).astype({"value": "string", "step": "string"})
    bad.to_parquet(tmp / "log" / "records" / "step-00000009-typo.parquet")
    _skipped_and_the_rest_read(tmp / "log", good, "step-00000009-typo.parquet.*expected")


@case("a meta file of the wrong shape (a list; layers not a list)", ENTRY_STORAGE,
      "ignored with a warning naming the file; the records still load")
def _(tmp):
    good = _streamed(tmp / "log")
    (meta,) = (tmp / "log" / "runs").glob("*.json")
    for text in ("[1, 2]", json.dumps({"attrs": {}, "layers": "fc"})):
        meta.write_text(text)
        with pytest.warns(RuntimeWarning, match=f"unreadable meta file .*{meta.name}"):
            back = Results.read(tmp / "log").to_pandas()
        pd.testing.assert_frame_equal(back, good)


@case("a log directory of the first release (meta.json, parts without a run id)", ENTRY_STORAGE,
      "read as one run, 'legacy', in step and layer order")
def _(tmp):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from spectra.table.schema import records_frame

    good = _streamed(tmp / "new")
    (tmp / "old" / "records").mkdir(parents=True)
    (meta,) = (tmp / "new" / "runs").glob("*.json")
    legacy = json.loads(meta.read_text())
    legacy.pop("run_id")
    legacy["attrs"].pop("run_id")
    (tmp / "old" / "meta.json").write_text(json.dumps(legacy))
    for step, grp in good.groupby("step"):
        recs = [Record(r.run, int(r.step), r.layer, r.view, r.matrix, r.analyzer, r.metric, r.value,
                       None if pd.isna(r.index) else int(r.index), r.status, r.message) for r in grp.itertuples()]
        pq.write_table(pa.Table.from_pandas(records_frame(recs), preserve_index=False),
                       tmp / "old" / "records" / f"step-{int(step):08d}-run-abcd1234.parquet")
    back = Results.read(tmp / "old")
    pd.testing.assert_frame_equal(back.to_pandas(), good)
    assert back.attrs["run_id"] == "legacy"
