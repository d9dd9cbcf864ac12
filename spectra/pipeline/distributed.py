"""The shard plan: which layers each rank of a ``torch.distributed`` job analyzes, and the collectives.

Modes (the ``distributed=`` setting of every driver):

* ``None`` (default): no collective calls at all, and this module is never imported; every process analyzes
  every layer, as without ``torch.distributed``.
* ``"auto"``: ``"shard"`` when a process group is initialised with ``world_size > 1``, else ``None``.
* ``"shard"``: the analyzed layers are assigned to ranks by estimated cost (longest-processing-time greedy over
  ``num_matrices·N·M·min(N, M)`` per view, deterministic, the same on every rank). Each rank analyzes its
  share where the tensors live (its own GPU under DDP), streams its own records to its sinks, and the records
  are then all-gathered, so **every rank** holds the full table, in exactly the row order of a single process.
  Requires an initialised process group (``RuntimeError`` otherwise).
* ``"rank0"``: rank 0 analyzes every layer; the other ranks analyze nothing and hold an empty table. No
  collective per analyzed step.

Safety:

* When a driver starts, the ranks all-gather a fingerprint of their settings
  (:meth:`spectra.pipeline.settings.Settings.fingerprint`). Any difference raises ``ValueError`` on every
  rank, naming the setting and each rank's value. A rank that never joins (e.g. it was given
  ``distributed=None``) makes the others raise ``RuntimeError`` after ``check_timeout`` seconds instead of
  hanging.
* A rank whose analysis raises marks its layers ``failed`` (one row per layer view and analyzer) and still
  joins the gather, so the other ranks' results are kept. With ``on_error="raise"`` every rank raises after
  the gather, naming the failing rank(s).
* spectra's collectives run on their own gloo process groups (CPU, created from the default group's store),
  whatever the training backend is (gloo or NCCL): the records are small Python objects.
* FSDP and DTensor models are refused in every mode (:func:`spectra.pipeline.target.check_model_supported`).

The protocol that uses the plan (local share, sinks, gather) lives in :class:`spectra.pipeline.Pipeline`.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Sequence

from ..table.schema import Record

__all__ = [
    "MODES",
    "DistributedConfig",
    "ShardPlan",
    "resolve_mode",
    "as_config",
    "make_plan",
    "estimated_cost",
    "assign_layers",
]

logger = logging.getLogger(__name__)

MODES = ("auto", "shard", "rank0")
DEFAULT_CHECK_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class DistributedConfig:
    """``distributed=`` with explicit timeouts (a plain mode string uses the defaults).

    Attributes:
        mode: ``"auto"``, ``"shard"`` or ``"rank0"``.
        check_timeout: seconds to wait for every rank at the settings check (default 60).
        timeout: seconds to wait for the slowest rank at each gather of records (``None``: torch's default
            for gloo groups, 30 minutes). Must cover the slowest rank's analysis of its share.
    """

    mode: str = "shard"
    check_timeout: float = DEFAULT_CHECK_TIMEOUT_S
    timeout: float | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"distributed mode must be one of {MODES}, got {self.mode!r}")
        for name in ("check_timeout", "timeout"):
            v = getattr(self, name)
            if v is None and name == "timeout":
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 0):
                raise ValueError(f"DistributedConfig.{name} must be a positive number of seconds, got {v!r}")


def as_config(distributed: Any) -> DistributedConfig | None:
    if distributed is None:
        return None
    if isinstance(distributed, DistributedConfig):
        return distributed
    if isinstance(distributed, str) and distributed in MODES:
        return DistributedConfig(distributed)
    raise ValueError(
        f"distributed must be None, one of {MODES} or a spectra.distributed.DistributedConfig, got {distributed!r}"
    )


def _pg_ready() -> bool:
    """Whether a default process group is initialised. Looks in ``sys.modules`` and never imports
    ``torch.distributed``: no group can exist unless the program imported it."""
    dist = sys.modules.get("torch.distributed")
    return dist is not None and dist.is_available() and dist.is_initialized()


def resolve_mode(distributed: Any) -> str | None:
    """The effective mode: ``None``, ``"shard"`` or ``"rank0"``.

    Raises:
        ValueError: an unknown mode.
        RuntimeError: ``"shard"``/``"rank0"`` requested without an initialised process group.
    """
    cfg = as_config(distributed)
    if cfg is None:
        return None
    if cfg.mode == "auto":
        if not _pg_ready():
            return None
        import torch.distributed as dist

        return "shard" if dist.get_world_size() > 1 else None
    if not _pg_ready():
        raise RuntimeError(
            f"spectra: distributed={cfg.mode!r} needs an initialised torch.distributed process group, but none "
            "is initialised; call torch.distributed.init_process_group(...) first (torchrun sets the "
            "environment for it), or pass distributed=None (every process analyzes everything) or 'auto' "
            "(shard only when a process group is running)"
        )
    return cfg.mode


# ------------------------------------------------------------------------------------------- assignment
def estimated_cost(entry: Any) -> int:
    """Relative cost of analyzing one layer: Σ over views of ``num_matrices · N · M · min(N, M)``.

    An eigendecomposition of the M×M Gram matrix costs O(M³) and forming it O(N·M²), so N·M² tracks both.
    """
    total = 0
    for s in getattr(entry, "shapes", ()):
        total += int(s.num_matrices) * int(s.N) * int(s.M) * min(int(s.N), int(s.M))
    return max(total, 1)


def assign_layers(entries: Sequence[Any], world_size: int) -> list[int]:
    """Owner rank of each entry: longest-processing-time greedy on :func:`estimated_cost`.

    Deterministic (ties broken by entry order, then by rank), so every rank computes the same assignment.
    """
    if not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be a positive integer, got {world_size!r}")
    costs = [estimated_cost(e) for e in entries]
    order = sorted(range(len(entries)), key=lambda i: (-costs[i], i))
    loads = [0] * world_size
    owner = [0] * len(entries)
    for i in order:
        r = min(range(world_size), key=lambda k: (loads[k], k))
        owner[i] = r
        loads[r] += costs[i]
    return owner


# ------------------------------------------------------------------------------------------- the plan
class ShardPlan:
    """Which layers this rank analyzes, and the collectives that check settings and gather records.

    Built by :func:`make_plan`; one per monitor (or per ``analyze`` call). Collectives use gloo groups of
    their own, created on first use (every rank must reach the same calls in the same order) and released by
    :meth:`close`.
    """

    def __init__(self, mode: str, config: DistributedConfig) -> None:
        import torch.distributed as dist

        if mode not in ("shard", "rank0"):
            raise ValueError(f"ShardPlan mode must be 'shard' or 'rank0', got {mode!r}")
        self.mode = mode
        self.config = config
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self._check_group: Any = None
        self._data_group: Any = None
        self._cache: tuple[tuple[str, ...], list[int]] | None = None
        self.last_loads: list[int] = []
        self._t_local = time.perf_counter()

    def __repr__(self) -> str:
        return f"ShardPlan(mode={self.mode!r}, rank={self.rank}, world_size={self.world_size})"

    # -------------------------------------------------------------- groups
    def _group(self, which: str) -> Any:
        import torch.distributed as dist

        attr = "_check_group" if which == "check" else "_data_group"
        if getattr(self, attr) is None:
            secs = self.config.check_timeout if which == "check" else self.config.timeout
            timeout = datetime.timedelta(seconds=secs) if secs is not None else None
            setattr(self, attr, dist.new_group(backend="gloo", timeout=timeout))
        return getattr(self, attr)

    def close(self) -> None:
        """Release the gloo groups (local, not a collective). Safe to call more than once."""
        import torch.distributed as dist

        for attr in ("_check_group", "_data_group"):
            g = getattr(self, attr)
            setattr(self, attr, None)
            if g is not None and _pg_ready():
                try:
                    dist.destroy_process_group(g)
                except Exception as exc:  # pragma: no cover - best effort at teardown
                    logger.debug("could not destroy a spectra process group: %r", exc)

    # -------------------------------------------------------------- settings check
    def _gather_check(self, value: Any, what: str) -> list[Any]:
        """All-gather ``value`` on the settings-check group; a rank that never joins is a RuntimeError."""
        import torch.distributed as dist

        gathered: list[Any] = [None] * self.world_size
        t0 = time.perf_counter()
        try:
            dist.all_gather_object(gathered, value, group=self._group("check"))
        except Exception as exc:
            self.close()
            raise RuntimeError(
                f"spectra (distributed={self.mode!r}): rank {self.rank} waited {time.perf_counter() - t0:.1f} s "
                f"(check_timeout={self.config.check_timeout} s) for the other ranks to compare {what}; every "
                "rank must build its SpectraMonitor / call spectra.analyze with the same distributed= setting "
                f"at the same point of the program ({type(exc).__name__}: {exc})"
            ) from exc
        return gathered

    def check_consistent(self, settings: Mapping[str, str], *, what: str = "settings") -> None:
        """All-gather ``settings`` and compare them field by field (a collective on every rank).

        Raises:
            ValueError: the ranks' settings differ (on every rank; names each differing field per rank).
            RuntimeError: some rank did not join within ``check_timeout`` seconds.
        """
        if self.world_size == 1:
            return
        gathered = self._gather_check(dict(settings), what)
        diffs = []
        for key in sorted(set().union(*(g.keys() for g in gathered))):
            values = [g.get(key, "<missing>") for g in gathered]
            if len(set(values)) > 1:
                diffs.append(f"{key} ({_explain(values)})")
        if diffs:
            self.close()
            raise ValueError(
                f"spectra (distributed={self.mode!r}): the {what} differ across ranks, and every rank must use "
                f"the same ones: " + " | ".join(diffs)
            )

    def agree(self, value: Any, *, what: str = "a value") -> Any:
        """Rank 0's ``value`` on every rank (a collective on the settings-check group), e.g. a run id."""
        return value if self.world_size == 1 else self._gather_check(value, what)[0]

    # -------------------------------------------------------------- assignment
    def owners(self, entries: Sequence[Any]) -> list[int]:
        """Owner rank of each entry (cached by layer names; recomputed when the layer list changes)."""
        key = tuple(e.layer for e in entries)
        if self._cache is None or self._cache[0] != key:
            if self.mode == "rank0":
                owner = [0] * len(entries)
            else:
                owner = assign_layers(entries, self.world_size)
            self._cache = (key, owner)
            loads = [0] * self.world_size
            for e, r in zip(entries, owner):
                loads[r] += estimated_cost(e)
            self.last_loads = loads
        return list(self._cache[1])

    def local(self, entries: Sequence[Any]) -> list[Any]:
        """The entries this rank analyzes, in their original order (also starts the local timer)."""
        self._t_local = time.perf_counter()
        return [e for e, r in zip(entries, self.owners(entries)) if r == self.rank]

    # -------------------------------------------------------------- failure and gather
    def failed_records(
        self, exc: BaseException, entries: Sequence[Any], done: Sequence[Record], *, analyzers: Sequence[Any],
        run: str, step: int, tags: Mapping[str, Any] | None,
    ) -> list[Record]:
        """``failed`` rows for each (layer view, analyzer) of ``entries`` that produced no record yet."""
        have = {r.layer for r in done}
        msg = f"rank {self.rank}: {type(exc).__name__}: {exc}"
        return [
            Record.failed(run=run, step=step, layer=e.layer, view=view, analyzer=an.name, message=msg, tags=tags)
            for e in entries if e.layer not in have
            for view in e.view_names or ("",)
            for an in analyzers
        ]

    def gather(
        self, records: Sequence[Record], entries: Sequence[Any], *, policy: Any, error: str | None = None,
        step: int = 0,
    ) -> list[Record]:
        """Merge every rank's records into single-process order (``"shard"``; a collective on every rank).

        ``"rank0"`` returns ``records`` unchanged (no collective). A rank's ``error`` goes through ``policy``
        (an :class:`~spectra.pipeline.engine.ErrorPolicy`): with ``"raise"`` every rank raises ``RuntimeError``
        after the gather, naming the failing rank(s).
        """
        if self.mode == "rank0" or self.world_size == 1:
            if error is not None:
                policy.handle(RuntimeError(f"spectra: analysis failed on rank {self.rank}: {error}"),
                              key=("rank", step))
            return list(records)
        import torch.distributed as dist

        gathered: list[Any] = [None] * self.world_size
        t0 = time.perf_counter()
        local_s = t0 - self._t_local
        try:
            dist.all_gather_object(gathered, (list(records), error), group=self._group("data"))
        except Exception as exc:
            self.close()
            raise RuntimeError(
                f"spectra (distributed='shard'): rank {self.rank} could not gather the records of step {step} "
                f"from the other ranks within the timeout ({type(exc).__name__}: {exc}); a rank stopped or is "
                "far slower (raise DistributedConfig(timeout=...))"
            ) from exc
        gather_s = time.perf_counter() - t0
        errors = [(r, e) for r, (_, e) in enumerate(gathered) if e is not None]
        if errors:
            text = "; ".join(f"rank {r}: {e}" for r, e in errors)
            policy.handle(
                RuntimeError(f"spectra: analysis of step {step} failed on {text}"), key=("gather", step),
                message=f"spectra: analysis of step {step} failed on {text}; that rank's layers are marked failed",
            )
        position = {}
        for i, e in enumerate(entries):
            position.setdefault(e.layer, i)
        keyed = [
            (position.get(rec.layer, len(entries)), r, j, rec)
            for r, (recs, _) in enumerate(gathered)
            for j, rec in enumerate(recs)
        ]
        keyed.sort(key=lambda t: t[:3])
        timing = {"rank": self.rank, "step": step, "local_s": local_s, "gather_s": gather_s,
                  "local_layers": sum(1 for r in self.owners(entries) if r == self.rank), "loads": self.last_loads}
        logger.debug(
            "rank %d: own share analyzed in %.3f s, %d records of step %d gathered in %.3f s", self.rank, local_s,
            len(keyed), step, gather_s, extra={"spectra_timing": timing},
        )
        return [t[3] for t in keyed]


