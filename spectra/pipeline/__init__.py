"""The one path from parameters to records, shared by every driver.

* :mod:`.settings`: :class:`Settings`, every driver option validated once; conventions and rank fingerprint.
* :mod:`.capture`: what to copy before a step, and how copies become snapshots after it.
* :mod:`.engine`: resolve and run analyzers; :class:`ErrorPolicy`, the one error policy.
* :mod:`.pipeline`: :class:`Pipeline`, which owns plugins, analyzers, layers, sinks and the shard plan.
* :mod:`.recorder`: where a training driver's records go, and its resumable state (a cursor into log_dir).
* :mod:`.deltas`: ``analyze(model, base=...)``: the snapshots of ΔW = W − W_base (LoRA adapters as B·A).
* :mod:`.target`: loading and checking what is analyzed; optimizer wrappers seen through.
* :mod:`.distributed`: the shard plan under ``torch.distributed`` (imported only when asked for).

A new driver (a framework callback) needs only :class:`Settings` and :class:`Pipeline`; see docs/design.md.
"""

from .engine import ErrorPolicy
from .pipeline import Pipeline
from .settings import Settings

__all__ = ["Pipeline", "Settings", "ErrorPolicy"]
