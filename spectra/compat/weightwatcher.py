"""Cross-check against WeightWatcher 0.7.7, layer by layer, and a WeightWatcher-compatible analysis mode.

Three public entry points:

* :func:`analyze_ww_compatible` runs :func:`spectra.analyze` with WeightWatcher 0.7.7's conventions (its layer
  selection and skip rules, pooled Conv2d slices with λ×½, the 1e-5 fit threshold and its argmin-KS scan via
  ``fit="ww"``, its N/M bookkeeping for ``matrix_rank``/``entropy``). It does not need WeightWatcher installed.
* :func:`compare_weightwatcher` runs WeightWatcher (lazily imported, CUDA hidden, logging/warnings/stdout
  restored) and spectra on the same model and returns one row per layer: ``<metric>_spectra``, ``<metric>_ww``
  and ``<metric>_rel_diff`` for every metric both define, plus rows for layers only one side analyzed, with the
  reason.
* :func:`summarize_comparison` reduces that table to one row per metric (max abs/rel difference, layers
  compared) for the ``spectra compare-ww`` command.

Relative difference: ``|s − w| / max(|s|, |w|)`` (0 when both are 0, NaN when either is missing). Failed fits on
either side (WeightWatcher's ``alpha = -1`` / ``status = 'failed'``) are NaN, never compared or averaged.

WeightWatcher 0.7.7 facts this module relies on are listed in ``docs/weightwatcher.md`` (and ANCHORS §1).
"""

from __future__ import annotations

import contextlib
import fnmatch
import io
import logging
import math
import re
import warnings
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping

import numpy as np

from ..analyzers.base import Analyzer, Measurement

__all__ = [
    "compare_weightwatcher",
    "summarize_comparison",
    "analyze_ww_compatible",
    "ww_layer_plan",
    "import_weightwatcher",
    "WWLayerPlan",
    "WWEsdAnalyzer",
    "COMPARED_METRICS",
    "WW_VERSION",
]

logger = logging.getLogger(__name__)

WW_VERSION = "0.7.7"
WW_INSTALL_HINT = 'pip install "spectra[ww]"  (or: pip install "weightwatcher==0.7.7")'
WW_MIN_EVALS = 8
WW_MAX_EVALS = 15000
WW_MAX_N = 50000
WW_EVALS_THRESH = 1e-5
WW_EPSILON = 1e-10

COMPARED_METRICS = (
    "alpha", "xmin", "xmax", "D", "sigma", "num_pl_spikes",
    "lambda_max", "sv_max", "log_norm", "log_spectral_norm", "alpha_weighted", "log_alpha_norm",
    "stable_rank", "entropy", "N", "M", "Q", "num_evals",
)  # fmt: skip
FIT_METRICS = ("alpha", "xmin", "xmax", "D", "sigma", "num_pl_spikes", "alpha_weighted", "log_alpha_norm")

# WeightWatcher.analyze options that only add columns or change skip thresholds; anything else would change
# what is compared (pooling, scaling, fit variants) and is refused.
ALLOWED_WW_OPTIONS = ("min_evals", "max_evals", "max_N", "mp_fit", "detX", "ERG", "tolerance", "vectors")

# spectra metric name -> emitted name (the WW-convention analyzer prefixes N/M/Q/rf to avoid clashing with the
# layers table's N/M/Q in ``Results.to_wide``)
_WW_SHAPE_METRICS = {"ww_N": "N", "ww_M": "M", "ww_Q": "Q", "ww_rf": "rf"}


# ============================================================================================ layer plan
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
        N, M, rf: WeightWatcher's bookkeeping (including its Conv2d N/M swap, ANCHORS §1.1); 0 when no weight.
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


