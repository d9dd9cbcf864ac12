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
from types import MappingProxyType
from typing import Any

__all__ = ["load_target", "check_model_supported", "unwrap_optimizer", "OPTIMIZER_WRAPPERS"]

_UNSUPPORTED = (
    "spectra does not support FullyShardedDataParallel / fully_shard (FSDP) or DTensor-sharded parameters: "
    "each rank holds only a shard of every weight, so its spectra would be wrong. Analyze a full state "
    "dict instead (e.g. torch.distributed.checkpoint.state_dict.get_model_state_dict(model, "
    "options=StateDictOptions(full_state_dict=True, cpu_offload=True)) on rank 0, then "
    "spectra.analyze(that_state_dict)), or monitor with DDP"
)


# Optimizer wrappers spectra sees through: "module.Class" (matched on the wrapper's class and its bases, so nothing
# is imported) -> the attribute holding the torch optimizer it wraps.
OPTIMIZER_WRAPPERS: Mapping[str, str] = MappingProxyType({
    "accelerate.optimizer.AcceleratedOptimizer": "optimizer",           # Hugging Face Trainer, accelerate.prepare
    "lightning.pytorch.core.optimizer.LightningOptimizer": "optimizer",  # LightningModule.optimizers()
    "pytorch_lightning.core.optimizer.LightningOptimizer": "optimizer",
    "lightning.fabric.wrappers._FabricOptimizer": "optimizer",           # Fabric.setup_optimizers
    "lightning_fabric.wrappers._FabricOptimizer": "optimizer",
})
# Optimizer-like objects whose real updates happen elsewhere: spectra cannot follow them, and says why.
_UNSUPPORTED_OPTIMIZERS: Mapping[str, str] = MappingProxyType({
    "transformers.trainer_pt_utils.LayerWiseDummyOptimizer": (
        "it is a placeholder for layer-wise optimizers (e.g. GaLore '*_layerwise') that step inside gradient "
        "hooks, one per parameter; monitor without the layer-wise variant"
    ),
})


def _qualnames(obj: Any) -> list[str]:
    return [f"{c.__module__}.{c.__qualname__}" for c in type(obj).__mro__]


def _has_step_hooks(opt: Any) -> bool:
    """Whether ``opt`` ran ``torch.optim.Optimizer.__init__`` (a wrapper that skips it has no hook registry)."""
    return "_optimizer_step_pre_hooks" in getattr(opt, "__dict__", {})


def unwrap_optimizer(obj: Any) -> Any:
    """The ``torch.optim.Optimizer`` whose ``step()`` really updates the weights, with known wrappers removed.

    Wrappers are removed when they are one of :data:`OPTIMIZER_WRAPPERS` (accelerate's ``AcceleratedOptimizer``,
    Lightning's ``LightningOptimizer``, Fabric's ``_FabricOptimizer``), or, for any other class, when the object
    is not itself a working optimizer (it is no ``torch.optim.Optimizer``, or it never ran
    ``Optimizer.__init__``) and its ``optimizer`` attribute is one: such an object is taken to be a wrapper
    around it. Wrappers nested in wrappers are removed too. A real optimizer subclass that wraps another one
    (e.g. a Lookahead that calls ``Optimizer.__init__``) is kept: its own ``step()`` is the whole update.

    Args:
        obj: an optimizer or an optimizer wrapper.

    Returns:
        The innermost torch optimizer (``obj`` itself when it is one).

    Raises:
        TypeError: ``obj`` is not an optimizer; a wrapper spectra cannot see through (the message names its
            class and what to pass instead); or an optimizer whose updates spectra cannot follow.
    """
    import torch

    seen = 0
    while True:
        names = _qualnames(obj)
        why = next((_UNSUPPORTED_OPTIMIZERS[n] for n in names if n in _UNSUPPORTED_OPTIMIZERS), None)
        if why is not None:
            raise TypeError(f"spectra cannot monitor a {type(obj).__name__}: {why}")
        attr = next((OPTIMIZER_WRAPPERS[n] for n in names if n in OPTIMIZER_WRAPPERS), None)
        if attr is None and not (isinstance(obj, torch.optim.Optimizer) and _has_step_hooks(obj)):
            if isinstance(getattr(obj, "optimizer", None), torch.optim.Optimizer):
                attr = "optimizer"
        if attr is None:
            break
        inner = getattr(obj, attr, None)
        if not isinstance(inner, torch.optim.Optimizer) or seen > 8:
            raise TypeError(
                f"spectra cannot see through the optimizer wrapper {type(obj).__name__}: its {attr!r} attribute is a "
                f"{type(inner).__name__}, not a torch.optim.Optimizer; pass the torch.optim.Optimizer it wraps"
            )
        obj, seen = inner, seen + 1
    if not isinstance(obj, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(obj).__name__}")
    if not _has_step_hooks(obj):
        raise TypeError(
            f"spectra cannot see through the optimizer wrapper {type(obj).__name__}: it is a torch.optim.Optimizer "
            "that never ran Optimizer.__init__, so it has no step hooks, and it holds no torch optimizer in an "
            "'optimizer' attribute; pass the torch.optim.Optimizer whose step() updates the weights instead"
        )
    return obj


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
