"""Deltas against a base model: ΔW = W − W_base per layer, for ``spectra.analyze(model, base=...)``.

Every analyzed parameter of the model is matched **by name** with a tensor of the base (a model, a state_dict
or a checkpoint, loaded like ``analyze``'s target). Names match exactly, or after dropping what peft adds to
them: the ``base_model.model.`` prefix of a ``PeftModel`` and the ``.base_layer`` component of a wrapped layer.
A parameter the base lacks gets one ``skipped`` row, one whose shape differs one ``failed`` row, each with
``matrix="delta"``, ``analyzer="base"`` and the reason; its weight rows are made as usual.

For a matched parameter the snapshot is built exactly like a monitor step with W_{t−1} = W_base and W_t = W
(:func:`~spectra.pipeline.capture.layer_states` with ``previous`` = W_base): the analyzers that read updates
(``alignment``) describe ΔW against W_base's singular vectors, and their ``update`` rows are relabelled
``matrix="delta"``. The analyzers that read only the weight (``esd``, ``tail``, ...) also run on a second
snapshot whose weight is ΔW; those rows are relabelled ``delta`` too (:func:`analyze_with_base`). Deltas are
in float64: the difference of two float32 (or bf16) tensors is then exact.

**LoRA.** A model holding peft-style adapters (parameters ``<owner>.lora_A[.<adapter>].weight`` of shape (r, in)
and ``<owner>.lora_B[.<adapter>].weight`` of shape (out, r), on the weight ``<owner>.base_layer.weight`` or
``<owner>.weight``) is analyzed with its adapters merged: W = W0 + Σ_adapters s·B·A, and ΔW is taken as
(W0 − W_base) + Σ s·B·A, which is exactly s·B·A when W0 is the base's weight. The scaling s is read from the
owner module without importing peft: its ``scaling`` (a number, or a dict by adapter name), else
``lora_alpha / r``, else 1; a state_dict carries none, so s = 1 there. Adapters listed in the module's
``active_adapters`` are used when it has one; a module that is ``merged`` (the adapter is already in W0) or
has ``disable_adapters`` set counts as a plain layer. Embedding adapters (``lora_embedding_A``/``_B``) give
(B·A)ᵀ, as do ``fan_in_fan_out`` layers (GPT-2's ``Conv1D``); a DoRA layer (``lora_magnitude_vector``) gets a
``failed`` delta row (merge it first). When the base lacks a LoRA layer, W0 itself is the base. The factors
``lora_A``/``lora_B`` keep their own weight rows and get a ``skipped`` delta row that names the layer their
product belongs to. ``attrs["lora"]`` records each LoRA layer's adapters, ranks and scalings.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from ..snapshot import LayerState
from ..table.schema import Record
from .engine import runtime_needs

__all__ = ["DELTA", "BaseWeights", "BaseMissing", "analyze_with_base", "check_base", "describe_base",
           "find_lora", "LoraLayer"]

DELTA = "delta"  # the matrix kind of rows about ΔW = W − W_base
DEFINITION = ("dW = W - W_base per layer, matched by parameter name (peft's 'base_model.model.' prefix and "
              "'.base_layer' ignored); LoRA layers: W = W0 + sum scaling*B@A, dW = (W0 - W_base) + sum scaling*B@A")
_LORA = re.compile(r"^(?P<owner>.+)\.lora_(?P<ab>[AB])(?:\.(?P<adapter>[^.]+))?\.weight$")
_LORA_EMBEDDING = re.compile(r"^(?P<owner>.+)\.lora_embedding_(?P<ab>[AB])(?:\.(?P<adapter>[^.]+))?$")
_DORA = "lora_magnitude_vector"
_PEFT_PREFIX = "base_model.model."


def describe_base(base: Any) -> str:
    """What a ``base=`` setting is, in words for the table's ``attrs`` (never its tensors).

    Args:
        base: a module, a state_dict or a checkpoint path.

    Returns:
        E.g. ``"checkpoint base.pt"``, ``"state_dict (12 tensors)"``,
        ``"module torch.nn.modules.linear.Linear (2 parameters)"``.
    """
    if isinstance(base, (str, os.PathLike)):
        return f"checkpoint {os.fspath(base)}"
    if isinstance(base, Mapping):
        return f"state_dict ({len(base)} tensors)"
    n = sum(1 for _ in base.parameters()) if hasattr(base, "parameters") else 0
    return f"module {type(base).__module__}.{type(base).__qualname__} ({n} parameters)"


def check_base(base: Any) -> None:
    """Check the type of a ``base=`` setting (the file itself is opened when the pipeline is built).

    Raises:
        TypeError: not a module, a mapping or a path (the message names the value and the allowed kinds).
        ValueError: an empty path.
    """
    import torch

    if isinstance(base, (torch.nn.Module, Mapping)):
        return
    if isinstance(base, (str, os.PathLike)):
        if not os.fspath(base):
            raise ValueError("base is an empty path; pass a checkpoint path, a state_dict or a torch.nn.Module")
        return
    shown = repr(base)
    raise TypeError(
        "base must be a torch.nn.Module, a state_dict (mapping of names to tensors) or a path to a checkpoint, "
        f"got {type(base).__name__} {shown[:80] + '...' if len(shown) > 80 else shown}"
    )


def _normalized(name: str) -> str:
    """``name`` without peft's wrapper components (``base_model.model.`` prefix, ``.base_layer``)."""
    name = ".".join(part for part in name.split(".") if part != "base_layer")
    return name[len(_PEFT_PREFIX):] if name.startswith(_PEFT_PREFIX) else name


