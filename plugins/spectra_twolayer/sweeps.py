"""The experiment lists of each preset, with their pairing semantics (PAPER_NOTES.md §6, §8.2).

A :class:`RunSpec` is one training run: sizes, optimizer, η, schedule, probe steps, and the three keys that
decide which draws it shares with other runs (teacher, student init, data). Runs with equal keys and sizes get
bit-identical β*, W₀, a and datasets.

Pairing:
* lr grid, main, one-step, overlaps, schedule, weight-norm: everything keyed on the repeat, so all (optimizer, η,
  γ, weight-norm) runs of a repeat share β*, W₀, a and data: the schedule and weight-normalisation comparisons are
  paired differences;
* loss sweeps (n, λ, ρ_e, γ): common random numbers. Every arm of every sweep in a repeat shares the teacher, the
  student init, the test set and the noise draws z; the n arms use nested prefixes of one sample stream, and the ρ_e
  arms scale the same z (see :mod:`spectra_twolayer.data`). This departs on purpose from the authors' code, which
  draws a fresh teacher per n or ρ_e value, so that arm-to-arm differences are paired.

Arms that coincide (e.g. n = 8000 of the n sweep and ρ_e = 0.3 of the ρ_e sweep at n = 8000) have the same
:meth:`RunSpec.compute_key`; the runner trains them once.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from .config import TwoLayerConfig

__all__ = ["RunSpec", "build_runs"]


@dataclass(frozen=True)
class RunSpec:
    """One training run.

    Attributes:
        name: unique run id (the tidy table's ``run`` column).
        group: ``grid``, ``main``, ``one_step``, ``overlap``, ``schedule``, ``losses_<param>`` or ``weightnorm``.
        optimizer: ``gd`` or ``adam``.
        lr: η (η₀ with a schedule).
        steps: T, number of full-batch steps.
        probes: steps the monitor analyses.
        gamma: StepLR γ (1.0 = constant η).
        weight_norm: renormalise W before every step.
        d, h, n, n_test, label_noise, reg_lambda: the setting.
        repeat: repeat index.
        teacher_key, init_key, data_key: pairing keys (see the module docstring).
        sweep_param, sweep_value: the swept parameter of a loss sweep (else ``""``/NaN).
        spectral: run the spectral analyzers (esd, tail, alignment); loss sweeps only need the readout.
        alignment: run the alignment analyzer (update/grad singular vectors).
    """

    name: str
    group: str
    optimizer: str
    lr: float
    steps: int
    probes: tuple[int, ...]
    gamma: float = 1.0
    weight_norm: bool = False
    d: int = 500
    h: int = 750
    n: int = 1000
    n_test: int = 200
    label_noise: float = 0.3
    reg_lambda: float = 0.01
    repeat: int = 0
    teacher_key: tuple = ()
    init_key: tuple = ()
    data_key: tuple = ()
    sweep_param: str = ""
    sweep_value: float = float("nan")
    spectral: bool = True
    alignment: bool = True

    def tags(self) -> dict[str, Any]:
        """The columns added to every tidy row of this run (``sweep_value`` is None outside a sweep)."""
        sweep_value = None if math.isnan(self.sweep_value) else float(self.sweep_value)
        return {
            "group": self.group, "optimizer": self.optimizer, "lr": float(self.lr), "steps": self.steps,
            "gamma": float(self.gamma), "weight_norm": bool(self.weight_norm), "d": self.d, "h": self.h,
            "n": self.n, "n_test": self.n_test, "label_noise": float(self.label_noise),
            "reg_lambda": float(self.reg_lambda), "repeat": self.repeat, "sweep_param": self.sweep_param,
            "sweep_value": sweep_value, "init": self.init_id(),
        }

    def init_id(self) -> str:
        """Names the initial weight W₀: runs with equal ids start from the same W₀ (e.g. ``"500x750/r/0"``)."""
        return f"{self.d}x{self.h}/" + "/".join(str(k) for k in self.init_key)

    def problem_key(self) -> tuple:
        """Runs with equal problem keys share the same drawn problem."""
        return (self.d, self.h, self.n, self.n_test, self.label_noise, self.teacher_key, self.init_key,
                self.data_key)

    def compute_key(self) -> tuple:
        """Runs with equal compute keys produce the same numbers (only their names and sweep tags differ)."""
        return (self.problem_key(), self.optimizer, float(self.lr), self.steps, tuple(self.probes), float(self.gamma),
                bool(self.weight_norm), float(self.reg_lambda), self.spectral, self.alignment,
                self.group.startswith("losses_"))

    def to_dict(self) -> dict[str, Any]:
        """All fields as a dict."""
        return asdict(self)


def _probes(wanted: tuple[int, ...] | str, steps: int) -> tuple[int, ...]:
    if wanted == "every":
        return tuple(range(steps + 1))
    return tuple(sorted({p for p in wanted if p <= steps} | {steps}))


def _lr_tag(lr: float) -> str:
    return f"{lr:g}"


def build_runs(cfg: TwoLayerConfig) -> list[RunSpec]:
    """Every run the config asks for, in execution order (runs sharing a problem are adjacent)."""
    runs: list[RunSpec] = []
    common = dict(n_test=cfg.n_test, reg_lambda=cfg.reg_lambda)
    for r in range(cfg.repeats):
        keys = dict(teacher_key=("r", r), init_key=("r", r), data_key=("r", r), repeat=r)
        base = dict(d=cfg.d, h=cfg.h, label_noise=cfg.label_noise, **common, **keys)
        if cfg.grid:
            for opt in cfg.optimizers:
                for lr in cfg.lr_grid:
                    runs.append(RunSpec(
                        name=f"grid/{opt}/lr={_lr_tag(lr)}/r{r}", group="grid", optimizer=opt, lr=lr,
                        steps=cfg.steps, probes=_probes(cfg.probe_steps, cfg.steps), n=cfg.n, **base))
        if cfg.main:
            runs.append(RunSpec(name=f"main/adam/lr=1/r{r}", group="main", optimizer="adam", lr=1.0,
                                steps=cfg.steps, probes=(0, cfg.steps), n=cfg.n, **base))
        if cfg.one_step:
            pts = [(o, lr) for o in cfg.optimizers for lr in cfg.lr_grid]
            pts += [("adam", lr) for lr in cfg.one_step_adam_extra] + [("gd", lr) for lr in cfg.one_step_gd_extra]
            for opt, lr in sorted(set(pts), key=lambda p: (cfg.optimizers.index(p[0]) if p[0] in cfg.optimizers else 9, p[1])):
                runs.append(RunSpec(name=f"one_step/{opt}/lr={_lr_tag(lr)}/r{r}", group="one_step", optimizer=opt,
                                    lr=lr, steps=1, probes=(0, 1), n=cfg.one_step_n, **base))
        for opt, lr in cfg.overlap_specs():
            runs.append(RunSpec(name=f"overlap/{opt}/lr={_lr_tag(lr)}/r{r}", group="overlap", optimizer=opt, lr=lr,
                                steps=cfg.steps, probes=_probes("every", cfg.steps), n=cfg.overlap_n, **base))
        if cfg.schedule_gammas:
            for g in (1.0, *[g for g in cfg.schedule_gammas if g != 1.0]):
                runs.append(RunSpec(
                    name=f"schedule/adam/lr={_lr_tag(cfg.schedule_lr)}/gamma={g:g}/r{r}", group="schedule",
                    optimizer="adam", lr=cfg.schedule_lr, gamma=g, steps=cfg.schedule_steps,
                    probes=_probes("every", cfg.schedule_steps), n=cfg.schedule_n, **base))
        if cfg.weightnorm:
            for wn in (False, True):
                runs.append(RunSpec(name=f"weightnorm/adam/lr=1/wn={int(wn)}/r{r}", group="weightnorm",
                                    optimizer="adam", lr=1.0, weight_norm=wn, steps=cfg.steps,
                                    probes=_probes("every", cfg.steps), n=cfg.weightnorm_n, **base))
    runs += _loss_sweeps(cfg)
    names = [r.name for r in runs]
    assert len(names) == len(set(names)), "run names must be unique"
    return runs


def _loss_sweeps(cfg: TwoLayerConfig) -> list[RunSpec]:
    """The bulk_losses sweeps, paired by common random numbers within a repeat (module docstring)."""
    runs: list[RunSpec] = []
    probes = _probes("every" if cfg.losses_every_step else (0,), cfg.steps)
    values = {"n": cfg.n_values, "reg_lambda": cfg.reg_lambda_values, "label_noise": cfg.label_noise_values,
              "gamma": cfg.gamma_values}
    for r in range(cfg.losses_repeats):
        keys = dict(teacher_key=("losses", r), init_key=("losses", r), data_key=("losses", r))
        for param in cfg.losses_sweeps:
            for v in values[param]:
                spec: dict[str, Any] = dict(
                    d=cfg.losses_d, h=cfg.losses_h, n=cfg.losses_n, n_test=cfg.n_test, label_noise=cfg.label_noise,
                    reg_lambda=cfg.reg_lambda, gamma=1.0)
                spec[param] = int(v) if param == "n" else float(v)
                runs.append(RunSpec(
                    name=f"losses_{param}/adam/{param}={v:g}/r{r}", group=f"losses_{param}", optimizer="adam",
                    lr=cfg.losses_lr, steps=cfg.steps, probes=probes, repeat=r, sweep_param=param,
                    sweep_value=float(v), spectral=True, alignment=False, **spec, **keys))
    return runs
