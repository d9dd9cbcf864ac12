"""decompose_threads: a due step's matrices decomposed in parallel threads give the very same table."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from torch import nn

import spectra


def _train(**options) -> pd.DataFrame:
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
        pool = mon._pipeline._decompose_pool()
        df = mon.to_pandas()
    return df, pool


def test_the_table_does_not_depend_on_the_number_of_threads():
    one, pool1 = _train(decompose_threads=1)
    assert pool1 is None and len(one) > 1000
    for n in (2, 4):
        many, pool = _train(decompose_threads=n)
        assert pool is not None and pool._max_workers == n
        pd.testing.assert_frame_equal(many, one)


def test_default_is_one_per_core_in_sync_mode_and_the_free_cores_in_background(monkeypatch):
    from spectra.pipeline.worker_threads import auto_decompose_threads

    assert auto_decompose_threads(background=False, torch_threads=2, cores=8) == 4  # training waits: all cores
    assert auto_decompose_threads(background=False, torch_threads=1, cores=2) == 2
    assert auto_decompose_threads(background=True, torch_threads=1, cores=2) == 1  # the core training leaves
    assert auto_decompose_threads(background=True, torch_threads=7, cores=8) == 1
    assert auto_decompose_threads(background=True, torch_threads=2, cores=2) == 2  # no free core: all, at low priority
    assert auto_decompose_threads(background=True, torch_threads=1, cores=1) == 1
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    _, pool = _train()
    assert pool._max_workers == 4
    monkeypatch.setattr("spectra.pipeline.pipeline.torch_threads_of_caller", lambda: 7)
    _, pool = _train(background=True)
    assert pool is None  # one free core: the worker alone


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
def test_detach_stops_the_decomposition_threads_and_attach_starts_them_again(background):
    import threading

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(40, 60), nn.Tanh(), nn.Linear(60, 30))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = torch.randn(64, 40)

    def steps(n: int) -> None:
        for _ in range(n):
            opt.zero_grad()
            model(x).pow(2).mean().backward()
            opt.step()

    def pool_threads() -> list:
        return [t for t in threading.enumerate() if t.name.startswith("spectra-decompose")]

    mon = spectra.SpectraMonitor(model, opt, every=2, decompose_threads=2, background=background,
                                 warn_overhead=None)
    steps(2)
    before = len(mon.to_pandas())  # flushes the background queue
    assert mon._pipeline._pool is not None and pool_threads()
    mon.detach()
    assert mon._pipeline._pool is None and not pool_threads()  # a detached monitor holds no threads
    mon.attach()
    steps(2)
    df = mon.to_pandas()
    assert mon._pipeline._pool is not None and len(df) > before
    assert set(df[df.step == 4].status) == {"ok"}
    mon.detach()
    assert not pool_threads()
