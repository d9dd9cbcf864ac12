"""Where a training driver's due steps are analyzed: in the training thread, or in one worker thread.

:class:`StepRunner` takes a due step's copies from the driver and runs the pipeline on them: at once
(synchronous, the default) or, with ``background=True``, in a single worker thread, while training goes on.
Both modes run the same code on the same copies in the same order, so the records (and everything the sinks
and ``log_dir`` receive) are identical; docs/design.md, "Background analysis and cost awareness", has the
whole design. In short:

* **Where.** A worker thread only helps when it has a core of its own. With ``background=True``, a step whose
  tensors are on the CPU while torch's intra-op threads hold every core the process may use is analyzed in
  the training thread instead, on torch's own team, exactly as in the synchronous mode: a worker would share
  the cores with training, which costs more (benchmarks/results/monitor.md). Training on an accelerator, or
  with a core left free, goes to the worker. ``background="always"`` sends every step to the worker. The
  choice is made per due step (:func:`~spectra.pipeline.worker_threads.worker_has_a_core`); before a step
  is analyzed in the training thread, the steps still queued for the worker are finished, so the records stay
  in step order.

* **Copies.** The hooks copy W_{t−1} and G_{t−1} before the step, as always; in the background the post-step
  hook also copies W_t (:func:`~spectra.pipeline.capture.copy_weights`), so the worker never reads a live
  tensor. CUDA copies are taken on the tensors' device; the worker waits on an event recorded after them.
* **Back-pressure.** At most ``background_queue`` steps wait for the worker; a full queue blocks the training
  step until there is room (the wait is in :meth:`monitor.profile() <spectra.SpectraMonitor.profile>` as
  ``queue_wait``). Nothing is ever dropped.
* **Flush points.** :meth:`StepRunner.flush` waits for every queued step; the monitor calls it before its
  results, ``state_dict``, ``load_state_dict``, ``profile`` and ``detach``, and a ``weakref.finalize`` (which
  does not keep the monitor alive) calls :meth:`StepRunner.shutdown` when the monitor is collected and at
  interpreter exit.
* **Errors.** The error policy is the pipeline's, applied in the worker exactly as in the training thread:
  failed rows and (``on_error="warn"``) warnings. What the synchronous mode would have raised into the training
  loop (``on_error="raise"``) is kept and raised at the next hook call or flush, as a :class:`BackgroundError`
  whose ``__cause__`` is the original exception with its traceback (``KeyboardInterrupt``/``SystemExit``
  themselves). A worker that died is noticed at the next due step: the step it was analyzing gets a failed row
  (``analyzer="background"``), the policy is applied, and a new worker analyzes what is still queued.
* **Threads.** OpenBLAS (NumPy's and SciPy's, the analysis's LAPACK) keeps one thread count for the process,
  and once the main thread has set it, a count set from any other thread is silently ignored (measured with
  OpenBLAS 0.3.30 and 0.3.31: the worker's own ``threadpool_limits(1)`` left its ``eigh`` on two threads). So
  the training thread sets ``limit_blas_threads(blas_threads)`` when it starts the worker and restores it when
  the worker stops; torch's own BLAS (MKL, statically linked) is not an OpenBLAS and is not touched, so
  training keeps its threads. The worker pins its own torch intra-op threads (the float64 copies, ΔW) to
  ``blas_threads`` (:func:`pin_torch_threads`), leaving the training thread's and the process default alone.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import warnings
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any, Callable, Sequence

from ..table.schema import Record
from ..threads import limit_blas_threads
from .capture import Copies, copy_weights
from .cost import CostWatch
from .worker_threads import (WORKER_NAME, pin_torch_threads, ready_events, torch_threads_of_caller, usable_cores,
                             worker_has_a_core, yield_to_training)

__all__ = ["StepRunner", "BackgroundError", "pin_torch_threads", "yield_to_training"]

_POLL_S = 0.5  # how often a waiting training thread re-checks that the worker is alive


class BackgroundError(RuntimeError):
    """A step analyzed in the background failed where the training thread would have raised, or the worker
    stopped; ``__cause__`` holds the original exception and its traceback."""


@dataclass
class _Job:
    step: int
    due: Sequence[Any] | None  # None: only failed rows to hand on (a schedule raised)
    copies: Copies
    include: set[int] | None
    failures: list[Record] = field(default_factory=list)
    guard: bool = True  # apply the error policy to what escapes the pipeline (step 0 at attach: no, as before)
    ready: list[tuple[Any, Any]] = field(default_factory=list)  # (device, CUDA event recorded after the copies)


class StepRunner:
    """Runs a driver's due steps through its pipeline, now or in one worker thread, and watches their cost.

    The settings come from ``pipeline.settings``: ``background``, ``background_queue`` (how many steps may wait
    for the worker), ``blas_threads`` (also the worker's torch intra-op threads) and ``warn_overhead`` (a
    :class:`~spectra.pipeline.cost.CostWatch` in :attr:`watch` until its verdict).

    Args:
        pipeline: the driver's :class:`~spectra.pipeline.Pipeline`.
        recorder: the driver's :class:`~spectra.pipeline.recorder.Recorder` (where the records go).

    Raises:
        ValueError: ``background=True`` under ``torch.distributed`` (the worker's collectives could interleave
            with training's).
    """

    def __init__(self, pipeline: Any, recorder: Any) -> None:
        settings = pipeline.settings
        if settings.background and pipeline.plan is not None:
            raise ValueError("background=True cannot be used under torch.distributed (distributed="
                             f"{settings.distributed!r}): the worker's collectives could interleave with "
                             "training's; use background=False there")
        pipeline.blas()  # the one-time import of the due steps' linear algebra: now, not on the first due step
        self.pipeline = pipeline
        self.recorder = recorder
        self.background = bool(settings.background)
        self.always_worker = settings.background == "always"
        self.queue_size = settings.background_queue
        self.threads = settings.blas_threads
        self.watch: CostWatch | None = None
        if settings.warn_overhead is not None:
            self.watch = CostWatch(settings.warn_overhead, background=self.background, profile=pipeline.profile,
                                   analyzers=tuple(a.name for a in pipeline.analyzers))
        self.on_done: Callable[[int, float], None] | None = None  # (step, seconds), after each step's analysis
        if self.watch is not None:
            self.on_done = self.watch.analysis_done
        self.errors: list[tuple[int, BaseException]] = []  # to raise in the training thread, first first
        self._cond = threading.Condition()
        self._jobs: collections.deque[_Job] = collections.deque()
        self._busy: _Job | None = None
        self._thread: threading.Thread | None = None
        self._stop = False
        self._death: tuple[_Job | None, BaseException | None] | None = None
        self._blas_limit: contextlib.ExitStack | None = None  # held from the training thread while a worker runs
        self.steps_in_worker = 0  # background: due steps the worker analyzed, and those the training thread did
        self.steps_in_training = 0

    def __repr__(self) -> str:
        if not self.background:
            return "StepRunner(sync)"
        return (f"StepRunner(background{', always' if self.always_worker else ''}, queue={self.queue_size}, "
                f"waiting={len(self._jobs)}, steps in worker={self.steps_in_worker}, "
                f"in training thread={self.steps_in_training})")

    # ------------------------------------------------------------------------------------------ cost awareness
    def tick(self, step: int) -> None:
        """A pre-step hook while :attr:`watch` is set (the driver tests that, so plain steps stay O(1))."""
        watch = self.watch
        if watch is not None:
            watch.tick(step)
            if watch.done:
                self.watch = self.on_done = None

    def spent(self, stage: str | None, seconds: float) -> None:
        """Seconds the driver's hooks spent on a due step: into the profile (under ``stage``) and the watch."""
        if stage is not None:
            self.pipeline.profile.add(stage, "", "", "", seconds)
        if self.watch is not None:
            self.watch.spent(seconds)

    def before_step(self, step: int, capture: Callable[[], None]) -> bool:
        """A due step's pre-step hook: notice a dead worker, then ``capture()``, timed; its failure goes through
        the error policy (``False`` is returned: the step is not analyzed)."""
        self.check_worker()
        t0 = perf_counter()
        try:
            capture()
            return True
        except Exception as exc:
            self.pipeline.policy.handle(exc, key=("capture", step),
                                        message=f"spectra: could not capture step {step}: {exc!r}")
            return False
        finally:
            self.spent("capture", perf_counter() - t0)

    def after_step(self, step: int, due: Sequence[Any], copies: Copies, *, include: set[int] | None,
                   failures: Sequence[Record] = ()) -> None:
        """A due step's post-step hook: :meth:`submit`, timed for the watch, which may then give its verdict."""
        t0 = perf_counter()
        try:
            self.submit(step, due, copies, include=include, failures=failures)
        finally:
            self.spent(None, perf_counter() - t0)
            watch = self.watch
            if watch is not None:
                watch.due_step(step)
                if watch.done:
                    self.watch = self.on_done = None

    # ------------------------------------------------------------------------------------------ submitting
    def submit(self, step: int, due: Sequence[Any] | None, copies: Copies, *, include: set[int] | None = None,
               failures: Sequence[Record] = (), guard: bool = True) -> None:
        """Analyze one step (``due=None``: only hand ``failures`` on): now, or queued for the worker.

        In the background this copies W_t first and blocks while the queue is full.

        Raises:
            Exception: synchronously, what the step raises under the error policy; in the background, a dead
                worker's failure under ``on_error="raise"`` (see :meth:`check_worker`).
        """
        job = _Job(step, None if due is None else list(due), copies, include, list(failures), guard)
        if not self.background:
            self._execute(job)
            return
        self.check_worker()
        if not self.always_worker and not self._worker_has_a_core(copies, include):
            self.flush(raise_errors=False)  # the worker's queued steps first; a failure there is raised later
            if due is not None:
                self.steps_in_training += 1
            if self.watch is not None:
                self.watch.in_training_thread()
            self._execute(job)
            return
        if due is not None:
            self.steps_in_worker += 1
        if self.watch is not None:
            self.watch.in_worker()
        prof = self.pipeline.profile
        t0 = perf_counter()
        if due is not None:
            copy_weights(copies, self.pipeline.local_entries(), include)
            job.ready = ready_events(copies)
            t1 = perf_counter()
            prof.add("handoff", "", "", "", t1 - t0)
            t0 = t1
        waited = False
        with self._cond:
            self._start_worker()
            while len(self._jobs) >= self.queue_size and self._death is None:
                waited = True
                self._cond.wait(_POLL_S)
                if not self._thread.is_alive() and self._death is None:
                    self._death = (self._busy, None)
            self._jobs.append(job)
            self._cond.notify_all()
        if waited:
            prof.add("queue_wait", "", "", "", perf_counter() - t0)
        if self._death is not None:  # died while we waited: report it now, a new worker takes the queue
            self.check_worker()

    def _worker_has_a_core(self, copies: Copies, include: set[int] | None) -> bool:
        """Whether a worker thread has a core beside training for this step (see the module docstring)."""
        devices = {t.device.type for item in copies.values() for t in item.values()}
        devices.update(e.param.device.type for e in self.pipeline.local_entries()
                       if include is None or id(e.param) in include)
        return worker_has_a_core(torch_threads=torch_threads_of_caller(), cores=usable_cores(), devices=devices)

    def _start_worker(self) -> None:  # with self._cond held
        if self._thread is None or (not self._thread.is_alive() and self._death is None):
            self._new_worker()

    def _new_worker(self) -> None:  # with self._cond held, in the training thread
        if self._blas_limit is None:  # OpenBLAS honours only the main thread's setting (see above)
            stack = contextlib.ExitStack()
            stack.enter_context(limit_blas_threads(self.threads))
            self._blas_limit = stack
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name=WORKER_NAME, daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------------------------------ the work
    def _execute(self, job: _Job, *, worker: bool = False) -> None:
        """What the training thread did after a due step: failed rows of schedules, then the step's analysis.

        Args:
            job: the step.
            worker: the caller is the worker thread (its decompositions go to a pool, not torch's team).
        """
        pipeline, recorder = self.pipeline, self.recorder
        t0 = perf_counter()
        try:
            for _, ev in job.ready:
                ev.synchronize()
            if job.failures:
                pipeline.emit(job.failures, job.step)
                recorder.add(job.failures)
            if job.due is not None:
                if not job.guard:
                    recorder.add(pipeline.run(job.step, job.due, job.copies, include=job.include, worker=worker))
                else:
                    try:
                        recorder.add(pipeline.run(job.step, job.due, job.copies, include=job.include,
                                                  worker=worker))
                    except Exception as exc:
                        pipeline.policy.handle(exc, key=("step", job.step),
                                               message=f"spectra: analysis of step {job.step} failed: {exc!r}")
        finally:
            if job.ready:  # the worker's kernels must be done before the copies' memory is reused
                import torch

                for dev, _ in job.ready:
                    torch.cuda.current_stream(dev).synchronize()
            job.copies.clear()
            done = self.on_done
            if done is not None:
                done(job.step, perf_counter() - t0)

    def _loop(self) -> None:
        pin_torch_threads(self.threads)
        yield_to_training()
        while True:
            with self._cond:
                while not self._jobs and not self._stop:
                    self._cond.wait()
                if not self._jobs:  # stopped and drained
                    return
                job = self._jobs.popleft()
                self._busy = job
                self._cond.notify_all()
            try:
                self._execute(job, worker=True)
            except Exception as exc:  # what the training thread would have raised: raise it there
                with self._cond:
                    self.errors.append((job.step, exc))
            except BaseException as exc:  # the worker stops; the next due step reports it
                with self._cond:
                    self._death = (job, exc)
                    self._busy = None
                    self._cond.notify_all()
                return
            with self._cond:
                self._busy = None
                self._cond.notify_all()

    # ------------------------------------------------------------------------------------------ the training side
    def raise_pending(self) -> None:
        """Raise the first failure the worker kept (once), in the calling (training) thread.

        Raises:
            BackgroundError: chained to the original exception (``KeyboardInterrupt``/``SystemExit`` as such).
        """
        with self._cond:
            if not self.errors:
                return
            step, exc = self.errors.pop(0)
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise exc
        raise BackgroundError(f"spectra: the background analysis of step {step} failed: {exc!r} (raised now, at "
                              "the first hook call or flush after it; the original traceback is above)") from exc

    def check_worker(self) -> None:
        """Notice a worker that died: a failed row for the step it was analyzing, the error policy, a new worker.

        Raises:
            BackgroundError: under ``on_error="raise"`` (``KeyboardInterrupt``/``SystemExit`` re-raised as such).
        """
        if not self.background:
            return
        with self._cond:
            if self._death is None and self._thread is not None and not self._thread.is_alive() and (
                    self._jobs or self._busy is not None):
                self._death = (self._busy, None)
            death, self._death = self._death, None
            if death is None:
                return
            job, cause = death
            self._busy = None
            dead = self._thread
        if dead is not None and dead is not threading.current_thread():
            dead.join()  # it is returning
        with self._cond:
            if self._jobs:
                self._new_worker()  # what is still queued is not lost
            else:
                self._thread = None
        step = None if job is None else job.step
        what = f"step {step}" if step is not None else "a step"
        msg = (f"the background analysis worker stopped while analyzing {what}"
               f"{f' ({cause!r})' if cause is not None else ''}; that step has a failed row, later steps are "
               "analyzed by a new worker")
        if job is not None and job.due is not None:
            settings = self.pipeline.settings
            rows = [Record.failed(run=settings.run, step=job.step, layer="", view="", analyzer="background",
                                  message=msg, tags=settings.tags)]
            self.pipeline.emit(rows, job.step)
            self.recorder.add(rows)
        if isinstance(cause, (KeyboardInterrupt, SystemExit)):
            raise cause
        err = BackgroundError(f"spectra: {msg}")
        err.__cause__ = cause
        self.pipeline.policy.handle(err, key=("background", step), message=f"spectra: {msg}")

    def flush(self, *, raise_errors: bool = True) -> None:
        """Wait until every queued step is analyzed (no-op synchronously, or when called from the worker).

        Raises:
            BackgroundError: ``raise_errors`` and a failure is pending (see :meth:`raise_pending`).
        """
        if not self.background or threading.current_thread() is self._thread:
            return
        while True:
            with self._cond:
                while (self._jobs or self._busy is not None) and self._death is None and self._thread is not None:
                    if not self._thread.is_alive():
                        self._death = (self._busy, None)
                        break
                    self._cond.wait(_POLL_S)
                dead = self._death is not None
            if not dead:
                break
            self.check_worker()  # restarts a worker for what is left, then wait for it too
        if raise_errors:
            self.raise_pending()

    def close(self, *, raise_errors: bool = True) -> None:
        """Flush, then stop the worker and the decomposition threads (a later :meth:`submit` starts new ones).
        Without ``raise_errors``, the failures still pending are warned about instead (they would never be
        reported otherwise).

        Raises:
            BackgroundError: ``raise_errors`` and a failure is pending.
        """
        if not self.background:
            self.pipeline.close_threads()  # a detached monitor holds no threads; the next due step starts them
            return
        try:
            self.flush(raise_errors=raise_errors)
        finally:
            with self._cond:
                self._stop = True
                self._cond.notify_all()
                thread, self._thread = self._thread, None
            if thread is not threading.current_thread():  # the worker has stopped: nothing uses its threads now
                if thread is not None:
                    thread.join()
                self.pipeline.close_threads()
                if self._blas_limit is not None:
                    self._blas_limit.close()
                    self._blas_limit = None
        if not raise_errors:
            with self._cond:
                pending, self.errors = self.errors, []
            for step, exc in pending:
                warnings.warn(f"spectra: the background analysis of step {step} failed and was never reported: "
                              f"{exc!r}", RuntimeWarning, stacklevel=3)

    def shutdown(self) -> None:
        """:meth:`close` without raising, for the monitor's finalizer (collection, interpreter exit)."""
        try:
            self.close(raise_errors=False)
        except Exception as exc:  # a finalizer must not raise
            warnings.warn(f"spectra: flushing the background analysis failed: {exc!r}", RuntimeWarning,
                          stacklevel=2)
