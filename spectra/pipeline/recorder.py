"""Where a training driver's records go, how it reads them back, and how a run is saved and resumed.

Without ``log_dir`` the records are kept in memory, and a driver's state (``state_dict``) carries them. With
``log_dir`` they stream to disk as they are made (:class:`~spectra.sinks.StreamingSink`), memory stays flat
(unless ``keep_in_memory=True``), results are read back from the run's parts, and the state is a cursor: the
run id and the step, O(1) in the number of records. Resuming with that cursor continues the same run: no step
is recorded twice, and nothing another run wrote is touched.
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping

from ..table.results import Results
from ..table.schema import record_rows, records_from_rows
from ..table.storage import run_meta_path

__all__ = ["Recorder", "STATE_FORMAT"]

STATE_FORMAT = 2


class Recorder:
    """The records of one training driver's run.

    Args:
        pipeline: the driver's :class:`~spectra.pipeline.Pipeline` (its settings, layers, attrs and stream).
    """

    def __init__(self, pipeline: Any) -> None:
        self.pipeline = pipeline
        keep = pipeline.settings.keep_in_memory
        self.keep = pipeline.settings.log_dir is None if keep is None else keep
        self._results = Results(layers=pipeline.layer_rows, attrs=pipeline.attrs)

    @property
    def run_id(self) -> str | None:
        """The streamed run's id, or ``None`` without ``log_dir``."""
        stream = self.pipeline.stream
        return stream.run_id if stream is not None else None

    def add(self, records: list[Any]) -> None:
        """Keep a step's records (they are already on disk when streaming)."""
        if self.keep:
            self._results.extend(records)

    def relayer(self) -> None:
        """Pick up a grown layers table (parameters added to the optimizer)."""
        self._results = self._results.with_layers(self.pipeline.layer_rows)

    @property
    def results(self) -> Results:
        """Every record of the run so far (read back from ``log_dir`` when not kept in memory)."""
        if self.keep:
            return self._results
        return Results.read(self.pipeline.settings.log_dir, run_id=self.run_id)

    def state_dict(self, *, step: int) -> dict[str, Any]:
        """The driver's state at ``step``: a cursor with ``log_dir``, else the records themselves."""
        state: dict[str, Any] = {"format": STATE_FORMAT, "step": step, "run": self.pipeline.settings.run}
        if self.run_id is not None:
            state.update(run_id=self.run_id, log_dir=str(self.pipeline.settings.log_dir))
        else:
            state["records"] = record_rows(self._results.records)
        return state

    @staticmethod
    def check_state(state: Any) -> int:
        """The step of a well-formed state.

        Raises:
            ValueError: ``state`` is not a mapping, or its step is missing or not a non-negative integer.
        """
        if not isinstance(state, Mapping):
            raise ValueError(f"monitor state must be a dict from state_dict(), got {type(state).__name__}")
        if "step" not in state:
            raise ValueError("monitor state is missing 'step'; expected keys: step, run and records or run_id")
        step = state["step"]
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise ValueError(f"monitor state has invalid step {step!r}; expected a non-negative integer")
        return step

    def load_state_dict(self, state: Mapping[str, Any]) -> int:
        """Continue the run saved in ``state``; returns its step.

        With ``log_dir``: what this recorder's own fresh run wrote (a step 0 of the resumed weights) is removed,
        and the saved run's parts after the saved step move to ``records/superseded/``, to be recomputed.
        Without: the saved records replace the in-memory ones.

        Raises:
            ValueError: a malformed state (names the bad key or value), or a cursor into a ``log_dir`` the
                driver does not stream to.
        """
        step = self.check_state(state)
        run_id = state.get("run_id")
        stream = self.pipeline.stream
        if run_id is not None:
            if stream is None:
                raise ValueError(f"this state continues run {run_id!r} in log_dir {state.get('log_dir')!r}; pass "
                                 "log_dir= to resume it")
            if not run_meta_path(stream.log_dir, run_id).exists():
                warnings.warn(f"spectra: run {run_id!r} has no meta file in {stream.log_dir} (saved with log_dir="
                              f"{state.get('log_dir')!r}); its earlier records are not in this directory",
                              RuntimeWarning, stacklevel=3)
            stream.resume(run_id, step)
            self.pipeline.attrs["run_id"] = run_id
            self._results = Results(layers=self.pipeline.layer_rows, attrs=self.pipeline.attrs)
            if self.keep:
                saved = Results.read(stream.log_dir, run_id=run_id)
                self._results = Results.from_pandas(saved.to_pandas(), layers=self._results.layers,
                                                    attrs=self.pipeline.attrs)
        elif "records" in state:
            self._results = Results(records_from_rows(state["records"]), layers=self.pipeline.layer_rows,
                                    attrs=self._results.attrs)
        else:
            raise ValueError("monitor state has neither records nor a run_id; expected keys: step, run and "
                             "records or run_id")
        return step
