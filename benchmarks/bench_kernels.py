"""Two kernels of the Gram route's top-k eigenpairs, each against the alternative it replaced.

* ``top_pairs``: the top-k eigenpairs of the tridiagonal matrix ``dsytrd`` leaves, by MRRR (``dstemr``, what
  :func:`spectra.functional.tridiag.reduction_eigh_range` uses) vs bisection + inverse iteration (``dstebz`` +
  ``dstein``, its fallback), at the Gram orders of the paper net (500) and transformer layers (256, 1024);
* ``back_transform``: those eigenvectors mapped back by the reflectors (``functional/_lapack.py:
  dormqr_left``), LAPACK's blocked vs unblocked ``dormqr``, by vector count. The blocked code forms a
  triangular factor per block of 32 reflectors (``dlarft``) whatever the number of vectors, so for the few
  vectors the top-k asks for (k = 10 by default) it does more work than it saves; ``dormqr_left`` takes the
  unblocked path below ``UNBLOCKED_BELOW`` vectors.

One thread, interleaved calls, medians; each row also gives the largest difference between the two results
(rounding). Writes ``results/top_pairs.md`` and ``results/back_transform.md``.

Usage: python benchmarks/bench_kernels.py [--repeat 50]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import scipy.linalg  # noqa: F401  # SciPy's own OpenBLAS must be loaded before the thread limit below
from threadpoolctl import threadpool_limits

from spectra.functional import _lapack
from spectra.functional.tridiag import _inverse_iteration, gram_reduce

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import environment, write_table  # noqa: E402

ORDERS = (256, 500, 1024)
VECTORS = (5, 10, 16, 24, 32, 48, 64)


def _interleaved(fns: dict[str, Callable[[], Any]], repeat: int) -> dict[str, float]:
    """Median ms of each function over ``repeat`` rounds, the order alternating from round to round."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(repeat):
        for key in (list(fns) if r % 2 else list(fns)[::-1]):
            t0 = time.perf_counter()
            fns[key]()
            times[key].append(time.perf_counter() - t0)
    return {k: 1e3 * statistics.median(v) for k, v in times.items()}


def _apply(red, Z: np.ndarray, blocked: bool) -> np.ndarray:
    """Q·Z with the blocked (optimal workspace) or unblocked (minimal workspace) code of ``dormqr``."""
    out = Z.copy(order="F")
    if _lapack.dormqr_left(red.reflectors, red.tau, out, blocked=blocked) != 0:
        raise RuntimeError("dormqr failed")
    return out


def back_transform_rows(rng: np.random.Generator, repeat: int) -> list[dict[str, object]]:
    rows = []
    for n in ORDERS:
        red = gram_reduce(rng.standard_normal((n + n // 2, n)))
        for m in VECTORS:
            Z = np.asfortranarray(rng.standard_normal((n, m)))
            ms = _interleaved({"blocked": lambda: _apply(red, Z, True), "unblocked": lambda: _apply(red, Z, False)},
                              repeat)
            diff = float(np.abs(_apply(red, Z, True) - _apply(red, Z, False)).max() / np.abs(Z).max())
            rows.append({"n": n, "vectors": m, "blocked_ms": round(ms["blocked"], 3),
                         "unblocked_ms": round(ms["unblocked"], 3),
                         "blocked_over_unblocked": round(ms["blocked"] / ms["unblocked"], 2),
                         "max_rel_diff": f"{diff:.1e}",
                         "taken": "unblocked" if m < _lapack.UNBLOCKED_BELOW else "blocked"})
    return rows


def top_pair_rows(rng: np.random.Generator, repeat: int, k: int = 10) -> list[dict[str, object]]:
    rows = []
    for n in ORDERS:
        red = gram_reduce(rng.standard_normal((n + n // 2, n)))
        ms = _interleaved({"mrrr": lambda: _lapack.dstemr_index(red.d, red.e, n - k + 1, n),
                           "bisect": lambda: _inverse_iteration(red, n - k, n - 1, None)}, repeat)
        w1, Z1, info = _lapack.dstemr_index(red.d, red.e, n - k + 1, n)
        w2, Z2 = _inverse_iteration(red, n - k, n - 1, None)
        rows.append({"n": n, "pairs": k, "mrrr_ms": round(ms["mrrr"], 3), "bisect_invert_ms": round(ms["bisect"], 3),
                     "bisect_over_mrrr": round(ms["bisect"] / ms["mrrr"], 2), "info": info,
                     "max_rel_diff_values": f"{float(np.abs(w1 - w2).max() / np.abs(w2).max()):.1e}",
                     "max_1_minus_abs_dot": f"{float(np.abs(1 - np.abs(np.sum(Z1 * Z2, axis=0))).max()):.1e}"})
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=50)
    args = ap.parse_args(argv)
    if _lapack._routine("dormqr") is None or _lapack._routine("dstemr") is None:  # pragma: no cover
        raise SystemExit("SciPy's LAPACK capsules are not available")
    env = environment()
    rng = np.random.default_rng(0)
    with threadpool_limits(1):
        pairs = top_pair_rows(rng, args.repeat)
        rows = back_transform_rows(rng, args.repeat)
    notes = [f"repeat={args.repeat}, medians of interleaved calls; one BLAS thread; reflectors of the Gram matrix of a "
             "random (1.5 n) x n matrix; max_rel_diff: the largest difference of the two results / max |Z|",
             f"taken: what dormqr_left does (UNBLOCKED_BELOW = {_lapack.UNBLOCKED_BELOW})",
             "the machine is shared: compare rows of one run only"]
    write_table("back_transform", rows, title="The back-transform of the top-k eigenvectors: LAPACK's blocked vs "
                "unblocked dormqr, by vector count.", notes=notes, env=env)
    write_table("top_pairs", pairs, title="The top-k eigenpairs of the tridiagonal matrix: MRRR (dstemr) vs "
                "bisection + inverse iteration (dstebz + dstein).",
                notes=[f"repeat={args.repeat}, medians of interleaved calls; one thread; the tridiagonal matrix of the "
                       "Gram matrix of a random (1.5 n) x n matrix; max_1_minus_abs_dot: 1 - |z1.z2|, the vectors' "
                       "largest disagreement (up to sign)", "the machine is shared: compare rows of one run only"],
                env=env)


if __name__ == "__main__":
    main()
