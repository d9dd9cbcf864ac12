"""Deprecated location: the shard plan lives in :mod:`spectra.pipeline.distributed` (kept for one release)."""

from .pipeline.distributed import (  # noqa: F401
    MODES,
    DistributedConfig,
    ShardPlan,
    as_config,
    assign_layers,
    estimated_cost,
    make_plan,
    resolve_mode,
)
from .pipeline.fingerprint import settings_fingerprint  # noqa: F401
from .pipeline.target import check_model_supported  # noqa: F401

__all__ = ["MODES", "DistributedConfig", "ShardPlan", "resolve_mode", "make_plan", "check_model_supported",
           "estimated_cost", "assign_layers", "settings_fingerprint"]
