"""Progress bars for long work (tqdm), shown automatically only on a terminal."""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["make_progress"]


def make_progress(progress: Any, total: int, desc: str, *, unit: str = "layer", min_items: int = 8) -> Any:
    """A tqdm bar when ``progress`` is True, or None (auto) on a terminal with enough items; else None."""
    if progress is False or total == 0:
        return None
    if progress is None and not (sys.stderr.isatty() and total >= min_items):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=False, file=sys.stderr)
