"""Monitoring overhead on the paper's two-layer network at half scale (d=500, h=750, n=1000, full-batch Adam).

Runs 50 steps three ways in one process — no monitor, monitor with nothing due, monitor at every=10 with the
default analyzers (esd, tail, alignment) — interleaved over several rounds, and reports median ratios. Also
reports the bytes the monitor copies on a due step against the bound "one copy of the monitored matrices plus
their gradients".

Usage: python benchmarks/bench_monitor.py [--rounds 3] [--steps 50]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

import spectra

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import write_table  # noqa: E402

RESULTS = Path(__file__).parent / "results"


class TwoLayer(nn.Module):
    def __init__(self, d: int, h: int) -> None:
        super().__init__()
        self.W = nn.Linear(d, h, bias=False)
        self.a = nn.Linear(h, 1, bias=False)
        nn.init.normal_(self.W.weight)
        nn.init.normal_(self.a.weight)
        self.a.weight.requires_grad_(False)
        self.d, self.h = d, h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a(torch.tanh(self.W(x) / self.d**0.5)) / self.h**0.5


def one_run(mode: str, steps: int, d: int, h: int, n: int) -> tuple[float, int]:
    torch.manual_seed(0)
    model = TwoLayer(d, h)
    opt = torch.optim.Adam([model.W.weight], lr=1.0)
    x = torch.randn(n, d)
    y = torch.randn(n, 1)
    mon = None
    captured = [0]
    if mode == "nothing_due":
        mon = spectra.SpectraMonitor(model, opt, schedule=[10**9])
    elif mode == "every10":
        mon = spectra.SpectraMonitor(model, opt, every=10)
        orig = mon._capture

        def spy(step, due):
            orig(step, due)
            captured[0] = max(captured[0], sum(t.numel() * t.element_size() for item in (mon._pending or {}).values()
                                               for t in item.values()))

        mon._capture = spy
    t0 = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    dt = time.perf_counter() - t0
    if mon is not None:
        mon.detach()
    return dt, captured[0]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--d", type=int, default=500)
    ap.add_argument("--h", type=int, default=750)
    ap.add_argument("--n", type=int, default=1000)
    args = ap.parse_args(argv)

    modes = ("none", "nothing_due", "every10")
    times: dict[str, list[float]] = {m: [] for m in modes}
    cap = 0
    one_run("none", 3, args.d, args.h, args.n)  # warm-up
    for _ in range(args.rounds):
        for m in modes:
            dt, c = one_run(m, args.steps, args.d, args.h, args.n)
            times[m].append(dt)
            cap = max(cap, c)
    base = statistics.median(times["none"])
    rows = []
    for m in modes:
        med = statistics.median(times[m])
        rows.append({"mode": m, "median_s": round(med, 3), "ratio_vs_unmonitored": round(med / base, 3),
                     "overhead_pct": round(100 * (med / base - 1), 1)})
    bound = 2 * args.d * args.h * 4  # one fp32 copy of W plus its gradient
    rows.append({"mode": "bytes copied on a due step", "median_s": cap, "ratio_vs_unmonitored": round(cap / bound, 3),
                 "overhead_pct": "bound = W + grad"})
    notes = [f"{k}={v}" for k, v in vars(args).items()]
    notes.append("median over rounds of the 50-step loop; modes interleaved within each round")
    write_table("monitor", rows, title=__doc__.splitlines()[0], notes=notes)


if __name__ == "__main__":
    main()
