"""Configuration of the two-layer reproduction: one dataclass, the presets, validation and override coercion.

Every field can be overridden from Python (``run_twolayer(lr_grid=(0.1, 1.0))``) or from the command line
(``--set lr_grid=0.1,1``): :func:`coerce_overrides` turns strings into the field's type, and
:meth:`TwoLayerConfig.validate` rejects values of the wrong range with an error naming the field.

Sizes follow PAPER_NOTES.md §6/§11: *full* is d=1000, h=1500 (n=2000 for the lr grid), *half* and *quarter* scale
d, h and every n proportionally. Learning rates are raw values (no width scaling), except the GD learning rates of
the per-step overlap run, which follow η*_GD ∝ k (PAPER_NOTES.md §7). The preset table is PAPER_NOTES.md
"Presets".
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

__all__ = [
    "TwoLayerConfig",
    "PRESETS",
    "SCALES",
    "PAPER_LR_GRID",
    "LOSS_SWEEPS",
    "make_config",
    "coerce_overrides",
]

PAPER_LR_GRID: tuple[float, ...] = (1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0, 1000.0, 2000.0, 3000.0)
SCALES: dict[str, float] = {"full": 1.0, "half": 0.5, "quarter": 0.25}
OPTIMIZERS = ("gd", "adam")
FEATURE_SCALES = ("repo", "model")
DEVICES = ("cpu", "cuda")
LOSS_SWEEPS = ("n", "reg_lambda", "label_noise", "gamma")
PRESETS = ("quick", "paper", "one-step", "schedule", "overlaps", "losses", "weightnorm", "tiny")

# full-size dimensions (PAPER_NOTES.md §2)
_FULL_D, _FULL_H = 1000, 1500


@dataclass
class TwoLayerConfig:
    """Everything one ``twolayer`` invocation runs. Sizes are absolute (already scaled).

    Attributes:
        preset: the preset this config came from (informational).
        scale: ``"full"``, ``"half"``, ``"quarter"`` or ``"custom"`` (explicit d/h/n overrides).
        d, h: input and hidden width of the student (W is h×d).
        n: training-set size of the lr grid (the probe set has the same size).
        n_test: test-set size.
        label_noise: ρ_e, the label-noise standard deviation.
        reg_lambda: λ of the ridge readout.
        steps: T, the number of full-batch steps of the lr grid and the main run.
        lr_grid: the η grid shared by GD and Adam.
        optimizers: which optimizers the grid runs (``gd``, ``adam``).
        probe_steps: steps analysed by the monitor in the grid runs (0 = init).
        repeats: independent repeats of the grid, main, one-step, overlap, schedule and weight-norm runs (fresh
            teacher, init and data each; every check is judged on every repeat, PAPER_NOTES.md §8.2).
        seed: base seed; every draw comes from (seed, repeat, role, ...).
        device: ``"cpu"`` or ``"cuda"``.
        threads: CPU threads for torch and BLAS/LAPACK during the run; 0 = half the cores (at least 1).
            Oversubscribed multi-threaded LAPACK spins: on 2 shared cores one thread ran the 500×500 eigensolve
            4–10× faster than two.
        readout_feature_scale: ``"repo"`` (s = d) or ``"model"`` (s = √d), PAPER_NOTES.md §5.1.
        outlier_c: n_out counts eigenvalues above ``outlier_c``·(√h+√d)² (PAPER_NOTES.md §5.9).
        overlap_k: size of the top-k × top-k overlap blocks.
        alpha_ks: compute the KS-scan alpha (PAPER_NOTES.md §5.5) in addition to α_Hill.
        ww_crosscheck: add WeightWatcher's alpha for a few final weights to the report when installed.
        grid: run the (optimizer × η) grid.
        main: run the main single run (Adam η=1, probes {0, T}).
        one_step: run the one-step sweep (T=1, n=one_step_n, grid + threshold points).
        one_step_n: n of the one-step sweep.
        one_step_adam_extra, one_step_gd_extra: threshold points added to the one-step sweep.
        overlap_runs: per-step overlap runs as ``"optimizer:lr"`` strings.
        overlap_n: n of the overlap runs.
        schedule_gammas: StepLR γ values of the schedule experiment (empty = off); paired with constant η.
        schedule_lr: η₀ of the schedule experiment (Adam).
        schedule_n: n of the schedule experiment.
        schedule_steps: steps of the schedule experiment (10, not the repo's 1; PAPER_NOTES.md §11 item 2).
        losses_sweeps: which bulk_losses sweeps to run (subset of n, reg_lambda, label_noise, gamma).
        losses_d, losses_h: sizes of the loss sweeps.
        losses_n: n of the loss sweeps other than the n sweep (8000 at full size: the ρ_e sweep is judged there).
        losses_repeats: repeats of the loss sweeps (all arms of all sweeps of a repeat share their random draws).
        losses_lr: Adam η of the loss sweeps.
        losses_every_step: probe every step in the loss sweeps (else only {0, T}).
        n_values, reg_lambda_values, label_noise_values, gamma_values: the swept values.
        weightnorm: run the weight-normalisation ablation (on vs off, Adam η=1, per-step).
        weightnorm_n: n of the ablation.
    """

    preset: str = "quick"
    scale: str = "half"
    d: int = 500
    h: int = 750
    n: int = 1000
    n_test: int = 200
    label_noise: float = 0.3
    reg_lambda: float = 0.01
    steps: int = 10
    lr_grid: tuple[float, ...] = PAPER_LR_GRID
    optimizers: tuple[str, ...] = OPTIMIZERS
    probe_steps: tuple[int, ...] = (0, 1, 10)
    repeats: int = 3
    seed: int = 0
    device: str = "cpu"
    threads: int = 0
    readout_feature_scale: str = "repo"
    outlier_c: float = 1.05
    overlap_k: int = 10
    alpha_ks: bool = True
    ww_crosscheck: bool = True
    grid: bool = True
    main: bool = False
    one_step: bool = False
    one_step_n: int = 8000
    one_step_adam_extra: tuple[float, ...] = ()
    one_step_gd_extra: tuple[float, ...] = ()
    overlap_runs: tuple[str, ...] = ("adam:1", "gd:1000")
    overlap_n: int = 1000
    schedule_gammas: tuple[float, ...] = (0.6,)
    schedule_lr: float = 1.0
    schedule_n: int = 1000
    schedule_steps: int = 10
    losses_sweeps: tuple[str, ...] = ("n", "label_noise")
    losses_d: int = 1000
    losses_h: int = 1500
    losses_n: int = 8000
    losses_repeats: int = 3
    losses_lr: float = 1.0
    losses_every_step: bool = False
    n_values: tuple[int, ...] = (500, 2000, 4000, 8000)
    reg_lambda_values: tuple[float, ...] = (0.1, 1e-2, 1e-3, 1e-4)
    label_noise_values: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7)
    gamma_values: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8)
    weightnorm: bool = False
    weightnorm_n: int = 2000
    extra: dict = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------ helpers
    @classmethod
    def field_names(cls) -> list[str]:
        """Names users may override (``extra`` is internal)."""
        return [f.name for f in fields(cls) if f.name != "extra"]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists)."""
        out = {}
        for f in fields(self):
            if f.name == "extra":
                continue
            v = getattr(self, f.name)
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    def overlap_specs(self) -> list[tuple[str, float]]:
        """``overlap_runs`` parsed into (optimizer, lr) pairs."""
        return [_parse_opt_lr(s) for s in self.overlap_runs]

    def validate(self) -> "TwoLayerConfig":
        """Check every field's range; raise ``ValueError`` naming the field, the value and what is allowed."""
        pos_int = ["d", "h", "n", "n_test", "steps", "repeats", "overlap_k", "one_step_n", "overlap_n",
                   "schedule_n", "schedule_steps", "losses_d", "losses_h", "losses_n", "losses_repeats",
                   "weightnorm_n"]
        for name in pos_int:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 0:
            raise ValueError(f"threads must be an integer >= 0 (0 = auto), got {self.threads!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        for name in ("label_noise", "reg_lambda"):
            v = getattr(self, name)
            if not _finite(v) or v < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        for name in ("schedule_lr", "losses_lr", "outlier_c"):
            v = getattr(self, name)
            if not _finite(v) or v <= 0:
                raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
        for name in ("lr_grid", "one_step_adam_extra", "one_step_gd_extra"):
            for v in getattr(self, name):
                if not _finite(v) or v <= 0:
                    raise ValueError(f"{name} holds {v!r}; learning rates must be finite and > 0")
        if self.grid and not self.lr_grid:
            raise ValueError("lr_grid is empty but grid=True; give at least one learning rate")
        for v in self.optimizers:
            if v not in OPTIMIZERS:
                raise ValueError(f"optimizers holds {v!r}; allowed: {', '.join(OPTIMIZERS)}")
        for v in self.probe_steps:
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"probe_steps holds {v!r}; probe steps are integers >= 0")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.readout_feature_scale not in FEATURE_SCALES:
            raise ValueError(
                f"readout_feature_scale must be one of {', '.join(FEATURE_SCALES)}, got {self.readout_feature_scale!r}"
            )
        if self.scale not in (*SCALES, "custom"):
            raise ValueError(f"scale must be one of {', '.join(SCALES)} (or explicit d/h/n), got {self.scale!r}")
        self.overlap_specs()  # raises on malformed entries
        for v in (*self.schedule_gammas, *self.gamma_values):
            if not _finite(v) or not 0 < v <= 1:
                raise ValueError(f"StepLR gamma must be in (0, 1], got {v!r}")
        for v in self.losses_sweeps:
            if v not in LOSS_SWEEPS:
                raise ValueError(f"losses_sweeps holds {v!r}; allowed: {', '.join(LOSS_SWEEPS)}")
        for v in self.n_values:
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"n_values holds {v!r}; sample sizes are positive integers")
        for v in (*self.reg_lambda_values, *self.label_noise_values):
            if not _finite(v) or v < 0:
                raise ValueError(f"swept value {v!r} must be finite and >= 0")
        return self


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _parse_opt_lr(s: str) -> tuple[str, float]:
    try:
        opt, lr = str(s).split(":")
        lrf = float(lr)
    except ValueError:
        raise ValueError(f"overlap_runs entry {s!r} must look like 'adam:1' or 'gd:1000'") from None
    if opt not in OPTIMIZERS:
        raise ValueError(f"overlap_runs entry {s!r}: optimizer must be one of {', '.join(OPTIMIZERS)}")
    if not math.isfinite(lrf) or lrf <= 0:
        raise ValueError(f"overlap_runs entry {s!r}: the learning rate must be finite and > 0")
    return opt, lrf


