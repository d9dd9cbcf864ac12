"""The built-in layer rules: which parameters are matrices, and how each layer type is seen as matrices.

:class:`BuiltinLayerRules` is a plugin with ``trylast`` implementations of ``spectra_include_param`` and
``spectra_as_matrices``, so any third-party plugin answering those hooks wins over it.

Built-in views (view names in quotes):

* ``nn.Linear``, ``nn.Embedding`` (any size; no 50k-row cap as in WeightWatcher), any 2-D parameter: ``"W"``.
* ``nn.Conv1d``/``Conv2d``/``Conv3d`` (and transposed convs) ``weight``: the kernel-position slices
  ``W[:, :, i, j]`` (rf = kh·kw of them for Conv2d; k for Conv1d; kd·kh·kw for Conv3d). By default
  (``conv_slices="pooled"``) one view ``"W"`` holding the 3-D stack (rf, out, in) whose eigenvalues are pooled,
  with ``eig_scale = 1/2`` (WeightWatcher's Conv2d convention, described in ``docs/weightwatcher.md``,
  section "Conv kernel slices"; applied alike to Conv1d/Conv3d). With ``conv_slices="separate"`` one 2-D view
  per slice, named ``"k{i}"`` (Conv1d), ``"k{i}_{j}"`` (Conv2d) or ``"k{i}_{j}_{l}"`` (Conv3d), each with
  ``eig_scale = rf/2`` (WeightWatcher's ``pool=False``).
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

Per-head attention views (``attention_heads=True``; off by default) replace the views of attention
projections with one view per head, named ``"q.h0"``, ``"q.h1"``, …, ``"k.h{i}"``, ``"v.h{i}"`` and
``"out.h{i}"``:

* ``nn.MultiheadAttention``: ``in_proj_weight`` → q, k, v heads (head i of q is rows [i·d, (i+1)·d) of the q
  block, d = embed_dim / num_heads); ``q_proj_weight``/``k_proj_weight``/``v_proj_weight`` (kdim/vdim) → the
  heads of each; ``out_proj`` → ``"out.h{i}"``, the input columns [i·d, (i+1)·d) (the columns that read head
  i's output).
* Transformer-style modules, where the number of heads can be read from the projection's module or its
  parent (attributes :data:`HEAD_ATTRS`, or those names on its ``config``; key/value heads from
  :data:`KV_HEAD_ATTRS` for grouped-query attention; ``head_dim`` when present): projections named as in
  :data:`HEAD_ROLES` (``q_proj``/``k_proj``/``v_proj``/``o_proj``, BERT's ``query``/``key``/``value``, T5's
  ``q``/``k``/``v``/``o``, GPT-2's fused ``c_attn`` (split [q; k; v]) and ``c_proj``, timm's ``qkv``/``proj``,
  ...) under a parent that also holds q and k projections (or a fused one). Output projections elsewhere
  (BERT's ``SelfOutput.dense``) and fused layouts interleaved per head (GPT-NeoX's ``query_key_value``) keep
  their views.

When the number of heads cannot be determined (no such attribute, a state_dict, shapes that do not divide)
the layer keeps the views above, and nothing else is emitted or noted. Per-head views need the modules'
parents: drivers bind the model to the rules (:meth:`BuiltinLayerRules.bind_model`) before discovery.

Included: parameters with at least two dimensions of size > 1 (:func:`skip_reason_for` gives the reason for
the others: 1-D biases and norms, and shapes such as a (1, 1, E) ``bias_k``).

State dicts (``module=None`` in the hooks): the rules infer from the key and the shape only. A key ending in
``.weight`` (or ``weight``) with 3, 4 or 5 dims is taken for a Conv1d/2d/3d kernel and sliced as above; a key
ending in ``in_proj_weight`` whose rows are three times its columns is split into q, k, v; everything else
follows the generic rule. RNN gate splits and the ``Conv1D`` transpose need the module (a single tensor's
shape does not tell an LSTM from a GRU), so in a state_dict those weights are whole matrices ``"W"`` (their
eigenvalues are the same either way for the transpose).

Views are cheap aliases of the tensor they were derived from (slices, transposes, reshapes of contiguous
tensors), never copies where avoidable.
"""

