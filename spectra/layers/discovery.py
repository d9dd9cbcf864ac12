"""Layer discovery: every parameter of a model or state_dict, with its matrix views or why it is skipped.

:func:`discover_layers` walks an ``nn.Module`` (or a state_dict) and returns one :class:`LayerEntry` per
parameter. Whether a parameter is analyzed and how it is seen as matrices are decided by the
``spectra_include_param`` and ``spectra_as_matrices`` hooks, so a third-party plugin can override both; the
built-in answers come from :class:`~spectra.layers.rules.BuiltinLayerRules` (``trylast``).

Skipped, with a reason in the layers table: what the include rule rejects (1-D parameters such as biases and
norms, parameters with fewer than two dimensions of size > 1), and, whatever the plugins say, meta-device and
uninitialised (lazy) parameters, non-float (integer/bool) and complex dtypes, sparse/quantized tensors (spectra
does not densify them: that would copy the whole matrix; densify them yourself to analyze them), empty tensors,
and the second and later names of tied/shared parameters ("tied to <first name>", found by identity and, in
state_dicts, by shared storage).

Selectors (``layers=`` of the drivers, ``select=`` here) keep only some parameters; they are defined, with the
warning for one that keeps nothing, in :mod:`spectra.layers.selection`.

Discovery never modifies the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import torch
from torch import nn

from .rules import skip_reason_for
from .selection import selector_predicate
from .views import MatrixView, ViewShape, hook_error, views_from_hook

__all__ = [
    "LayerEntry",
    "discover_layers",
    "layers_table_rows",
    "unwrap_model",
    "strip_compile_prefix",
]

_ROW_KEYS = ("layer", "view", "module_type", "N", "M", "Q", "num_matrices", "dtype", "skip_reason")


COMPILE_PREFIX = "_orig_mod"  # the attribute torch.compile's OptimizedModule keeps the compiled module under


def _is_compiled(model: Any) -> bool:
    """A ``torch.compile`` wrapper (``OptimizedModule``), recognised without importing torch._dynamo."""
    return type(model).__name__ == "OptimizedModule" and isinstance(getattr(model, COMPILE_PREFIX, None), nn.Module)


def unwrap_model(model: Any) -> Any:
    """Strip DataParallel / DistributedDataParallel / ``torch.compile`` wrappers so layer names match the model.

    Args:
        model: a module, possibly wrapped (several times) in ``DataParallel``/``DistributedDataParallel`` or
            compiled with ``torch.compile``.

    Returns:
        The innermost wrapped module, or ``model`` itself when it is not wrapped.
    """
    wrappers = (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)
    while isinstance(model, wrappers) or _is_compiled(model):
        model = getattr(model, COMPILE_PREFIX) if _is_compiled(model) else model.module
    return model


def strip_compile_prefix(name: str) -> str:
    """``name`` without the ``_orig_mod`` path components ``torch.compile`` inserts (``"net._orig_mod.fc"`` →
    ``"net.fc"``), so a compiled submodule keeps its layer names."""
    if COMPILE_PREFIX not in name:
        return name
    return ".".join(part for part in name.split(".") if part != COMPILE_PREFIX)


@dataclass(frozen=True, eq=False)
class LayerEntry:
    """One parameter found by discovery, analyzed or skipped.

    Attributes:
        layer: layer name: the module path for a parameter named ``weight`` (``"encoder.0.fc1"``), else the
            full parameter name (``"attn.in_proj_weight"``).
        param_name: the full parameter (or state_dict key) name.
        module_type: class name of the owning module, ``""`` for state_dicts.
        param: the live tensor/Parameter (never copied).
        module: the owning module, or ``None``.
        skip_reason: why the parameter is not analyzed, or ``None`` when it is.
        dtype: the parameter's dtype without the ``torch.`` prefix (``"float32"``).
        shapes: one :class:`ViewShape` per view (empty when skipped).
    """

    layer: str
    param_name: str
    module_type: str
    param: Any = field(repr=False)
    module: Any = field(repr=False)
    skip_reason: str | None
    dtype: str
    shapes: tuple[ViewShape, ...] = ()
    _hook: Any = field(default=None, repr=False)

    @property
    def analyzed(self) -> bool:
        """Whether the entry has views to analyze."""
        return self.skip_reason is None

    @property
    def view_names(self) -> tuple[str, ...]:
        """Names of the views, in order."""
        return tuple(s.view for s in self.shapes)

    def views(self, tensor: Any = None) -> list[MatrixView]:
        """The matrix views of ``tensor`` (default: the live parameter), as the layer hooks define them.

        Args:
            tensor: a tensor of the parameter's shape: a clone, the update ΔW or the gradient. It is detached
                (an alias, not a copy) before the hook sees it.

        Returns:
            One :class:`MatrixView` per view, in the order and with the names found at discovery.

        Raises:
            ValueError: the entry is skipped, or ``tensor`` has another shape than the parameter.
            RuntimeError: a plugin answered with different view names than at discovery.
        """
        if self.skip_reason is not None:
            raise ValueError(f"layer {self.layer!r} is skipped ({self.skip_reason}); it has no views")
        if tensor is None:
            tensor = self.param
        elif tuple(tensor.shape) != tuple(self.param.shape):
            raise ValueError(
                f"layer {self.layer!r}: tensor shape {tuple(tensor.shape)} differs from the parameter's "
                f"{tuple(self.param.shape)}"
            )
        views = views_from_hook(self._hook, self.param_name, tensor, self.module, self.layer)
        names = tuple(v.name for v in views or ())
        if names != self.view_names:
            raise RuntimeError(
                f"layer {self.layer!r}: spectra_as_matrices returned views {names}, expected {self.view_names}"
            )
        return views  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------- skip reasons
def _dtype_str(t: Any) -> str:
    try:
        return str(t.dtype).removeprefix("torch.")
    except Exception:  # pragma: no cover - exotic tensor subclasses
        return ""


def _hard_skip_reason(t: Any) -> str | None:
    """Reasons no plugin can override: there are no real float values to look at."""
    if isinstance(t, nn.parameter.UninitializedTensorMixin):
        return "uninitialized parameter (lazy module not yet run)"
    if t.device.type == "meta":
        return "meta device (no values)"
    if t.layout != torch.strided:
        return f"{t.layout} layout is not analyzed (spectra does not densify; pass a dense tensor)"
    if t.is_quantized:
        return f"quantized tensor ({t.dtype}) is not analyzed"
    if t.is_complex():
        return f"complex dtype {_dtype_str(t)} is not supported (spectra analyzes real matrices)"
    if not t.is_floating_point():
        return f"non-float dtype {_dtype_str(t)}"
    if t.numel() == 0:
        return f"empty tensor (shape {tuple(t.shape)})"
    held = _storage_elements(t)
    if held is not None and t.numel() > held:
        return (f"expanded tensor: {t.numel()} elements viewed over a storage of {held} (stride 0, e.g. "
                "torch.expand); not a weight matrix, and analysing it densely would cost "
                f"{t.numel() * 8} bytes")
    return None


def _storage_elements(t: Any) -> int | None:
    """How many elements the tensor's storage holds (None when it cannot be told, e.g. a tensor subclass)."""
    try:
        return t.untyped_storage().nbytes() // max(t.element_size(), 1)
    except Exception:
        return None


