"""Resolve analyzers and run them over layer snapshots; the one error policy of every driver.

Failures never stop training unless asked to: an exception from an analyzer becomes one ``failed`` row
(:meth:`spectra.table.schema.Record.failed`), a call of the ``spectra_analyzer_error`` hook, and, under the
default ``on_error="warn"``, one warning per (analyzer, layer, view). :class:`ErrorPolicy` is the single place
that decides between raising, warning once per key, and staying silent, for analyzers, captures, sinks and
distributed gathers alike.
"""

from __future__ import annotations

import logging
import warnings
from concurrent.futures import Future
from time import perf_counter
from typing import Any, Callable, Hashable, Iterable, Mapping, Sequence

from ..analyzers.base import Analyzer, Measurement
from ..snapshot import DecompositionPlan, LayerState
from ..table.schema import STATUSES, Record

__all__ = ["ErrorPolicy", "ON_ERROR", "LOOKAHEAD", "resolve_analyzers", "run_analyzers", "run_states",
           "runtime_needs"]

logger = logging.getLogger(__name__)

ON_ERROR = ("warn", "raise", "ignore")

#: how many snapshots past the current one have their decompositions queued (with an executor): enough that the
#: threads never wait for the analyzers of the current one; at most LOOKAHEAD + 1 snapshots hold decompositions
LOOKAHEAD = 2


class ErrorPolicy:
    """What to do when something fails: ``"raise"`` it, ``"warn"`` once per key, or ``"ignore"`` it.

    ``KeyboardInterrupt`` and ``SystemExit`` always propagate: the user asked to stop.

    Args:
        mode: one of :data:`ON_ERROR`.

    Raises:
        ValueError: an unknown mode.
    """

    def __init__(self, mode: str = "warn") -> None:
        if mode not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {mode!r}")
        self.mode = mode
        self._warned: set[Hashable] = set()

    def __repr__(self) -> str:
        return f"ErrorPolicy({self.mode!r})"

    @property
    def raises(self) -> bool:
        """Whether failures are re-raised."""
        return self.mode == "raise"

    def handle(self, exc: BaseException, *, key: Hashable, message: str | None = None, stacklevel: int = 3) -> None:
        """Apply the policy to ``exc``.

        Args:
            exc: the failure.
            key: warnings are issued once per key (use a key with the step in it to warn at every step).
            message: the warning's text (default: ``"spectra: <exc!r>"``).
            stacklevel: passed to :func:`warnings.warn`.

        Raises:
            BaseException: ``exc`` itself when the mode is ``"raise"`` (or it is an interrupt).
        """
        if isinstance(exc, (KeyboardInterrupt, SystemExit)) or self.mode == "raise":
            raise exc
        if self.mode == "warn" and key not in self._warned:
            self._warned.add(key)
            warnings.warn(message or f"spectra: {exc!r}", RuntimeWarning, stacklevel=stacklevel)


