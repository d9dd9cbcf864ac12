"""Layer selectors: the ``layers=`` option of the drivers (``select=`` of :func:`~spectra.layers.discover_layers`).

A selector keeps only some parameters. It is a glob pattern (``fnmatch``, matched against the layer name and
the full parameter name), a compiled regex (``search`` on either), a module class or tuple of classes
(``isinstance`` on the owning module; never matches in a state_dict), a callable
``predicate(layer, param, module) -> bool``, or a non-empty list of these (any match keeps); ``None`` keeps
everything. :func:`selector_predicate` turns one into a predicate; :func:`selector_miss_message` is the
warning for a selector that keeps nothing.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Any, Callable, Iterable

__all__ = ["describe_selector", "selector_miss_message", "selector_predicate"]

Predicate = Callable[[str, str, Any, Any], bool]


def selector_predicate(select: Any) -> Predicate:
    """Turn ``select`` into a predicate over (layer, param_name, param, module).

    Args:
        select: a selector (see the module docstring) or ``None``.

    Returns:
        ``predicate(layer, param_name, param, module) -> bool``.

    Raises:
        TypeError: ``select`` has an unsupported type (the message lists the allowed ones).
    """
    if select is None:
        return lambda layer, pname, p, m: True
    if isinstance(select, str):
        return lambda layer, pname, p, m: fnmatch.fnmatchcase(layer, select) or fnmatch.fnmatchcase(pname, select)
    if isinstance(select, re.Pattern):
        return lambda layer, pname, p, m: bool(select.search(layer) or select.search(pname))
    if isinstance(select, type) or _is_type_tuple(select):
        return lambda layer, pname, p, m: m is not None and isinstance(m, select)
    if callable(select):
        return lambda layer, pname, p, m: bool(select(layer, p, m))
    if isinstance(select, (list, tuple, set, frozenset)) and select:
        preds = [selector_predicate(s) for s in select]
        return lambda layer, pname, p, m: any(pr(layer, pname, p, m) for pr in preds)
    raise TypeError(
        f"select must be a glob pattern (str), a compiled regex, a module class or tuple of classes, a callable "
        f"predicate(layer, param, module), or a non-empty list of these; got {type(select).__name__} {select!r}"
    )


def _is_type_tuple(select: Any) -> bool:
    return isinstance(select, tuple) and bool(select) and all(isinstance(s, type) for s in select)


def describe_selector(select: Any) -> str:
    """A short readable form of a selector, close to how a user writes it.

    Args:
        select: a selector or ``None``.

    Returns:
        ``'enc*'`` for a glob, ``re.compile('^fc')`` for a regex, ``Linear`` or ``(Conv1d, Embedding)`` for
        classes, ``predicate <qualname>`` for a callable, ``[...]`` for a list.
    """
    if isinstance(select, re.Pattern):
        return f"re.compile({select.pattern!r})"
    if isinstance(select, type):
        return select.__name__
    if _is_type_tuple(select):
        return "(" + ", ".join(s.__name__ for s in select) + ")"
    if isinstance(select, str) or select is None:
        return repr(select)
    if callable(select):
        return f"predicate {getattr(select, '__qualname__', type(select).__name__)}"
    if isinstance(select, (list, tuple, set, frozenset)):
        return "[" + ", ".join(describe_selector(s) for s in select) + "]"
    return repr(select)


def selector_miss_message(select: Any, available: Iterable[Any], *, limit: int = 5) -> str:
    """The warning for a ``layers=`` selector that matches no parameter.

    Args:
        select: the selector that matched nothing (any form :func:`selector_predicate` accepts).
        available: what the model does have: the :class:`~spectra.layers.LayerEntry` objects of an
            unfiltered :func:`~spectra.layers.discover_layers`, or layer names (str). Analyzed entries are
            listed before skipped ones; a name is listed once.
        limit: how many names to list at most (≥ 1).

    Returns:
        A one-line message naming the selector and up to ``limit`` available layer names, e.g.
        ``"layers='enc*' matches no parameter; available layers (5 of 40): 'fc', 'conv', 'c1', 'c3', 'emb', ..."``
        (without the count and the ellipsis when every name is listed).

    Raises:
        TypeError: ``select`` has an unsupported type (same message as discovery).
        ValueError: ``limit`` is smaller than 1.
    """
    selector_predicate(select)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be an int >= 1, got {limit!r}")
    items = [(x, True) if isinstance(x, str) else (x.layer, bool(x.analyzed)) for x in available]
    ordered = [n for n, ok in items if ok] + [n for n, ok in items if not ok]
    names = list(dict.fromkeys(ordered))
    head = f"layers={describe_selector(select)} matches no parameter"
    if not names:
        return f"{head}; the model has no parameters"
    shown = ", ".join(repr(n) for n in names[:limit])
    if len(names) <= limit:
        return f"{head}; available layers: {shown}"
    return f"{head}; available layers ({limit} of {len(names)}): {shown}, ..."
