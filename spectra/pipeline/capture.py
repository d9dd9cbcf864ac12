"""What to copy before an optimizer step, and how the copies become snapshots after it.

A row at step t describes W_t, the update ΔW_t = W_t − W_{t−1} and the gradient G_{t−1} that produced it. The
weights W_t are read after the step; what would be gone by then is copied before it, and only when a due
analyzer declared it needs it:

* ``"update"`` → W_{t−1}, in float32 or wider (bf16/fp16 weights would lose small updates otherwise);
* ``"grad"`` → the gradient, densified and in float32 or wider.

Copies are made under ``torch.no_grad()`` and never alias the live tensors; the live parameters, gradients and
optimizer state are never written. An analysis that runs later, in a worker thread (``background=True``), also
needs W_t itself frozen: :func:`copy_weights` copies it after the step, so nothing the worker reads is a live
tensor that later training could change. :func:`layer_states` turns one entry's copies into frozen
:class:`~spectra.snapshot.LayerState` snapshots, one per matrix view.
"""

from __future__ import annotations

import warnings
from typing import Any, Iterable, Mapping, Sequence

from ..snapshot import LayerState

__all__ = ["Copies", "needs_of", "take_copies", "copy_weights", "layer_states", "warn_outside_optimizer"]

# param id -> {"previous": W_{t-1} copy, "grad": G_{t-1} copy, and with background=True "weight": W_t copy}
Copies = dict[int, dict[str, Any]]


def needs_of(analyzers: Iterable[Any]) -> frozenset[str]:
    """The matrix kinds the given analyzers declared they read (``weight``, ``update``, ``grad``): their
    ``needs`` and their ``optional_needs``, since an optional need is still copied on a due step."""
    out: set[str] = set()
    for a in analyzers:
        out |= set(a.needs) | set(getattr(a, "optional_needs", ()))
    return frozenset(out)


def _wide(dtype: Any) -> Any:
    import torch

    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def take_copies(entries: Sequence[Any], needs: frozenset[str], include: set[int] | None = None) -> Copies:
    """Copy, before the step, what the due analyzers need of each entry's parameter.

    Args:
        entries: the layer entries to copy (this rank's share).
        needs: from :func:`needs_of`; nothing is copied unless it holds ``"update"`` or ``"grad"``.
        include: ids of the parameters the optimizer will step (others are left out); ``None`` takes all.

    Returns:
        ``{id(param): {"previous": ..., "grad": ...}}`` with only the kinds that exist.
    """
    import torch

    want_prev = "update" in needs
    want_grad = "grad" in needs
    copies: Copies = {}
    if not (want_prev or want_grad):
        return copies
    with torch.no_grad():
        for e in entries:
            p = e.param
            if include is not None and id(p) not in include:
                continue
            item: dict[str, Any] = {}
            if want_prev:
                item["previous"] = p.detach().to(dtype=_wide(p.dtype), copy=True)
            if want_grad and p.grad is not None:
                g = p.grad.detach()
                if g.is_sparse:
                    g = g.to_dense()
                item["grad"] = g.to(dtype=_wide(g.dtype), copy=True)
            copies[id(p)] = item
    return copies


def copy_weights(copies: Copies, entries: Sequence[Any], include: set[int] | None = None) -> Copies:
    """Add a copy of W_t, taken after the step, to each entry's copies (in place), for a later analysis.

    The copy keeps the parameter's dtype and device (so the numbers are those of the live parameter's) and is
    made under ``torch.no_grad()``; :func:`layer_states` then reads it instead of the live parameter.

    Args:
        copies: from :func:`take_copies` (entries without copies get an item).
        entries: the layer entries to copy (this rank's share).
        include: ids of the parameters to analyze; ``None`` takes all.

    Returns:
        ``copies``, with ``"weight"`` in the item of every included entry.
    """
    import torch

    with torch.no_grad():
        for e in entries:
            p = e.param
            if include is not None and id(p) not in include:
                continue
            copies.setdefault(id(p), {})["weight"] = p.detach().clone()
    return copies


def layer_states(
    entry: Any, step: int, item: Mapping[str, Any], *, normalize: bool, esd_method: str,
    context: Mapping[str, Any] | None = None, device: Any = None,
) -> list[LayerState]:
    """The snapshots of one entry after the step: W_t from the live parameter, ΔW_t and G_{t−1} from ``item``.

    ``item`` holds the copies taken before the step: ``"previous"`` (W_{t−1}; the update is W_t − W_{t−1}) and
    ``"grad"``. A background analysis (:func:`copy_weights`) and a delta analysis (``spectra.analyze(...,
    base=)``) also pass ``"weight"`` (W_t copied after the step, or a LoRA layer's merged weight, instead of
    the live parameter); a delta analysis also ``"update"`` (ΔW exactly, e.g. B·A, instead of the
    difference), both of the parameter's shape.

    ``context`` is added to every snapshot's context (e.g. the decomposition ``backend``); with ``device`` the
    tensors are moved there first (one entry at a time, so device memory stays about one layer).

    Raises:
        ValueError: the parameter changed shape since its copy was taken.
    """
    p = item.get("weight")
    p = entry.param.detach() if p is None else p
    if device is not None:
        p = p.to(device)
        item = {k: (v.to(device) if v is not None and hasattr(v, "to") else v) for k, v in item.items()}
    weight_views = entry.views(p)
    per_kind: dict[str, list[Any]] = {}
    prev = item.get("previous")
    if prev is not None:
        if tuple(prev.shape) != tuple(p.shape):
            raise ValueError(
                f"parameter {entry.param_name!r} changed shape from {tuple(prev.shape)} to {tuple(p.shape)}"
            )
        per_kind["previous"] = entry.views(prev)
        update = item.get("update")
        per_kind["update"] = entry.views(p.to(dtype=prev.dtype) - prev if update is None else update)
    g = item.get("grad")
    if g is not None and tuple(g.shape) == tuple(p.shape):
        per_kind["grad"] = entry.views(g)
    states = []
    for i, v in enumerate(weight_views):
        tensors = {"weight": v.tensor}
        for kind, views in per_kind.items():
            tensors[kind] = views[i].tensor
        states.append(
            LayerState(
                layer=entry.layer, view=v.name, step=step, tensors=tensors, eig_scale=v.eig_scale,
                normalize=normalize, esd_method=esd_method, module_type=entry.module_type,
                context={"param_name": entry.param_name, **(context or {})},
            )
        )
    return states


def warn_outside_optimizer(entries: Sequence[Any], in_opt: set[int]) -> None:
    """Warn once about analyzed parameters the optimizer does not step: nothing is captured for them."""
    outside = [e.param_name for e in entries if id(e.param) not in in_opt]
    if outside:
        shown = ", ".join(outside[:5]) + (f" and {len(outside) - 5} more" if len(outside) > 5 else "")
        warnings.warn(
            f"spectra: {len(outside)} parameter(s) are not in the optimizer and are not monitored (frozen?): "
            f"{shown}. Parameters added later with add_param_group are picked up then.",
            RuntimeWarning, stacklevel=3,
        )
