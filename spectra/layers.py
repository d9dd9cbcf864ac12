"""Which parameters are matrices, and how to view them: layer discovery with explicit skip reasons.

Discovery (:func:`discover_layers`) walks an ``nn.Module`` (or a state_dict) and returns one
:class:`LayerEntry` per parameter. Whether a parameter is analyzed and how it is seen as matrices are decided
by the ``spectra_include_param`` and ``spectra_as_matrices`` hooks, so a third-party plugin can override both;
the built-in answers come from :class:`BuiltinLayerRules` (``trylast``).

Built-in views (view names in quotes):

* ``nn.Linear``, ``nn.Embedding`` (any size; no 50k-row cap as in WeightWatcher), any 2-D parameter: ``"W"``.
* ``nn.Conv1d``/``Conv2d``/``Conv3d`` (and transposed convs) ``weight``: the kernel-position slices
  ``W[:, :, i, j]`` (rf = kh·kw of them for Conv2d; k for Conv1d; kd·kh·kw for Conv3d). By default
  (``conv_slices="pooled"``) one view ``"W"`` holding the 3-D stack (rf, out, in) whose eigenvalues are pooled,
  with ``eig_scale = 1/2`` (WeightWatcher's Conv2d convention, ANCHORS §1.2, applied alike to Conv1d/Conv3d).
  With ``conv_slices="separate"`` one 2-D view per slice, named ``"k{i}"`` (Conv1d), ``"k{i}_{j}"`` (Conv2d) or
  ``"k{i}_{j}_{l}"`` (Conv3d), each with ``eig_scale = rf/2`` (WeightWatcher's ``pool=False``).
* ``nn.MultiheadAttention``: ``in_proj_weight`` (3E, E) split into ``"q"``, ``"k"``, ``"v"`` (rows
  [0, E), [E, 2E), [2E, 3E)); ``q_proj_weight``/``k_proj_weight``/``v_proj_weight`` (used when
  kdim/vdim ≠ embed_dim) are whole matrices ``"W"``; ``out_proj`` is an ordinary Linear submodule.
* ``nn.LSTM``/``GRU``/``RNN`` (and the ``*Cell`` variants): ``weight_ih_l{k}``, ``weight_hh_l{k}`` and their
  ``_reverse`` are split per gate in PyTorch's row order: ``"i","f","g","o"`` (LSTM), ``"r","z","n"`` (GRU);
  a plain RNN has one gate, ``"W"``. ``weight_hr_l{k}`` (``proj_size > 0``) is ``"W"``.
* Transformer-style ``Conv1D`` (a module class named ``Conv1D`` storing its weight as (in, out), as in HF
  GPT-2): ``"W"`` is the transpose, so it reads (out, in) like ``nn.Linear``.
* Any other parameter with at least two dimensions of size > 1: size-1 dimensions are squeezed out; a 2-D
  result is ``"W"``, a ≥ 3-D one is reshaped to (dim0, prod(rest)).

Skipped, with a reason in the layers table: 1-D parameters (biases, norms), parameters with fewer than two
dimensions of size > 1 (e.g. a (1, 1, E) ``bias_k``), meta-device and uninitialised (lazy) parameters,
non-float (integer/bool) and complex dtypes, sparse/quantized tensors (spectra does not densify them: that
would copy the whole matrix; densify them yourself to analyze them), empty tensors, and the second and later
names of tied/shared parameters ("tied to <first name>").

State dicts: when ``discover_layers`` is given a mapping name → tensor there is no module (``module=None`` in
the hooks), so the built-in rules infer from the key and the shape only: a key ending in ``.weight`` (or
``weight``) with 3, 4 or 5 dims is taken for a Conv1d/2d/3d kernel and sliced as above; a key ending in
``in_proj_weight`` whose rows are three times its columns is split into q, k, v; everything else follows the
generic rule. RNN gate splits and the ``Conv1D`` transpose need the module (a single tensor's shape does not
tell an LSTM from a GRU), so in a state_dict those weights are whole matrices ``"W"`` (their eigenvalues are the
same either way for the transpose).

Views are cheap aliases of the tensor they were derived from (slices, transposes, reshapes of contiguous
tensors), never copies where avoidable; discovery never modifies the model.
"""

