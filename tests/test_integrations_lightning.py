"""spectra.integrations.lightning.SpectraCallback against the real PyTorch Lightning: steps follow
trainer.global_step, gradients are the step's own, loggers get the scalars, checkpoints carry a cursor and a
resumed run's table equals an uninterrupted one's; several optimizers, bf16, DDP."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import spectra
from spectra.integrations.lightning import SpectraCallback

COLS = ["run", "step", "layer", "view", "matrix", "analyzer", "metric", "index", "value", "status"]


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Two torch threads on two shared cores make a tiny training step ~30x slower (docs/design.md §6)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(num_workers|does not have many workers|LitLogger|litmodels|"
                                "GPU available|TPU available|log_every_n_steps).*")
        yield
    torch.set_num_threads(n)


class Regressor(pl.LightningModule):
    def __init__(self, opt: str = "sgd", lr: float = 0.05):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 8))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self):
        cls = torch.optim.SGD if self.hparams.opt == "sgd" else torch.optim.Adam
        return cls(self.parameters(), lr=self.hparams.lr)


def _loader(n=128, batch=16):
    g = torch.Generator().manual_seed(0)
    ds = torch.utils.data.TensorDataset(torch.randn(n, 16, generator=g), torch.randn(n, 8, generator=g))
    return torch.utils.data.DataLoader(ds, batch_size=batch)


def _trainer(root, max_steps, callbacks, **kw):
    kw.setdefault("logger", False)
    kw.setdefault("enable_checkpointing", False)
    return pl.Trainer(max_steps=max_steps, callbacks=callbacks, default_root_dir=str(root), accelerator="cpu",
                      devices=1, enable_progress_bar=False, enable_model_summary=False, **kw)


def _table(res):
    return res.to_pandas()[COLS].sort_values(COLS[:8]).reset_index(drop=True)


class _StopAt(pl.Callback):
    """Stops training at a step, as a crash or a preemption would (after the checkpoint callbacks ran)."""

    def __init__(self, step):
        self.step = step

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step >= self.step:
            trainer.should_stop = True


def test_steps_follow_global_step_with_accumulation_and_loggers_get_scalars(tmp_path):
    torch.manual_seed(0)
    cb = SpectraCallback(every=3, analyzers=("esd", "tail", "alignment"))
    logger = pl.loggers.CSVLogger(str(tmp_path), name="csv")
    trainer = _trainer(tmp_path, 7, [cb], accumulate_grad_batches=2, logger=logger, log_every_n_steps=1)
    trainer.fit(Regressor(), _loader())
    assert trainer.global_step == 7
    df = cb.to_pandas()
    assert sorted(df["step"].unique()) == [0, 3, 6]
    assert set(df["layer"]) == {"net.0", "net.2"} and df.attrs["source"] == "lightning"
    # the gradient is the step's own (captured after the closure's backward): plain SGD makes dW = -lr * G
    cos = df[(df.metric == "cos_update_grad") & (df.step > 0)]["value"]
    np.testing.assert_allclose(cos, -1.0, atol=1e-5)
    layers = cb.results.layers
    assert layers[layers.skip_reason.isna()]["layer"].tolist() == ["net.0", "net.2"]  # in depth order
    assert Path(trainer.default_root_dir, "spectra", "runs").is_dir()  # streamed under default_root_dir
    logged = pd.read_csv(logger.experiment.metrics_file_path)
    spec = logged.dropna(subset=["spectra/alpha"])
    assert sorted(spec["step"].astype(int)) == [0, 3, 6]
    wide = cb.to_wide()
    expected = wide[wide.step == 3]["alpha"].mean()
    assert spec[spec.step == 3]["spectra/alpha"].iloc[0] == pytest.approx(expected)
    assert {"spectra/alpha_hill", "spectra/stable_rank", "spectra/log_spectral_norm"} <= set(spec.columns)


def test_resumed_run_equals_uninterrupted_and_checkpoint_holds_a_cursor(tmp_path):
    def run(root, ckpt_path=None, stop=None, save=False):
        torch.manual_seed(0)
        cb = SpectraCallback(every=3, run="exp")
        cbs = [cb] + ([_StopAt(stop)] if stop else [])
        if save:
            cbs.append(pl.callbacks.ModelCheckpoint(dirpath=str(root / "ckpt"), every_n_train_steps=8, save_top_k=-1))
        trainer = _trainer(root, 16, cbs, enable_checkpointing=save)
        trainer.fit(Regressor(opt="adam", lr=0.01), _loader(), ckpt_path=ckpt_path)
        return cb, trainer

    full, _ = run(tmp_path / "full")
    # interrupted at 12, after a checkpoint at 8 (an epoch boundary: 8 batches per epoch); steps 9 and 12 are
    # recorded before the interruption and recomputed after the resume
    _, t1 = run(tmp_path / "b", stop=12, save=True)
    assert t1.global_step == 12
    ckpt = tmp_path / "b" / "ckpt" / "epoch=0-step=8.ckpt"
    state = next(v for k, v in torch.load(ckpt, weights_only=True)["callbacks"].items() if k.startswith("Spectra"))
    assert state["step"] == 8 and "records" not in str(state) and len(pickle.dumps(state)) < 1000  # O(1) cursor
    resumed, t2 = run(tmp_path / "b", ckpt_path=str(ckpt))
    assert t2.global_step == 16
    a, b = _table(full.results), _table(resumed.results)
    assert sorted(b["step"].unique()) == [0, 3, 6, 9, 12, 15]
    pd.testing.assert_frame_equal(a, b)
    on_disk = _table(spectra.Results.read(tmp_path / "b" / "spectra"))
    pd.testing.assert_frame_equal(a, on_disk)  # nothing duplicated, nothing renumbered, nothing lost
    superseded = sorted(p.name.split("-")[1] for p in (tmp_path / "b" / "spectra" / "records" / "superseded").iterdir())
    assert superseded == ["00000009", "00000012"]


class TwoOptimizers(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.automatic_optimization = False
        self.gen = nn.Linear(8, 16)
        self.disc = nn.Linear(16, 4)

    def training_step(self, batch, batch_idx):
        opt_g, opt_d = self.optimizers()
        x = batch[0][:, :8]
        loss_d = self.disc(self.gen(x).detach()).pow(2).mean()
        opt_d.zero_grad()
        self.manual_backward(loss_d)
        opt_d.step()
        loss_g = -self.disc(self.gen(x)).mean()
        opt_g.zero_grad()
        self.manual_backward(loss_g)
        opt_g.step()

    def configure_optimizers(self):
        return [torch.optim.SGD(self.gen.parameters(), lr=0.01), torch.optim.Adam(self.disc.parameters(), lr=0.01)]


def test_several_optimizers_get_one_named_monitor_each(tmp_path):
    torch.manual_seed(0)
    cb = SpectraCallback(every=2, analyzers=("esd",))
    trainer = _trainer(tmp_path, 8, [cb])
    trainer.fit(TwoOptimizers(), _loader())
    assert trainer.global_step == 8  # Lightning counts every optimizer's steps: 4 batches x 2
    assert set(cb.monitors) == {"sgd", "adam"}
    gen, disc = cb.monitors["sgd"].results.to_pandas(), cb.monitors["adam"].results.to_pandas()
    assert set(gen["layer"]) == {"gen"} and set(disc["layer"]) == {"disc"}
    # each schedule counts its own optimizer's steps; the step column is the trainer's global step
    assert sorted(disc["step"].unique()) == [0, 3, 7] and sorted(gen["step"].unique()) == [0, 4, 8]
    both = cb.to_pandas()
    assert set(both["optimizer"]) == {"sgd", "adam"}
    assert (tmp_path / "spectra" / "sgd").is_dir() and (tmp_path / "spectra" / "adam").is_dir()


def test_bf16_mixed_precision_rows_are_the_steps_own(tmp_path):
    torch.manual_seed(0)
    cb = SpectraCallback(every=2, analyzers=("alignment",))
    trainer = _trainer(tmp_path, 4, [cb], precision="bf16-mixed")
    trainer.fit(Regressor(), _loader())
    df = cb.to_pandas()
    assert sorted(df["step"].unique()) == [2, 4]
    np.testing.assert_allclose(df[df.metric == "cos_update_grad"]["value"], -1.0, atol=1e-5)


class Overflows(Regressor):
    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        return loss * float("inf") if self.global_step == 2 else loss  # the 3rd step's gradients overflow


def test_a_step_the_grad_scaler_skips_has_no_rows_and_numbering_follows_the_trainer(tmp_path):
    from lightning.pytorch.plugins.precision import MixedPrecision

    torch.manual_seed(0)
    cb = SpectraCallback(every=1, analyzers=("alignment",))
    scaler = torch.amp.GradScaler("cpu")  # the real fp16 loss-scaling path, on the CPU
    trainer = _trainer(tmp_path, 5, [cb], plugins=[MixedPrecision("16-mixed", "cpu", scaler=scaler)])
    trainer.fit(Overflows(), _loader())
    assert trainer.global_step == 5
    df = cb.to_pandas()
    assert sorted(df["step"].unique()) == [1, 2, 4, 5]  # step 3 was skipped by the scaler: no rows, no renumbering
    np.testing.assert_allclose(df[df.metric == "cos_update_grad"]["value"], -1.0, atol=1e-5)  # unscaled gradients


class NoOptimizer(Regressor):
    def configure_optimizers(self):
        return None


def test_trainer_without_optimizer_is_a_clear_error_at_fit_start(tmp_path):
    with pytest.raises(RuntimeError, match="SpectraCallback needs an optimizer.*configure_optimizers"):
        _trainer(tmp_path, 2, [SpectraCallback()]).fit(NoOptimizer(), _loader())


def test_bad_options_fail_when_the_callback_is_built():
    with pytest.raises(TypeError, match="unknown option.*'evrey'.*did you mean 'every'"):
        SpectraCallback(evrey=3)
    with pytest.raises(ValueError, match="every must be a positive integer"):
        SpectraCallback(every=0)
    with pytest.raises(ValueError, match="metric names"):
        SpectraCallback(log_metrics=[""])
    with pytest.raises(TypeError, match="log_layers must be True or False"):
        SpectraCallback(log_layers="yes")


DDP_SCRIPT = textwrap.dedent('''
    import json, sys, warnings
    import torch
    from torch import nn
    import lightning.pytorch as pl
    from spectra.integrations.lightning import SpectraCallback
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)

    class Regressor(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 8), nn.Tanh(), nn.Linear(8, 8))
        def training_step(self, batch, batch_idx):
            x, y = batch
            return nn.functional.mse_loss(self.net(x), y)
        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    class Dump(pl.Callback):  # runs in each worker process
        def __init__(self, cb):
            self.cb = cb
        def on_train_end(self, trainer, pl_module):
            df = self.cb.to_pandas()
            json.dump({"rank": trainer.global_rank, "global_step": trainer.global_step,
                       "steps": sorted(int(s) for s in df["step"].unique()), "n": len(df),
                       "plan": repr(self.cb.monitors["sgd"].pipeline.plan),
                       "cos": df[df.metric == "cos_update_grad"]["value"].tolist()},
                      open(f"{out}/rank{trainer.global_rank}.json", "w"))

    out = sys.argv[1]
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    ds = torch.utils.data.TensorDataset(torch.randn(64, 16, generator=g), torch.randn(64, 8, generator=g))
    cb = SpectraCallback(every=2, analyzers=("esd", "alignment"))
    # ddp_fork: the workers inherit the imported modules (the "ddp" launcher re-imports everything per rank)
    trainer = pl.Trainer(max_steps=4, accelerator="cpu", devices=2, strategy="ddp_fork", callbacks=[cb, Dump(cb)],
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=out)
    trainer.fit(Regressor(), torch.utils.data.DataLoader(ds, batch_size=8))
''')


@pytest.mark.slow
def test_ddp_two_ranks_shard_the_analysis_and_share_the_table(tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["global_step"] == r1["global_step"] == 4
    assert r0["steps"] == r1["steps"] == [0, 2, 4]
    assert r0["n"] == r1["n"] > 0 and "shard" in r0["plan"]  # every rank holds the whole table
    np.testing.assert_allclose(r0["cos"], -1.0, atol=1e-5)
    parts = [p.name for p in (tmp_path / "spectra" / "records").glob("*.parquet")]
    assert any("-r0-" in p for p in parts) and any("-r1-" in p for p in parts)  # each rank streamed its share
    back = spectra.Results.read(tmp_path / "spectra").to_pandas()
    assert len(back) == r0["n"]


def test_pytorch_lightning_import_name_and_fitting_again_continue_the_run(tmp_path):
    import pytorch_lightning

    cb = SpectraCallback(every=2, analyzers=("esd",))
    assert isinstance(cb, pytorch_lightning.Callback) and isinstance(cb, pl.Callback)
    torch.manual_seed(0)
    trainer = pytorch_lightning.Trainer(max_steps=2, callbacks=[cb], default_root_dir=str(tmp_path), logger=False,
                                        enable_checkpointing=False, enable_progress_bar=False,
                                        enable_model_summary=False, accelerator="cpu")

    class PLRegressor(pytorch_lightning.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 8))

        def training_step(self, batch, batch_idx):
            return nn.functional.mse_loss(self.net(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    module = PLRegressor()
    trainer.fit(module, _loader())
    trainer.fit_loop.epoch_loop.max_steps = 4  # train on: the same run continues, in the same table
    trainer.fit(module, _loader())
    assert trainer.global_step == 4
    assert sorted(cb.to_pandas()["step"].unique()) == [0, 2, 4]
    assert sorted(spectra.Results.read(tmp_path / "spectra").to_pandas()["step"].unique()) == [0, 2, 4]


def test_missing_framework_names_the_extra():
    code = ("import sys\n"
            "for m in ('lightning', 'lightning.pytorch', 'pytorch_lightning', 'transformers'): sys.modules[m] = None\n"
            "for mod in ('lightning', 'transformers'):\n"
            "    try:\n"
            "        __import__(f'spectra.integrations.{mod}')\n"
            "    except ImportError as exc:\n"
            "        print(exc)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 2, proc.stderr[-2000:]
    assert all('pip install "spectra[integrations]"' in line for line in lines)
    assert "PyTorch Lightning" in lines[0] and "transformers" in lines[1]


@pytest.mark.parametrize("option", [{"background": True}, {"warn_overhead": 0.2}, {"background_queue": 3}])
def test_monitor_only_options_are_refused_not_ignored(option):
    from spectra.integrations.lightning import SpectraCallback

    with pytest.raises(TypeError, match="not available in the trainer callbacks"):
        SpectraCallback(**option)
