"""What every format shares: the reader's result and the atomic write (temporary sibling, fsync, rename)."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any, Callable, NamedTuple

from ..schema import jsonable

__all__ = ["TableData", "atomic_write", "meta_json"]


class TableData(NamedTuple):
    """What a reader returns: the tidy frame, the conventions in force and the layers side table."""

    frame: Any
    attrs: dict[str, Any]
    layers: Any


def atomic_write(path: Path, write: Callable[[Any], None], *, binary: bool = True) -> Path:
    """Write ``path`` through ``write(file_object)`` into a temporary sibling, fsync it, then rename it into place.

    The temporary file is removed when ``write`` raises, and the old file (if any) is left untouched.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb" if binary else "w", **({} if binary else {"newline": "", "encoding": "utf-8"})) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def meta_json(attrs: dict[str, Any], layers: Any) -> dict[str, Any]:
    """The JSON form of a table's attrs and layers table (meta files and CSV sidecars)."""
    return {"attrs": jsonable(attrs), "layers": json.loads(layers.to_json(orient="records"))}


