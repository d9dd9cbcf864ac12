"""How ``spectra.analyze(..., workers=N)`` starts its worker processes: how many, with which start method.

Start method (measured in benchmarks/results/analyze.md, two workers on 2 cores): ``"fork"`` on Linux before
Python 3.12 (~0.2 s a call); ``"forkserver"`` on Linux from 3.12, where ``fork`` is deprecated in a process
with threads and torch always runs some (its server imports torch and the maths once, ~2-3 s, then ~0.2 s a
call); ``"spawn"`` elsewhere (every worker imports torch, ~5-7 s). Below a few hundred milliseconds of maths (a
small CNN), workers cost more than they save.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Sequence

__all__ = ["check_workers", "start_method", "context", "cores"]

# what the analyzers import on their first layer (a forkserver imports it once for every worker)
_MATHS = ("scipy.linalg", "scipy.integrate", "scipy.optimize", "scipy.special")


def check_workers(workers: Any) -> int:
    """``workers`` when it is a positive integer.

    Args:
        workers: the number of worker processes asked for.

    Returns:
        ``workers``, unchanged.

    Raises:
        ValueError: anything else (bools included), naming the value and what is allowed.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer (1: analyze in this process, N > 1: in N worker "
                         f"processes), got {workers!r}")
    return workers


def start_method() -> str:
    """``"fork"`` on Linux before Python 3.12, ``"forkserver"`` on Linux from 3.12, ``"spawn"`` elsewhere.

    From 3.12 the interpreter deprecates ``fork`` in a process with threads, and torch always runs some; on macOS
    ``fork`` is unsafe with the system's libraries.
    """
    if not sys.platform.startswith("linux"):
        return "spawn"
    return "fork" if sys.version_info < (3, 12) else "forkserver"


def context(method: str, preload: Sequence[str]) -> Any:
    """The multiprocessing context of ``method``.

    Args:
        method: ``"fork"``, ``"forkserver"`` or ``"spawn"``.
        preload: modules a worker runs (a forkserver imports them once, with the plugins and the maths, for
            every worker it forks; no effect once the server runs).
    """
    import multiprocessing as mp

    ctx = mp.get_context(method)
    if method == "forkserver":
        from importlib.metadata import entry_points

        from ..plugins import DEFAULT_PLUGINS

        plugins = {spec.partition(":")[0] for spec in DEFAULT_PLUGINS.values()}
        plugins |= {ep.value.partition(":")[0] for ep in entry_points(group="spectra")}
        ctx.set_forkserver_preload(["__main__", *preload, *sorted(plugins), *_MATHS])
    return ctx


def cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1