def _short(text: str, limit: int = 240) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _explain(values: Sequence[str]) -> str:
    """Each rank's value; for lists (analyzers, layers) only what differs from rank 0's list."""
    try:
        parsed = [json.loads(v) for v in values]
    except ValueError:
        parsed = []
    if not parsed or not all(isinstance(p, list) for p in parsed):
        return "; ".join(f"rank {r}: {_short(v)}" for r, v in enumerate(values))
    items = [[json.dumps(x, sort_keys=True) for x in p] for p in parsed]
    out = []
    for r in range(1, len(items)):
        if items[r] == items[0]:
            continue
        extra = [x for x in items[r] if x not in items[0]]
        missing = [x for x in items[0] if x not in items[r]]
        if not (extra or missing):
            out.append(f"rank {r}: the same entries as rank 0 in another order")
            continue
        parts = []
        if extra:
            parts.append(f"has {len(extra)} not on rank 0: {_short(', '.join(extra), 200)}")
        if missing:
            parts.append(f"lacks {len(missing)} of rank 0's: {_short(', '.join(missing), 200)}")
        out.append(f"rank {r} " + " and ".join(parts))
    return "; ".join(out)


def make_plan(distributed: Any) -> ShardPlan | None:
    """Validate ``distributed=``; return the plan, or ``None`` for single-process behaviour.

    Raises:
        ValueError: unknown mode. RuntimeError: ``"shard"``/``"rank0"`` without a process group.
    """
    cfg = as_config(distributed)
    mode = resolve_mode(cfg)
    if mode is None:
        return None
    return ShardPlan(mode, cfg)
