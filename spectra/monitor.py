"""SpectraMonitor: spectral diagnostics inside any training loop, through the optimizer's step hooks.

``step`` counts completed ``optimizer.step()`` calls (steps a ``GradScaler`` skips are not counted); step 0 is
the initial weights. A row at step t describes W_t, the update ΔW_t = W_t − W_{t−1} and the gradient G_{t−1}
that produced it. A step with nothing due costs O(1): no clone, no ``.item()``, no device sync. On a due step
the pre-hook copies what the due analyzers need (:mod:`spectra.pipeline.capture`), the post-hook hands them to
a :class:`~spectra.pipeline.background.StepRunner` (the pipeline, now or in a worker thread). LBFGS fires the
hooks once per ``step(closure)``: ΔW is the whole step's change. See docs/design.md, "The monitor's lifecycle".
"""

from __future__ import annotations

import warnings
import weakref
from typing import Any, Mapping

from .pipeline.background import StepRunner
from .pipeline.capture import needs_of, take_copies, warn_outside_optimizer
from .pipeline.recorder import Recorder
from .pipeline.settings import DRIVER_DEFAULTS, Settings
from .table.results import Results

__all__ = ["SpectraMonitor", "DEFAULT_ANALYZERS", "DEFAULT_EVERY"]

DEFAULT_ANALYZERS = DRIVER_DEFAULTS["monitor"]["analyzers"]
DEFAULT_EVERY = DRIVER_DEFAULTS["monitor"]["every"]


def _weak_hook(monitor: "SpectraMonitor", method: str) -> Any:
    """An optimizer hook calling ``monitor.<method>`` through a weak reference: the optimizer must not keep a
    forgotten monitor alive (once collected, its ``__del__`` removes the hooks and training goes on)."""
    ref = weakref.ref(monitor)

    def hook(optimizer: Any, args: Any, kwargs: Any) -> None:
        target = ref()
        return None if target is None else getattr(target, method)(optimizer, args, kwargs)

    hook.__name__ = f"spectra_{method.strip('_')}"
    return hook