from __future__ import annotations

import fnmatch
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Sequence

import torch
from torch import nn

from .hookspecs import hookimpl

__all__ = [
    "MatrixView",
    "ViewShape",
    "LayerEntry",
    "BuiltinLayerRules",
    "CONV_SLICE_MODES",
    "LSTM_GATES",
    "GRU_GATES",
    "discover_layers",
    "layers_table_rows",
]

CONV_SLICE_MODES = ("pooled", "separate")
LSTM_GATES = ("i", "f", "g", "o")
GRU_GATES = ("r", "z", "n")
QKV = ("q", "k", "v")

REASON_1D = "1-D parameter (bias/norm)"
_RNN_WEIGHT = re.compile(r"^weight_(ih|hh)_l\d+(_reverse)?$")
_RNN_PROJ = re.compile(r"^weight_hr_l\d+(_reverse)?$")
_CELL_WEIGHT = re.compile(r"^weight_(ih|hh)$")
_SEPARATE_PROJ = ("q_proj_weight", "k_proj_weight", "v_proj_weight")


# --------------------------------------------------------------------------------------------- views
@dataclass(frozen=True, eq=False)
class MatrixView:
    """One matrix (or a stack of matrices whose eigenvalues are pooled) seen in a parameter.

    Attributes:
        name: view name: ``"W"`` for a whole matrix, ``"q"``/``"k"``/``"v"`` for fused attention, gate names
            for RNNs, ``"k{i}_{j}"`` for a Conv2d slice in per-slice mode.
        tensor: a 2-D tensor, or a 3-D stack (slices, rows, cols) whose eigenvalues are pooled (Conv kernels
            in the default pooled mode). Usually an alias of the parameter, not a copy.
        eig_scale: factor applied to every eigenvalue of this view: 1/2 for pooled Conv slices, rf/2 per
            slice in per-slice mode (WeightWatcher's convention), 1 otherwise.
    """

    name: str
    tensor: Any
    eig_scale: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"MatrixView name must be a non-empty string, got {self.name!r}")
        ndim = len(tuple(getattr(self.tensor, "shape", ())))
        if ndim not in (2, 3):
            raise ValueError(
                f"MatrixView {self.name!r} needs a 2-D matrix or a 3-D stack (slices, rows, cols), "
                f"got shape {tuple(getattr(self.tensor, 'shape', ()))}"
            )
        scale = float(self.eig_scale)
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"MatrixView {self.name!r} eig_scale must be finite and > 0, got {self.eig_scale!r}")
        object.__setattr__(self, "eig_scale", scale)

    @property
    def num_matrices(self) -> int:
        """Number of matrices in the view (slices of a stack; 1 for a 2-D view)."""
        shp = tuple(self.tensor.shape)
        return int(shp[0]) if len(shp) == 3 else 1

    @property
    def matrix_shape(self) -> tuple[int, int]:
        """(rows, cols) of each matrix in the view."""
        shp = tuple(int(s) for s in self.tensor.shape)
        return (shp[1], shp[2]) if len(shp) == 3 else (shp[0], shp[1])

    @property
    def N(self) -> int:
        """The larger dimension of each matrix."""
        return max(self.matrix_shape)

    @property
    def M(self) -> int:
        """The smaller dimension of each matrix (= number of eigenvalues per matrix)."""
        return min(self.matrix_shape)

    @property
    def Q(self) -> float:
        """Aspect ratio N/M (≥ 1)."""
        return self.N / self.M if self.M else math.nan


class ViewShape(NamedTuple):
    """Shape summary of one view: N = max dim, M = min dim, Q = N/M, num_matrices = slices."""

    view: str
    N: int
    M: int
    Q: float
    num_matrices: int


