"""Safe loading of checkpoints as researchers have them: ``torch.load(weights_only=True)`` or safetensors, never
arbitrary unpickling.

Accepted:

* a file: ``.pt``/``.pth``/``.bin``/``.ckpt`` (a state_dict, or one nested under a usual key such as
  Lightning's ``"state_dict"``) or ``.safetensors``;
* a Hugging Face model directory: ``config.json`` with ``model.safetensors``, a sharded
  ``model.safetensors.index.json``, ``pytorch_model.bin`` or a sharded ``pytorch_model.bin.index.json``
  (safetensors is preferred when both are there, as Hugging Face does).

Tensors are memory-mapped rather than read (safetensors' ``safe_open``, ``torch.load(mmap=True)``), and a
sharded checkpoint is opened one shard at a time, so loading costs about no memory and the analysis, which
reads one tensor at a time, stays near one tensor's worth. The ``_orig_mod.`` components ``torch.compile``
adds to names are removed. Layers come in depth order: a torch file keeps its own (module) order, and the
keys of safetensors files, which store them alphabetically, are sorted naturally (``h.2`` before ``h.10``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .checkpoint_guard import DEFAULT_LIMITS, Limits, check_checkpoint_file, check_zip_expansion

__all__ = [
    "load_state_dict", "load_model_dir", "extract_state_dict", "natural_key", "strip_compile_prefixes",
    "CHECKPOINT_SUFFIXES", "HF_WEIGHT_FILES", "UnsafeCheckpointError",
]

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")
# a Hugging Face model directory's weights, in the order they are looked for
HF_WEIGHT_FILES = ("model.safetensors.index.json", "model.safetensors", "pytorch_model.bin.index.json",
                   "pytorch_model.bin")
# keys under which training scripts commonly nest the model's weights
_NESTED_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "weights")
_DIGITS = re.compile(r"(\d+)")


class UnsafeCheckpointError(ValueError):
    """The checkpoint needs code execution to load (a pickle with custom globals); it was refused."""


def _is_tensor(x: Any) -> bool:
    import torch

    return isinstance(x, torch.Tensor)


def natural_key(name: str) -> tuple:
    """Sort key that orders the numbers inside names by value: ``h.2`` before ``h.10``."""
    return tuple(int(part) if part.isdigit() else part for part in _DIGITS.split(name))


def strip_compile_prefixes(sd: Mapping[str, Any], *, source: str = "the state_dict") -> dict[str, Any]:
    """``sd`` with the ``_orig_mod.`` name components of ``torch.compile`` removed, order kept.

    Raises:
        ValueError: two keys become the same name (the message names both).
    """
    from .layers.discovery import strip_compile_prefix

    out: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for key, value in sd.items():
        name = strip_compile_prefix(key)
        if name in out:
            raise ValueError(f"{source}: keys {origin[name]!r} and {key!r} are the same parameter once "
                             "torch.compile's '_orig_mod.' is removed")
        out[name], origin[name] = value, key
    return out


def _flatten(obj: Mapping, prefix: str = "", out: dict[str, Any] | None = None) -> dict[str, Any]:
    """Nested mappings of tensors as one ``{dotted.name: tensor}`` dict.

    Two different keys can flatten to one name (``{"0.weight": a, "0": {"weight": b}}``); both are kept: the
    later one is named with its path in brackets (``"0[weight]"``), so no tensor is dropped or taken for another.
    """
    out = {} if out is None else out
    for k, v in obj.items():
        name = f"{prefix}{k}"
        if _is_tensor(v):
            if name in out:
                head, _, last = name.rpartition(".")
                name = f"{head}[{last}]" if head else f"[{last}]"
                while name in out:
                    name += "'"
            out[name] = v
        elif isinstance(v, Mapping):
            _flatten(v, name + ".", out)
    return out


def extract_state_dict(obj: Any, *, source: str = "object") -> dict[str, Any]:
    """Find the tensors in a loaded checkpoint (a state_dict, or one nested under a usual key such as
    Lightning's ``"state_dict"``), with ``torch.compile``'s ``_orig_mod.`` removed from the names.

    Raises:
        ValueError: ``obj`` is not a mapping, or holds no tensors.
    """
    if not isinstance(obj, Mapping):
        raise ValueError(f"{source} holds a {type(obj).__name__}, not a state_dict (a mapping of names to tensors)")
    for key in _NESTED_KEYS:
        inner = obj.get(key)
        if isinstance(inner, Mapping) and any(_is_tensor(v) for v in inner.values()):
            return strip_compile_prefixes(_flatten(inner), source=source)
    flat = _flatten(obj)
    if not flat:
        raise ValueError(f"{source} contains no tensors")
    return strip_compile_prefixes(flat, source=source)


def _read_safetensors(path: Path) -> dict[str, Any]:
    """The tensors of one safetensors file, memory-mapped (``safe_open``), keys in natural order."""
    try:
        from safetensors import safe_open
    except ImportError as exc:  # pragma: no cover - optional dependency
        raise ImportError("reading .safetensors needs the safetensors package: pip install safetensors") from exc
    check_checkpoint_file(path, kind="safetensors")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {k: f.get_tensor(k) for k in sorted(f.keys(), key=natural_key)}
    except Exception as exc:
        raise ValueError(f"cannot read safetensors file {path}: {exc}") from exc


def _read_torch(path: Path, limits: Limits = DEFAULT_LIMITS) -> Any:
    """``torch.load`` with ``weights_only=True``, memory-mapped when the file's format allows it, after checking
    that the file is a torch checkpoint at all and within ``limits`` (see :mod:`spectra.checkpoint_guard`)."""
    import pickle

    import torch

    check_checkpoint_file(path, kind="torch")
    check_zip_expansion(path, limits)

    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) files and compressed entries cannot be memory-mapped: read them
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Weights only load failed" in text or "Unsupported global" in text or "GLOBAL" in text:
            raise UnsafeCheckpointError(
                f"refused to load {path}: it needs code execution to unpickle (custom classes or functions). "
                "spectra loads checkpoints with weights_only=True only; save a plain state_dict "
                "(torch.save(model.state_dict(), path)) or use safetensors."
            ) from exc
        raise ValueError(f"cannot read checkpoint {path}: {exc}") from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise ValueError(f"cannot read checkpoint {path} (corrupt or not a torch file): {exc}") from exc


def _shards(index_path: Path) -> list[Path]:
    """The shard files of a ``*.index.json``, each once, in natural order of their names.

    Raises:
        ValueError: the index is not valid JSON or has no ``weight_map``.
        FileNotFoundError: a shard it names is missing.
    """
    try:
        weight_map = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
        if not isinstance(weight_map, Mapping) or not weight_map:
            raise ValueError("'weight_map' is empty or not an object")
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{index_path} is not a sharded-checkpoint index (a JSON object with a "
                         f"'weight_map' of parameter names to shard files): {exc!r}") from exc
    files = sorted(set(map(str, weight_map.values())), key=natural_key)
    paths = [index_path.parent / f for f in files]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{index_path} lists shard(s) that are missing: {', '.join(missing)}")
    return paths


def load_model_dir(path: str | os.PathLike) -> dict[str, Any]:
    """Load the weights of a Hugging Face model directory (see the module docstring), shard by shard.

    Raises:
        ValueError: the directory holds no model weights (the message lists what it looked for and found),
            or a shard is unreadable.
        FileNotFoundError: an index names a missing shard.
        UnsafeCheckpointError: a ``.bin`` shard would need code execution to load.
    """
    path = Path(path)
    found = next((path / n for n in HF_WEIGHT_FILES if (path / n).is_file()), None)
    if found is None:
        tensors = sorted(path.glob("*.safetensors"), key=lambda p: natural_key(p.name))
        if tensors:
            files, kind = tensors, "safetensors"
        else:
            here = sorted(p.name for p in path.iterdir())[:12]
            raise ValueError(
                f"{path} is a directory without model weights: expected a Hugging Face model directory with one "
                f"of {', '.join(HF_WEIGHT_FILES)} (or *.safetensors files), or pass a checkpoint file "
                f"({', '.join(CHECKPOINT_SUFFIXES)}); it holds: {', '.join(here) or 'nothing'}"
            )
    else:
        kind = "safetensors" if "safetensors" in found.name else "bin"
        files = _shards(found) if found.name.endswith(".index.json") else [found]
    out: dict[str, Any] = {}
    for shard in files:  # one shard at a time; tensors are memory-mapped, not read
        part = _read_safetensors(shard) if kind == "safetensors" else extract_state_dict(_read_torch(shard),
                                                                                         source=str(shard))
        clash = out.keys() & part.keys()
        if clash:
            raise ValueError(f"{shard} repeats parameter(s) already read from another shard: {sorted(clash)[:5]}")
        out.update(part)
    if kind == "safetensors":
        out = {k: out[k] for k in sorted(out, key=natural_key)}
    if not out:
        raise ValueError(f"{path} contains no tensors")
    return strip_compile_prefixes(out, source=str(path))


def load_state_dict(path: str | os.PathLike, *, limits: Limits = DEFAULT_LIMITS) -> dict[str, Any]:
    """Load tensors from a checkpoint file or a Hugging Face model directory onto the CPU (memory-mapped).

    Args:
        path: a ``.pt/.pth/.bin/.ckpt`` file (weights only), a ``.safetensors`` file, or a model directory.
        limits: resource limits for torch zip checkpoints (:class:`spectra.checkpoint_guard.Limits`).

    Raises:
        FileNotFoundError: the path does not exist (or an index names a missing shard).
        UnsafeCheckpointError: the pickle would need to run code (custom classes or functions) to load.
        ValueError: the file is corrupt, of an unsupported type, not a regular file, not a checkpoint at all
            (the message says what it is: a Git LFS pointer, an HTML page, ...), over ``limits``, or holds no
            tensors.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.is_dir():
        return load_model_dir(path)
    suffix = path.suffix.lower()
    if suffix not in CHECKPOINT_SUFFIXES:
        raise ValueError(f"unsupported checkpoint type {suffix!r} for {path}; supported: {', '.join(CHECKPOINT_SUFFIXES)} "
                         "or a Hugging Face model directory")
    if suffix == ".safetensors":
        sd = _read_safetensors(path)
        if not sd:
            raise ValueError(f"{path} contains no tensors")
        return strip_compile_prefixes(sd, source=str(path))
    return extract_state_dict(_read_torch(path, limits), source=str(path))
