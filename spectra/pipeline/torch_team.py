"""Decompose a synchronous due step's matrices on torch's own OpenMP threads instead of a second set of threads.

After ``optimizer.step()`` torch's OpenMP workers (libgomp, in torch's Linux wheels) spin before they sleep
(``GOMP_SPINCOUNT``, 300,000 spins by default). A due step that starts its decompositions on other threads right
then shares the cores with a spinning worker: on two cores the worker burned ~10 ms of CPU per paper-net due step,
on the core the second decomposition thread needed. A parallel region of that same libgomp, started from the
training thread, hands the decompositions to those very workers instead: the training thread is thread 0 of the
team (it runs the step's analyzers, in order, and when it waits for a decomposition it runs queued ones itself),
the other members take decompositions from a queue until the step is done. Nothing spins beside the work, no
thread is added to the process, and torch's team is the one its next parallel region finds, as after any of
torch's own.

The numbers do not change: the same tasks run the same kernels (one thread's BLAS each), only on other threads.
Where torch's OpenMP runtime cannot be found (another platform or build), the pipeline keeps its thread pool.
"""

from __future__ import annotations

import collections
import ctypes
import os
import sys
import threading
from concurrent.futures import Future
from functools import lru_cache
from typing import Any, Callable, Container, Iterable, TypeVar

__all__ = ["TorchTeam", "torch_openmp"]

T = TypeVar("T")

_REGION_BODY = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


@lru_cache(maxsize=None)
def torch_openmp() -> Any:
    """The libgomp that runs torch's intra-op threads in this process (a :class:`ctypes.CDLL`), or ``None``.

    Linux only; torch's parallel backend must be OpenMP and a libgomp must be loaded: the one in torch's own
    ``lib`` folder (its wheels bundle it), else the only one in the process (a build linked against the
    system's). Several and none of them torch's: ``None`` (whose team would it be?). Cached: the answer is a
    constant of the loaded libraries (no mutable state is kept).
    """
    torch = sys.modules.get("torch")
    if torch is None or not sys.platform.startswith("linux"):
        return None
    try:
        if "OpenMP" not in torch.__config__.parallel_info().split("parallel backend:", 1)[-1].splitlines()[0]:
            return None
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            loaded = {line.split(None, 5)[-1].strip() for line in f if "libgomp" in line}
        loaded = {path for path in loaded if os.path.basename(path).startswith("libgomp")}
        own = os.path.realpath(os.path.join(os.path.dirname(torch.__file__), "lib"))
        ours = [path for path in loaded if os.path.dirname(os.path.realpath(path)) == own]
        paths = ours or (sorted(loaded) if len(loaded) == 1 else [])
        if not paths:
            return None
        lib = ctypes.CDLL(paths[0], mode=getattr(os, "RTLD_NOLOAD", 0) | ctypes.RTLD_GLOBAL)
        lib.GOMP_parallel.argtypes = [_REGION_BODY, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
        lib.GOMP_parallel.restype = None
        lib.omp_get_thread_num.restype = ctypes.c_int
        lib.omp_get_thread_num.argtypes = []
        lib.omp_in_parallel.restype = ctypes.c_int
        lib.omp_in_parallel.argtypes = []
    except Exception:  # another build: no OpenMP backend, no libgomp, or a symbol missing
        return None
    return lib


class TorchTeam:
    """An executor whose threads are the calling thread's OpenMP team, for the length of :meth:`run`.

    ``run(body)`` opens a parallel region of ``threads`` threads; thread 0 (the caller) runs ``body(self)``,
    which :meth:`submit`\\ s tasks and :meth:`wait`\\ s for their futures (running queued tasks meanwhile); the
    other threads run submitted tasks until ``body`` has returned and the queue is empty. Outside a region a
    task runs when it is submitted.

    Args:
        lib: :func:`torch_openmp`'s library.
        threads: the team's size (at most torch's own threads, so that the team is torch's existing one).
    """

    def __init__(self, lib: Any, threads: int) -> None:
        self.lib = lib
        self.threads = int(threads)
        self._cv = threading.Condition()
        self._queue: collections.deque[tuple[Callable[[], Any], Future]] = collections.deque()
        self._active = False
        self._finished = False
        self._body: Callable[[Any], Any] | None = None
        self._outcome: tuple[bool, Any] = (True, None)
        self._region = _REGION_BODY(self._member)  # kept alive as long as the team

    def __repr__(self) -> str:
        return f"TorchTeam(threads={self.threads})"

    def run(self, body: Callable[["TorchTeam"], T]) -> T:
        """``body(self)`` on this thread, with the team's other threads taking the tasks it submits.

        Raises:
            BaseException: whatever ``body`` raised (the same object, with its traceback), once the tasks it
                submitted have run.
        """
        if self._active or self.lib.omp_in_parallel():  # a region inside a region would be a team of one
            return body(self)
        self._body, self._finished, self._outcome = body, False, (True, None)
        self._active = True
        try:
            self.lib.GOMP_parallel(self._region, None, self.threads, 0)
        finally:
            self._active = False
            self._body = None
            while self._run_one():  # nothing is left behind, whatever happened in the region
                pass
        ok, value = self._outcome
        self._outcome = (True, None)
        if not ok:
            raise value
        return value

    def submit(self, fn: Callable[[], Any]) -> Future:
        """Queue ``fn`` for the team (run it now outside a region); its :class:`~concurrent.futures.Future`."""
        future: Future = Future()
        with self._cv:
            self._queue.append((fn, future))
            self._cv.notify()
        if not self._active:
            self._run_one()
        return future

    def wait(self, future: Future, among: Iterable[Future] = ()) -> Any:
        """``future.result()``, running queued tasks on this thread until ``future`` is done or is running
        elsewhere: the last queued of ``among`` first (the other members take tasks from the front: the caller
        and they then meet in the middle, and the first, largest task is theirs), then any, from the front."""
        prefer = set(among)
        while not future.done() and self._run_one(prefer):
            pass
        return future.result()

    def _run_one(self, prefer: Container[Future] = ()) -> bool:
        """Run one queued task here: the last queued of ``prefer``, else the first; ``False`` if none is queued."""
        with self._cv:
            if not self._queue:
                return False
            for index in range(len(self._queue) - 1, -1, -1):
                if self._queue[index][1] in prefer:
                    fn, future = self._queue[index]
                    del self._queue[index]
                    break
            else:
                fn, future = self._queue.popleft()
        _settle(fn, future)
        return True

    def _member(self, _data: Any) -> None:
        """Each team member's part of the region (called by libgomp: nothing may escape to C)."""
        try:
            if self.lib.omp_get_thread_num() == 0:
                try:
                    self._outcome = (True, self._body(self))  # type: ignore[misc]
                except BaseException as exc:  # re-raised by run() on the calling thread
                    self._outcome = (False, exc)
                finally:
                    with self._cv:
                        self._finished = True
                        self._cv.notify_all()
                return
            while True:
                with self._cv:
                    while not self._queue and not self._finished:
                        self._cv.wait()
                    if not self._queue:
                        return
                    fn, future = self._queue.popleft()
                _settle(fn, future)
        except BaseException:  # pragma: no cover - a failure of the queue itself; the tasks' go to their futures
            with self._cv:
                self._finished = True
                self._cv.notify_all()


def _settle(fn: Callable[[], Any], future: Future) -> None:
    if not future.set_running_or_notify_cancel():
        return
    try:
        future.set_result(fn())
    except BaseException as exc:
        future.set_exception(exc)
