"""Offline analysis in worker processes: ``spectra.analyze(..., workers=N)``, the pool and its lifecycle.

What runs where:

* The parent runs :meth:`Pipeline.run <spectra.pipeline.pipeline.Pipeline.run>` exactly as with ``workers=1``:
  the snapshots, the engine (records, ``on_error``, the ``spectra_analyzer_error`` hook), the progress bar, the
  sinks and, under ``torch.distributed``, the gather. Only the analyzers it is handed are stand-ins
  (:class:`~spectra.pipeline.pool_remote.RemoteAnalyzer`) whose measurements come from a worker.
* Ahead of the engine, the parent builds the same snapshots (a few at a time: at most ``2N + 2`` wait or run)
  and keeps two on their way to each worker (:mod:`spectra.pipeline.pool_transport` packs them).
* A worker (:mod:`spectra.pipeline.pool_worker`) creates the analyzers once from a
  :class:`~spectra.pipeline.pool_spec.WorkerSpec` and sends back each analyzer's measurements, or its
  exception. :mod:`spectra.pipeline.pool_start` chooses how the workers start.

So numbers, rows, statuses, messages, warnings, hook calls and raises are those of ``workers=1``, made by the
same code in the same order (the hook sees the stand-in, whose attributes are the analyzer's). A snapshot a
worker cannot take (a matrix or an exception that does not pickle, a worker that died) is analyzed in the
parent. When no worker can reproduce this process (see :mod:`spectra.pipeline.pool_spec`), the whole call runs
in this process, with a ``RuntimeWarning`` saying why.
"""

from __future__ import annotations

import logging
import warnings
from collections import deque
from multiprocessing.connection import wait
from typing import Any, Iterator, Sequence

from ..analyzers.base import Analyzer
from ..snapshot import LayerState
from ..table.schema import Record
from .deltas import delta_state
from .pool_remote import RemoteAnalyzer, RemoteTraceback
from .pool_spec import WorkerSpec, worker_spec
from .pool_start import check_workers, context, start_method
from .pool_transport import LOCAL, pack_state, send, state_key
from .pool_worker import measure, serve

# the former private names of the transport's functions (the tests import them from here)
from .pool_transport import pack_tensor as _pack_tensor, recv as _recv  # noqa: F401
from .pool_transport import send as _send, unpack_tensor as _unpack_tensor  # noqa: F401

__all__ = ["check_workers", "run_with_workers", "start_method", "worker_spec", "measure", "WorkerSpec", "WorkerPool",
           "RemoteAnalyzer", "RemoteTraceback"]

logger = logging.getLogger(__name__)

_DEPTH = 2  # snapshots sent to a worker at a time: it reads the next one while it analyzes the current one


class _Worker:
    """One worker process, the parent's end of its socket, and the snapshots sent to it and not yet answered."""

    def __init__(self, ctx: Any, spec: WorkerSpec, index: int) -> None:
        self.conn, child = ctx.Pipe(duplex=True)
        self.process = ctx.Process(target=serve, args=(child, spec), name=f"spectra-worker-{index}", daemon=True)
        self.process.start()
        child.close()
        self.ready = False
        self.jobs: deque[int] = deque()  # sent, not yet answered


