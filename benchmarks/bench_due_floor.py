"""What a due step's exact maths costs on this machine: the paper net's four decompositions, three ways.

The default analyzers ask, per layer view, for every eigenvalue of W_t and the top-10 triplets of W_{t−1}, W_t,
ΔW and G (:class:`spectra.functional.decompose.Decomposer`, the Gram route). For the paper net (one 750 × 500
layer) this benchmark times those four decompositions

* ``serial``: one after the other, one thread (the CPU work);
* ``threads``: on two threads of one process, as the monitor runs them (the LAPACK kernels release the GIL);
* ``processes``: two processes with two matrices each, started together, with ``OPENBLAS_NUM_THREADS=1`` and no
  shared interpreter: the best two cores can do with this maths (no GIL, no shared BLAS thread pool).

``processes`` is the floor of the decompositions of a synchronous due step on two cores; the analyzers' own work
(alignment, tail fit, ESD summary) and the copies come on top of it. Medians over ``--repeat`` runs.

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
    notes = [f"matrices: 4 x {SHAPE[0]}x{SHAPE[1]} float64 (W_t with every eigenvalue, the others top-{K}); "
             f"repeat={args.repeat}, medians; processes: the slower of the two",
             "the machine is shared: compare rows of one run only"]
    write_table("due_floor", rows, title=__doc__.splitlines()[0], notes=notes, env=env)


if __name__ == "__main__":
    main()