def _storage_key(t: Any) -> tuple | None:
    """What makes two tensors the same matrix (tied weights in a state_dict), or ``None`` without storage."""
    try:
        ptr = t.untyped_storage().data_ptr()
    except Exception:
        return None
    if not ptr:
        return None
    return (t.device, ptr, t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)


# --------------------------------------------------------------------------------------------- walking
def _iter_module_params(model: nn.Module) -> Iterable[tuple[str, str, Any, nn.Module]]:
    """(module path, local name, param, module) for every parameter, shared ones repeated under each path."""
    for mod_name, mod in model.named_modules(remove_duplicate=False):
        if _is_compiled(mod):
            continue  # its parameters are its compiled module's, listed under that module's own path
        for local, p in mod.named_parameters(recurse=False, remove_duplicate=False):
            yield strip_compile_prefix(mod_name), local, p, mod


def _iter_state_dict(sd: Mapping[Any, Any]) -> Iterable[tuple[str, str, Any, None]]:
    for key, t in sd.items():
        if not isinstance(key, str):
            raise TypeError(f"state_dict keys must be str, got {type(key).__name__} {key!r}")
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"state_dict value for key {key!r} is a {type(t).__name__}, not a torch.Tensor")
        mod_name, _, local = key.rpartition(".")
        yield mod_name, local, t, None