def _as_view(item: Any, layer: str) -> MatrixView:
    """Wrap a plugin's answer item (a MatrixView, or a ``(name, tensor[, eig_scale])`` tuple)."""
    if isinstance(item, MatrixView):
        return item
    if isinstance(item, (tuple, list)) and len(item) in (2, 3):
        return MatrixView(*item)
    raise TypeError(
        f"spectra_as_matrices for {layer!r} returned {type(item).__name__} {item!r}; "
        "allowed: a MatrixView or a (view_name, matrix) / (view_name, matrix, eig_scale) tuple"
    )


# --------------------------------------------------------------------------------------------- built-in rules
def _local_name(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _nontrivial_dims(t: Any) -> int:
    return sum(1 for s in t.shape if s > 1)


def _rnn_gate_names(module: Any) -> tuple[str, ...] | None:
    if isinstance(module, nn.RNNBase):
        mode = getattr(module, "mode", "")
        if mode == "LSTM":
            return LSTM_GATES
        if mode == "GRU":
            return GRU_GATES
        return ("W",)
    if isinstance(module, nn.LSTMCell):
        return LSTM_GATES
    if isinstance(module, nn.GRUCell):
        return GRU_GATES
    if isinstance(module, nn.RNNCell):
        return ("W",)
    return None


def _split_rows(t: Any, names: Sequence[str]) -> list[MatrixView] | None:
    """Split a 2-D tensor into equal row blocks named ``names`` (``None`` when the rows do not divide)."""
    g = len(names)
    if t.dim() != 2 or t.shape[0] % g:
        return None
    h = t.shape[0] // g
    return [MatrixView(n, t[i * h : (i + 1) * h]) for i, n in enumerate(names)]


def _conv_views(t: Any, mode: str) -> list[MatrixView]:
    """Kernel-position slices of a (out, in, *kernel) weight, pooled into one stack or one view per slice."""
    spatial = t.dim() - 2
    kernel = tuple(int(s) for s in t.shape[2:])
    rf = math.prod(kernel)
    if mode == "pooled":
        # (out, in, *k) -> (*k, out, in) -> (rf, out, in); the reshape is a view for contiguous weights
        perm = tuple(range(2, 2 + spatial)) + (0, 1)
        stack = t.permute(perm).reshape(rf, t.shape[0], t.shape[1])
        return [MatrixView("W", stack, 0.5)]
    views = []
    for idx in _kernel_positions(kernel):
        name = "k" + "_".join(str(i) for i in idx)
        views.append(MatrixView(name, t[(slice(None), slice(None), *idx)], rf / 2.0))
    return views


def _kernel_positions(kernel: tuple[int, ...]) -> Iterable[tuple[int, ...]]:
    if not kernel:
        yield ()
        return
    for i in range(kernel[0]):
        for rest in _kernel_positions(kernel[1:]):
            yield (i, *rest)


def _generic_views(t: Any) -> list[MatrixView] | None:
    """Squeeze size-1 dims; 2-D → ``"W"``; ≥ 3-D → reshaped to (dim0, prod(rest)); < 2-D → ``None``."""
    s = t.squeeze() if _nontrivial_dims(t) < t.dim() else t
    if s.dim() < 2:
        return None
    if s.dim() == 2:
        return [MatrixView("W", s)]
    return [MatrixView("W", s.reshape(s.shape[0], -1))]


def skip_reason_for(param: Any) -> str | None:
    """The built-in include rule as a reason: ``None`` when the parameter is a matrix worth analyzing."""
    if param.dim() < 2:
        return REASON_1D
    if _nontrivial_dims(param) < 2:
        return f"effectively 1-D parameter (shape {tuple(param.shape)})"
    return None


class BuiltinLayerRules:
    """The built-in layer rules, a plugin with ``trylast`` implementations of the layer hooks.

    Args:
        conv_slices: ``"pooled"`` (default, like WeightWatcher: one view ``"W"`` holding the stack of kernel
            slices, eigenvalues pooled and scaled by 1/2) or ``"separate"`` (one view per kernel position,
            eigenvalues scaled by rf/2).

    Raises:
        ValueError: ``conv_slices`` is not one of :data:`CONV_SLICE_MODES`.
    """

    def __init__(self, *, conv_slices: str = "pooled") -> None:
        if conv_slices not in CONV_SLICE_MODES:
            raise ValueError(f"unknown conv_slices {conv_slices!r}; allowed: {', '.join(CONV_SLICE_MODES)}")
        self.conv_slices = conv_slices

    def __repr__(self) -> str:
        return f"BuiltinLayerRules(conv_slices={self.conv_slices!r})"

    @hookimpl(trylast=True)
    def spectra_include_param(self, name: str, param: Any, module: Any) -> bool | None:
        """Analyze parameters with at least two dimensions of size > 1; skip the rest (biases, norms)."""
        return skip_reason_for(param) is None

    @hookimpl(trylast=True)
    def spectra_as_matrices(self, name: str, param: Any, module: Any) -> list[MatrixView] | None:
        """View ``param`` as matrices; uses ``module`` only for its type and configuration."""
        local = _local_name(name)
        t = param
        if module is not None:
            views = self._module_views(local, t, module)
            if views is not None:
                return views
        else:
            if local == "in_proj_weight" and t.dim() == 2 and t.shape[0] == 3 * t.shape[1]:
                return _split_rows(t, QKV)
            if local == "weight" and 3 <= t.dim() <= 5:
                return _conv_views(t, self.conv_slices)
        return _generic_views(t)

    def _module_views(self, local: str, t: Any, module: Any) -> list[MatrixView] | None:
        if isinstance(module, nn.MultiheadAttention):
            if local == "in_proj_weight":
                return _split_rows(t, QKV)
            if local in _SEPARATE_PROJ and t.dim() == 2:
                return [MatrixView("W", t)]
            return None
        gates = _rnn_gate_names(module)
        if gates is not None:
            if _RNN_WEIGHT.match(local) or _CELL_WEIGHT.match(local):
                return _split_rows(t, gates)
            return None  # weight_hr_l{k} and anything else: generic
        if isinstance(module, nn.modules.conv._ConvNd) and local == "weight" and 3 <= t.dim() <= 5:
            return _conv_views(t, self.conv_slices)
        if type(module).__name__ == "Conv1D" and local == "weight" and t.dim() == 2:
            return [MatrixView("W", t.T)]
        return None


# --------------------------------------------------------------------------------------------- discovery
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
        views = _call_views(self._hook, self.param_name, tensor, self.module, self.layer)
        names = tuple(v.name for v in views or ())
        if names != self.view_names:
            raise RuntimeError(
                f"layer {self.layer!r}: spectra_as_matrices returned views {names}, expected {self.view_names}"
            )
        return views  # type: ignore[return-value]


def _hook_error(hook_name: str, param_name: str, exc: Exception) -> Exception:
    """A plugin's layer hook raised: name the hook and the parameter (a :class:`~spectra.plugins.PluginError`)."""
    from .plugins import PluginError

    return PluginError(
        f"a plugin's {hook_name} raised for parameter {param_name!r}: {type(exc).__name__}: {exc} "
        "(block the plugin with SPECTRA_DISABLE_PLUGINS=<name>)"
    )


def _call_views(hook: Any, name: str, tensor: Any, module: Any, layer: str) -> list[MatrixView] | None:
    try:
        out = hook.spectra_as_matrices(name=name, param=tensor.detach(), module=module)
    except Exception as exc:
        raise _hook_error("spectra_as_matrices", name, exc) from exc
    if out is None:
        return None
    return [_as_view(item, layer) for item in out]


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
    return None


def _storage_key(t: Any) -> tuple | None:
    try:
        ptr = t.untyped_storage().data_ptr()
    except Exception:
        return None
    if not ptr:
        return None
    return (t.device, ptr, t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)


def _iter_module_params(model: nn.Module) -> Iterable[tuple[str, str, Any, nn.Module]]:
    """(module path, local name, param, module) for every parameter, shared ones repeated under each path."""
    for mod_name, mod in model.named_modules(remove_duplicate=False):
        for local, p in mod.named_parameters(recurse=False, remove_duplicate=False):
            yield mod_name, local, p, mod


def _iter_state_dict(sd: Mapping[Any, Any]) -> Iterable[tuple[str, str, Any, None]]:
    for key, t in sd.items():
        if not isinstance(key, str):
            raise TypeError(f"state_dict keys must be str, got {type(key).__name__} {key!r}")
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"state_dict value for key {key!r} is a {type(t).__name__}, not a torch.Tensor")
        mod_name, _, local = key.rpartition(".")
        yield mod_name, local, t, None


