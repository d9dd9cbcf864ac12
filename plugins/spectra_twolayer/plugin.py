"""Entry-point module of the bundled paper plugin (``[project.entry-points.spectra] twolayer``).

Registers the experiment ``twolayer`` (run with ``spectra reproduce`` or
``spectra.experiments.run("twolayer", preset=...)``) and the paper-specific analyzers ``twolayer_readout`` and
``twolayer_sim``. Importing this module is cheap: the runner is imported when the experiment runs.
"""

from __future__ import annotations

from typing import Any, Callable

from spectra import hookimpl

__all__ = ["spectra_register_experiments", "spectra_register_analyzers", "run_twolayer"]


def run_twolayer(**kwargs: Any) -> Any:
    """Run the two-layer reproduction; see :func:`spectra_twolayer.runner.run_twolayer`."""
    from .runner import run_twolayer as _run

    return _run(**kwargs)


@hookimpl
def spectra_register_experiments(register: Callable[[str, Callable[..., Any]], None]) -> None:
    register("twolayer", run_twolayer)


@hookimpl
def spectra_register_analyzers(register: Callable[[type], None]) -> None:
    from .metrics import ReadoutAnalyzer, TeacherSimAnalyzer

    register(ReadoutAnalyzer)
    register(TeacherSimAnalyzer)
