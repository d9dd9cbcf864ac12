"""Fault matrix, round two: run identity and resume, and options or state that used to fail late (each case:
input, promised outcome, the check that proves it). Round trips and foreign files: ``cases_storage.py``."""

from __future__ import annotations

import contextlib
import copy
import gc
import io
import pickle
import warnings
import weakref

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import spectra
from spectra import Results, SpectraMonitor

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