# ---------------------------------------------------------------------------------------------- LoRA
@dataclass
class LoraLayer:
    """The peft-style adapters on one weight: ΔW = Σ scaling·B·A (transposed for ``fan_in_fan_out`` layers).

    Attributes:
        weight_name: the full name of the weight the adapters modify (``<owner>.base_layer.weight``).
        owner: the module path holding ``lora_A``/``lora_B``.
        adapters: ``(adapter name or None, A, B, scaling)`` per adapter.
        scaling_from: where the scalings came from (``"scaling"``, ``"lora_alpha/r"``, ``"default 1"``).
        fan_in_fan_out: the weight is stored (in, out), as in GPT-2's ``Conv1D`` (and an embedding's); ``None``:
            decide by shape.
        problem: why the adapters cannot be merged here (e.g. DoRA), or ``None``.
    """

    weight_name: str
    owner: str
    adapters: list[tuple[str | None, Any, Any, float]] = field(default_factory=list)
    scaling_from: str = "default 1"
    fan_in_fan_out: bool | None = None
    problem: str | None = None

    def delta(self, shape: tuple[int, ...], device: Any) -> Any:
        """Σ scaling·B·A in float64 on ``device``, in the weight's layout.

        Raises:
            ValueError: factors that are not 2-D, do not chain (B's columns ≠ A's rows), or whose product has
                neither the weight's shape nor its transpose.
        """
        import torch

        if self.problem is not None:
            raise ValueError(self.problem)
        total = None
        for name, A, B, s in self.adapters:
            if A.dim() != 2 or B.dim() != 2 or B.shape[1] != A.shape[0]:
                raise ValueError(
                    f"LoRA adapter {name or ''!r} of {self.owner!r}: factors A {tuple(A.shape)} and B "
                    f"{tuple(B.shape)} are not 2-D matrices with B's columns = A's rows (LoRA on convolutions is "
                    "not supported; merge the adapter and analyze the merged model)"
                )
            d = (B.detach().to(device=device, dtype=torch.float64)
                 @ A.detach().to(device=device, dtype=torch.float64)) * s
            transpose = self.fan_in_fan_out
            if transpose is None:
                transpose = tuple(d.shape) != tuple(shape) and tuple(d.shape[::-1]) == tuple(shape)
            d = d.T if transpose else d
            if tuple(d.shape) != tuple(shape):
                raise ValueError(f"LoRA adapter {name or ''!r} of {self.owner!r}: B·A has shape {tuple(d.shape)}, "
                                 f"the weight {self.weight_name!r} {tuple(shape)}")
            total = d if total is None else total + d
        return total

    def describe(self) -> dict[str, Any]:
        """JSON-friendly summary for ``attrs["lora"]``."""
        return {
            "adapters": [name or "" for name, _, _, _ in self.adapters],
            "rank": [int(A.shape[0]) for _, A, _, _ in self.adapters],
            "scaling": [float(s) for _, _, _, s in self.adapters],
            "scaling_from": self.scaling_from,
        }


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def _per_adapter(value: Any, adapter: str | None) -> float | None:
    if isinstance(value, Mapping):
        if adapter in value:
            return _number(value[adapter])
        return _number(next(iter(value.values()))) if adapter is None and len(value) == 1 else None
    return _number(value)


def _scaling(module: Any, adapter: str | None) -> tuple[float, str]:
    """The scaling of one adapter, read from the LoRA module (``scaling``, else ``lora_alpha / r``, else 1)."""
    if module is None:
        return 1.0, "default 1 (a state_dict holds no scaling)"
    s = _per_adapter(getattr(module, "scaling", None), adapter)
    if s is not None:
        return s, "scaling"
    alpha = _per_adapter(getattr(module, "lora_alpha", None), adapter)
    r = _per_adapter(getattr(module, "r", None), adapter)
    if alpha is not None and r:
        return alpha / r, "lora_alpha/r"
    return 1.0, "default 1 (no scaling, lora_alpha or r on the module)"


