"""Cost awareness: estimate, over the first steps, how much a training driver's schedule slows training.

:class:`CostWatch` measures two things while it watches, then warns at most once and stops measuring:

* the plain step: the time between two consecutive optimizer pre-step hooks (the user's whole iteration:
  data, forward, backward, step) less what the monitor itself spent in its hooks in between; the median of
  the first few such intervals (the very first one, warm-up, is left out);
* the first due step after those: what it cost the training thread (copies, and synchronously the analysis
  and the sinks) and, with ``background=True``, how long the worker took to analyze it.

Overhead = extra seconds per due step / training seconds between due steps, where the due steps are
``gap`` steps apart (the distance from the previous due step). Synchronously the extra is the training
thread's whole cost. In the background it is the copies, plus the part of the worker's analysis that does not
fit in the ``gap`` plain steps (training then waits for room in the queue); competition for CPU cores is not
counted, so the estimate is a lower bound there. Above ``warn_overhead`` the driver warns once, with the
numbers and what to change (docs/design.md, "Background analysis and cost awareness").

While it watches, every pre-step hook reads the clock once; after the verdict the driver drops the watch, and
a step with nothing due costs one attribute test more than before.
"""

from __future__ import annotations

import math
import statistics
import warnings
from time import perf_counter
from typing import Any

from .worker_threads import usable_cores

__all__ = ["CostWatch", "estimate_overhead"]

MIN_SAMPLES = 3  # plain-step intervals needed before a due step is judged
MAX_SAMPLES = 16


def estimate_overhead(*, plain_s: float, gap: int, training_s: float, worker_s: float | None = None) -> float:
    """The fraction by which analyzing every ``gap`` steps slows training.

    Args:
        plain_s: seconds of one training step without the monitor.
        gap: steps from one due step to the next.
        training_s: seconds a due step costs the training thread.
        worker_s: with a background worker, its seconds per due step (what exceeds the ``gap`` steps' time
            makes training wait); ``None`` synchronously.

    Example:
        >>> estimate_overhead(plain_s=0.1, gap=10, training_s=0.5)
        0.5
        >>> estimate_overhead(plain_s=0.1, gap=10, training_s=0.0, worker_s=1.5)
        0.5
    """
    window = max(gap, 1) * plain_s
    if window <= 0:
        return math.inf
    waits = 0.0 if worker_s is None else max(0.0, worker_s - window)
    return (training_s + waits) / window


def _every_needed(threshold: float, **kw: Any) -> int | None:
    """The smallest ``every=`` whose estimated overhead is at most ``threshold`` (``None`` above 10⁹)."""
    lo, hi = 1, 1
    while estimate_overhead(gap=hi, **kw) > threshold:
        lo, hi = hi + 1, hi * 2
        if hi > 10**9:
            return None
    while lo < hi:
        mid = (lo + hi) // 2
        if estimate_overhead(gap=mid, **kw) > threshold:
            lo = mid + 1
        else:
            hi = mid
    return hi