class WorkerPool:
    """Worker processes fed with the snapshots the engine will ask for, in that order.

    Args:
        spec: what every worker needs (see :func:`worker_spec`).
        workers: the number of processes.
        source: the snapshots the engine will ask for, in its order (built lazily, ahead of it).
        method: the start method (default :func:`start_method`).
    """

    def __init__(self, spec: WorkerSpec, workers: int, source: Iterator[LayerState], method: str | None = None):
        self.method = method or start_method()
        self._source: Iterator[LayerState] | None = source
        self._order: deque[tuple[int, tuple[Any, ...]]] = deque()  # built and not yet asked for: (job, key)
        self._jobs: deque[tuple[int, Any]] = deque()  # built, not sent: (job, payload)
        self._done: dict[int, Any] = {}
        self._next_job = 0
        self._lookahead = _DEPTH * workers + 2
        self._current: tuple[Any, dict[str, tuple[Any, ...]]] | None = None
        self.counts = {"workers": 0, "here": 0}  # snapshots analyzed by the workers / in this process
        ctx = context(self.method, [serve.__module__])  # a forkserver preloads the worker's module
        self._workers = [_Worker(ctx, spec, i) for i in range(workers)]

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close(abort=exc[0] is not None)

    # ---------------------------------------------------------------- feeding
    def _build(self) -> bool:
        """Pack the next snapshot of the source as a job; False when the source is exhausted."""
        st = None if self._source is None else next(self._source, None)
        if st is None:
            self._source = None
            return False
        job, self._next_job = self._next_job, self._next_job + 1
        self._order.append((job, state_key(st)))
        try:
            self._jobs.append((job, pack_state(st)))
        except Exception:  # e.g. a strided numpy view: the parent analyzes it
            self._done[job] = LOCAL
        finally:
            st.release()
        return True

    def _fill(self) -> None:
        """Build ahead up to the lookahead, and keep every worker's next snapshot on its way."""
        sent = sum(len(w.jobs) for w in self._workers)
        while len(self._jobs) + sent < self._lookahead and self._build():
            pass
        for depth in range(1, _DEPTH + 1):  # one each first, then the second ones
            for w in self._workers:
                if w.ready and len(w.jobs) < depth and self._jobs:
                    job, payload = self._jobs.popleft()
                    try:
                        send(w.conn, (job, payload))
                        w.jobs.append(job)
                    except OSError:  # the worker is gone (_receive says so)
                        self._done[job] = LOCAL
                        w.ready = False
                    except Exception:  # something in the snapshot does not pickle
                        self._done[job] = LOCAL

    def _receive(self) -> None:
        """Wait for a message from any worker, or for one to exit."""
        if not self._workers:
            raise _NoWorkers
        ready = wait([w.conn for w in self._workers] + [w.process.sentinel for w in self._workers])
        for w in list(self._workers):
            if w.conn in ready:
                try:
                    kind, job, value = w.conn.recv()
                except (EOFError, OSError):
                    self._lost(w, "")
                    continue
                if kind == "ready":
                    w.ready = True
                elif kind == "init-error":
                    self._lost(w, f"could not create the analyzers ({value})")
                else:
                    self._done[job] = value
                    w.jobs.remove(job)
            elif w.process.sentinel in ready:
                self._lost(w, "")

    def _lost(self, w: _Worker, why: str) -> None:
        """Say that ``w`` is gone (``why``, else its exit code) and give its snapshots to this process."""
        if not why:
            w.process.join(timeout=5)
            why = f"exited with code {w.process.exitcode}"
        warnings.warn(f"a spectra worker process {why}; its snapshots are analyzed in this process",
                      RuntimeWarning, stacklevel=2)
        for job in w.jobs:
            self._done[job] = LOCAL
        self._workers.remove(w)
        w.conn.close()

    # ---------------------------------------------------------------- answering the engine
    def outcomes(self, st: LayerState, analyzers: Sequence[Analyzer]) -> dict[str, tuple[Any, ...]]:
        """Each analyzer's outcome on the engine's snapshot ``st`` (analyzed here when no worker took it)."""
        if self._current is not None and self._current[0] is st:
            return self._current[1]
        out = self._result(state_key(st))
        if out is None or out == LOCAL:
            out = measure(st, analyzers)
            self.counts["here"] += 1
        else:
            self.counts["workers"] += 1
        self._current = (st, out)
        return out

    def _take(self, key: tuple[Any, ...]) -> int | None:
        """The job of the engine's next snapshot (jobs built before it are ones the engine skipped)."""
        while True:
            for i, (job, k) in enumerate(self._order):
                if k == key:
                    for _ in range(i):
                        self._done.pop(self._order.popleft()[0], None)
                    self._order.popleft()
                    return job
            if not self._build():
                return None  # not a snapshot built ahead: the parent analyzes it

    def _result(self, key: tuple[Any, ...]) -> Any:
        job = self._take(key)
        if job is None:
            return None
        try:
            while job not in self._done:
                self._fill()
                if job not in self._done:
                    self._receive()
        except _NoWorkers:
            return None
        self._fill()
        return self._done.pop(job)

    # ---------------------------------------------------------------- shutting down
    def close(self, *, abort: bool = False) -> None:
        """Stop the workers (``abort``, or still busy with a snapshot nobody will ask for: at once)."""
        for w in self._workers:
            if abort or w.jobs:
                w.process.terminate()
            else:
                try:
                    send(w.conn, None)
                except OSError:
                    pass
        for w in self._workers:
            w.process.join(timeout=5)
            if w.process.is_alive():  # pragma: no cover - a worker stuck in LAPACK
                w.process.kill()
                w.process.join()
            w.conn.close()
        self._workers = []
        logger.debug("spectra.analyze (%s workers): %d snapshots analyzed by the workers, %d in this process",
                     self.method, self.counts["workers"], self.counts["here"])


class _NoWorkers(Exception):
    """Every worker has exited."""


def _snapshots(pipeline: Any, entries: Sequence[Any], step: int) -> Iterator[LayerState]:
    """The snapshots the engine will ask for, in its order (an entry that fails here is left to the engine)."""
    for entry in entries:
        try:
            item: dict[str, Any] = {}
            if pipeline.deltas is not None:
                try:
                    item = pipeline.deltas.item(entry)
                except Exception:
                    item = {}
            states = pipeline.states(entry, step, item)
        except Exception:
            continue
        for st in states:
            delta = delta_state(st) if pipeline.deltas is not None and st.has("update") else None
            yield st  # released once packed; the delta snapshot holds its own reference to ΔW
            if delta is not None:
                yield delta


def run_with_workers(pipeline: Any, step: int, analyzers: Sequence[Analyzer], workers: int, *,
                     method: str | None = None) -> list[Record]:
    """``pipeline.run(step, analyzers)`` with the analyzers in ``workers`` processes (see the module docstring).

    Falls back to ``pipeline.run`` in this process when there is at most one layer view to analyze, or with a
    ``RuntimeWarning`` when a worker could not create the analyzers or read the parameters.
    """
    entries = pipeline.local_entries()
    n = min(workers, sum(max(1, len(e.view_names)) for e in entries))
    if n <= 1 or not analyzers:
        return pipeline.run(step, analyzers)
    spec, why = worker_spec(pipeline, analyzers, n)
    if spec is None:
        warnings.warn(f"spectra.analyze: workers={workers} analyzes in this process instead: {why}", RuntimeWarning,
                      stacklevel=3)
        return pipeline.run(step, analyzers)
    with WorkerPool(spec, n, _snapshots(pipeline, entries, step), method) as pool:
        group: list[Analyzer] = list(analyzers)
        return pipeline.run(step, [RemoteAnalyzer(a, pool, group) for a in analyzers])
