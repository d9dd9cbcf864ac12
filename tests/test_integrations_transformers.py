"""spectra.integrations.transformers.SpectraCallback against the real Hugging Face Trainer and accelerate: the
optimizer is unwrapped, steps follow state.global_step, scalars go through trainer.log, the table lives under
output_dir, and resuming from checkpoint-* continues it with nothing duplicated, renumbered or lost."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainerCallback, TrainingArguments
from transformers.utils import logging as hf_logging

import spectra
from spectra.integrations.transformers import STATE_KEY, SpectraCallback

COLS = ["run", "step", "layer", "view", "matrix", "analyzer", "metric", "index", "value", "status"]


@pytest.fixture(autouse=True)
def _quiet_single_thread():
    """One torch thread (two on two shared cores make a tiny step ~30x slower); no HF chatter."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        yield
    hf_logging.set_verbosity(verbosity)
    torch.set_num_threads(n)


class Tokens(torch.utils.data.Dataset):
    def __init__(self, n=64, length=16, vocab=64):
        self.x = torch.randint(0, vocab, (n, length), generator=torch.Generator().manual_seed(0))

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"input_ids": self.x[i], "labels": self.x[i]}


def _model():
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=64, n_positions=16, n_embd=32, n_layer=2, n_head=2, resid_pdrop=0.0,
                     embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(cfg)


def _args(out, max_steps, **kw):
    base = dict(output_dir=str(out), max_steps=max_steps, per_device_train_batch_size=8, learning_rate=1e-3,
                report_to="none", disable_tqdm=True, use_cpu=True, seed=0, save_strategy="no", logging_steps=1000)
    return TrainingArguments(**{**base, **kw})


class Stop(TrainerCallback):
    """Stops training at a step, as a crash or a preemption would (after that step's checkpoint, if any)."""

    def __init__(self, at):
        self.at = at

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.at:
            control.should_training_stop = True


class Seen(TrainerCallback):
    """A reporter placed before SpectraCallback: it sees what trainer.log dispatches, as W&B/TensorBoard would."""

    def __init__(self):
        self.logs = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append((state.global_step, dict(logs)))


def _table(res):
    return res.to_pandas()[COLS].sort_values(COLS[:8]).reset_index(drop=True)


def test_steps_follow_global_step_gradients_are_final_and_trainer_log_gets_scalars(tmp_path):
    model = _model()
    seen, cb = Seen(), SpectraCallback(every=3)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    trainer = Trainer(model=model, args=_args(tmp_path, 7, gradient_accumulation_steps=2), train_dataset=Tokens(),
                      callbacks=[seen, cb], optimizers=(opt, None))
    trainer.train()
    assert trainer.state.global_step == 7
    driver = cb.monitors["sgd"]
    assert driver.optimizer is opt  # accelerate's AcceleratedOptimizer was unwrapped
    df = cb.to_pandas()
    assert sorted(df["step"].unique()) == [0, 3, 6] and df.attrs["source"] == "transformers"
    assert "transformer.h.0.attn.c_attn" in set(df["layer"])
    # copies taken after accumulation and clipping, before the step: plain SGD makes dW = -lr * G exactly
    np.testing.assert_allclose(df[(df.metric == "cos_update_grad")]["value"], -1.0, atol=1e-4)
    assert (tmp_path / "spectra" / "runs").is_dir()  # the table lives under output_dir
    assert len(spectra.Results.read(tmp_path / "spectra").to_pandas()) == len(df)
    logged = {step: logs for step, logs in seen.logs if "spectra/alpha" in logs}
    assert sorted(logged) == [0, 3, 6]
    wide = cb.to_wide()
    assert logged[6]["spectra/alpha"] == pytest.approx(wide[wide.step == 6]["alpha"].mean())
    history = [h for h in trainer.state.log_history if "spectra/alpha" in h]
    assert [h["step"] for h in history] == [0, 3, 6]


def test_resume_from_checkpoint_continues_the_same_table(tmp_path):
    def run(out, stop=None, resume=None):
        cb = SpectraCallback(every=3)
        trainer = Trainer(model=_model(), args=_args(out, 10, save_strategy="steps", save_steps=4),
                          train_dataset=Tokens(), callbacks=[cb] + ([Stop(stop)] if stop else []))
        trainer.train(resume_from_checkpoint=resume)
        return cb, trainer

    full, _ = run(tmp_path / "full")
    _, t1 = run(tmp_path / "b", stop=7)  # steps 6 is recorded, then the run dies; checkpoint-4 survives
    assert t1.state.global_step == 7
    saved = json.loads((tmp_path / "b" / "checkpoint-4" / "trainer_state.json").read_text())["stateful_callbacks"]
    cursor = saved[STATE_KEY]
    assert cursor["step"] == 4 and "records" not in json.dumps(cursor) and len(json.dumps(cursor)) < 600
    resumed, t2 = run(tmp_path / "b", resume=str(tmp_path / "b" / "checkpoint-4"))
    assert t2.state.global_step == 10
    a, b = _table(full.results), _table(resumed.results)
    assert sorted(b["step"].unique()) == [0, 3, 6, 9]
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-9)
    on_disk = spectra.Results.read(tmp_path / "b" / "spectra")
    pd.testing.assert_frame_equal(a, _table(on_disk), check_exact=False, rtol=1e-9)
    assert not on_disk.to_pandas().duplicated(COLS[:8]).any()
    moved = [p.name for p in (tmp_path / "b" / "spectra" / "records" / "superseded").iterdir()]
    assert [m.split("-")[1] for m in moved] == ["00000006"]


def test_trainer_without_optimizer_is_a_clear_error(tmp_path):
    cb = SpectraCallback()
    from transformers import TrainerControl, TrainerState

    with pytest.raises(RuntimeError, match="SpectraCallback needs an optimizer.*Trainer has no optimizer"):
        cb.on_train_begin(_args(tmp_path, 1), TrainerState(), TrainerControl(), model=_model(), optimizer=None)


def test_monitor_unwraps_accelerated_optimizer_and_names_what_it_cannot(tmp_path):
    from accelerate import Accelerator

    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model, wrapped = Accelerator(cpu=True).prepare(model, opt)
    assert type(wrapped).__name__ == "AcceleratedOptimizer"
    mon = spectra.SpectraMonitor(model, wrapped, every=1, analyzers=("esd",))
    assert mon.optimizer is opt
    batch = Tokens()[0]
    model(input_ids=batch["input_ids"][None], labels=batch["labels"][None]).loss.backward()
    wrapped.step()
    assert mon.step == 1 and sorted(mon.to_pandas()["step"].unique()) == [0, 1]
    mon.detach()

    class HalfWrapper(torch.optim.Optimizer):  # an Optimizer subclass that skips Optimizer.__init__
        def __init__(self, inner):
            self.inner = inner

    with pytest.raises(TypeError, match="cannot see through the optimizer wrapper HalfWrapper.*pass the torch.optim"):
        spectra.SpectraMonitor(model, HalfWrapper(opt))
