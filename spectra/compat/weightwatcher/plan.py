"""WeightWatcher 0.7.7's view of a model's layers, and how it lines up with spectra's layer names.

:func:`ww_layer_plan` re-implements WeightWatcher's layer iterator and its ``layer_supported`` rules (pooled
mode) without importing it: which modules it analyzes, with which ``layer_id``, type, N/M/rf bookkeeping and
skip reason (see docs/weightwatcher.md, 'How WeightWatcher finds and sizes layers'). :func:`name_matcher`,
:func:`param_name` and :func:`not_seen_reason` relate those layers to spectra's: the ``layers=`` selector
both sides share, spectra's parameter name of a layer, and why WeightWatcher never sees a parameter spectra
analyzes.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

__all__ = [
    "WWLayerPlan",
    "ww_layer_plan",
    "WW_MIN_EVALS",
    "WW_MAX_EVALS",
    "WW_MAX_N",
    "name_matcher",
    "param_name",
    "not_seen_reason",
]

#: WeightWatcher 0.7.7's default skip thresholds: M*rf < min_evals, M*rf > max_evals, N > max_N.
WW_MIN_EVALS = 8
WW_MAX_EVALS = 15000
WW_MAX_N = 50000


@dataclass(frozen=True)
class WWLayerPlan:
    """What WeightWatcher 0.7.7 does with one module (or state_dict ``*.weight`` key).

    Attributes:
        layer: the spectra layer name of the weight (module path; ``"weight"`` for a root module).
        layer_id: WeightWatcher's ``layer_id`` (counts every ``named_modules()`` entry from 0, containers
            included; state_dict ``*.weight`` keys from 1).
        longname: WeightWatcher's ``longname`` (the module path, or its class name for the root module).
        ww_type: ``dense``, ``conv1d``, ``conv2d``, ``embedding``, ``norm`` or ``unknown`` (WW's LAYER_TYPE).
        module_type: the module's class name (``""`` in a state_dict).
        N, M, rf: WeightWatcher's bookkeeping (including its Conv2d N/M swap, see
            docs/weightwatcher.md, 'How WeightWatcher finds and sizes layers'); 0 when no weight.
        num_evals: number of eigenvalues WeightWatcher computes (min(out, in)·rf for Conv2d).
        skip_reason: why WeightWatcher does not analyze it (``None`` when it does).
        crashes: WeightWatcher would raise on it (so the comparison excludes it from WeightWatcher's run).
        note: WeightWatcher analyzes it, but not in a way spectra reproduces (its numbers are shown, not
            compared).
    """

    layer: str
    layer_id: int
    longname: str
    ww_type: str
    module_type: str
    N: int
    M: int
    rf: int
    num_evals: int
    skip_reason: str | None
    crashes: bool = False
    note: str | None = None

    @property
    def analyzed(self) -> bool:
        """Whether WeightWatcher analyzes this layer."""
        return self.skip_reason is None and not self.crashes

    @property
    def Q(self) -> float:
        """WeightWatcher's Q = N/M (−1 when M = 0)."""
        return self.N / self.M if self.M > 0 else -1.0


def _ww_module_type(module: Any) -> str:
    """WeightWatcher's PyTorchLayer.layer_type: isinstance or a substring of ``str(type(module)).lower()``
    (which includes the defining module's path, so anything in ``torch.nn.modules.linear`` reads as dense)."""
    from torch import nn

    typestr = str(type(module)).lower()
    if isinstance(module, nn.Linear) or "linear" in typestr:
        return "dense"
    if isinstance(module, nn.Conv1d) or "conv1d" in typestr:
        return "conv1d"
    if isinstance(module, nn.Conv2d) or "conv2d" in typestr:
        return "conv2d"
    if isinstance(module, nn.Embedding) or "embedding" in typestr:
        return "embedding"
    if "norm" in typestr:
        return "norm"
    return "unknown"


def _ww_shape(ww_type: str, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """(N, M, rf, num_evals) as WeightWatcher computes them for a weight of this shape and type."""
    if ww_type == "conv2d":
        out, inn, kh, kw = shape
        rf = kh * kw
        if out + inn >= kh + kw:  # channels-last detection succeeds: one N/M swap per slice when out < in
            N, M = (inn, out) if (out < inn and rf % 2 == 1) else (out, inn)
        else:  # detection "fails" for tiny channel counts: WW flips twice and ends with N=out, M=in
            N, M = out, inn
        return N, M, rf, min(out, inn) * rf
    N, M = max(shape), min(shape)
    return N, M, 1, min(shape[:2]) if len(shape) >= 2 else 0


def _skip_reason(ww_type: str, N: int, M: int, rf: int, module_type: str, *, min_evals: int, max_evals: int,
                 max_N: int) -> str | None:
    """WeightWatcher's ``layer_supported`` in order (pooled mode), as a reason string (None: analyzed)."""
    if ww_type == "unknown":
        return (f"WeightWatcher does not recognise {module_type or 'this'} layers (it analyzes Linear, Conv1d, "
                "Conv2d, Embedding and classes whose name contains linear/conv1d/conv2d/embedding)")
    if ww_type == "norm":
        return "WeightWatcher skips normalization layers"
    if min_evals and M * rf < min_evals:
        return f"WeightWatcher skips it: M*rf = {M * rf} < min_evals = {min_evals}"
    if max_evals and M * rf > max_evals:
        return f"WeightWatcher skips it: M*rf = {M * rf} > max_evals = {max_evals}"
    if N > max_N:
        return f"WeightWatcher skips it: N = {N} > max_N = {max_N}"
    return None


def _root_name(module: Any) -> str:
    """The class name WeightWatcher uses as the root module's ``longname`` (``str(module)`` up to ``(``)."""
    return re.sub(r"\(.*", "", str(module)).strip()


def ww_layer_plan(
    obj: Any, *, min_evals: int = WW_MIN_EVALS, max_evals: int = WW_MAX_EVALS, max_N: int = WW_MAX_N
) -> list[WWLayerPlan]:
    """Which layers WeightWatcher 0.7.7 analyzes in a model or state_dict, with its ids, shapes and skips.

    This re-implements WeightWatcher's layer iterator and ``layer_supported`` (pooled mode) without importing
    it, so spectra can reproduce its selection (:func:`analyze_ww_compatible`) and explain every row of a
    comparison.

    Args:
        obj: an ``nn.Module`` or a state_dict (mapping ``str`` → tensor).
        min_evals, max_evals, max_N: WeightWatcher's thresholds (0.7.7 defaults 8, 15000, 50000).

    Returns:
        One :class:`WWLayerPlan` per module that has a ``weight`` (per ``*.weight`` key in a state_dict), in
        WeightWatcher's order. Modules without a ``weight`` attribute are omitted (WeightWatcher yields them
        but never reports them).

    Raises:
        TypeError: ``obj`` is neither a module nor a mapping.
    """
    import torch
    from torch import nn

    plans: list[WWLayerPlan] = []
    kw = {"min_evals": min_evals, "max_evals": max_evals, "max_N": max_N}
    if isinstance(obj, nn.Module):
        for layer_id, (path, mod) in enumerate(obj.named_modules()):
            if not hasattr(mod, "weight"):
                continue
            ww_type = _ww_module_type(mod)
            mtype = type(mod).__name__
            layer = path if path else "weight"
            longname = path if path else _root_name(mod)
            w = mod.weight
            if ww_type not in ("dense", "conv1d", "conv2d", "embedding"):
                crash = w is None  # WW reads weight.data before it checks the type
                plans.append(WWLayerPlan(layer, layer_id, longname, ww_type, mtype, 0, 0, 1, 0,
                                         _skip_reason(ww_type, 0, 0, 1, mtype, **kw), crash))
                continue
            if not isinstance(w, torch.Tensor) or w.dim() < 2 or (ww_type == "conv2d" and w.dim() != 4):
                shape = tuple(w.shape) if isinstance(w, torch.Tensor) else None
                plans.append(WWLayerPlan(layer, layer_id, longname, ww_type, mtype, 0, 0, 1, 0,
                                         f"WeightWatcher cannot analyze a {ww_type} weight of shape {shape}", True))
                continue
            N, M, rf, n_ev = _ww_shape(ww_type, tuple(int(s) for s in w.shape))
            reason = _skip_reason(ww_type, N, M, rf, mtype, **kw)
            note = None
            if reason is None and ww_type != "conv2d" and w.dim() != 2:
                note = (f"not compared: WeightWatcher 0.7.7 passes this {w.dim()}-D {mtype} weight whole to scipy's "
                        "SVD (batched over its first axis since scipy 1.15, an error before) and keeps the top M "
                        "singular values; spectra pools the kernel slices instead")
            plans.append(WWLayerPlan(layer, layer_id, longname, ww_type, mtype, N, M, rf, n_ev, reason, False, note))
        return plans
    if isinstance(obj, Mapping):
        keys = [k for k in obj if isinstance(k, str) and k.endswith(".weight")]
        for layer_id, key in enumerate(keys, start=1):
            t = obj[key]
            name = key[: -len(".weight")]
            shape = tuple(int(s) for s in getattr(t, "shape", ()))
            if len(shape) == 0 or shape[0] < 2:
                ww_type = "unknown"
            else:
                ww_type = {2: "dense", 4: "conv2d"}.get(len(shape), "unknown")
            if ww_type == "unknown":
                plans.append(WWLayerPlan(name, layer_id, name, ww_type, "", 0, 0, 1, 0,
                                         f"WeightWatcher reads only 2-D and 4-D state_dict weights (shape {shape})"))
                continue
            N, M, rf, n_ev = _ww_shape(ww_type, shape)
            plans.append(WWLayerPlan(name, layer_id, name, ww_type, "", N, M, rf, n_ev,
                                     _skip_reason(ww_type, N, M, rf, "", **kw)))
        return plans
    raise TypeError(
        f"ww_layer_plan needs a torch.nn.Module or a state_dict (mapping str -> tensor), got {type(obj).__name__}"
    )


def name_matcher(layers: Any) -> Callable[[str, str], bool]:
    """Predicate over (layer name, parameter name) for ``layers=``: a glob, a compiled regex, or a list.

    Args:
        layers: ``None`` (everything), a glob matched against either name, a compiled regex searched in
            either name, or a non-empty list/tuple/set of these (any may match).

    Returns:
        ``match(layer, pname) -> bool``.

    Raises:
        TypeError: ``layers`` is none of the above.
    """
    if layers is None:
        return lambda layer, pname: True
    if isinstance(layers, str):
        return lambda layer, pname: fnmatch.fnmatchcase(layer, layers) or fnmatch.fnmatchcase(pname, layers)
    if isinstance(layers, re.Pattern):
        return lambda layer, pname: bool(layers.search(layer) or layers.search(pname))
    if isinstance(layers, (list, tuple, set, frozenset)) and layers:
        preds = [name_matcher(x) for x in layers]
        return lambda layer, pname: any(p(layer, pname) for p in preds)
    raise TypeError(
        f"layers must be None, a glob pattern (str), a compiled regex, or a non-empty list of these; "
        f"got {type(layers).__name__} {layers!r}"
    )


def param_name(layer: str) -> str:
    """spectra's parameter name of a layer's weight (``"weight"`` for a root module)."""
    return "weight" if layer == "weight" else f"{layer}.weight"


def not_seen_reason(layer: str, view: str) -> str:
    """Why WeightWatcher has no row for a parameter spectra analyzed and its plan does not list.

    Args:
        layer: spectra's layer name (a parameter path for weights that are not a module's ``weight``).
        view: the layer's view (unused; kept for the row builder's call).

    Returns:
        A human-readable reason.
    """
    local = layer.rsplit(".", 1)[-1]
    if re.match(r"^weight_(ih|hh|hr)_l\d+", local) or local in ("weight_ih", "weight_hh"):
        return "WeightWatcher does not analyze RNN/LSTM/GRU weights"
    if local in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight"):
        return f"WeightWatcher does not see nn.MultiheadAttention's {local} (not a submodule's weight)"
    return "WeightWatcher reads only modules' `weight` attributes; this parameter is not one"
