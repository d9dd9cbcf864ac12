"""Offline analysis of a model and of its saved checkpoint, with a figure.

Usage: python examples/analyze_model.py [--out analyze-out]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

import spectra


def build_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.Flatten(),
        nn.Linear(64 * 4 * 4, 256), nn.ReLU(), nn.Linear(256, 10),
    )


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="analyze-out")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    model = build_model()
    res = spectra.analyze(model)                    # default: esd + tail, CSN fit with a minimum tail
    wide = res.to_wide()
    wide.to_csv(out / "layers.csv", index=False)

    ckpt = out / "model.pt"
    torch.save(model.state_dict(), ckpt)            # a plain state_dict loads with weights_only=True
    again = spectra.analyze(ckpt).to_wide()
    assert (again["alpha"].round(10).tolist() == wide["alpha"].round(10).tolist()), "checkpoint != model"

    layer = wide.iloc[-1]["layer"]
    lam = spectra.functional.esd(dict(model.named_parameters())[f"{layer}.weight"])
    fit = spectra.functional.fit_power_law(lam)
    spectra.plot.plot_esd(lam, fit=fit, path=out / f"esd_{layer}.png", title=f"layer {layer}")
    spectra.plot.plot_alpha_bars(res, path=out / "alpha_bars.png")
    return out


if __name__ == "__main__":
    print(f"wrote {main()}")
