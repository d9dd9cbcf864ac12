"""SpectraMonitor: spectral diagnostics inside any training loop, through the optimizer's step hooks.

Lifecycle (DESIGN §4):

* ``step`` counts completed ``optimizer.step()`` calls; step 0 is the initial weights, analyzed at attach
  time when the schedule selects it (weight metrics only).
* A row at step t describes W_t, the update ΔW_t = W_t − W_{t−1} and the gradient G_{t−1} that produced it.
* On a step with nothing due the hooks cost O(1): no clone, no ``.item()``, no device sync.
* On a due step the pre-hook clones what the due analyzers need (W_{t−1} for updates, in float32 or wider;
  the gradient), the post-hook builds frozen snapshots, runs the analyzers, emits the records (to sinks, and to
  ``log_dir`` as they are made) and frees the copies.
* Failures are caught per (analyzer, layer) and become ``failed`` rows; training never stops unless
  ``on_error="raise"``. The monitor never changes parameters, gradients or optimizer state.
* Steps the optimizer skips (``torch.amp.GradScaler`` on inf/NaN gradients never calls ``optimizer.step()``)
  are not counted.
* LBFGS: ``step(closure)`` fires the hooks once per call, so ΔW is the whole step's change; the gradient is
  the one present when ``step`` is entered (from the previous call's last closure evaluation), or absent.
"""

from __future__ import annotations

import logging
import warnings
import weakref
from pathlib import Path
from typing import Any, Iterable, Mapping

from ._common import CONV_SLICES, analyzer_options_with_fit, conventions, unwrap_model
from .engine import ON_ERROR, resolve_analyzers, run_analyzers
from .results import Record, Results
from .schedules import Schedule, as_schedule, every as every_schedule
from .snapshot import LayerState

__all__ = ["SpectraMonitor", "DEFAULT_ANALYZERS", "DEFAULT_EVERY"]

logger = logging.getLogger(__name__)

DEFAULT_ANALYZERS = ("esd", "tail", "alignment")
DEFAULT_EVERY = 10