from __future__ import annotations

import math
import re
from typing import Any, Iterable, Sequence

from torch import nn

from ..hookspecs import hookimpl
from .views import MatrixView

__all__ = [
    "BuiltinLayerRules",
    "CONV_SLICE_MODES",
    "LSTM_GATES",
    "GRU_GATES",
    "QKV",
    "REASON_1D",
    "skip_reason_for",
]

CONV_SLICE_MODES = ("pooled", "separate")
LSTM_GATES = ("i", "f", "g", "o")
GRU_GATES = ("r", "z", "n")
QKV = ("q", "k", "v")

REASON_1D = "1-D parameter (bias/norm)"
_RNN_WEIGHT = re.compile(r"^weight_(ih|hh)_l\d+(_reverse)?$")
_CELL_WEIGHT = re.compile(r"^weight_(ih|hh)$")
_SEPARATE_PROJ = ("q_proj_weight", "k_proj_weight", "v_proj_weight")

#: attributes holding the number of (query) heads, read on a projection's module, its parent, or their config
HEAD_ATTRS = ("num_heads", "n_head", "n_heads", "num_attention_heads")
#: attributes holding the number of key/value heads (grouped-query attention); default: the query heads
KV_HEAD_ATTRS = ("num_key_value_heads", "num_kv_heads", "n_kv_heads")
#: module names of attention projections, by role (``qkv``: fused, rows [q; k; v])
HEAD_ROLES = {
    "q": ("q_proj", "q", "query", "q_lin", "wq", "to_q"),
    "k": ("k_proj", "k", "key", "k_lin", "wk", "to_k"),
    "v": ("v_proj", "v", "value", "v_lin", "wv", "to_v"),
    "out": ("out_proj", "o_proj", "o", "out_lin", "wo", "c_proj", "proj", "dense"),
    "qkv": ("c_attn", "qkv", "qkv_proj", "Wqkv"),
}
_PARAM_ROLES = {"in_proj_weight": "qkv", "q_proj_weight": "q", "k_proj_weight": "k", "v_proj_weight": "v"}
_ROLE_OF = {n: role for role, names in HEAD_ROLES.items() for n in names}


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


def _positive_int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None


def _read(obj: Any, names: Sequence[str]) -> int | None:
    """The first positive int among ``obj.<name>`` and ``obj.config.<name>``."""
    if obj is None:
        return None
    for holder in (obj, getattr(obj, "config", None)):
        for n in names:
            v = _positive_int(getattr(holder, n, None)) if holder is not None else None
            if v is not None:
                return v
    return None


def _is_attention(obj: Any) -> bool:
    """``nn.MultiheadAttention``, or a module with q and k projections (or a fused one) as children."""
    if isinstance(obj, nn.MultiheadAttention):
        return True
    roles = {_ROLE_OF.get(n) for n, _ in obj.named_children()} if isinstance(obj, nn.Module) else set()
    return "qkv" in roles or {"q", "k"} <= roles


def _head_split(t: Any, prefix: str, heads: int, dim: int | None, *, cols: bool = False) -> list[MatrixView] | None:
    """``heads`` equal blocks of rows (or columns) named ``prefix.h{i}``; ``None`` when they do not fit."""
    size = t.shape[1] if cols else t.shape[0]
    if size % heads or (dim is not None and size != heads * dim):
        return None
    d = size // heads
    return [MatrixView(f"{prefix}.h{i}", t[:, i * d:(i + 1) * d] if cols else t[i * d:(i + 1) * d])
            for i in range(heads)]


def _fused_heads(t: Any, heads: int, kv: int, dim: int | None) -> list[MatrixView] | None:
    """Rows [q; k; v] of a fused projection, each split into its heads (``kv`` key/value heads)."""
    rows = t.shape[0]
    if dim is None:
        if rows % (heads + 2 * kv):
            return None
        dim = rows // (heads + 2 * kv)
    if rows != (heads + 2 * kv) * dim:
        return None
    q, k = heads * dim, (heads + kv) * dim
    parts = [_head_split(t[:q], "q", heads, dim), _head_split(t[q:k], "k", kv, dim),
             _head_split(t[k:], "v", kv, dim)]
    return None if any(p is None for p in parts) else [v for p in parts for v in p]  # type: ignore[union-attr]


