"""What a driver analyzes: a model or a state_dict, loaded safely and checked before discovery.

Models whose parameters are sharded across ranks (FSDP, DTensor) are refused in every mode, because each rank
would see only a shard of every weight. The check looks only at modules the program has already imported
(a DTensor cannot exist unless ``torch.distributed.tensor`` is imported), so a single-process run never pays
for importing torch's distributed stack.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["load_target", "check_model_supported"]

_UNSUPPORTED = (
    "spectra does not support FullyShardedDataParallel / fully_shard (FSDP) or DTensor-sharded parameters: "
    "each rank holds only a shard of every weight, so its spectra would be wrong. Analyze a full state "
    "dict instead (e.g. torch.distributed.checkpoint.state_dict.get_model_state_dict(model, "
    "options=StateDictOptions(full_state_dict=True, cpu_offload=True)) on rank 0, then "
    "spectra.analyze(that_state_dict)), or monitor with DDP"
)


def _loaded(module: str, name: str) -> Any:
    """``module.name`` when ``module`` is already imported, else ``None`` (never imports anything)."""
    mod = sys.modules.get(module)
    return getattr(mod, name, None) if mod is not None else None


def check_model_supported(obj: Any) -> None:
    """Refuse models whose parameters are sharded across ranks (FSDP, DTensor): their spectra would be wrong.

    Raises:
        NotImplementedError: ``obj`` is or contains a ``FullyShardedDataParallel``/``fully_shard`` module, or
            holds DTensor parameters / state_dict values.
    """
    import torch

    dtensor = _loaded("torch.distributed.tensor", "DTensor") or _loaded("torch.distributed._tensor", "DTensor")
    fsdp = tuple(c for c in (_loaded("torch.distributed.fsdp", "FullyShardedDataParallel"),
                             _loaded("torch.distributed.fsdp", "FSDPModule")) if c is not None)
    if isinstance(obj, torch.nn.Module):
        if fsdp:
            for name, m in obj.named_modules():
                if isinstance(m, fsdp):
                    raise NotImplementedError(f"{_UNSUPPORTED} (found {type(m).__name__} at {name or '<root>'!r})")
        tensors = obj.named_parameters()
    elif isinstance(obj, Mapping):
        tensors = obj.items()
    else:
        return
    if dtensor is not None:
        for name, t in tensors:
            if isinstance(t, dtensor):
                raise NotImplementedError(f"{_UNSUPPORTED} (parameter {name!r} is a DTensor)")


def load_target(obj: Any) -> Any:
    """Normalise what ``analyze`` accepts into an ``nn.Module`` (wrappers removed) or a state_dict.

    Raises:
        TypeError: unsupported type (names it and lists the accepted ones).
        FileNotFoundError / ValueError: see :func:`spectra.checkpoints.load_state_dict`.
        NotImplementedError: an FSDP/DTensor model.
    """
    import torch

    from ..checkpoints import extract_state_dict, load_state_dict
    from ..layers import unwrap_model

    if isinstance(obj, torch.nn.Module):
        target = unwrap_model(obj)
    elif isinstance(obj, (str, os.PathLike)):
        target = load_state_dict(Path(obj))
    elif isinstance(obj, Mapping):
        target = extract_state_dict(obj, source="the given mapping")
    else:
        raise TypeError(
            f"cannot analyze a {type(obj).__name__}; pass a torch.nn.Module, a state_dict (mapping of names to "
            "tensors) or a path to a .pt/.pth/.bin/.ckpt/.safetensors file"
        )
    check_model_supported(target)
    return target
