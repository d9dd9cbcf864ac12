"""Run analyzers over layer snapshots, turning failures into rows (shared by ``analyze`` and the monitor)."""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any, Iterable, Mapping, Sequence

from .analyzers.base import Analyzer, Measurement
from .results import STATUSES, Record
from .snapshot import LayerState

__all__ = ["ON_ERROR", "run_analyzers", "resolve_analyzers"]

logger = logging.getLogger(__name__)
ON_ERROR = ("warn", "raise", "ignore")


def resolve_analyzers(
    specs: Iterable[Any],
    registry: Mapping[str, type],
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[Analyzer]:
    """Turn names / instances into analyzer instances, validating eagerly.

    Raises:
        ValueError: an unknown name (the message lists the registered ones) or a duplicate.
        TypeError: an analyzer class passed where an instance or a name is expected, or another object.
    """
    if isinstance(specs, (str, Analyzer)):
        specs = [specs]
    options = dict(options or {})
    out: list[Analyzer] = []
    for spec in specs:
        if isinstance(spec, str):
            if spec not in registry:
                raise ValueError(
                    f"unknown analyzer {spec!r}; registered analyzers: {', '.join(sorted(registry)) or 'none'}"
                )
            out.append(registry[spec](**dict(options.pop(spec, {}))))
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


def run_analyzers(
    states: Sequence[LayerState],
    analyzers: Sequence[Analyzer],
    *,
    run: str,
    hook: Any = None,
    on_error: str = "warn",
    tags: Mapping[str, Any] | None = None,
    warned: set | None = None,
    progress: Any = None,
) -> list[Record]:
    """Run each analyzer on each snapshot; return the records.

    An analyzer whose needs the snapshot cannot meet (no update at step 0) is silently not run. Any exception
    from an analyzer becomes one ``failed`` row (``metric="error"``), a warning once per (analyzer, layer)
    when ``on_error="warn"``, and a call of the ``spectra_analyzer_error`` hook. ``KeyboardInterrupt`` and
    ``SystemExit`` are never swallowed: the user asked to stop.
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    tags = dict(tags or {})
    warned = warned if warned is not None else set()
    records: list[Record] = []
    for st in states:
        for an in analyzers:
            if not all(st.has(k) for k in _runtime_needs(an)):
                continue
            produced: list[Measurement] = []
            try:
                for m in an.analyze(st):
                    produced.append(_check_measurement(m, an))
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:
                if on_error == "raise":
                    raise
                msg = f"{type(exc).__name__}: {exc}"
                if hook is not None:
                    try:
                        hook.spectra_analyzer_error(analyzer=an, layer=st.layer, error=exc)
                    except Exception as hook_exc:  # an observer must not break the loop either
                        logger.warning("spectra_analyzer_error hook raised: %r", hook_exc)
                key = (an.name, st.layer, st.view)
                if on_error == "warn" and key not in warned:
                    warned.add(key)
                    warnings.warn(
                        f"spectra: analyzer {an.name!r} failed on layer {st.layer!r} (view {st.view!r}) at step "
                        f"{st.step}: {msg}",
                        RuntimeWarning,
                        stacklevel=2,
                    )
                records.append(
                    Record(run, st.step, st.layer, st.view, "weight", an.name, "error", math.nan, None,
                           "failed", msg, tags)
                )
                produced = []
            for m in produced:
                records.append(
                    Record(run, st.step, st.layer, st.view, m.matrix, an.name, m.metric, float(m.value), m.index,
                           m.status, m.message, tags)
                )
        if progress is not None:
            progress.update(1)
    return records


def _runtime_needs(an: Analyzer) -> frozenset[str]:
    """What must be present for the analyzer to run. ``grad`` is optional (frozen or grad-free steps still
    have an update); ``weight`` and ``update`` are required when declared."""
    needs = set(getattr(an, "needs", {"weight"}))
    needs.discard("grad")  # gradient-based metrics are emitted only when a gradient exists
    return frozenset(needs)
