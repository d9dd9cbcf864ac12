"""The one path from parameters to records, used by every driver.

``Pipeline(settings, target, source=...)`` owns everything between a driver and the analyzers: the plugin
manager, the resolved analyzers, the layer entries and the layers table, the table's conventions, the error
policy, the sinks and, under ``torch.distributed``, the shard plan. A driver only decides *when* to analyze and
*what was copied* before a step; ``pipeline.run(step, due, copies)`` does the rest:

    local share → snapshots → analyzers → records → sinks → gather (distributed only)

With ``base=`` (offline only) the snapshots compare each layer with the base model's (W_{t−1} = W_base), and
the rows about ΔW = W − W_base are labelled ``matrix="delta"`` (:mod:`spectra.pipeline.deltas`).

Every run adds its timings to :attr:`Pipeline.profile` (:mod:`spectra.pipeline.profile`): the snapshots per
layer, the shared decompositions and each analyzer per view, each sink per step.

``SpectraMonitor`` calls it from its optimizer post-step hook, ``spectra.analyze`` once at step 0, and a
framework callback from wherever its framework says a step ended. Single-process runs never import the
distributed module.
"""

from __future__ import annotations

import warnings
from time import perf_counter
from typing import Any, Sequence

from ..layers import discover_layers, layers_table_rows, selector_miss_message
from ..plugins import analyzer_registry, get_plugin_manager
from ..progress import make_progress
from ..sinks import StreamingSink
from ..snapshot import LayerState
from ..table.schema import Record
from ..threads import blas_controller, limit_blas_threads
from .capture import Copies, layer_states
from .decomposers import Decomposers
from .deltas import DELTA, BaseMissing, BaseWeights, analyze_with_base, skipped_record
from .engine import ErrorPolicy, resolve_analyzers, run_analyzers, run_states
from .option_checks import check_layer_rules_of
from .profile import Profile
from .settings import Settings
from .worker_threads import torch_threads_of_caller

__all__ = ["Pipeline"]


