"""``spectra.analyze(..., workers=N)``: the same table, warnings, hook calls and raises as ``workers=1``."""

from __future__ import annotations

import os
import sys
import textwrap
import warnings
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from torch import nn

import spectra
from spectra.analyzers.esd import EsdAnalyzer
from spectra.pipeline import pool
from spectra.pipeline.pool import RemoteTraceback, check_workers, start_method, worker_spec

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork is the Linux start method")


def _model() -> nn.Module:
    """Every kind of view: a pooled Conv2d stack (permuted strides), float32, bfloat16 and float64 matrices,
    fused q/k/v rows, and a wide matrix."""
    torch.manual_seed(0)
    m = nn.ModuleDict({
        "conv": nn.Conv2d(3, 12, 3), "fc": nn.Linear(40, 60), "wide": nn.Linear(90, 30),
        "bf16": nn.Linear(48, 32).to(torch.bfloat16), "f64": nn.Linear(32, 48).to(torch.float64),
        "attn": nn.MultiheadAttention(24, 4),
    })
    return m


def _same(a: spectra.Results, b: spectra.Results) -> None:
    pd.testing.assert_frame_equal(a.to_pandas(), b.to_pandas(), check_exact=True)
    pd.testing.assert_frame_equal(a.layers, b.layers, check_exact=True)
    assert a.attrs == b.attrs


