"""decompose_threads: a due step's matrices decomposed in parallel threads (a pool, or torch's own OpenMP team)
give the very same table."""

from __future__ import annotations

import glob
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pandas as pd
import pytest
import torch
from torch import nn

import spectra
from spectra.pipeline.torch_team import torch_openmp


def _train(**options) -> tuple[pd.DataFrame, Any]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(40, 60), nn.Tanh(), nn.Linear(60, 30), nn.Tanh(), nn.Linear(30, 5))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = torch.randn(64, 40), torch.randn(64, 5)
    with spectra.SpectraMonitor(model, opt, every=2, analyzer_options={"alignment": {"overlaps": "full"}},
                                warn_overhead=None, **options) as mon:
        for _ in range(5):
            opt.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            opt.step()
        decomposers = mon._pipeline.decomposers
        df = mon.to_pandas()
    return df, decomposers


def _two_layers(d: int, h: int, out: int, *, batch: int) -> tuple[nn.Module, Any, Any]:
    """A seeded two-layer net, its Adam, and ``steps(n)``: n training steps on one fixed batch."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(d, h), nn.Tanh(), nn.Linear(h, out))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = torch.randn(batch, d)

    def steps(n: int) -> None:
        for _ in range(n):
            opt.zero_grad()
            model(x).pow(2).mean().backward()
            opt.step()

    return model, opt, steps


@pytest.fixture
def torch_threads():
    """torch at two intra-op threads for the test (a team to share), put back afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield 2
    torch.set_num_threads(before)


def _no_team(monkeypatch) -> None:
    monkeypatch.setattr("spectra.pipeline.decomposers.torch_openmp", lambda: None)


def test_the_table_does_not_depend_on_the_number_of_threads_or_on_whose_they_are(torch_threads, monkeypatch):
    one, alone = _train(decompose_threads=1)
    assert alone.threads == 1 and alone.pool is None and alone._team is None and len(one) > 1000
    if torch_openmp() is not None:  # torch's own OpenMP threads (sync mode, torch at 2 threads)
        shared, team = _train(decompose_threads=2)
        assert team._team is not None and team.pool is None
        pd.testing.assert_frame_equal(shared, one)
    _no_team(monkeypatch)
    for n in (2, 4):
        many, pool = _train(decompose_threads=n)
        assert pool._team is None and pool.pool is None  # closed at exit: it was a pool of n threads
        pd.testing.assert_frame_equal(many, one)


def test_torchs_libgomp_is_found_where_its_wheel_bundles_one():
    # the team is an optimisation with a fallback, so make sure the fallback is not silently what CI tests
    bundled = glob.glob(os.path.join(os.path.dirname(torch.__file__), "lib", "libgomp*"))
    if not (sys.platform.startswith("linux") and bundled):
        pytest.skip("torch's build here has no bundled libgomp")
    assert torch_openmp() is not None


def test_a_synchronous_step_decomposes_on_torchs_threads_and_adds_none(torch_threads, monkeypatch):
    if torch_openmp() is None:
        pytest.skip("torch's OpenMP runtime is not libgomp here")
    from spectra.snapshot import LayerState

    ran_on: list[int] = []
    prefetch = LayerState.prefetch_tasks

    def recording(self, plan):
        def record(task):
            def run():
                ran_on.append(threading.get_native_id())
                return task()
            return run
        return {kind: record(t) for kind, t in prefetch(self, plan).items()}

    monkeypatch.setattr(LayerState, "prefetch_tasks", recording)
    model, opt, steps = _two_layers(200, 150, 100, batch=256)

    steps(2)  # torch's team exists now
    from spectra.schedules import every

    # nothing due at attach (which loads SciPy and its BLAS threads): the first due steps come after the count
    mon = spectra.SpectraMonitor(model, opt, schedule=every(2, start=2), decompose_threads=2, warn_overhead=None)
    threads_before = len(os.listdir("/proc/self/task"))
    steps(4)
    df = mon.to_pandas()
    assert set(df.status) == {"ok"} and set(df.step) == {2, 4}
    assert mon._pipeline.decomposers.pool is None
    assert not [t for t in threading.enumerate() if t.name.startswith("spectra-decompose")]
    assert len(os.listdir("/proc/self/task")) == threads_before  # torch's worker did the work: no new thread
    assert threading.get_native_id() in ran_on and len(set(ran_on)) == 2
    mon.detach()


def test_the_team_is_not_used_where_it_would_be_someone_elses(torch_threads, monkeypatch):
    from spectra.pipeline.decomposers import Decomposers

    # the worker thread's own team would be threads of its own: a pool serves it
    assert isinstance(Decomposers(2, background=True, torch_threads=2).run(lambda ex: ex, worker=True),
                      ThreadPoolExecutor)
    assert Decomposers(4, background=False, torch_threads=2).team() is None  # more than torch's threads
    assert Decomposers(1, background=False, torch_threads=2).run(lambda executor: executor) is None
    _no_team(monkeypatch)
    fallback = Decomposers(2, background=False, torch_threads=2)
    assert fallback.team() is None and isinstance(fallback.run(lambda executor: executor), ThreadPoolExecutor)
    fallback.close()
    assert fallback.pool is None


