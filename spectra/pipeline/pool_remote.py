"""Stand-ins for the analyzers in the parent's engine, whose measurements come from a worker process.

The parent runs :meth:`Pipeline.run <spectra.pipeline.pipeline.Pipeline.run>` exactly as with ``workers=1``
(records, ``on_error``, the ``spectra_analyzer_error`` hook, progress, sinks, gather); only the analyzers it is
handed are :class:`RemoteAnalyzer` stand-ins, whose attributes are the analyzer's. A worker's exception is
raised again in the parent with the worker's traceback as its cause (:class:`RemoteTraceback`).
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

from ..analyzers.base import Analyzer
from ..snapshot import LayerState
from .pool_transport import LOCAL

__all__ = ["Outcomes", "RemoteAnalyzer", "RemoteTraceback"]


class Outcomes(Protocol):
    """Where the stand-ins get each analyzer's outcome on a snapshot: the :class:`~spectra.pipeline.pool.WorkerPool`."""

    def outcomes(self, st: LayerState, analyzers: Sequence[Analyzer]) -> dict[str, tuple[Any, ...]]:
        """Each analyzer's ``("ok", measurements)``, ``("err", exception[, traceback text])`` on ``st``."""
        ...


class RemoteAnalyzer(Analyzer):
    """Stands in for one analyzer in the parent's engine: its measurements come from the pool.

    It declares the analyzer's name and needs but no requests (the decompositions happen in the worker), and
    forwards every other attribute to the analyzer.

    Args:
        analyzer: the analyzer it stands in for.
        pool: where the outcomes come from.
        group: every analyzer of the step, to analyze a snapshot in the parent when needed.
    """

    def __init__(self, analyzer: Analyzer, pool: Outcomes, group: list[Analyzer]) -> None:
        self.analyzer = analyzer
        self.name = analyzer.name  # type: ignore[misc]
        self.needs = analyzer.needs  # type: ignore[misc]
        self.optional_needs = getattr(analyzer, "optional_needs", frozenset())  # type: ignore[misc]
        self.schedule = None
        self._pool = pool
        self._group = group

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
        kind, value, *tb = self._pool.outcomes(layer, self._group).get(self.name, (LOCAL, None))
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
