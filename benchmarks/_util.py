"""Tiny shared helpers for the benchmarks: the run environment and writing result tables.

Every table records the machine load and thread counts it ran under, because on small shared CPUs the
absolute times move by 2–50× with contention (docs/design.md, "Conventions"); compare ratios measured in one run.
"""

from __future__ import annotations

import csv
import datetime as _dt
import importlib
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"

__all__ = ["RESULTS_DIR", "environment", "time_call", "write_table"]


def _version(mod: str) -> str:
    try:
        m = importlib.import_module(mod)
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        return "-"
    return str(getattr(m, "__version__", "?"))


_THREAD_ENV = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _cpu_model() -> str | None:
    """The CPU's model name (Linux's ``/proc/cpuinfo``), or ``None``."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def environment(packages: Sequence[str] = ("numpy", "scipy", "torch")) -> dict[str, Any]:
    """Machine load, thread counts and package versions, as a flat dict."""
    env: dict[str, Any] = {
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpus": os.cpu_count(),
    }
    model = _cpu_model()
    if model:  # the hosts differ from one run to the next: the ratios between torch and LAPACK with them
        env["cpu"] = model
    try:
        env["loadavg_1_5_15"] = tuple(round(v, 2) for v in os.getloadavg())
    except OSError:  # pragma: no cover - not on every platform
        env["loadavg_1_5_15"] = None
    try:
        from threadpoolctl import threadpool_info

        env["blas_threads"] = ", ".join(f"{i['internal_api']}={i['num_threads']}" for i in threadpool_info())
    except ImportError:
        env["blas_threads"] = "threadpoolctl not installed"
    try:
        import torch

        env["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    # thread settings read when the libraries load (they change how idle OpenMP/BLAS workers wait)
    for var in _THREAD_ENV:
        if os.environ.get(var):
            env[var] = os.environ[var]
    for p in packages:
        env[p] = _version(p)
    return env


def time_call(fn: Callable[[], Any], repeat: int = 5, min_time: float = 0.0) -> tuple[float, Any]:
    """Median wall time in seconds of ``fn()`` over ``repeat`` runs (at least one), and its last result."""
    times, out = [], None
    t_start = time.perf_counter()
    for k in range(max(1, repeat)):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
        if min_time and k >= 0 and time.perf_counter() - t_start > min_time:
            break
    return statistics.median(times), out


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if v != v:
            return "nan"
        return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.3e}"
    return "" if v is None else str(v)


def write_table(name: str, rows: Sequence[dict[str, Any]], *, title: str, notes: Sequence[str] = (),
                env: dict[str, Any] | None = None) -> Path:
    """Write ``rows`` as ``results/<name>.md`` (with the environment and notes) and ``results/<name>.csv``.

    Returns:
        The markdown path.
    """
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    cols: list[str] = []
    for r in rows:
        cols += [c for c in r if c not in cols]
    env = environment() if env is None else env
    lines = [f"# {title}", "", " | ".join(f"{k}: {v}" for k, v in env.items()), ""]
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |" for r in rows]
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    md = RESULTS_DIR / f"{name}.md"
    md.write_text("\n".join(lines) + "\n")
    with open(RESULTS_DIR / f"{name}.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    return md
