"""Spectral diagnostics of a Hugging Face ``Trainer`` run: one line, ``callbacks=[SpectraCallback(...)]``.

A tiny GPT-2 built from a config (random init, nothing downloaded) learns synthetic token sequences. The
callback analyzes every ``--every`` steps, logs the layer means of alpha, alpha_hill, stable_rank and
log_spectral_norm through ``trainer.log`` (so every reporter in ``report_to`` gets them), streams the tidy table to
``<output_dir>/spectra`` and keeps a cursor in each ``checkpoint-*``, so ``trainer.train(resume_from_checkpoint=
...)`` continues the same table.

Usage: python examples/hf_trainer_callback.py [--steps 60] [--every 10] [--out hf-out]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

import spectra
from spectra.integrations.transformers import SpectraCallback


class Sequences(torch.utils.data.Dataset):
    """Token sequences that repeat a short random pattern: learnable, synthetic, no download."""

    def __init__(self, n: int = 256, length: int = 32, vocab: int = 128, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        pattern = torch.randint(0, vocab, (n, 8), generator=g)
        self.ids = pattern.repeat(1, length // 8)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--out", default="hf-out")
    args = ap.parse_args(argv)
    out = Path(args.out)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=128, n_positions=32, n_embd=64, n_layer=2, n_head=4, bos_token_id=0,
                        eos_token_id=0)
    model = GPT2LMHeadModel(config)
    training = TrainingArguments(output_dir=str(out), max_steps=args.steps, per_device_train_batch_size=16,
                                 learning_rate=3e-3, logging_steps=10, save_steps=args.steps // 2,
                                 report_to="none", use_cpu=True, disable_tqdm=True)
    trainer = Trainer(model=model, args=training, train_dataset=Sequences(),
                      callbacks=[SpectraCallback(every=args.every)])  # the whole integration
    trainer.train()

    results = spectra.Results.read(out / "spectra")
    wide = results.to_wide()
    wide[["step", "layer", "layer_type", "alpha", "alpha_hill", "fit", "status", "warning"]].to_csv(
        out / "alpha_by_step.csv", index=False)
    return out


if __name__ == "__main__":
    print(f"wrote {main()}")
