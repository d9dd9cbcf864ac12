"""The analyzer contract.

An analyzer is a small class over :mod:`spectra.functional`. It declares which matrices it needs
(``weight``, ``update``, ``grad``) so the monitor clones only those, optionally carries its own schedule, and
turns one :class:`~spectra.snapshot.LayerState` into :class:`Measurement` values. It never sees the live
parameters: the snapshot holds copies, and the decompositions in it are shared between analyzers.

Optionally it also says, before any analyzer runs, what it will ask of each matrix (:meth:`Analyzer.requests`:
all eigenvalues, the top-k singular triplets), so that the snapshot computes each matrix's decompositions once,
by the cheapest route that serves every analyzer (:class:`~spectra.snapshot.DecompositionPlan`). Declaring
nothing is always correct: the results are the same, only the work may be repeated or less well planned.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Iterable

if TYPE_CHECKING:  # pragma: no cover
    from ..schedules import Schedule
    from ..snapshot import LayerState, Request

__all__ = ["Analyzer", "Measurement", "NEEDS"]

NEEDS = frozenset({"weight", "update", "grad"})


@dataclass(frozen=True, slots=True)
class Measurement:
    """One value produced by an analyzer for one layer view (the monitor adds run/step/layer/view)."""

    metric: str
    value: float
    matrix: str = "weight"
    index: int | None = None
    status: str = "ok"
    message: str = ""


class Analyzer:
    """Base class for analyzers.

    Subclasses set ``name`` (the registry key), ``needs`` (a subset of ``{"weight", "update", "grad"}``) and
    implement :meth:`analyze`. Constructor keyword arguments are the analyzer's options; :meth:`config`
    returns them for the results' ``attrs``.

    Attributes:
        name: registry name users pass in ``analyzers=``.
        needs: the matrices this analyzer reads. Analyzers that need ``update`` or ``grad`` are not run at
            step 0 (there is no update yet).
        schedule: optional own schedule; when set, the analyzer runs on the steps it selects instead of the
            monitor's schedule.
    """

    name: ClassVar[str] = ""
    needs: ClassVar[frozenset[str]] = frozenset({"weight"})
    #: needs the analyzer can do without: it runs when the rest of ``needs`` is present (e.g. at step 0 and
    #: offline for ``optional_needs = frozenset({"update"})``), and the drivers still copy them on due steps
    #: (``grad`` is always optional). Default: none.
    optional_needs: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, *, schedule: "Schedule | None" = None, **options: Any) -> None:
        if options:
            raise TypeError(
                f"{type(self).__name__} got unknown option(s) {sorted(options)}; it accepts: "
                f"{', '.join(self.option_names()) or 'none'}"
            )
        self.schedule = schedule

    @classmethod
    def option_names(cls) -> list[str]:
        """Names of the keyword options the constructor accepts (for error messages)."""
        import inspect

        sig = inspect.signature(cls.__init__)
        return [p for p in sig.parameters if p not in ("self", "options", "kwargs")]

    def config(self) -> dict[str, Any]:
        """The options in force, recorded in ``Results.attrs["analyzers"][name]``."""
        return {}

    def requests(self, layer: "LayerState") -> Iterable["Request"]:
        """What :meth:`analyze` will ask of ``layer``, declared before any analyzer runs (optional).

        Return :class:`~spectra.snapshot.Request` values, e.g. ``Request("weight", evals=True)`` for
        ``layer.evals("weight")`` or ``Request("update", k=10)`` for ``layer.svd("update", 10)``. The default
        asks nothing. Only a cost hint: asking for more or less than :meth:`analyze` uses never changes a
        result.
        """
        return ()

    def analyze(self, layer: "LayerState") -> Iterable[Measurement]:  # pragma: no cover - abstract
        """Measure one layer view. Raise on failure: the caller turns exceptions into ``failed`` rows."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config()})"
