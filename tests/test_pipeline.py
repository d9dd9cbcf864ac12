"""Pipeline: the one path from parameters to records, driven by hand (no optimizer), and a minimal new driver."""

from __future__ import annotations

import re
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import spectra
from spectra import Analyzer, SpectraMonitor
from spectra.analyzers.esd import EsdAnalyzer
from spectra.pipeline import Pipeline, Settings
from spectra.pipeline.capture import needs_of, take_copies
from spectra.pipeline.target import load_target
from spectra.plugins import get_plugin_manager
from spectra.schedules import at, every
from spectra.table import Results
from spectra.table.schema import records_frame


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 4))


def _pipeline(target=None, driver="analyze", plugins=(), source=None, **options):
    pm = get_plugin_manager(entrypoints=False, plugins=list(plugins))
    settings = Settings.build(driver, plugin_manager=pm, **options)
    return Pipeline(settings, _mlp() if target is None else target, source=source or driver)


def _frame(records):
    return records_frame(records)


class _Recorder:
    """A third-party sink: remembers every call."""

    def __init__(self):
        self.calls = []

    @spectra.hookimpl
    def spectra_log_records(self, records, step, run):
        self.calls.append((step, run, list(records)))


class _RaisingSink:
    @spectra.hookimpl
    def spectra_log_records(self, records, step, run):
        raise RuntimeError("sink is down")


class _Boom(Analyzer):
    name = "boom"

    def analyze(self, layer):
        raise RuntimeError("analyzer exploded")


# ---------------------------------------------------------------------------------------------- same as analyze
def test_run_at_step_zero_equals_analyze_on_a_module():
    model = _mlp()
    p = _pipeline(model)
    assert [e.layer for e in p.entries] == ["0", "2"]
    records = p.run(0, p.analyzers)
    expected = spectra.analyze(model, plugin_manager=get_plugin_manager(entrypoints=False))
    pd.testing.assert_frame_equal(_frame(records), expected.to_pandas())
    assert p.attrs == {k: v for k, v in expected.attrs.items() if k != "schema_version"}
    pd.testing.assert_frame_equal(Results(layers=p.layer_rows).layers, expected.layers)
    assert {r.step for r in records} == {0} and {r.run for r in records} == {"analyze"}


def test_run_on_a_state_dict_equals_analyze():
    sd = {k: v.clone() for k, v in _mlp().state_dict().items()}
    p = _pipeline(load_target(sd))
    assert [e.layer for e in p.entries] == ["0", "2"]
    records = p.run(0, p.analyzers)
    expected = spectra.analyze(sd, plugin_manager=get_plugin_manager(entrypoints=False))
    pd.testing.assert_frame_equal(_frame(records), expected.to_pandas())
    # a state_dict and its module give the same numbers
    from_module = _pipeline(_mlp()).run(0, p.analyzers)
    pd.testing.assert_frame_equal(_frame(records), _frame(from_module))


def test_run_with_explicit_settings_matches_analyze_with_the_same_options():
    model = _mlp()
    options = {"normalize": True, "fit": "hill", "tags": {"seed": 7}, "run": "r2",
               "analyzer_options": {"esd": {"spectrum": True}}}
    p = _pipeline(model, **options)
    expected = spectra.analyze(model, plugin_manager=get_plugin_manager(entrypoints=False), **options)
    pd.testing.assert_frame_equal(_frame(p.run(0, p.analyzers)), expected.to_pandas())


def test_run_never_changes_the_target():
    model = _mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    p = _pipeline(model)
    p.run(0, p.analyzers)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_run_with_include_and_without_due():
    model = _mlp()
    p = _pipeline(model)
    first = p.entries[0]
    records = p.run(0, p.analyzers, include={id(first.param)})
    assert {r.layer for r in records} == {"0"}
    assert p.run(0, []) == []


def test_run_with_copies_gives_update_rows():
    model = _mlp()
    p = _pipeline(model, analyzers=("esd",), analyzer_options={"esd": {"matrices": ("weight", "update")}})
    copies = take_copies(p.entries, needs_of(p.analyzers))
    w_prev = model[0].weight.detach().clone().double()
    with torch.no_grad():
        model[0].weight.mul_(1.5)
    records = p.run(1, p.analyzers, copies)
    df = _frame(records)
    got = df.query("layer == '0' and matrix == 'update' and metric == 'lambda_max'")["value"].item()
    s = np.linalg.svd((model[0].weight.detach().double() - w_prev).numpy(), compute_uv=False)
    assert got == pytest.approx(s[0] ** 2, rel=1e-9)
    assert set(df["step"]) == {1}


