"""Small helpers shared by ``analyze`` and the monitor (option plumbing, conventions)."""

from __future__ import annotations

from typing import Any, Mapping

__all__ = ["conventions", "analyzer_options_with_fit", "unwrap_model", "CONV_SLICES"]

CONV_SLICES = ("pooled", "separate")


def unwrap_model(model: Any) -> Any:
    """Strip DataParallel / DistributedDataParallel wrappers so layer names match the unwrapped model."""
    import torch

    wrappers = (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)
    while isinstance(model, wrappers):
        model = model.module
    return model


def analyzer_options_with_fit(
    fit: str, options: Mapping[str, Mapping[str, Any]] | None, analyzers: Any
) -> dict[str, dict]:
    """Merge the ``fit=`` shortcut into the ``tail`` analyzer's options when ``"tail"`` is requested by name
    (explicit options win)."""
    from .functional.powerlaw import FIT_METHODS

    if fit not in FIT_METHODS:
        raise ValueError(f"unknown fit method {fit!r}; allowed: {', '.join(FIT_METHODS)}")
    out = {k: dict(v) for k, v in (options or {}).items()}
    names = [analyzers] if isinstance(analyzers, str) else [a for a in analyzers if isinstance(a, str)]
    if "tail" in names:
        out.setdefault("tail", {}).setdefault("method", fit)
    return out


def conventions(*, normalize: bool, esd_method: str, conv_slices: str, analyzers: Any) -> dict[str, Any]:
    """The conventions recorded in every table's ``attrs`` so numbers can be interpreted later."""
    from . import __version__

    return {
        "spectra_version": __version__,
        "eigenvalues": "sigma^2/N (normalized)" if normalize else "sigma^2 of W as viewed (no 1/N)",
        "normalize": normalize,
        "esd_method": esd_method,
        "conv_slices": conv_slices,
        "conv_scale": "pooled Conv2d slices x1/2 (WeightWatcher)" if conv_slices == "pooled" else "per slice x rf/2",
        "analyzers": {a.name: a.config() for a in analyzers},
        "fit": next((a.config().get("method") for a in analyzers if a.name == "tail"), None),
    }
