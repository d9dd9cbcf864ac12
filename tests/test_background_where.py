"""background=True: a due step goes to the worker thread only when the worker has a core of its own.

Where torch's intra-op threads hold every core the process may use and the tensors are on the CPU, the step is
analyzed in the training thread (on torch's own team), exactly as synchronously; with a core free, or training
on an accelerator, the worker analyzes it. ``background="always"`` is tests/test_monitor_background.py's.
The machine is faked by replacing :func:`usable_cores` and the training thread's torch thread count where
spectra.pipeline.background reads them, so the tests hold on any number of cores.
"""

from __future__ import annotations

import os
import threading

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import spectra
import spectra.pipeline.background as background_mod
from spectra import Analyzer, Measurement, SpectraMonitor
from spectra.pipeline.background import WORKER_NAME
from spectra.pipeline.worker_threads import usable_cores, worker_has_a_core

WAIT_S = 60


class Machine:
    """``cores`` cores, torch's training thread on ``torch_threads`` of them; change them mid-run at will."""

    def __init__(self, monkeypatch, *, cores: int, torch_threads: int) -> None:
        self.cores, self.torch_threads = cores, torch_threads
        monkeypatch.setattr(background_mod, "usable_cores", lambda: self.cores)
        monkeypatch.setattr(background_mod, "torch_threads_of_caller", lambda: self.torch_threads)


class WhereItRan(Analyzer):
    """One row per view; remembers the thread of each (step, layer)."""

    name = "where"
    needs = frozenset({"weight"})

    def __init__(self, hold: threading.Event | None = None, hold_step: int | None = None) -> None:
        super().__init__()
        self.threads: dict[tuple[int, str], str] = {}
        self.hold, self.hold_step = hold, hold_step

    def analyze(self, state):
        if self.hold is not None and state.step == self.hold_step:
            assert self.hold.wait(WAIT_S), "the test never released the worker"
        self.threads[(state.step, state.layer)] = threading.current_thread().name
        yield Measurement("norm", float(np.linalg.norm(state.array("weight"))))


class Recording:
    def __init__(self):
        self.steps = []

    @spectra.hookimpl
    def spectra_log_records(self, records, step, run):
        self.steps.append(step)


def _run(background, *, steps=7, analyzers=("esd", "tail", "alignment"), between=None, **options):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 30), nn.Tanh(), nn.Linear(30, 4))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = torch.randn(32, 20), torch.randn(32, 4)
    sink = Recording()
    mon = SpectraMonitor(model, opt, every=2, analyzers=analyzers, background=background, plugins=[sink],
                         warn_overhead=None, **options)
    workers_seen = 0
    for i in range(steps):
        if between is not None:
            between(i)
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        workers_seen = max(workers_seen, len([t for t in threading.enumerate() if t.name == WORKER_NAME]))
    df = mon.to_pandas().reset_index(drop=True)
    prof = mon.profile()
    mon.detach()
    return df, sink.steps, prof, workers_seen, mon


def test_the_rule():
    assert not worker_has_a_core(torch_threads=2, cores=2)  # torch holds every core: the training thread
    assert not worker_has_a_core(torch_threads=8, cores=2)
    assert not worker_has_a_core(torch_threads=1, cores=1)
    assert not worker_has_a_core(torch_threads=0, cores=1)  # a thread count below one still takes a core
    assert worker_has_a_core(torch_threads=1, cores=2)  # a free core
    assert worker_has_a_core(torch_threads=3, cores=4)
    assert not worker_has_a_core(torch_threads=4, cores=4, devices={"cpu"})
    assert worker_has_a_core(torch_threads=4, cores=4, devices={"cpu", "cuda"})  # training on an accelerator
    assert worker_has_a_core(torch_threads=4, cores=4, devices={"mps"})
    affinity = getattr(os, "sched_getaffinity", None)
    assert usable_cores() == (len(affinity(0)) if affinity is not None else os.cpu_count())


def test_without_a_free_core_the_training_thread_analyzes_every_step_as_synchronously(monkeypatch):
    sync_df, sync_steps, _, _, _ = _run(False)
    Machine(monkeypatch, cores=2, torch_threads=2)
    df, steps, prof, workers_seen, mon = _run(True)
    pd.testing.assert_frame_equal(df, sync_df)
    assert steps == sync_steps == [0, 2, 4, 6]
    assert workers_seen == 0  # no worker thread was ever started
    assert (prof.attrs["steps_in_worker"], prof.attrs["steps_in_training"]) == (0, 4)
    assert not prof.attrs["background"] and set(prof["thread"]) == {"training"}
    assert "handoff" not in set(prof["stage"])  # W_t was read in place, as synchronously: no copy for a worker
    assert "in training thread=4" in repr(mon._runner)


def test_with_a_free_core_the_worker_analyzes_and_the_table_is_the_same(monkeypatch):
    sync_df, sync_steps, _, _, _ = _run(False, analyzers=("esd", "alignment", WhereItRan()))
    Machine(monkeypatch, cores=2, torch_threads=1)
    where = WhereItRan()
    df, steps, prof, workers_seen, _ = _run(True, analyzers=("esd", "alignment", where))
    pd.testing.assert_frame_equal(df, sync_df)
    assert steps == sync_steps and workers_seen == 1
    assert set(where.threads.values()) == {WORKER_NAME}
    assert (prof.attrs["steps_in_worker"], prof.attrs["steps_in_training"]) == (4, 0)


def test_a_step_analyzed_in_the_training_thread_waits_for_the_queued_ones(monkeypatch):
    """The worker still holds steps 0 and 2 when the free core goes (torch takes it): step 4 is analyzed in the
    training thread only after them, so sinks, table and log see the steps in order."""
    sync_df, sync_steps, _, _, _ = _run(False, analyzers=("esd", WhereItRan()))
    machine = Machine(monkeypatch, cores=2, torch_threads=1)
    release = threading.Event()
    where = WhereItRan(hold=release, hold_step=2)

    def between(i):
        if i == 3:  # steps 0 and 2 went to the worker (step 2 is held there); this optimizer step makes step 4
            machine.torch_threads = 2
            threading.Timer(0.2, release.set).start()  # the training thread waits in the flush until then

    df, steps, prof, _, _ = _run(True, analyzers=("esd", where), between=between)
    pd.testing.assert_frame_equal(df, sync_df)
    assert steps == sync_steps == [0, 2, 4, 6]
    ran = {step: name for (step, _), name in where.threads.items()}
    assert ran == {0: WORKER_NAME, 2: WORKER_NAME, 4: "MainThread", 6: "MainThread"}
    assert (prof.attrs["steps_in_worker"], prof.attrs["steps_in_training"]) == (2, 2)


class Boom(Analyzer):
    name = "boom"
    needs = frozenset({"weight"})

    def analyze(self, state):
        if state.step == 2:
            raise ValueError("boom at step 2")
        yield Measurement("ok", 1.0)


def test_raise_mode_in_the_training_thread_raises_in_the_step_as_synchronously(monkeypatch):
    Machine(monkeypatch, cores=2, torch_threads=2)
    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = SpectraMonitor(model, opt, every=2, analyzers=[Boom()], background=True, on_error="raise",
                         warn_overhead=None)
    x = torch.randn(8, 5)
    for expect_raise in (False, True):  # optimizer steps 1 and 2
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        if expect_raise:  # step 2: the original error, from opt.step() itself, not a BackgroundError later
            with pytest.raises(ValueError, match="boom at step 2"):
                opt.step()
        else:
            opt.step()
    mon.detach()
