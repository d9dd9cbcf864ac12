"""monitor.profile() (where the analysis time goes) and the cost warning (warn_overhead).

The warning's arithmetic is tested on a fake clock: the training loop and the analyzer move it by known
amounts, so the estimate, the verdict and the numbers in the message are exact (no real time is asserted).
"""

from __future__ import annotations

import re
import warnings

import pytest
import torch
from torch import nn

import spectra.pipeline.background as background_mod
import spectra.pipeline.cost as cost_mod
import spectra.pipeline.pipeline as pipeline_mod
from spectra import Analyzer, Measurement, SpectraMonitor
from spectra.pipeline.cost import CostWatch, estimate_overhead
from spectra.pipeline.profile import STAGES, Profile
from spectra.pipeline.settings import Settings


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 24), nn.Tanh(), nn.Linear(24, 6))


def _data(seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(64, 12, generator=g), torch.randn(64, 6, generator=g)


def _step(model, opt, x, y):
    opt.zero_grad()
    ((model(x) - y) ** 2).mean().backward()
    opt.step()


# ---------------------------------------------------------------------------------------------- profile()
def _no_free_core(monkeypatch, cores=2):
    """The machine as the worker sees it: ``cores`` cores, torch's threads on all of them."""
    for mod in (background_mod, cost_mod):
        monkeypatch.setattr(mod, "usable_cores", lambda: cores)
    monkeypatch.setattr(background_mod, "torch_threads_of_caller", lambda: cores)


@pytest.mark.parametrize("background", [False, "always", True])
def test_profile_has_every_stage_per_analyzer_and_view_with_counts(tmp_path, background, monkeypatch):
    if background is True:  # no core free for the worker: every step analyzed in the training thread
        _no_free_core(monkeypatch)
    in_worker = background == "always"
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = _data()
    mon = SpectraMonitor(model, opt, every=3, log_dir=tmp_path, background=background, warn_overhead=None)
    for _ in range(9):
        _step(model, opt, x, y)
    prof = mon.profile()
    mon.detach()
    assert list(prof.columns) == ["stage", "name", "layer", "view", "thread", "count", "seconds", "mean_seconds",
                                  "share"]
    assert set(prof["stage"]) <= set(STAGES)
    assert prof.attrs["due_steps"] == 4 and prof.attrs["background"] is in_worker  # steps 0, 3, 6, 9
    if background:
        assert (prof.attrs["steps_in_worker"], prof.attrs["steps_in_training"]) == ((4, 0) if in_worker else (0, 4))
    else:
        assert "steps_in_worker" not in prof.attrs
    an = prof[prof.stage == "analyzer"].set_index(["name", "layer", "view"])["count"].to_dict()
    # esd and tail also run at step 0; alignment needs an update
    assert an == {(a, layer, "W"): (3 if a == "alignment" else 4) for a in ("esd", "tail", "alignment")
                  for layer in ("0", "2")}
    dec = prof[prof.stage == "decompose"]
    assert set(zip(dec.layer, dec.view)) == {("0", "W"), ("2", "W")} and set(dec["count"]) == {4}
    assert set(prof[prof.stage == "snapshot"]["count"]) == {4}
    sinks = prof[prof.stage == "sink"]
    assert list(sinks["name"]) == ["StreamingSink"] and list(sinks["count"]) == [4]
    capture = prof[prof.stage == "capture"]
    assert list(capture["count"]) == [3]  # the pre-step hook of steps 3, 6 and 9
    assert (prof["seconds"] >= 0).all() and prof["share"].sum() == pytest.approx(1.0)
    assert list(prof["seconds"]) == sorted(prof["seconds"], reverse=True)
    worker_side = prof[~prof.stage.isin(["capture", "handoff", "queue_wait"])]
    assert set(worker_side["thread"]) == {"worker" if in_worker else "training"}
    assert set(prof[prof.stage == "capture"]["thread"]) == {"training"}
    if in_worker:
        assert list(prof[prof.stage == "handoff"]["count"]) == [4]  # W_t copied for steps 0, 3, 6, 9
    else:
        assert "handoff" not in set(prof["stage"])


def test_nothing_due_steps_add_nothing_and_read_no_clock(monkeypatch):
    calls = []

    def counting_clock():
        calls.append(1)
        return 0.0

    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = _data()
    mon = SpectraMonitor(model, opt, schedule=[10**9], warn_overhead=None)
    for mod in (cost_mod, background_mod, pipeline_mod):
        monkeypatch.setattr(mod, "perf_counter", counting_clock)
    for _ in range(30):
        _step(model, opt, x, y)
    assert calls == []
    prof = mon.profile()
    assert prof.empty and prof.attrs["due_steps"] == 0
    mon.detach()


def test_the_cost_watch_stops_reading_the_clock_on_plain_steps(monkeypatch):
    calls = []
    monkeypatch.setattr(cost_mod, "perf_counter", lambda: calls.append(1) or float(len(calls)))
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = _data()
    mon = SpectraMonitor(model, opt, schedule=[10**9])  # the default warn_overhead: watching
    for _ in range(cost_mod.MAX_SAMPLES + 2):
        _step(model, opt, x, y)
    seen = len(calls)
    for _ in range(40):
        _step(model, opt, x, y)
    assert len(calls) == seen <= cost_mod.MAX_SAMPLES + 2
    mon.detach()


def test_profile_object():
    p = Profile()
    p.add("analyzer", "esd", "fc", "W", 0.5)
    p.add("analyzer", "esd", "fc", "W", 1.5)
    p.add("sink", "StreamingSink", "", "", 1.0)
    p.count_step()
    df = p.to_pandas()
    assert df.iloc[0].to_dict() == {"stage": "analyzer", "name": "esd", "layer": "fc", "view": "W",
                                    "thread": "training", "count": 2, "seconds": 2.0, "mean_seconds": 1.0,
                                    "share": pytest.approx(2 / 3)}
    assert p.seconds() == 3.0 and p.seconds(stage="sink") == 1.0 and df.attrs["due_steps"] == 1


# ---------------------------------------------------------------------------------------------- the estimate
def test_estimate_overhead():
    assert estimate_overhead(plain_s=0.01, gap=10, training_s=0.05) == pytest.approx(0.5)
    # background: only what does not fit between due steps makes training wait
    assert estimate_overhead(plain_s=0.01, gap=10, training_s=0.001, worker_s=0.05) == pytest.approx(0.01)
    assert estimate_overhead(plain_s=0.01, gap=10, training_s=0.001, worker_s=0.3) == pytest.approx(2.01)
    assert estimate_overhead(plain_s=0.0, gap=10, training_s=0.1) == float("inf")


class Clock:
    """A fake ``perf_counter``: moves only when told to."""

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class Costly(Analyzer):
    """Moves the fake clock by ``cost`` seconds per call (a due step's analysis)."""

    name = "costly"
    needs = frozenset({"weight"})

    def __init__(self, clock, cost):
        super().__init__()
        self.clock, self.cost = clock, cost

    def analyze(self, state):
        self.clock.now += self.cost
        yield Measurement("costly", 1.0)


def _watched_run(monkeypatch, *, cost, every=5, steps=30, background=False, **options):
    clock = Clock()
    for mod in (cost_mod, background_mod, pipeline_mod):
        monkeypatch.setattr(mod, "perf_counter", clock)
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = _data()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mon = SpectraMonitor(model, opt, every=every, analyzers=[Costly(clock, cost)], layers="0",
                             background=background, **options)
        for _ in range(steps):
            clock.now += 0.01  # a plain training step: 10 ms
            _step(model, opt, x, y)
        mon.detach()
    return [str(w.message) for w in caught if "estimated to slow training" in str(w.message)]


def test_a_costly_schedule_warns_once_with_the_numbers_and_the_advice(monkeypatch):
    msgs = _watched_run(monkeypatch, cost=0.2)  # 0.2 s per due step, every 5 steps of 10 ms: 400%
    assert len(msgs) == 1
    msg = msgs[0]
    assert "slow training by 400% (warn_overhead=50%)" in msg
    assert "measured at step 5: one due step every 5 steps" in msg
    assert "a plain step takes 0.01 s" in msg and "a due step adds 0.2 s" in msg
    assert "every=40 or more keeps it under 50%" in msg  # 0.2 / (40 * 0.01) = 50%
    assert "background=True" in msg and "warn_overhead=None" in msg and "monitor.profile()" in msg


def test_a_cheap_schedule_does_not_warn(monkeypatch):
    assert _watched_run(monkeypatch, cost=0.02) == []  # 40%: under the default 50%


def test_the_threshold_is_the_option(monkeypatch):
    msgs = _watched_run(monkeypatch, cost=0.02, warn_overhead=0.25)
    assert len(msgs) == 1 and "by 40% (warn_overhead=25%)" in msgs[0]


def test_warn_overhead_none_never_warns(monkeypatch):
    assert _watched_run(monkeypatch, cost=5.0, warn_overhead=None) == []


def test_background_warns_when_the_worker_cannot_keep_up(monkeypatch):
    msgs = _watched_run(monkeypatch, cost=2.0, background="always")  # 2 s of analysis per 50 ms of training
    assert len(msgs) == 1
    assert "the background worker needs" in msgs[0] and "training waits for it" in msgs[0]
    assert "background=True" not in msgs[0].split("To make it cheaper:")[1]
    assert int(re.search(r"slow training by (\d+)%", msgs[0]).group(1)) >= 3900  # (2 - 0.05) / 0.05


def test_background_that_keeps_up_does_not_warn(monkeypatch):
    # the worker's 0.02 s (plus the training steps the fake clock counts while it runs) fit in the 0.2 s between
    # due steps: no waiting, while the same schedule would cost 10% synchronously
    assert _watched_run(monkeypatch, cost=0.02, every=20, steps=60, background="always", warn_overhead=0.05) == []
    assert len(_watched_run(monkeypatch, cost=0.02, every=20, steps=60, warn_overhead=0.05)) == 1


@pytest.mark.parametrize("cores, advice", [
    (4, "leave a core free for the background worker (torch's threads use all 4 cores, so background=True "
        "analyzes in the training thread; torch.set_num_threads(3) frees one)"),
    (1, "with one core, background=True analyzes in the training thread: no worker can run beside it"),
])
def test_background_without_a_free_core_is_judged_as_synchronous_and_says_what_frees_one(monkeypatch, cores,
                                                                                          advice):
    _no_free_core(monkeypatch, cores)
    msgs = _watched_run(monkeypatch, cost=0.2, background=True)  # as the synchronous run of the first test
    assert len(msgs) == 1
    assert "slow training by 400%" in msgs[0] and "a due step adds 0.2 s" in msgs[0]
    assert "the background worker needs" not in msgs[0]
    assert advice in msgs[0]


def test_every_step_due_is_judged_too(monkeypatch):
    msgs = _watched_run(monkeypatch, cost=0.1, every=1)
    assert len(msgs) == 1 and "one due step every step" in msgs[0] and "by 1000%" in msgs[0]


def test_cost_watch_waits_for_plain_steps():
    watch = CostWatch(0.5, background=False)
    watch.tick(1)
    watch.spent(10.0)
    watch.due_step(1)  # no plain step seen yet: no verdict
    assert not watch.done


@pytest.mark.parametrize("value, kind, fragment", [
    (True, TypeError, "warn_overhead must be a number"),
    ("50%", TypeError, "warn_overhead must be a number"),
    (0, ValueError, "positive finite fraction"),
    (-0.5, ValueError, "got -0.5"),
    (float("inf"), ValueError, "got inf"),
    (float("nan"), ValueError, "got nan"),
])
def test_warn_overhead_is_validated(value, kind, fragment):
    with pytest.raises(kind, match=fragment):
        Settings.build("monitor", warn_overhead=value)


def test_warn_overhead_defaults():
    assert Settings.build("monitor").warn_overhead == 0.5
    assert Settings.build("monitor", warn_overhead=1).warn_overhead == 1.0
    assert Settings.build("analyze").warn_overhead is None
    with pytest.raises(TypeError, match="warn_overhead: only a training driver"):
        Settings.build("analyze", warn_overhead=0.5)
