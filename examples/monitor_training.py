"""Train a small MLP with SpectraMonitor attached; save the tidy table and plots.

Usage: python examples/monitor_training.py [--steps 300] [--every 25] [--out monitor-out]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

import spectra


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--every", type=int, default=25)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--out", default="monitor-out")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(0)
    # a teacher network makes the task learnable, so the spectra actually move
    teacher = nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10))
    model = nn.Sequential(nn.Linear(64, args.width), nn.ReLU(), nn.Linear(args.width, args.width), nn.ReLU(),
                          nn.Linear(args.width, 10))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)

    # spectrum=True also records every eigenvalue, for the ESD-over-steps figure
    with spectra.SpectraMonitor(model, opt, every=args.every, log_dir=out / "log", run="mlp",
                                analyzer_options={"esd": {"spectrum": True}, "alignment": {"overlaps": "full"}}) as monitor:
        for _ in range(args.steps):
            x = torch.randn(256, 64)
            with torch.no_grad():
                y = teacher(x)
            opt.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            opt.step()

    res = monitor.results
    res.to_parquet(out / "records.parquet")
    res.to_csv(out / "records.csv")
    wide = res.to_wide()
    cols = [c for c in ("step", "layer", "alpha", "alpha_hill", "num_spikes", "stable_rank") if c in wide]
    wide[cols].to_csv(out / "summary.csv", index=False)

    spectra.plot.plot_metric_vs_step(res, "alpha_hill", path=out / "alpha_hill_vs_step.png")
    spectra.plot.plot_metric_vs_step(res, "overlap_top1_left_before", matrix="update",
                                     path=out / "overlap_top1_vs_step.png")
    last = int(wide["step"].max())
    spectra.plot.plot_overlap_heatmap(res, layer="2", step=last, matrix="update", path=out / "overlap_heatmap.png")
    spectra.plot.plot_alpha_bars(res, path=out / "alpha_bars.png")
    spectra.plot.plot_esd_snapshots(res.spectra("2"), path=out / "esd_over_steps.png",
                                    title="layer 2: ESD over training")
    return out


if __name__ == "__main__":
    print(f"wrote {main()}")
