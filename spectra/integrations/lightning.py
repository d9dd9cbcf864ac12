"""PyTorch Lightning: ``Trainer(callbacks=[SpectraCallback()])`` and nothing else.

The callback attaches when the trainer has built its optimizers and restored any checkpoint
(``on_train_start``), follows ``trainer.global_step``, copies what a due step needs in
``on_before_optimizer_step`` (after the closure's backward, gradient accumulation and unscaling, before the
weights change), analyzes after the optimizer really stepped, and logs a few scalars through
``trainer.loggers``. Its state in a Lightning checkpoint is a cursor into its ``log_dir`` (run id and step),
so resuming with ``ckpt_path=`` continues the same table without duplicated or renumbered steps. Several
optimizers (manual optimization) get one monitor each, named after them. Under DDP it shards the analysis over
the ranks (``distributed="auto"``). Why this is a driver of its own rather than a ``SpectraMonitor``:
:mod:`spectra.integrations._driver`.

Both import names work: ``lightning`` (``lightning.pytorch``) and ``pytorch_lightning``; the callback is a
``Callback`` of each one installed.
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any, Mapping, Sequence

from ._driver import DEFAULT_LOG_METRICS, CallbackCore, CallbackResults

__all__ = ["SpectraCallback"]


def _callback_bases() -> tuple[type, ...]:
    """``Callback`` of each Lightning package installed (``lightning.pytorch`` first)."""
    import importlib

    bases = []
    for module in ("lightning.pytorch", "pytorch_lightning"):
        try:
            bases.append(importlib.import_module(module).Callback)
        except ImportError:
            continue
    if not bases:
        raise ImportError('spectra.integrations.lightning needs PyTorch Lightning, which is not installed: pip install '
                          '"spectra[integrations]" (or pip install lightning)')
    return tuple(bases)


class SpectraCallback(CallbackResults, *_callback_bases()):  # type: ignore[misc]
    """Spectral diagnostics of a LightningModule's weights while it trains.

    Example:
        >>> trainer = lightning.pytorch.Trainer(max_steps=1000, callbacks=[SpectraCallback(every=50)])  # doctest: +SKIP
        >>> trainer.fit(module, loader)                                                              # doctest: +SKIP
        >>> cb.results.to_wide()                                                                    # doctest: +SKIP

    Args:
        log_dir: where the records stream (default ``<trainer.default_root_dir>/spectra``, or the directory of
            the run being resumed); with several optimizers, one subdirectory per optimizer.
        optimizer_names: names for several optimizers (default: their class names, numbered when repeated).
        log_metrics: metrics whose mean over layers is logged as ``spectra/<metric>`` through
            ``trainer.loggers`` at each analyzed step (``None``: log nothing).
        log_layers: also log each layer's value, as ``<metric>/<layer>``.
        **options: any :class:`~spectra.pipeline.Settings` option, as for :class:`~spectra.SpectraMonitor`
            (``every`` default 10, ``analyzers``, ``layers``, ``fit``, ``run``, ``tags``, ``plugins`` such as
            :class:`~spectra.sinks.WandbSink`, ...); ``distributed`` defaults to ``"auto"``.

    Raises:
        TypeError / ValueError: a bad option, now (the message names it and what is allowed).
        RuntimeError: at fit start, when the trainer has no optimizer.
    """

    def __init__(self, *, log_dir: str | Path | None = None, optimizer_names: Sequence[str] | None = None,
                 log_metrics: Sequence[str] | None = DEFAULT_LOG_METRICS, log_layers: bool = False,
                 **options: Any) -> None:
        self._core = CallbackCore(source="lightning", log_dir=log_dir, optimizer_names=optimizer_names,
                                  log_metrics=log_metrics, log_layers=log_layers, options=options)
        self._trainer: Any = None
        self._saved: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"SpectraCallback(monitors={list(self._core.drivers)}, log_dir={str(self._core.log_dir)!r})"

    @property
    def state_key(self) -> str:
        """The key of this callback's state in a checkpoint (two callbacks need different ``log_dir``)."""
        if self._core.log_dir is None:
            return type(self).__qualname__
        return self._generate_state_key(log_dir=str(self._core.log_dir))

    # ------------------------------------------------------------------------------------------ hooks
    @staticmethod
    def _optimizers(trainer: Any) -> list[Any]:
        """The trainer's optimizers, without the placeholder Lightning uses when there is none."""
        return [o for o in trainer.optimizers if type(o).__name__ != "_MockOptimizer"]

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        if not self._optimizers(trainer):
            raise RuntimeError("SpectraCallback needs an optimizer, but the LightningModule's configure_optimizers() "
                               "returned none; spectra analyzes the weights at the optimizer's steps (for a model "
                               "that is not trained use spectra.analyze(model))")

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._trainer = weakref.ref(trainer)
        self._core.attach(pl_module, self._optimizers(trainer), global_step=int(trainer.global_step),
                          default_log_dir=Path(trainer.default_root_dir) / "spectra", state=self._saved,
                          what="the LightningModule's configure_optimizers() returned none")
        self._saved = None
        self._flush(trainer)

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        driver = self._core.driver_for(optimizer)
        if driver is not None:
            driver.before_step(int(trainer.global_step))

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._flush(trainer)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self._flush(trainer)
        self._core.close()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self._core.close()

    def _flush(self, trainer: Any) -> None:
        """Hand the scalars of the newly analyzed steps to the trainer's loggers (rank 0)."""
        for step, values in self._core.take_logs():
            if trainer.is_global_zero:
                for logger in trainer.loggers:
                    logger.log_metrics(values, step=step)

    # ------------------------------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """A cursor per optimizer into ``log_dir`` (run id and step): O(1) in the number of records."""
        trainer = self._trainer() if self._trainer is not None else None
        if trainer is None or not self._core.drivers:
            return dict(self._saved or {})
        return self._core.state_dict(int(trainer.global_step))

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Keep the checkpoint's cursor; the run continues from it when training starts.

        Raises:
            ValueError: not a state this callback saved.
        """
        self._saved = CallbackCore.check_state(state_dict) if state_dict else None