# ============================================================================================ spectra side
class WWEsdAnalyzer(Analyzer):
    """ESD metrics with WeightWatcher 0.7.7's definitions and N/M bookkeeping (the ww-compatible ``esd``).

    Emits ``num_evals, lambda_max, sv_max, norm, log_norm, log_spectral_norm, stable_rank, matrix_rank,
    entropy`` (see :mod:`spectra.functional.norms`; ``matrix_rank``/``entropy`` use WeightWatcher's N, which
    for Conv2d carries its per-slice N/M swap) and WeightWatcher's shape columns as ``ww_N, ww_M, ww_Q,
    ww_rf``. No MP fit (WeightWatcher runs one only with ``mp_fit=True``).
    """

    name = "ww_esd"

    def __init__(self, *, shapes: Mapping[str, tuple[int, int, int]] | None = None, schedule: Any = None) -> None:
        """Args:
            shapes: layer name → WeightWatcher's (N, M, rf), e.g. from :func:`ww_layer_plan`; layers not in it
                get N = max dim, M = min dim (Conv stacks: WeightWatcher's swap rule, assuming its channel
                detection succeeds).
            schedule: optional own schedule.
        """
        super().__init__(schedule=schedule)
        self.shapes = dict(shapes or {})

    def config(self) -> dict[str, Any]:
        return {"conventions": "weightwatcher-0.7.7", "shapes_from_plan": len(self.shapes)}

    def analyze(self, layer: Any) -> Iterable[Measurement]:
        from ..functional.norms import norm_metrics

        lam = layer.evals("weight")
        shape = tuple(int(s) for s in layer.tensors["weight"].shape)
        if layer.view == "W" and layer.layer in self.shapes:
            N, M, rf = self.shapes[layer.layer]
        elif len(shape) == 3:  # pooled kernel slices (rf, out, in)
            rf, out, inn = shape
            N, M = (inn, out) if (out < inn and rf % 2 == 1) else (out, inn)
        else:
            rf, N, M = 1, max(shape), min(shape)
        yield Measurement("num_evals", float(lam.size))
        metrics = norm_metrics(lam, N=N)
        for key in ("lambda_max", "sv_max", "norm", "log_norm", "log_spectral_norm", "stable_rank",
                    "matrix_rank", "entropy"):
            yield Measurement(key, float(metrics[key]))
        yield Measurement("ww_N", float(N))
        yield Measurement("ww_M", float(M))
        yield Measurement("ww_Q", N / M if M else -1.0)
        yield Measurement("ww_rf", float(rf))


def _name_matcher(layers: Any):
    """Predicate over (layer name, parameter name) for ``layers=``: a glob, a compiled regex, or a list."""
    if layers is None:
        return lambda layer, pname: True
    if isinstance(layers, str):
        return lambda layer, pname: fnmatch.fnmatchcase(layer, layers) or fnmatch.fnmatchcase(pname, layers)
    if isinstance(layers, re.Pattern):
        return lambda layer, pname: bool(layers.search(layer) or layers.search(pname))
    if isinstance(layers, (list, tuple, set, frozenset)) and layers:
        preds = [_name_matcher(x) for x in layers]
        return lambda layer, pname: any(p(layer, pname) for p in preds)
    raise TypeError(
        f"layers must be None, a glob pattern (str), a compiled regex, or a non-empty list of these; "
        f"got {type(layers).__name__} {layers!r}"
    )


def _param_name(layer: str) -> str:
    return "weight" if layer == "weight" else f"{layer}.weight"


