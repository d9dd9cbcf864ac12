"""Spectral diagnostics of a PyTorch Lightning run: one line, ``callbacks=[SpectraCallback(...)]``.

A tiny random-init MLP learns a synthetic teacher. The callback analyzes the weights every ``--every`` steps,
logs the layer means of alpha, alpha_hill, stable_rank and log_spectral_norm through the trainer's loggers
(here a CSVLogger), streams the tidy table to ``<out>/spectra`` and checkpoints a cursor into it, so
``trainer.fit(..., ckpt_path=...)`` continues the same table.

Usage: python examples/lightning_callback.py [--steps 200] [--every 20] [--out lightning-out]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch import nn

import spectra
from spectra.integrations.lightning import SpectraCallback


class Student(pl.LightningModule):
    def __init__(self, width: int = 64, lr: float = 1e-2):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(32, width), nn.GELU(), nn.Linear(width, width), nn.GELU(),
                                 nn.Linear(width, 8))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x), y)
        self.log("loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr)


def synthetic_data(n: int = 2048, seed: int = 0) -> torch.utils.data.DataLoader:
    """A random teacher network's outputs on Gaussian inputs: a learnable task with no download."""
    g = torch.Generator().manual_seed(seed)
    teacher = nn.Sequential(nn.Linear(32, 16), nn.Tanh(), nn.Linear(16, 8))
    x = torch.randn(n, 32, generator=g)
    with torch.no_grad():
        y = teacher(x)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=64, shuffle=True,
                                       generator=g)


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--every", type=int, default=20)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--out", default="lightning-out")
    args = ap.parse_args(argv)
    out = Path(args.out)
    torch.manual_seed(0)

    trainer = pl.Trainer(
        max_steps=args.steps, default_root_dir=str(out), accelerator="cpu", devices=1,
        logger=pl.loggers.CSVLogger(str(out), name="logs"), log_every_n_steps=10, enable_progress_bar=False,
        callbacks=[SpectraCallback(every=args.every)],  # the whole integration
    )
    trainer.fit(Student(args.width), synthetic_data())

    results = spectra.Results.read(out / "spectra")  # or trainer.callbacks[0].results
    wide = results.to_wide()
    wide[["step", "layer", "alpha", "alpha_hill", "stable_rank", "fit", "status", "warning"]].to_csv(
        out / "alpha_by_step.csv", index=False)
    spectra.plot.plot_metric_vs_step(results, "alpha_hill", path=out / "alpha_hill_vs_step.png")
    return out


if __name__ == "__main__":
    print(f"wrote {main()}")