def _selector(select: Any) -> Callable[[str, str, Any, Any], bool]:
    """Turn ``select`` into a predicate over (layer, param_name, param, module)."""
    if select is None:
        return lambda layer, pname, p, m: True
    if isinstance(select, str):
        return lambda layer, pname, p, m: fnmatch.fnmatchcase(layer, select) or fnmatch.fnmatchcase(pname, select)
    if isinstance(select, re.Pattern):
        return lambda layer, pname, p, m: bool(select.search(layer) or select.search(pname))
    if isinstance(select, type):
        return lambda layer, pname, p, m: m is not None and isinstance(m, select)
    if isinstance(select, tuple) and select and all(isinstance(s, type) for s in select):
        return lambda layer, pname, p, m: m is not None and isinstance(m, select)
    if callable(select):
        return lambda layer, pname, p, m: bool(select(layer, p, m))
    if isinstance(select, (list, tuple, set, frozenset)) and select:
        preds = [_selector(s) for s in select]
        return lambda layer, pname, p, m: any(pr(layer, pname, p, m) for pr in preds)
    raise TypeError(
        f"select must be a glob pattern (str), a compiled regex, a module class or tuple of classes, a callable "
        f"predicate(layer, param, module), or a non-empty list of these; got {type(select).__name__} {select!r}"
    )


