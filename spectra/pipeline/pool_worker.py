"""A worker process of ``spectra.analyze(..., workers=N)``: snapshots in, each analyzer's outcome out.

A worker sets its torch and BLAS threads (``blas_threads``, else cores // N) before anything else, creates the
analyzers once from its :class:`~spectra.pipeline.pool_spec.WorkerSpec`, and runs them on each snapshot as the
engine does (:func:`measure`): one decomposition plan per snapshot, then each analyzer. It sends back each
analyzer's measurements, or its exception. Its reader thread takes the next snapshot while the current one is
analyzed. A forked worker sets its torch threads before any torch call: after the parent used torch's OpenMP
pool, a forked child's first parallel torch op hangs otherwise.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import queue
import signal
import threading
from multiprocessing.connection import wait
from typing import Any, Sequence

from ..analyzers.base import Analyzer
from ..plugins import DISABLE_ENV, analyzer_registry, get_plugin_manager
from ..snapshot import DecompositionPlan, LayerState
from .engine import resolve_analyzers, runtime_needs
from .pool_spec import WorkerSpec, qualname
from .pool_transport import LOCAL, portable_outcomes, recv, unpack_state

__all__ = ["measure", "serve"]


def measure(st: LayerState, analyzers: Sequence[Analyzer]) -> dict[str, tuple[str, Any]]:
    """Each runnable analyzer's ``("ok", measurements)`` or ``("err", exception)`` on ``st``, as the engine runs
    them: one decomposition plan for the snapshot, then each analyzer in order."""
    runnable = [an for an in analyzers if all(st.has(k) for k in runtime_needs(an))]
    st.prefetch(DecompositionPlan.collect(runnable, st))
    out: dict[str, tuple[str, Any]] = {}
    for an in runnable:
        try:
            out[an.name] = ("ok", list(an.analyze(st)))
        except Exception as exc:
            out[an.name] = ("err", exc)
    return out


def _make_analyzers(spec: WorkerSpec) -> list[Analyzer]:
    """The analyzers of ``spec``, from this process's plugins, checked to be the parent's classes."""
    if spec.disabled is None:
        os.environ.pop(DISABLE_ENV, None)
    else:
        os.environ[DISABLE_ENV] = spec.disabled
    registry = analyzer_registry(get_plugin_manager())
    out = []
    for name, options, blob, expected in spec.analyzers:
        an = pickle.loads(blob) if blob is not None else resolve_analyzers([name], registry, {name: options})[0]
        if qualname(an) != expected:
            raise RuntimeError(f"analyzer {name!r} is {qualname(an)} in a worker process, {expected} in the parent")
        out.append(an)
    return out


def _read_jobs(conn: Any, inbox: queue.SimpleQueue[Any]) -> None:  # pragma: no cover - in the worker
    """The worker's reader thread: the next snapshot arrives while the current one is analyzed."""
    parent = mp.parent_process()
    watch = [conn] + ([parent.sentinel] if parent is not None else [])
    try:
        while conn in wait(watch):  # else the parent's sentinel: it died
            msg = recv(conn)
            if msg is None:
                break
            inbox.put(msg)
    except (EOFError, OSError):
        pass
    inbox.put(None)  # stop after the snapshots already read


def serve(conn: Any, spec: WorkerSpec) -> None:  # pragma: no cover - runs in the worker (tests cover it)
    """A worker's main: threads first, analyzers once, then one snapshot at a time until told to stop.

    Args:
        conn: the worker's end of its socket to the parent.
        spec: what the worker needs besides the snapshots.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    import torch

    torch.set_num_threads(spec.threads)  # before any torch op: a forked child cannot use the parent's OpenMP pool
    from threadpoolctl import threadpool_limits

    inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
    threading.Thread(target=_read_jobs, args=(conn, inbox), name="spectra-worker-reader", daemon=True).start()
    conn.send(("ready", None, None))  # listening: the parent may send snapshots while the analyzers are made
    with threadpool_limits(limits=spec.threads):
        try:
            analyzers = _make_analyzers(spec)
        except Exception as exc:
            conn.send(("init-error", None, f"{type(exc).__name__}: {exc}"))
            return
        while (msg := inbox.get()) is not None:
            job, payload = msg
            try:
                st = unpack_state(payload)
            except Exception:
                conn.send(("done", job, LOCAL))
                continue
            try:
                result = portable_outcomes(measure(st, analyzers))
            finally:
                st.release()
            conn.send(("done", job, result))