def analyze_ww_compatible(
    obj: Any,
    *,
    layers: Any = None,
    fit: str = "ww",
    ww_skips: bool = True,
    min_evals: int = WW_MIN_EVALS,
    max_evals: int = WW_MAX_EVALS,
    max_N: int = WW_MAX_N,
    esd_method: str = "auto",
    progress: bool | None = None,
) -> Any:
    """Run :func:`spectra.analyze` so that its numbers reproduce WeightWatcher 0.7.7 (CPU path).

    Conventions: λ = σ² of each module's ``weight`` (no 1/N); Conv2d kernel slices pooled with λ×½; the
    power-law fit drops λ ≤ 1e-5 and scans every eigenvalue but the largest as xmin with no minimum tail
    (``fit="ww"``, including 0.7.7's small-N rule); norm metrics on all eigenvalues; ``matrix_rank`` and
    ``entropy`` with WeightWatcher's N (ε = 1e-10). WeightWatcher squares scipy's singular values; spectra's
    default ``esd_method="auto"`` (Gram + eigh, SVD when ill-conditioned) gives the same eigenvalues to ~1e-12
    relative and is 2-4x faster; ``"svd"`` mirrors WeightWatcher's route exactly.

    Args:
        obj: an ``nn.Module``, a state_dict or a checkpoint path (as :func:`spectra.analyze`).
        layers: keep only layers whose name (or ``<name>.weight``) matches: a glob, a compiled regex, or a list.
        fit: the ``tail`` fit method; ``"ww"`` reproduces WeightWatcher, others show spectra's own fits.
        ww_skips: apply WeightWatcher's layer selection and skip rules (type, ``min_evals``, ``max_evals``,
            ``max_N``). ``False`` analyzes every weight spectra would (used by :func:`compare_weightwatcher`
            to report what WeightWatcher misses); WeightWatcher's reasons are in ``attrs["ww_skipped"]``
            either way.
        min_evals, max_evals, max_N: WeightWatcher's thresholds.
        esd_method: passed to :func:`spectra.analyze`.
        progress: passed to :func:`spectra.analyze`.

    Returns:
        :class:`spectra.Results`. Metrics (wide view): ``alpha, xmin, xmax, D, sigma, n_tail, num_pl_spikes,
        alpha_weighted, log_alpha_norm`` (``tail``), ``num_evals, lambda_max, sv_max, norm, log_norm,
        log_spectral_norm, stable_rank, matrix_rank, entropy, ww_N, ww_M, ww_Q, ww_rf`` (``ww_esd``).
        ``attrs["ww_compat"]`` records the settings, ``attrs["ww_skipped"]`` maps layer → WeightWatcher's reason.
    """
    from ..analyze import analyze, load_target
    from ..analyzers.tail import TailAnalyzer

    target = load_target(obj)
    plan = ww_layer_plan(target, min_evals=min_evals, max_evals=max_evals, max_N=max_N)
    match = _name_matcher(layers)
    ww_keep = {p.layer for p in plan if p.analyzed}
    shapes = {p.layer: (p.N, p.M, p.rf) for p in plan if p.N > 0}
    if ww_skips:
        def select(layer: str, param: Any, module: Any) -> bool:
            return layer in ww_keep and match(layer, _param_name(layer))
    else:
        def select(layer: str, param: Any, module: Any) -> bool:
            return match(layer, _param_name(layer))

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="spectra.analyze: nothing to analyze")
        res = analyze(
            target,
            analyzers=[TailAnalyzer(method=fit, hill=False), WWEsdAnalyzer(shapes=shapes)],
            layers=select,
            fit=fit,
            conv_slices="pooled",
            normalize=False,
            esd_method=esd_method,
            progress=progress,
        )
    res.attrs["ww_compat"] = {
        "ww_version": WW_VERSION, "fit": fit, "ww_skips": ww_skips, "min_evals": min_evals,
        "max_evals": max_evals, "max_N": max_N, "evals_thresh": WW_EVALS_THRESH, "entropy_epsilon": WW_EPSILON,
        "conv2d": "pooled slices, eigenvalues x1/2", "esd_method": esd_method,
    }  # fmt: skip
    res.attrs["ww_skipped"] = {p.layer: p.skip_reason or "" for p in plan if not p.analyzed}
    return res