def _sizes(k: float) -> dict[str, int]:
    """d, h at scale k (k=1 is full size)."""
    return {"d": int(round(_FULL_D * k)), "h": int(round(_FULL_H * k))}


def _preset_fields(preset: str, k: float) -> dict[str, Any]:
    """The preset's field values at size factor k (relative to full size)."""
    s = _sizes(k)

    def n(full_n: int) -> int:
        return max(1, int(round(full_n * k)))

    gd_overlap_lr = 2000.0 * k  # η*_GD ∝ k (PAPER_NOTES.md §7): 2000 at full, 1000 at half
    off = dict(grid=False, main=False, one_step=False, overlap_runs=(), schedule_gammas=(), losses_sweeps=(),
               weightnorm=False)
    if preset == "quick":
        # the claim-12 mini-sweeps run at full size when the grid runs at half size; the ρ_e sweep runs at n = 8000
        # (PAPER_NOTES.md §8.2), so its ρ_e = 0.3 arm is the n sweep's n = 8000 arm, trained once
        kl = min(1.0, 2.0 * k)
        return dict(
            **s, n=n(2000), repeats=3, probe_steps=(0, 1, 10), grid=True,
            overlap_runs=("adam:1", f"gd:{gd_overlap_lr:g}"), overlap_n=n(2000),
            schedule_gammas=(0.6,), schedule_n=n(2000),
            losses_sweeps=("n", "label_noise"), losses_d=_sizes(kl)["d"], losses_h=_sizes(kl)["h"],
            losses_n=int(round(8000 * kl)), n_values=tuple(int(round(v * kl)) for v in (500, 2000, 4000, 8000)),
            losses_repeats=3, losses_every_step=False,
        )
    if preset == "paper":
        return dict(
            **s, n=n(2000), repeats=5, probe_steps=(0, 1, 10), grid=True, main=True,
            one_step=True, one_step_n=n(8000), one_step_adam_extra=(0.03, 0.3, 3.0),
            one_step_gd_extra=(1e4 * k, 3e4 * k),
            overlap_runs=("adam:1", f"gd:{gd_overlap_lr:g}"), overlap_n=n(2000),
            schedule_gammas=(0.6,), schedule_n=n(2000),
            losses_sweeps=LOSS_SWEEPS, losses_d=s["d"], losses_h=s["h"], losses_n=n(8000),
            n_values=tuple(n(v) for v in (500, 2000, 4000, 8000)), losses_repeats=2, losses_every_step=True,
            weightnorm=True, weightnorm_n=n(2000),
        )
    if preset == "one-step":
        return dict(**s, **{**off, "one_step": True}, n=n(2000), one_step_n=n(8000),
                    one_step_adam_extra=(0.03, 0.3, 3.0), one_step_gd_extra=(1e4 * k, 3e4 * k))
    if preset == "schedule":
        return dict(**s, **{**off, "schedule_gammas": (0.6,)}, n=n(2000), schedule_n=n(2000))
    if preset == "overlaps":
        return dict(**s, **{**off, "overlap_runs": ("adam:1", f"gd:{gd_overlap_lr:g}")}, n=n(2000),
                    overlap_n=n(2000))
    if preset == "losses":
        return dict(**s, **{**off, "losses_sweeps": LOSS_SWEEPS}, n=n(2000), losses_d=s["d"], losses_h=s["h"],
                    losses_n=n(8000), n_values=tuple(n(v) for v in (500, 2000, 4000, 8000)), losses_repeats=2,
                    losses_every_step=True)
    if preset == "weightnorm":
        return dict(**s, **{**off, "weightnorm": True}, n=n(2000), weightnorm_n=n(2000))
    if preset == "tiny":
        # seconds, for tests: d=64, h=96 (k=0.064); a short grid spanning the three regimes of both optimizers
        return dict(
            d=64, h=96, n=128, n_test=200, repeats=3, probe_steps=(0, 1, 10), grid=True,
            lr_grid=(1e-3, 0.1, 1.0, 10.0, 100.0, 300.0, 1000.0, 3000.0), alpha_ks=True, ww_crosscheck=False,
            overlap_runs=("adam:1", "gd:300"), overlap_n=128, overlap_k=5,
            schedule_gammas=(0.6,), schedule_n=128,
            losses_sweeps=("n", "label_noise"), losses_d=64, losses_h=96, losses_n=256,
            n_values=(32, 256), label_noise_values=(0.1, 0.3, 0.5), losses_repeats=3, losses_every_step=False,
            scale="custom",
        )
    raise ValueError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")