def test_a_bad_copy_becomes_a_failed_capture_row():
    model = _mlp()
    p = _pipeline(model)
    copies = {id(model[0].weight): {"previous": torch.zeros(2, 2)}}
    with pytest.warns(RuntimeWarning, match=r"layer '0' at step 1: ValueError: parameter '0.weight' changed shape"):
        records = p.run(1, p.analyzers, copies)
    failed = [r for r in records if r.status == "failed"]
    assert [(r.layer, r.view, r.analyzer, r.metric) for r in failed] == [("0", "", "capture", "error")]
    assert {r.layer for r in records if r.status == "ok"} == {"2"}


def test_analyzer_failure_under_raise_propagates_from_run():
    p = _pipeline(analyzers=[_Boom()], on_error="raise")
    with pytest.raises(RuntimeError, match="analyzer exploded"):
        p.run(0, p.analyzers)


def test_single_process_never_imports_the_distributed_module():
    code = (
        "import sys, torch, spectra\n"
        "from spectra.pipeline import Pipeline, Settings\n"
        "p = Pipeline(Settings.build('analyze'), torch.nn.Linear(4, 3), source='analyze')\n"
        "p.run(0, p.analyzers); p.close(); spectra.analyze(torch.nn.Linear(3, 2))\n"
        "assert 'spectra.pipeline.distributed' not in sys.modules, 'distributed module imported'\n"
        "assert p.plan is None\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# ---------------------------------------------------------------------------------------------- schedules
def test_due_honours_per_analyzer_schedules():
    own = EsdAnalyzer(schedule=at([3, 4]))
    p = _pipeline(driver="monitor", analyzers=[own, "tail"], every=2)
    names = {step: [a.name for a in p.due(step)] for step in range(7)}
    assert names == {0: ["tail"], 1: [], 2: ["tail"], 3: ["esd"], 4: ["esd", "tail"], 5: [], 6: ["tail"]}
    assert p.due(4)[0] is own


def test_due_offline_only_own_schedules():
    p = _pipeline(analyzers=["tail"], analyzer_options={"tail": {"schedule": every(5)}}, fit="hill")
    assert [a.name for a in p.due(0)] == ["tail"]
    assert p.due(3) == []
    assert _pipeline().due(0) == []  # offline without own schedules nothing is "due": analyze passes its list


# ---------------------------------------------------------------------------------------------- sinks
def test_plugin_sink_and_log_dir_sink_both_get_the_records(tmp_path):
    sink = _Recorder()
    p = _pipeline(plugins=[sink], log_dir=tmp_path / "log", run="exp", tags={"lr": 0.5})
    built = Results.read(tmp_path / "log")  # the sink wrote the conventions and layers when it was built
    assert len(built) == 0 and built.attrs["run"] == "exp" and len(built.layers) == 4
    first = p.run(0, p.analyzers)
    second = p.run(5, p.analyzers)
    assert [(step, run, len(recs)) for step, run, recs in sink.calls] == [(0, "exp", len(first)),
                                                                         (5, "exp", len(second))]
    assert sink.calls[0][2] == first
    back = Results.read(tmp_path / "log")
    pd.testing.assert_frame_equal(back.to_pandas(), _frame(first + second))
    assert back.attrs["source"] == "analyze" and back.attrs["run"] == "exp"
    assert back.layers["layer"].tolist() == ["0", "0.bias", "2", "2.bias"]


def test_empty_batches_reach_no_sink(tmp_path):
    sink = _Recorder()
    p = _pipeline(plugins=[sink], log_dir=tmp_path / "log")
    assert p.run(0, []) == []
    assert sink.calls == []
    assert not (tmp_path / "log" / "records").exists()


def test_raising_sink_warns_under_warn():
    p = _pipeline(plugins=[_RaisingSink()])
    with pytest.warns(RuntimeWarning, match=r"a results sink raised at step 0: RuntimeError\('sink is down'\)"):
        records = p.run(0, p.analyzers)
    assert records and not [r for r in records if r.status == "failed"]


def test_raising_sink_is_silent_under_ignore():
    p = _pipeline(plugins=[_RaisingSink()], on_error="ignore")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert p.run(0, p.analyzers)


def test_raising_sink_raises_under_raise():
    p = _pipeline(plugins=[_RaisingSink()], on_error="raise")
    with pytest.raises(RuntimeError, match="sink is down"):
        p.run(0, p.analyzers)


def test_raising_sink_does_not_starve_the_other_sinks(tmp_path):
    good = _Recorder()
    p = _pipeline(plugins=[good, _RaisingSink()], log_dir=tmp_path / "log")
    with pytest.warns(RuntimeWarning, match="a results sink raised"):
        records = p.run(0, p.analyzers)
    assert len(Results.read(tmp_path / "log")) == len(records)
    assert [step for step, _, _ in good.calls] == [0]


def test_deprecated_log_dir_sink_gets_it_and_warns_at_registration(tmp_path):
    got = []

    class OldSink:
        @spectra.hookimpl
        def spectra_log_records(self, records, step, run, log_dir):
            got.append((step, run, log_dir, len(records)))

    with pytest.warns(DeprecationWarning, match="the log_dir argument of spectra_log_records is deprecated"):
        p = Pipeline(Settings.build("analyze", plugins=[OldSink()], log_dir=tmp_path / "log"), _mlp(),
                     source="analyze")
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # only registration warns, not each call
        records = p.run(0, p.analyzers)
    assert got == [(0, "analyze", tmp_path / "log", len(records))]
    got.clear()
    with pytest.warns(DeprecationWarning):
        p = Pipeline(Settings.build("analyze", plugins=[OldSink()]), _mlp(), source="analyze")
    p.run(0, p.analyzers)
    assert got == [(0, "analyze", None, len(records))]


def test_new_style_sink_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        p = Pipeline(Settings.build("analyze", plugins=[_Recorder()]), _mlp(), source="analyze")
    assert p.run(0, p.analyzers)


# ---------------------------------------------------------------------------------------------- layers
@pytest.mark.parametrize(
    "selector, shown",
    [("enc*", "layers='enc*'"), (re.compile("^attn"), "layers=re.compile('^attn')"), (nn.Conv2d, "layers=Conv2d")],
)
def test_selector_miss_warning_names_the_selector(selector, shown):
    with pytest.warns(RuntimeWarning) as record:
        p = _pipeline(layers=selector)
    (message,) = [str(w.message) for w in record if "matches no parameter" in str(w.message)]
    assert message.startswith(f"spectra: {shown} matches no parameter")
    assert "available layers: '0', '2'" in message
    assert p.entries == []


def test_selector_that_matches_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p = _pipeline(layers="2")
    assert [e.layer for e in p.entries] == ["2"]


def test_add_new_params(tmp_path):
    model = _mlp()
    p = _pipeline(model, driver="monitor", log_dir=tmp_path / "log")
    known = {id(e.param) for e in p.entries}
    model.append(nn.Linear(4, 5))
    new = model[3].weight
    assert p.add_new_params(known) is False  # nothing new among the included ids
    assert p.add_new_params(known | {id(new)}) is True
    assert [e.layer for e in p.entries] == ["0", "2", "3"]
    assert "3" in [r["layer"] for r in p.layer_rows]
    reread = Results.read(tmp_path / "log").layers  # the sink's meta file was rewritten
    assert reread["layer"].tolist() == ["0", "0.bias", "2", "2.bias", "3", "3.bias"]
    assert p.add_new_params(known | {id(new)}) is False  # already known
    records = p.run(0, p.analyzers[:1])
    assert {r.layer for r in records} == {"0", "2", "3"}


def test_conv_slices_with_a_plugin_manager_is_honoured_or_refused():
    conv = nn.Sequential(nn.Conv2d(2, 3, 3))
    try:
        p = _pipeline(conv, conv_slices="separate")
    except (TypeError, ValueError):
        return
    (entry,) = p.entries
    assert len(entry.view_names) == 9, (p.attrs["conv_slices"], entry.view_names)


# ---------------------------------------------------------------------------------------------- layer hooks
def test_hook_spectra_include_param():
    """A plugin's spectra_include_param decides which parameters the pipeline analyzes."""
    calls = []

    class OnlyFirst:
        @spectra.hookimpl
        def spectra_include_param(self, name, param, module):
            calls.append((name, tuple(param.shape), type(module).__name__))
            return False if name == "2.weight" else None

    p = _pipeline(plugins=[OnlyFirst()])
    assert ("0.weight", (8, 6), "Linear") in calls and ("2.weight", (4, 8), "Linear") in calls
    assert [e.layer for e in p.entries] == ["0"]
    skipped = {r["layer"]: r["skip_reason"] for r in p.layer_rows}
    assert "spectra_include_param returned False" in skipped["2"]
    assert {r.layer for r in p.run(0, p.analyzers)} == {"0"}


def test_hook_spectra_as_matrices():
    """A plugin's spectra_as_matrices defines the views; the pipeline analyzes exactly those matrices."""
    calls = []

    class Halves:
        @spectra.hookimpl
        def spectra_as_matrices(self, name, param, module):
            calls.append((name, type(module).__name__))
            if name == "0.weight":
                return [("top", param[:4]), ("bottom", param[4:])]
            return None

    model = _mlp()
    p = _pipeline(model, plugins=[Halves()], analyzers=("esd",))
    assert ("0.weight", "Linear") in calls
    assert p.entries[0].view_names == ("top", "bottom")
    df = _frame(p.run(0, p.analyzers))
    assert set(df.loc[df.layer == "0", "view"]) == {"top", "bottom"}
    w = model[0].weight.detach().double().numpy()
    for view, block in (("top", w[:4]), ("bottom", w[4:])):
        got = df.query(f"layer == '0' and view == '{view}' and metric == 'lambda_max'")["value"].item()
        assert got == pytest.approx(np.linalg.svd(block, compute_uv=False)[0] ** 2, rel=1e-9)
    assert set(df.loc[df.layer == "2", "view"]) == {"W"}


def test_hook_spectra_log_records():
    """A plugin implementing spectra_log_records receives each batch, its step and the run, as made."""
    sink = _Recorder()
    p = _pipeline(plugins=[sink], run="exp")
    records = p.run(0, p.analyzers)
    later = p.run(7, p.analyzers[:1])
    assert [(s, r) for s, r, _ in sink.calls] == [(0, "exp"), (7, "exp")]
    assert sink.calls[0][2] == records and sink.calls[1][2] == later
    assert all(isinstance(r, spectra.Record) for r in sink.calls[0][2])


# ---------------------------------------------------------------------------------------------- a new driver
class CallbackDriver:
    """A framework-callback-style driver built from ``Settings`` + ``Pipeline`` only (no optimizer hooks).

    The host calls :meth:`on_step_begin` once the gradients exist and :meth:`on_step_end` after it updated the
    weights; step ``t`` is the number of completed updates, step 0 the initial weights.
    """

    def __init__(self, model, **options):
        self.pipeline = Pipeline(Settings.build("monitor", **options), model, source="callback")
        self.results = Results(layers=self.pipeline.layer_rows, attrs=self.pipeline.attrs)
        self._copies = {}
        due = self.pipeline.due(0)
        if due:
            self.results.extend(self.pipeline.run(0, due))

    def on_step_begin(self, step):
        """Before the update that completes ``step``: copy what the analyzers due then need."""
        due = self.pipeline.due(step)
        self._copies = take_copies(self.pipeline.local_entries(), needs_of(due)) if due else {}

    def on_step_end(self, step):
        """After the update that completed ``step``: analyze it if anything is due."""
        due = self.pipeline.due(step)
        if due:
            self.results.extend(self.pipeline.run(step, due, self._copies))
        self._copies = {}

    def to_pandas(self):
        return self.results.to_pandas()


def _batches(steps=4):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(16, 6, generator=g), torch.randn(16, 4, generator=g)) for _ in range(steps)]


