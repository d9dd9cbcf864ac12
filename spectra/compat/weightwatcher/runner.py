"""Importing and running WeightWatcher 0.7.7 without letting it change the host process.

``import weightwatcher`` configures the root logger, silences warnings, prints notices and picks its
fp16/CUDA path from ``torch.cuda.is_available()``; ``analyze()`` prints and sets a ``longname`` attribute on
every submodule. The context managers here undo each of these (see docs/weightwatcher.md, 'Running
WeightWatcher safely'); :func:`run_ww` combines them to run ``WeightWatcher.analyze`` on the CPU path.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from typing import TYPE_CHECKING, Any, Iterator, Mapping

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from .plan import WWLayerPlan

__all__ = [
    "WW_VERSION",
    "WW_INSTALL_HINT",
    "WW_EVALS_THRESH",
    "WW_EPSILON",
    "import_weightwatcher",
    "hygiene",
    "cuda_hidden",
    "ww_cpu_path",
    "restore_longname",
    "run_ww",
]

logger = logging.getLogger(__name__)

#: The WeightWatcher version the comparison is calibrated for, and how to install it.
WW_VERSION = "0.7.7"
WW_INSTALL_HINT = 'pip install "spectra[ww]"  (or: pip install "weightwatcher==0.7.7")'
#: WeightWatcher's CPU-path fit threshold on eigenvalues and its entropy epsilon.
WW_EVALS_THRESH = 1e-5
WW_EPSILON = 1e-10


@contextlib.contextmanager
def hygiene(captured: list[str]) -> Iterator[None]:
    """Undo what WeightWatcher does to the host process while it runs.

    Restores the root logger's handlers and level, the ``weightwatcher`` logger's state, the warnings filters
    (``import weightwatcher`` calls ``warnings.simplefilter("ignore")``) and swallows its stdout prints.
    WeightWatcher's own log records at WARNING and above are collected in ``captured``.

    Args:
        captured: a list that receives WeightWatcher's WARNING-and-above log lines.

    Yields:
        None, while WeightWatcher runs.
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
def cuda_hidden() -> Iterator[None]:
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
    with hygiene(captured), cuda_hidden():
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
def ww_cpu_path() -> Iterator[str]:
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
        with cuda_hidden():
            yield path
    finally:
        for (mod, name), value in saved.items():
            setattr(mod, name, value)


@contextlib.contextmanager
def restore_longname(model: Any) -> Iterator[None]:
    """WeightWatcher sets a ``longname`` attribute on every submodule; remove the ones it added.

    Args:
        model: the model WeightWatcher runs on (anything but an ``nn.Module`` is left alone).

    Yields:
        None, while WeightWatcher runs.
    """
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


def run_ww(
    target: Any, plan: list[WWLayerPlan], wanted: set[str] | None, options: Mapping[str, Any]
) -> tuple[pd.DataFrame | None, str, str, list[str]]:
    """Run ``WeightWatcher.analyze`` hygienically on its CPU path.

    Args:
        target: the model (or state_dict) to analyze.
        plan: WeightWatcher's layer plan of ``target`` (:func:`~spectra.compat.weightwatcher.ww_layer_plan`).
        wanted: spectra layer names to analyze; ``None`` analyzes all but the layers WeightWatcher would
            crash on.
        options: extra ``WeightWatcher.analyze`` keyword arguments.

    Returns:
        ``(details or None, error message, path description, captured log lines)``. A WeightWatcher exception
        is returned as the error message, never raised.
    """
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
        with hygiene(captured), restore_longname(target), ww_cpu_path() as path:
            details = ww.WeightWatcher(model=target).analyze(layers=ids, svd_method="accurate", **options)
    except Exception as exc:  # a model WeightWatcher cannot read: report spectra's side anyway
        risky = [p.layer_id for p in plan if p.note and p.layer_id > 0]
        if wanted is None and risky and not ids:
            try:  # older scipy raises on the 3-D weights WeightWatcher passes whole: retry without them
                with hygiene(captured), restore_longname(target), ww_cpu_path() as path:
                    details = ww.WeightWatcher(model=target).analyze(
                        layers=[-i for i in risky], svd_method="accurate", **options
                    )
                return details, "", path, captured
            except Exception:
                pass
        return None, f"WeightWatcher raised {type(exc).__name__}: {exc}", path, captured
    return details, "", path, captured
