"""Offline analysis in worker processes: ``spectra.analyze(..., workers=N)``.

What runs where:

* The parent runs :meth:`Pipeline.run <spectra.pipeline.pipeline.Pipeline.run>` exactly as with ``workers=1``:
  the snapshots, the engine (records, ``on_error``, the ``spectra_analyzer_error`` hook), the progress bar, the
  sinks and, under ``torch.distributed``, the gather. Only the analyzers it is handed are stand-ins
  (:class:`RemoteAnalyzer`) whose measurements come from a worker.
* Ahead of the engine, the parent builds the same snapshots (a few at a time: at most ``2N + 2`` wait or run)
  and keeps two on their way to each worker: its matrices as numpy arrays with their strides (a dense
  parameter's own memory, sent out of band straight to the socket; bfloat16 as its bits) and the snapshot's
  other fields. A worker's reader thread takes the next snapshot while the current one is analyzed.
* A worker sets its torch and BLAS threads (``blas_threads``, else cores // N) before anything else, creates
  the analyzers once, by name and options, from a fresh plugin manager (the built-ins and the ``spectra``
  entry points; an analyzer instance the user passed is unpickled), and runs them on each snapshot as the
  engine does: one decomposition plan per snapshot, then each analyzer. It sends back each analyzer's
  measurements, or its exception.

So numbers, rows, statuses, messages, warnings, hook calls and raises are those of ``workers=1``, made by the
same code in the same order (the hook sees the stand-in, whose attributes are the analyzer's). A snapshot a
worker cannot take (a matrix or an exception that does not pickle, a worker that died) is analyzed in the
parent. Analyzers no worker can create (registered in-process, or an instance of another class than the one
registered under its name), layers analyzed off the CPU (``workers=1`` computes their eigenvalues on the device)
and ``backend="torch"`` (torch's CPU results depend on its thread count) make the whole call run in this
process, with a ``RuntimeWarning`` saying why.

Start method (measured in benchmarks/results/analyze.md, two workers on 2 cores): ``"fork"`` on Linux before
Python 3.12 (~0.2 s a call); ``"forkserver"`` on Linux from 3.12, where ``fork`` is deprecated in a process
with threads and torch always runs some (its server imports torch and the maths once, ~2-3 s, then ~0.2 s a
call); ``"spawn"`` elsewhere (every worker imports torch, ~5-7 s). A forked worker sets its torch threads before
any torch call: after the parent used torch's OpenMP pool, a forked child's first parallel torch op hangs
otherwise. Below a few hundred milliseconds of maths (a small CNN), workers cost more than they save.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing as mp
import os
import pickle
import queue
import signal
import sys
import threading
import traceback
import warnings
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Any, Iterator, Sequence

from ..analyzers.base import Analyzer
from ..plugins import DEFAULT_PLUGINS, DISABLE_ENV, analyzer_registry, get_plugin_manager
from ..snapshot import DecompositionPlan, LayerState
from ..table.schema import Record
from .deltas import delta_state
from .engine import resolve_analyzers, runtime_needs

__all__ = ["check_workers", "run_with_workers", "start_method", "worker_spec", "measure", "WorkerSpec", "WorkerPool",
           "RemoteAnalyzer", "RemoteTraceback"]

logger = logging.getLogger(__name__)

_LOCAL = "local"  # a job the parent analyzes itself
# what the analyzers import on their first layer (a forkserver imports it once for every worker)
_MATHS = ("scipy.linalg", "scipy.integrate", "scipy.optimize", "scipy.special")
_RAW = hasattr(os, "readv")  # arrays go through the socket unframed, without Connection's intermediate copies


def check_workers(workers: Any) -> int:
    """``workers`` when it is a positive integer.

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


def _context(method: str) -> Any:
    ctx = mp.get_context(method)
    if method == "forkserver":  # the server imports once what every worker needs (no effect once it runs)
        from importlib.metadata import entry_points

        plugins = {spec.partition(":")[0] for spec in DEFAULT_PLUGINS.values()}
        plugins |= {ep.value.partition(":")[0] for ep in entry_points(group="spectra")}
        ctx.set_forkserver_preload(["__main__", __name__, *sorted(plugins), *_MATHS])
    return ctx


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


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


