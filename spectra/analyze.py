"""One-shot, offline analysis of a model, a state_dict or a checkpoint file."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Iterable

from ._common import CONV_SLICES, analyzer_options_with_fit, conventions, unwrap_model
from .progress import make_progress
from .distributed import make_plan, settings_fingerprint
from .engine import resolve_analyzers, run_analyzers
from .results import Results
from .snapshot import LayerState

__all__ = ["analyze", "load_target"]

DEFAULT_OFFLINE_ANALYZERS = ("esd", "tail")


def load_target(obj: Any) -> Any:
    """Normalise what ``analyze`` accepts into an ``nn.Module`` or a state_dict.

    Raises:
        TypeError: unsupported type (names it and lists the accepted ones).
        FileNotFoundError / ValueError: see :func:`spectra.checkpoints.load_state_dict`.
    """
    import torch

    from .checkpoints import extract_state_dict, load_state_dict

    if isinstance(obj, torch.nn.Module):
        return unwrap_model(obj)
    if isinstance(obj, (str, os.PathLike)):
        return load_state_dict(Path(obj))
    if isinstance(obj, Mapping):
        return extract_state_dict(obj, source="the given mapping")
    raise TypeError(
        f"cannot analyze a {type(obj).__name__}; pass a torch.nn.Module, a state_dict (mapping of names to "
        "tensors) or a path to a .pt/.pth/.bin/.ckpt/.safetensors file"
    )


def analyze(
    obj: Any,
    *,
    analyzers: Iterable[Any] = DEFAULT_OFFLINE_ANALYZERS,
    layers: Any = None,
    fit: str = "csn",
    progress: bool | None = None,
    conv_slices: str = "pooled",
    normalize: bool = False,
    esd_method: str = "auto",
    on_error: str = "warn",
    run: str = "analyze",
    tags: Mapping[str, Any] | None = None,
    analyzer_options: Mapping[str, Mapping[str, Any]] | None = None,
    plugins: Iterable[Any] = (),
    plugin_manager: Any = None,
    distributed: Any = None,
) -> Results:
    """Analyze every weight matrix of a model once.

    Args:
        obj: an ``nn.Module`` (DataParallel/DDP wrappers are unwrapped), a state_dict, or a path to a
            checkpoint (``.pt/.pth/.bin/.ckpt`` loaded with ``weights_only=True``, or ``.safetensors``).
        analyzers: registered names or :class:`~spectra.Analyzer` instances (weight-only analyzers make sense
            offline; ``"alignment"`` needs an update and is skipped).
        layers: filter by name glob/regex, module type(s), or a predicate (see :mod:`spectra.layers`).
        fit: power-law fit method for the ``tail`` analyzer (``"csn"``, ``"ww"``, ``"hill"``).
        progress: show a tqdm bar (None: automatically on a terminal for models with many layers).
        conv_slices: ``"pooled"`` (WeightWatcher's default) or ``"separate"`` (one view per kernel position).
        normalize: eigenvalues of (1/N)·WᵀW instead of WᵀW.
        esd_method: ``"auto"``, ``"eigh"`` or ``"svd"`` (see :func:`spectra.functional.esd`).
        on_error: ``"warn"`` (default), ``"raise"`` or ``"ignore"`` for analyzer failures.
        run: value of the ``run`` column.
        tags: extra constant columns.
        analyzer_options: constructor options per analyzer name, e.g. ``{"esd": {"spectrum": True}}``.
        plugins: extra plugin objects for this call only.
        plugin_manager: a ready plugin manager (overrides ``plugins``).
        distributed: ``None`` (default), ``"auto"``, ``"shard"`` or ``"rank0"``: share the layers among
            ``torch.distributed`` ranks; every rank calls ``analyze`` (see :mod:`spectra.distributed`).

    Returns:
        :class:`~spectra.Results` with ``step = 0``; ``results.layers`` lists every parameter, with the skip
        reason for those not analyzed. The model is never modified.
    """
    from .layers import discover_layers, layers_table_rows
    from .plugins import analyzer_registry, get_plugin_manager

    if conv_slices not in CONV_SLICES:
        raise ValueError(f"conv_slices must be one of {CONV_SLICES}, got {conv_slices!r}")
    target = load_target(obj)
    plan = make_plan(distributed, target)  # None: single-process behaviour, no collectives
    pm = plugin_manager or get_plugin_manager(
        plugins=plugins, builtin_options={"spectra.layers": {"conv_slices": conv_slices}}
    )
    analyzers = [analyzers] if isinstance(analyzers, str) else list(analyzers)
    options = analyzer_options_with_fit(fit, analyzer_options, analyzers)
    insts = resolve_analyzers(analyzers, analyzer_registry(pm), options)
    entries = discover_layers(target, hook=pm.hook, select=layers)
    rows = layers_table_rows(entries)
    active = [e for e in entries if e.skip_reason is None]
    attrs = conventions(normalize=normalize, esd_method=esd_method, conv_slices=conv_slices, analyzers=insts)
    attrs["source"] = "analyze"
    if plan is not None:  # a collective: every rank checks that all ranks share the settings
        plan.check_consistent(
            settings_fingerprint(analyzers=insts, entries=active, mode=plan.mode, normalize=normalize,
                                 esd_method=esd_method, conv_slices=conv_slices, on_error=on_error, run=run,
                                 tags=tags),
            what="spectra.analyze settings",
        )
    if not active:
        warnings.warn(
            "spectra.analyze: nothing to analyze (see results.layers for why each parameter was skipped)",
            RuntimeWarning,
            stacklevel=2,
        )
        return Results(layers=rows, attrs=attrs)
    weight_only = [a for a in insts if set(a.needs) <= {"weight"}]
    local = active if plan is None else plan.local(active)
    bar = make_progress(progress, len(local), "spectra.analyze")
    records = []
    warned: set = set()
    error = None
    try:
        for entry in local:
            states = [
                LayerState(
                    layer=entry.layer,
                    view=v.name,
                    step=0,
                    tensors={"weight": v.tensor},
                    eig_scale=v.eig_scale,
                    normalize=normalize,
                    esd_method=esd_method,
                    module_type=entry.module_type,
                )
                for v in entry.views()
            ]
            records.extend(
                run_analyzers(states, weight_only, run=run, hook=pm.hook, on_error=on_error, tags=tags,
                              warned=warned, progress=None)
            )
            if bar is not None:
                bar.update(1)
    except Exception as exc:  # distributed: this rank's layers become failed rows; the gather must still happen
        if plan is None:
            raise
        error = f"{type(exc).__name__}: {exc}"
        records.extend(plan.failed_records(exc, local, records, analyzers=weight_only, run=run, step=0, tags=tags))
    finally:
        if bar is not None:
            bar.close()
    res = Results(records, layers=rows, attrs=attrs)
    try:
        pm.hook.spectra_log_records(records=records, step=0, run=run, log_dir=None)
    except Exception as exc:  # a sink must never break analysis
        warnings.warn(f"spectra: a results sink raised: {exc!r}", RuntimeWarning, stacklevel=2)
    if plan is not None:  # sinks saw this rank's share; the table holds every rank's records
        try:
            res = Results(plan.gather(records, active, error=error, on_error=on_error), layers=rows, attrs=attrs)
        finally:
            plan.close()
    return res