def _spectra_wide(res: Any):
    """One row per (layer, view) of a ww-compatible Results, with a status/message column (failed included)."""
    import pandas as pd

    df = res.to_pandas()
    df = df[df["index"].isna() & (df["matrix"] == "weight")]
    if df.empty:
        return pd.DataFrame(columns=["layer", "view", "status_spectra", "message_spectra"])
    order = list(dict.fromkeys(zip(df["layer"], df["view"])))
    values = df.drop_duplicates(["layer", "view", "metric"]).set_index(["layer", "view", "metric"])["value"]
    wide = values.unstack("metric").reindex(pd.MultiIndex.from_tuples(order, names=["layer", "view"]))
    wide = wide.reset_index()
    wide.columns.name = None
    rank = {"ok": 0, "warn": 1, "skipped": 2, "failed": 3}
    fit_rows = df[df["metric"].isin(["alpha"])]
    status = fit_rows.groupby(["layer", "view"], sort=False)["status"].first()
    message = fit_rows.groupby(["layer", "view"], sort=False)["message"].first()
    worst = df.assign(r=df["status"].map(rank).fillna(3)).groupby(["layer", "view"], sort=False)["r"].max()
    inv = {v: k for k, v in rank.items()}
    keys = list(zip(wide["layer"], wide["view"]))
    wide["status_spectra"] = [status.get(k, inv[int(worst.get(k, 3))]) for k in keys]
    wide["message_spectra"] = [message.get(k, "") for k in keys]
    return wide.rename(columns=_WW_SHAPE_METRICS)


# ============================================================================================ WeightWatcher side
@contextlib.contextmanager
def _hygiene(captured: list[str]) -> Iterator[None]:
    """Undo what WeightWatcher does to the host process while it runs.

    Restores the root logger's handlers and level, the ``weightwatcher`` logger's state, the warnings filters
    (``import weightwatcher`` calls ``warnings.simplefilter("ignore")``) and swallows its stdout prints.
    WeightWatcher's own log records at WARNING and above are collected in ``captured``.
    """
    root = logging.getLogger()
    root_handlers, root_level = list(root.handlers), root.level
    wwlog = logging.getLogger("weightwatcher")
    ww_state = (list(wwlog.handlers), wwlog.level, wwlog.propagate, wwlog.disabled)

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            with contextlib.suppress(Exception):
                captured.append(f"{record.levelname}: {record.getMessage()}")

    collector = _Collect(level=logging.WARNING)
    wwlog.handlers = [collector]
    wwlog.propagate = False
    sink = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink):
            yield
    finally:
        root.handlers[:] = root_handlers
        root.setLevel(root_level)
        wwlog.handlers[:] = ww_state[0]
        wwlog.setLevel(ww_state[1])
        wwlog.propagate = ww_state[2]
        wwlog.disabled = ww_state[3]
        printed = sink.getvalue().strip()
        if printed:
            logger.debug("weightwatcher printed: %s", printed)


@contextlib.contextmanager
def _cuda_hidden() -> Iterator[None]:
    """Make ``torch.cuda.is_available()`` return False (WeightWatcher decides its fp16/CUDA path on import)."""
    import torch

    original = torch.cuda.is_available
    torch.cuda.is_available = lambda: False  # type: ignore[assignment]
    try:
        yield
    finally:
        torch.cuda.is_available = original  # type: ignore[assignment]


def import_weightwatcher() -> Any:
    """Import WeightWatcher with CUDA hidden and the host's logging, warnings and stdout left as they were.

    Returns:
        The ``weightwatcher`` package.

    Raises:
        ImportError: it is not installed (the message gives the install command).
    """
    import sys

    captured: list[str] = []
    with _hygiene(captured), _cuda_hidden():
        try:
            import weightwatcher  # noqa: F401
        except ImportError as exc:
            raise ImportError(
                f"compare_weightwatcher needs WeightWatcher {WW_VERSION}: {WW_INSTALL_HINT} ({exc})"
            ) from exc
    ww = sys.modules["weightwatcher"]
    version = getattr(ww, "__version__", "?")
    if version != WW_VERSION:
        warnings.warn(
            f"WeightWatcher {version} is installed; the comparison is calibrated for {WW_VERSION}",
            RuntimeWarning,
            stacklevel=2,
        )
    return ww


