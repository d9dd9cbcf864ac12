"""Scalar sinks: send a few key metrics to the trackers researchers watch (TensorBoard, W&B, MLflow, anything).

Every sink here is a plugin implementing ``spectra_log_records``; pass it to a driver with
``plugins=[...]``. Each sends, per analyzed step, the ``ok``/``warn`` scalar rows (no ``index``) with a finite
value of the chosen ``metrics`` as ``{tag: value}``:

* ``metrics`` defaults to :data:`DEFAULT_METRICS` (alpha, alpha_hill, stable_rank, log_spectral_norm of the
  weights); ``"all"`` sends every scalar metric. Names are the wide view's (``Results.to_wide(matrix=None)``):
  a weight metric by its name (``"stable_rank"``), a metric of ΔW or G prefixed by its matrix
  (``"update_stable_rank"``, ``"update_cos_update_grad"``, ``"grad_relative_norm"``).
* ``tag`` is a format string over ``name`` (the wide-view name), ``metric``, ``matrix``, ``layer`` (with
  ``:<view>`` for views other than ``W``), ``view`` and ``run``. The default :data:`DEFAULT_TAG`,
  ``"{name}/{layer}"``, groups the charts by metric (TensorBoard and W&B group by the first path component):
  one ``alpha/`` section with a chart per layer, instead of one section per layer and metric.

A sink whose backend is not installed raises an ``ImportError`` naming the extra to install
(``pip install "spectra[integrations]"``). ``spectra.sinks`` re-exports every name here.
"""

from __future__ import annotations

import math
import re
import time
from typing import Any, Callable, Iterable, Mapping, Sequence

from .hookspecs import hookimpl

__all__ = [
    "DEFAULT_METRICS", "DEFAULT_TAG", "TAG_FIELDS", "scalar_values", "layer_means", "ScalarWriterSink",
    "CallableSink", "WandbSink", "MLflowSink",
]

DEFAULT_METRICS = ("alpha", "alpha_hill", "stable_rank", "log_spectral_norm")
DEFAULT_TAG = "{name}/{layer}"
TAG_FIELDS = ("name", "metric", "matrix", "layer", "view", "run")
_EXTRA = 'pip install "spectra[integrations]"'


