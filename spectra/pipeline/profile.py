"""Where a driver's analysis time goes: seconds per stage, analyzer and layer view, summed over due steps.

The :class:`~spectra.pipeline.Pipeline` times what it does on a due step with :func:`time.perf_counter` (two
calls per analyzer and view: negligible next to a decomposition) and adds it here; the monitor adds what its
hooks do on the training thread. A step with nothing due adds nothing (docs/design.md, "Background analysis
and cost awareness").

Stages:

* ``capture``: copies taken in the optimizer's pre-step hook (W_{t−1}, G_{t−1});
* ``handoff``: with ``background=True``, the copy of W_t taken in the post-step hook for the worker;
* ``queue_wait``: with ``background=True``, time a training step waited for room in the worker's queue;
* ``snapshot``: building the layer's snapshots (ΔW, views) from the copies, per layer;
* ``decompose``: the shared decompositions of a view (one Gram reduction per matrix), per layer view;
* ``analyzer``: one analyzer on one view, after the shared decompositions;
* ``sink``: one sink's ``spectra_log_records`` call (``name`` is the sink's class), per step.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["Profile", "STAGES", "TRAINING_THREAD_STAGES"]

STAGES = ("capture", "handoff", "queue_wait", "snapshot", "decompose", "analyzer", "sink")
# stages that always run on the training thread (the others run wherever the analysis runs)
TRAINING_THREAD_STAGES = ("capture", "handoff", "queue_wait")
_COLUMNS = ("stage", "name", "layer", "view", "thread", "count", "seconds", "mean_seconds", "share")


class Profile:
    """Accumulated seconds and counts per ``(stage, name, layer, view)``; safe to add to from two threads.

    Example:
        >>> p = Profile()
        >>> p.add("analyzer", "esd", "fc1", "W", 0.25)
        >>> p.add("analyzer", "esd", "fc1", "W", 0.75)
        >>> p.seconds(stage="analyzer")
        1.0
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals: dict[tuple[str, str, str, str], list[float]] = {}
        self.steps = 0

    def __repr__(self) -> str:
        return f"Profile(steps={self.steps}, entries={len(self._totals)}, seconds={self.seconds():.3g})"

    def add(self, stage: str, name: str, layer: str, view: str, seconds: float) -> None:
        """Add one timed call.

        Args:
            stage: one of :data:`STAGES`.
            name: the analyzer's or sink's name (``""`` for the other stages).
            layer: the layer (``""`` for per-step stages).
            view: the view (``""`` for per-layer and per-step stages).
            seconds: wall time of the call.
        """
        key = (stage, name, layer, view)
        with self._lock:
            slot = self._totals.get(key)
            if slot is None:
                self._totals[key] = [1.0, seconds]
            else:
                slot[0] += 1
                slot[1] += seconds

    def count_step(self) -> None:
        """Count one analyzed step (the table's ``attrs["due_steps"]``)."""
        with self._lock:
            self.steps += 1

    def seconds(self, *, stage: str | None = None) -> float:
        """Total seconds, of one stage or of all."""
        with self._lock:
            return float(sum(v[1] for k, v in self._totals.items() if stage is None or k[0] == stage))

    def to_pandas(self, *, background: bool = False) -> Any:
        """The profile as a table, slowest first.

        Args:
            background: the analysis ran in a worker thread (sets the ``thread`` column of the stages that are
                not :data:`TRAINING_THREAD_STAGES` to ``"worker"``).

        Returns:
            A ``pandas.DataFrame`` with columns ``stage, name, layer, view, thread, count, seconds, mean_seconds,
            share`` (``share``: the row's fraction of all the seconds), and ``attrs`` ``due_steps``,
            ``background`` and ``seconds`` (the total).
        """
        import pandas as pd

        with self._lock:
            items = [(k, int(v[0]), v[1]) for k, v in self._totals.items()]
            steps = self.steps
        total = sum(s for _, _, s in items)
        rows = []
        for (stage, name, layer, view), count, secs in items:
            thread = "worker" if background and stage not in TRAINING_THREAD_STAGES else "training"
            rows.append((stage, name, layer, view, thread, count, secs, secs / count,
                         secs / total if total > 0 else 0.0))
        df = pd.DataFrame(rows, columns=list(_COLUMNS))
        df = df.astype({"count": "int64", "seconds": "float64", "mean_seconds": "float64", "share": "float64"})
        df = df.sort_values("seconds", ascending=False, kind="stable").reset_index(drop=True)
        df.attrs.update(due_steps=steps, background=background, seconds=total)
        return df
