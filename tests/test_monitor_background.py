"""SpectraMonitor(background="always"): the analysis in one worker thread, with results identical to the
synchronous mode's, bounded queue, flush points, error propagation, dead workers and thread settings.
(``background=True``, which analyzes in the training thread when no core is free for the worker, is
tests/test_background_where.py's.)

No test here asserts a time. Where a test needs the worker to be slow (to prove that a snapshot is frozen, that
the queue blocks, that a flush waits), the analyzer waits on an event the test sets, or sleeps briefly and the
test then checks that nothing is missing after a flush, which holds whatever the timing.
"""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
import threading
import time
import traceback
import warnings
import weakref

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import spectra
from spectra import Analyzer, Measurement, SpectraMonitor
from spectra.pipeline.background import WORKER_NAME, BackgroundError
from spectra.pipeline.settings import Settings
from spectra.table.results import Results

WAIT_S = 60  # an event a test waits on that is never set fails the test instead of hanging it


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 24), nn.Tanh(), nn.Linear(24, 6))


def _data(seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(64, 12, generator=g), torch.randn(64, 6, generator=g)


def _train(model, opt, steps, x, y):
    for _ in range(steps):
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()


def _workers():
    return [t for t in threading.enumerate() if t.name == WORKER_NAME]


class Recording:
    """A sink plugin: every (step, records) batch it is handed, in order."""

    def __init__(self):
        self.calls = []

    @spectra.hookimpl
    def spectra_log_records(self, records, step, run):
        self.calls.append((step, [(r.layer, r.view, r.matrix, r.analyzer, r.metric, r.index, r.value, r.status,
                                   r.message) for r in records]))


class Flaky(Analyzer):
    """Fails on the first layer at even steps; otherwise one row."""

    name = "flaky"
    needs = frozenset({"weight"})

    def analyze(self, state):
        if state.step % 2 == 0 and state.layer == "0":
            raise ValueError(f"flaky at step {state.step}")
        yield Measurement("flaky_norm", float(np.linalg.norm(state.array("weight"))))


def _frame(df):
    return df.reset_index(drop=True)


# ---------------------------------------------------------------------------------------------- identical results
def _seeded_run(background, tmp_path=None, *, grow=False, on_error="warn"):
    model = _mlp()
    opt = torch.optim.Adam(model[0].parameters() if grow else model.parameters(), lr=0.01)
    x, y = _data()
    sink = Recording()
    log_dir = None if tmp_path is None else tmp_path / ("bg" if background else "sync")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mon = SpectraMonitor(model, opt, every=2, analyzers=("esd", "tail", "alignment", Flaky()),
                             background=background, log_dir=log_dir, plugins=[sink], on_error=on_error,
                             warn_overhead=None)
        for i in range(9):
            if grow and i == 4:  # a layer added to the optimizer mid-run is picked up at the next due step
                opt.add_param_group({"params": model[2].parameters()})
            opt.zero_grad()
            ((model(x) - y) ** 2).mean().backward()
            opt.step()
        df = mon.to_pandas()
    mon.detach()
    messages = sorted(str(w.message) for w in caught if "flaky" in str(w.message))
    on_disk = None if log_dir is None else Results.read(log_dir).to_pandas()
    return df, sink.calls, messages, on_disk, mon


@pytest.mark.parametrize("grow", [False, True], ids=["fixed-layers", "add_param_group"])
def test_background_table_sinks_and_warnings_match_the_synchronous_run(grow):
    sync_df, sync_calls, sync_msgs, _, _ = _seeded_run(False, grow=grow)
    bg_df, bg_calls, bg_msgs, _, mon = _seeded_run("always", grow=grow)
    pd.testing.assert_frame_equal(_frame(bg_df), _frame(sync_df))
    assert bg_calls == sync_calls  # the sinks saw the same batches in the same order
    assert bg_msgs == sync_msgs and sync_msgs  # the same warnings, from the worker thread
    assert sorted(sync_df["step"].unique()) == [0, 2, 4, 6, 8]
    assert (sync_df[sync_df.status == "failed"]["analyzer"] == "flaky").all()
    assert not _workers(), "detach stops the worker"
    if grow:  # layer "2" joined the optimizer before step 5: analyzed at step 0 (weights) and from step 6 on
        assert sorted(bg_df[bg_df.layer == "2"]["step"].unique()) == [0, 6, 8]
    assert mon.settings.background == "always" and mon._runner.steps_in_worker == 5


def test_background_log_dir_holds_the_same_run(tmp_path):
    sync_df, _, _, sync_disk, _ = _seeded_run(False, tmp_path)
    bg_df, _, _, bg_disk, _ = _seeded_run("always", tmp_path)
    pd.testing.assert_frame_equal(_frame(bg_disk), _frame(sync_disk))
    pd.testing.assert_frame_equal(_frame(bg_df), _frame(sync_df))
    assert len(bg_disk) == len(bg_df) > 0


def test_background_never_changes_the_training():
    def final(background):
        model = _mlp()
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        x, y = _data()
        mon = None if background is None else SpectraMonitor(model, opt, every=1, background=background,
                                                              warn_overhead=None)
        torch.manual_seed(5)
        _train(model, opt, 6, x, y)
        if mon is not None:
            mon.detach()
        return [p.detach().clone() for p in model.parameters()], torch.get_rng_state()

    plain_params, plain_rng = final(None)
    for background in ("always", True):  # in the worker; where no core is free, in the training thread
        bg_params, bg_rng = final(background)
        assert all(torch.equal(a, b) for a, b in zip(plain_params, bg_params))
        assert torch.equal(plain_rng, bg_rng)


# ---------------------------------------------------------------------------------------------- frozen snapshots
class Gated(Analyzer):
    """Keeps what it saw; at ``hold_step`` it first waits until the test lets it go."""

    name = "gated"
    needs = frozenset({"weight", "update", "grad"})

    def __init__(self, hold_step, release):
        super().__init__()
        self.hold_step, self.release, self.seen = hold_step, release, {}

    def analyze(self, state):
        if state.step == self.hold_step:
            assert self.release.wait(WAIT_S), "the test never released the worker"
        self.seen[(state.step, state.layer)] = {k: state.array(k).copy() for k in ("weight", "update", "grad")}
        yield Measurement("seen", 1.0)


def test_a_queued_snapshot_is_never_changed_by_later_training():
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = _data()
    release = threading.Event()
    gated = Gated(hold_step=3, release=release)
    mon = SpectraMonitor(model, opt, schedule=[3, 6], analyzers=[gated], background="always", background_queue=2,
                         warn_overhead=None)
    truth = {}
    for step in range(1, 9):
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        before = model[0].weight.detach().clone().double()
        grad = model[0].weight.grad.detach().clone().double()
        opt.step()
        truth[step] = (model[0].weight.detach().clone().double(), before, grad)
        if step == 8:  # five more steps changed the weights while step 3 waited in the worker
            release.set()
    mon.detach()
    for step in (3, 6):
        w, prev, g = truth[step]
        seen = gated.seen[(step, "0")]
        np.testing.assert_array_equal(seen["weight"], w.numpy())
        np.testing.assert_array_equal(seen["update"], (w.float() - prev.float()).double().numpy())
        np.testing.assert_array_equal(seen["grad"], g.numpy())


# ---------------------------------------------------------------------------------------------- back-pressure
class Holding(Analyzer):
    """At step 2, waits until the training thread is blocked on a full queue (monitor at step 6, queue full)."""

    name = "holding"
    needs = frozenset({"weight"})

    def __init__(self):
        super().__init__()
        self.monitor = None
        self.step_seen_while_holding = None

    def analyze(self, state):
        if state.step == 2 and state.layer == "0":
            runner = self.monitor._runner
            deadline = time.monotonic() + WAIT_S
            while not (self.monitor.step == 6 and len(runner._jobs) >= runner.queue_size):
                assert time.monotonic() < deadline, "training never blocked on the full queue"
                time.sleep(0.005)
            self.step_seen_while_holding = self.monitor.step
        yield Measurement("held", float(state.step))


def test_a_full_queue_blocks_training_and_drops_nothing():
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = _data()
    holding = Holding()
    mon = SpectraMonitor(model, opt, every=2, analyzers=[holding], background="always", background_queue=1,
                         warn_overhead=None)
    holding.monitor = mon
    _train(model, opt, 12, x, y)
    df = mon.to_pandas()
    prof = mon.profile()
    mon.detach()
    # step 2 in the worker, step 4 queued: step 6's post-step hook waited for room (training could not run ahead)
    assert holding.step_seen_while_holding == 6
    assert sorted(df["step"].unique()) == [0, 2, 4, 6, 8, 10, 12]
    assert len(df) == 7 * 2
    waits = prof[prof.stage == "queue_wait"]
    assert len(waits) == 1 and waits["count"].iloc[0] >= 1 and waits["thread"].iloc[0] == "training"


# ---------------------------------------------------------------------------------------------- flush points
class Slow(Analyzer):
    name = "slow"
    needs = frozenset({"weight"})

    def analyze(self, state):
        time.sleep(0.02)
        yield Measurement("slow", float(state.step))


@pytest.mark.parametrize("flush", ["results", "to_pandas", "to_wide", "state_dict", "profile", "detach",
                                   "context_manager"])
def test_every_flush_point_waits_for_the_queued_steps(flush):
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = _data()
    mon = SpectraMonitor(model, opt, every=1, analyzers=[Slow()], background="always", background_queue=4,
                         warn_overhead=None)
    if flush == "context_manager":
        with mon:
            _train(model, opt, 6, x, y)
        df = mon.to_pandas()
    else:
        _train(model, opt, 6, x, y)
        got = getattr(mon, flush)
        got = got() if callable(got) else got
        if flush == "state_dict":
            assert {row[1] for row in got["records"]} == set(range(7))  # (run, step, ...)
        if flush == "profile":
            assert got.attrs["due_steps"] == 7
        df = mon.to_pandas()
    assert sorted(df["step"].unique()) == list(range(7))
    mon.detach()
    assert not _workers()


def test_load_state_dict_after_a_background_step_zero(tmp_path):
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = _data()
    mon = SpectraMonitor(model, opt, every=2, analyzers=[Slow()], background="always", log_dir=tmp_path,
                         warn_overhead=None)
    _train(model, opt, 4, x, y)
    state = mon.state_dict()
    mon.detach()
    resumed = SpectraMonitor(model, opt, every=2, analyzers=[Slow()], background="always", log_dir=tmp_path,
                             warn_overhead=None)
    resumed.load_state_dict(state)  # its own step 0 (queued in the worker) is taken back, not written after
    _train(model, opt, 2, x, y)
    df = resumed.to_pandas()
    resumed.detach()
    assert sorted(df["step"].tolist()) == [0, 0, 2, 2, 4, 4, 6, 6]  # two layers, each step once


def test_a_forgotten_monitor_is_collected_and_its_worker_stops():
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = _data()
    mon = SpectraMonitor(model, opt, every=1, analyzers=[Slow()], background="always", warn_overhead=None)
    _train(model, opt, 3, x, y)
    ref = weakref.ref(mon)
    del mon
    gc.collect()
    assert ref() is None, "the worker, the queue or the finalizer kept the monitor alive"
    assert not _workers()
    _train(model, opt, 2, x, y)  # the hooks went with it


def test_interpreter_exit_flushes_the_queue(tmp_path):
    script = textwrap.dedent(f"""
        import time, torch
        from torch import nn
        from spectra import Analyzer, Measurement, SpectraMonitor

        class Slow(Analyzer):
            name = "slow"
            needs = frozenset({{"weight"}})
            def analyze(self, state):
                time.sleep(0.05)
                yield Measurement("slow", float(state.step))

        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 2))
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        x, y = torch.randn(16, 8), torch.randn(16, 2)
        mon = SpectraMonitor(model, opt, every=1, analyzers=[Slow()], background="always", background_queue=8,
                             log_dir={str(tmp_path)!r}, warn_overhead=None)
        for _ in range(8):
            opt.zero_grad(); ((model(x) - y) ** 2).mean().backward(); opt.step()
        # no detach, no flush: the interpreter exits with steps still queued
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    df = Results.read(tmp_path).to_pandas()
    assert sorted(df["step"].tolist()) == sorted(list(range(9)) * 2)


# ---------------------------------------------------------------------------------------------- errors
class Boom(Analyzer):
    name = "boom"
    needs = frozenset({"weight"})

    def analyze(self, state):
        if state.step == 2:
            raise ZeroDivisionError("boom at step 2")
        yield Measurement("ok", 1.0)


class GatedBoom(Boom):
    def __init__(self, release):
        super().__init__()
        self.release = release

    def analyze(self, state):
        if state.step == 2:
            assert self.release.wait(WAIT_S), "the test never released the worker"
        return super().analyze(state)


def test_raise_mode_reraises_at_the_next_hook_call_chained_to_the_original():
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = _data()
    release = threading.Event()
    mon = SpectraMonitor(model, opt, every=2, analyzers=[GatedBoom(release)], background="always", on_error="raise",
                         warn_overhead=None)
    _train(model, opt, 3, x, y)  # step 2 waits in the worker: no hook can have seen its failure yet
    release.set()
    mon._runner.flush(raise_errors=False)  # (wait for the worker without raising, to test the hook path)
    weights = [p.detach().clone() for p in model.parameters()]
    opt.zero_grad()
    ((model(x) - y) ** 2).mean().backward()
    with pytest.raises(BackgroundError, match="step 2") as info:
        opt.step()  # the pre-step hook raises before the optimizer changes anything
    assert all(torch.equal(a, p) for a, p in zip(weights, model.parameters()))
    assert mon.step == 3
    cause = info.value.__cause__
    assert isinstance(cause, ZeroDivisionError) and str(cause) == "boom at step 2"
    frames = [f.name for f in traceback.extract_tb(cause.__traceback__)]
    assert "analyze" in frames  # the original traceback, down to the analyzer
    _train(model, opt, 1, x, y)  # raised once: training goes on
    assert mon.step == 4
    mon.detach()


def test_raise_mode_reraises_at_a_flush():
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = _data()
    mon = SpectraMonitor(model, opt, every=2, analyzers=[Boom()], background="always", on_error="raise",
                         warn_overhead=None)
    _train(model, opt, 2, x, y)
    with pytest.raises(BackgroundError) as info:
        mon.results
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    mon.detach()  # reported once: detach does not raise it again


def test_sync_raise_mode_is_unchanged():
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = _data()
    mon = SpectraMonitor(model, opt, every=2, analyzers=[Boom()], on_error="raise", warn_overhead=None)
    _train(model, opt, 1, x, y)
    with pytest.raises(ZeroDivisionError):
        _train(model, opt, 1, x, y)
    mon.detach()


def test_an_exception_leaving_a_with_block_wins_over_a_pending_failure():
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = _data()
    with pytest.raises(KeyError), pytest.warns(RuntimeWarning, match="step 2 failed and was never reported"):
        with SpectraMonitor(model, opt, every=2, analyzers=[Boom()], background="always", on_error="raise",
                            warn_overhead=None):
            _train(model, opt, 2, x, y)
            raise KeyError("the user's own error")


class Fatal(BaseException):
    """Not an Exception: nothing in the pipeline catches it, so it ends the worker thread."""


class Killer(Analyzer):
    name = "killer"
    needs = frozenset({"weight"})

    def analyze(self, state):
        if state.step == 2 and state.layer == "0":
            raise Fatal("the worker dies")
        yield Measurement("alive", float(state.step))


def test_a_dead_worker_is_reported_and_nothing_is_silently_lost():
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = _data()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mon = SpectraMonitor(model, opt, every=2, analyzers=[Killer()], background="always", warn_overhead=None)
        _train(model, opt, 8, x, y)
        df = mon.to_pandas()
        mon.detach()
    msgs = [str(w.message) for w in caught if "worker stopped" in str(w.message)]
    assert len(msgs) == 1 and "step 2" in msgs[0] and "Fatal" in msgs[0]
    lost = df[df.step == 2]
    assert list(lost["analyzer"]) == ["background"] and list(lost["status"]) == ["failed"]
    for step in (0, 4, 6, 8):  # a new worker analyzed every later step
        assert set(df[df.step == step]["status"]) == {"ok"} and len(df[df.step == step]) == 2
    assert not _workers()


def test_a_dead_worker_raises_under_raise_mode():
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = _data()
    mon = SpectraMonitor(model, opt, every=2, analyzers=[Killer()], background="always", on_error="raise",
                         warn_overhead=None)
    with pytest.raises(BackgroundError, match="worker stopped") as info:
        _train(model, opt, 8, x, y)
        mon.results
    assert isinstance(info.value.__cause__, Fatal)
    mon.detach()


# ---------------------------------------------------------------------------------------------- threads
class Threads(Analyzer):
    name = "threads"
    needs = frozenset({"weight"})

    def __init__(self):
        super().__init__()
        self.seen = []

    def analyze(self, state):
        from threadpoolctl import threadpool_info

        blas = sorted({(i["filepath"], i["num_threads"]) for i in threadpool_info() if i["user_api"] == "blas"})
        self.seen.append((threading.current_thread().name, torch.get_num_threads(), blas))
        yield Measurement("t", 1.0)


@pytest.mark.parametrize("blas_threads", [1, 2])
def test_worker_thread_settings_leave_the_training_thread_alone(blas_threads):
    from threadpoolctl import threadpool_info

    def blas_now():
        return sorted((i["filepath"], i["num_threads"]) for i in threadpool_info())

    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = _data()
    probe = Threads()
    torch_before, blas_before = torch.get_num_threads(), blas_now()
    mon = SpectraMonitor(model, opt, every=1, analyzers=[probe], background="always", blas_threads=blas_threads,
                         warn_overhead=None)
    _train(model, opt, 3, x, y)
    assert torch.get_num_threads() == torch_before  # while the worker runs
    mon.detach()
    assert {name for name, _, _ in probe.seen} == {WORKER_NAME}
    assert {t for _, t, _ in probe.seen} == {blas_threads}  # the worker's own torch intra-op threads
    assert {n for _, _, b in probe.seen for _, n in b} == {blas_threads}, probe.seen  # the analysis BLAS limit
    assert torch.get_num_threads() == torch_before and blas_now() == blas_before  # all put back
    fresh = []
    t = threading.Thread(target=lambda: fresh.append(torch.get_num_threads()))
    t.start()
    t.join()
    assert fresh == [torch_before]  # the process default that new threads get is unchanged


# ---------------------------------------------------------------------------------------------- settings
@pytest.mark.parametrize("options, kind, fragment", [
    ({"background": 1}, TypeError, "background must be True, False or 'always', got int 1"),
    ({"background": "yes"}, TypeError, "background must be True, False or 'always', got str 'yes'"),
    ({"background_queue": 0}, ValueError, "background_queue must be a positive integer"),
    ({"background_queue": 2.0}, ValueError, "got 2.0"),
    ({"background_queue": True}, ValueError, "got True"),
])
def test_background_options_are_validated(options, kind, fragment):
    with pytest.raises(kind, match=fragment):
        Settings.build("monitor", **options)


def test_background_defaults_and_the_offline_driver():
    s = Settings.build("monitor")
    assert s.background is False and s.background_queue == 2
    assert Settings.build("analyze").background is False
    with pytest.raises(TypeError, match="background: only a training driver"):
        Settings.build("analyze", background=True)
    with pytest.raises(TypeError, match="background_queue: only a training driver"):
        Settings.build("analyze", background_queue=3)


def test_background_is_refused_under_torch_distributed(monkeypatch):
    import spectra.pipeline.distributed as dist

    monkeypatch.setattr(dist, "make_plan", lambda config: object())  # as if a process group existed
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with pytest.raises(ValueError, match="background=True cannot be used under torch.distributed"):
        SpectraMonitor(model, opt, background=True, distributed="auto")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread priorities are Linux's")
def test_the_worker_yields_the_cpu_to_training_and_training_keeps_its_priority():
    import os
    import threading

    seen = {}

    def nice_of(tid: int) -> int:
        with open(f"/proc/self/task/{tid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[16])  # field 19: nice

    from spectra.pipeline import background

    orig = background.yield_to_training

    def spy():
        orig()
        seen["worker"] = nice_of(threading.get_native_id())

    background.yield_to_training = spy
    try:
        model = torch.nn.Linear(6, 4)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        with spectra.SpectraMonitor(model, opt, every=1, background="always", warn_overhead=None) as mon:
            opt.zero_grad()
            model(torch.randn(3, 6)).sum().backward()
            opt.step()
            mon.results
    finally:
        background.yield_to_training = orig
    assert seen["worker"] == 19
    assert nice_of(threading.get_native_id()) == os.getpriority(os.PRIO_PROCESS, 0)
