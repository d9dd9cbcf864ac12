"""Fault matrix, round two: run identity and resume, exact round trips, files spectra did not write, and options
or state that used to fail late (each case: input, promised outcome, the check that proves it)."""

from __future__ import annotations

import contextlib
import copy
import gc
import io
import json
import pickle
import warnings
import weakref
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import spectra
from spectra import Record, Results, SpectraMonitor

from ._util import hooks_of, mlp, train
from .matrix import ENTRY_MONITOR, ENTRY_STORAGE, case


@contextlib.contextmanager
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _sgd(m: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(m.parameters(), lr=0.05)


def _mon(m, o, log_dir=None, **kw):
    kw.setdefault("every", 2)
    kw.setdefault("analyzers", ("esd",))
    return SpectraMonitor(m, o, log_dir=log_dir, **kw)


def _steps(res) -> list[int]:
    return sorted(int(s) for s in res.to_pandas()["step"].unique())


# ------------------------------------------------------------------------------------------- run identity
@case("monitor built on an existing log_dir, then load_state_dict (resume after a crash)", ENTRY_MONITOR,
      "continues the saved run: no second step 0, parts written after the checkpoint moved to "
      "`records/superseded/`, and the table equals an uninterrupted run's")
def _(tmp):
    m, ref = mlp(), mlp()
    o, ro = _sgd(m), _sgd(ref)
    with _quiet():
        uninterrupted = _mon(ref, ro, tmp / "ref")
        train(ref, ro, 10)
        mon = _mon(m, o, tmp / "log")
        train(m, o, 6)
        state = mon.state_dict()
        train(m, o, 2)  # steps 7-8 reach the disk, then the job dies
        mon.detach()
        m2 = mlp()  # the checkpoint was taken at step 6: the same seeded run replayed to step 6
        o2 = _sgd(m2)
        train(m2, o2, 6)
        resumed = _mon(m2, o2, tmp / "log")  # its attach analyzes "step 0" of the resumed weights...
        resumed.load_state_dict(state)      # ...which the resume takes back
        train(m2, o2, 4)
    got = Results.read(tmp / "log").to_pandas()
    want = uninterrupted.to_pandas()
    assert _steps(Results.read(tmp / "log")) == [0, 2, 4, 6, 8, 10]
    assert not got.duplicated(["step", "layer", "view", "metric", "index"]).any()
    cols = ["step", "layer", "view", "matrix", "analyzer", "metric", "index", "status"]
    pd.testing.assert_frame_equal(got[cols], want[cols])
    np.testing.assert_allclose(got["value"], want["value"], rtol=1e-9, equal_nan=True)
    assert [p.name[:13] for p in (tmp / "log" / "records" / "superseded").iterdir()] == ["step-00000008"]


@case("two monitors stream to one log_dir", ENTRY_STORAGE,
      "each writes its own run id; `Results.read(log_dir)` raises, listing both runs; `run_id=` reads one, "
      "`run_id='all'` both side by side with a `run_id` column; nothing is merged")
def _(tmp):
    mons = []
    with _quiet():
        for seed in (0, 1):
            m = mlp(seed)
            o = _sgd(m)
            mons.append(_mon(m, o, tmp / "log", run="same-name"))
            train(m, o, 2)
    ids = [mon.run_id for mon in mons]
    assert len(set(ids)) == 2
    with pytest.raises(ValueError, match="holds 2 runs.*never merges") as err:
        Results.read(tmp / "log")
    assert all(i in str(err.value) for i in ids)
    for mon in mons:
        one = Results.read(tmp / "log", run_id=mon.run_id).to_pandas()
        pd.testing.assert_frame_equal(one, mon.to_pandas())
    both = Results.read(tmp / "log", run_id="all").to_pandas()
    assert sorted(both["run_id"].unique()) == sorted(ids) and len(both) == sum(len(x.to_pandas()) for x in mons)


@case("restart without resume: a new monitor on a log_dir that holds a run", ENTRY_MONITOR,
      "a new run id; the old run's parts and meta file untouched")
def _(tmp):
    with _quiet():
        m = mlp()
        o = _sgd(m)
        first = _mon(m, o, tmp / "log")
        train(m, o, 4)
        first.detach()
        before = {p.name: p.read_bytes() for p in (tmp / "log").rglob("*") if p.is_file()}
        second = _mon(m, o, tmp / "log")
        train(m, o, 2)
    assert second.run_id != first.run_id
    after = {p.name: p.read_bytes() for p in (tmp / "log").rglob("*") if p.is_file()}
    assert all(after[k] == v for k, v in before.items())


@case("state_dict of a streaming monitor after many steps", ENTRY_MONITOR,
      "a cursor (format, step, run, run id, log_dir) whose size does not grow with the records")
def _(tmp):
    with _quiet():
        m = mlp()
        o = _sgd(m)
        mon = _mon(m, o, tmp / "log", every=1)
        train(m, o, 2)
        small = len(pickle.dumps(mon.state_dict()))
        train(m, o, 20)
        state = mon.state_dict()
    assert set(state) == {"format", "step", "run", "run_id", "log_dir"}
    assert len(pickle.dumps(state)) == small and state["step"] == 22


@case("state_dict without log_dir, numpy scalar tags, saved with torch.save", ENTRY_MONITOR,
      "tags are stored as Python scalars at construction, so `torch.load(weights_only=True)` reloads the state "
      "and the records round-trip exactly")
def _(tmp):
    with _quiet():
        m = mlp()
        o = _sgd(m)
        mon = _mon(m, o, tags={"lr": np.float32(0.05), "seed": np.int64(3), "name": np.str_("a")})
        train(m, o, 2)
    buf = io.BytesIO()
    torch.save(mon.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    with _quiet():
        fresh = _mon(mlp(), _sgd(mlp()), attach=False, tags={"lr": 0.05, "seed": 3, "name": "a"})
    fresh.load_state_dict(state)
    pd.testing.assert_frame_equal(fresh.to_pandas(), mon.to_pandas())


@case("tags that cannot be stored (a tensor, 2**70, NaN, a name like a column)", ENTRY_MONITOR,
      "TypeError / ValueError at construction naming the tag and what is allowed; no hooks left")
def _(tmp):
    m = mlp()
    o = _sgd(m)
    for tags, exc, pat in [({"t": torch.ones(2)}, TypeError, "tag 't' is a Tensor"),
                           ({"big": 2**70}, ValueError, "64-bit"),
                           ({"x": float("nan")}, ValueError, "not finite"),
                           ({"step": 1}, ValueError, "collide"),
                           ({"run_id": "x"}, ValueError, "collide")]:
        with pytest.raises(exc, match=pat):
            SpectraMonitor(m, o, tags=tags)
        with pytest.raises(exc, match=pat):
            spectra.analyze(m, tags=tags)
    assert hooks_of(o) == 0


@case("copy.copy / copy.deepcopy / pickle of a monitor", ENTRY_MONITOR,
      "TypeError saying why and what to do instead; the original keeps its hooks and keeps recording")
def _(tmp):
    with _quiet():
        m = mlp()
        o = _sgd(m)
        mon = _mon(m, o, every=1)
    for attempt in (copy.copy, copy.deepcopy, pickle.dumps):
        with pytest.raises(TypeError, match="cannot be (copied|pickled)"):
            attempt(mon)
    gc.collect()
    with _quiet():
        train(m, o, 1)
    assert hooks_of(o) == 2 and _steps(mon) == [0, 1]


@case("a schedule that raises", ENTRY_MONITOR,
      "a failed row (analyzer, message) and one warning; training and the other analyzers go on; "
      "`on_error='raise'` propagates")
def _(tmp):
    from spectra.analyzers.esd import EsdAnalyzer

    def bad(step: int) -> bool:
        if step == 3:
            raise ZeroDivisionError("schedule bug")
        return True

    m = mlp()
    o = _sgd(m)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        mon = SpectraMonitor(m, o, every=1, analyzers=(EsdAnalyzer(schedule=spectra.schedules.as_schedule(bad)),
                                                       "tail"))
        train(m, o, 4)
    df = mon.to_pandas()
    failed = df[df["status"] == "failed"]
    assert list(failed["step"]) == [3], failed
    assert "schedule bug" in failed["message"].iloc[0]
    assert sum("schedule bug" in str(x.message) for x in w) == 1
    ok = df[df["status"] == "ok"]
    assert set(ok[ok["analyzer"] == "esd"]["step"]) == {0, 1, 2, 4} and set(ok[ok["analyzer"] == "tail"]["step"]) == {0, 1, 2, 3, 4}
    assert mon.step == 4
    m2 = mlp()
    o2 = _sgd(m2)
    mon2 = SpectraMonitor(m2, o2, analyzers=(EsdAnalyzer(schedule=spectra.schedules.as_schedule(bad)),),
                          on_error="raise")
    with pytest.raises(ZeroDivisionError):
        train(m2, o2, 3)
    mon2.detach()


@case("load_state_dict into a monitor that already recorded training steps", ENTRY_MONITOR,
      "RuntimeError: load before training continues (nothing is rewound or overwritten)")
def _(tmp):
    with _quiet():
        m = mlp()
        o = _sgd(m)
        mon = _mon(m, o, tmp / "log")
        train(m, o, 2)
        state = mon.state_dict()
        train(m, o, 2)
    with pytest.raises(RuntimeError, match="already recorded steps up to 4"):
        mon.load_state_dict(state)
    assert _steps(mon) == [0, 2, 4]


@case("a streaming monitor's state loaded by a monitor without log_dir", ENTRY_MONITOR,
      "ValueError naming the run and the log_dir to pass")
def _(tmp):
    with _quiet():
        m = mlp()
        o = _sgd(m)
        mon = _mon(m, o, tmp / "log")
        train(m, o, 2)
        other = _mon(mlp(), _sgd(mlp()), attach=False)
    with pytest.raises(ValueError, match=f"continues run '{mon.run_id}'.*pass log_dir"):
        other.load_state_dict(mon.state_dict())


@case("keep_in_memory=False without a log_dir", ENTRY_MONITOR, "ValueError at construction: it needs a log_dir")
def _(tmp):
    with pytest.raises(ValueError, match="keep_in_memory=False needs a log_dir"):
        SpectraMonitor(mlp(), _sgd(mlp()), keep_in_memory=False)


@case("streaming to log_dir over many steps", ENTRY_MONITOR,
      "no record is held in memory (results are read back from the run's parts), and the table is complete")
def _(tmp):
    with _quiet():
        m = mlp()
        o = _sgd(m)
        mon = _mon(m, o, tmp / "log", every=1)
        train(m, o, 30)
    assert mon._recorder._results.records == [] and len(mon._recorder._results) == 0
    assert _steps(mon) == list(range(31))


@case("close() on a finished monitor", ENTRY_MONITOR,
      "hooks removed and the model, optimizer and parameters released (collectable); results still readable")
def _(tmp):
    with _quiet():
        m = mlp()
        o = _sgd(m)
        mon = _mon(m, o, every=1)
        train(m, o, 2)
    ref = weakref.ref(m)
    mon.close()
    del m, o
    gc.collect()
    assert ref() is None and _steps(mon) == [0, 1, 2]


@case("a module replaced, its new parameters added with add_param_group", ENTRY_MONITOR,
      "the layer is analyzed once per step, under its name, from the new parameters")
def _(tmp):
    m = mlp()
    o = torch.optim.SGD([m[0].weight, m[0].bias], lr=0.05)
    with _quiet():
        mon = _mon(m, o, every=1)
        train(m, o, 1)
        m[2] = nn.Linear(24, 6)
        o.add_param_group({"params": list(m[2].parameters())})
        train(m, o, 2)
    df = mon.to_pandas()
    last = df[(df["step"] == 3) & (df["metric"] == "lambda_max")]
    assert sorted(last["layer"]) == ["0", "2"]
    w = m[2].weight.detach().double()
    assert np.isclose(last[last["layer"] == "2"]["value"].iloc[0], torch.linalg.matrix_norm(w, 2).item() ** 2)


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


@case("a foreign parquet file (other columns) among the parts", ENTRY_STORAGE,
      "skipped with a warning naming it; every spectra part still read")
def _(tmp):
    good = _streamed(tmp / "log")
    pd.DataFrame({"a": [1, 2]}).to_parquet(tmp / "log" / "records" / "step-00000001-foreign.parquet")
    with pytest.warns(RuntimeWarning, match="step-00000001-foreign.parquet.*columns"):
        back = Results.read(tmp / "log", run_id="all").to_pandas()
    pd.testing.assert_frame_equal(back.drop(columns="run_id"), good)


@case("a mistyped part (the right columns, value and step as text)", ENTRY_STORAGE,
      "skipped with a warning naming the column and the file; never coerced into NaN rows")
def _(tmp):
    good = _streamed(tmp / "log")
    bad = good.head(3).astype({"value": "string", "step": "string"})
    bad.to_parquet(tmp / "log" / "records" / "step-00000009-typo.parquet")
    with pytest.warns(RuntimeWarning, match="step-00000009-typo.parquet.*expected"):
        back = Results.read(tmp / "log", run_id="all").to_pandas()
    pd.testing.assert_frame_equal(back.drop(columns="run_id"), good)


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
