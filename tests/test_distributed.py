"""spectra under torch.distributed: 2 ranks spawned on gloo/CPU, compared with a single process.

One spawn (module fixture) runs every multi-rank scenario in order, each rank pickling what it saw; the tests
below compare that with tables computed here in a single process without any process group. The last
scenario (a rank that never joins the settings check) leaves the process group unusable, so it runs last.
"""

from __future__ import annotations

import datetime
import pickle
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import spectra
from spectra.analyzers.base import Analyzer, Measurement
from spectra.distributed import (
    DistributedConfig,
    assign_layers,
    check_model_supported,
    estimated_cost,
    make_plan,
    resolve_mode,
    settings_fingerprint,
)
from spectra.layers import discover_layers
from spectra.plugins import get_plugin_manager

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")

WORLD = 2
STEPS = 3
KEYS = ["run", "step", "layer", "view", "matrix", "analyzer", "metric", "index"]


# ----------------------------------------------------------------------------------------------- models
class Mixed(nn.Module):
    """Layers of different costs and view kinds (conv slices, q/k/v split), ordered so that the two ranks'
    shares interleave (a merge that grouped rows by rank would change the row order)."""

    def __init__(self) -> None:
        super().__init__()
        self.small = nn.Linear(12, 10)
        self.big = nn.Linear(48, 64)
        self.mid = nn.Linear(40, 24)
        self.conv = nn.Conv2d(6, 8, 3)
        self.attn = nn.MultiheadAttention(16, 2)
        self.emb = nn.Embedding(30, 20)
        self.big2 = nn.Linear(64, 48)


def _mixed() -> nn.Module:
    torch.manual_seed(7)
    return Mixed().double()


def _mlp() -> nn.Module:
    torch.manual_seed(3)
    layers = [nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 40), nn.Tanh(), nn.Linear(40, 10), nn.Tanh(),
              nn.Linear(10, 3)]
    return nn.Sequential(*layers).double()  # costs put layer "2" alone on rank 0: the shares interleave


