"""engine: the one ErrorPolicy, running analyzers into records, and resolving analyzer specs."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

import spectra
from spectra.analyzers.base import Analyzer, Measurement
from spectra.analyzers.esd import EsdAnalyzer
from spectra.analyzers.tail import TailAnalyzer
from spectra.pipeline.engine import ErrorPolicy, resolve_analyzers, run_analyzers
from spectra.plugins import analyzer_registry, get_plugin_manager
from spectra.snapshot import LayerState
from spectra.table.schema import STATUSES, Record


# ---------------------------------------------------------------------------------------------- ErrorPolicy
def test_policy_raise_reraises_the_same_exception():
    policy = ErrorPolicy("raise")
    assert policy.raises
    exc = RuntimeError("boom")
    with pytest.raises(RuntimeError) as info:
        policy.handle(exc, key="k")
    assert info.value is exc


def test_policy_warn_once_per_key():
    policy = ErrorPolicy("warn")
    assert not policy.raises
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        policy.handle(RuntimeError("a"), key=("esd", "fc1"), message="first failure")
        policy.handle(RuntimeError("b"), key=("esd", "fc1"), message="second failure")
        policy.handle(ValueError("c"), key=("esd", "fc2"))
        policy.handle(ValueError("d"), key=("esd", "fc2"))
    assert [str(x.message) for x in w] == ["first failure", "spectra: ValueError('c')"]
    assert all(x.category is RuntimeWarning for x in w)


def test_policy_warn_keys_are_per_instance():
    with pytest.warns(RuntimeWarning, match="one"):
        ErrorPolicy("warn").handle(RuntimeError("x"), key="same", message="one")
    with pytest.warns(RuntimeWarning, match="two"):
        ErrorPolicy("warn").handle(RuntimeError("x"), key="same", message="two")


def test_policy_ignore_is_silent():
    policy = ErrorPolicy("ignore")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(3):
            policy.handle(RuntimeError("quiet"), key="k")


def test_policy_default_is_warn():
    assert ErrorPolicy().mode == "warn"
    assert repr(ErrorPolicy("ignore")) == "ErrorPolicy('ignore')"


@pytest.mark.parametrize("mode", ["warn", "ignore", "raise"])
@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_interrupts_always_propagate(mode, exc_type):
    policy = ErrorPolicy(mode)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no warning is issued on the way out
        with pytest.raises(exc_type):
            policy.handle(exc_type(), key="k")


@pytest.mark.parametrize("mode", ["loud", "", None, "Warn"])
def test_bad_mode_message(mode):
    with pytest.raises(ValueError) as info:
        ErrorPolicy(mode)
    assert str(info.value) == f"on_error must be one of ('warn', 'raise', 'ignore'), got {mode!r}"


# ---------------------------------------------------------------------------------------------- run_analyzers
def _state(layer="fc", view="W", step=3, **tensors):
    torch.manual_seed(0)
    tensors = tensors or {"weight": torch.randn(6, 4)}
    return LayerState(layer=layer, view=view, step=step, tensors=tensors)


class _Good(Analyzer):
    name = "good"

    def analyze(self, layer):
        yield Measurement("fro", float(layer.array().sum()))
        yield Measurement("sv", 2.0, index=1, status="warn", message="small")


class _Boom(Analyzer):
    name = "boom"

    def analyze(self, layer):
        yield Measurement("partial", 1.0)  # rows before the failure are dropped with it
        raise RuntimeError("analyzer exploded")


class _Yields(Analyzer):
    name = "yields"

    def __init__(self, item, **kw):
        super().__init__(**kw)
        self.item = item

    def analyze(self, layer):
        yield self.item


class _NeedsUpdate(Analyzer):
    name = "needs_update"
    needs = frozenset({"weight", "update"})

    def analyze(self, layer):
        yield Measurement("cos", 1.0, "update")


class _Hook:
    def __init__(self):
        self.calls = []

    def spectra_analyzer_error(self, *, analyzer, layer, error):
        self.calls.append((analyzer, layer, error))


def test_records_from_measurements():
    st = _state()
    recs = run_analyzers([st], [_Good()], run="r", policy=ErrorPolicy("raise"), tags={"lr": 0.1})
    assert recs == [
        Record("r", 3, "fc", "W", "weight", "good", "fro", float(st.array().sum()), None, "ok", "", {"lr": 0.1}),
        Record("r", 3, "fc", "W", "weight", "good", "sv", 2.0, 1, "warn", "small", {"lr": 0.1}),
    ]


def test_analyzer_exception_becomes_one_failed_row_and_calls_the_hook():
    hook = _Hook()
    boom = _Boom()
    with pytest.warns(RuntimeWarning, match=r"analyzer 'boom' failed on layer 'fc' \(view 'W'\) at step 3"):
        recs = run_analyzers([_state()], [boom, _Good()], run="r", policy=ErrorPolicy("warn"), hook=hook,
                             tags={"seed": 1})
    failed = [r for r in recs if r.status == "failed"]
    assert failed == [Record.failed(run="r", step=3, layer="fc", view="W", analyzer="boom",
                                    message="RuntimeError: analyzer exploded", tags={"seed": 1})]
    assert [r.metric for r in recs if r.analyzer == "boom"] == ["error"]  # no "partial" row
    assert [r.metric for r in recs if r.analyzer == "good"] == ["fro", "sv"]  # the others still run
    ((analyzer, layer, error),) = hook.calls
    assert analyzer is boom and layer == "fc"
    assert isinstance(error, RuntimeError) and str(error) == "analyzer exploded"


def test_analyzer_failure_warns_once_per_layer_and_view():
    policy = ErrorPolicy("warn")
    states = [_state(step=s) for s in (1, 2)] + [_state(layer="other", step=1)]
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        recs = run_analyzers(states, [_Boom()], run="r", policy=policy)
    assert len(recs) == 3 and all(r.status == "failed" for r in recs)
    assert len(w) == 2
    assert "layer 'fc'" in str(w[0].message) and "layer 'other'" in str(w[1].message)


def test_analyzer_failure_under_raise_propagates():
    hook = _Hook()
    with pytest.raises(RuntimeError, match="analyzer exploded"):
        run_analyzers([_state()], [_Boom()], run="r", policy=ErrorPolicy("raise"), hook=hook)


def test_a_raising_error_hook_does_not_break_the_loop(caplog):
    class BadHook:
        def spectra_analyzer_error(self, **kw):
            raise ValueError("observer broke")

    recs = run_analyzers([_state()], [_Boom(), _Good()], run="r", policy=ErrorPolicy("ignore"), hook=BadHook())
    assert [r.status for r in recs] == ["failed", "ok", "warn"]
    assert "observer broke" in caplog.text


@pytest.mark.parametrize(
    "item, fragment",
    [
        (("fro", 1.0), "TypeError: analyzer 'yields' yielded tuple, expected Measurement"),
        (1.0, "TypeError: analyzer 'yields' yielded float, expected Measurement"),
        (Measurement("fro", 1.0, status="great"), "ValueError: analyzer 'yields' yielded status 'great'; allowed: "
                                                  f"{STATUSES}"),
        (Measurement("fro", 1.0, status="error"), "yielded status 'error'"),
    ],
)
def test_bad_yields_fail_the_analyzer(item, fragment):
    hook = _Hook()
    (rec,) = run_analyzers([_state()], [_Yields(item)], run="r", policy=ErrorPolicy("ignore"), hook=hook)
    assert rec.status == "failed" and rec.metric == "error" and math.isnan(rec.value)
    assert fragment in rec.message
    assert len(hook.calls) == 1


def test_unmet_needs_are_skipped_silently():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert run_analyzers([_state()], [_NeedsUpdate()], run="r", policy=ErrorPolicy("warn")) == []
    st = _state(weight=torch.ones(3, 2), update=torch.ones(3, 2))
    (rec,) = run_analyzers([st], [_NeedsUpdate()], run="r", policy=ErrorPolicy("warn"))
    assert (rec.matrix, rec.metric) == ("update", "cos")


def test_a_missing_grad_does_not_block_a_grad_analyzer():
    class GradOptional(Analyzer):
        name = "grad_optional"
        needs = frozenset({"weight", "grad"})

        def analyze(self, layer):
            yield Measurement("has_grad", float(layer.has("grad")))

    (rec,) = run_analyzers([_state()], [GradOptional()], run="r", policy=ErrorPolicy("raise"))
    assert rec.value == 0.0


def test_hook_spectra_analyzer_error():
    """A plugin implementing spectra_analyzer_error sees every failure, and the failed rows are still written."""
    seen = []

    class Observer:
        @spectra.hookimpl
        def spectra_analyzer_error(self, analyzer, layer, error):
            seen.append((analyzer.name, layer, type(error).__name__, str(error)))

    pm = get_plugin_manager(entrypoints=False, plugins=[Observer()])
    recs = run_analyzers([_state(layer="a"), _state(layer="b")], [_Boom()], run="r", policy=ErrorPolicy("ignore"),
                         hook=pm.hook)
    assert seen == [("boom", "a", "RuntimeError", "analyzer exploded"),
                    ("boom", "b", "RuntimeError", "analyzer exploded")]
    assert [(r.layer, r.status) for r in recs] == [("a", "failed"), ("b", "failed")]
    # and through a driver: spectra.analyze on a model
    seen.clear()
    model = torch.nn.Sequential(torch.nn.Linear(4, 3))
    res = spectra.analyze(model, analyzers=[_Boom()], plugins=[Observer()], on_error="ignore")
    assert seen == [("boom", "0", "RuntimeError", "analyzer exploded")]
    assert res.to_pandas()["status"].tolist() == ["failed"]


# ---------------------------------------------------------------------------------------------- resolve_analyzers
@pytest.fixture
def registry():
    return analyzer_registry(get_plugin_manager(entrypoints=False))


def test_resolve_names_and_instances(registry):
    tail = TailAnalyzer(method="hill")
    out = resolve_analyzers(["esd", tail], registry, {"esd": {"spectrum": True}})
    assert isinstance(out[0], EsdAnalyzer) and out[0].spectrum is True
    assert out[1] is tail
    (single,) = resolve_analyzers("tail", registry)
    assert isinstance(single, TailAnalyzer)
    assert resolve_analyzers(tail, registry) == [tail]


def test_resolve_unknown_name_lists_registered(registry):
    with pytest.raises(ValueError) as info:
        resolve_analyzers(["esd", "nuclear"], registry)
    assert str(info.value) == (
        f"unknown analyzer 'nuclear'; registered analyzers: {', '.join(sorted(registry))}")
    assert all(name in str(info.value) for name in ("alignment", "esd", "tail"))
    with pytest.raises(ValueError, match="registered analyzers: none"):
        resolve_analyzers(["esd"], {})


def test_resolve_class_instead_of_instance(registry):
    with pytest.raises(TypeError, match=r"got the analyzer class EsdAnalyzer; pass an instance \(EsdAnalyzer\(\)\) "
                                        r"or its registered name 'esd'"):
        resolve_analyzers([EsdAnalyzer], registry)


def test_resolve_other_objects(registry):
    with pytest.raises(TypeError, match=r"registered names or Analyzer instances, got int: 5"):
        resolve_analyzers(["esd", 5], registry)


def test_resolve_duplicates(registry):
    with pytest.raises(ValueError, match=r"analyzer\(s\) listed twice: \['esd'\]"):
        resolve_analyzers(["esd", "tail", "esd"], registry)
    with pytest.raises(ValueError, match="listed twice"):
        resolve_analyzers(["esd", EsdAnalyzer()], registry)


def test_resolve_options_for_an_analyzer_not_in_use(registry):
    with pytest.raises(ValueError) as info:
        resolve_analyzers(["esd"], registry, {"tail": {"method": "ww"}, "esd": {"spectrum": True}})
    assert str(info.value) == "analyzer_options given for analyzer(s) not in use: ['tail']; in use: ['esd']"


def test_resolve_bad_option_of_a_named_analyzer(registry):
    with pytest.raises(TypeError) as info:
        resolve_analyzers(["esd"], registry, {"esd": {"spectrm": True}})
    message = str(info.value)
    assert "'spectrm'" in message
    for allowed in EsdAnalyzer.option_names():
        assert allowed in message


def test_resolve_options_for_an_instance_say_why(registry):
    with pytest.raises(ValueError) as info:
        resolve_analyzers([EsdAnalyzer()], registry, {"esd": {"spectrum": True}})
    assert "not in use" not in str(info.value)


# ---------------------------------------------------------------------------------------------- thread pool
def _pool_states(seed: int = 0) -> list[LayerState]:
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for i, shape in enumerate([(60, 40), (50, 50), (30, 70), (45, 20)]):
        W0 = rng.standard_normal(shape)
        dW = 0.01 * rng.standard_normal(shape) if i != 2 else np.outer(rng.standard_normal(shape[0]),
                                                                          rng.standard_normal(shape[1]))
        G = rng.standard_normal(shape)
        if i == 3:
            G[0, 0] = np.nan  # a failing matrix: its rows fail the same way with and without the pool
        out.append(LayerState(f"l{i}", "W", 3, {"weight": W0 + dW, "previous": W0, "update": dW, "grad": G}))
    return out


def test_a_thread_pool_changes_no_record():
    from concurrent.futures import ThreadPoolExecutor

    from spectra.analyzers.alignment import AlignmentAnalyzer

    def run(executor):
        analyzers = [EsdAnalyzer(), TailAnalyzer(), AlignmentAnalyzer(k=5, overlaps="full")]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return run_analyzers(_pool_states(), analyzers, run="r", policy=ErrorPolicy("ignore"),
                                 executor=executor)

    serial = run(None)
    with ThreadPoolExecutor(2) as pool:
        threaded = run(pool)
    assert [repr(r) for r in threaded] == [repr(r) for r in serial]  # same rows, order and bits (NaN included)
    assert any(r.status == "failed" for r in serial) and len(serial) > 500


def test_profile_receives_each_snapshot_and_analyzer():
    calls = []

    class Sink:
        def add(self, stage, analyzer, layer, view, seconds):
            calls.append((stage, analyzer, layer, view))
            assert seconds >= 0

    states = _pool_states()[:2]
    run_analyzers(states, [EsdAnalyzer(), TailAnalyzer()], run="r", policy=ErrorPolicy("ignore"), profile=Sink())
    assert calls == [(stage, an, f"l{i}", "W") for i in range(2)
                     for stage, an in (("decompose", ""), ("analyzer", "esd"), ("analyzer", "tail"))]
