"""Wall time of WeightWatcher 0.7.7 ``analyze()`` vs ``spectra.analyze(fit="ww")`` on the same models.

Models (seeded, random init): a GPT-2-small-shaped stack (12 blocks of Linear 768x2304, 768x768, 768x3072,
3072x768 = 48 matrices) and a small CNN. Both sides run on one thread (torch and BLAS), WeightWatcher on its
CPU path (scipy SVD), spectra with its default ESD backend. Also reports how far the alphas of the two agree
(spectra ``fit="ww"`` must give WeightWatcher's alphas) and the load average, since the machine is shared.

Run: ``python benchmarks/bench_analyze.py [--out benchmarks/results/analyze.md] [--blocks 12]``
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch import nn


def gpt2_stack(blocks: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.ModuleList(
        nn.ModuleDict({"c_attn": nn.Linear(768, 2304), "c_proj": nn.Linear(768, 768),
                       "c_fc": nn.Linear(768, 3072), "mlp_proj": nn.Linear(3072, 768)})
        for _ in range(blocks)
    )  # fmt: skip


def small_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.Conv2d(64, 128, 3), nn.ReLU(),
        nn.Conv2d(128, 128, 3), nn.Flatten(), nn.Linear(512, 256), nn.Linear(256, 10),
    )  # fmt: skip


def timed(fn, repeat: int = 1):
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def run_ww(model):
    from spectra.compat import weightwatcher as cw

    ww = cw.import_weightwatcher()
    with cw._hygiene([]), cw._restore_longname(model), cw._ww_cpu_path():
        return ww.WeightWatcher(model=model).analyze(svd_method="accurate")


def bench(name: str, model: nn.Module, repeat: int) -> dict:
    from spectra.analyze import analyze
    from spectra.compat.weightwatcher import analyze_ww_compatible

    t_ww, details = timed(lambda: run_ww(model), repeat)
    t_sp, res = timed(lambda: analyze(model, fit="ww", progress=False), repeat)
    t_tail, _ = timed(lambda: analyze(model, fit="ww", analyzers=["tail"], progress=False), repeat)
    t_cm, _ = timed(lambda: analyze_ww_compatible(model, progress=False), repeat)
    wide = res.to_wide().set_index("layer")
    d = details.set_index("longname")
    common = [k for k in d.index if k in wide.index]
    a_ww, a_sp = d.loc[common, "alpha"].to_numpy(float), wide.loc[common, "alpha"].to_numpy(float)
    rel = float(np.max(np.abs(a_sp - a_ww) / np.abs(a_ww))) if common else float("nan")
    return {"model": name, "layers": len(common), "ww_s": t_ww, "spectra_s": t_sp, "spectra_tail_only_s": t_tail,
            "ww_compatible_s": t_cm, "speedup": t_ww / t_sp, "alpha_max_rel_diff": rel}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="write a markdown table here")
    ap.add_argument("--blocks", type=int, default=12)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from spectra.compat.weightwatcher import import_weightwatcher

    ww = import_weightwatcher()  # import cost (~2-5 s) is not timed
    load0 = os.getloadavg()
    rows = []
    with threadpool_limits(1):
        rows.append(bench(f"GPT-2-small-shaped ({args.blocks} blocks)", gpt2_stack(args.blocks), args.repeat))
        rows.append(bench("small CNN (4 Conv2d + 2 Linear)", small_cnn(), args.repeat))
    load1 = os.getloadavg()
    head = ("| model | layers | WW analyze (s) | spectra.analyze fit=ww (s) | speedup | tail only (s) | "
            "analyze_ww_compatible (s) | alpha max rel diff |")
    lines = [head, "|" + "---|" * 8]
    for r in rows:
        lines.append(f"| {r['model']} | {r['layers']} | {r['ww_s']:.2f} | {r['spectra_s']:.2f} | "
                     f"{r['speedup']:.1f}x | {r['spectra_tail_only_s']:.2f} | {r['ww_compatible_s']:.2f} | "
                     f"{r['alpha_max_rel_diff']:.1e} |")
    meta = (f"weightwatcher {ww.__version__}, torch {torch.__version__}, numpy {np.__version__}, "
            f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; torch and BLAS threads = 1; "
            f"load average before/after: {load0[0]:.1f} / {load1[0]:.1f}; best of {args.repeat}")
    text = "\n".join(lines) + "\n\n" + meta + "\n"
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(
            "# WeightWatcher 0.7.7 vs spectra: wall time\n\n`python benchmarks/bench_analyze.py --out "
            "benchmarks/results/analyze.md`\n\n" + text
        )


if __name__ == "__main__":
    main()
