"""One training run: full-batch GD or Adam on the student's first layer, with the spectra monitor attached.

The loop follows PAPER_NOTES.md §4.1: (optional) weight normalisation, full-batch MSE (mean, no ½) on the training set,
one optimizer step, then the StepLR step (η_t = η·γ^(t−1)). Training is float32; every metric is computed by
the monitor's analyzers in float64. A divergent run (non-finite loss or weights) is marked, never raised.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

import spectra
from spectra.functional import mp_edges

from .config import TwoLayerConfig
from .data import Problem, odd_floor_on
from .metrics import ReadoutAnalyzer, TeacherSimAnalyzer
from .model import Student, normalize_weight_
from .sweeps import RunSpec

__all__ = ["RunOutput", "make_optimizer", "build_analyzers", "train_run", "tail_options"]

log = logging.getLogger(__name__)


@dataclass
class RunOutput:
    """What one run returns: the monitor's results plus the student's own MSE per step.

    Attributes:
        spec: the run.
        results: the monitor's :class:`spectra.Results` (tidy rows tagged with the run's settings).
        student_mse: L(W_t) on the training set for t = 0..T (the forward pass of step t+1 measures W_t; with
            weight normalisation that is the normalised W_t).
        diverged: a non-finite loss or weight appeared.
        wall_s: wall time of the run.
        error: why training stopped early (empty when it ran all steps).
        final_weight: W_T as float32 numpy when ``keep_final`` was asked (for the WeightWatcher cross-check).
        reused_from: name of the run whose outputs these are, when the runner trained an identical run once for
            two sweep arms (empty otherwise).
        alpha_is_hill: the ``tail`` analyzer ran as a Hill fit only (``alpha_ks=False``), so its ``alpha`` row is
            α_Hill and there is no α_KS.
        test_floor: the test MSE of the best odd predictor β*ᵀx/2 on this run's test set (PAPER_NOTES.md §3).
    """

    spec: RunSpec
    results: Any
    student_mse: list[float] = field(default_factory=list)
    diverged: bool = False
    wall_s: float = 0.0
    final_weight: np.ndarray | None = None
    error: str = ""
    reused_from: str = ""
    alpha_is_hill: bool = False
    test_floor: float = math.nan


def make_optimizer(name: str, params: Any, lr: float) -> torch.optim.Optimizer:
    """``gd``: torch SGD (momentum 0, no weight decay); ``adam``: torch Adam with its defaults (PAPER_NOTES.md §4)."""
    if name == "gd":
        return torch.optim.SGD(params, lr=lr, momentum=0.0, weight_decay=0.0)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    raise ValueError(f"unknown optimizer {name!r}; allowed: gd, adam")


def tail_options(cfg: TwoLayerConfig) -> dict[str, Any]:
    """Options of the library's ``tail`` analyzer for PAPER_NOTES.md §5.4 (α_Hill) and §5.5 (α_KS)."""
    if not cfg.alpha_ks:
        return {"method": "hill", "xmin_pos": 2}
    return {"method": "ww", "xmin_pos": 2, "hill": True}


def build_analyzers(spec: RunSpec, problem: Problem, cfg: TwoLayerConfig) -> tuple[list, dict]:
    """The analyzers of one run and their options (library analyzers by name, paper analyzers as instances)."""
    _, edge = mp_edges(spec.h, spec.d)
    analyzers: list[Any] = ["esd", "tail"]
    options: dict[str, dict] = {
        # the full spectrum feeds the ESD figures; the loss sweeps only need the summary metrics
        "esd": {"reference_edge": cfg.outlier_c * edge, "spectrum": not spec.group.startswith("losses_")},
        "tail": tail_options(cfg),
    }
    k = min(cfg.overlap_k, spec.d, spec.h)
    if spec.alignment:
        analyzers.append("alignment")
        options["alignment"] = {"k": k, "overlaps": "full"}  # the overlap heatmaps need the k x k blocks
    analyzers.append(TeacherSimAnalyzer(beta=problem.beta, k=k if spec.alignment else 1))
    analyzers.append(ReadoutAnalyzer(
        X_probe=problem.probe.X, y_probe=problem.probe.y, X_test=problem.test.X, y_test=problem.test.y,
        reg_lambda=spec.reg_lambda, feature_scale=cfg.readout_feature_scale))
    return analyzers, options


def train_run(
    spec: RunSpec, problem: Problem, cfg: TwoLayerConfig, *, device: str = "cpu", keep_final: bool = False
) -> RunOutput:
    """Train one run with the monitor attached on ``spec.probes``; return its results."""
    t0 = time.perf_counter()
    dev = torch.device(device)
    model = Student(problem.W0, problem.a).to(dev)
    opt = make_optimizer(spec.optimizer, model.W.parameters(), spec.lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=spec.gamma) if spec.gamma != 1.0 else None
    X = torch.as_tensor(problem.train.X, dtype=torch.float32, device=dev)
    y = torch.as_tensor(problem.train.y, dtype=torch.float32, device=dev)
    analyzers, options = build_analyzers(spec, problem, cfg)
    losses: list[float] = []
    diverged = False
    error = ""
    with warnings.catch_warnings():
        # overflow in degenerate runs (Adam η ≥ 10) is expected; it is recorded in the table, not warned
        warnings.filterwarnings("ignore", category=RuntimeWarning)
        monitor = spectra.SpectraMonitor(
            model, opt, analyzers=analyzers, schedule=spectra.at(spec.probes), layers=["W"],
            tags=spec.tags(), run=spec.name, analyzer_options=options, on_error="ignore")
        try:
            for _ in range(spec.steps):
                if spec.weight_norm:
                    normalize_weight_(model.W.weight)
                opt.zero_grad(set_to_none=True)
                loss = torch.mean((model(X) - y) ** 2)
                val = float(loss.detach())
                losses.append(val)
                diverged |= not math.isfinite(val)
                loss.backward()
                opt.step()
                if sched is not None:
                    sched.step()
            with torch.no_grad():
                final = float(torch.mean((model(X) - y) ** 2))
            losses.append(final)
            diverged |= not math.isfinite(final) or not bool(torch.isfinite(model.W.weight).all())
        except (RuntimeError, FloatingPointError, OverflowError) as e:
            # e.g. torch's Adam refuses a step size that overflows float32: the run stops here, marked diverged
            error = f"{type(e).__name__}: {e}"
            diverged = True
            log.warning("run %s stopped at step %d: %s", spec.name, len(losses), error)
        finally:
            monitor.detach()
    final = model.W.weight.detach().cpu().numpy().copy() if keep_final else None
    return RunOutput(spec=spec, results=monitor.results, student_mse=losses, diverged=diverged,
                     wall_s=time.perf_counter() - t0, final_weight=final, error=error,
                     alpha_is_hill=tail_options(cfg)["method"] == "hill",
                     test_floor=odd_floor_on(problem.test, problem.beta))
