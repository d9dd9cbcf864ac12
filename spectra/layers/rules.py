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
