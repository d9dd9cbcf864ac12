"""What a worker process of ``spectra.analyze(..., workers=N)`` needs, and whether it can reproduce this process.

A worker creates the analyzers once, by name and options, from a fresh plugin manager (the built-ins and the
``spectra`` entry points; an analyzer instance the user passed is unpickled). Analyzers no worker can create
(registered in-process, or an instance of another class than the one registered under its name), layers
analyzed off the CPU (``workers=1`` computes their eigenvalues on the device) and ``backend="torch"`` (torch's
CPU results depend on its thread count) have no spec: the whole call then runs in this process.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from typing import Any, Sequence

from ..analyzers.base import Analyzer
from ..plugins import DISABLE_ENV, analyzer_registry, get_plugin_manager
from .pool_start import cores

__all__ = ["WorkerSpec", "worker_spec", "qualname"]


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs besides the snapshots.

    Attributes:
        analyzers: per analyzer ``(name, options, pickled instance or None, "module.Class")``: a worker creates
            it from the plugin registry by name and options, or unpickles the instance the user passed.
        threads: torch and BLAS threads of each worker.
        disabled: the parent's ``SPECTRA_DISABLE_PLUGINS`` (a forkserver's workers would see the server's).
    """

    analyzers: tuple[tuple[str, dict[str, Any], bytes | None, str], ...]
    threads: int
    disabled: str | None


def qualname(obj: Any) -> str:
    """``"module.Class"`` of ``obj``'s type."""
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def worker_spec(pipeline: Any, analyzers: Sequence[Analyzer], workers: int) -> tuple[WorkerSpec | None, str]:
    """The spec that lets a worker re-create ``analyzers``, or ``(None, why it cannot)``.

    Args:
        pipeline: the :class:`~spectra.pipeline.pipeline.Pipeline` of the call (its settings and entries).
        analyzers: the analyzers the engine will run.
        workers: the number of worker processes (each gets ``blas_threads``, else cores // workers, threads).
    """
    settings = pipeline.settings
    devices = {str(e.param.device) for e in pipeline.entries
               if getattr(getattr(e.param, "device", None), "type", "cpu") != "cpu"}
    if getattr(settings, "device", None) is not None and str(settings.device) != "cpu":
        devices.add(str(settings.device))
    if devices:
        return None, (f"the layers are analyzed on {', '.join(sorted(devices))} and workers run on the CPU")
    if getattr(settings, "backend", "auto") == "torch":
        return None, ("backend='torch' decomposes with torch, whose CPU results depend on its thread count, and "
                      "each worker runs fewer threads than this process")
    try:
        fresh = analyzer_registry(get_plugin_manager())
    except Exception as exc:
        return None, f"a worker could not load the plugins ({type(exc).__name__}: {exc})"
    by_name = {s for s in settings.analyzers if isinstance(s, str)}
    items = []
    for an in analyzers:
        if fresh.get(an.name) is not type(an):
            return None, (f"analyzer {an.name!r} ({qualname(an)}) is not what the built-in and installed "
                          "('spectra' entry point) plugins register under that name, so a worker process cannot "
                          "create it; register it through an entry point, or use workers=1")
        blob = None
        if an.name not in by_name:  # an instance the user made: ship it as it is
            try:
                blob = pickle.dumps(an)
                pickle.loads(blob)
            except Exception as exc:
                return None, f"analyzer {an!r} cannot be copied to a worker process ({type(exc).__name__}: {exc})"
        items.append((an.name, dict(settings.analyzer_options.get(an.name, {})) if blob is None else {}, blob,
                      qualname(an)))
    threads = settings.blas_threads or max(1, cores() // workers)
    spec = WorkerSpec(tuple(items), threads, os.environ.get(DISABLE_ENV))
    try:
        pickle.dumps(spec)
    except Exception as exc:
        return None, f"the analyzer options cannot be sent to a worker process ({type(exc).__name__}: {exc})"
    return spec, ""