def _batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The full batch of a step; rank r trains on rows r::WORLD (equal shards, so DDP's mean = full mean)."""
    g = torch.Generator().manual_seed(100 + step)
    return torch.randn(16, 12, generator=g, dtype=torch.float64), torch.randn(16, 3, generator=g,
                                                                               dtype=torch.float64)


def _train(model: nn.Module, opt: torch.optim.Optimizer, rank: int | None) -> None:
    for step in range(STEPS):
        x, y = _batch(step)
        if rank is not None:
            x, y = x[rank::WORLD], y[rank::WORLD]
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()


class FailOnRank(Analyzer):
    """sv_max through numpy, except on one rank where it raises (its config is the same on every rank)."""

    name = "failon"
    needs = frozenset({"weight"})

    def __init__(self, bad_rank: int = 1) -> None:
        super().__init__()
        self.bad_rank = bad_rank

    def config(self):
        return {"bad_rank": self.bad_rank}

    def analyze(self, layer):
        if dist.is_initialized() and dist.get_rank() == self.bad_rank:
            raise ArithmeticError(f"boom on rank {self.bad_rank}")
        w = layer.tensors["weight"].detach().double().numpy()
        mats = w if w.ndim == 3 else w[None]
        yield Measurement("sv_max", float(max(np.linalg.norm(m, 2) for m in mats)))


class LayerSink:
    """Remembers which layers this process emitted to the sinks."""

    def __init__(self) -> None:
        self.layers: set[str] = set()

    @spectra.hookimpl
    def spectra_log_records(self, records, step, run):
        self.layers.update(r.layer for r in records)


# ----------------------------------------------------------------------------------------------- the ranks
def _catch(fn):
    t0 = time.perf_counter()
    try:
        fn()
    except Exception as exc:  # the test inspects what each rank raised
        return type(exc).__name__, str(exc), time.perf_counter() - t0
    return None, "", time.perf_counter() - t0


def _worker(rank: int, tmp: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, init_method=f"file://{tmp}/pg",
                            timeout=datetime.timedelta(seconds=30))
    out: dict = {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = _mixed()
            out["shard"] = spectra.analyze(model, distributed="shard").to_pandas()
            out["auto"] = spectra.analyze(model, distributed="auto").to_pandas()
            out["rank0"] = spectra.analyze(model, distributed="rank0").to_pandas()
            out["failon"] = spectra.analyze(model, analyzers=[FailOnRank()], distributed="shard").to_pandas()
            out["failon_raise"] = _catch(lambda: spectra.analyze(model, analyzers=[FailOnRank()],
                                                                 distributed="shard", on_error="raise"))

            # monitored DDP training: sharded, rank0 and plain monitors watch the same optimizer
            ddp = nn.parallel.DistributedDataParallel(_mlp())
            opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
            sink = LayerSink()
            kw = dict(every=1, analyzers=("esd", "tail", "alignment"), run="ddp")
            mon_shard = spectra.SpectraMonitor(ddp, opt, distributed="shard", log_dir=f"{tmp}/log",
                                               plugins=[sink], **kw)
            mon_r0 = spectra.SpectraMonitor(ddp, opt, distributed="rank0", **kw)
            mon_ref = spectra.SpectraMonitor(ddp, opt, **kw)
            mon_fail = spectra.SpectraMonitor(ddp, opt, every=1, analyzers=[FailOnRank()], run="ddp",
                                              distributed="shard")
            _train(ddp, opt, rank)
            for name, mon in [("mon_shard", mon_shard), ("mon_r0", mon_r0), ("mon_ref", mon_ref),
                              ("mon_fail", mon_fail)]:
                out[name] = mon.to_pandas()
                mon.detach()
            out["emitted"] = sink.layers

            # mismatched analyzers: both ranks reach the check and both raise
            m2 = _mlp()
            o2 = torch.optim.SGD(m2.parameters(), lr=0.1)
            names = ("esd",) if rank == 0 else ("esd", "tail")
            out["mismatch"] = _catch(lambda: spectra.SpectraMonitor(m2, o2, analyzers=names, distributed="shard"))
            # mismatched layer list in analyze
            sd = {k: v for k, v in _mixed().state_dict().items() if rank == 0 or not k.startswith("small")}
            out["mismatch_layers"] = _catch(lambda: spectra.analyze(sd, distributed="shard"))

            # rank 1 forgets distributed=: rank 0 must give up after check_timeout instead of hanging (last)
            cfg = DistributedConfig("shard", check_timeout=2.0) if rank == 0 else None
            out["absent"] = _catch(lambda: spectra.SpectraMonitor(m2, o2, analyzers=("esd",), distributed=cfg))
    finally:
        Path(tmp, f"rank{rank}.pkl").write_bytes(pickle.dumps(out))
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    tmp = tmp_path_factory.mktemp("dist")
    mp.spawn(_worker, args=(str(tmp),), nprocs=WORLD, join=True)
    out = [pickle.loads((tmp / f"rank{r}.pkl").read_bytes()) for r in range(WORLD)]
    for o in out:
        o["tmp"] = tmp
    return out


# ----------------------------------------------------------------------------------------------- helpers
def _assert_same_table(got: pd.DataFrame, want: pd.DataFrame, *, atol: float = 1e-12, sort: bool = False) -> None:
    assert len(want) > 0
    if sort:
        got = got.sort_values(KEYS, kind="stable").reset_index(drop=True)
        want = want.sort_values(KEYS, kind="stable").reset_index(drop=True)
    assert list(got.columns) == list(want.columns)
    assert len(got) == len(want)
    for c in got.columns:
        if c == "value":
            continue
        pd.testing.assert_series_equal(got[c].reset_index(drop=True), want[c].reset_index(drop=True), check_names=False)
    g, w = got["value"].to_numpy(), want["value"].to_numpy()
    assert np.array_equal(np.isnan(g), np.isnan(w))
    np.testing.assert_allclose(g[~np.isnan(g)], w[~np.isnan(w)], rtol=0, atol=atol)


# ----------------------------------------------------------------------------------------------- multi-rank tests
@pytest.mark.slow
def test_sharded_analyze_equals_single_process_on_every_rank(ranks):
    want = spectra.analyze(_mixed()).to_pandas()  # no process group at all
    assert {"q", "k", "v"} <= set(want["view"]) and "conv" in set(want["layer"])
    for r in ranks:
        _assert_same_table(r["shard"], want)  # same rows, same order, values to 1e-12
        _assert_same_table(r["auto"], want)


@pytest.mark.slow
def test_rank0_mode_rank0_has_everything_others_nothing(ranks):
    want = spectra.analyze(_mixed()).to_pandas()
    _assert_same_table(ranks[0]["rank0"], want)
    assert len(ranks[1]["rank0"]) == 0


@pytest.mark.slow
def test_failing_rank_gets_failed_rows_other_rank_results_kept(ranks):
    model = _mixed()
    entries = [e for e in discover_layers(model, hook=get_plugin_manager(entrypoints=False).hook) if e.analyzed]
    owner = dict(zip([e.layer for e in entries], assign_layers(entries, WORLD)))
    ref = {(e.layer, v.name): v for e in entries for v in e.views()}
    for r in ranks:
        df = r["failon"]
        assert set(df["layer"]) == set(owner)
        for row in df.itertuples():
            if owner[row.layer] == 1:
                assert row.status == "failed" and "boom on rank 1" in row.message
            else:  # rank 0's rows are real numbers, checked against numpy here
                assert row.status == "ok"
                t = ref[(row.layer, row.view)].tensor.detach().numpy()
                mats = t if t.ndim == 3 else t[None]
                assert row.value == pytest.approx(max(np.linalg.norm(m, 2) for m in mats), rel=1e-12)
        # the same through the monitor, at every step
        mon = r["mon_fail"]
        assert set(mon["step"]) == set(range(STEPS + 1))
        assert (mon[mon["layer"].map(owner) == 1]["status"] == "failed").all()
        assert (mon[mon["layer"].map(owner) == 0]["status"] == "ok").all()
    for r in ranks:  # on_error="raise": every rank raises, naming the failing rank, after the gather
        kind, msg, _ = r["failon_raise"]
        assert kind == "RuntimeError" and "rank 1" in msg and "boom" in msg


@pytest.mark.slow
def test_sharded_monitored_ddp_training_equals_single_process(ranks):
    for r in ranks:  # the plain monitor on the same rank is the single-process table
        assert set(r["mon_ref"]["step"]) == set(range(STEPS + 1))
        assert set(r["mon_ref"]["layer"]) == {"0", "2", "4", "6"}  # DDP unwrapped: the plain model's names
        _assert_same_table(r["mon_shard"], r["mon_ref"])
    _assert_same_table(ranks[0]["mon_r0"], ranks[0]["mon_ref"])
    assert len(ranks[1]["mon_r0"]) == 0
    # and a real single process training on the full batch (float64; DDP averages the two half-batch means)
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mon = spectra.SpectraMonitor(model, opt, every=1, analyzers=("esd", "tail", "alignment"), run="ddp")
        _train(model, opt, None)
    _assert_same_table(ranks[0]["mon_shard"], mon.to_pandas(), atol=1e-9)


@pytest.mark.slow
def test_each_rank_streams_only_its_share_and_read_merges(ranks):
    emitted = [r["emitted"] for r in ranks]
    assert emitted[0] and emitted[1] and not (emitted[0] & emitted[1])
    assert emitted[0] | emitted[1] == {"0", "2", "4", "6"}
    merged = spectra.Results.read(ranks[0]["tmp"] / "log").to_pandas()
    _assert_same_table(merged, ranks[0]["mon_ref"], sort=True)


@pytest.mark.slow
def test_mismatched_settings_raise_on_every_rank_without_hanging(ranks):
    for r in ranks:
        kind, msg, _ = r["mismatch"]
        assert kind == "ValueError" and "analyzers (rank 1 has 1 not on rank 0" in msg and '"tail"' in msg
        kind, msg, _ = r["mismatch_layers"]
        assert kind == "ValueError" and "layers (rank 1 lacks 1 of rank 0's" in msg and '"small"' in msg
    kind, msg, secs = ranks[0]["absent"]
    assert kind == "RuntimeError" and "same distributed= setting" in msg
    assert secs < 20  # bounded by check_timeout (2 s), far below the process group's 30 s
    assert ranks[1]["absent"][0] is None


# ----------------------------------------------------------------------------------------------- single process
def test_shard_without_process_group_raises():
    assert not dist.is_initialized()
    model = _mlp()
    with pytest.raises(RuntimeError, match="process group"):
        spectra.analyze(model, distributed="shard")
    with pytest.raises(RuntimeError, match="init_process_group"):
        spectra.SpectraMonitor(model, torch.optim.SGD(model.parameters(), lr=0.1), distributed="rank0")
    with pytest.raises(ValueError, match="distributed must be"):
        spectra.analyze(model, distributed="shards")
    assert resolve_mode("auto") is None and make_plan("auto") is None
    _assert_same_table(spectra.analyze(model, distributed="auto").to_pandas(), spectra.analyze(model).to_pandas())


def test_assignment_is_lpt_balanced_and_deterministic(rng):
    from itertools import product

    from spectra.layers import ViewShape

    class E:
        def __init__(self, i, n, m, k=1):
            self.layer = f"l{i}"
            self.shapes = (ViewShape("W", max(n, m), min(n, m), max(n, m) / min(n, m), k),)

    for trial in range(20):
        entries = [E(i, *rng.integers(2, 60, size=2), k=int(rng.integers(1, 3))) for i in range(7)]
        costs = [estimated_cost(e) for e in entries]
        s = entries[0].shapes[0]
        assert costs[0] == s.num_matrices * s.N * s.M * s.M
        for world in (2, 3):
            owner = assign_layers(entries, world)
            assert owner == assign_layers(entries, world)  # deterministic
            loads = [sum(c for c, o in zip(costs, owner) if o == r) for r in range(world)]
            best = min(max(sum(c for c, o in zip(costs, a) if o == r) for r in range(world))
                       for a in product(range(world), repeat=len(entries)))  # brute-force optimum
            assert max(loads) <= (4 / 3 - 1 / (3 * world)) * best + 1e-9  # Graham's LPT bound
    assert assign_layers(entries, 1) == [0] * len(entries)
    with pytest.raises(ValueError, match="world_size"):
        assign_layers(entries, 0)


def test_fingerprint_ignores_addresses_but_sees_settings():
    model = _mlp()
    entries = [e for e in discover_layers(model, hook=get_plugin_manager(entrypoints=False).hook) if e.analyzed]
    a = settings_fingerprint(analyzers=[FailOnRank()], entries=entries, schedule=spectra.schedules.as_schedule(lambda s: s > 1))
    b = settings_fingerprint(analyzers=[FailOnRank()], entries=entries,
                             schedule=spectra.schedules.as_schedule(lambda s: s > 1))
    assert a == b and "0x" not in a["schedule"]
    c = settings_fingerprint(analyzers=[FailOnRank(0)], entries=entries[:2])
    assert c["analyzers"] != a["analyzers"] and c["layers"] != a["layers"]
    with pytest.raises(ValueError, match="check_timeout"):
        DistributedConfig("shard", check_timeout=0)


def test_fsdp_models_are_refused_with_a_clear_error(tmp_path):
    from torch.distributed.fsdp import FullyShardedDataParallel, fully_shard

    dist.init_process_group("gloo", rank=0, world_size=1, init_method=f"file://{tmp_path}/pg")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fsdp1 = FullyShardedDataParallel(_mlp(), device_id=torch.device("cpu"))
        fsdp2 = _mlp()
        fully_shard(fsdp2)
        for model in (fsdp1, fsdp2):
            with pytest.raises(NotImplementedError, match="FullyShardedDataParallel"):
                spectra.analyze(model)
            with pytest.raises(NotImplementedError, match="full_state_dict"):
                spectra.SpectraMonitor(model, torch.optim.SGD(model.parameters(), lr=0.1), distributed="auto")
        with pytest.raises(NotImplementedError, match="DTensor"):
            check_model_supported(dict(fsdp2.named_parameters()))
        # world_size 1 with "shard": everything local, no collectives, same table
        plain = _mlp()
        _assert_same_table(spectra.analyze(plain, distributed="shard").to_pandas(), spectra.analyze(plain).to_pandas())
    finally:
        dist.destroy_process_group()
