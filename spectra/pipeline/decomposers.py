"""Which threads decompose a due step's matrices: torch's OpenMP team, a pool of threads, or the caller alone."""

from __future__ import annotations

from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any, Callable, TypeVar

from .torch_team import TorchTeam, torch_openmp
from .worker_threads import auto_decompose_threads, torch_threads_of_caller

__all__ = ["Decomposers"]

T = TypeVar("T")


class Decomposers:
    """The decomposition threads of one pipeline (``Settings.decompose_threads``), made on first use.

    In the training thread, when torch's intra-op threads are libgomp's and there are at least as many as the
    decomposition threads wanted, the step runs on torch's own team (:mod:`spectra.pipeline.torch_team`):
    training waits anyway, and its workers would otherwise spin beside the decompositions. Otherwise (in the
    background worker, whose team would be threads of its own; with fewer torch threads; on other platforms)
    a thread pool decomposes, and with one thread the caller does.

    Args:
        wanted: ``Settings.decompose_threads`` (``None``: :func:`auto_decompose_threads`).
        background: whether the pipeline's due steps may go to the background worker (``Settings.background``;
            it sets the default thread count).
        torch_threads: the training thread's torch intra-op threads when the pipeline was made.
    """

    def __init__(self, wanted: int | None, *, background: bool, torch_threads: int) -> None:
        self.threads = wanted if wanted is not None else auto_decompose_threads(background=background,
                                                                                torch_threads=torch_threads)
        self.background = background
        self.pool: ThreadPoolExecutor | None = None
        self._team: TorchTeam | None = None

    def run(self, body: Callable[[Executor | TorchTeam | None], T], *, worker: bool = False) -> T:
        """``body(executor)``: with the team (inside its parallel region), the pool, or ``None`` (one thread).

        Args:
            body: what to run; it submits the decompositions to its argument.
            worker: the caller is the background worker thread (never on torch's team).
        """
        if self.threads < 2:
            return body(None)
        team = None if worker else self.team()
        if team is not None:
            return team.run(body)
        return body(self.executor())

    def team(self) -> TorchTeam | None:
        """Torch's OpenMP team when it serves the calling (training) thread, else ``None``."""
        if torch_threads_of_caller() < self.threads:
            return None
        if self._team is None:
            lib = torch_openmp()
            if lib is None:
                return None
            self._team = TorchTeam(lib, self.threads)
        return self._team

    def executor(self) -> ThreadPoolExecutor:
        """The thread pool (started on first use; :meth:`run` asks for it only with two threads or more)."""
        if self.pool is None:
            self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="spectra-decompose")
        return self.pool

    def close(self) -> None:
        """Stop the pool's threads (torch's are torch's); the next step that needs them starts new ones."""
        if self.pool is not None:
            self.pool.shutdown(wait=True)
            self.pool = None
