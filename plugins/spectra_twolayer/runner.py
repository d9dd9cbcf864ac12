"""``run_twolayer``: run a preset, collect the monitor's tables, judge the claims, write the outputs."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

import spectra
from spectra.progress import make_progress

from .claims import evaluate_claims
from .config import TwoLayerConfig, make_config
from .data import make_problem
from .sweeps import RunSpec, build_runs
from .summary import build_summary
from .train import RunOutput, train_run

__all__ = ["TwoLayerReport", "run_twolayer", "OUTPUT_FILES"]

log = logging.getLogger(__name__)

#: files the runner writes (figures come in addition); ``force=True`` overwrites only these
OUTPUT_FILES = ("results.parquet", "results.csv", "results.csv.meta.json", "summary.csv", "claims.csv",
                "config.json", "report.md")


@dataclass
class TwoLayerReport:
    """What :func:`run_twolayer` returns.

    Attributes:
        results: every run's tidy records, concatenated (:class:`spectra.Results`).
        summary: one row per (run, probed step), the paper's quantities as columns.
        claims: the PAPER_NOTES.md §8 verdict rows (one per check, judged on every repeat).
        out_dir: where the outputs were written (``None`` when ``out`` was not given).
        config: the configuration in force.
        wall_s: total wall time.
        figures: the PNG files written.
        load: the 1-minute load average at the start and at the end of the run (``None`` where the platform has
            none); wall times measured on shared cores are only comparable at similar load.
    """

    results: Any
    summary: pd.DataFrame
    claims: pd.DataFrame
    out_dir: Path | None
    config: dict[str, Any]
    wall_s: float = 0.0
    figures: list[Path] = field(default_factory=list)
    load: tuple[float, float] | None = None

    def __repr__(self) -> str:
        v = self.claims["verdict"].value_counts().to_dict() if len(self.claims) else {}
        return (f"TwoLayerReport(preset={self.config.get('preset')!r}, runs={self.summary['run'].nunique()}, "
                f"checks={v}, out_dir={self.out_dir})")


def _check_device(device: str) -> None:
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("device='cuda' was requested but CUDA is not available here (torch "
                               f"{torch.__version__}, CUDA build: {torch.version.cuda}); use device='cpu'")


def _prepare_out(out: str | Path | None, force: bool) -> Path | None:
    if out is None:
        return None
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"output path {out} exists and is not a directory")
    if out.exists() and any(out.iterdir()) and not force:
        raise FileExistsError(f"output directory {out} exists and is not empty; pass force=True (--force) to "
                              "write into it (existing files other than the ones this run writes are kept)")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _ww_crosscheck(final: dict[str, np.ndarray], summary: pd.DataFrame) -> pd.DataFrame | None:
    """WeightWatcher's alpha on a few final weights next to ours (None when weightwatcher is missing).

    Goes through :func:`spectra.compare_weightwatcher`, which keeps WeightWatcher on its CPU path and restores
    the logging, warnings and stdout state it would otherwise change.
    """
    import importlib.util

    if importlib.util.find_spec("weightwatcher") is None:
        return None
    import torch

    from spectra import compare_weightwatcher

    rows = []
    for run, W in final.items():
        last = summary[(summary["run"] == run)].sort_values("step").iloc[-1]
        error = None
        try:
            model = torch.nn.Sequential(torch.nn.Linear(W.shape[1], W.shape[0], bias=False))
            with torch.no_grad():
                model[0].weight.copy_(torch.as_tensor(W))
            table = compare_weightwatcher(model, fit="ww")
            ww_alpha = float(table["alpha_ww"].iloc[0])
        except Exception as e:  # noqa: BLE001 - the cross-check is informational; report, never crash
            ww_alpha, error = float("nan"), f"{type(e).__name__}: {e}"
        rows.append({"run": run, "step": int(last["step"]), "ours alpha_ks": round(float(last["alpha_ks"]), 4),
                     "ours alpha_hill": round(float(last["alpha_hill"]), 4), "weightwatcher alpha": round(ww_alpha, 4),
                     **({"error": error} if error else {})})
    return pd.DataFrame(rows) if rows else None


@contextlib.contextmanager
def _limited_threads(n: int) -> Iterator[None]:
    """Limit torch and BLAS/LAPACK threads for the duration of a run (``n = 0``: half the cores); restored."""
    import torch

    from spectra.threads import limit_blas_threads

    n = n if n > 0 else max(1, (os.cpu_count() or 2) // 2)
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with limit_blas_threads(n):
            yield
    finally:
        torch.set_num_threads(before)


def _key_runs(runs: list[RunSpec]) -> set[str]:
    """Runs whose final weights feed the WeightWatcher cross-check."""
    want = {("adam", 0.1), ("adam", 1.0), ("gd", 3000.0)}
    return {r.name for r in runs if r.group == "grid" and r.repeat == 0 and (r.optimizer, r.lr) in want}


def run_twolayer(
    *,
    preset: str = "quick",
    out: str | Path | None = None,
    force: bool = False,
    progress: Any = None,
    **overrides: Any,
) -> TwoLayerReport:
    """Run the two-layer reproduction.

    Args:
        preset: ``quick`` (default), ``paper``, ``one-step``, ``schedule``, ``overlaps``, ``losses``,
            ``weightnorm`` or ``tiny``.
        out: output directory (tables, figures, ``report.md``); ``None`` writes nothing.
        force: write into an existing non-empty ``out`` (only this run's files are overwritten; nothing is
            deleted).
        progress: ``None`` shows a tqdm bar when stderr is a terminal; ``True``/``False`` force it on/off.
        **overrides: any config field (strings from ``--set key=value`` are coerced), plus ``scale``
            (``full``/``half``/``quarter``).

    Returns:
        A :class:`TwoLayerReport`.

    Raises:
        ValueError: unknown preset or key, or a value of the wrong type/range (the message names it).
        RuntimeError: ``device="cuda"`` without CUDA.
        FileExistsError: ``out`` exists and is not empty, and ``force`` is false.
    """

    t0 = time.perf_counter()
    cfg: TwoLayerConfig = make_config(preset, overrides)
    _check_device(cfg.device)
    out_dir = _prepare_out(out, force)
    runs = build_runs(cfg)
    with _limited_threads(cfg.threads):
        return _run(cfg, runs, out_dir, progress, t0)


def _load_average() -> float | None:
    """The 1-minute load average (None where the platform has none)."""
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return None


def _reuse(src: RunOutput, spec: RunSpec) -> RunOutput:
    """``src``'s outputs under ``spec``'s name and tags: ``spec`` computes exactly what ``src`` computed."""
    df = src.results.to_pandas()
    df["run"] = spec.name
    for k, v in spec.tags().items():
        df[k] = v
    res = spectra.Results.from_pandas(df, layers=src.results.layers, attrs=src.results.attrs)
    return dataclasses.replace(src, spec=spec, results=res, student_mse=list(src.student_mse), wall_s=0.0,
                               final_weight=None, reused_from=src.spec.name)


def _run(cfg: TwoLayerConfig, runs: list[RunSpec], out_dir: Path | None, progress: Any, t0: float) -> TwoLayerReport:
    import torch

    load0 = _load_average()
    keep_final = _key_runs(runs) if cfg.ww_crosscheck else set()
    bar = make_progress(progress, len(runs), "twolayer", unit="run", min_items=1)
    outputs: list[RunOutput] = []
    done: dict[tuple, RunOutput] = {}  # compute key → first run with that key (coinciding sweep arms)
    final_w: dict[str, np.ndarray] = {}
    problem_key, problem = None, None
    try:
        for spec in runs:
            key = spec.compute_key()
            if key in done and spec.name not in keep_final:
                res = _reuse(done[key], spec)
            else:
                if spec.problem_key() != problem_key:
                    problem_key = spec.problem_key()
                    problem = make_problem(d=spec.d, h=spec.h, n=spec.n, n_test=spec.n_test,
                                           label_noise=spec.label_noise, seed=cfg.seed, teacher_key=spec.teacher_key,
                                           init_key=spec.init_key, data_key=spec.data_key)
                res = train_run(spec, problem, cfg, device=cfg.device, keep_final=spec.name in keep_final)
                if res.final_weight is not None:
                    final_w[spec.name] = res.final_weight
                    res.final_weight = None
                done.setdefault(key, res)
            outputs.append(res)
            if bar is not None:
                bar.set_postfix_str(spec.name, refresh=False)
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    results = spectra.Results.concat([o.results for o in outputs])
    results.attrs["twolayer_config"] = cfg.to_dict()
    tidy = results.to_pandas()
    summary = build_summary(tidy, outputs)
    cfg_dict = cfg.to_dict()
    claims = evaluate_claims(summary, cfg_dict)
    wall = time.perf_counter() - t0
    figures: list[Path] = []
    load = None
    if out_dir is not None:
        results.to_parquet(out_dir / "results.parquet")
        results.to_csv(out_dir / "results.csv")
        summary.to_csv(out_dir / "summary.csv", index=False)
        claims.to_csv(out_dir / "claims.csv", index=False)
        (out_dir / "config.json").write_text(json.dumps(cfg_dict, indent=1), encoding="utf-8")
        from .figures import write_figures
        from .report import write_report

        # tables are on disk already; a failure in an optional output must not cost the user the report
        try:
            figures = write_figures(summary, tidy, out_dir, claims=claims)
        except Exception as exc:  # noqa: BLE001
            warnings.warn(f"twolayer: figures could not be written: {exc!r}", RuntimeWarning, stacklevel=2)
            figures = []
        try:
            ww = _ww_crosscheck(final_w, summary) if final_w else None
        except Exception as exc:  # noqa: BLE001
            warnings.warn(f"twolayer: WeightWatcher cross-check failed: {exc!r}", RuntimeWarning, stacklevel=2)
            ww = None
        walls = pd.DataFrame([{"run": o.spec.name, "group": o.spec.group, "wall_s": o.wall_s,
                               "reused": bool(o.reused_from)} for o in outputs])
        dev_name = torch.cuda.get_device_name(0) if cfg.device == "cuda" else ""
        wall = time.perf_counter() - t0
        load1 = _load_average()
        load = None if load0 is None or load1 is None else (load0, load1)
        write_report(out_dir / "report.md", cfg=cfg_dict, claims=claims, summary=summary, figures=figures,
                     wall_s=wall, n_runs=len(outputs), run_walls=walls, ww=ww, device_name=dev_name, load=load,
                     threads=torch.get_num_threads())
    else:
        load1 = _load_average()
        load = None if load0 is None or load1 is None else (load0, load1)
    return TwoLayerReport(results=results, summary=summary, claims=claims, out_dir=out_dir, config=cfg_dict,
                          wall_s=wall, figures=figures, load=load)
