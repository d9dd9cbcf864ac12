"""Safe loading of checkpoints: ``torch.load(weights_only=True)`` or safetensors, never arbitrary unpickling."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["load_state_dict", "CHECKPOINT_SUFFIXES", "UnsafeCheckpointError"]

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")
# keys under which training scripts commonly nest the model's weights
_NESTED_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "weights")


class UnsafeCheckpointError(ValueError):
    """The checkpoint needs code execution to load (a pickle with custom globals); it was refused."""


def _is_tensor(x: Any) -> bool:
    import torch

    return isinstance(x, torch.Tensor)


def _flatten(obj: Mapping, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in obj.items():
        name = f"{prefix}{k}"
        if _is_tensor(v):
            out[name] = v
        elif isinstance(v, Mapping):
            out.update(_flatten(v, name + "."))
    return out


def extract_state_dict(obj: Any, *, source: str = "object") -> dict[str, Any]:
    """Find the tensors in a loaded checkpoint (a state_dict, or one nested under a usual key)."""
    if not isinstance(obj, Mapping):
        raise ValueError(f"{source} holds a {type(obj).__name__}, not a state_dict (a mapping of names to tensors)")
    for key in _NESTED_KEYS:
        inner = obj.get(key)
        if isinstance(inner, Mapping) and any(_is_tensor(v) for v in inner.values()):
            return _flatten(inner)
    flat = _flatten(obj)
    if not flat:
        raise ValueError(f"{source} contains no tensors")
    return flat


def load_state_dict(path: str | os.PathLike) -> dict[str, Any]:
    """Load tensors from ``.pt/.pth/.bin/.ckpt`` (weights only) or ``.safetensors`` onto the CPU.

    Raises:
        FileNotFoundError: the path does not exist.
        UnsafeCheckpointError: the pickle would need to run code (custom classes or functions) to load.
        ValueError: the file is corrupt, of an unsupported type, or holds no tensors (the message names it).
    """
    import pickle

    import torch

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise ValueError(f"{path} is a directory; pass a checkpoint file ({', '.join(CHECKPOINT_SUFFIXES)})")
    suffix = path.suffix.lower()
    if suffix not in CHECKPOINT_SUFFIXES:
        raise ValueError(f"unsupported checkpoint type {suffix!r} for {path}; supported: {', '.join(CHECKPOINT_SUFFIXES)}")
    if suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as exc:  # pragma: no cover - optional dependency
            raise ImportError("reading .safetensors needs the safetensors package: pip install safetensors") from exc
        try:
            return dict(load_file(str(path), device="cpu"))
        except Exception as exc:
            raise ValueError(f"cannot read safetensors file {path}: {exc}") from exc
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
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
    return extract_state_dict(obj, source=str(path))
