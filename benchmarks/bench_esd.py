"""ESD backends: spectra.functional.esd (Gram + eigh, auto, svd) vs a bare torch.linalg.eigvalsh(W.T @ W).

Float64 square matrices (the issue's target: esd(method="eigh") within 1.2x of bare torch eigvalsh on 2048²)
and a rectangular 3072×768 layer. Medians of repeated calls, interleaved, in one process.
Run: ``python benchmarks/bench_esd.py [--sizes 512 1024 2048]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import environment, time_call, write_table  # noqa: E402

from spectra.functional import esd  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    shapes = [(n, n) for n in args.sizes] + [(3072, 768)]
    rows = []
    for shape in shapes:
        W = rng.standard_normal(shape)
        Wt = torch.from_numpy(W)

        def bare():
            return torch.linalg.eigvalsh(Wt.T @ Wt)

        t_bare, ref = time_call(bare, args.repeat)
        row = {"shape": f"{shape[0]}x{shape[1]}", "torch_eigvalsh_s": round(t_bare, 4)}
        for method in ("eigh", "auto", "svd"):
            t, lam = time_call(lambda m=method: esd(W, method=m), args.repeat)
            row[f"{method}_s"] = round(t, 4)
            row[f"{method}_vs_torch"] = round(t / t_bare, 2)
            top = np.sort(ref.numpy())[-10:]
            row[f"{method}_top10_relerr"] = float(np.max(np.abs(lam[-10:] - top) / top))
        rows.append(row)
    write_table("esd", rows, title=__doc__.splitlines()[0], env=environment(),
                notes=["ratio < 1 means spectra is faster than a bare torch eigvalsh of the Gram matrix"])


if __name__ == "__main__":
    main()
