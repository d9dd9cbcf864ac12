"""The default analyzers' own time per layer view, decompositions excluded (computed beforehand).

One paper-net-shaped snapshot (W_{t−1}, ΔW, W_t, G of a 750 × 500 layer; float32 tensors as the monitor
copies them) is decomposed once (its plan prefetched); then each analyzer (esd, tail, alignment) runs on
fresh, prefetched copies of it (one per call: a snapshot caches what analyzers compute), ``--calls`` times
each. This is the part of a due step that runs on the
training thread after the decompositions; its decompositions are timed by ``bench_due_floor.py``.

Usage: python benchmarks/bench_analyzers.py [--calls 40]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from spectra.analyzers.alignment import AlignmentAnalyzer
from spectra.analyzers.esd import EsdAnalyzer
from spectra.analyzers.tail import TailAnalyzer
from spectra.snapshot import DecompositionPlan, LayerState

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import environment, write_table  # noqa: E402


def _snapshot(analyzers: list) -> LayerState:
    g = torch.Generator().manual_seed(0)
    W0 = torch.randn(750, 500, generator=g)
    dW = torch.sign(torch.randn(750, 500, generator=g))  # an Adam-like update
    st = LayerState("W", "W", 10, {"weight": W0 + dW, "previous": W0, "update": dW,
                                   "grad": torch.randn(750, 500, generator=g)})
    st.prefetch(DecompositionPlan.collect(analyzers, st))
    return st


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=40)
    args = ap.parse_args(argv)
    env = environment()
    analyzers = [EsdAnalyzer(), TailAnalyzer(), AlignmentAnalyzer()]
    an_states = {an.name: [_snapshot(analyzers) for _ in range(args.calls + 1)] for an in analyzers}
    rows = []
    for an in analyzers:
        states = an_states[an.name]  # a fresh snapshot per call: snapshots cache what analyzers compute
        list(an.analyze(states[-1]))  # warm-up (analyze may be a generator: consume it)
        times = []
        for st in states[:-1]:
            t0 = time.perf_counter()
            list(an.analyze(st))
            times.append(time.perf_counter() - t0)
        rows.append({"analyzer": an.name, "median_ms": round(1e3 * statistics.median(times), 2),
                     "min_ms": round(1e3 * min(times), 2), "calls": args.calls})
    notes = ["one 750x500 layer view, decompositions prefetched before the timing; the analyzers' own work only",
             "the machine is shared: compare rows of one run only"]
    write_table("analyzers", rows, title=__doc__.splitlines()[0], notes=notes, env=env)


if __name__ == "__main__":
    main()
