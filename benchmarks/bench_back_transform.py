"""The back-transform of the Gram route's eigenvectors: LAPACK's blocked vs unblocked ``dormqr``, by vector count.

After ``dsytrd`` reduces a Gram matrix to tridiagonal form, the eigenvectors of the tridiagonal matrix are
mapped back by the reflectors (``functional/_lapack.py: dormqr_left``). The blocked code forms a triangular
factor per block of 32 reflectors (``dlarft``) whatever the number of vectors, so for the few vectors the top-k
asks for (k = 10 by default) it does more work than it saves. This times both paths, one thread, interleaved,
at the Gram orders of the paper net (500) and transformer layers (256, 1024), and the largest difference
between their results (rounding). ``dormqr_left`` takes the unblocked path below ``UNBLOCKED_BELOW`` vectors.

Usage: python benchmarks/bench_back_transform.py [--repeat 50]
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import scipy.linalg  # noqa: F401  # SciPy's own OpenBLAS must be loaded before the thread limit below
from threadpoolctl import threadpool_limits

from spectra.functional import _lapack
from spectra.functional.tridiag import gram_reduce

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import environment, write_table  # noqa: E402

ORDERS = (256, 500, 1024)
VECTORS = (5, 10, 16, 24, 32, 48, 64)


def _apply(red, Z: np.ndarray, blocked: bool) -> np.ndarray:
    """Q·Z with the blocked (optimal workspace) or unblocked (minimal workspace) code of ``dormqr``."""
    saved = _lapack.UNBLOCKED_BELOW
    _lapack.UNBLOCKED_BELOW = 0 if blocked else sys.maxsize
    try:
        out = Z.copy(order="F")
        if _lapack.dormqr_left(red.reflectors, red.tau, out) != 0:
            raise RuntimeError("dormqr failed")
        return out
    finally:
        _lapack.UNBLOCKED_BELOW = saved


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=50)
    args = ap.parse_args(argv)
    if _lapack._routine("dormqr") is None:  # pragma: no cover - another SciPy build
        raise SystemExit("SciPy's LAPACK capsules are not available")
    env = environment()
    rng = np.random.default_rng(0)
    rows = []
    with threadpool_limits(1):
        for n in ORDERS:
            red = gram_reduce(rng.standard_normal((n + n // 2, n)))
            for m in VECTORS:
                Z = np.asfortranarray(rng.standard_normal((n, m)))
                times: dict[bool, list[float]] = {True: [], False: []}
                for r in range(args.repeat):
                    for blocked in ((True, False) if r % 2 else (False, True)):
                        t0 = time.perf_counter()
                        _apply(red, Z, blocked)
                        times[blocked].append(time.perf_counter() - t0)
                b, u = (1e3 * statistics.median(times[x]) for x in (True, False))
                diff = float(np.abs(_apply(red, Z, True) - _apply(red, Z, False)).max() / np.abs(Z).max())
                rows.append({"n": n, "vectors": m, "blocked_ms": round(b, 3), "unblocked_ms": round(u, 3),
                             "blocked_over_unblocked": round(b / u, 2), "max_rel_diff": f"{diff:.1e}",
                             "taken": "unblocked" if m < _lapack.UNBLOCKED_BELOW else "blocked"})
    notes = [f"repeat={args.repeat}, medians of interleaved calls; one BLAS thread; reflectors of the Gram matrix of a "
             "random (1.5 n) x n matrix; max_rel_diff: the largest difference of the two results / max |Z|",
             f"taken: what dormqr_left does (UNBLOCKED_BELOW = {_lapack.UNBLOCKED_BELOW})",
             "the machine is shared: compare rows of one run only"]
    write_table("back_transform", rows, title=__doc__.splitlines()[0], notes=notes, env=env)


if __name__ == "__main__":
    main()