@contextlib.contextmanager
def _ww_cpu_path() -> Iterator[str]:
    """Force WeightWatcher's CPU path (float32 weights, float64 SVD, ε = 1e-10) for the duration.

    When WeightWatcher was imported elsewhere with CUDA visible, its module globals select fp16 weights and
    ε = 6e-5; they are set to the CPU values here and restored afterwards. Yields a description of the path.
    """
    import importlib

    wwmod = importlib.import_module("weightwatcher.weightwatcher")
    rmt = importlib.import_module("weightwatcher.RMT_Util")
    cpu_to_np = lambda T: T.to("cpu").float().numpy()  # noqa: E731  (WeightWatcher's CPU converter)
    saved = {
        (wwmod, "torch_T_to_np"): getattr(wwmod, "torch_T_to_np", None),
        (rmt, "torch_T_to_np"): getattr(rmt, "torch_T_to_np", None),
        (rmt, "EPSILON"): getattr(rmt, "EPSILON", None),
        (rmt, "EVALS_THRESH"): getattr(rmt, "EVALS_THRESH", None),
    }
    cuda_import = saved[(rmt, "EPSILON")] != WW_EPSILON
    try:
        wwmod.torch_T_to_np = cpu_to_np
        rmt.torch_T_to_np = cpu_to_np
        rmt.EPSILON = WW_EPSILON
        rmt.EVALS_THRESH = WW_EVALS_THRESH
        path = "cpu: weights float32 -> float64, scipy SVD (svd_method='accurate'), CUDA hidden"
        if cuda_import:
            path += "; module globals of a CUDA-path import set to the CPU values for this call"
        with _cuda_hidden():
            yield path
    finally:
        for (mod, name), value in saved.items():
            setattr(mod, name, value)


@contextlib.contextmanager
def _restore_longname(model: Any) -> Iterator[None]:
    """WeightWatcher sets a ``longname`` attribute on every submodule; remove the ones it added."""
    from torch import nn

    before = set()
    if isinstance(model, nn.Module):
        before = {id(m) for m in model.modules() if "longname" in m.__dict__}
    try:
        yield
    finally:
        if isinstance(model, nn.Module):
            for m in model.modules():
                if id(m) not in before and "longname" in m.__dict__:
                    del m.__dict__["longname"]


def _run_ww(target: Any, plan: list[WWLayerPlan], wanted: set[str] | None, options: Mapping[str, Any]):
    """Run WeightWatcher.analyze; returns (details or None, error message, path, captured log lines)."""
    ww = import_weightwatcher()
    captured: list[str] = []
    ids: list[int] = []
    if wanted is not None:
        ids = [p.layer_id for p in plan if p.layer in wanted and not p.crashes]
        if not ids:
            return None, "no layer selected for WeightWatcher", "", captured
    else:
        ids = [-p.layer_id for p in plan if p.crashes and p.layer_id > 0]
    path = ""
    try:
        with _hygiene(captured), _restore_longname(target), _ww_cpu_path() as path:
            details = ww.WeightWatcher(model=target).analyze(layers=ids, svd_method="accurate", **options)
    except Exception as exc:  # a model WeightWatcher cannot read: report spectra's side anyway
        risky = [p.layer_id for p in plan if p.note and p.layer_id > 0]
        if wanted is None and risky and not ids:
            try:  # older scipy raises on the 3-D weights WeightWatcher passes whole: retry without them
                with _hygiene(captured), _restore_longname(target), _ww_cpu_path() as path:
                    details = ww.WeightWatcher(model=target).analyze(
                        layers=[-i for i in risky], svd_method="accurate", **options
                    )
                return details, "", path, captured
            except Exception:
                pass
        return None, f"WeightWatcher raised {type(exc).__name__}: {exc}", path, captured
    return details, "", path, captured


