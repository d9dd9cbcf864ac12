"""Checks and normalisation of the structured driver options (analyzers, analyzer_options, layer rules, tags).

Each function raises a ``TypeError``/``ValueError`` that names the bad value and what is allowed; the
:class:`~spectra.pipeline.settings.Settings` validation calls them once per driver.
"""

from __future__ import annotations

import inspect
from typing import Any, Mapping, Sequence

__all__ = ["as_tuple", "check_analyzer_specs", "check_options", "with_fit", "check_layer_rules",
           "check_layer_rules_of", "check_tags", "is_int"]


def is_int(v: Any) -> bool:
    """An ``int`` that is not a ``bool``."""
    return isinstance(v, int) and not isinstance(v, bool)


def as_tuple(value: Any, name: str) -> tuple[Any, ...]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        return (value,)
    return tuple(value)


def check_analyzer_specs(specs: Sequence[Any]) -> None:
    from ..analyzers.base import Analyzer

    for spec in specs:
        if isinstance(spec, type) and issubclass(spec, Analyzer):
            raise TypeError(
                f"got the analyzer class {spec.__name__}; pass an instance ({spec.__name__}()) or its "
                f"registered name {spec.name!r}"
            )
        if not isinstance(spec, (str, Analyzer)):
            raise TypeError(
                f"analyzers must be registered names or Analyzer instances, got {type(spec).__name__}: {spec!r}"
            )


def check_options(options: Any) -> dict[str, dict[str, Any]]:
    if options is None:
        return {}
    if not isinstance(options, Mapping) or not all(isinstance(v, Mapping) for v in options.values()):
        raise TypeError(
            f"analyzer_options must map analyzer names to option dicts, e.g. {{'tail': {{'method': 'ww'}}}}; got "
            f"{options!r}"
        )
    return {str(k): dict(v) for k, v in options.items()}


def with_fit(fit: Any, options: Any, analyzers: Sequence[Any]) -> dict[str, dict[str, Any]]:
    """Fold ``fit=`` into the ``tail`` analyzer's options when ``"tail"`` is requested by name (explicit wins)."""
    out = check_options(options)
    if fit is None:
        return out
    from ..functional.powerlaw import FIT_METHODS

    if fit not in FIT_METHODS:
        raise ValueError(f"unknown fit method {fit!r}; allowed: {', '.join(FIT_METHODS)}")
    if "tail" in analyzers:
        out.setdefault("tail", {}).setdefault("method", fit)
    return out


def check_layer_rules(rules: Any) -> dict[str, Any]:
    from ..layers import BuiltinLayerRules

    if not isinstance(rules, Mapping):
        raise TypeError(f"layer_rules must be a dict of options, got {type(rules).__name__} {rules!r}")
    allowed = [p for p in inspect.signature(BuiltinLayerRules.__init__).parameters if p != "self"]
    unknown = sorted(set(rules) - set(allowed))
    if unknown:
        raise ValueError(f"unknown layer rule option(s) {unknown}; allowed: {', '.join(allowed)}")
    BuiltinLayerRules(**rules)  # each rule checks its own values (e.g. conv_slices)
    return dict(rules)


def check_tags(tags: Any) -> dict[str, Any]:
    """Tags are constant extra columns: names that are not the table's, values that every format can store."""
    import math

    import numpy as np

    from ..table.schema import COLUMNS

    if tags is None:
        return {}
    if not isinstance(tags, Mapping):
        raise TypeError(f"tags must be a mapping of column names to values, got {type(tags).__name__} {tags!r}")
    bad = [k for k in tags if not isinstance(k, str) or not k]
    if bad:
        raise TypeError(f"tag names must be non-empty strings, got {bad!r}")
    reserved = (*COLUMNS, "run_id")
    clash = [k for k in tags if k in reserved]
    if clash:
        raise ValueError(f"tag name(s) {clash} collide with the table's columns ({', '.join(reserved)}); rename them")
    out = {}
    for k, v in tags.items():
        v = v.item() if isinstance(v, np.generic) else v
        if v is not None and not isinstance(v, (str, bool, int, float)):
            raise TypeError(f"tag {k!r} is a {type(v).__name__} ({v!r}); tags must be str, int, float, bool or None")
        if isinstance(v, int) and not isinstance(v, bool) and not -(2**63) <= v < 2**63:
            raise ValueError(f"tag {k!r} = {v} does not fit a 64-bit integer column; pass it as a string")
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"tag {k!r} = {v} is not finite; tags must be finite numbers (or a string)")
        out[k] = v
    return out


def check_layer_rules_of(pm: Any, rules: dict[str, Any]) -> None:
    """A ready plugin manager brings its own layer rules: refuse ``layer_rules`` it does not already follow."""
    builtin = pm.get_plugin("spectra.layers")
    differ = {k: v for k, v in rules.items() if getattr(builtin, k, None) != v}
    if differ:
        raise ValueError(
            f"layer_rules {differ} cannot be applied to a ready plugin_manager (its built-in layer rules are "
            f"{builtin!r}); build it with get_plugin_manager(builtin_options={{'spectra.layers': {dict(rules)}}}) "
            "or leave plugin_manager out"
        )