def skip_reason_for(param: Any) -> str | None:
    """The built-in include rule as a reason.

    Args:
        param: a tensor or parameter.

    Returns:
        ``None`` when the parameter is a matrix worth analyzing, else why not (1-D, or fewer than two
        dimensions of size > 1).
    """
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
        attention_heads: split attention projections into one view per head (``"q.h0"``, ..., ``"out.h0"``,
            ...) where the number of heads can be read (see the module docstring); default ``False``.

    Raises:
        ValueError: ``conv_slices`` is not one of :data:`CONV_SLICE_MODES`.
        TypeError: ``attention_heads`` is not a bool.
    """

    def __init__(self, *, conv_slices: str = "pooled", attention_heads: bool = False) -> None:
        if conv_slices not in CONV_SLICE_MODES:
            raise ValueError(f"unknown conv_slices {conv_slices!r}; allowed: {', '.join(CONV_SLICE_MODES)}")
        if not isinstance(attention_heads, bool):
            raise TypeError(f"attention_heads must be True or False, got {type(attention_heads).__name__} "
                            f"{attention_heads!r}")
        self.conv_slices = conv_slices
        self.attention_heads = attention_heads
        self._parents: dict[int, tuple[Any, Any]] = {}

    def __repr__(self) -> str:
        heads = ", attention_heads=True" if self.attention_heads else ""
        return f"BuiltinLayerRules(conv_slices={self.conv_slices!r}{heads})"

    def bind_model(self, model: Any) -> None:
        """Remember each module's parent in ``model`` (weakly), for the per-head views of child projections.

        Args:
            model: the ``nn.Module`` about to be discovered (anything else clears the map).
        """
        import weakref

        parents: dict[int, tuple[Any, Any]] = {}
        if isinstance(model, nn.Module):
            for parent in model.modules():
                for child in parent.children():
                    parents.setdefault(id(child), (weakref.ref(child), weakref.ref(parent)))
        self._parents = parents

    def _parent(self, module: Any) -> Any:
        refs = self._parents.get(id(module))
        return refs[1]() if refs is not None and refs[0]() is module else None

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
            views = self._head_views(name, local, t, module) if self.attention_heads else None
            if views is None:
                views = self._module_views(local, t, module)
            if views is not None:
                return views
        else:
            if local == "in_proj_weight" and t.dim() == 2 and t.shape[0] == 3 * t.shape[1]:
                return _split_rows(t, QKV)
            if local == "weight" and 3 <= t.dim() <= 5:
                return _conv_views(t, self.conv_slices)
        return _generic_views(t)

    def _head_views(self, name: str, local: str, t: Any, module: Any) -> list[MatrixView] | None:
        """Per-head views of an attention projection, or ``None`` (not one, or its heads are unknown)."""
        if t.dim() != 2:
            return None
        role = _PARAM_ROLES.get(local)
        if role is not None:  # MultiheadAttention-style: the projection is a parameter of the attention module
            owners = (module,)
        elif local == "weight":
            role = _ROLE_OF.get(_local_name(name[: -len(".weight")]) if name.endswith(".weight") else "")
            parent = self._parent(module)
            if role is None or not (_is_attention(parent) or role == "qkv"):
                return None
            owners = (module, parent)
        else:
            return None
        heads = next((h for h in (_read(o, HEAD_ATTRS) for o in owners) if h is not None), None)
        if heads is None:
            return None
        kv = next((h for h in (_read(o, KV_HEAD_ATTRS) for o in owners) if h is not None), None)
        dim = next((h for h in (_read(o, ("head_dim",)) for o in owners) if h is not None), None)
        m = t.T if type(module).__name__ == "Conv1D" else t  # GPT-2's Conv1D stores (in, out)
        if role == "qkv":
            return _fused_heads(m, heads, kv or heads, dim)
        if role == "out":
            return _head_split(m, "out", heads, dim, cols=True)
        if role == "q":
            return _head_split(m, "q", heads, dim)
        if kv is None and dim is not None and m.shape[0] % dim == 0:
            kv = m.shape[0] // dim
        return _head_split(m, role, kv or heads, dim)

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
