"""Hook specifications: every extension point of spectra.

All hooks carry the ``spectra_`` prefix and belong to the pluggy project ``"spectra"``. Plugins implement them
with :data:`spectra.hookimpl`. Built-in analyzers, layer rules and sinks are plugins registered through these
very hooks (see :mod:`spectra.plugins`), so a third-party plugin has exactly the same power as the built-ins.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .analyzers.base import Analyzer
    from .table.schema import Record

PROJECT_NAME = "spectra"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def spectra_register_analyzers(register: Callable[["type[Analyzer]"], None]) -> None:
    """Offer analyzer classes.

    Called once, when a plugin manager is built. Call ``register(AnalyzerClass)`` for each analyzer the plugin
    provides; the class's ``name`` attribute is the name users pass to ``analyzers=``. Registering two classes
    under one name is an error that names both plugins.
    """


@hookspec
def spectra_register_experiments(register: Callable[[str, Callable[..., Any]], None]) -> None:
    """Offer experiments runnable with ``spectra.experiments.run(name, ...)`` and ``spectra reproduce``.

    Called once, when a plugin manager is built. Call ``register(name, runner)``; ``runner(**config)`` runs the
    experiment. The bundled paper plugin registers ``"twolayer"``.
    """


@hookspec(firstresult=True)
def spectra_include_param(name: str, param: "torch.Tensor", module: "torch.nn.Module | None") -> bool | None:
    """Decide whether a parameter is analyzed.

    Called for every parameter during layer discovery (offline analysis and monitor attach). Return ``True``
    to analyze, ``False`` to skip, or ``None`` to defer to the next plugin. The first non-``None`` answer wins;
    the built-in rule is ``trylast`` (matrices of ≥ 2 dims are analyzed, 1-D parameters skipped).
    """


@hookspec(firstresult=True)
def spectra_as_matrices(
    name: str, param: "torch.Tensor", module: "torch.nn.Module | None"
) -> "Sequence[tuple[str, Any]] | None":
    """View a parameter as one or more matrices.

    Called for every included parameter. Return a list of ``(view_name, matrix)`` pairs, where ``matrix`` is a
    2-D tensor, or a :class:`spectra.layers.MatrixView` for pooled stacks (Conv slices); or ``None`` to defer.
    The first non-``None`` answer wins; the built-in rules (Linear, Conv, Embedding, fused attention, RNN
    gates, transposed Conv1D, generic ≥ 2-D) are ``trylast``. Views must not copy more than needed: they are
    recomputed from the live parameter whenever it is analyzed.
    """


@hookspec
def spectra_monitor_attached(monitor: Any) -> None:
    """Called after a :class:`spectra.SpectraMonitor` has registered its optimizer hooks."""


@hookspec
def spectra_monitor_detached(monitor: Any) -> None:
    """Called once after a monitor removed its hooks (``detach()`` is idempotent; this fires only once)."""


@hookspec(
    warn_on_impl_args={
        "log_dir": DeprecationWarning(
            "the log_dir argument of spectra_log_records is deprecated and will be removed: a sink that writes "
            "files takes its directory in its constructor (see spectra.sinks.StreamingSink)"
        )
    }
)
def spectra_log_records(records: "Sequence[Record]", step: int, run: str, log_dir: Any) -> None:
    """Sink: receive every batch of records as soon as it is made.

    Called by the pipeline after each analyzed step of a monitor, and once by ``spectra.analyze``; under
    ``distributed="shard"`` each rank's sinks see that rank's share. Exceptions in a sink follow the driver's
    ``on_error`` policy (a warning by default); they never stop training unless asked to.

    ``log_dir`` is deprecated: it still carries the driver's ``log_dir`` (or ``None``) for sinks written
    against the first release, and implementations that ask for it get a ``DeprecationWarning``. New sinks
    implement ``spectra_log_records(records, step, run)`` and take their own settings in their constructor.
    """


@hookspec
def spectra_analyzer_error(analyzer: Any, layer: str, error: BaseException) -> None:
    """Observe an analyzer failure on one layer (the record with ``status="failed"`` is still written)."""
