"""spectra: spectral diagnostics of PyTorch models.

Watch the eigenvalue spectrum of every weight matrix while a model trains, fit its heavy tail, see how
optimizer updates line up with the weights' singular vectors, and get everything as tidy pandas tables.

Heavy submodules (pandas, scipy, matplotlib) are imported lazily: ``import spectra`` costs little beyond torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from .hookspecs import hookimpl  # noqa: F401 (re-exported)

# ``analyze`` is both a submodule and the function users call: bind the function eagerly so that importing
# the submodule later cannot shadow it (the module's own imports are light: numpy, no pandas/scipy).
from .analyze import analyze  # noqa: E402, F401 (re-exported)

from .version import __version__  # noqa: E402, F401 (re-exported)

_EXPORTS = {
    "SpectraMonitor": "monitor",
    "Results": "table.results",
    "Record": "table.schema",
    "Settings": "pipeline.settings",
    "Pipeline": "pipeline.pipeline",
    "compare_weightwatcher": "compat.weightwatcher",
    "get_plugin_manager": "plugins",
    "Analyzer": "analyzers.base",
    "Measurement": "analyzers.base",
    "BackgroundError": "pipeline.background",
    "every": "schedules",
    "at": "schedules",
    "logspaced": "schedules",
}
_SUBMODULES = (
    "functional", "plot", "experiments", "schedules", "layers", "plugins", "analyzers", "table", "pipeline", "sinks",
    "progress", "threads", "results", "distributed", "scalar_sinks", "integrations",
)

__all__ = sorted(["hookimpl", "analyze", "__version__", *_EXPORTS, *_SUBMODULES])


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        mod = importlib.import_module(f".{_EXPORTS[name]}", __name__)
        return getattr(mod, name)
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'spectra' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