# --------------------------------------------------------------------------------------------- discovery
def discover_layers(obj: Any, *, hook: Any, select: Any = None) -> list[LayerEntry]:
    """Find every parameter of a model or state_dict, with its matrix views or the reason it is skipped.

    Args:
        obj: an ``nn.Module`` or a state_dict (mapping str → tensor; ``module=None`` in the hooks, shapes
            inferred as described in :mod:`spectra.layers.rules`).
        hook: a pluggy hook relay (``pm.hook``) carrying ``spectra_include_param`` and ``spectra_as_matrices``.
        select: keep only some parameters: a glob pattern (``fnmatch``, matched against the layer name and the
            full parameter name), a compiled regex (``search`` on either), a module class or tuple of classes
            (``isinstance`` on the owning module; never matches in a state_dict), a callable
            ``predicate(layer, param, module) -> bool``, or a list of these (any match keeps). Unselected
            parameters are left out of the result entirely.

    Returns:
        One :class:`LayerEntry` per selected parameter, in module order. A parameter reachable under several
        names (tied weights, shared modules) is analyzed under its first name; the others are skipped with
        ``"tied to <first name>"``.

    Raises:
        TypeError: ``obj`` is neither a module nor a mapping of tensors, ``hook`` lacks the layer hooks, or
            ``select`` has an unsupported type.
    """
    if not (hasattr(hook, "spectra_as_matrices") and hasattr(hook, "spectra_include_param")):
        raise TypeError(
            f"hook must be a pluggy hook relay (pm.hook) with the spectra layer hooks, got {type(hook).__name__}"
        )
    if isinstance(obj, nn.Module):
        items: Iterable[tuple[str, str, Any, Any]] = _iter_module_params(obj)
    elif isinstance(obj, Mapping):
        items = _iter_state_dict(obj)
    else:
        raise TypeError(
            f"cannot discover layers in a {type(obj).__name__}; allowed: torch.nn.Module or a state_dict "
            "(mapping str -> torch.Tensor)"
        )
    keep = selector_predicate(select)

    entries: list[LayerEntry] = []
    seen_ids: dict[int, str] = {}
    seen_storage: dict[tuple, str] = {}
    used_layers: set[str] = set()
    for mod_name, local, p, mod in items:
        pname = f"{mod_name}.{local}" if mod_name else local
        layer = mod_name if (local == "weight" and mod_name) else pname
        if layer in used_layers:
            layer = pname
        if not keep(layer, pname, p, mod):
            continue
        used_layers.add(layer)
        mtype = type(mod).__name__ if mod is not None else ""

        def make(reason: str | None, shapes: tuple[ViewShape, ...] = ()) -> LayerEntry:
            return LayerEntry(layer, pname, mtype, p, mod, reason, _dtype_str(p), shapes, hook)

        first = seen_ids.get(id(p))
        if first is not None:
            entries.append(make(f"tied to {first}"))
            continue
        seen_ids[id(p)] = layer
        reason = _hard_skip_reason(p)
        if reason is None:
            key = _storage_key(p)
            if key is not None:
                if key in seen_storage:
                    reason = f"tied to {seen_storage[key]}"
                else:
                    seen_storage[key] = layer
        if reason is not None:
            entries.append(make(reason))
            continue
        try:
            include = hook.spectra_include_param(name=pname, param=p, module=mod)
        except Exception as exc:
            raise hook_error("spectra_include_param", pname, exc) from exc
        if include is None:
            entries.append(make("no layer rule answered spectra_include_param (are the built-in rules registered?)"))
            continue
        if not include:
            entries.append(make(skip_reason_for(p) or "excluded by a plugin (spectra_include_param returned False)"))
            continue
        views = views_from_hook(hook, pname, p, mod, layer)
        if not views:
            entries.append(make("no matrix view (spectra_as_matrices returned nothing)"))
            continue
        shapes = tuple(ViewShape(v.name, v.N, v.M, v.Q, v.num_matrices) for v in views)
        entries.append(make(None, shapes))
    return entries


def layers_table_rows(entries: Sequence[LayerEntry]) -> list[dict[str, Any]]:
    """Rows of the layers side table: one per view of an analyzed entry, one (view ``None``) per skipped one.

    Args:
        entries: what :func:`discover_layers` returned.

    Returns:
        Dicts with the keys ``layer, view, module_type, N, M, Q, num_matrices, dtype, skip_reason``, in that
        order (as :data:`spectra.results.LAYER_COLUMNS`).
    """
    rows: list[dict[str, Any]] = []
    for e in entries:
        base = {"layer": e.layer, "module_type": e.module_type, "dtype": e.dtype}
        if e.skip_reason is not None:
            rows.append(
                {**base, "view": None, "N": None, "M": None, "Q": None, "num_matrices": None,
                 "skip_reason": e.skip_reason}
            )
            continue
        for s in e.shapes:
            rows.append(
                {**base, "view": s.view, "N": s.N, "M": s.M, "Q": s.Q, "num_matrices": s.num_matrices,
                 "skip_reason": None}
            )
    return [{k: r[k] for k in _ROW_KEYS} for r in rows]
