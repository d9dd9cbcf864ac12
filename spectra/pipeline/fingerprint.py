"""What every rank of a distributed job must share: a process-independent description of the settings.

:func:`settings_fingerprint` describes the analyzers (class, options, own schedule), the layers (names and view
shapes), the schedule and any other setting as ``{name: text}``; ranks compare them field by field before
the first collective (:mod:`spectra.pipeline.distributed`).
"""

from __future__ import annotations

import json
import re
from typing import Any, Sequence

__all__ = ["settings_fingerprint", "describe_setting"]

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def describe_setting(obj: Any) -> str:
    """A process-independent description of a setting (memory addresses removed from reprs)."""
    if callable(obj) and hasattr(obj, "__qualname__") and not hasattr(obj, "__dataclass_fields__"):
        return f"{getattr(obj, '__module__', '?')}.{obj.__qualname__}"
    try:
        text = json.dumps(obj, sort_keys=True, default=repr)
    except (TypeError, ValueError):
        text = repr(obj)
    return _ADDRESS.sub("", text)


def settings_fingerprint(*, analyzers: Sequence[Any], entries: Sequence[Any], schedule: Any = None,
                         **settings: Any) -> dict[str, str]:
    """``{name: description}`` of analyzers, layers, the schedule and any other ``settings`` (for rank checks)."""
    out = {
        "analyzers": describe_setting(
            [[a.name, f"{type(a).__module__}.{type(a).__qualname__}", a.config(),
              describe_setting(getattr(a, "schedule", None))] for a in analyzers]
        ),
        "layers": describe_setting(
            [[e.layer, e.param_name, [[s.view, s.N, s.M, s.num_matrices] for s in e.shapes]] for e in entries]
        ),
    }
    if schedule is not None:
        out["schedule"] = describe_setting(schedule)
    for k in sorted(settings):
        out[k] = describe_setting(settings[k])
    return out