def discover_layers(obj: Any, *, hook: Any, select: Any = None) -> list[LayerEntry]:
    """Find every parameter of a model or state_dict, with its matrix views or the reason it is skipped.

    Args:
        obj: an ``nn.Module`` or a state_dict (mapping str → tensor; ``module=None`` in the hooks, shapes
            inferred as described in the module docstring).
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
    keep = _selector(select)

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
            raise _hook_error("spectra_include_param", pname, exc) from exc
        if include is None:
            entries.append(make("no layer rule answered spectra_include_param (are the built-in rules registered?)"))
            continue
        if not include:
            entries.append(make(skip_reason_for(p) or "excluded by a plugin (spectra_include_param returned False)"))
            continue
        views = _call_views(hook, pname, p, mod, layer)
        if not views:
            entries.append(make("no matrix view (spectra_as_matrices returned nothing)"))
            continue
        shapes = tuple(ViewShape(v.name, v.N, v.M, v.Q, v.num_matrices) for v in views)
        entries.append(make(None, shapes))
    return entries


def layers_table_rows(entries: Sequence[LayerEntry]) -> list[dict[str, Any]]:
    """Rows of the layers side table: one per view of an analyzed entry, one (view ``None``) per skipped one.

    Keys: ``layer, view, module_type, N, M, Q, num_matrices, dtype, skip_reason`` (as
    :data:`spectra.results.LAYER_COLUMNS`).
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
    order = ("layer", "view", "module_type", "N", "M", "Q", "num_matrices", "dtype", "skip_reason")
    return [{k: r[k] for k in order} for r in rows]