class Pipeline:
    """Analyzers, layers, sinks and the shard plan of one driver, and the step that runs them.

    Args:
        settings: the driver's validated :class:`~spectra.pipeline.settings.Settings`.
        target: an ``nn.Module`` (wrappers already removed) or a state_dict.
        source: the driver's name for the table's ``attrs["source"]`` (``"monitor"``, ``"analyze"``, ...).

    Raises:
        ValueError / TypeError: unknown analyzers or bad analyzer options (see
            :func:`~spectra.pipeline.engine.resolve_analyzers`), or an unusable ``distributed=`` setting.
        RuntimeError: ``distributed="shard"``/``"rank0"`` without a process group.
    """

    def __init__(self, settings: Settings, target: Any, *, source: str) -> None:
        self.settings = settings
        self.source = source
        self.target = target
        self.policy = ErrorPolicy(settings.on_error)
        self.profile = Profile()
        self._blas_ctl: Any = None  # threadpoolctl controller (blas())
        # the creating (training) thread's, read before any worker pins its own
        self.decomposers = Decomposers(settings.decompose_threads, background=settings.background,
                                       torch_threads=torch_threads_of_caller())
        self.pm = settings.plugin_manager or get_plugin_manager(
            plugins=settings.plugins, builtin_options={"spectra.layers": dict(settings.layer_rules)}
        )
        if settings.plugin_manager is not None and settings.layer_rules:
            check_layer_rules_of(settings.plugin_manager, settings.layer_rules)
        self.analyzers = resolve_analyzers(settings.analyzers, analyzer_registry(self.pm), settings.analyzer_options)
        self._schedules = [(a, a.schedule or settings.schedule) for a in self.analyzers]
        self._due_cache: tuple[int | None, list[Any]] = (None, [])
        self._failures: list[Record] = []
        self.plan: Any = None
        if settings.distributed is not None:
            from .distributed import make_plan

            self.plan = make_plan(settings.distributed)  # None when "auto" finds no multi-rank group
        self.deltas: BaseWeights | None = None
        if settings.base is not None:
            self.deltas = BaseWeights(settings.base, target)  # loads the base now: a bad one fails before any work
        self.entries: list[Any] = []
        self.layer_rows: list[dict[str, Any]] = []
        self.discover()
        self.attrs = settings.conventions(self.analyzers, source=source)
        if self.deltas is not None:
            self.attrs.update(self.deltas.attrs())
        self.sinks: list[Any] = []
        self.stream: StreamingSink | None = None
        if settings.log_dir is not None:
            from ..table.storage import new_run_id

            run_id = new_run_id() if self.plan is None else self.plan.agree(new_run_id(), what="the run id")
            self.attrs["run_id"] = run_id
            self.stream = StreamingSink(settings.log_dir, attrs=self.attrs, layers=self.layer_rows, run_id=run_id)
            self.sinks.append(self.stream)

    def __repr__(self) -> str:
        return (f"Pipeline(source={self.source!r}, layers={len(self.entries)}, "
                f"analyzers={[a.name for a in self.analyzers]}, distributed={self.plan!r})")

    # ------------------------------------------------------------------------------------------ layers
    def _discover_all(self) -> list[Any]:
        rules = self.pm.get_plugin("spectra.layers")
        if hasattr(rules, "bind_model") and getattr(rules, "attention_heads", False):
            rules.bind_model(self.target)  # per-head views need each module's parent (its number of heads)
        return discover_layers(self.target, hook=self.pm.hook, select=self.settings.layers)

    def discover(self) -> None:
        """Find the target's layers (warns when a ``layers=`` selector matches no parameter)."""
        entries = self._discover_all()
        if self.settings.layers is not None and not entries:
            everything = discover_layers(self.target, hook=self.pm.hook)
            warnings.warn(f"spectra: {selector_miss_message(self.settings.layers, everything)}", RuntimeWarning,
                          stacklevel=4)
        self.entries = [e for e in entries if e.skip_reason is None]
        self.layer_rows = layers_table_rows(entries)

    def add_new_params(self, include: set[int]) -> bool:
        """Start analyzing parameters of ``include`` (ids) not yet known, e.g. after ``add_param_group``.

        Layers are rediscovered: a module that was replaced is analyzed from its new parameters, under its
        name, once (entries whose parameters left the model are dropped).

        Returns:
            Whether the entries changed (the layers table and the sinks' meta file are then updated).
        """
        known = {id(e.param) for e in self.entries}
        entries = self._discover_all()
        current = [e for e in entries if e.skip_reason is None and (id(e.param) in known or id(e.param) in include)]
        if [id(e.param) for e in current] == [id(e.param) for e in self.entries]:
            return False
        self.entries = current
        self.layer_rows = layers_table_rows(entries)
        for sink in self.sinks:
            sink.write_meta(self.attrs, self.layer_rows)
        return True

    # ------------------------------------------------------------------------------------------ scheduling
    def due(self, step: int) -> list[Any]:
        """The analyzers due at ``step`` (their own schedule, else the settings' schedule; none without both).

        Computed once per step (the pre- and post-step hooks ask the same question). A schedule that raises
        makes its analyzer not due, goes through the error policy, and leaves a failed row for
        :meth:`take_failures`.
        """
        if self._due_cache[0] == step:
            return self._due_cache[1]
        due = []
        for a, sched in self._schedules:
            if sched is None:
                continue
            try:
                if sched(step):
                    due.append(a)
            except Exception as exc:
                msg = f"schedule raised {type(exc).__name__}: {exc}"
                self.policy.handle(exc, key=("schedule", a.name),
                                   message=f"spectra: the schedule of analyzer {a.name!r} at step {step}: {msg}")
                self._failures.append(Record.failed(run=self.settings.run, step=step, layer="", view="",
                                                    analyzer=a.name, message=msg, tags=self.settings.tags))
        self._due_cache = (step, due)
        return due

    def take_failures(self) -> list[Record]:
        """Failed rows made outside a step's analysis (a schedule that raised), once each."""
        out, self._failures = self._failures, []
        return out

    def check_consistent(self, *, step: int, what: str) -> None:
        """Under ``torch.distributed``: a collective that checks every rank shares these settings (else no-op)."""
        if self.plan is not None:
            fp = self.settings.fingerprint(analyzers=self.analyzers, entries=self.entries, mode=self.plan.mode,
                                           step=step)
            self.plan.check_consistent(fp, what=what)

    def local_entries(self) -> list[Any]:
        """The entries this process analyzes: all of them, or this rank's share."""
        return list(self.entries) if self.plan is None else self.plan.local(self.entries)

    # ------------------------------------------------------------------------------------------ the step
    def run(self, step: int, due: Sequence[Any], copies: Copies | None = None, *,
            include: set[int] | None = None, worker: bool = False) -> list[Record]:
        """Analyze one step: this process's share → snapshots → ``due`` analyzers → records → sinks → gather.

        Args:
            step: the step the records belong to.
            due: the analyzers to run.
            copies: what was copied before the step (see :func:`~spectra.pipeline.capture.take_copies`).
            include: ids of the parameters to analyze (e.g. those in the optimizer); ``None`` takes all.
            worker: the caller is the background worker thread (it decomposes on a pool, not torch's team).

        Returns:
            The step's records: this process's, or every rank's in single-process order under ``"shard"``.

        Raises:
            Exception: only under ``on_error="raise"`` (after the gather when distributed).
        """
        copies = copies or {}
        self.profile.count_step()
        local = self.local_entries()
        records: list[Record] = []
        error: str | None = None
        bar = make_progress(self.settings.progress, len(local), f"spectra.{self.source}")
        try:
            with limit_blas_threads(self.settings.blas_threads, controller=self.blas()):
                if self.deltas is None:  # one run over every layer's snapshots: the pool never waits for a layer
                    self._analyze_entries(local, step, due, copies, include, records, bar, worker=worker)
                else:
                    for entry in local:
                        if include is None or id(entry.param) in include:
                            records.extend(self._analyze_entry(entry, step, due, copies.get(id(entry.param), {})))
                        if bar is not None:
                            bar.update(1)
        except Exception as exc:  # distributed: this rank's layers become failed rows; the gather must happen
            if self.plan is None:
                raise
            error = f"{type(exc).__name__}: {exc}"
            if not self.policy.raises:  # with "raise" every rank raises after the gather instead
                self.policy.handle(exc, key=("step", step),
                                   message=f"spectra: rank {self.plan.rank} failed to analyze step {step}: {error}")
            records.extend(self.plan.failed_records(exc, local, records, analyzers=due, run=self.settings.run,
                                                    step=step, tags=self.settings.tags))
        finally:
            if bar is not None:
                bar.close()
        sink_error = self.emit(records, step)
        if self.plan is not None:
            records = self.plan.gather(records, self.entries, policy=self.policy, error=error, step=step)
        if sink_error is not None:
            raise sink_error
        return records

    def states(self, entry: Any, step: int, item: Any = None) -> list[LayerState]:
        """The snapshots of one entry at ``step`` (see :func:`~spectra.pipeline.capture.layer_states`)."""
        return layer_states(entry, step, item or {}, normalize=self.settings.normalize,
                            esd_method=self.settings.esd_method, context=self.settings.snapshot_context(),
                            device=self.settings.device)

    def _analyze_entries(self, local: Sequence[Any], step: int, due: Sequence[Any], copies: Any,
                         include: Any, records: list[Record], bar: Any, *, worker: bool = False) -> None:
        """Every included entry's snapshots through one :func:`~spectra.pipeline.engine.run_states` call.

        The decompositions of the next snapshot start while this one's analyzers run, across layers too (one
        call per layer would leave the threads idle while each layer's analyzers run). Rows go to ``records`` in
        entry order as soon as an entry is done; each snapshot is released as soon as its analyzers ran.
        """
        groups: list[tuple[list[LayerState], list[Record]]] = [
            self._snapshots(e, step, copies.get(id(e.param), {})) if include is None or id(e.param) in include
            else ([], []) for e in local]
        flat = [st for states, _ in groups for st in states]
        owner = [g for g, (states, _) in enumerate(groups) for _ in states]  # each snapshot's entry
        rows: list[list[Record]] = [[] for _ in groups]
        emitted = 0  # entries [0, emitted) are in `records`

        def emit_upto(end: int) -> None:
            nonlocal emitted
            for g in range(emitted, end):
                records.extend(groups[g][1] + rows[g])
                if bar is not None:
                    bar.update(1)
            emitted = max(emitted, end)

        def done(i: int, got: list[Record]) -> None:
            rows[owner[i]].extend(got)
            if i + 1 == len(flat) or owner[i + 1] != owner[i]:  # the entry's last snapshot
                emit_upto(owner[i] + 1)

        self.decomposers.run(lambda executor: run_states(
            flat, due, run=self.settings.run, policy=self.policy, hook=self.pm.hook, tags=self.settings.tags,
            profile=self.profile, executor=executor, release=True, done=done), worker=worker)
        emit_upto(len(local))

    def _snapshots(self, entry: Any, step: int, item: Any) -> tuple[list[LayerState], list[Record]]:
        """The entry's snapshots, or none and its ``capture`` failure row (after the error policy)."""
        t0 = perf_counter()
        try:
            states = self.states(entry, step, item)
        except Exception as exc:
            msg = f"{type(exc).__name__}: {exc}"
            self.policy.handle(exc, key=("capture", entry.layer),
                               message=f"spectra: layer {entry.layer!r} at step {step}: {msg}")
            return [], [Record.failed(run=self.settings.run, step=step, layer=entry.layer, view="",
                                      analyzer="capture", message=msg, tags=self.settings.tags)]
        self.profile.add("snapshot", "", entry.layer, "", perf_counter() - t0)
        return states, []

    def _analyze_entry(self, entry: Any, step: int, due: Sequence[Any], item: Any) -> list[Record]:
        """One entry compared with the base weights (``deltas``): its rows and the delta rows."""
        item, base_rows = self._pair_with_base(entry, step, item)
        states, failed = self._snapshots(entry, step, item)
        if failed:
            return base_rows + failed

        def run(sts: Sequence[LayerState], analyzers: Sequence[Any]) -> list[Record]:
            return self.decomposers.run(lambda executor: run_analyzers(
                sts, analyzers, run=self.settings.run, policy=self.policy, hook=self.pm.hook,
                tags=self.settings.tags, profile=self.profile, executor=executor))

        try:
            return analyze_with_base(states, due, run) + base_rows
        finally:
            for st in states:
                st.release()

    def _pair_with_base(self, entry: Any, step: int, item: Any) -> tuple[Any, list[Record]]:
        """The entry's copies with W_base added, or the ``skipped``/``failed`` delta row that says why not."""
        if self.deltas is None:
            return item, []
        tags = self.settings.tags
        try:
            return {**item, **self.deltas.item(entry)}, []
        except BaseMissing as why:
            return item, [skipped_record(run=self.settings.run, step=step, layer=entry.layer, message=str(why),
                                         tags=tags)]
        except Exception as exc:
            msg = f"{type(exc).__name__}: {exc}"
            self.policy.handle(exc, key=("base", entry.layer),
                               message=f"spectra: layer {entry.layer!r} cannot be compared with the base: {msg}")
            return item, [Record.failed(run=self.settings.run, step=step, layer=entry.layer, view="",
                                        analyzer="base", message=msg, tags=tags, matrix=DELTA)]

    # ------------------------------------------------------------------------------------------ sinks, hooks
    def emit(self, records: Sequence[Record], step: int) -> BaseException | None:
        """Hand ``records`` to every sink: the registered plugins' and this pipeline's own (``log_dir``).

        Returns:
            Under ``torch.distributed`` with ``on_error="raise"``, the sink's exception, to be raised after the
            gather (so no rank is left waiting); otherwise ``None`` (failures follow the error policy).
        """
        if not records:
            return None
        kwargs = {"records": list(records), "step": step, "run": self.settings.run, "log_dir": self.settings.log_dir}
        hook = self.pm.hook.spectra_log_records
        deferred: BaseException | None = None
        # one call per sink, in pluggy's call order, so a sink that raises does not starve the others; then ours
        # (pluggy already parsed each implementation's argument names: no signature inspection per step)
        sinks = [(type(impl.plugin).__name__, impl.function, impl.argnames)
                 for impl in reversed(hook.get_hookimpls())
                 if not (getattr(impl, "hookwrapper", False) or getattr(impl, "wrapper", False))]
        sinks += [(type(s).__name__, s.spectra_log_records, ("records", "step", "run")) for s in self.sinks]
        for name, fn, argnames in sinks:
            t0 = perf_counter()
            try:
                fn(**{k: kwargs[k] for k in argnames})
            except Exception as exc:
                if self.plan is not None and self.policy.raises:
                    deferred = deferred or exc
                    continue
                self.policy.handle(exc, key=("sink", name, step),
                                   message=f"spectra: a results sink raised at step {step}: {exc!r} (sink {name})")
            finally:
                self.profile.add("sink", name, "", "", perf_counter() - t0)
        return deferred

    def notify(self, hook_name: str, **kwargs: Any) -> None:
        """Call an observer hook (e.g. ``spectra_monitor_attached``); a plugin that raises only warns."""
        try:
            getattr(self.pm.hook, hook_name)(**kwargs)
        except Exception as exc:
            warnings.warn(f"spectra: plugin hook {hook_name} raised {exc!r}", RuntimeWarning, stacklevel=3)

    def release(self) -> None:
        """Drop the references to the target and its parameters (the driver is done with them for good)."""
        self.target = None
        self.entries = []
        self.deltas = None
        self.close()

    def close(self) -> None:
        """Release the shard plan's process groups (local, not a collective) and the threads; idempotent."""
        if self.plan is not None:
            self.plan.close()
        self.close_threads()

    def close_threads(self) -> None:
        """Stop the decomposition threads; the next step that needs them starts new ones. Idempotent."""
        self.decomposers.close()

    def blas(self) -> Any:
        """The BLAS controller of :func:`~spectra.threads.limit_blas_threads`, found once (the first call imports
        SciPy's linear algebra, ~0.13 s: drivers call it at attach, outside the timed first due step), or ``None``."""
        if self._blas_ctl is None and self.settings.blas_threads is not None:
            self._blas_ctl = blas_controller()
        return self._blas_ctl