# ============================================================================================ comparison
def _rel_diff(s: np.ndarray, w: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.maximum(np.abs(s), np.abs(w))
        out = np.abs(s - w) / scale
    out = np.where((scale == 0) & np.isfinite(s) & np.isfinite(w), 0.0, out)
    return out


def _ww_value(row: Mapping[str, Any], metric: str, failed: bool) -> float:
    if failed and metric in FIT_METRICS:
        return math.nan
    v = row.get(metric, math.nan)
    try:
        v = float(v)
    except (TypeError, ValueError):
        return math.nan
    return v if math.isfinite(v) else math.nan


def compare_weightwatcher(model: Any, *, fit: str = "ww", layers: Any = None, **ww_options: Any):
    """Run WeightWatcher 0.7.7 and spectra on the same model and line the numbers up, layer by layer.

    WeightWatcher runs on its CPU path (CUDA hidden, float32 weights → float64 scipy SVD, ε = 1e-10) even on a
    GPU machine, with the host's root logger, warnings filters and stdout left untouched. spectra runs
    :func:`analyze_ww_compatible` with ``ww_skips=False`` so layers WeightWatcher misses are reported too.

    Args:
        model: an ``nn.Module``, a state_dict or a checkpoint path.
        fit: spectra's fit method (``"ww"`` reproduces WeightWatcher; ``"csn"``/``"hill"`` show the
            default-mode differences explained in ``docs/weightwatcher.md``).
        layers: restrict both sides to layers whose name matches (glob, compiled regex, or a list of them).
        **ww_options: passed to ``WeightWatcher.analyze``; allowed: ``min_evals, max_evals, max_N`` (also
            applied to spectra's WW-rule bookkeeping) and the column-adding ``mp_fit, detX, ERG, tolerance,
            vectors``.

    Returns:
        ``pandas.DataFrame``, one row per layer view: ``layer, view, ww_layer_id, ww_longname, ww_layer_type,
        module_type, analyzed_by`` (``both``/``spectra``/``weightwatcher``), ``status_spectra, status_ww,
        reason, compared`` (False when a side is missing or failed, or WeightWatcher's number is not one spectra
        reproduces; ``reason`` says which), then for each metric in :data:`COMPARED_METRICS` the columns ``<metric>_spectra``,
        ``<metric>_ww``, ``<metric>_rel_diff``. Failed fits are NaN with the status set. ``attrs`` records
        ``ww_version, ww_path, spectra_version, fit, ww_options, rel_diff`` and any WeightWatcher error.

    Raises:
        ImportError: WeightWatcher is not installed (with the install command).
        ValueError: an unsupported ``ww_options`` key.
    """
    import pandas as pd

    from .. import __version__
    from ..analyze import load_target

    bad = sorted(set(ww_options) - set(ALLOWED_WW_OPTIONS))
    if bad:
        raise ValueError(
            f"unsupported WeightWatcher option(s) {bad}: they change what is compared; allowed: "
            f"{', '.join(ALLOWED_WW_OPTIONS)}"
        )
    ww = import_weightwatcher()  # fail early with the install hint
    thresholds = {k: ww_options[k] for k in ("min_evals", "max_evals", "max_N") if k in ww_options}
    target = load_target(model)
    plan = ww_layer_plan(target, **thresholds)
    by_layer = {p.layer: p for p in plan}
    by_longname = {p.longname: p for p in plan}
    match = _name_matcher(layers)
    wanted = None if layers is None else {p.layer for p in plan if match(p.layer, _param_name(p.layer))}

    res = analyze_ww_compatible(target, layers=layers, fit=fit, ww_skips=False, progress=False, **thresholds)
    sp = _spectra_wide(res)
    skipped = res.layers
    details, ww_error, path, captured = _run_ww(target, plan, wanted, ww_options)

    ww_rows: dict[str, dict] = {}
    if details is not None and len(details):
        for rec in details.to_dict("records"):
            p = by_longname.get(str(rec.get("longname", "")))
            if p is None:
                ids = [q for q in plan if q.layer_id == rec.get("layer_id")]
                p = ids[0] if ids else None
            key = p.layer if p is not None else str(rec.get("longname"))
            ww_rows[key] = rec

    rows: list[dict[str, Any]] = []
    seen_ww: set[str] = set()
    for rec in sp.to_dict("records"):
        layer, view = rec["layer"], rec["view"]
        p = by_layer.get(layer)
        w = ww_rows.get(layer) if view == "W" else None
        if w is not None:
            seen_ww.add(layer)
        rows.append(_make_row(layer, view, p, rec, w, ww_error, analyzed_spectra=True))
    # layers WeightWatcher analyzed (or would have) that spectra did not
    spectra_skip = {}
    if len(skipped):
        for r in skipped[skipped["skip_reason"].notna()].to_dict("records"):
            spectra_skip.setdefault(r["layer"], r["skip_reason"])
    for key, w in ww_rows.items():
        if key in seen_ww:
            continue
        p = by_layer.get(key)
        reason = spectra_skip.get(key, "spectra did not analyze this layer")
        rows.append(_make_row(key, "W", p, None, w, "", analyzed_spectra=False, spectra_reason=reason))
    table = pd.DataFrame(rows)
    table.attrs = {
        "ww_version": getattr(ww, "__version__", "?"),
        "ww_path": path or "not run",
        "ww_error": ww_error,
        "ww_log": captured[-20:],
        "spectra_version": __version__,
        "fit": fit,
        "ww_options": dict(ww_options),
        "rel_diff": "|s - w| / max(|s|, |w|); 0 when both are 0; NaN when either is missing or failed",
        "spectra_conventions": {k: v for k, v in res.attrs.items() if k in ("eigenvalues", "esd_method", "fit")},
    }
    return table


def _make_row(layer: str, view: str, p: WWLayerPlan | None, s: Mapping[str, Any] | None,
              w: Mapping[str, Any] | None, ww_error: str, *, analyzed_spectra: bool,
              spectra_reason: str = "") -> dict[str, Any]:
    row: dict[str, Any] = {
        "layer": layer,
        "view": view,
        "ww_layer_id": p.layer_id if p is not None else None,
        "ww_longname": p.longname if p is not None else None,
        "ww_layer_type": p.ww_type if p is not None else None,
        "module_type": p.module_type if p is not None else None,
    }
    ww_failed = w is not None and (str(w.get("status", "")) == "failed" or _ww_value(w, "alpha", False) == -1)
    if w is not None:
        status_ww = "failed" if ww_failed else "ok"
    elif ww_error:
        status_ww = "error"
    else:
        status_ww = "skipped"
    status_sp = (s or {}).get("status_spectra", "skipped") if analyzed_spectra else "skipped"
    row["analyzed_by"] = {(True, True): "both", (True, False): "spectra", (False, True): "weightwatcher"}.get(
        (s is not None, w is not None), "neither")
    reasons = []
    if w is None:
        if ww_error:
            reasons.append(ww_error)
        elif p is None:
            reasons.append(_not_seen_reason(layer, view))
        elif view != "W":
            reasons.append(f"spectra splits this matrix into views; WeightWatcher sees {layer} whole")
        elif p.skip_reason:
            reasons.append(p.skip_reason)
        else:
            reasons.append("not in WeightWatcher's output")
    if s is None and spectra_reason:
        reasons.append(f"spectra: {spectra_reason}")
    comparable = s is not None and w is not None and not (p is not None and p.note)
    if p is not None and p.note and w is not None:
        reasons.append(p.note)
    if ww_failed:
        reasons.append("WeightWatcher fit failed (alpha = -1)")
    if status_sp == "failed":
        reasons.append(f"spectra fit failed: {(s or {}).get('message_spectra', '')}")
    row["status_spectra"] = status_sp
    row["status_ww"] = status_ww
    row["reason"] = "; ".join(r for r in reasons if r)
    row["compared"] = comparable
    for m in COMPARED_METRICS:
        sv = math.nan
        if s is not None:
            v = s.get(m, math.nan)
            sv = _num(v)
            if status_sp == "failed" and m in FIT_METRICS:
                sv = math.nan
        wv = _ww_value(w, m, ww_failed) if w is not None else math.nan
        row[f"{m}_spectra"] = sv
        row[f"{m}_ww"] = wv
        row[f"{m}_rel_diff"] = float(_rel_diff(np.float64(sv), np.float64(wv))) if comparable else math.nan
    return row


def _num(v: Any) -> float:
    """A finite float, or NaN for None/NaN/NA/inf/non-numbers."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return math.nan
    return f if math.isfinite(f) else math.nan


def _not_seen_reason(layer: str, view: str) -> str:
    local = layer.rsplit(".", 1)[-1]
    if re.match(r"^weight_(ih|hh|hr)_l\d+", local) or local in ("weight_ih", "weight_hh"):
        return "WeightWatcher does not analyze RNN/LSTM/GRU weights"
    if local in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight"):
        return f"WeightWatcher does not see nn.MultiheadAttention's {local} (not a submodule's weight)"
    return "WeightWatcher reads only modules' `weight` attributes; this parameter is not one"


def summarize_comparison(table: Any):
    """Per metric: how many layers both sides report, and the largest absolute and relative differences.

    Args:
        table: the DataFrame returned by :func:`compare_weightwatcher`.

    Returns:
        ``pandas.DataFrame`` with columns ``metric, n_compared, max_abs_diff, max_rel_diff, worst_layer``, one
        row per metric in :data:`COMPARED_METRICS` present in the table; plus ``n_spectra_only``,
        ``n_ww_only`` and ``n_failed`` (either side) as constant columns for a one-glance summary. Failed and
        one-sided rows are never compared.

    Raises:
        ValueError: ``table`` lacks the comparison columns.
    """
    import pandas as pd

    if "analyzed_by" not in getattr(table, "columns", ()) or "compared" not in table.columns:
        raise ValueError("summarize_comparison needs the table returned by compare_weightwatcher")
    out = []
    n_sp = int((table["analyzed_by"] == "spectra").sum())
    n_ww = int((table["analyzed_by"] == "weightwatcher").sum())
    n_failed = int(((table["status_ww"] == "failed") | (table["status_spectra"] == "failed")).sum())
    for m in COMPARED_METRICS:
        cs, cw = f"{m}_spectra", f"{m}_ww"
        if cs not in table or cw not in table:
            continue
        s = table[cs].to_numpy(dtype=float)
        w = table[cw].to_numpy(dtype=float)
        ok = np.isfinite(s) & np.isfinite(w) & table["compared"].to_numpy(dtype=bool)
        if ok.any():
            absd = np.abs(s - w)
            rel = _rel_diff(s, w)
            i = int(np.nanargmax(np.where(ok, rel, -1.0)))
            row = {"metric": m, "n_compared": int(ok.sum()), "max_abs_diff": float(absd[ok].max()),
                   "max_rel_diff": float(rel[ok].max()), "worst_layer": str(table["layer"].iloc[i])}
        else:
            row = {"metric": m, "n_compared": 0, "max_abs_diff": math.nan, "max_rel_diff": math.nan,
                   "worst_layer": ""}
        out.append(row)
    df = pd.DataFrame(out, columns=["metric", "n_compared", "max_abs_diff", "max_rel_diff", "worst_layer"])
    df["n_spectra_only"] = n_sp
    df["n_ww_only"] = n_ww
    df["n_failed"] = n_failed
    df.attrs = dict(getattr(table, "attrs", {}))
    return df
