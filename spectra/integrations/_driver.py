"""The part of a framework callback that does not depend on the framework: one driver per optimizer.

A framework callback is a driver built from :class:`~spectra.pipeline.Settings` and
:class:`~spectra.pipeline.Pipeline` (docs/design.md, "Data flow"), not on :class:`~spectra.SpectraMonitor`,
because a trainer knows better than an optimizer pre-hook when a step's inputs are final:

* Lightning calls ``optimizer.step(closure)``, and the closure runs the forward and backward passes *inside*
  the step, after the optimizer's pre-hooks; a pre-hook would copy the previous step's gradient. The trainer's
  "before optimizer step" hook (Lightning's ``on_before_optimizer_step``, Hugging Face's
  ``on_pre_optimizer_step``) runs after backward, gradient accumulation and loss unscaling, and before the
  weights change: that is where :meth:`OptimizerDriver.before_step` copies W_{t-1} and G_{t-1}.
* The step counter is the trainer's ``global_step`` (+1 for the step being taken), so rows line up with the
  trainer's logs through gradient accumulation, skipped mixed-precision steps and resumption.
* The analysis runs in the optimizer's post-step hook, which fires only when the step really happened (a
  ``GradScaler`` that skips a step never calls it), so a skipped step has no rows.

Records stream to a ``log_dir`` and are read back from it (:class:`~spectra.pipeline.recorder.Recorder`, the
monitor's recorder): a checkpoint carries a cursor (run id and step), not the records, and resuming
supersedes what was recorded after the checkpoint, so a resumed run's table equals an uninterrupted one's.
"""

from __future__ import annotations

import warnings
import weakref
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..layers import selector_predicate, unwrap_model
from ..pipeline.capture import needs_of, take_copies
from ..pipeline.pipeline import Pipeline
from ..pipeline.recorder import Recorder
from ..pipeline.settings import Settings
from ..pipeline.target import check_model_supported, unwrap_optimizer
from ..scalar_sinks import DEFAULT_METRICS, layer_means, scalar_values
from ..table.results import Results

__all__ = ["OptimizerDriver", "CallbackCore", "optimizer_names", "STATE_FORMAT", "DEFAULT_LOG_METRICS"]

STATE_FORMAT = 1
DEFAULT_LOG_METRICS = DEFAULT_METRICS


def _post_hook(driver: "OptimizerDriver") -> Any:
    """An optimizer post-step hook that reaches the driver through a weak reference."""
    ref = weakref.ref(driver)

    def spectra_post_step(optimizer: Any, args: Any, kwargs: Any) -> None:
        target = ref()
        if target is not None:
            target.after_step()

    return spectra_post_step


