"""The plugin manager: hookspecs → built-in plugins → entry points → ``check_pending()``.

Built-in analyzers, layer rules and sinks are ordinary plugins listed in :data:`DEFAULT_PLUGINS` and
registered exactly as third-party ones are. Third-party plugins are found through the ``spectra`` entry-point
group. ``SPECTRA_DISABLE_PLUGINS`` (comma-separated names) blocks plugins by name, built-ins included.

There is no process-wide plugin manager: each :class:`~spectra.SpectraMonitor` and each ``analyze`` call builds
(or is handed) its own, so tests and users can register throwaway plugins without leaking state.
"""

from __future__ import annotations

import importlib
import logging
import os
from typing import Any, Callable, Iterable

import pluggy

from . import hookspecs
from .hookspecs import PROJECT_NAME

__all__ = [
    "DEFAULT_PLUGINS",
    "DISABLE_ENV",
    "PluginError",
    "get_plugin_manager",
    "analyzer_registry",
    "experiment_registry",
    "plugin_summary",
]

logger = logging.getLogger(__name__)

DISABLE_ENV = "SPECTRA_DISABLE_PLUGINS"

# name -> "module:factory"; the factory is called with no arguments to make the plugin object
DEFAULT_PLUGINS: dict[str, str] = {
    "spectra.layers": "spectra.layers:BuiltinLayerRules",
    "spectra.analyzers.esd": "spectra.analyzers.esd:EsdPlugin",
    "spectra.analyzers.tail": "spectra.analyzers.tail:TailPlugin",
    "spectra.analyzers.alignment": "spectra.analyzers.alignment:AlignmentPlugin",
    "spectra.analyzers.farms": "spectra.analyzers.farms:FarmsPlugin",
    "spectra.analyzers.randomize": "spectra.analyzers.randomize:RandomizePlugin",
    "spectra.analyzers.vectors": "spectra.analyzers.vectors:VectorsPlugin",
}


class PluginError(RuntimeError):
    """A plugin failed to load or to register; the message names the plugin."""


def _disabled() -> set[str]:
    raw = os.environ.get(DISABLE_ENV, "")
    return {x.strip() for x in raw.split(",") if x.strip()}


def _load(spec: str) -> Any:
    module, _, attr = spec.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split(".") if attr else ():
        obj = getattr(obj, part)
    return obj() if isinstance(obj, type) else obj


def get_plugin_manager(
    *,
    entrypoints: bool = True,
    plugins: Iterable[Any] = (),
    builtin_options: dict[str, dict[str, Any]] | None = None,
) -> pluggy.PluginManager:
    """Build a plugin manager with the built-ins, the installed ``spectra`` entry points and extra plugins.

    Args:
        entrypoints: load plugins from the ``spectra`` entry-point group.
        plugins: extra plugin objects (modules or instances) to register after the built-ins.
        builtin_options: constructor keyword arguments for built-in plugin classes, keyed by plugin name
            (e.g. ``{"spectra.layers": {"conv_slices": "separate"}}``).

    Raises:
        PluginError: a plugin fails to import or register (the message names it).
    """
    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    blocked = _disabled()
    for name in blocked:
        pm.set_blocked(name)
    builtin_options = builtin_options or {}
    for name, spec in DEFAULT_PLUGINS.items():
        if name in blocked:
            continue
        try:
            module, _, attr = spec.partition(":")
            factory = getattr(importlib.import_module(module), attr)
            obj = factory(**builtin_options.get(name, {}))
            pm.register(obj, name=name)
        except Exception as exc:  # pragma: no cover - a broken install
            raise PluginError(f"built-in plugin {name!r} failed to load: {exc}") from exc
    if entrypoints:
        _load_entrypoints(pm, blocked)
    for obj in plugins:
        try:
            pm.register(obj)
        except Exception as exc:
            raise PluginError(f"plugin {obj!r} failed to register: {exc}") from exc
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plugin failed validation: {exc}") from exc
    return pm


def _load_entrypoints(pm: pluggy.PluginManager, blocked: set[str]) -> None:
    from importlib.metadata import entry_points

    for ep in entry_points(group=PROJECT_NAME):
        if ep.name in blocked or pm.is_registered(ep.name) or pm.get_plugin(ep.name) is not None:
            continue
        try:
            plugin = ep.load()
        except Exception as exc:
            raise PluginError(
                f"plugin {ep.name!r} ({ep.value}) failed to import: {type(exc).__name__}: {exc}; fix or uninstall "
                f"it, or block it with {DISABLE_ENV}={ep.name}"
            ) from exc
        try:
            pm.register(plugin, name=ep.name)
        except Exception as exc:
            raise PluginError(f"plugin {ep.name!r} ({ep.value}) failed to register: {exc}") from exc


def _collect(pm: pluggy.PluginManager, hook_name: str, what: str) -> dict[str, tuple[Any, str]]:
    found: dict[str, tuple[Any, str]] = {}
    hook = getattr(pm.hook, hook_name)
    for impl in reversed(hook.get_hookimpls()):  # registration order
        pname = impl.plugin_name

        def register(*args: Any, _pname: str = pname) -> None:
            if what == "analyzer":
                (cls,) = args
                key = getattr(cls, "name", "")
                if not key or not isinstance(key, str):
                    raise PluginError(f"plugin {_pname!r} registered analyzer {cls!r} without a string `name`")
                value = cls
            else:
                key, value = args
                if not callable(value):
                    raise PluginError(f"plugin {_pname!r} registered experiment {key!r} with a non-callable")
            if key in found and found[key][0] is not value:
                raise PluginError(
                    f"{what} {key!r} registered by both {found[key][1]!r} and {_pname!r}; block one with "
                    f"{DISABLE_ENV}"
                )
            found[key] = (value, _pname)

        try:
            impl.function(register)
        except PluginError:
            raise
        except Exception as exc:
            raise PluginError(f"plugin {pname!r} raised in {hook_name}: {exc!r}") from exc
    return found


def analyzer_registry(pm: pluggy.PluginManager) -> dict[str, type]:
    """Registered analyzer classes by name."""
    return {k: v for k, (v, _) in _collect(pm, "spectra_register_analyzers", "analyzer").items()}


def experiment_registry(pm: pluggy.PluginManager) -> dict[str, Callable[..., Any]]:
    """Registered experiment runners by name."""
    return {k: v for k, (v, _) in _collect(pm, "spectra_register_experiments", "experiment").items()}


def plugin_summary(pm: pluggy.PluginManager) -> dict[str, list[tuple[str, str]]]:
    """``{"plugins": [(name, object)], "analyzers": [(name, plugin)], "experiments": [(name, plugin)]}``."""
    return {
        "plugins": sorted((name or "?", type(p).__name__ if not hasattr(p, "__name__") else p.__name__)
                          for name, p in pm.list_name_plugin()),
        "analyzers": sorted((k, p) for k, (_, p) in _collect(pm, "spectra_register_analyzers", "analyzer").items()),
        "experiments": sorted(
            (k, p) for k, (_, p) in _collect(pm, "spectra_register_experiments", "experiment").items()
        ),
    }