def _require(module: str, what: str, package: str) -> Any:
    """Import a sink's backend, or raise an ImportError that names the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"{what} needs {package}, which is not installed: {_EXTRA} (or pip install {package})"
                          ) from exc


def _metric_set(metrics: Any) -> frozenset[str] | None:
    """``None`` for every metric (``"all"``), else the names (validated)."""
    if metrics == "all" or metrics is None:
        return None
    if isinstance(metrics, str):
        return frozenset({metrics})
    try:
        names = frozenset(metrics)
    except TypeError:
        raise TypeError(f"metrics must be 'all', a metric name or a collection of names, got "
                        f"{type(metrics).__name__} {metrics!r}") from None
    bad = [m for m in names if not isinstance(m, str) or not m]
    if bad or not names:
        raise ValueError(f"metrics must be non-empty metric names (or 'all'), got {sorted(map(repr, names))}")
    return names


def _check_tag(tag: Any) -> str:
    if not isinstance(tag, str) or not tag:
        raise TypeError(f"tag must be a non-empty format string, got {type(tag).__name__} {tag!r}")
    try:
        tag.format(**{f: "x" for f in TAG_FIELDS})
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(f"tag {tag!r} is not a valid format string over {', '.join(TAG_FIELDS)}: {exc!r}") from None
    return tag


def _wide_name(r: Any) -> str:
    return r.metric if r.matrix == "weight" else f"{r.matrix}_{r.metric}"


def _layer_label(r: Any) -> str:
    return r.layer if r.view in ("", "W", None) else f"{r.layer}:{r.view}"


def _sendable(r: Any, names: frozenset[str] | None) -> bool:
    if r.index is not None or r.status not in ("ok", "warn") or not math.isfinite(r.value):
        return False
    return names is None or _wide_name(r) in names


def scalar_values(records: Iterable[Any], *, metrics: Any = DEFAULT_METRICS, tag: str = DEFAULT_TAG
                  ) -> dict[str, float]:
    """``{tag: value}`` of the sendable scalar rows of ``records`` (see the module docstring).

    Args:
        records: :class:`~spectra.Record` rows (one step's, usually).
        metrics: names to send, or ``"all"``.
        tag: the tag format.

    Raises:
        TypeError / ValueError: a bad ``metrics`` or ``tag`` (the message names it and what is allowed).
    """
    names, tag = _metric_set(metrics), _check_tag(tag)
    out: dict[str, float] = {}
    for r in records:
        if _sendable(r, names):
            out[tag.format(name=_wide_name(r), metric=r.metric, matrix=r.matrix, layer=_layer_label(r),
                           view=r.view, run=r.run)] = float(r.value)
    return out


def layer_means(records: Iterable[Any], *, metrics: Any = DEFAULT_METRICS, prefix: str = "spectra/"
                ) -> dict[str, float]:
    """The mean over layer views of each chosen metric, ``{prefix + name: mean}``: a model-level summary of a
    step, like WeightWatcher's ``get_summary()`` (NaN and failed rows are left out, not averaged in)."""
    names = _metric_set(metrics)
    sums: dict[str, list[float]] = {}
    for r in records:
        if _sendable(r, names):
            acc = sums.setdefault(prefix + _wide_name(r), [0.0, 0])
            acc[0] += float(r.value)
            acc[1] += 1
    return {k: s / n for k, (s, n) in sums.items()}


class _ScalarSink:
    """Common part of the scalar sinks: which rows, which tags; subclasses implement :meth:`send`."""

    def __init__(self, *, metrics: Any = DEFAULT_METRICS, tag: str = DEFAULT_TAG) -> None:
        self.metrics = _metric_set(metrics)
        self.tag = _check_tag(tag)

    def __repr__(self) -> str:
        shown = "all" if self.metrics is None else sorted(self.metrics)
        return f"{type(self).__name__}(metrics={shown}, tag={self.tag!r})"

    def values(self, records: Iterable[Any]) -> dict[str, float]:
        """The ``{tag: value}`` this sink sends for ``records``."""
        return scalar_values(records, metrics="all" if self.metrics is None else self.metrics, tag=self.tag)

    def send(self, values: Mapping[str, float], step: int) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    @hookimpl
    def spectra_log_records(self, records: Sequence[Any], step: int, run: str) -> None:
        values = self.values(records)
        if values:
            self.send(values, int(step))


class ScalarWriterSink(_ScalarSink):
    """Send scalar metrics to anything with ``add_scalar(tag, value, step)`` (TensorBoard's ``SummaryWriter``,
    tensorboardX, ...).

    Example:
        >>> from torch.utils.tensorboard import SummaryWriter                   # doctest: +SKIP
        >>> sink = ScalarWriterSink(SummaryWriter("runs/exp1"))                  # alpha/<layer>, ... # doctest: +SKIP
        >>> monitor = spectra.SpectraMonitor(model, opt, plugins=[sink])         # doctest: +SKIP

    Args:
        writer: the writer.
        metrics: names to send (default :data:`DEFAULT_METRICS`), or ``"all"``.
        tag: the tag format (default ``"{name}/{layer}"``).
        prefix: prepended to every tag as written (e.g. ``"spectra/"``).

    Raises:
        TypeError: ``writer`` has no ``add_scalar`` method, or a bad ``metrics``/``tag``.
    """

    def __init__(self, writer: Any, *, metrics: Any = DEFAULT_METRICS, tag: str = DEFAULT_TAG, prefix: str = ""
                 ) -> None:
        if not callable(getattr(writer, "add_scalar", None)):
            raise TypeError(f"writer must have an add_scalar(tag, value, step) method, got {type(writer).__name__}")
        super().__init__(metrics=metrics, tag=prefix + tag)
        self.writer = writer

    def send(self, values: Mapping[str, float], step: int) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)


class CallableSink(_ScalarSink):
    """Send each step's scalars to any callable ``fn(metrics: dict[str, float], step: int) -> None``, e.g. a
    Lightning logger's ``log_metrics`` or your own tracker.

    Example:
        >>> sink = CallableSink(lambda metrics, step: print(step, metrics))    # doctest: +SKIP

    Raises:
        TypeError: ``fn`` is not callable, or a bad ``metrics``/``tag``.
    """

    def __init__(self, fn: Callable[[dict[str, float], int], None], *, metrics: Any = DEFAULT_METRICS,
                 tag: str = DEFAULT_TAG) -> None:
        if not callable(fn):
            raise TypeError(f"fn must be callable as fn(metrics: dict, step: int), got {type(fn).__name__} {fn!r}")
        super().__init__(metrics=metrics, tag=tag)
        self.fn = fn

    def send(self, values: Mapping[str, float], step: int) -> None:
        self.fn(dict(values), step)


