"""What a due step's exact maths costs on this machine: the paper net's four decompositions, three ways.

The default analyzers ask, per layer view, for every eigenvalue of W_t and the top-10 triplets of W_{t−1}, W_t,
ΔW and G (:class:`spectra.functional.decompose.Decomposer`, the Gram route). For the paper net (one 750 × 500
layer) this benchmark times those four decompositions

* ``serial``: one after the other, one thread (the CPU work);
* ``threads``: on two threads of one process, as the monitor runs them (the LAPACK kernels release the GIL);
* ``processes``: two processes with two matrices each, started together, with ``OPENBLAS_NUM_THREADS=1`` and no
  shared interpreter: the best two cores can do with this maths (no GIL, no shared BLAS thread pool), and a
  flattering one: each process keeps its own two matrices in its core's cache across repetitions, where the
  thread pool hands the four to whichever thread is free (the monitor's matrices are fresh at every due step).

``processes`` is the floor of the decompositions of a synchronous due step on two cores; the analyzers' own work
(alignment, tail fit, ESD summary) and the copies come on top of it. Medians over ``--repeat`` runs.

In the same run it times the analyzers' own work on a prefetched snapshot (``bench_analyzers.py``'s) and the
paper net's plain training step (torch at its default threads), and derives the floor of the synchronous
overhead at every=10: all of a due step's single-threaded work (decompositions and analyzers) spread evenly over
every core with no slowdown, against ten plain steps: ``(serial + analyzers) / cores / (10 × plain step)``.
No schedule of this exact maths can do better on this machine; issue #17's target is 40%.

Usage: python benchmarks/bench_due_floor.py [--repeat 30]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

import scipy.linalg  # noqa: F401  # SciPy's own OpenBLAS must be loaded before the thread limit below

from spectra.functional.decompose import Decomposer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import environment, write_table  # noqa: E402

SHAPE = (750, 500)
K = 10


def _matrices(seed: int, count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(SHAPE) for _ in range(count)]


def _decompose(A: np.ndarray, evals: bool) -> None:
    d = Decomposer(A)
    if evals:  # W_t: every eigenvalue and the top-k, from one reduction
        d.plan(evals=True, k=K)
        d.eigvals()
    d.top_svd(K)


def _median_ms(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def worker(seed: int, start_at: float, repeat: int) -> None:
    """One of the two processes: two matrices (the first with its eigenvalues when seed is 0)."""
    mats = _matrices(seed, 2)

    def both() -> None:
        for i, A in enumerate(mats):
            _decompose(A, evals=seed == 0 and i == 0)

    both()
    while time.time() < start_at:
        pass
    print(json.dumps({"ms": _median_ms(both, repeat)}))


def _floor(tasks: list[tuple[np.ndarray, bool]], repeat: int) -> tuple[float, float, float]:
    """The floor of the every=10 overhead, as the median over ``repeat`` rounds of one ratio measured within each
    round (a co-tenant that takes a core for a while slows torch's two-thread step far more than one-thread
    LAPACK): the four decompositions serially on one thread, the default analyzers on a prefetched snapshot, and
    ten plain training steps. Returns ``(floor %, analyzers ms, plain step ms)``, each a median over rounds."""
    from bench_analyzers import _snapshot
    from bench_monitor import paper_setup
    from threadpoolctl import threadpool_limits

    from spectra.analyzers.alignment import AlignmentAnalyzer
    from spectra.analyzers.esd import EsdAnalyzer
    from spectra.analyzers.tail import TailAnalyzer

    analyzers = [EsdAnalyzer(), TailAnalyzer(), AlignmentAnalyzer()]
    _, _, step = paper_setup()
    step()
    cores = os.cpu_count() or 1
    ratios, an_ms, plain_ms = [], [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(10):
            step()
        plain = (time.perf_counter() - t0) / 10
        # all of the maths on one BLAS thread: an idle multi-threaded OpenBLAS pool spins, and slows the training
        # steps that follow it (spectra.threads)
        with threadpool_limits(1):
            st = _snapshot(analyzers)  # fresh (a snapshot caches what analyzers compute), prefetched
            t0 = time.perf_counter()
            for A, ev in tasks:
                _decompose(A, ev)
            t1 = time.perf_counter()
            for an in analyzers:
                list(an.analyze(st))  # analyze may be a generator: consume it
            t2 = time.perf_counter()
        ratios.append(100 * (t2 - t0) / cores / (10 * plain))
        an_ms.append(1e3 * (t2 - t1))
        plain_ms.append(1e3 * plain)
    return statistics.median(ratios), statistics.median(an_ms), statistics.median(plain_ms)


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--worker", nargs=2, type=float, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(int(args.worker[0]), args.worker[1], args.repeat)
        return
    from threadpoolctl import threadpool_limits

    env = environment()
    mats = _matrices(0, 2) + _matrices(1, 2)
    tasks = [(A, i == 0) for i, A in enumerate(mats)]
    with threadpool_limits(1):
        serial = _median_ms(lambda: [_decompose(A, ev) for A, ev in tasks], args.repeat)
        with ThreadPoolExecutor(2) as pool:
            threads = _median_ms(lambda: list(pool.map(lambda t: _decompose(*t), tasks)), args.repeat)
    floor_pct, analyzers_ms, plain_ms = _floor(tasks, args.repeat)
    start_at = time.time() + 8.0  # both workers imported and warmed up by then
    child_env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", str(seed), str(start_at), "--repeat",
                               str(args.repeat)], stdout=subprocess.PIPE, text=True, env=child_env)
             for seed in (0, 1)]
    outs = [json.loads(p.communicate()[0].strip().splitlines()[-1])["ms"] for p in procs]
    rows = [
        {"how": "serial (one thread)", "ms_per_due_step": round(serial, 1), "vs_serial": 1.0},
        {"how": "threads (two, one process: the monitor's way)", "ms_per_due_step": round(threads, 1),
         "vs_serial": round(serial / threads, 2)},
        {"how": "processes (two, two matrices each: the floor)", "ms_per_due_step": round(max(outs), 1),
         "vs_serial": round(serial / max(outs), 2)},
    ]
    cores = os.cpu_count() or 1
    rows += [
        {"how": "analyzers' own work (esd, tail, alignment; one thread)", "ms_per_due_step": round(analyzers_ms, 1),
         "vs_serial": ""},
        {"how": f"plain training step (torch at {torch_threads()} threads)", "ms_per_due_step": round(plain_ms, 2),
         "vs_serial": ""},
        {"how": f"floor of the every=10 overhead: (serial + analyzers) / {cores} cores / (10 x plain step), % "
                "(median of per-round ratios)",
         "ms_per_due_step": round(floor_pct, 1), "vs_serial": ""},
    ]
    notes = [f"matrices: 4 x {SHAPE[0]}x{SHAPE[1]} float64 (W_t with every eigenvalue, the others top-{K}); "
             f"repeat={args.repeat}, medians; processes: the slower of the two",
             "the machine is shared: compare rows of one run only"]
    write_table("due_floor", rows, title=__doc__.splitlines()[0], notes=notes, env=env)


if __name__ == "__main__":
    main()