def _weak_hook(monitor: "SpectraMonitor", method: str) -> Any:
    """An optimizer hook that calls ``monitor.<method>`` through a weak reference.

    The optimizer must not keep a forgotten monitor alive: once the user drops the last reference the monitor
    is collected, its ``__del__`` removes the hooks, and training goes on unobserved.
    """
    ref = weakref.ref(monitor)

    def hook(optimizer: Any, args: Any, kwargs: Any) -> None:
        target = ref()
        if target is None:
            return None
        return getattr(target, method)(optimizer, args, kwargs)

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
        analyzers: registered names and/or :class:`~spectra.Analyzer` instances.
        every: analyze every ``every`` steps (default 10 when neither ``every`` nor ``schedule`` is given).
        schedule: a :mod:`spectra.schedules` schedule, a list of steps or a predicate (overrides ``every``).
        layers: which layers to watch: name glob/regex, module type(s) or a predicate.
        fit: power-law fit method for ``tail`` (``"csn"``, ``"ww"``, ``"hill"``).
        on_error: ``"warn"`` (one warning per analyzer and layer), ``"raise"`` or ``"ignore"``.
        log_dir: stream records to this directory as they are made (reload with ``Results.read(log_dir)``).
        tags: constant extra columns (e.g. ``{"lr": 0.1}``).
        run: value of the ``run`` column (default ``"run"``).
        analyzer_options: constructor options per analyzer name.
        conv_slices: ``"pooled"`` or ``"separate"`` Conv views.
        normalize: eigenvalues of (1/N)·WᵀW.
        esd_method: see :func:`spectra.functional.esd`.
        plugins: extra plugin objects for this monitor.
        plugin_manager: a ready plugin manager (overrides ``plugins``).
        attach: register the hooks now (default). Otherwise call :meth:`attach` later.
        blas_threads: BLAS/LAPACK threads used by the analysis (default 1: right after a training step torch's
            OpenMP workers still spin, and a multi-threaded LAPACK call competing with them was measured ~30x
            slower; see :mod:`spectra.threads`). ``None`` leaves the process's setting alone.
        distributed: ``None`` (default), ``"auto"``, ``"shard"`` or ``"rank0"``: share the layers among
            ``torch.distributed`` ranks (see :mod:`spectra.distributed`; FSDP models raise NotImplementedError).

    Raises:
        TypeError: ``optimizer`` is not a ``torch.optim.Optimizer`` or ``model`` not an ``nn.Module``; an
            analyzer class was given instead of an instance.
        ValueError: unknown analyzer name (the registered ones are listed) or bad option.
    """

    def __init__(
        self,
        model: Any,
        optimizer: Any,
        *,
        analyzers: Iterable[Any] = DEFAULT_ANALYZERS,
        every: int | None = None,
        schedule: Any = None,
        layers: Any = None,
        fit: str = "csn",
        on_error: str = "warn",
        log_dir: str | Path | None = None,
        tags: Mapping[str, Any] | None = None,
        run: str = "run",
        analyzer_options: Mapping[str, Mapping[str, Any]] | None = None,
        conv_slices: str = "pooled",
        normalize: bool = False,
        esd_method: str = "auto",
        plugins: Iterable[Any] = (),
        plugin_manager: Any = None,
        attach: bool = True,
        distributed: Any = None,
        blas_threads: int | None = 1,
    ) -> None:
        import torch

        from .plugins import analyzer_registry, get_plugin_manager

        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        if blas_threads is not None and (not isinstance(blas_threads, int) or isinstance(blas_threads, bool)
                                         or blas_threads < 1):
            raise ValueError(f"blas_threads must be a positive integer or None, got {blas_threads!r}")
        self.blas_threads = blas_threads
        if conv_slices not in CONV_SLICES:
            raise ValueError(f"conv_slices must be one of {CONV_SLICES}, got {conv_slices!r}")
        if schedule is not None and every is not None:
            raise ValueError("pass either every= or schedule=, not both")
        from .distributed import make_plan

        self._dist = make_plan(distributed, model)  # None: single-process behaviour, no collectives
        self.model = model
        self.optimizer = optimizer
        self.schedule: Schedule = as_schedule(schedule) if schedule is not None else every_schedule(
            DEFAULT_EVERY if every is None else every
        )
        self.on_error = on_error
        self.run = str(run)
        self.tags = dict(tags or {})
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.normalize = bool(normalize)
        self.esd_method = esd_method
        self.conv_slices = conv_slices
        self._layer_select = layers
        self._pm = plugin_manager or get_plugin_manager(
            plugins=plugins, builtin_options={"spectra.layers": {"conv_slices": conv_slices}}
        )
        analyzers = [analyzers] if isinstance(analyzers, str) else list(analyzers)
        options = analyzer_options_with_fit(fit, analyzer_options, analyzers)
        self.analyzers = resolve_analyzers(analyzers, analyzer_registry(self._pm), options)
        self.step = 0
        self._handles: list[Any] = []
        self._attached = False
        self._detached_once = False
        self._pending: dict[int, dict[str, Any]] | None = None
        self._pending_step: int | None = None
        self._warned: set = set()
        self._results = Results(attrs=self._attrs())
        self._discover()
        if attach:
            try:
                self.attach()
            except BaseException:  # e.g. on_error="raise" at step 0: leave no hooks on the optimizer
                self.detach()
                raise

    # ------------------------------------------------------------------ discovery
    def _attrs(self) -> dict[str, Any]:
        attrs = conventions(
            normalize=self.normalize, esd_method=self.esd_method, conv_slices=self.conv_slices,
            analyzers=self.analyzers,
        )
        attrs.update(source="monitor", run=self.run, step_semantics="row at step t: W_t, dW_t = W_t - W_{t-1}, G_{t-1}")
        return attrs

    def _optimizer_param_ids(self) -> set[int]:
        return {id(p) for g in self.optimizer.param_groups for p in g["params"]}

    def _discover(self) -> None:
        from .layers import discover_layers, layers_table_rows

        entries = discover_layers(unwrap_model(self.model), hook=self._pm.hook, select=self._layer_select)
        in_opt = self._optimizer_param_ids()
        self._seen_ids = {id(e.param) for e in entries} | in_opt
        self._entries = [e for e in entries if e.skip_reason is None]
        outside = [e.param_name for e in self._entries if id(e.param) not in in_opt]
        if outside:
            shown = ", ".join(outside[:5]) + (f" and {len(outside) - 5} more" if len(outside) > 5 else "")
            warnings.warn(
                f"spectra: {len(outside)} parameter(s) are not in the optimizer and are not monitored "
                f"(frozen?): {shown}. Parameters added later with add_param_group are picked up then.",
                RuntimeWarning,
                stacklevel=3,
            )
        self._layer_rows = layers_table_rows(entries)
        self._results = Results(self._results.records, layers=self._layer_rows, attrs=self._attrs())

    # ------------------------------------------------------------------ attach / detach
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
        if self._dist is not None:  # a collective: every rank checks that all ranks share the settings
            from .distributed import monitor_settings

            self._dist.check_consistent(monitor_settings(self, self._dist.mode), what="SpectraMonitor settings")
        self._handles = [
            self.optimizer.register_step_pre_hook(_weak_hook(self, "_pre_hook")),
            self.optimizer.register_step_post_hook(_weak_hook(self, "_post_hook")),
        ]
        self._attached = True
        self._attach_step = self.step
        self._detached_once = False
        if self.log_dir is not None:
            from .sinks import write_meta

            write_meta(self.log_dir, self._results.attrs, self._results.layers)
        self._safe_hook("spectra_monitor_attached", monitor=self)
        if self.step == 0 and not self._results.records:
            due = self._due(0)
            if due:
                self._analyze(0, due, captured={})
        return self

    def detach(self) -> None:
        """Remove the hooks. Idempotent; the records stay available."""
        for h in self._handles:
            h.remove()
        self._handles = []
        self._pending = None
        was = self._attached
        self._attached = False
        if was and not self._detached_once:
            self._detached_once = True
            self._safe_hook("spectra_monitor_detached", monitor=self)

    def __enter__(self) -> "SpectraMonitor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.detach()

    def __del__(self) -> None:  # hooks hold only a weak reference: remove them when the monitor is collected
        try:
            handles = self._handles
            for h in handles:
                h.remove()
            if handles and getattr(self, "_attached", False) and self.step == getattr(self, "_attach_step", -1):
                # collected before it saw a single step: almost surely created without keeping a reference
                warnings.warn(
                    "spectra: a SpectraMonitor was garbage-collected while attached, so its hooks were removed. "
                    "Keep a reference (monitor = SpectraMonitor(...)) or use it as a context manager.",
                    RuntimeWarning,
                    stacklevel=2,
                )
        except Exception:
            pass

    # ------------------------------------------------------------------ scheduling
    def _due(self, step: int) -> list[Any]:
        return [a for a in self.analyzers if (a.schedule or self.schedule)(step)]

    def _safe_hook(self, name: str, **kwargs: Any) -> None:
        try:
            getattr(self._pm.hook, name)(**kwargs)
        except Exception as exc:
            warnings.warn(f"spectra: plugin hook {name} raised {exc!r}", RuntimeWarning, stacklevel=3)

    # ------------------------------------------------------------------ hooks
    def _pre_hook(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        step = self.step + 1
        due = self._due(step)
        if not due:
            return None
        try:
            self._capture(step, due)
        except Exception as exc:  # capture must never break training
            if self.on_error == "raise":
                raise
            self._pending = None
            warnings.warn(f"spectra: could not capture step {step}: {exc!r}", RuntimeWarning, stacklevel=2)
        return None  # never change the optimizer's arguments

    def _capture(self, step: int, due: list[Any]) -> None:
        import torch

        needs = set().union(*(a.needs for a in due))
        want_prev = "update" in needs
        want_grad = "grad" in needs
        if not (want_prev or want_grad):
            self._pending, self._pending_step = {}, step
            return
        in_opt = self._optimizer_param_ids()
        self._refresh_if_optimizer_grew(in_opt)
        captured: dict[int, dict[str, Any]] = {}
        with torch.no_grad():
            for e in (self._entries if self._dist is None else self._dist.local(self._entries)):
                p = e.param
                if id(p) not in in_opt:
                    continue
                item: dict[str, Any] = {}
                if want_prev:
                    wide = p.dtype if p.dtype in (torch.float32, torch.float64) else torch.float32
                    item["previous"] = p.detach().to(dtype=wide, copy=True)
                if want_grad and p.grad is not None:
                    g = p.grad.detach()
                    if g.is_sparse:
                        g = g.to_dense()
                    item["grad"] = g.to(dtype=torch.float32 if g.dtype not in (torch.float64,) else g.dtype,
                                        copy=True)
                captured[id(p)] = item
        self._pending, self._pending_step = captured, step

    def _post_hook(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self.step += 1
        step = self.step
        captured = self._pending if self._pending_step == step else None
        self._pending, self._pending_step = None, None
        if captured is None:
            if self._dist is None or not self._due(step):
                return None
            captured = {}  # distributed: a rank whose capture failed still joins the step's gather
        due = self._due(step)
        try:
            self._analyze(step, due, captured)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:
            if self.on_error == "raise":
                raise
            warnings.warn(f"spectra: analysis of step {step} failed: {exc!r}", RuntimeWarning, stacklevel=2)
        finally:
            captured.clear()
        return None

    # ------------------------------------------------------------------ analysis
    def _states_for(self, entry: Any, step: int, item: Mapping[str, Any]) -> list[LayerState]:
        p = entry.param.detach()
        weight_views = entry.views(p)
        per_kind: dict[str, list[Any]] = {}
        prev = item.get("previous")
        if prev is not None:
            if tuple(prev.shape) != tuple(p.shape):
                raise ValueError(
                    f"parameter {entry.param_name!r} changed shape from {tuple(prev.shape)} to {tuple(p.shape)}"
                )
            update = p.to(dtype=prev.dtype) - prev
            per_kind["previous"] = entry.views(prev)
            per_kind["update"] = entry.views(update)
        g = item.get("grad")
        if g is not None and tuple(g.shape) == tuple(p.shape):
            per_kind["grad"] = entry.views(g)
        states = []
        for i, v in enumerate(weight_views):
            tensors = {"weight": v.tensor}
            for kind, views in per_kind.items():
                tensors[kind] = views[i].tensor
            states.append(
                LayerState(
                    layer=entry.layer, view=v.name, step=step, tensors=tensors, eig_scale=v.eig_scale,
                    normalize=self.normalize, esd_method=self.esd_method, module_type=entry.module_type,
                    context={"param_name": entry.param_name},
                )
            )
        return states

    def _analyze(self, step: int, due: list[Any], captured: Mapping[int, Mapping[str, Any]]) -> None:
        if not due:
            return
        from .threads import limit_blas_threads

        with limit_blas_threads(self.blas_threads):
            self._analyze_step(step, due, captured)

    def _analyze_step(self, step: int, due: list[Any], captured: Mapping[int, Mapping[str, Any]]) -> None:
        in_opt = self._optimizer_param_ids() if step > 0 else None
        self._refresh_if_optimizer_grew(in_opt)
        if self._dist is not None:  # this rank's share, streamed locally, then everyone's records (or rank 0's)
            self._results.extend(self._dist.run_step(
                lambda entries: self._analyze_entries(step, due, captured, entries, in_opt), self._entries,
                step=step, analyzers=due, run=self.run, tags=self.tags, on_error=self.on_error,
                emit=lambda recs: self._emit(recs, step),
            ))
            return
        records = self._analyze_entries(step, due, captured, self._entries, in_opt)
        self._results.extend(records)
        self._emit(records, step)

    def _analyze_entries(
        self, step: int, due: list[Any], captured: Mapping[int, Mapping[str, Any]], entries: list[Any],
        in_opt: set[int] | None,
    ) -> list[Record]:
        records: list[Record] = []
        for e in entries:
            if step > 0 and id(e.param) not in (in_opt or set()):
                continue
            try:
                states = self._states_for(e, step, captured.get(id(e.param), {}))
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:
                if self.on_error == "raise":
                    raise
                msg = f"{type(exc).__name__}: {exc}"
                key = ("snapshot", e.layer)
                if self.on_error == "warn" and key not in self._warned:
                    self._warned.add(key)
                    warnings.warn(f"spectra: layer {e.layer!r} at step {step}: {msg}", RuntimeWarning, stacklevel=3)
                records.append(Record(self.run, step, e.layer, "", "weight", "monitor", "error", float("nan"),
                                      None, "failed", msg, self.tags))
                continue
            try:
                records.extend(
                    run_analyzers(states, due, run=self.run, hook=self._pm.hook, on_error=self.on_error,
                                  tags=self.tags, warned=self._warned)
                )
            finally:
                for st in states:
                    st.release()
        return records

    def _refresh_if_optimizer_grew(self, in_opt: set[int] | None) -> None:
        """Pick up parameters added to the optimizer after attach (add_param_group)."""
        if in_opt is None:
            return
        if in_opt - self._seen_ids:
            known = {id(e.param) for e in self._entries}
            self._seen_ids |= in_opt
            from .layers import discover_layers, layers_table_rows

            entries = discover_layers(unwrap_model(self.model), hook=self._pm.hook, select=self._layer_select)
            new = [e for e in entries if e.skip_reason is None and id(e.param) not in known and id(e.param) in in_opt]
            if new:
                self._entries.extend(new)
                self._layer_rows = layers_table_rows(entries)
                self._results = Results(self._results.records, layers=self._layer_rows, attrs=self._results.attrs)

    def _emit(self, records: list[Record], step: int) -> None:
        if not records:
            return
        try:
            self._pm.hook.spectra_log_records(records=records, step=step, run=self.run, log_dir=self.log_dir)
        except Exception as exc:
            if self.on_error == "raise":
                raise
            warnings.warn(f"spectra: a results sink raised at step {step}: {exc!r}", RuntimeWarning, stacklevel=3)

    # ------------------------------------------------------------------ results and state
    @property
    def results(self) -> Results:
        """All records so far, with the layers table and conventions."""
        return self._results

    def to_pandas(self):
        """The tidy table (see :class:`~spectra.Results`)."""
        return self._results.to_pandas()

    def to_wide(self, **kwargs: Any):
        """One row per (run, step, layer, view)."""
        return self._results.to_wide(**kwargs)

    def state_dict(self) -> dict[str, Any]:
        """The step counter and records, to resume a run (save it with the model's checkpoint)."""
        return {
            "step": self.step,
            "run": self.run,
            "records": [
                (r.run, r.step, r.layer, r.view, r.matrix, r.analyzer, r.metric, r.value, r.index, r.status,
                 r.message, dict(r.tags))
                for r in self._results.records
            ],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume from :meth:`state_dict`: restores the step counter and the records.

        Raises:
            ValueError: the state is malformed (names the missing key or bad value).
        """
        for key in ("step", "records"):
            if key not in state:
                raise ValueError(f"monitor state is missing {key!r}; expected keys: step, run, records")
        step = state["step"]
        if not isinstance(step, int) or step < 0:
            raise ValueError(f"monitor state has invalid step {step!r}")
        recs = [Record(*row[:11], tags=row[11] if len(row) > 11 else {}) for row in state["records"]]
        self.step = step
        self._results = Results(recs, layers=self._layer_rows, attrs=self._results.attrs)

    def __repr__(self) -> str:
        names = [a.name for a in self.analyzers]
        return (
            f"SpectraMonitor(step={self.step}, layers={len(self._entries)}, analyzers={names}, "
            f"attached={self._attached})"
        )