_DEFAULT_SCALE = {"quick": "half", "tiny": "custom"}


def make_config(preset: str = "quick", overrides: Mapping[str, Any] | None = None) -> TwoLayerConfig:
    """Build and validate the config of a preset with overrides applied.

    ``scale`` is applied first (it recomputes every size of the preset), then the other overrides, so
    ``scale="quarter", n=300`` means quarter-size widths with n=300.

    Raises:
        ValueError: unknown preset or key (the valid ones are listed), or a value of the wrong type/range.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
    ov = coerce_overrides(overrides or {})
    scale = ov.pop("scale", _DEFAULT_SCALE.get(preset, "full"))
    if preset == "tiny":
        if scale != "custom":
            raise ValueError(f"the tiny preset has fixed sizes (scale {scale!r} not allowed); override d/h/n instead")
        k = 0.064
    elif scale in SCALES:
        k = SCALES[scale]
    else:
        raise ValueError(f"scale must be one of {', '.join(SCALES)} (or explicit d/h/n), got {scale!r}")
    values = _preset_fields(preset, k)
    values.setdefault("scale", scale)
    values["preset"] = preset
    values.update(ov)
    if any(key in ov for key in ("d", "h", "n")):
        values["scale"] = "custom"
    cfg = TwoLayerConfig(**values)
    return cfg.validate()


# ---------------------------------------------------------------------------------------------- coercion
def _field_types() -> dict[str, Any]:
    hints = typing.get_type_hints(TwoLayerConfig)
    return {name: hints[name] for name in TwoLayerConfig.field_names()}


def _coerce_scalar(name: str, tp: Any, value: Any) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.strip().lower() in ("0", "false", "no", "off"):
            return False
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ValueError(f"{name} must be a boolean (true/false), got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ValueError(f"{name} must be an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                f = float(value)
            except ValueError:
                raise ValueError(f"{name} must be an integer, got {value!r}") from None
            if f.is_integer():
                return int(f)
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ValueError(f"{name} must be a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a number, got {value!r}") from None
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{name} must be a string, got {value!r}")
        return value.strip()
    return value


def coerce_overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Convert override values (possibly strings from ``--set key=value``) to the config fields' types.

    Tuple fields accept a comma-separated string (``"0.1,1,10"``; an empty string gives an empty tuple) or a
    sequence. ``scale`` is accepted besides the fields. Unknown keys raise ``ValueError`` listing the valid ones.
    """
    types = _field_types()
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        key = str(key).replace("-", "_")
        if key not in types:
            raise ValueError(f"unknown config key {key!r}; valid keys: {', '.join(sorted(types))}")
        tp = types[key]
        origin = typing.get_origin(tp)
        if origin is tuple:
            (elt, _ellipsis) = typing.get_args(tp)
            if isinstance(value, str):
                items = [v for v in (p.strip() for p in value.split(",")) if v]
            elif isinstance(value, (list, tuple)):
                items = list(value)
            else:
                items = [value]
            out[key] = tuple(_coerce_scalar(key, elt, v) for v in items)
        else:
            out[key] = _coerce_scalar(key, tp, value)
    return out


def replace(cfg: TwoLayerConfig, **changes: Any) -> TwoLayerConfig:
    """A validated copy of ``cfg`` with ``changes`` applied."""
    return dataclasses.replace(cfg, **changes).validate()