def resolve_analyzers(
    specs: Iterable[Any],
    registry: Mapping[str, type],
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[Analyzer]:
    """Turn names / instances into analyzer instances, validating eagerly.

    Raises:
        ValueError: an unknown name (the message lists the registered ones), options for an analyzer not in
            use, or an analyzer listed twice.
        TypeError: an analyzer class passed where an instance or a name is expected, or another object.
    """
    if isinstance(specs, (str, Analyzer)):
        specs = [specs]
    options = {k: dict(v) for k, v in (options or {}).items()}
    out: list[Analyzer] = []
    for spec in specs:
        if isinstance(spec, str):
            if spec not in registry:
                raise ValueError(
                    f"unknown analyzer {spec!r}; registered analyzers: {', '.join(sorted(registry)) or 'none'}"
                )
            cls = registry[spec]
            opts = options.pop(spec, {})
            try:
                out.append(cls(**opts))
            except TypeError as exc:
                allowed = cls.option_names() if hasattr(cls, "option_names") else []
                unknown = sorted(set(opts) - set(allowed))
                if not unknown:
                    raise
                raise TypeError(f"analyzer {spec!r} got unknown option(s) {unknown}; it accepts: "
                                f"{', '.join(allowed) or 'none'}") from exc
        elif isinstance(spec, type) and issubclass(spec, Analyzer):
            raise TypeError(
                f"got the analyzer class {spec.__name__}; pass an instance ({spec.__name__}()) or its "
                f"registered name {spec.name!r}"
            )
        elif isinstance(spec, Analyzer):
            out.append(spec)
        else:
            raise TypeError(
                f"analyzers must be registered names or Analyzer instances, got {type(spec).__name__}: {spec!r}"
            )
    if options:
        instances = sorted(set(options) & {a.name for a in out})
        if instances:
            raise ValueError(
                f"analyzer_options given for {instances}, passed as instance(s): an instance takes its options in "
                f"its constructor (e.g. {type(next(a for a in out if a.name == instances[0])).__name__}(...)), "
                "or pass the analyzer by name"
            )
        raise ValueError(
            f"analyzer_options given for analyzer(s) not in use: {sorted(options)}; in use: "
            f"{[a.name for a in out]}"
        )
    names = [a.name for a in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"analyzer(s) listed twice: {dup}")
    return out


def _check_measurement(m: Any, analyzer: Analyzer) -> Measurement:
    if not isinstance(m, Measurement):
        raise TypeError(f"analyzer {analyzer.name!r} yielded {type(m).__name__}, expected Measurement")
    if m.status not in STATUSES:
        raise ValueError(f"analyzer {analyzer.name!r} yielded status {m.status!r}; allowed: {STATUSES}")
    return m


def runtime_needs(an: Analyzer) -> frozenset[str]:
    """What must be present for the analyzer to run: its ``needs`` less its ``optional_needs`` and ``grad``.

    ``grad`` is always optional (frozen or gradient-free steps still have an update). An analyzer that can do
    without an update declares it in ``optional_needs`` (e.g. ``vectors`` with ``matrices=("weight",
    "update")``): it then runs at step 0 and offline on the weights alone, while the drivers still copy
    W_{t−1} for it on due steps (:func:`~spectra.pipeline.capture.needs_of`). Everything else in ``needs``
    (``weight``, ``update``) is required.
    """
    needs = set(getattr(an, "needs", {"weight"}))
    needs -= set(getattr(an, "optional_needs", ()))
    needs.discard("grad")  # gradient-based metrics are emitted only when a gradient exists
    return frozenset(needs)


def run_analyzers(states: Sequence[LayerState], analyzers: Sequence[Analyzer], **options: Any) -> list[Record]:
    """:func:`run_states` (same arguments), its records in one list: each snapshot's, in order."""
    return [r for rows in run_states(states, analyzers, **options) for r in rows]


def run_states(
    states: Sequence[LayerState],
    analyzers: Sequence[Analyzer],
    *,
    run: str,
    policy: ErrorPolicy,
    hook: Any = None,
    tags: Mapping[str, Any] | None = None,
    profile: Any = None,
    executor: Any = None,
    release: bool = False,
    done: Callable[[int, list[Record]], None] | None = None,
) -> list[list[Record]]:
    """Run each analyzer on each snapshot; the records of each snapshot apart (``out[i]`` are ``states[i]``'s).

    An analyzer whose required needs (:func:`runtime_needs`) the snapshot cannot meet (no update at step 0) is
    silently not run. Any exception from an analyzer becomes one ``failed`` row, a call of the
    ``spectra_analyzer_error`` hook, and goes through ``policy`` (keyed by analyzer, layer and view).

    Before a snapshot's analyzers run, its decompositions are computed from every runnable analyzer's requests
    (one :class:`~spectra.snapshot.DecompositionPlan` per snapshot). With an ``executor`` (a thread pool), the
    matrices of a snapshot are decomposed in parallel threads (the LAPACK kernels release the GIL), and the next
    :data:`LOOKAHEAD` snapshots' decompositions are queued behind this one's, so they run while this one's
    analyzers do, and each analyzer runs as soon as the kinds it asked for are decomposed (the ESD's W_t while
    the alignment's other matrices are still being decomposed); the records, their order and their values are
    the same as without one.

    Args:
        states: the snapshots, in the order their records come out.
        analyzers: the analyzers, in the order their records come out for each snapshot.
        run: the ``run`` column.
        policy: what to do with a failure.
        hook: the plugin manager's hook relay (``spectra_analyzer_error``).
        tags: extra columns of every record.
        profile: an object with ``add(stage, analyzer, layer, view, seconds)`` (e.g.
            :class:`spectra.pipeline.profile.Profile`) that receives the time of each snapshot's decompositions
            (``"decompose"``) and of each analyzer call (``"analyzer"``).
        executor: a thread pool for the decompositions (``None``: all in this thread), or a
            :class:`~spectra.pipeline.torch_team.TorchTeam` (its ``wait`` then runs queued tasks on this thread).
        release: release each snapshot (:meth:`LayerState.release`) as soon as its analyzers ran (and every one
            left when an exception ends the run), so that a step's decompositions never pile up: a driver that
            passes a whole step's snapshots in one call then holds at most LOOKAHEAD + 1 snapshots'
            decompositions.
        done: called with ``(i, rows)`` as soon as snapshot ``i``'s analyzers have run (e.g. to keep the rows
            of a run that an exception ends, or to advance a progress bar).
    """
    tags = dict(tags or {})
    out: list[list[Record]] = []
    planned = [(st, [an for an in analyzers if all(st.has(k) for k in runtime_needs(an))]) for st in states]
    # snapshot -> its decomposition tasks by kind (started ahead of its turn) and the kinds each analyzer asked for
    pending: dict[int, tuple[dict[str, Future], Mapping[str, frozenset[str] | None]]] = {}
    try:
        for i, (st, runnable) in enumerate(planned):
            t0 = perf_counter()
            if executor is None:  # this snapshot's decompositions, here and now
                futures, asked = _start_decompositions(planned, i, None)
            else:  # queue the next ones behind it (errors surface at the analyzer)
                for j in range(i, min(i + 1 + LOOKAHEAD, len(planned))):
                    if j not in pending:
                        pending[j] = _start_decompositions(planned, j, executor)
                futures, asked = pending.pop(i)
            waited = perf_counter() - t0
            rows: list[Record] = []
            timed: list[tuple[str, float]] = []
            for an in runnable:  # each analyzer as soon as the kinds it asked for are decomposed
                t1 = perf_counter()
                for future in _needed(an, asked, futures):
                    _wait(executor, future, futures)
                t2 = perf_counter()
                rows.extend(_run_one(st, an, run=run, policy=policy, hook=hook, tags=tags))
                waited += t2 - t1
                timed.append((an.name, perf_counter() - t2))
            t3 = perf_counter()
            for future in futures.values():  # kinds no analyzer asked for by name: done before the release
                _wait(executor, future, futures)
            if profile is not None:
                profile.add("decompose", "", st.layer, st.view, waited + perf_counter() - t3)
                for name, seconds in timed:
                    profile.add("analyzer", name, st.layer, st.view, seconds)
            out.append(rows)
            if release:
                st.release()
            if done is not None:
                done(i, rows)
    finally:
        for futures, _ in pending.values():  # an exception ended the run: let the started tasks finish first
            for future in futures.values():
                _wait(executor, future, futures)
        if release:
            for st in states[len(out):]:
                st.release()
    return out


def _needed(an: Analyzer, asked: Mapping[str, frozenset[str] | None], futures: Mapping[str, Future]
            ) -> list[Future]:
    """The decomposition tasks ``an`` waits for: those of the kinds its ``requests`` named when the plan was
    made (:attr:`DecompositionPlan.asked`; all of them for an analyzer without the method, or whose method
    raised). A kind it reads without asking is still safe: the snapshot's per-kind lock makes it wait for that
    kind's task."""
    kinds = asked.get(an.name)
    return [future for kind, future in futures.items() if kinds is None or kind in kinds]


def _wait(executor: Any, future: Future, among: Mapping[str, Future]) -> None:
    """Wait for a decomposition task. An executor whose threads include this one (a
    :class:`~spectra.pipeline.torch_team.TorchTeam`) has this thread run queued tasks meanwhile, the snapshot's
    own (``among``) first, from the last queued: its other threads take them from the first."""
    wait = getattr(executor, "wait", None)
    if wait is not None:
        wait(future, among=among.values())
    else:
        future.result()


def _start_decompositions(planned: Sequence[tuple[LayerState, list[Analyzer]]], i: int,
                          executor: Any) -> tuple[dict[str, Future], Mapping[str, frozenset[str] | None]]:
    """Plan snapshot ``i``'s decompositions and start them (one task per matrix); without an executor run them
    now. Returns the futures to wait for, by kind (none when they ran here or ``i`` is past the end), and the
    kinds each analyzer asked for."""
    if i >= len(planned):
        return {}, {}
    st, runnable = planned[i]
    # one decomposition per matrix, by the cheapest exact route serving every analyzer (tasks never raise)
    plan = DecompositionPlan.collect(runnable, st)
    tasks = st.prefetch_tasks(plan)
    if executor is None:
        for task in tasks.values():
            task()
        return {}, plan.asked
    return {kind: executor.submit(task) for kind, task in tasks.items()}, plan.asked


def _run_one(st: LayerState, an: Analyzer, *, run: str, policy: ErrorPolicy, hook: Any,
             tags: Mapping[str, Any]) -> list[Record]:
    """One analyzer on one snapshot: its records, or the failed row (after the hook and the policy)."""
    try:
        produced = [_check_measurement(m, an) for m in an.analyze(st)]
    except Exception as exc:
        msg = f"{type(exc).__name__}: {exc}"
        if hook is not None and not policy.raises:
            try:
                hook.spectra_analyzer_error(analyzer=an, layer=st.layer, error=exc)
            except Exception as hook_exc:  # an observer must not break the loop either
                logger.warning("spectra_analyzer_error hook raised: %r", hook_exc)
        policy.handle(
            exc, key=(an.name, st.layer, st.view),
            message=f"spectra: analyzer {an.name!r} failed on layer {st.layer!r} (view {st.view!r}) at "
                    f"step {st.step}: {msg}",
        )
        return [Record.failed(run=run, step=st.step, layer=st.layer, view=st.view, analyzer=an.name,
                              message=msg, tags=tags)]
    return [
        Record(run, st.step, st.layer, st.view, m.matrix, an.name, m.metric, float(m.value),
               None if m.index is None else int(m.index), m.status, m.message, tags)
        for m in produced
    ]