def _loss(model, x, y):
    return ((model(x) - y) ** 2).mean()


def test_a_new_driver_needs_only_settings_and_pipeline():
    options = {"every": 2, "tags": {"lr": 0.1}, "run": "same"}
    lr, batches = 0.1, _batches()

    ref_model = _mlp()
    opt = torch.optim.SGD(ref_model.parameters(), lr=lr)
    monitor = SpectraMonitor(ref_model, opt, **options)
    for x, y in batches:
        opt.zero_grad()
        _loss(ref_model, x, y).backward()
        opt.step()

    model = _mlp()
    driver = CallbackDriver(model, **options)
    for step, (x, y) in enumerate(batches, start=1):
        model.zero_grad()
        _loss(model, x, y).backward()
        driver.on_step_begin(step)
        with torch.no_grad():  # a manual SGD update, the same arithmetic as torch.optim.SGD
            for p in model.parameters():
                p.add_(p.grad, alpha=-lr)
        driver.on_step_end(step)

    for a, b in zip(model.parameters(), ref_model.parameters()):
        assert torch.equal(a, b)
    mine, theirs = driver.to_pandas(), monitor.to_pandas()
    assert sorted(theirs["step"].unique()) == [0, 2, 4]
    assert {"weight", "update", "grad"} <= set(theirs["matrix"])
    pd.testing.assert_frame_equal(mine, theirs)
    assert {k: v for k, v in mine.attrs.items() if k != "source"} == {
        k: v for k, v in theirs.attrs.items() if k != "source"}
    assert (mine.attrs["source"], theirs.attrs["source"]) == ("callback", "monitor")
    pd.testing.assert_frame_equal(driver.results.layers, monitor.results.layers)
    monitor.detach()
