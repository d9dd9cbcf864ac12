"""Memory: what the monitor holds on a due step, and that it keeps nothing from earlier steps.

How memory is measured, and why:

* Extra memory held across ``optimizer.step()`` = the tensors the pre-hook captured (``monitor._pending``). That
  is exactly what the monitor keeps alive while the optimizer updates the weights; torch CPU allocations are
  invisible to ``tracemalloc``, so the captured tensors are measured directly (``numel · element_size``). The
  bound is one float32-or-wider copy of each monitored matrix (W_{t−1}) plus one of its gradient.
* Retention: weak references to every :class:`~spectra.snapshot.LayerState` and every captured tensor must be
  dead once the step returns (no ``gc.collect()`` needed: no reference cycles either).
* Flatness over 1000 steps: with an analyzer that needs weight, update and gradient but emits nothing, the
  number of live tensors must not change between step 200 and step 1000, and the Python heap (``tracemalloc``)
  must grow by less than 128 B per step (a retained snapshot would cost over 1 KB per step).
"""

from __future__ import annotations

import gc
import tracemalloc
import weakref

import pytest
import torch
from torch import nn

import spectra.pipeline.capture as capture_mod  # where snapshots are built
from spectra import Analyzer, SpectraMonitor

from ._util import batch, mlp, step


def _captured_bytes(pending) -> int:
    return sum(t.numel() * t.element_size() for item in pending.values() for t in item.values())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_due_step_holds_one_copy_of_matrices_and_grads(dtype):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 32), nn.LayerNorm(32)).to(dtype)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = batch(model)
    mon = SpectraMonitor(model, opt, every=2, analyzers=("esd", "alignment"))
    sizes = []
    orig = mon._capture

    def measuring(step_, due):
        orig(step_, due)
        sizes.append(_captured_bytes(mon._pending))

    mon._capture = measuring
    for _ in range(4):
        step(model, opt, x, y)
    matrices = [p for p in model.parameters() if p.dim() == 2]
    wide = max(4, torch.finfo(dtype).bits // 8)  # W_{t-1} and G_{t-1} are kept in float32 or wider
    bound = sum(2 * p.numel() * wide for p in matrices)
    assert sizes == [bound, bound]  # steps 2 and 4 due; biases and the LayerNorm are not copied
    assert mon._pending is None
    mon.detach()


def test_no_snapshot_or_copy_outlives_its_step(monkeypatch):
    states, tensors = [], []
    orig_state = capture_mod.LayerState

    class Tracked(orig_state):
        def __post_init__(self):
            super().__post_init__()
            states.append(weakref.ref(self))
            tensors.extend(weakref.ref(t) for t in self.tensors.values())

    monkeypatch.setattr(capture_mod, "LayerState", Tracked)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = batch(model)
    mon = SpectraMonitor(model, opt, every=1)  # esd, tail, alignment: every decomposition cache in use
    gc.disable()
    try:
        for _ in range(5):
            step(model, opt, x, y)
            assert states and all(r() is None for r in states), "a LayerState survived its step"
            assert all(r() is None for r in tensors), "a captured copy survived its step"
    finally:
        gc.enable()
    assert len(states) == 2 * 6 and mon._pending is None
    mon.detach()


class _Null(Analyzer):
    """Needs every matrix kind (so every copy is made) but emits nothing (so records do not grow)."""

    name = "null"
    needs = frozenset({"weight", "update", "grad"})

    def analyze(self, layer):
        layer.evals("weight")
        layer.svd("update", 2)
        return ()


def _live_tensors() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))


@pytest.mark.slow
def test_memory_flat_over_1000_steps():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = batch(model)
    mon = SpectraMonitor(model, opt, every=1, analyzers=[_Null()])
    tracemalloc.start()
    try:
        for _ in range(200):  # warm-up: allocator arenas and torch's internal caches settle
            step(model, opt, x, y)
        gc.collect()
        base_heap, base_tensors = tracemalloc.get_traced_memory()[0], _live_tensors()
        for _ in range(800):
            step(model, opt, x, y)
        gc.collect()
        heap, tensors = tracemalloc.get_traced_memory()[0], _live_tensors()
    finally:
        tracemalloc.stop()
    assert mon.step == 1000
    assert tensors == base_tensors
    # A retained snapshot costs > 1 KB of Python heap per step (LayerState, its dicts, tensor objects); the
    # residual growth measured is ~20-60 B/step of torch/allocator bookkeeping that shrinks as steps go on.
    per_step = (heap - base_heap) / 800
    assert per_step < 128, f"heap grew by {heap - base_heap} bytes over 800 analyzed steps"
    mon.detach()


@pytest.mark.slow
def test_streaming_memory_flat_over_1000_steps_with_real_records(tmp_path):
    """With log_dir, records go to disk and none stays in memory: the heap does not grow with the records
    (~25 rows per analyzed step here, which in memory would cost several KB per step)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = batch(model)
    mon = SpectraMonitor(model, opt, every=5, analyzers=("esd",), log_dir=tmp_path / "log")
    tracemalloc.start()
    try:
        for _ in range(200):
            step(model, opt, x, y)
        gc.collect()
        base_heap = tracemalloc.get_traced_memory()[0]
        for _ in range(800):
            step(model, opt, x, y)
        gc.collect()
        heap = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    mon.detach()
    rows_per_step = len(mon.to_pandas()) / 201
    assert mon.step == 1000 and rows_per_step > 20
    # kept in memory, these records cost ~5 KB per analyzed step (checked: keep_in_memory=True fails this);
    # what remains is ~250 B/step of numpy/pandas/pyarrow/threadpoolctl bookkeeping that does not scale with rows
    per_analyzed_step = (heap - base_heap) / 160
    assert per_analyzed_step < 1024, f"heap grew by {heap - base_heap} bytes over 160 analyzed steps"
