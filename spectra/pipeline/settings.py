"""Settings: every driver option in one object, validated once, with the same messages for every driver.

``SpectraMonitor(model, opt, **options)``, ``spectra.analyze(obj, **options)`` and the framework callbacks all
turn their keyword options into a :class:`Settings` through :meth:`Settings.build`, which applies the driver's
defaults (:data:`DRIVER_DEFAULTS`), folds the shortcuts into the options they stand for (``fit=`` is the
``tail`` analyzer's ``method``, ``conv_slices=`` an option of the layer rules, ``every=`` a schedule) and checks
every value. Adding a driver option means adding a field here, and nothing else.

A :class:`Settings` also knows what it implies for the table: :meth:`Settings.conventions` (the ``attrs`` of
every table) and :meth:`Settings.fingerprint` (what every rank of a distributed job must share).
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .deltas import check_base, describe_base
from .engine import ON_ERROR, ErrorPolicy
from .fingerprint import settings_fingerprint
from .option_checks import as_tuple, check_analyzer_specs, check_layer_rules, check_options, check_tags, is_int
from .option_checks import with_fit
from .pool_start import check_workers

__all__ = ["Settings", "DRIVER_DEFAULTS", "DELTA_ANALYZERS", "ON_ERROR", "SHORTCUTS"]


# options whose defaults differ between drivers; everything else takes the field's default
DRIVER_DEFAULTS: dict[str, dict[str, Any]] = {
    # right after a training step torch's OpenMP workers still spin; one BLAS thread was ~30x faster there (and
    # one is also the background worker's best setting: benchmarks/results/monitor.md)
    "monitor": {"analyzers": ("esd", "tail", "alignment"), "run": "run", "blas_threads": 1, "progress": False,
                "every": 10, "warn_overhead": 0.5, "decompose_threads": None},
    "analyze": {"analyzers": ("esd", "tail"), "run": "analyze", "blas_threads": None, "progress": None},
}
# the trainer callbacks: a training driver that analyses in the trainer's own hooks (no background worker, no
# cost watch) and follows the trainer's processes by default
DRIVER_DEFAULTS["callback"] = {**DRIVER_DEFAULTS["monitor"], "warn_overhead": None, "distributed": "auto"}
# keyword shortcuts: option -> what it fills
SHORTCUTS = {
    "fit": "analyzer_options['tail']['method']",
    "conv_slices": "layer_rules['conv_slices']",
    "every": "schedule",
}
# options only a training driver can use
_TRAINING_ONLY = ("every", "schedule")
# options only a training driver can use, refused offline when given a value other than None/False
_TRAINING_ONLY_RUN = ("background", "background_queue", "warn_overhead")
# options only the offline driver can use
_OFFLINE_ONLY = ("base", "device", "workers")
# analyze's analyzers when a base is given (and analyzers= is not): the deltas' ESD, tail and alignment
DELTA_ANALYZERS = ("esd", "tail", "alignment")





@dataclass(frozen=True)
class Settings:
    """Every option of a driver (monitor, ``analyze``, framework callbacks).

    Attributes:
        analyzers: registered analyzer names and/or :class:`~spectra.Analyzer` instances.
        analyzer_options: constructor options per analyzer name, e.g. ``{"tail": {"method": "ww"}}``.
        layers: which parameters to analyze: a glob, a compiled regex, module class(es), a predicate
            ``(layer, param, module) -> bool`` or a list of these (see :mod:`spectra.layers.selection`).
        layer_rules: options of the built-in layer rules (:class:`spectra.layers.BuiltinLayerRules`), e.g.
            ``{"conv_slices": "separate"}``.
        normalize: eigenvalues of (1/N)·WᵀW instead of WᵀW.
        esd_method: ``"auto"``, ``"eigh"`` or ``"svd"`` (see :func:`spectra.functional.esd`).
        schedule: when a training driver analyzes (a :mod:`spectra.schedules` schedule); ``None`` offline.
        on_error: ``"warn"`` (one warning per analyzer and layer), ``"raise"`` or ``"ignore"``.
        run: the value of the ``run`` column.
        tags: constant extra columns (names must not collide with the table's columns).
        log_dir: stream records to this directory as they are made (a :class:`~spectra.sinks.StreamingSink`).
        keep_in_memory: also keep every record in memory. ``None`` (default): only without ``log_dir``; with
            ``log_dir`` the results are read back from disk, so memory stays flat over long runs.
        plugins: extra plugin objects for this driver only.
        plugin_manager: a ready plugin manager (overrides ``plugins``).
        distributed: ``None``, ``"auto"``, ``"shard"``, ``"rank0"`` or a
            :class:`~spectra.pipeline.distributed.DistributedConfig`.
        blas_threads: BLAS/LAPACK threads for the analysis (``None``: leave the process's setting alone); with
            ``background=True`` also the worker thread's own torch intra-op threads.
        decompose_threads: threads that decompose a due step's matrices in parallel (W_{t−1}, W_t, ΔW, G of a
            view, and the next view's while this one's analyzers run; the LAPACK kernels release the GIL);
            results are identical for any value. ``None`` (the monitor's default): up to 4, one per core, in
            the synchronous mode, where training waits anyway (torch's own OpenMP threads when there are as
            many: :mod:`spectra.pipeline.decomposers`); with ``background=True`` the cores torch's
            threads leave free (at least one), or all of them when none is free (the worker runs at the
            lowest priority: :func:`spectra.pipeline.worker_threads.auto_decompose_threads`).
        progress: show a progress bar over layers (``None``: on a terminal when there are many).
        backend: which decomposition backend serves the matrices (docs/gpu.md): ``"auto"`` (default: CUDA
            tensors on their device with torch, everything else with LAPACK in float64 on the host),
            ``"torch"`` (torch on the tensors' device, CPU included) or ``"lapack"``.
        precision: the torch backend's compute dtype, ``"fp64"`` (default) or ``"fp32"`` (faster on GPUs,
            with the accuracy docs/gpu.md measures; the LAPACK backend always computes in float64).
        device: offline only (``spectra.analyze``): analyse each layer's tensors on this torch device (e.g.
            ``"cuda"``), moved there one layer at a time so device memory stays about one layer; ``None``
            analyses them where they are.
        base: offline only (``spectra.analyze``): a model, state_dict or checkpoint path to compare with. Every
            layer then also gets rows about ΔW = W − W_base (``matrix="delta"``; LoRA adapters merged, their
            ΔW taken as scaling·B·A); see :mod:`spectra.pipeline.deltas`.
        workers: offline only (``spectra.analyze``; a training driver refuses any value but 1): analyze the layer
            views in this many processes (1, the default: in this process); the results are those of
            ``workers=1``, row for row (:mod:`spectra.pipeline.pool`).
        background: training drivers: analyze due steps in one worker thread while training goes on (the hooks
            only copy what is needed); results are identical to the synchronous mode's
            (:mod:`spectra.pipeline.background`). With ``True``, a step trained on the CPU while torch's
            threads hold every core is analyzed in the training thread instead, as synchronously (a worker
            sharing the cores with training costs more); ``"always"`` sends every step to the worker.
        background_queue: with ``background=True``, how many copied steps may wait for the worker; a full queue
            blocks the training step (back-pressure), it never drops a step.
        warn_overhead: training drivers: warn once when the schedule is estimated to slow training by more than
            this fraction (0.5 = 50%), measured on the first due steps (:mod:`spectra.pipeline.cost`); ``None``
            never warns.
    """

    analyzers: tuple[Any, ...] = ("esd", "tail")
    analyzer_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    layers: Any = None
    layer_rules: Mapping[str, Any] = field(default_factory=dict)
    normalize: bool = False
    esd_method: str = "auto"
    schedule: Any = None
    on_error: str = "warn"
    run: str = "run"
    tags: Mapping[str, Any] = field(default_factory=dict)
    log_dir: Path | None = None
    keep_in_memory: bool | None = None
    plugins: tuple[Any, ...] = ()
    plugin_manager: Any = None
    distributed: Any = None
    blas_threads: int | None = None
    decompose_threads: int | None = 1
    progress: bool | None = False
    backend: str = "auto"
    precision: str = "fp64"
    device: Any = None
    base: Any = None
    workers: int = 1
    background: bool | str = False
    background_queue: int = 2
    warn_overhead: float | None = None

    # ------------------------------------------------------------------------------------------ building
    @classmethod
    def option_names(cls) -> list[str]:
        """Every keyword a driver accepts: the fields and the shortcuts."""
        return [f.name for f in dataclasses.fields(cls)] + list(SHORTCUTS)

    @classmethod
    def build(cls, driver: str, start: "Settings | None" = None, /, **options: Any) -> "Settings":
        """The settings of one driver from its keyword options.

        Args:
            driver: ``"monitor"`` (a training driver: schedules allowed), ``"callback"`` (the trainer
                callbacks: a training driver without background analysis or cost warnings) or ``"analyze"``
                (offline, step 0; ``base=`` allowed, and then the default analyzers are :data:`DELTA_ANALYZERS`).
            start: settings to start from (``options`` override them); ``None`` starts from the driver's
                defaults.
            **options: any field of :class:`Settings`, or a shortcut: ``fit=`` (the ``tail`` analyzer's
                method), ``conv_slices=`` (a layer-rules option), ``every=`` (``schedule=every(n)``).

        Raises:
            TypeError: an unknown option (the message suggests the closest name and lists the allowed ones), or a
                value of the wrong type.
            ValueError: a value outside what is allowed (the message names the value and what is allowed).
        """
        if driver not in DRIVER_DEFAULTS:
            raise ValueError(f"unknown driver {driver!r}; allowed: {', '.join(DRIVER_DEFAULTS)}")
        unknown = [k for k in options if k not in cls.option_names()]
        if unknown:
            hints = []
            for k in unknown:
                close = difflib.get_close_matches(k, cls.option_names(), n=1)
                hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise TypeError(
                f"unknown option(s) {', '.join(hints)}; allowed: {', '.join(sorted(cls.option_names()))}"
            )
        if driver == "analyze":
            given = [k for k in _TRAINING_ONLY if options.get(k) is not None]
            if given:
                raise TypeError(f"{', '.join(given)}: only a training driver (SpectraMonitor) has a schedule")
            given = [k for k in _TRAINING_ONLY_RUN if options.get(k) not in (None, False)]
            if given:
                raise TypeError(f"{', '.join(given)}: only a training driver (SpectraMonitor) analyzes in the "
                                "background or estimates its overhead; spectra.analyze runs once, in this thread")
        if driver == "callback":
            given = [k for k in _TRAINING_ONLY_RUN if k in options]
            if given:
                raise TypeError(f"{', '.join(given)}: not available in the trainer callbacks, which analyse in the "
                                "trainer's own hooks; use spectra.SpectraMonitor(model, optimizer, ...) for "
                                "background analysis and cost warnings")
        values: dict[str, Any]
        if start is not None:  # field by field (asdict would deep-copy the user's analyzers and plugins)
            values = {f.name: getattr(start, f.name) for f in dataclasses.fields(cls)}
        else:
            values = {k: v for k, v in DRIVER_DEFAULTS[driver].items() if k not in SHORTCUTS}
        fit = options.pop("fit", None)
        conv_slices = options.pop("conv_slices", None)
        every = options.pop("every", None)
        values.update(options)
        if driver != "analyze":
            if values.get("base") is not None:
                raise TypeError(
                    "base: only spectra.analyze compares a model with a base model (a training driver's updates "
                    "are dW_t = W_t - W_{t-1}); call spectra.analyze(model, base=...) instead"
                )
            if values.get("device") is not None:
                raise TypeError(
                    "device: a training driver analyses the parameters on their own device (a CUDA model's "
                    "copies stay on the GPU); device= is for spectra.analyze(model_or_checkpoint, device=...)"
                )
            workers = values.get("workers", 1)
            if not (is_int(workers) and workers == 1):  # 1, the default, asks for nothing
                raise TypeError(
                    "workers: a training driver analyzes in the training process; to use more cores there, set "
                    "decompose_threads= (threads that decompose a due step's matrices in parallel) or "
                    "background=True (a worker thread analyzes while training goes on); workers= is for "
                    "spectra.analyze(model_or_checkpoint, workers=...)"
                )
        elif values.get("base") is not None and "analyzers" not in options and (
                tuple(values.get("analyzers", ())) == DRIVER_DEFAULTS["analyze"]["analyzers"]):
            values["analyzers"] = DELTA_ANALYZERS
        if every is not None and options.get("schedule") is not None:
            raise ValueError("pass either every= or schedule=, not both")
        if driver != "analyze" and values.get("schedule") is None:
            every = DRIVER_DEFAULTS[driver]["every"] if every is None else every
        if every is not None:
            from ..schedules import every as every_schedule

            if not is_int(every) or every < 1:
                raise ValueError(f"every must be a positive integer, got {every!r}")
            values["schedule"] = every_schedule(every)
        values["analyzers"] = as_tuple(values.get("analyzers", ()), "analyzers")
        values["analyzer_options"] = with_fit(fit, values.get("analyzer_options"), values["analyzers"])
        rules = values.get("layer_rules") or {}
        if conv_slices is not None:
            rules = {**check_layer_rules(rules), "conv_slices": conv_slices}
        values["layer_rules"] = rules
        return cls(**values)

    def replace(self, **options: Any) -> "Settings":
        """A copy with some options changed (validated like the originals)."""
        return dataclasses.replace(self, **options)

    # ------------------------------------------------------------------------------------------ validation
    def __post_init__(self) -> None:
        put = object.__setattr__
        put(self, "analyzers", as_tuple(self.analyzers, "analyzers"))
        check_analyzer_specs(self.analyzers)
        put(self, "analyzer_options", check_options(self.analyzer_options))
        put(self, "layer_rules", check_layer_rules(self.layer_rules))
        if self.layers is not None:
            from ..layers import selector_predicate

            selector_predicate(self.layers)  # raises TypeError naming the selector and the allowed forms
        if not isinstance(self.normalize, bool):
            raise TypeError(f"normalize must be True or False, got {type(self.normalize).__name__} {self.normalize!r}")
        from ..functional.esd import ESD_METHODS

        if self.esd_method not in ESD_METHODS:
            raise ValueError(f"unknown esd_method {self.esd_method!r}; allowed: {', '.join(ESD_METHODS)}")
        if self.schedule is not None:
            from ..schedules import as_schedule

            put(self, "schedule", as_schedule(self.schedule))
        ErrorPolicy(self.on_error)  # raises ValueError naming the allowed modes
        if not isinstance(self.run, (str, int)) or isinstance(self.run, bool):
            raise TypeError(f"run must be a string, got {type(self.run).__name__} {self.run!r}")
        put(self, "run", str(self.run))
        put(self, "tags", check_tags(self.tags))
        if self.log_dir is not None:
            if not isinstance(self.log_dir, (str, Path)) and not hasattr(self.log_dir, "__fspath__"):
                raise TypeError(f"log_dir must be a path, got {type(self.log_dir).__name__} {self.log_dir!r}")
            put(self, "log_dir", Path(self.log_dir))
        if self.keep_in_memory not in (None, True, False):
            raise TypeError(f"keep_in_memory must be True, False or None, got {self.keep_in_memory!r}")
        if self.keep_in_memory is False and self.log_dir is None:
            raise ValueError("keep_in_memory=False needs a log_dir to keep the records in")
        put(self, "plugins", as_tuple(self.plugins, "plugins"))
        if self.distributed is not None:
            from .distributed import as_config

            as_config(self.distributed)  # raises ValueError naming the allowed modes
        if self.blas_threads is not None and (not is_int(self.blas_threads) or self.blas_threads < 1):
            raise ValueError(f"blas_threads must be a positive integer or None, got {self.blas_threads!r}")
        if self.decompose_threads is not None and (not is_int(self.decompose_threads)
                                                   or self.decompose_threads < 1):
            raise ValueError(f"decompose_threads must be a positive integer or None (one per core, up to 4), got "
                             f"{self.decompose_threads!r}")
        from ..functional.backend import BACKENDS
        from ..functional.torch_precision import check_precision

        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        check_precision(self.precision)  # ValueError naming the allowed precisions
        if self.precision == "fp32" and self.backend == "lapack":
            raise ValueError("precision='fp32' needs the torch backend (backend='auto' on CUDA tensors, or "
                             "backend='torch'); the LAPACK backend computes in float64 only")
        if self.device is not None:
            self._check_device()
        if self.progress not in (None, True, False):
            raise TypeError(f"progress must be True, False or None, got {self.progress!r}")
        if self.base is not None:
            check_base(self.base)  # raises TypeError naming the value and the allowed kinds
        check_workers(self.workers)  # raises ValueError naming the value (bools refused)
        if not isinstance(self.background, bool) and self.background != "always":
            raise TypeError(f"background must be True, False or 'always', got {type(self.background).__name__} "
                            f"{self.background!r}")
        if not is_int(self.background_queue) or self.background_queue < 1:
            raise ValueError(f"background_queue must be a positive integer (steps waiting for the worker), got "
                             f"{self.background_queue!r}")
        if self.warn_overhead is not None:
            w = self.warn_overhead
            if isinstance(w, bool) or not isinstance(w, (int, float)):
                raise TypeError(f"warn_overhead must be a number (0.5 = warn above 50% overhead) or None, got "
                                f"{type(w).__name__} {w!r}")
            if not (w > 0 and w != float("inf")):  # also refuses NaN
                raise ValueError(f"warn_overhead must be a positive finite fraction (0.5 = 50%) or None, got {w!r}")
            put(self, "warn_overhead", float(w))

    # ------------------------------------------------------------------------------------------ what follows
    def _check_device(self) -> None:
        """``device`` names a torch device this process can use (ValueError naming it otherwise)."""
        import torch

        try:
            dev = torch.device(self.device)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(f"device must be a torch device such as 'cpu' or 'cuda', got {self.device!r}") from exc
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={self.device!r} was asked for but CUDA is not available here")
        object.__setattr__(self, "device", dev)

    def snapshot_context(self) -> dict[str, Any]:
        """What every snapshot must know about the decompositions (the ``backend``/``precision`` choice)."""
        if (self.backend, self.precision) == ("auto", "fp64"):
            return {}
        return {"backend": self.backend, "precision": self.precision}

    def conventions(self, analyzers: Sequence[Any], *, source: str) -> dict[str, Any]:
        """The conventions recorded in every table's ``attrs``, so numbers can be interpreted later."""
        from ..version import __version__

        conv = self.layer_rules.get("conv_slices", "pooled")
        out = {
            "spectra_version": __version__,
            "eigenvalues": "sigma^2/N (normalized)" if self.normalize else "sigma^2 of W as viewed (no 1/N)",
            "normalize": self.normalize,
            "esd_method": self.esd_method,
            "conv_slices": conv,
            "conv_scale": "pooled Conv2d slices x1/2 (WeightWatcher)" if conv == "pooled" else "per slice x rf/2",
            "layer_rules": dict(self.layer_rules),
            "analyzers": {a.name: a.config() for a in analyzers},
            "fit": next((a.config().get("method") for a in analyzers if a.name == "tail"), None),
            "source": source,
            "run": self.run,
        }
        if self.base is not None:
            out["base"] = describe_base(self.base)
        if (self.backend, self.precision) != ("auto", "fp64"):
            out["decompositions"] = {"backend": self.backend, "precision": self.precision}
        if self.schedule is not None:
            out["step_semantics"] = "row at step t: W_t, dW_t = W_t - W_{t-1}, G_{t-1}"
        return out

    def fingerprint(self, *, analyzers: Sequence[Any], entries: Sequence[Any], mode: str, step: int = 0
                    ) -> dict[str, str]:
        """What every rank of a distributed job must share, as ``{name: description}`` (compared field by field).

        Args:
            analyzers: the resolved analyzer instances (their class, options and own schedules count).
            entries: the analyzed layer entries (names and view shapes count).
            mode: the effective distributed mode.
            step: the driver's step counter.
        """
        from ..version import __version__

        extra = {} if self.base is None else {"base": describe_base(self.base)}
        return settings_fingerprint(
            analyzers=analyzers, entries=entries, schedule=self.schedule, mode=mode, spectra_version=__version__,
            normalize=self.normalize, esd_method=self.esd_method, layer_rules=dict(self.layer_rules),
            on_error=self.on_error, run=self.run, tags=dict(self.tags), step=step, backend=self.backend,
            precision=self.precision, **extra,
        )