def _run(obj, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = spectra.analyze(obj, progress=False, **kw)
    return res, [str(w.message) for w in caught]


def test_workers_match_in_process_row_for_row(caplog):
    model = _model()
    one, w1 = _run(model, fit="ww", analyzers=("esd", "tail", "randomize"))
    with caplog.at_level("DEBUG", logger="spectra.pipeline.pool"):
        two, w2 = _run(model, fit="ww", analyzers=("esd", "tail", "randomize"), workers=2)
    _same(one, two)
    assert w1 == w2 == []
    assert _counts(caplog) == (len(two.to_wide()), 0)
    assert set(one.to_pandas()["layer"]) >= {"conv", "fc", "wide", "bf16", "f64", "attn.in_proj_weight"}
    sd, _ = _run(model.state_dict(), workers=3)
    _same(_run(model.state_dict())[0], sd)


def test_workers_match_per_head_views_and_progress(capsys):
    model = _model()
    rules = {"attention_heads": True}  # the output projection's heads are strided column slices
    one = spectra.analyze(model, layer_rules=rules, progress=True)
    two = spectra.analyze(model, layer_rules=rules, progress=True, workers=2)
    _same(one, two)
    assert any(v.startswith("h") or ".h" in v for v in two.to_pandas()["view"])
    assert "spectra.analyze" in capsys.readouterr().err  # the progress bar still runs


def _counts(caplog) -> tuple[int, int]:
    """(snapshots analyzed by the workers, in the parent) from the pool's debug line."""
    import re

    line = next(r.getMessage() for r in caplog.records if r.name == "spectra.pipeline.pool")
    by_workers, here = re.search(r"(\d+) snapshots analyzed by the workers, (\d+) in this process", line).groups()
    return int(by_workers), int(here)


def test_workers_match_deltas_against_a_base(caplog):
    base = _model()
    tuned = _model()
    with torch.no_grad():
        for p in tuned.parameters():
            p.add_(0.01 * torch.randn_like(p.float()).to(p.dtype))
    one, w1 = _run(tuned, base=base)
    with caplog.at_level("DEBUG", logger="spectra.pipeline.pool"):
        two, w2 = _run(tuned, base=base, workers=2)
    _same(one, two)
    assert "delta" in set(two.to_pandas()["matrix"])
    assert w1 == w2
    views = len(two.to_wide(matrix="delta"))
    assert _counts(caplog) == (2 * views, 0)  # every view and its ΔW snapshot went to a worker


def _broken() -> nn.Module:
    torch.manual_seed(1)
    m = nn.Sequential(nn.Linear(30, 20), nn.Linear(20, 25), nn.Linear(25, 30))
    with torch.no_grad():
        m[1].weight[0, 0] = float("nan")
    return m


def test_failures_warnings_and_hook_calls_match():
    seen: dict[int, list] = {1: [], 2: []}

    class Observer:
        def __init__(self, key):
            self.key = key

        @spectra.hookimpl
        def spectra_analyzer_error(self, analyzer, layer, error):
            seen[self.key].append((analyzer.name, layer, type(error).__name__, str(error)))

    one, w1 = _run(_broken(), plugins=[Observer(1)])
    two, w2 = _run(_broken(), plugins=[Observer(2)], workers=2)  # the observer is the parent's: no fallback
    _same(one, two)
    failed = two.to_pandas().query("status == 'failed'")
    assert set(failed["layer"]) == {"1"} and len(failed) == 2
    assert w1 == w2 and len(w2) == 2 and "analyzer 'esd' failed on layer '1'" in w2[0]
    assert seen[1] == seen[2] and [s[:2] for s in seen[2]] == [("esd", "1"), ("tail", "1")]


def test_on_error_raise_reraises_the_workers_exception():
    with pytest.raises(ValueError) as in_process:
        spectra.analyze(_broken(), on_error="raise", progress=False)
    with pytest.raises(ValueError) as pooled:
        spectra.analyze(_broken(), on_error="raise", progress=False, workers=2)
    assert str(pooled.value) == str(in_process.value) and "non-finite" in str(pooled.value)
    assert isinstance(pooled.value.__cause__, RemoteTraceback)  # it was raised in a worker
    assert "Traceback" in str(pooled.value.__cause__)


def test_an_analyzer_instance_is_shipped_as_it_is():
    model = _model()
    one, _ = _run(model, analyzers=[EsdAnalyzer(spectrum=True), "tail"])
    two, w2 = _run(model, analyzers=[EsdAnalyzer(spectrum=True), "tail"], workers=2)
    _same(one, two)
    assert w2 == []


def test_an_in_process_plugin_analyzer_falls_back_with_a_warning():
    class Frob(spectra.Analyzer):
        name = "local_frob"

        def analyze(self, layer):
            yield spectra.Measurement("frob", float((layer.array("weight") ** 2).sum()))

    class Plugin:
        @spectra.hookimpl
        def spectra_register_analyzers(self, register):
            register(Frob)

    model = _model()
    one, _ = _run(model, analyzers=("esd", "local_frob"), plugins=[Plugin()])
    with pytest.warns(RuntimeWarning, match=r"workers=2 analyzes in this process instead: analyzer 'local_frob'"):
        two = spectra.analyze(model, analyzers=("esd", "local_frob"), plugins=[Plugin()], workers=2, progress=False)
    _same(one, two)


_PLUGIN = '''
import json, multiprocessing as mp, os

import torch
from threadpoolctl import threadpool_info

import spectra


class Unpicklable(Exception):
    def __init__(self, a, b):
        super().__init__(f"{a} and {b}")


class Probe(spectra.Analyzer):
    name = "wtest_probe"

    def __init__(self, *, trace=None, power=2, schedule=None):
        super().__init__(schedule=schedule)
        self.trace, self.power = trace, power

    def config(self):
        return {"power": self.power}

    def analyze(self, layer):
        worker = mp.parent_process() is not None
        if self.trace:
            with open(os.path.join(self.trace, f"{os.getpid()}.json"), "a") as fh:
                fh.write(json.dumps({"worker": worker, "torch": torch.get_num_threads(),
                                     "blas": [i["num_threads"] for i in threadpool_info()
                                              if i["user_api"] == "blas"]}) + "\\n")
        if layer.layer == "2" and worker:
            os._exit(3)  # a worker that dies: the parent analyzes its snapshot
        if layer.layer == "1":
            raise Unpicklable("x", "y")  # cannot come back from a worker: the parent analyzes it
        w = layer.array("weight")
        yield spectra.Measurement("frob_pow", float((w ** 2).sum() ** (self.power / 2)))


@spectra.hookimpl
def spectra_register_analyzers(register):
    register(Probe)
'''


@pytest.fixture
def entry_point_plugin(tmp_path, monkeypatch):
    """A third-party analyzer installed through a ``spectra`` entry point (a dist-info on sys.path)."""
    (tmp_path / "spectra_wtest_plugin.py").write_text(textwrap.dedent(_PLUGIN))
    info = tmp_path / "spectra_wtest_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: spectra-wtest-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[spectra]\nwtest = spectra_wtest_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    trace = tmp_path / "trace"
    trace.mkdir()
    yield trace
    sys.modules.pop("spectra_wtest_plugin", None)


@linux_only
def test_entry_point_analyzers_run_in_the_workers(entry_point_plugin):
    import json

    model = nn.Sequential(*(nn.Linear(20 + i, 21 + i) for i in range(5)))
    opts = {"wtest_probe": {"trace": str(entry_point_plugin), "power": 3}}
    one, w1 = _run(model, analyzers=("esd", "wtest_probe"), analyzer_options=opts)
    for f in entry_point_plugin.iterdir():
        f.unlink()
    two, w2 = _run(model, analyzers=("esd", "wtest_probe"), analyzer_options=opts, workers=2)
    _same(one, two)
    rows = two.to_pandas()
    assert rows.query("layer == '1' and analyzer == 'wtest_probe'")["message"].tolist() == ["Unpicklable: x and y"]
    assert [w for w in w2 if "worker process" not in w] == w1
    assert any("spectra worker process exited with code 3" in w for w in w2), w2
    calls = [json.loads(line) for f in entry_point_plugin.iterdir() for line in f.read_text().splitlines()]
    in_workers = [c for c in calls if c["worker"]]
    assert len(in_workers) >= 3  # layers 0, 3 and 4 at least (2 died there, 1 came back unpicklable)
    threads = max(1, len(os.sched_getaffinity(0)) // 2)  # cores // workers
    assert all(c["torch"] == threads and set(c["blas"]) <= {threads} for c in in_workers)
    assert any(not c["worker"] for c in calls)  # the snapshots the workers could not return


_ORPHANS = """
import os
from torch import nn
import spectra
from spectra.pipeline import pool

def die(self):  # the parent is killed while its workers wait for it
    print(" ".join(str(w.process.pid) for w in self._workers), flush=True)
    os.kill(os.getpid(), 9)

pool.WorkerPool._receive = die
spectra.analyze(nn.Sequential(nn.Linear(30, 20), nn.Linear(20, 25)), workers=2, progress=False)
"""


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


@linux_only
def test_workers_exit_when_the_parent_dies():
    import subprocess
    import time

    out = subprocess.run([sys.executable, "-c", _ORPHANS], capture_output=True, text=True, timeout=120)
    pids = [int(p) for p in out.stdout.split()]
    assert len(pids) == 2 and out.returncode == -9
    deadline = time.monotonic() + 20
    while any(_running(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_running(p) for p in pids)


@pytest.mark.parametrize("bad", [0, -2, True, False, 2.0, "2", None])
def test_workers_must_be_a_positive_int(bad):
    with pytest.raises(ValueError, match=rf"workers must be a positive integer .*got {bad!r}"):
        spectra.analyze(nn.Linear(4, 3), workers=bad)
    assert check_workers(3) == 3


def test_start_method(monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(sys, "version_info", (3, 11, 7))
    assert start_method() == "fork"
    monkeypatch.setattr(sys, "version_info", (3, 12, 0))
    assert start_method() == "forkserver"  # fork is deprecated in threaded processes, and torch runs threads
    monkeypatch.setattr(sys, "platform", "darwin")
    assert start_method() == "spawn"


def test_matrices_cross_with_their_dtype_strides_and_bits():
    import multiprocessing as mp

    from spectra.pipeline.pool import _pack_tensor, _recv, _send, _unpack_tensor

    torch.manual_seed(0)
    W = torch.randn(12, 20)
    # whole, transposed, strided columns, rows, bfloat16, strided float64, a stack with permuted strides
    cases = [W, W.T, W[:, 3:9], W[2:7], W.to(torch.bfloat16).T, W.double()[:, ::2],
             torch.randn(5, 8, 9).permute(2, 0, 1)]
    a, b = mp.Pipe()
    for t in cases:
        _send(a, _pack_tensor(t))
        got = _unpack_tensor(_recv(b))
        assert got.dtype == t.dtype and got.shape == t.shape and got.stride() == t.stride()
        assert torch.equal(got, t)
    a.close()
    b.close()


def test_what_workers_cannot_reproduce_stays_in_process():
    def pipe(device=None, backend="auto", param_device="cpu"):
        settings = SimpleNamespace(analyzers=("esd",), analyzer_options={}, blas_threads=None, device=device,
                                   backend=backend)
        param = SimpleNamespace(device=torch.device(param_device))  # torch.device needs no GPU to exist
        return SimpleNamespace(settings=settings, entries=[SimpleNamespace(param=param)])

    assert worker_spec(pipe(), [EsdAnalyzer()], 2)[0] is not None
    for kw, said in (({"param_device": "cuda:0"}, "cuda:0"), ({"device": "cuda"}, "cuda"),
                     ({"backend": "torch"}, "thread count")):
        spec, why = worker_spec(pipe(**kw), [EsdAnalyzer()], 2)
        assert spec is None and said in why
    with pytest.warns(RuntimeWarning, match=r"workers=2 analyzes in this process instead: backend='torch'"):
        two = spectra.analyze(_model(), backend="torch", workers=2, progress=False)
    _same(spectra.analyze(_model(), backend="torch", progress=False), two)


@linux_only
def test_forkserver_workers_give_the_same_table():
    model = nn.Sequential(nn.Linear(30, 20), nn.Linear(20, 25))
    from spectra.pipeline.pipeline import Pipeline
    from spectra.pipeline.settings import Settings

    settings = Settings.build("analyze", None, progress=False)
    pipeline = Pipeline(settings, model, source="analyze")
    records = pool.run_with_workers(pipeline, 0, pipeline.analyzers, 2, method="forkserver")
    assert records == spectra.analyze(model, progress=False).records


def test_cli_workers(tmp_path, capsys):
    from spectra.cli import main

    torch.manual_seed(0)
    path = tmp_path / "m.pt"
    torch.save(nn.Sequential(nn.Linear(40, 60), nn.ReLU(), nn.Linear(60, 30)).state_dict(), path)
    assert main(["analyze", str(path), "-q"]) == 0
    one = capsys.readouterr().out
    assert main(["analyze", str(path), "-q", "--workers", "2"]) == 0
    assert capsys.readouterr().out == one
    assert main(["analyze", str(path), "--workers", "0"]) == 2
    assert "workers must be a positive integer" in capsys.readouterr().err


def test_workers_comes_from_the_settings_and_the_keyword_overrides_it(caplog):
    from spectra.pipeline.settings import Settings

    model = _model()
    ready = Settings.build("analyze", workers=2, progress=False)
    with caplog.at_level("DEBUG", logger="spectra.pipeline.pool"):
        two = spectra.analyze(model, settings=ready)
    _same(_run(model)[0], two)
    assert _counts(caplog) == (len(two.to_wide()), 0)  # the settings' workers analyzed every view
    caplog.clear()
    with caplog.at_level("DEBUG", logger="spectra.pipeline.pool"):
        one = spectra.analyze(model, settings=ready, workers=1)
    _same(one, two)
    assert not [r for r in caplog.records if r.name == "spectra.pipeline.pool"]  # no pool: workers=1 won


def test_the_pool_modules_keep_the_pools_names():
    from spectra.pipeline import pool_remote, pool_spec, pool_start, pool_transport, pool_worker

    assert pool.check_workers is pool_start.check_workers and pool.start_method is pool_start.start_method
    assert pool.worker_spec is pool_spec.worker_spec and pool.WorkerSpec is pool_spec.WorkerSpec
    assert pool.measure is pool_worker.measure
    assert pool.RemoteAnalyzer is pool_remote.RemoteAnalyzer and pool.RemoteTraceback is pool_remote.RemoteTraceback
    assert pool._send is pool_transport.send and pool._recv is pool_transport.recv
    assert {name for name in pool.__all__ if not hasattr(pool, name)} == set()


@pytest.mark.parametrize("bad", [3, 0.5])
def test_a_monitor_refuses_workers(bad):
    model = nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TypeError, match=r"workers: a training driver .*decompose_threads=.*background=True"):
        spectra.SpectraMonitor(model, opt, workers=bad)
