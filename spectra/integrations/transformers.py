"""Hugging Face ``Trainer``: ``Trainer(..., callbacks=[SpectraCallback()])`` and nothing else.

The callback attaches at ``on_train_begin`` (the optimizer exists and a resumed ``TrainerState`` is loaded),
unwraps accelerate's ``AcceleratedOptimizer``, follows ``state.global_step``, copies what a due step needs in
``on_pre_optimizer_step`` (after gradient accumulation and clipping, before the weights change), analyzes
after the optimizer really stepped, streams its table to ``<output_dir>/spectra`` and logs a few scalars
through the trainer's ``log`` (so W&B, TensorBoard, MLflow and ``state.log_history`` get them as the trainer's
own reporters see them).

Resuming (``trainer.train(resume_from_checkpoint=...)``) continues the same table at the checkpoint's step:
the callback keeps its cursor (run id and step) in ``TrainerState.stateful_callbacks["spectra"]``, which
Hugging Face saves in every ``checkpoint-*/trainer_state.json``; the records stay in ``log_dir``. Why this is
a driver of its own rather than a ``SpectraMonitor``: :mod:`spectra.integrations._driver`.
"""

from __future__ import annotations

import inspect
import weakref
from pathlib import Path
from typing import Any, Sequence

from ._driver import DEFAULT_LOG_METRICS, CallbackCore, CallbackResults

try:
    from transformers import Trainer, TrainerCallback
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError('spectra.integrations.transformers needs transformers, which is not installed: pip install '
                      '"spectra[integrations]" (or pip install transformers accelerate)') from exc

__all__ = ["SpectraCallback", "STATE_KEY"]

STATE_KEY = "spectra"  # our entry in TrainerState.stateful_callbacks (not a class name: HF never rebuilds us)


def _calling_trainer() -> Any:
    """The ``Trainer`` whose callback handler is calling us, found up the call stack (a callback is never handed
    the trainer, and ``Trainer.log`` is the only way into its reporters), or ``None``."""
    frame = inspect.currentframe()
    try:
        for _ in range(16):
            frame = frame.f_back if frame is not None else None
            if frame is None:
                return None
            obj = frame.f_locals.get("self")
            if isinstance(obj, Trainer):
                return obj
        return None
    finally:
        del frame


class SpectraCallback(CallbackResults, TrainerCallback):
    """Spectral diagnostics of a Hugging Face model's weights while ``Trainer`` trains it.

    Example:
        >>> trainer = Trainer(model=model, args=args, train_dataset=ds, callbacks=[SpectraCallback(every=50)])  # doctest: +SKIP
        >>> trainer.train()                                                                                  # doctest: +SKIP
        >>> spectra.Results.read("<output_dir>/spectra").to_wide()                                          # doctest: +SKIP

    Args:
        log_dir: where the records stream (default ``<args.output_dir>/spectra``, or the directory of the run
            being resumed).
        log_metrics: metrics whose mean over layers goes through ``trainer.log`` as ``spectra/<metric>`` at each
            analyzed step (``None``: log nothing).
        log_layers: also log each layer's value, as ``<metric>/<layer>``.
        **options: any :class:`~spectra.pipeline.Settings` option, as for :class:`~spectra.SpectraMonitor`
            (``every`` default 10, ``analyzers``, ``layers``, ``fit``, ``run``, ``tags``, ``plugins``, ...);
            ``distributed`` defaults to ``"auto"``.

    Raises:
        TypeError / ValueError: a bad option, now (the message names it and what is allowed).
        RuntimeError: at ``on_train_begin``, when the trainer has no optimizer.
    """

    def __init__(self, *, log_dir: str | Path | None = None, log_metrics: Sequence[str] | None = DEFAULT_LOG_METRICS,
                 log_layers: bool = False, **options: Any) -> None:
        self._core = CallbackCore(source="transformers", log_dir=log_dir, optimizer_names=None,
                                  log_metrics=log_metrics, log_layers=log_layers, options=options)
        self._trainer: Any = None

    def __repr__(self) -> str:
        return f"SpectraCallback(monitors={list(self._core.drivers)}, log_dir={str(self._core.log_dir)!r})"

    # ------------------------------------------------------------------------------------------ hooks
    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, optimizer: Any = None,
                       **kwargs: Any) -> None:
        trainer = _calling_trainer()
        self._trainer = weakref.ref(trainer) if trainer is not None else None
        saved = state.stateful_callbacks.get(STATE_KEY) if state.global_step > 0 else None
        self._core.attach(model, [optimizer] if optimizer is not None else [], global_step=int(state.global_step),
                          default_log_dir=Path(args.output_dir) / "spectra",
                          state=CallbackCore.check_state(saved) if saved else None,
                          what="the Trainer has no optimizer at on_train_begin")
        self._remember(state)
        self._flush(state)

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        for driver in self._core.drivers.values():
            driver.before_step(int(state.global_step))

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._remember(state)
        self._flush(state)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._flush(state)
        self._core.close()

    def _remember(self, state: Any) -> None:
        """Keep the cursor where Hugging Face saves callback states: every checkpoint's trainer_state.json."""
        if self._core.drivers:
            state.stateful_callbacks[STATE_KEY] = self._core.state_dict(int(state.global_step))

    def _flush(self, state: Any) -> None:
        """Log the newly analyzed steps' scalars through ``trainer.log`` (else into ``state.log_history``)."""
        trainer = self._trainer() if self._trainer is not None else None
        for step, values in self._core.take_logs():
            if trainer is not None and step == state.global_step:
                trainer.log(dict(values))
            else:
                state.log_history.append({**values, "step": step})