class SpectraMonitor:
    """Watch the spectra of a model's weight matrices while it trains.

    Example:
        >>> monitor = SpectraMonitor(model, opt, every=10)          # doctest: +SKIP
        >>> for x, y in loader:                                      # doctest: +SKIP
        ...     opt.zero_grad(); loss_fn(model(x), y).backward(); opt.step()
        >>> df = monitor.to_pandas(); monitor.detach()               # doctest: +SKIP

    Keep a reference to the monitor: the optimizer's hooks hold it only weakly, so a monitor that is garbage
    collected removes its hooks (it never outlives the user's last reference).

    Args:
        model: the ``nn.Module`` being trained (DDP/DataParallel wrappers are unwrapped for layer names).
        optimizer: any ``torch.optim.Optimizer``.
        settings: a ready :class:`~spectra.pipeline.Settings` (keyword options override it).
        attach: register the hooks now (default). Otherwise call :meth:`attach` later.
        **options: any :class:`~spectra.pipeline.Settings` option (the same as :func:`spectra.analyze`'s):
            ``analyzers`` (default esd, tail, alignment), ``every`` (default 10) or ``schedule``, ``layers``,
            ``fit``, ``analyzer_options``, ``conv_slices``, ``normalize``, ``esd_method``, ``on_error``,
            ``log_dir``, ``keep_in_memory``, ``tags``, ``run``, ``plugins``, ``plugin_manager``,
            ``blas_threads`` (default 1: multi-threaded LAPACK right after a training step, while torch's
            OpenMP workers still spin, was measured ~30x slower), ``distributed``, ``background`` (analyze in
            a worker thread when it has a core of its own; ``"always"``: every step), ``background_queue``
            and ``warn_overhead`` (default 0.5: warn above 50% overhead).

    Raises:
        TypeError: ``optimizer`` is not a ``torch.optim.Optimizer`` or ``model`` not an ``nn.Module``; an
            unknown option or a value of the wrong type.
        ValueError: unknown analyzer name (the registered ones are listed) or bad option value;
            ``background=True`` under ``torch.distributed``.
    """

    def __init__(self, model: Any, optimizer: Any, *, settings: Settings | None = None, attach: bool = True,
                 **options: Any) -> None:
        import torch

        from .layers import unwrap_model
        from .pipeline.pipeline import Pipeline
        from .pipeline.target import check_model_supported, unwrap_optimizer

        optimizer = unwrap_optimizer(optimizer)  # AcceleratedOptimizer, LightningOptimizer, ...: the torch optimizer
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.settings = Settings.build("monitor", settings, **options)
        self.model = model
        self.optimizer = optimizer
        self.step = 0
        self._handles: list[Any] = []
        self._attached = False
        self._detached_once = False
        self._pending: dict[int, dict[str, Any]] | None = None  # copies taken before the step in flight
        self._pending_step: int | None = None
        target = unwrap_model(model)
        check_model_supported(target)
        self._pipeline = Pipeline(self.settings, target, source="monitor")
        warn_outside_optimizer(self._pipeline.entries, self._optimizer_param_ids())
        self._seen_ids = {id(e.param) for e in self._pipeline.entries} | self._optimizer_param_ids()
        self._step0_done = False
        self._recorder = Recorder(self._pipeline)
        self._runner = StepRunner(self._pipeline, self._recorder)  # now, or in a worker; watches the cost
        if self.settings.background:  # flush, stop the worker when collected or at exit (no reference to self)
            weakref.finalize(self, self._runner.shutdown)
        if attach:
            try:
                self.attach()
            except BaseException:  # e.g. on_error="raise" at step 0: leave no hooks on the optimizer
                self._detach(raise_errors=False)
                raise

    @property
    def analyzers(self) -> list[Any]:
        """The resolved analyzer instances."""
        return self._pipeline.analyzers

    @property
    def run(self) -> str:
        """The value of the ``run`` column."""
        return self.settings.run

    def _optimizer_param_ids(self) -> set[int]:
        return {id(p) for g in self.optimizer.param_groups for p in g["params"]}

    @property
    def attached(self) -> bool:
        """Whether the optimizer hooks are registered."""
        return self._attached

    def attach(self) -> "SpectraMonitor":
        """Register the optimizer step hooks (and analyze step 0 if due).

        Raises:
            RuntimeError: already attached.
        """
        if self._attached:
            raise RuntimeError("this SpectraMonitor is already attached; call detach() first")
        self._pipeline.check_consistent(step=self.step, what="SpectraMonitor settings")
        self._handles = [
            self.optimizer.register_step_pre_hook(_weak_hook(self, "_pre_hook")),
            self.optimizer.register_step_post_hook(_weak_hook(self, "_post_hook")),
        ]
        self._attached = True
        self._attach_step = self.step
        self._detached_once = False
        self._pipeline.notify("spectra_monitor_attached", monitor=self)
        if self.step == 0 and not self._step0_done:
            self._step0_done = True
            if due := self._pipeline.due(0):
                self._runner.submit(0, due, {}, guard=False)
        return self

    def detach(self) -> None:
        """Remove the hooks, wait for the background analysis (raising what failed there under
        ``on_error="raise"``) and stop its worker. Idempotent; the records stay available."""
        self._detach(raise_errors=True)

    def _detach(self, *, raise_errors: bool) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self._pending = None
        was, self._attached = self._attached, False
        if was and not self._detached_once:
            self._detached_once = True
            self._pipeline.notify("spectra_monitor_detached", monitor=self)
        self._runner.close(raise_errors=raise_errors)

    def close(self) -> None:
        """Detach for good and release the model, the optimizer and the layer entries (a detached monitor keeps
        them so it can attach again); the results stay available."""
        self.detach()
        self.model = self.optimizer = None
        self._pipeline.release()

    def __copy__(self) -> "SpectraMonitor":
        raise TypeError("a SpectraMonitor cannot be copied: a copy would share its optimizer hooks. Build another "
                        "monitor, or copy its results (monitor.results / monitor.state_dict())")

    def __deepcopy__(self, memo: Any) -> "SpectraMonitor":
        return self.__copy__()

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError("a SpectraMonitor cannot be pickled (it holds optimizer hooks and live parameters); save "
                        "monitor.state_dict() with the checkpoint and load_state_dict() it into a new monitor")

    def __enter__(self) -> "SpectraMonitor":
        return self  # __exit__: detach; an exception on its way out wins over a pending background failure

    def __exit__(self, *exc: Any) -> None:
        self._detach(raise_errors=exc[0] is None)

    def __del__(self) -> None:  # hooks hold only a weak reference: remove them when the monitor is collected
        try:
            for h in self._handles:
                h.remove()
            if self._handles and getattr(self, "_attached", False) and self.step == getattr(self, "_attach_step", -1):
                # collected before it saw a single step: almost surely created without keeping a reference
                warnings.warn("spectra: a SpectraMonitor was garbage-collected while attached, so its hooks were "
                              "removed. Keep a reference (monitor = SpectraMonitor(...)) or use it as a context "
                              "manager.", RuntimeWarning, stacklevel=2)
        except Exception:
            pass

    # ------------------------------------------------------------------ hooks
    def _pre_hook(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        runner = self._runner
        if runner.errors:  # a background failure under on_error="raise": raised at the next hook call
            runner.raise_pending()
        step = self.step + 1
        if runner.watch is not None:  # only over the first steps (cost awareness)
            runner.tick(step)
        due = self._pipeline.due(step)
        if due and not runner.before_step(step, lambda: self._capture(step, due)):  # capture never breaks training
            self._pending = None
        return None  # never change the optimizer's arguments

    def _capture(self, step: int, due: list[Any]) -> None:
        in_opt = self._optimizer_param_ids()
        self._pick_up_new_params(in_opt)
        self._pending = take_copies(self._pipeline.local_entries(), needs_of(due), include=in_opt)
        self._pending_step = step

    def _post_hook(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self.step += 1
        step = self.step
        captured = self._pending if self._pending_step == step else None
        self._pending, self._pending_step = None, None
        due = self._pipeline.due(step)
        failures = self._pipeline.take_failures()  # a schedule raised: its failed rows go out like any record
        if captured is None and (self._pipeline.plan is None or not due):
            return self._runner.submit(step, None, {}, failures=failures) if failures else None
        try:  # distributed: a rank whose capture failed still joins the step's gather (with no copies)
            in_opt = self._optimizer_param_ids()
            self._pick_up_new_params(in_opt)
            self._runner.after_step(step, due, captured or {}, include=in_opt, failures=failures)
        except Exception as exc:
            self._pipeline.policy.handle(exc, key=("step", step),
                                         message=f"spectra: analysis of step {step} failed: {exc!r}")
        if self._runner.errors:
            self._runner.raise_pending()

    def _pick_up_new_params(self, in_opt: set[int]) -> None:
        """Parameters added to the optimizer after attach (``add_param_group``) are analyzed from then on."""
        if in_opt - self._seen_ids:
            self._runner.flush(raise_errors=False)  # the worker must not read the layers while they change
            self._seen_ids |= in_opt
            if self._pipeline.add_new_params(in_opt):
                self._recorder.relayer()

    # ------------------------------------------------------------------ results and state
    @property
    def run_id(self) -> str | None:
        """The id of the run this monitor streams to ``log_dir`` (``None`` without one)."""
        return self._recorder.run_id

    @property
    def results(self) -> Results:
        """All records so far, with the layers table and conventions (waits for the background analysis)."""
        self._runner.flush()
        return self._recorder.results

    def profile(self):
        """Where the analysis time went: seconds and counts per stage, analyzer or sink, layer and view, summed
        over the due steps so far (a ``pandas.DataFrame``, slowest first; :mod:`spectra.pipeline.profile`).

        With ``background`` set, ``attrs["steps_in_worker"]`` and ``attrs["steps_in_training"]`` count the due
        steps the worker analyzed and those analyzed in the training thread (no core free for the worker)."""
        runner = self._runner
        runner.flush()
        df = self._pipeline.profile.to_pandas(background=runner.steps_in_worker > 0)
        if runner.background:  # which due steps the worker analyzed, and which the training thread did
            df.attrs.update(steps_in_worker=runner.steps_in_worker, steps_in_training=runner.steps_in_training)
        return df

    def to_pandas(self):
        """The tidy table (see :class:`~spectra.Results`)."""
        return self.results.to_pandas()

    def to_wide(self, **kwargs: Any):
        """One row per (run, step, layer, view)."""
        return self.results.to_wide(**kwargs)

    def state_dict(self) -> dict[str, Any]:
        """What resumes this monitor: the step counter and, with ``log_dir``, a cursor into it (the run id), so
        its size does not grow with the records; without ``log_dir`` the records themselves (after a flush)."""
        self._runner.flush()
        return self._recorder.state_dict(step=self.step)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume from :meth:`state_dict` right after construction (:meth:`.Recorder.load_state_dict`).

        Raises:
            ValueError: the state is malformed or points into a ``log_dir`` this monitor does not stream to.
            RuntimeError: the monitor has already recorded training steps.
        """
        self._recorder.check_state(state)
        self._runner.flush()  # step 0, analyzed in the background, is taken back
        if self.step > 0:
            raise RuntimeError(f"this monitor has already recorded steps up to {self.step}; load_state_dict must "
                               "come before training continues (build a new monitor and load the state into it)")
        self.step = self._recorder.load_state_dict(state)

    def __repr__(self) -> str:
        return (f"SpectraMonitor(step={self.step}, layers={len(self._pipeline.entries)}, "
                f"analyzers={[a.name for a in self.analyzers]}, attached={self._attached})")