class CostWatch:
    """Watches the first steps of a training driver and warns once if its schedule is too costly.

    Args:
        threshold: ``Settings.warn_overhead`` (0.5: warn above 50%).
        background: the analysis runs in a worker thread (:mod:`spectra.pipeline.background`).
        profile: the pipeline's :class:`~spectra.pipeline.profile.Profile` (to name the costliest analyzer).
        analyzers: the analyzers' names, for the advice.

    The driver calls :meth:`tick` in every pre-step hook, :meth:`spent` with every second its hooks spend on a
    due step, :meth:`due_step` at the end of a due step's post-step hook, and (background) hands
    :meth:`analysis_done` to the worker. :attr:`done` turns true once the verdict is in.
    """

    def __init__(self, threshold: float, *, background: bool, profile: Any = None,
                 analyzers: tuple[str, ...] = ()) -> None:
        self.threshold = threshold
        self.background = background
        self.no_free_core = False  # background=True, but the step ran in the training thread (in_training_thread)
        self.profile = profile
        self.analyzers = analyzers
        self.done = False
        self._ticks = 0
        self._last: float | None = None
        self._first_step: int | None = None
        self._hooks_s = 0.0  # the monitor's own seconds in the current interval
        self._due_s = 0.0  # the monitor's own seconds in the current due step
        self._samples: list[float] = []
        self._last_due: int | None = None
        self._judged: tuple[int, int, float] | None = None  # (step, gap, training seconds)
        self._worker_s: dict[int, float] = {}

    def __repr__(self) -> str:
        return f"CostWatch(threshold={self.threshold}, samples={len(self._samples)}, done={self.done})"

    def tick(self, step: int) -> None:
        """A pre-step hook: close the previous interval (and, background, judge once the worker is done).

        Once :data:`MAX_SAMPLES` intervals are in, the clock is no longer read.
        """
        if self._first_step is None:
            self._first_step = step
        if len(self._samples) < MAX_SAMPLES:
            now = perf_counter()
            if self._last is not None and self._ticks >= 2:
                self._samples.append(max(now - self._last - self._hooks_s, 0.0))
            self._ticks += 1
            self._last = now
            self._hooks_s = 0.0
        if self._judged is not None:
            self._verdict()

    def spent(self, seconds: float) -> None:
        """Seconds the driver's hooks just spent on a due step, on the training thread."""
        self._hooks_s += seconds
        self._due_s += seconds

    def due_step(self, step: int) -> None:
        """The end of a due step's post-step hook: judge it if enough plain steps were seen."""
        start = self._first_step if self._first_step is not None else step
        gap = step - (self._last_due if self._last_due is not None else start - 1)
        self._last_due = step
        training_s, self._due_s = self._due_s, 0.0
        if self._judged is None and len(self._samples) >= MIN_SAMPLES:
            self._judged = (step, max(gap, 1), training_s)
            self._verdict()

    def in_training_thread(self) -> None:
        """``background=True`` is analyzing the coming due step in the training thread (no core is free for the
        worker): judge it as a synchronous step, and advise freeing a core."""
        self.background = False
        self.no_free_core = True

    def in_worker(self) -> None:
        """``background=True`` hands the coming due step to the worker."""
        self.background = True
        self.no_free_core = False

    def analysis_done(self, step: int, seconds: float) -> None:
        """From the worker: its seconds for one step (the latest few steps are kept, for the step judged)."""
        if not self.done:
            self._worker_s[step] = seconds
            if len(self._worker_s) > 8:
                self._worker_s.pop(min(self._worker_s))

    # ------------------------------------------------------------------------------------------ verdict
    def _verdict(self) -> None:
        step, gap, training_s = self._judged  # type: ignore[misc]
        worker_s = None
        if self.background:
            worker_s = self._worker_s.get(step)
            if worker_s is None:
                return  # the worker is not done with it yet
        self.done = True
        plain = statistics.median(self._samples)
        over = estimate_overhead(plain_s=plain, gap=gap, training_s=training_s, worker_s=worker_s)
        if over > self.threshold:
            warnings.warn(self._message(over, step=step, gap=gap, plain=plain, training_s=training_s,
                                        worker_s=worker_s), RuntimeWarning, stacklevel=4)

    def _costliest(self) -> str:
        if self.profile is None or len(self.analyzers) < 2:
            return ""
        df = self.profile.to_pandas()
        df = df[df["stage"] == "analyzer"]
        if df.empty:
            return ""
        by = df.groupby("name")["seconds"].sum().sort_values(ascending=False)
        return f"; the costliest is {by.index[0]!r}, {100 * by.iloc[0] / by.sum():.0f}% of the analyzers' time"

    def _message(self, over: float, *, step: int, gap: int, plain: float, training_s: float,
                 worker_s: float | None) -> str:
        kw = dict(plain_s=plain, training_s=training_s, worker_s=worker_s)
        every = _every_needed(self.threshold, **kw)
        less_often = f"analyze less often (every={every} or more keeps it under {self.threshold:.0%})" if every \
            else "analyze less often (every=)"
        fewer = (f"run fewer analyzers (now {', '.join(self.analyzers)}{self._costliest()})"
                 if len(self.analyzers) > 1 else "run a cheaper analyzer configuration")
        head = (f"spectra: the monitor is estimated to slow training by {over:.0%} (warn_overhead="
                f"{self.threshold:.0%}), measured at step {step}: one due step every "
                f"{'step' if gap == 1 else f'{gap} steps'}, a plain step takes {plain:.3g} s, ")
        if worker_s is None:
            body = f"a due step adds {training_s:.3g} s of analysis in the training loop"
            if self.no_free_core:
                cores = usable_cores()
                free = (f"or leave a core free for the background worker (torch's threads use all {cores} "
                        f"cores, so background=True analyzes in the training thread; torch.set_num_threads("
                        f"{cores - 1}) frees one)") if cores > 1 else \
                    "(with one core, background=True analyzes in the training thread: no worker can run beside it)"
                advice = f"{less_often}, {fewer}, {free}"
            else:
                advice = f"{less_often}, {fewer}, or analyze in a worker thread (background=True)"
        else:
            window = gap * plain
            waits = (f"more than the {window:.3g} s of training between due steps, so training waits for it"
                     if worker_s > window else f"within the {window:.3g} s of training between due steps")
            body = (f"the background worker needs {worker_s:.3g} s per due step, {waits}, and the copies for it "
                    f"take {training_s:.3g} s on the training thread (the worker's competition for CPU cores is "
                    "not counted)")
            advice = f"{less_often} or {fewer}"
        return (f"{head}{body}. To make it cheaper: {advice}. monitor.profile() shows where the time goes; "
                "warn_overhead=None turns this warning off.")