def test_team_runs_every_task_and_reraises_the_bodys_own_exception(torch_threads):
    lib = torch_openmp()
    if lib is None:
        pytest.skip("torch's OpenMP runtime is not libgomp here")
    from spectra.pipeline.torch_team import TorchTeam

    team = TorchTeam(lib, 2)
    futures = []

    def body(ex):
        futures.extend(ex.submit(lambda i=i: i * i) for i in range(8))
        futures.append(ex.submit(lambda: 1 / 0))
        assert ex.wait(futures[3]) == 9
        raise KeyError("from the body")

    with pytest.raises(KeyError, match="from the body") as info:
        team.run(body)
    assert info.tb is not None
    assert [f.result() for f in futures[:8]] == [i * i for i in range(8)]  # queued work is never left behind
    with pytest.raises(ZeroDivisionError):  # a task's failure is its future's, not the region's
        futures[8].result()
    # a region inside a region is a team of one: the caller runs every task itself, nothing waits forever
    assert team.run(lambda ex: team.run(lambda inner: inner.wait(inner.submit(lambda: "inner")))) == "inner"
    assert team.run(lambda ex: ex.wait(ex.submit(lambda: "again"))) == "again"


def test_default_is_one_per_core_in_sync_mode_and_the_free_cores_in_background(monkeypatch):
    from spectra.pipeline.worker_threads import auto_decompose_threads

    assert auto_decompose_threads(background=False, torch_threads=2, cores=8) == 4  # training waits: all cores
    assert auto_decompose_threads(background=False, torch_threads=1, cores=2) == 2
    assert auto_decompose_threads(background=True, torch_threads=1, cores=2) == 1  # the core training leaves
    assert auto_decompose_threads(background=True, torch_threads=7, cores=8) == 1
    assert auto_decompose_threads(background=True, torch_threads=2, cores=2) == 2  # no free core: all, at low priority
    assert auto_decompose_threads(background=True, torch_threads=1, cores=1) == 1
    monkeypatch.setattr("spectra.pipeline.worker_threads.usable_cores", lambda: 8)
    _, decomposers = _train()
    assert decomposers.threads == 4
    monkeypatch.setattr("spectra.pipeline.pipeline.torch_threads_of_caller", lambda: 7)
    _, decomposers = _train(background="always")
    assert decomposers.threads == 1  # one free core: the worker alone


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_bad_values_are_refused(bad):
    with pytest.raises(ValueError, match="decompose_threads must be a positive integer or None"):
        spectra.SpectraMonitor(nn.Linear(3, 3), torch.optim.SGD(nn.Linear(3, 3).parameters(), lr=0.1),
                               decompose_threads=bad)


def test_attaching_loads_the_linear_algebra_so_the_first_due_step_does_not_pay_for_it():
    # in a fresh process, with a schedule that skips step 0 (so attach analyzes nothing): SciPy's linear algebra
    # (~0.13 s to import) and the BLAS controller still come at attach, not inside the first due step (which the
    # cost watch times); blas_threads=None leaves BLAS alone: nothing to find
    import ast
    import subprocess
    import sys

    code = (
        "import sys, torch, spectra\n"
        "before = 'scipy.linalg' in sys.modules\n"
        "m = torch.nn.Linear(4, 3); opt = torch.optim.SGD(m.parameters(), lr=0.1)\n"
        "from spectra.schedules import every\n"
        "mon = spectra.SpectraMonitor(m, opt, schedule=every(5, start=5), warn_overhead=None)\n"
        "assert mon.to_pandas().empty\n"
        "ctl = mon._pipeline._blas_ctl\n"
        "libs = sorted(lib.filepath for lib in ctl.lib_controllers if lib.user_api == 'blas')\n"
        "off = spectra.SpectraMonitor(torch.nn.Linear(4, 3), opt, schedule=every(5, start=5), warn_overhead=None,"
        " blas_threads=None)\n"
        "print([before, 'scipy.linalg' in sys.modules, libs, off._pipeline._blas_ctl is None])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    before, after, libs, off_is_none = ast.literal_eval(out.strip().splitlines()[-1])
    assert not before and after
    assert any("scipy" in path for path in libs), libs  # SciPy's own OpenBLAS is among the limited libraries
    assert off_is_none


@pytest.mark.parametrize("background", [False, True])
def test_detach_stops_the_decomposition_threads_and_attach_starts_them_again(background, monkeypatch):
    _no_team(monkeypatch)  # the pool's threads (torch's own team has none of spectra's to stop)
    model, opt, steps = _two_layers(40, 60, 30, batch=64)

    def pool_threads() -> list:
        return [t for t in threading.enumerate() if t.name.startswith("spectra-decompose")]

    mon = spectra.SpectraMonitor(model, opt, every=2, decompose_threads=2, background=background,
                                 warn_overhead=None)
    steps(2)
    before = len(mon.to_pandas())  # flushes the background queue
    assert mon._pipeline.decomposers.pool is not None and pool_threads()
    mon.detach()
    assert mon._pipeline.decomposers.pool is None and not pool_threads()  # a detached monitor holds no threads
    mon.attach()
    steps(2)
    df = mon.to_pandas()
    assert mon._pipeline.decomposers.pool is not None and len(df) > before
    assert set(df[df.step == 4].status) == {"ok"}
    mon.detach()
    assert not pool_threads()