class OptimizerDriver:
    """Spectra of the parameters of one optimizer, analyzed at the trainer's steps.

    Args:
        model: the module being trained (DDP/DataParallel/``torch.compile`` wrappers are unwrapped).
        optimizer: its optimizer (known wrappers are unwrapped, see
            :func:`~spectra.pipeline.target.unwrap_optimizer`).
        settings: validated settings with ``log_dir`` set; ``layers=`` is narrowed to this optimizer's
            parameters.
        name: the driver's name (the optimizer's, when a trainer has several).
        source: ``attrs["source"]`` of the table (``"lightning"``, ``"transformers"``).
        own_clock: evaluate the schedule on this optimizer's own step count instead of the global step (a
            trainer with several optimizers advances its global step once per optimizer step).
    """

    def __init__(self, model: Any, optimizer: Any, settings: Settings, *, name: str, source: str,
                 own_clock: bool = False) -> None:
        self.name = name
        self.optimizer = unwrap_optimizer(optimizer)
        target = unwrap_model(model)
        check_model_supported(target)
        self.settings = settings.replace(layers=self._selector(settings.layers, target))
        self.pipeline = Pipeline(self.settings, target, source=source)
        self.recorder = Recorder(self.pipeline)
        self.own_clock = own_clock
        self.step = 0  # the trainer's global step after the last step this optimizer took
        self.count = 0  # this optimizer's own completed steps (the schedule's clock with own_clock)
        self.fresh: list[Any] = []  # records not yet handed to the trainer's loggers
        self._pending: tuple[int, list[Any], dict[int, Any]] | None = None
        self._in_flight: int | None = None  # the global step being taken (set before it, confirmed after it)
        self._seen_ids = self._ids()
        self._handle = self.optimizer.register_step_post_hook(_post_hook(self))

    def __repr__(self) -> str:
        return (f"OptimizerDriver(name={self.name!r}, step={self.step}, layers={len(self.pipeline.entries)}, "
                f"log_dir={str(self.settings.log_dir)!r})")

    def _ids(self) -> set[int]:
        return {id(p) for g in self.optimizer.param_groups for p in g["params"]}

    def _selector(self, user: Any, target: Any) -> Any:
        """The user's ``layers=`` selector, narrowed to the parameters this optimizer steps (read live, so
        parameters added with ``add_param_group`` join at the next due step)."""
        keep = selector_predicate(user)
        names: dict[int, str] = {}
        for n, p in target.named_parameters(remove_duplicate=False):
            names.setdefault(id(p), n)
        ids = self._ids

        def in_optimizer(layer: str, param: Any, module: Any) -> bool:
            return id(param) in ids() and keep(layer, names.get(id(param), layer), param, module)

        return in_optimizer

    # ------------------------------------------------------------------------------------------ lifecycle
    def start(self, global_step: int, state: Mapping[str, Any] | None = None) -> None:
        """Begin at the trainer's ``global_step``: continue the run saved in ``state`` (a checkpoint's cursor),
        or start a new one, analyzing the initial weights when at step 0."""
        self.pipeline.check_consistent(step=global_step, what=f"SpectraCallback settings ({self.name})")
        self.step = global_step
        if state is not None:
            self.count = int(state.get("count", global_step))
            _in_rank_order(lambda: self.recorder.load_state_dict({**state, "step": global_step}))
        elif global_step == 0:
            due = self.pipeline.due(0)
            if due:
                self._keep(self.pipeline.run(0, due))

    def close(self) -> None:
        """Remove the hook and release the process groups (idempotent); the results stay readable."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        self._pending = None
        self.pipeline.close()

    def _keep(self, records: Sequence[Any]) -> None:
        self.recorder.add(list(records))
        self.fresh.extend(records)

    # ------------------------------------------------------------------------------------------ the step
    def before_step(self, global_step: int) -> None:
        """The trainer is about to step this optimizer: gradients are final, weights not yet updated."""
        step = global_step + 1
        if self._pending is not None and self._pending[0] == step:
            return  # the closure ran again within one step (LBFGS): keep the copies from its first call
        self._pending, self._in_flight = None, step
        due = self.pipeline.due(self.count + 1 if self.own_clock else step)
        if not due:
            return
        try:
            ids = self._ids()
            self._pick_up_new_params(ids)
            copies = take_copies(self.pipeline.local_entries(), needs_of(due), include=ids)
        except Exception as exc:  # capture must never break training
            self.pipeline.policy.handle(exc, key=("capture", step),
                                        message=f"spectra: could not capture step {step}: {exc!r}")
            if self.pipeline.plan is None:
                return
            copies = {}  # distributed: this rank still joins the step's gather
        self._pending = (step, due, copies)

    def after_step(self) -> None:
        """The optimizer stepped (called by its post-step hook): analyze what :meth:`before_step` captured."""
        pending, self._pending = self._pending, None
        self.count += 1
        if self._in_flight is not None:
            self.step, self._in_flight = self._in_flight, None
        failures = self.pipeline.take_failures()
        if failures:  # a schedule raised: its failed rows go out like any record
            self.pipeline.emit(failures, failures[0].step)
            self._keep(failures)
        if pending is None:
            return
        step, due, copies = pending
        try:
            self._keep(self.pipeline.run(step, due, copies, include=self._ids()))
        except Exception as exc:
            self.pipeline.policy.handle(exc, key=("step", step),
                                        message=f"spectra: analysis of step {step} failed: {exc!r}")
        finally:
            copies.clear()

    def _pick_up_new_params(self, ids: set[int]) -> None:
        if ids - self._seen_ids:
            self._seen_ids |= ids
            if self.pipeline.add_new_params(ids):
                self.recorder.relayer()

    # ------------------------------------------------------------------------------------------ state
    def state_dict(self, global_step: int) -> dict[str, Any]:
        """The cursor that resumes this driver at ``global_step`` (the recorder's, plus the optimizer's count)."""
        return {**self.recorder.state_dict(step=global_step), "count": self.count, "name": self.name}

    @property
    def results(self) -> Results:
        """Every record of the run so far, read back from ``log_dir``."""
        return self.recorder.results


def _in_rank_order(fn: Any) -> None:
    """Run ``fn`` on rank 0 first, then on the other ranks (resuming moves files in a shared ``log_dir``)."""
    import sys

    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized() or dist.get_world_size() == 1:
        fn()
        return
    if dist.get_rank() == 0:
        fn()
    dist.barrier()
    if dist.get_rank() != 0:
        fn()
    dist.barrier()


def optimizer_names(optimizers: Sequence[Any], names: Sequence[str] | None = None) -> list[str]:
    """One name per optimizer: the given ``names``, else the class names in lower case (``adam``, ``sgd``),
    numbered when they repeat (``adam_0``, ``adam_1``).

    Raises:
        ValueError: ``names`` has another length than ``optimizers``, or repeats or empty names.
    """
    if names is not None:
        names = [str(n) for n in names]
        if len(names) != len(optimizers) or len(set(names)) != len(names) or not all(names):
            raise ValueError(f"optimizer_names must give {len(optimizers)} distinct non-empty names (one per "
                             f"optimizer), got {names!r}")
        return names
    base = [type(unwrap_optimizer(o)).__name__.lower() for o in optimizers]
    return [b if base.count(b) == 1 else f"{b}_{i}" for i, b in enumerate(base)]


class CallbackCore:
    """What both framework callbacks share: options, one :class:`OptimizerDriver` per optimizer, state, logs.

    Args:
        source: the framework (``attrs["source"]``).
        log_dir: where records stream (``None``: the framework's default, under its output directory).
        optimizer_names: names for several optimizers (see :func:`optimizer_names`).
        log_metrics: metrics whose mean over layers goes to the trainer's logs as ``spectra/<metric>``
            (``None``: nothing is logged).
        log_layers: also log every layer's value, as ``<metric>/<layer>``.
        options: any :class:`~spectra.pipeline.Settings` option (validated now, as the monitor does);
            ``distributed`` defaults to ``"auto"``.
    """

    def __init__(self, *, source: str, log_dir: Any, optimizer_names: Sequence[str] | None,
                 log_metrics: Sequence[str] | None, log_layers: bool, options: Mapping[str, Any]) -> None:
        options = dict(options)
        if "log_dir" in options:
            raise TypeError("pass log_dir= to the callback itself (it is the callback's own argument)")
        self.source = source
        self.settings = Settings.build("callback", **options)
        self.log_dir = None if log_dir is None else Path(log_dir)
        self.names = None if optimizer_names is None else list(optimizer_names)
        self.log_metrics = None if log_metrics is None else tuple(log_metrics)
        if self.log_metrics is not None:
            layer_means([], metrics=self.log_metrics)  # validates the names now
        if not isinstance(log_layers, bool):
            raise TypeError(f"log_layers must be True or False, got {log_layers!r}")
        self.log_layers = log_layers
        self.drivers: dict[str, OptimizerDriver] = {}

    # ------------------------------------------------------------------------------------------ attach
    def attach(self, model: Any, optimizers: Sequence[Any], *, global_step: int, default_log_dir: Path,
               state: Mapping[str, Any] | None, what: str) -> None:
        """Build one driver per optimizer and start them at ``global_step`` (resuming from ``state``).

        Raises:
            RuntimeError: no optimizer (``what`` says where the trainer should have made one).
        """
        if not optimizers:
            raise RuntimeError(f"SpectraCallback needs an optimizer, but {what}; spectra analyzes the weights at "
                               "the optimizer's steps (for a model that is not trained use spectra.analyze(model))")
        if state is None and self.drivers and global_step > 0 and global_step == max(
                d.step for d in self.drivers.values()):
            state = self.state_dict(global_step)  # the same training goes on (fit called again): same run
        self.close()
        names = optimizer_names(optimizers, self.names)
        saved = dict((state or {}).get("monitors", {}))
        if saved and not set(saved) & set(names):
            warnings.warn(f"spectra: the checkpoint continues monitors {sorted(saved)} but this trainer's optimizers "
                          f"are {names}; starting new runs (pass optimizer_names= to match them)", RuntimeWarning,
                          stacklevel=3)
        several = len(optimizers) > 1
        for name, opt in zip(names, optimizers):
            log_dir = self._log_dir(saved.get(name), default_log_dir, name if several else None)
            tags = {**self.settings.tags, "optimizer": name} if several else dict(self.settings.tags)
            settings = self.settings.replace(log_dir=log_dir, tags=tags)
            self.drivers[name] = OptimizerDriver(model, opt, settings, name=name, source=self.source,
                                                 own_clock=several)
        self._warn_unmonitored(model)
        for name, driver in self.drivers.items():
            driver.start(global_step, saved.get(name))

    def _log_dir(self, saved: Mapping[str, Any] | None, default: Path, sub: str | None) -> Path:
        """The user's ``log_dir``, else the one the resumed run streamed to (when it still exists), else the
        framework's default; a subdirectory per optimizer when there are several."""
        if self.log_dir is not None:
            return self.log_dir / sub if sub else self.log_dir
        if saved and saved.get("log_dir") and Path(saved["log_dir"]).is_dir():
            return Path(saved["log_dir"])
        return default / sub if sub else default

    def _warn_unmonitored(self, model: Any) -> None:
        monitored = {id(p) for d in self.drivers.values() for g in d.optimizer.param_groups for p in g["params"]}
        outside = [n for n, p in unwrap_model(model).named_parameters() if p.dim() >= 2 and id(p) not in monitored]
        if outside:
            shown = ", ".join(outside[:5]) + (f" and {len(outside) - 5} more" if len(outside) > 5 else "")
            warnings.warn(f"spectra: {len(outside)} matrix parameter(s) are in no optimizer and are not monitored "
                          f"(frozen?): {shown}", RuntimeWarning, stacklevel=4)

    def close(self) -> None:
        """Remove every driver's hook (idempotent); the results stay readable."""
        for d in self.drivers.values():
            d.close()

    # ------------------------------------------------------------------------------------------ per step
    def driver_for(self, optimizer: Any) -> OptimizerDriver | None:
        """The driver of ``optimizer`` (wrappers allowed), or ``None`` for an optimizer it does not watch."""
        try:
            inner = unwrap_optimizer(optimizer)
        except TypeError:
            return None
        return next((d for d in self.drivers.values() if d.optimizer is inner), None)

    def take_logs(self) -> list[tuple[int, dict[str, float]]]:
        """``(step, {name: value})`` for the records made since the last call, for the trainer's loggers."""
        out: dict[int, dict[str, float]] = {}
        several = len(self.drivers) > 1
        for name, d in self.drivers.items():
            records, d.fresh = d.fresh, []
            if self.log_metrics is None or not records:
                continue
            by_step: dict[int, list[Any]] = {}
            for r in records:
                by_step.setdefault(int(r.step), []).append(r)
            for step, recs in by_step.items():
                prefix = f"spectra/{name}/" if several else "spectra/"
                values = layer_means(recs, metrics=self.log_metrics, prefix=prefix)
                if self.log_layers:
                    values.update(scalar_values(recs, metrics=self.log_metrics))
                if values:
                    out.setdefault(step, {}).update(values)
        return sorted(out.items())

    # ------------------------------------------------------------------------------------------ state, results
    def state_dict(self, global_step: int) -> dict[str, Any]:
        """The callback's checkpoint state: one cursor per optimizer, O(1) in the number of records."""
        return {"format": STATE_FORMAT, "step": int(global_step),
                "monitors": {n: d.state_dict(global_step) for n, d in self.drivers.items()}}

    @staticmethod
    def check_state(state: Any) -> dict[str, Any]:
        """A checkpoint state as saved by :meth:`state_dict`.

        Raises:
            ValueError: not such a state (names what is wrong).
        """
        if not isinstance(state, Mapping) or not isinstance(state.get("monitors"), Mapping):
            raise ValueError(f"SpectraCallback state must be a dict from its state_dict() with a 'monitors' "
                             f"mapping, got {type(state).__name__} {state!r:.200}")
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"SpectraCallback state has format {state.get('format')!r}; this spectra reads "
                             f"format {STATE_FORMAT}")
        return dict(state)

    @property
    def results(self) -> Results:
        """All records: one optimizer's, or every optimizer's side by side (an ``optimizer`` column)."""
        if not self.drivers:
            return Results()
        parts = [d.results for d in self.drivers.values()]
        return parts[0] if len(parts) == 1 else Results.concat(parts)


class CallbackResults:
    """The result views every framework callback offers (its ``_core`` is a :class:`CallbackCore`)."""

    _core: "CallbackCore"

    @property
    def monitors(self) -> dict[str, Any]:
        """One driver per optimizer, by name (``.results``, ``.step``, ``.settings.log_dir``)."""
        return dict(self._core.drivers)

    @property
    def results(self) -> Any:
        """All records so far (read back from ``log_dir``); several optimizers side by side."""
        return self._core.results

    def to_pandas(self) -> Any:
        """The tidy table."""
        return self.results.to_pandas()

    def to_wide(self, **kwargs: Any) -> Any:
        """One row per (run, step, layer, view), WeightWatcher column names."""
        return self.results.to_wide(**kwargs)