def _qualname(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def worker_spec(pipeline: Any, analyzers: Sequence[Analyzer], workers: int) -> tuple[WorkerSpec | None, str]:
    """The spec that lets a worker re-create ``analyzers``, or ``(None, why it cannot)``."""
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
            return None, (f"analyzer {an.name!r} ({_qualname(an)}) is not what the built-in and installed "
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
                      _qualname(an)))
    threads = settings.blas_threads or max(1, _cores() // workers)
    spec = WorkerSpec(tuple(items), threads, os.environ.get(DISABLE_ENV))
    try:
        pickle.dumps(spec)
    except Exception as exc:
        return None, f"the analyzer options cannot be sent to a worker process ({type(exc).__name__}: {exc})"
    return spec, ""


# ------------------------------------------------------------------------------------------ snapshots on the wire
def _pack_tensor(t: Any) -> tuple[Any, ...]:
    """A CPU tensor as ``("torch", array, dtype, shape, strides, order)``; a numpy array as ``("numpy", array)``."""
    import numpy as np

    if isinstance(t, np.ndarray):
        if not (t.flags.c_contiguous or t.flags.f_contiguous):
            raise ValueError("a non-contiguous numpy view is analyzed in the parent")
        return ("numpy", t)
    import torch

    t = t.detach()
    order = sorted(range(t.dim()), key=lambda d: (-t.stride(d), d))
    dense = t.permute(order)
    if not dense.is_contiguous():  # a strided view (e.g. columns of a fused matrix): its values, rebuilt there
        dense, order = t.contiguous(), list(range(t.dim()))
    try:
        data = dense.numpy()
    except TypeError:  # bfloat16 and other dtypes numpy lacks: their bits
        data = dense.view({1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]).numpy()
    return ("torch", data, str(t.dtype).removeprefix("torch."), tuple(t.shape), tuple(t.stride()), tuple(order))


def _unpack_tensor(packed: tuple[Any, ...]) -> Any:
    if packed[0] == "numpy":
        return packed[1]
    import torch

    _, data, dtype, shape, strides, order = packed
    x = torch.from_numpy(data)
    if str(x.dtype).removeprefix("torch.") != dtype:
        x = x.view(getattr(torch, dtype))
    x = x.permute([order.index(d) for d in range(len(order))])
    if tuple(x.stride()) != strides:  # the same strides as in the parent: the same BLAS calls downstream
        x = torch.empty_strided(shape, strides, dtype=x.dtype).copy_(x)
    return x


def _pack(st: LayerState) -> dict[str, Any]:
    """Every field of the snapshot (its matrices packed), none of its cached decompositions."""
    skip = ("tensors", "_cache")
    out = {f.name: getattr(st, f.name) for f in dataclasses.fields(st) if f.init and f.name not in skip}
    out["context"] = dict(out.get("context") or {})
    out["tensors"] = {k: _pack_tensor(t) for k, t in st.tensors.items() if t is not None}
    return out


def _unpack(payload: dict[str, Any]) -> LayerState:
    tensors = {k: _unpack_tensor(v) for k, v in payload.pop("tensors").items()}
    return LayerState(tensors=tensors, **payload)


def _key(st: LayerState) -> tuple[Any, ...]:
    return (st.layer, st.view, st.step, st.context.get("matrix"), tuple(sorted(k for k in st.tensors if st.has(k))))


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


def _send(conn: Any, obj: Any) -> None:
    """Send ``obj`` with its arrays out of band (pickle protocol 5): a header, then each array's memory as it is."""
    buffers: list[pickle.PickleBuffer] = []
    head = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    views = [b.raw() for b in buffers]
    conn.send_bytes(pickle.dumps((head, [v.nbytes for v in views])))
    for v in views:
        if _RAW:  # straight from the array to the socket
            while v:
                v = v[os.write(conn.fileno(), v):]
        else:  # pragma: no cover - not POSIX
            conn.send_bytes(v)


def _recv(conn: Any) -> Any:
    """What :func:`_send` sent; each array gets a writable buffer of its own, filled straight from the socket."""
    head, sizes = pickle.loads(conn.recv_bytes())
    buffers = []
    for n in sizes:
        buf = bytearray(n)
        if _RAW:
            view = memoryview(buf)
            while view:
                got = os.readv(conn.fileno(), [view])
                if not got:
                    raise EOFError
                view = view[got:]
        else:  # pragma: no cover - not POSIX
            conn.recv_bytes_into(buf)
        buffers.append(buf)
    return pickle.loads(head, buffers=buffers)


# ------------------------------------------------------------------------------------------ the worker process
def _make_analyzers(spec: WorkerSpec) -> list[Analyzer]:
    if spec.disabled is None:
        os.environ.pop(DISABLE_ENV, None)
    else:
        os.environ[DISABLE_ENV] = spec.disabled
    registry = analyzer_registry(get_plugin_manager())
    out = []
    for name, options, blob, qualname in spec.analyzers:
        an = pickle.loads(blob) if blob is not None else resolve_analyzers([name], registry, {name: options})[0]
        if _qualname(an) != qualname:
            raise RuntimeError(f"analyzer {name!r} is {_qualname(an)} in a worker process, {qualname} in the parent")
        out.append(an)
    return out


def _portable(outcomes: dict[str, tuple[str, Any]]) -> Any:
    """``outcomes`` with each exception's traceback text, or ``_LOCAL`` when one would not survive pickling."""
    out: dict[str, tuple[Any, ...]] = {}
    try:
        for name, (kind, value) in outcomes.items():
            if kind == "err":
                back = pickle.loads(pickle.dumps(value))
                if type(back) is not type(value) or str(back) != str(value):
                    return _LOCAL
                out[name] = (kind, value, "".join(traceback.format_exception(value)))
            else:
                out[name] = (kind, value)
        pickle.dumps(out)
    except Exception:
        return _LOCAL
    return out


def _read_jobs(conn: Any, inbox: "queue.SimpleQueue[Any]") -> None:  # pragma: no cover - in the worker
    """The worker's reader thread: the next snapshot arrives while the current one is analyzed."""
    parent = mp.parent_process()
    watch = [conn] + ([parent.sentinel] if parent is not None else [])
    try:
        while conn in wait(watch):  # else the parent's sentinel: it died
            msg = _recv(conn)
            if msg is None:
                break
            inbox.put(msg)
    except (EOFError, OSError):
        pass
    inbox.put(None)  # stop after the snapshots already read


def _serve(conn: Any, spec: WorkerSpec) -> None:  # pragma: no cover - runs in the worker (tests cover it)
    """A worker's main: threads first, analyzers once, then one snapshot at a time until told to stop."""
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
                st = _unpack(payload)
            except Exception:
                conn.send(("done", job, _LOCAL))
                continue
            try:
                result = _portable(measure(st, analyzers))
            finally:
                st.release()
            conn.send(("done", job, result))


# ------------------------------------------------------------------------------------------ the parent's side
_DEPTH = 2  # snapshots sent to a worker at a time: it reads the next one while it analyzes the current one


class _Worker:
    """One worker process, the parent's end of its socket, and the snapshots sent to it and not yet answered."""

    def __init__(self, ctx: Any, spec: WorkerSpec, index: int) -> None:
        self.conn, child = ctx.Pipe(duplex=True)
        self.process = ctx.Process(target=_serve, args=(child, spec), name=f"spectra-worker-{index}", daemon=True)
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
        ctx = _context(self.method)
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
        self._order.append((job, _key(st)))
        try:
            self._jobs.append((job, _pack(st)))
        except Exception:  # e.g. a strided numpy view: the parent analyzes it
            self._done[job] = _LOCAL
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
                        _send(w.conn, (job, payload))
                        w.jobs.append(job)
                    except OSError:  # the worker is gone (_receive says so)
                        self._done[job] = _LOCAL
                        w.ready = False
                    except Exception:  # something in the snapshot does not pickle
                        self._done[job] = _LOCAL

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
        if not why:
            w.process.join(timeout=5)
            why = f"exited with code {w.process.exitcode}"
        warnings.warn(f"a spectra worker process {why}; its snapshots are analyzed in this process",
                      RuntimeWarning, stacklevel=2)
        for job in w.jobs:
            self._done[job] = _LOCAL
        self._workers.remove(w)
        w.conn.close()

    # ---------------------------------------------------------------- answering the engine
    def outcomes(self, st: LayerState, analyzers: Sequence[Analyzer]) -> dict[str, tuple[Any, ...]]:
        """Each analyzer's outcome on the engine's snapshot ``st`` (analyzed here when no worker took it)."""
        if self._current is not None and self._current[0] is st:
            return self._current[1]
        out = self._result(_key(st))
        if out is None or out == _LOCAL:
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
                    _send(w.conn, None)
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


class RemoteAnalyzer(Analyzer):
    """Stands in for one analyzer in the parent's engine: its measurements come from the pool.

    It declares the analyzer's name and needs but no requests (the decompositions happen in the worker), and
    forwards every other attribute to the analyzer.
    """

    def __init__(self, analyzer: Analyzer, pool: WorkerPool, group: list[Analyzer]) -> None:
        self.analyzer = analyzer
        self.name = analyzer.name  # type: ignore[misc]
        self.needs = analyzer.needs  # type: ignore[misc]
        self.optional_needs = getattr(analyzer, "optional_needs", frozenset())  # type: ignore[misc]
        self.schedule = None
        self._pool = pool
        self._group = group  # every analyzer of the step, to analyze a snapshot in the parent when needed

    def __getattr__(self, name: str) -> Any:
        if name == "analyzer":
            raise AttributeError(name)
        return getattr(self.analyzer, name)

    def __repr__(self) -> str:
        return repr(self.analyzer)

    def config(self) -> dict[str, Any]:
        """The analyzer's options."""
        return self.analyzer.config()

    def analyze(self, layer: LayerState) -> list[Any]:
        """The worker's measurements of ``layer``, or its exception raised again (the worker's traceback as its
        cause)."""
        kind, value, *tb = self._pool.outcomes(layer, self._group).get(self.name, (_LOCAL, None))
        if kind == "ok":
            return value
        if kind == "err":
            if tb:
                raise value from RemoteTraceback(tb[0])
            raise value
        return list(self.analyzer.analyze(layer))


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker process (the cause of the exception raised again)."""

    def __str__(self) -> str:
        return f"\n\n(in a spectra worker process)\n{self.args[0]}"


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
