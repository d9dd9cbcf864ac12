"""What a file is before spectra loads it, and the resource limits a checkpoint must respect.

A checkpoint path may hold something else entirely: a Git LFS pointer (the weights were never pulled), an
HTML error page saved by a failed download, a text file, random bytes, or a FIFO that would block a reader
forever. :func:`check_checkpoint_file` looks at the file's kind and first bytes and says what it actually
is, before anything is unpickled. :func:`check_zip_expansion` refuses a torch zip checkpoint whose entries
would expand far beyond the file (a compression bomb: ``torch.save`` stores entries uncompressed, so a real
checkpoint expands about 1×).

Limits (override them per call through :class:`Limits`, e.g.
``spectra.checkpoints.load_state_dict(path, limits=Limits(max_bytes=2**40))``):

* ``max_bytes`` (default 256 GiB): the total size of a zip checkpoint's entries after decompression;
* ``max_expansion`` (default 16): how much larger than its stored size one compressed entry may become.

Tensors that claim more elements than their storage holds (stride-0 ``expand``ed views, which load as tiny
files but would be analysed as huge dense matrices) are skipped at layer discovery instead (see
:mod:`spectra.layers.discovery`).
"""

from __future__ import annotations

import os
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Limits", "DEFAULT_LIMITS", "describe_file", "check_checkpoint_file", "check_zip_expansion"]

_ZIP = b"PK\x03\x04"
_LFS = b"version https://git-lfs"


@dataclass(frozen=True)
class Limits:
    """Resource limits for reading one checkpoint.

    Attributes:
        max_bytes: total bytes of a zip checkpoint's entries after decompression.
        max_expansion: largest decompressed/stored size ratio of one compressed entry.
    """

    max_bytes: int = 256 * 2**30
    max_expansion: float = 16.0

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_expansion"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise ValueError(f"Limits.{name} must be a positive number, got {v!r}")


DEFAULT_LIMITS = Limits()


def describe_file(head: bytes) -> str:
    """A short description of what a file holds, from its first bytes."""
    if head.startswith(_LFS):
        return "a Git LFS pointer (the weights were never downloaded: run `git lfs pull`)"
    lowered = head.lstrip()[:64].lower()
    if lowered.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head")):
        return "an HTML/XML page (a failed download or an error page saved under a checkpoint's name)"
    if not head:
        return "an empty file"
    try:
        head.decode("utf-8")
        return "a text file"
    except UnicodeDecodeError:
        return f"binary data of an unknown format (first bytes: {head[:16].hex(' ')})"


def _read_head(path: Path, n: int = 512) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(n)


def check_checkpoint_file(path: Path, *, kind: str) -> None:
    """Refuse a path that is not a regular file of the expected kind, saying what it is.

    Args:
        path: the checkpoint.
        kind: ``"torch"`` (a zip or legacy pickle ``torch.save`` file) or ``"safetensors"``.

    Raises:
        ValueError: a FIFO, socket or device (it would block or never end), or a file whose first bytes are
            not those of the expected format (the message says what the file is).
    """
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        what = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device or special file"
        raise ValueError(f"refusing to read {path}: it is {what}, not a regular file")
    head = _read_head(path)
    if kind == "torch":
        if head.startswith(_ZIP) or head[:1] == b"\x80":  # torch zip format, or a legacy pickle (protocol >= 2)
            return
    elif kind == "safetensors":
        if len(head) >= 9 and head[8:9] == b"{":  # u64 little-endian header length, then the JSON header
            return
    else:  # pragma: no cover - programming error
        raise ValueError(f"unknown checkpoint kind {kind!r}")
    raise ValueError(f"{path} is not a {'PyTorch' if kind == 'torch' else 'safetensors'} checkpoint: it is "
                     f"{describe_file(head)}")


def check_zip_expansion(path: Path, limits: Limits = DEFAULT_LIMITS) -> None:
    """Refuse a zip checkpoint whose entries would decompress beyond ``limits``.

    Raises:
        ValueError: an entry expands more than ``limits.max_expansion`` times, or all entries together exceed
            ``limits.max_bytes`` (the message names the entry or the total and how to raise the limit).
    """
    if _read_head(path, 4) != _ZIP:
        return
    total = 0
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            total += info.file_size
            if info.compress_type != zipfile.ZIP_STORED and info.file_size > limits.max_expansion * max(
                    info.compress_size, 1) and info.file_size > 2**20:
                raise ValueError(
                    f"refusing to read {path}: entry {info.filename!r} expands from {info.compress_size} to "
                    f"{info.file_size} bytes ({info.file_size / max(info.compress_size, 1):.0f}x; torch.save "
                    f"stores entries uncompressed). Raise Limits(max_expansion=...) if this file is trusted"
                )
    if total > limits.max_bytes:
        raise ValueError(f"refusing to read {path}: its entries hold {total} bytes after decompression, over "
                         f"the limit of {limits.max_bytes}; raise Limits(max_bytes=...) if this file is trusted")