def _named_tensors(obj: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """``({name: tensor}, {module path: module})`` of a module (compile prefixes removed) or a state_dict."""
    import torch

    from ..layers.discovery import strip_compile_prefix

    if isinstance(obj, torch.nn.Module):
        tensors = {strip_compile_prefix(n): p for n, p in obj.named_parameters(remove_duplicate=False)}
        modules = {strip_compile_prefix(n): m for n, m in obj.named_modules(remove_duplicate=False)}
        return tensors, modules
    return dict(obj), {}


def find_lora(tensors: Mapping[str, Any], modules: Mapping[str, Any]) -> tuple[dict[str, LoraLayer], dict[str, str]]:
    """The peft-style LoRA layers among ``tensors`` (see the module docstring for the naming).

    Returns:
        ``({weight name: LoraLayer}, {factor name: weight name})``.
    """
    pairs: dict[tuple[str, str | None], dict[str, str]] = {}
    embedding: set[str] = set()
    dora = {name.split(f".{_DORA}", 1)[0] for name in tensors if f".{_DORA}" in name}
    for name in tensors:
        m = _LORA.match(name) or _LORA_EMBEDDING.match(name)
        if m:
            pairs.setdefault((m["owner"], m["adapter"]), {})[m["ab"]] = name
            if m.re is _LORA_EMBEDDING:
                embedding.add(m["owner"])
    layers: dict[str, LoraLayer] = {}
    factors: dict[str, str] = {}
    for (owner, adapter), ab in pairs.items():
        weight = next((w for w in (f"{owner}.base_layer.weight", f"{owner}.weight") if w in tensors), None)
        if weight is None or set(ab) != {"A", "B"}:
            continue
        module = modules.get(owner)
        active = getattr(module, "active_adapters", None)
        if isinstance(active, str):
            active = [active]
        if getattr(module, "merged", False) is True or getattr(module, "disable_adapters", False) is True or (
                isinstance(active, (list, tuple)) and adapter is not None and adapter not in active):
            continue
        s, source = _scaling(module, adapter)
        fan = True if owner in embedding else getattr(module, "fan_in_fan_out", None)  # peft: (B·A)ᵀ for both
        fan = fan if isinstance(fan, bool) else None
        layer = layers.setdefault(weight, LoraLayer(weight, owner, fan_in_fan_out=fan))
        layer.adapters.append((adapter, tensors[ab["A"]], tensors[ab["B"]], s))
        layer.scaling_from = source
        if owner in dora:
            layer.problem = (f"{owner!r} is a DoRA layer ({_DORA}): its weight is not W0 + scaling*B@A; merge the "
                             "adapter and analyze the merged model")
        factors[ab["A"]] = factors[ab["B"]] = weight
    return layers, factors


# ---------------------------------------------------------------------------------------------- the base
class BaseMissing(Exception):
    """The base has nothing to compare a parameter with (the pipeline writes a ``skipped`` delta row)."""


class BaseWeights:
    """The base of a delta analysis, and the LoRA adapters of the analyzed model.

    Args:
        base: a module, a state_dict or a checkpoint path (loaded as ``analyze`` loads its target).
        target: the analyzed model or state_dict (already loaded).

    Raises:
        TypeError / ValueError / FileNotFoundError: the base cannot be loaded (see
            :func:`~spectra.pipeline.target.load_target`).
    """

    def __init__(self, base: Any, target: Any) -> None:
        from .target import load_target

        self.description = describe_base(base)
        loaded = load_target(base)
        self._tensors, modules = _named_tensors(loaded)
        self._base_lora, _ = find_lora(self._tensors, modules)
        self._normal: dict[str, str] = {}
        for name in self._tensors:
            self._normal.setdefault(_normalized(name), name)
        self.lora, self.factors = find_lora(*_named_tensors(target))

    def __repr__(self) -> str:
        return f"BaseWeights({self.description!r}, lora_layers={len(self.lora)})"

    def attrs(self) -> dict[str, Any]:
        """What the table's ``attrs`` record of the comparison: the definition and the LoRA layers."""
        out: dict[str, Any] = {"delta": DEFINITION}
        if self.lora:
            out["lora"] = {name: layer.describe() for name, layer in self.lora.items()}
        return out

    def match(self, name: str) -> str | None:
        """The base's name for the model's parameter ``name`` (exact, else without peft's components)."""
        if name in self._tensors:
            return name
        norm = _normalized(name)
        return norm if norm in self._tensors else self._normal.get(norm)

    def _base_tensor(self, name: str, device: Any) -> Any:
        import torch

        t = self._tensors[name]
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise ValueError(f"the base's {name!r} is a {getattr(t, 'dtype', type(t).__name__)}, not a float tensor")
        t = t.detach().to(device=device, dtype=torch.float64)
        lora = self._base_lora.get(name)
        return t if lora is None else t + lora.delta(tuple(t.shape), device)

    def item(self, entry: Any) -> dict[str, Any]:
        """What :func:`~spectra.pipeline.capture.layer_states` needs to build the delta snapshot of ``entry``.

        Returns:
            ``{"previous": W_base}``, and for a LoRA layer also ``"weight"`` (merged) and ``"update"`` (exact).

        Raises:
            BaseMissing: ``entry`` is a LoRA factor, or the base has no such parameter.
            ValueError: the base's tensor has another shape, or is not a float tensor.
        """
        import torch

        name = entry.param_name
        if name in self.factors:
            raise BaseMissing(f"LoRA factor: its product scaling*B@A is the delta of {self.factors[name]!r}")
        W = entry.param.detach()
        lora = self.lora.get(name)
        match = self.match(name)
        if match is None and lora is None:
            norm = _normalized(name)
            raise BaseMissing(f"the base has no parameter {name!r}" + (f" (nor {norm!r})" if norm != name else ""))
        if match is not None and tuple(self._tensors[match].shape) != tuple(W.shape):
            raise ValueError(f"parameter {name!r} has shape {tuple(W.shape)}, the base's {match!r} "
                             f"{tuple(self._tensors[match].shape)}")
        W64 = W.to(dtype=torch.float64)
        previous = self._base_tensor(match, W.device) if match is not None else W64
        if lora is None:
            return {"previous": previous}
        d = lora.delta(tuple(W.shape), W.device)
        return {"weight": W64 + d, "previous": previous, "update": (W64 - previous) + d}


def skipped_record(*, run: str, step: int, layer: str, message: str, tags: Mapping[str, Any]) -> Record:
    """The ``skipped`` row of a parameter that has no delta (``matrix="delta"``, ``analyzer="base"``)."""
    return Record(run, step, layer, "", DELTA, "base", DELTA, math.nan, None, "skipped", message, dict(tags))


# ---------------------------------------------------------------------------------------------- analysis
def delta_state(st: LayerState) -> LayerState:
    """A snapshot of ΔW alone, as the weight of the same layer view (for the analyzers that read weights)."""
    return LayerState(layer=st.layer, view=st.view, step=st.step, tensors={"weight": st.tensors["update"]},
                      eig_scale=st.eig_scale, normalize=st.normalize, esd_method=st.esd_method,
                      module_type=st.module_type, context={**st.context, "matrix": DELTA})


def analyze_with_base(states: Sequence[LayerState], analyzers: Sequence[Any],
                      run: Callable[[list[LayerState], Sequence[Any]], list[Record]]) -> list[Record]:
    """Run ``analyzers`` on delta snapshots (W_{t−1} = W_base) and label the rows about ΔW ``matrix="delta"``.

    Per view: the monitor-like snapshot gives the weight rows (W) and, relabelled, the ``update`` rows of the
    analyzers that need an update (and their failures); a snapshot of ΔW alone gives, relabelled, the rows of
    the analyzers that read weights. An analyzer that ran on that ΔW snapshot does not also contribute its
    ``update`` rows (they would repeat the same numbers).

    Args:
        states: the monitor-like snapshots of one entry (views without ``update`` are analyzed as usual).
        analyzers: the analyzers to run.
        run: ``run(states, analyzers) -> records`` (the pipeline's :func:`~spectra.pipeline.engine.run_analyzers`).
    """
    readers = {a.name for a in analyzers if "update" in runtime_needs(a)}
    out: list[Record] = []
    for st in states:
        main = run([st], analyzers)
        if not st.has("update"):
            out.extend(main)
            continue
        d = delta_state(st)
        try:
            on_delta = run([d], analyzers)
        finally:
            d.release()
        ran = {r.analyzer for r in on_delta}
        for r in main:
            if r.matrix == "update":
                if r.analyzer in ran:
                    continue
                r = dataclasses.replace(r, matrix=DELTA)
            elif r.status == "failed" and r.analyzer in readers:
                r = dataclasses.replace(r, matrix=DELTA)
            out.append(r)
        out.extend(dataclasses.replace(r, matrix=DELTA) for r in on_delta)
    return out
