"""Experiments registered by plugins (``spectra_register_experiments``), runnable from Python and the CLI."""

from __future__ import annotations

from typing import Any, Iterable

__all__ = ["available", "run"]


def available(*, plugins: Iterable[Any] = (), plugin_manager: Any = None) -> dict[str, Any]:
    """Registered experiments: name → runner."""
    from .plugins import experiment_registry, get_plugin_manager

    pm = plugin_manager or get_plugin_manager(plugins=plugins)
    return experiment_registry(pm)


def run(name: str, *, plugins: Iterable[Any] = (), plugin_manager: Any = None, **config: Any) -> Any:
    """Run a registered experiment, e.g. ``run("twolayer", preset="quick", out="out/")``.

    Args:
        name: the experiment's registered name.
        plugins: extra plugin objects to register first.
        plugin_manager: a ready plugin manager.
        **config: passed to the experiment's runner (presets, overrides, output directory, ...).

    Returns:
        Whatever the runner returns (the twolayer plugin returns a report with results and claim verdicts).

    Raises:
        ValueError: no experiment of that name (the registered ones are listed).
    """
    registry = available(plugins=plugins, plugin_manager=plugin_manager)
    if name not in registry:
        raise ValueError(f"unknown experiment {name!r}; registered experiments: {', '.join(sorted(registry)) or 'none'}")
    return registry[name](**config)
