"""Crash safety of ``log_dir`` streaming: SIGKILL at random points loses no completed step and never corrupts.

The child process trains a tiny model with the monitor streaming to ``log_dir`` and, after every
``optimizer.step()`` returns (so the step's part has been written by the post-hook), appends the step number to a
progress file and flushes it. The parent kills it with SIGKILL after a seeded random delay and checks that every
step the child reported is in ``Results.read(log_dir)`` with all its rows. Partially written files (a kill
mid-write leaves a temporary name; a disk fault or a hand copy leaves a truncated part) are skipped with a warning.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest
import torch

import spectra
from spectra import SpectraMonitor

from ._util import mlp, train

CHILD = textwrap.dedent(
    """
    import sys, torch
    torch.set_num_threads(1)
    from torch import nn
    import spectra
    log_dir, progress = sys.argv[1], sys.argv[2]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 8))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = torch.randn(32, 16), torch.randn(32, 8)
    mon = spectra.SpectraMonitor(model, opt, every=1, analyzers=("esd", "alignment"), log_dir=log_dir)
    with open(progress, "a") as fh:
        for _ in range(100000):
            opt.zero_grad()
            ((model(x) - y) ** 2).mean().backward()
            opt.step()
            fh.write(f"{mon.step}\\n")
            fh.flush()
    """
)


def _completed(progress: Path) -> list[int]:
    if not progress.exists():
        return []
    lines = progress.read_text().split("\n")
    return [int(s) for s in lines[:-1] if s]  # the last piece may be a torn line: not known complete


def _wait_for_first_step(proc: subprocess.Popen, progress: Path, timeout: float = 60.0) -> None:
    t0 = time.monotonic()
    while not _completed(progress):
        if proc.poll() is not None:
            raise AssertionError(f"child exited early: {proc.stderr.read().decode()}")
        if time.monotonic() - t0 > timeout:
            raise AssertionError("child made no progress")
        time.sleep(0.02)


@pytest.mark.slow
def test_sigkill_at_random_points_loses_no_completed_step(tmp_path):
    rng = random.Random(20240607)
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    for trial in range(3):
        log_dir, progress = tmp_path / f"log{trial}", tmp_path / f"progress{trial}.txt"
        proc = subprocess.Popen([sys.executable, str(script), str(log_dir), str(progress)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        try:
            _wait_for_first_step(proc, progress)
            time.sleep(rng.uniform(0.0, 1.2))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        assert proc.returncode == -signal.SIGKILL
        done = _completed(progress)
        assert done == list(range(1, len(done) + 1))
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # atomic parts: a kill never leaves a readable-but-broken part
            df = spectra.Results.read(log_dir).to_pandas()
        steps = set(df.step.astype(int))
        assert set(range(0, done[-1] + 1)) <= steps, "a completed step is missing"
        assert steps <= set(range(0, done[-1] + 2)), "rows from a step that never ran"
        per_step = df[df.step >= 1].groupby("step").size()
        assert per_step.nunique() == 1, f"a step was written partially: {per_step.to_dict()}"
        assert set(df.layer) == {"0", "2"} and df.value.dtype == "float64" and str(df.step.dtype) == "Int64"


def _log_dir_run(log_dir: Path, steps: int = 3) -> None:
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with SpectraMonitor(model, opt, every=1, analyzers=("esd",), log_dir=log_dir):
            train(model, opt, steps)


def test_partial_and_stray_files_are_skipped_with_a_warning(tmp_path):
    log_dir = tmp_path / "log"
    _log_dir_run(log_dir)
    good = spectra.Results.read(log_dir).to_pandas()
    parts = sorted((log_dir / "records").glob("step-*.parquet"))
    assert len(parts) == 4
    data = parts[-1].read_bytes()
    (log_dir / "records" / "step-00000004-run-truncated.parquet").write_bytes(data[: len(data) // 2])
    (log_dir / "records" / "step-00000005-run-empty.parquet").write_bytes(b"")
    (log_dir / "records" / f".{parts[0].name}.deadbeef.tmp").write_bytes(data[:10])  # a kill mid-write
    with pytest.warns(RuntimeWarning, match="skipping unreadable results part") as rec:
        again = spectra.Results.read(log_dir).to_pandas()
    names = " ".join(str(w.message) for w in rec)
    assert "truncated" in names and "empty" in names and ".tmp" not in names
    assert again.equals(good)


def test_unreadable_meta_is_reported_and_records_still_load(tmp_path):
    log_dir = tmp_path / "log"
    _log_dir_run(log_dir, steps=1)
    good = spectra.Results.read(log_dir).to_pandas()
    (meta,) = (log_dir / "runs").glob("*.json")
    meta.write_text('{"attrs": {"trunc')
    with pytest.warns(RuntimeWarning, match=f"unreadable meta file .*{meta.name}"):
        res = spectra.Results.read(log_dir)
    assert res.to_pandas().equals(good)


def test_kill_before_anything_was_written_reads_as_empty(tmp_path):
    (tmp_path / "log").mkdir()
    df = spectra.Results.read(tmp_path / "log").to_pandas()
    assert len(df) == 0 and list(df.columns[:3]) == ["run", "step", "layer"]
    shutil.rmtree(tmp_path / "log")