class WandbSink(_ScalarSink):
    """Log scalar metrics to Weights & Biases.

    Metrics are logged against their own x-axis, ``step_metric`` (``run.define_metric``), so they never clash
    with the step counter of whatever else logs to the run (a trainer's ``WandbLogger``/``WandbCallback``).

    Args:
        run: a ``wandb`` run; ``None`` uses the active ``wandb.run`` at each log (start it with ``wandb.init``).
        metrics: names to send (default :data:`DEFAULT_METRICS`), or ``"all"``.
        tag: the tag format (default ``"{name}/{layer}"``).
        step_metric: the x-axis metric; ``None`` passes ``step=`` to ``run.log`` instead (W&B then drops
            steps lower than the run's current step).

    Raises:
        ImportError: wandb is not installed (names the extra).
        RuntimeError: at a log, no run was given and none is active.
    """

    def __init__(self, run: Any = None, *, metrics: Any = DEFAULT_METRICS, tag: str = DEFAULT_TAG,
                 step_metric: str | None = "spectra/step") -> None:
        self._wandb = _require("wandb", "WandbSink", "wandb")
        super().__init__(metrics=metrics, tag=tag)
        if step_metric is not None and (not isinstance(step_metric, str) or not step_metric):
            raise TypeError(f"step_metric must be a non-empty string or None, got {step_metric!r}")
        self.run = run
        self.step_metric = step_metric
        self._defined: set[tuple[int, str]] = set()

    def send(self, values: Mapping[str, float], step: int) -> None:
        run = self.run if self.run is not None else self._wandb.run
        if run is None:
            raise RuntimeError("WandbSink has no W&B run to log to: call wandb.init(...) first, or pass run=")
        if self.step_metric is None:
            run.log(dict(values), step=step)
            return
        rid = id(run)
        if (rid, "") not in self._defined:  # once per run: the x-axis itself
            run.define_metric(self.step_metric, hidden=True)
            self._defined.add((rid, ""))
        for key in values:  # once per chart group: "alpha/*" is plotted against the x-axis
            group = key.split("/", 1)[0] + "/*" if "/" in key else key
            if (rid, group) not in self._defined:
                run.define_metric(group, step_metric=self.step_metric)
                self._defined.add((rid, group))
        run.log({**values, self.step_metric: step})


_MLFLOW_BAD = re.compile(r"[^A-Za-z0-9_\-. /]")


def mlflow_key(tag: str) -> str:
    """``tag`` as a valid MLflow metric name (characters MLflow refuses, ``:`` included, become ``_``)."""
    key = _MLFLOW_BAD.sub("_", tag).strip("/")
    return re.sub(r"/+", "/", key) or "_"


class MLflowSink(_ScalarSink):
    """Log scalar metrics to MLflow, with the step as MLflow's ``step``.

    Args:
        run_id: the MLflow run to log to; ``None`` logs to the active run (``mlflow.start_run()``; MLflow starts
            one when none is active).
        client: an ``mlflow.MlflowClient`` used with ``run_id`` (default: a new client for the current
            tracking URI).
        metrics: names to send (default :data:`DEFAULT_METRICS`), or ``"all"``.
        tag: the tag format (default ``"{name}/{layer}"``); characters MLflow refuses become ``_``
            (:func:`mlflow_key`).

    Raises:
        ImportError: mlflow is not installed (names the extra).
    """

    def __init__(self, run_id: str | None = None, *, client: Any = None, metrics: Any = DEFAULT_METRICS,
                 tag: str = DEFAULT_TAG) -> None:
        self._mlflow = _require("mlflow", "MLflowSink", "mlflow")
        super().__init__(metrics=metrics, tag=tag)
        if run_id is not None and (not isinstance(run_id, str) or not run_id):
            raise TypeError(f"run_id must be an MLflow run id (a string) or None, got {run_id!r}")
        self.run_id = run_id
        self.client = client

    def values(self, records: Iterable[Any]) -> dict[str, float]:
        return {mlflow_key(k): v for k, v in super().values(records).items()}

    def send(self, values: Mapping[str, float], step: int) -> None:
        if self.run_id is None:
            self._mlflow.log_metrics(dict(values), step=step)
            return
        from mlflow.entities import Metric

        client = self.client if self.client is not None else self._mlflow.MlflowClient()
        now = int(time.time() * 1000)
        client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in values.items()])
