"""run_states: one run over a whole step's snapshots (every layer), in order, releasing each as it goes."""

from __future__ import annotations

import ast
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from spectra import Analyzer, Measurement
from spectra.analyzers.alignment import AlignmentAnalyzer
from spectra.analyzers.esd import EsdAnalyzer
from spectra.pipeline.engine import ErrorPolicy, run_analyzers, run_states
from spectra.snapshot import LayerState
from spectra.threads import blas_controller, limit_blas_threads


def _states(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        W0 = torch.randn(40, 30, generator=g)
        dW = 0.1 * torch.randn(40, 30, generator=g)
        out.append(LayerState(f"l{i}", "W", 5, {"weight": W0 + dW, "previous": W0, "update": dW,
                                                 "grad": torch.randn(40, 30, generator=g)}))
    return out


class _Spy(Analyzer):
    """Notes, when it analyzes snapshot i, which snapshots are already released (their tensors dropped)."""

    name = "spy"

    def __init__(self, states, log, fail_at=None):
        super().__init__()
        self.states, self.log, self.fail_at = states, log, fail_at

    def analyze(self, layer):
        i = self.states.index(layer)
        self.log.append((i, [j for j, st in enumerate(self.states) if not st.tensors]))
        if i == self.fail_at:
            raise RuntimeError("spy fails here")
        return [Measurement("n", 1.0)]


@pytest.mark.parametrize("threads", [None, 2])
def test_rows_per_snapshot_equal_the_one_snapshot_runs_and_each_is_released_after_its_analyzers(threads):
    analyzers = [EsdAnalyzer(), AlignmentAnalyzer(k=3)]
    expected = [run_analyzers([st], analyzers, run="r", policy=ErrorPolicy("raise")) for st in _states(5)]
    states = _states(5)
    log = []
    spy = _Spy(states, log)
    seen = []
    pool = ThreadPoolExecutor(threads) if threads else None
    try:
        got = run_states(states, [*analyzers, spy], run="r", policy=ErrorPolicy("raise"), executor=pool,
                         release=True, done=lambda i, rows: seen.append((i, len(rows))))
    finally:
        if pool is not None:
            pool.shutdown()
    assert [i for i, _ in seen] == list(range(5))
    for rows, exp in zip(got, expected):
        rows = [r for r in rows if r.analyzer != "spy"]
        assert [(r.analyzer, r.metric, r.index, r.matrix) for r in rows] == [
            (r.analyzer, r.metric, r.index, r.matrix) for r in exp]
        np.testing.assert_array_equal([r.value for r in rows], [r.value for r in exp])
    for i, released in log:  # when snapshot i is analyzed, every earlier one has been released
        assert released == list(range(i))
    assert all(not st.tensors for st in states)


def test_an_exception_still_releases_every_snapshot():
    states = _states(4, seed=1)
    log = []
    pool = ThreadPoolExecutor(2)
    try:
        with pytest.raises(RuntimeError, match="spy fails here"):
            run_states(states, [EsdAnalyzer(), _Spy(states, log, fail_at=1)], run="r", policy=ErrorPolicy("raise"),
                       executor=pool, release=True)
    finally:
        pool.shutdown()
    assert all(not st.tensors for st in states)


def test_a_controller_made_before_scipy_is_imported_still_limits_scipys_openblas():
    # the controller is made on the first due step, maybe before anything imported SciPy's linear algebra
    code = (
        "import sys, numpy\n"
        "assert 'scipy.linalg' not in sys.modules\n"
        "from spectra.threads import blas_controller, limit_blas_threads\n"
        "ctl = blas_controller()\n"
        "import scipy.linalg\n"
        "from threadpoolctl import threadpool_info\n"
        "with limit_blas_threads(1, controller=ctl):\n"
        "    print(sorted((lib['filepath'], lib['num_threads']) for lib in threadpool_info()"
        " if lib['user_api'] == 'blas'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    libs = ast.literal_eval(out.strip())
    assert libs and all(n == 1 for _, n in libs), libs


def test_alignment_reports_a_nan_gradient_as_a_failure_not_a_skipped_metric():
    st = _states(1, seed=2)[0]
    grad = st.tensors["grad"].clone()
    grad[0, 0] = float("nan")
    st = LayerState("l0", "W", 5, {**st.tensors, "grad": grad})
    rows = run_analyzers([st], [AlignmentAnalyzer(k=3)], run="r", policy=ErrorPolicy("ignore"))
    failed = [r for r in rows if r.status == "failed"]
    assert failed and "non-finite" in failed[0].message
    assert not [r for r in rows if r.metric == "cos_update_grad" and r.status == "skipped"]
