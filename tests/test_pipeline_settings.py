"""Settings: driver defaults, validation messages shared by every driver, shortcuts, conventions, fingerprint."""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch
from torch import nn

import spectra
from spectra.analyzers.esd import EsdAnalyzer
from spectra.pipeline import Pipeline, Settings
from spectra.pipeline.settings import DRIVER_DEFAULTS
from spectra.plugins import get_plugin_manager
from spectra.schedules import at, every
from spectra.table.schema import COLUMNS


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4))


def _error(fn):
    """The exception ``fn()`` raises (the test fails when it raises none)."""
    with pytest.raises((TypeError, ValueError)) as info:
        fn()
    return info.value


# ---------------------------------------------------------------------------------------------- defaults
def test_monitor_defaults():
    s = Settings.build("monitor")
    assert s.analyzers == ("esd", "tail", "alignment")
    assert s.run == "run"
    assert s.blas_threads == 1
    assert s.progress is False
    assert s.schedule == every(10)
    assert [step for step in range(25) if s.schedule(step)] == [0, 10, 20]
    assert s.on_error == "warn" and s.normalize is False and s.esd_method == "auto"
    assert s.analyzer_options == {} and s.layer_rules == {} and s.tags == {}
    assert s.log_dir is None and s.layers is None and s.distributed is None


def test_analyze_defaults():
    s = Settings.build("analyze")
    assert s.analyzers == ("esd", "tail")
    assert s.run == "analyze"
    assert s.blas_threads is None
    assert s.progress is None
    assert s.schedule is None
    assert s.on_error == "warn" and s.normalize is False and s.esd_method == "auto"


def test_defaults_table_matches_what_build_applies():
    for driver, defaults in DRIVER_DEFAULTS.items():
        s = Settings.build(driver)
        for key, value in defaults.items():
            if key == "every":
                assert s.schedule == every(value)
            else:
                assert getattr(s, key) == value, (driver, key)


def test_unknown_driver_names_the_allowed_ones():
    with pytest.raises(ValueError, match=r"unknown driver 'trainer'; allowed: monitor, analyze"):
        Settings.build("trainer")


def test_explicit_options_override_driver_defaults():
    s = Settings.build("monitor", analyzers="esd", run="exp", blas_threads=None, every=3)
    assert s.analyzers == ("esd",)
    assert s.run == "exp" and s.blas_threads is None
    assert s.schedule == every(3)
    assert Settings.build("monitor", schedule=[2, 5]).schedule == at([2, 5])


def test_base_settings_are_the_starting_point():
    base = Settings.build("monitor", run="base", normalize=True, every=4)
    s = Settings.build("monitor", base, run="child")
    assert s.run == "child" and s.normalize is True and s.schedule == every(4)
    assert base.run == "base"


# ---------------------------------------------------------------------------------------------- validation
BAD = [
    pytest.param({"esd_method": "qr"}, ValueError, ["'qr'", "auto", "eigh", "svd"], id="esd_method"),
    pytest.param({"normalize": 1}, TypeError, ["normalize", "int 1", "True or False"], id="normalize-int"),
    pytest.param({"normalize": "yes"}, TypeError, ["normalize", "'yes'", "True or False"], id="normalize-str"),
    pytest.param({"on_error": "loud"}, ValueError, ["'loud'", "warn", "raise", "ignore"], id="on_error"),
    pytest.param({"conv_slices": "diagonal"}, ValueError, ["'diagonal'", "pooled", "separate"], id="conv_slices"),
    pytest.param({"layer_rules": {"conv_slice": "pooled"}}, ValueError, ["conv_slice'", "allowed: conv_slices"],
                 id="layer_rules-key"),
    pytest.param({"layer_rules": ["conv_slices"]}, TypeError, ["layer_rules", "list"], id="layer_rules-type"),
    pytest.param({"layers": 3}, TypeError, ["int 3", "glob pattern", "compiled regex", "callable"],
                 id="selector-type"),
    pytest.param({"tags": {"step": 1}}, ValueError, ["'step'", "collide", "run, step, layer"], id="tag-column"),
    pytest.param({"tags": {"metric": "x", "lr": 1}}, ValueError, ["'metric'", "collide"], id="tag-column-2"),
    pytest.param({"tags": ["lr"]}, TypeError, ["tags", "list"], id="tags-type"),
    pytest.param({"evry": 3}, TypeError, ["'evry'", "did you mean 'every'?", "allowed:", "schedule"],
                 id="unknown-option"),
    pytest.param({"esd_methd": "eigh"}, TypeError, ["'esd_methd'", "did you mean 'esd_method'?"],
                 id="unknown-option-2"),
    pytest.param({"blas_threads": 0}, ValueError, ["blas_threads", "got 0", "positive integer or None"],
                 id="blas_threads-0"),
    pytest.param({"blas_threads": -2}, ValueError, ["got -2", "positive integer"], id="blas_threads-neg"),
    pytest.param({"blas_threads": 2.0}, ValueError, ["got 2.0", "positive integer"], id="blas_threads-float"),
    pytest.param({"distributed": "everywhere"}, ValueError, ["'everywhere'", "auto", "shard", "rank0"],
                 id="distributed"),
    pytest.param({"fit": "mle"}, ValueError, ["'mle'", "csn", "ww", "hill"], id="fit"),
    pytest.param({"progress": "yes"}, TypeError, ["progress", "'yes'"], id="progress"),
    pytest.param({"run": 1.5}, TypeError, ["run", "1.5"], id="run"),
    pytest.param({"log_dir": 5}, TypeError, ["log_dir", "int 5"], id="log_dir"),
    pytest.param({"analyzers": [EsdAnalyzer]}, TypeError, ["EsdAnalyzer()", "'esd'"], id="analyzer-class"),
    pytest.param({"analyzers": [3]}, TypeError, ["int: 3", "names or Analyzer instances"], id="analyzer-type"),
    pytest.param({"analyzer_options": {"tail": "ww"}}, TypeError, ["analyzer_options", "'ww'"],
                 id="analyzer_options-type"),
]


@pytest.mark.parametrize("options, kind, fragments", BAD)
def test_bad_option_message_names_value_and_allowed(options, kind, fragments):
    for driver in ("monitor", "analyze"):
        err = _error(lambda: Settings.build(driver, **options))
        assert type(err) is kind, (driver, err)
        for fragment in fragments:
            assert fragment in str(err), (driver, fragment, str(err))


def test_every_and_schedule_together():
    with pytest.raises(ValueError, match=r"either every= or schedule=, not both"):
        Settings.build("monitor", every=5, schedule=[1, 2])


@pytest.mark.parametrize("n", [0, -3, 2.5, True])
def test_every_must_be_a_positive_integer(n):
    with pytest.raises(ValueError, match=re.escape(f"every must be a positive integer, got {n!r}")):
        Settings.build("monitor", every=n)


@pytest.mark.parametrize("option", ["schedule", "every"])
def test_schedule_is_refused_offline(option):
    with pytest.raises(TypeError, match=rf"{option}: only a training driver \(SpectraMonitor\) has a schedule"):
        Settings.build("analyze", **{option: 5})
    with pytest.raises(TypeError, match="only a training driver"):
        spectra.analyze(_mlp(), **{option: 5})


def _bad_in_monitor(options):
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return _error(lambda: spectra.SpectraMonitor(model, opt, **options))


def _bad_in_analyze(options):
    return _error(lambda: spectra.analyze(_mlp(), **options))


@pytest.mark.parametrize(
    "options",
    [p.values[0] for p in BAD]
    + [{"analyzers": ["nope"]}, {"analyzers": ("esd",), "analyzer_options": {"nope": {"k": 1}}},
       {"analyzers": ["esd", "esd"]}, {"analyzer_options": {"esd": {"spectrm": True}}}],
    ids=[p.id for p in BAD] + ["unknown-analyzer", "options-unused", "duplicate-analyzer", "analyzer-option"],
)
def test_monitor_and_analyze_raise_the_same_message(options):
    pm = get_plugin_manager(entrypoints=False)
    options = {**options, "plugin_manager": pm}
    a, b = _bad_in_monitor(options), _bad_in_analyze(options)
    assert type(a) is type(b)
    assert str(a) == str(b)


# ---------------------------------------------------------------------------------------------- shortcuts
def test_fit_lands_in_tail_options():
    s = Settings.build("analyze", fit="ww")
    assert s.analyzer_options == {"tail": {"method": "ww"}}
    assert Settings.build("monitor", fit="hill").analyzer_options["tail"]["method"] == "hill"


def test_explicit_tail_method_wins_over_fit():
    s = Settings.build("analyze", fit="ww", analyzer_options={"tail": {"method": "hill", "xmin_pos": 3}})
    assert s.analyzer_options["tail"] == {"method": "hill", "xmin_pos": 3}


def test_fit_keeps_other_tail_options_and_other_analyzers():
    s = Settings.build("analyze", fit="ww", analyzer_options={"tail": {"xmin_pos": 3}, "esd": {"spectrum": True}})
    assert s.analyzer_options == {"tail": {"xmin_pos": 3, "method": "ww"}, "esd": {"spectrum": True}}


def test_fit_reaches_the_tail_analyzer():
    pm = get_plugin_manager(entrypoints=False)
    p = Pipeline(Settings.build("analyze", fit="ww", plugin_manager=pm), _mlp(), source="analyze")
    tail = next(a for a in p.analyzers if a.name == "tail")
    assert tail.config()["method"] == "ww"
    assert p.attrs["fit"] == "ww"


def test_conv_slices_lands_in_layer_rules():
    s = Settings.build("analyze", conv_slices="separate")
    assert s.layer_rules == {"conv_slices": "separate"}
    s = Settings.build("analyze", layer_rules={"conv_slices": "pooled"}, conv_slices="separate")
    assert s.layer_rules == {"conv_slices": "separate"}


def test_option_names_lists_fields_and_shortcuts():
    names = Settings.option_names()
    assert {f.name for f in dataclasses.fields(Settings)} <= set(names)
    assert {"fit", "conv_slices", "every"} <= set(names)


# ---------------------------------------------------------------------------------------------- frozen
def test_settings_are_frozen():
    s = Settings.build("monitor")
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.normalize = True  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.schedule = every(2)  # type: ignore[misc]


def test_settings_do_not_share_the_callers_dicts():
    tags = {"lr": 0.1}
    options = {"tail": {"method": "ww"}}
    rules = {"conv_slices": "separate"}
    s = Settings.build("analyze", tags=tags, analyzer_options=options, layer_rules=rules)
    tags["lr"] = 99
    options["tail"]["method"] = "hill"
    rules["conv_slices"] = "pooled"
    assert s.tags == {"lr": 0.1}
    assert s.analyzer_options == {"tail": {"method": "ww"}}
    assert s.layer_rules == {"conv_slices": "separate"}


def test_replace_validates_like_build():
    s = Settings.build("analyze")
    assert s.replace(normalize=True).normalize is True
    assert s.normalize is False
    with pytest.raises(ValueError, match="unknown esd_method 'qr'"):
        s.replace(esd_method="qr")


# ---------------------------------------------------------------------------------------------- conventions
_CONVENTION_KEYS = {"spectra_version", "eigenvalues", "normalize", "esd_method", "conv_slices", "conv_scale",
                    "layer_rules", "analyzers", "fit", "source", "run"}


def _pipeline(driver="monitor", **options):
    settings = Settings.build(driver, **options)
    pm = get_plugin_manager(entrypoints=False, builtin_options={"spectra.layers": dict(settings.layer_rules)})
    return Pipeline(settings.replace(plugin_manager=pm), _mlp(), source=driver)


def test_conventions_keys_offline_and_in_training():
    offline = _pipeline("analyze")
    conv = offline.settings.conventions(offline.analyzers, source="analyze")
    assert set(conv) == _CONVENTION_KEYS
    training = _pipeline("monitor")
    conv = training.settings.conventions(training.analyzers, source="monitor")
    assert set(conv) == _CONVENTION_KEYS | {"step_semantics"}
    assert conv["source"] == "monitor" and conv["run"] == "run"
    assert set(conv["analyzers"]) == {"esd", "tail", "alignment"}
    assert conv["analyzers"]["tail"]["method"] == conv["fit"] == "csn"
    assert spectra.__version__ == conv["spectra_version"]


def test_conventions_follow_the_settings():
    p = _pipeline("analyze", normalize=True, esd_method="svd", conv_slices="separate", fit="hill", run="r1")
    conv = p.settings.conventions(p.analyzers, source="analyze")
    assert conv["normalize"] is True and "normalized" in conv["eigenvalues"]
    assert conv["esd_method"] == "svd"
    assert conv["conv_slices"] == "separate" and conv["layer_rules"] == {"conv_slices": "separate"}
    assert conv["fit"] == "hill" and conv["run"] == "r1"
    assert p.attrs == conv


# ---------------------------------------------------------------------------------------------- fingerprint
def _fingerprint(**options):
    p = _pipeline("monitor", **options)
    return p.settings.fingerprint(analyzers=p.analyzers, entries=p.entries, mode="shard")


@pytest.mark.parametrize(
    "options, field",
    [
        ({"normalize": True}, "normalize"),
        ({"esd_method": "svd"}, "esd_method"),
        ({"fit": "ww"}, "analyzers"),
        ({"analyzer_options": {"alignment": {"k": 3}}}, "analyzers"),
        ({"analyzers": ("esd", "tail")}, "analyzers"),
        ({"analyzers": ("esd", "tail", "alignment"), "analyzer_options": {"esd": {"schedule": every(3)}}},
         "analyzers"),
        ({"every": 5}, "schedule"),
        ({"schedule": [0, 7]}, "schedule"),
        ({"on_error": "raise"}, "on_error"),
        ({"run": "other"}, "run"),
        ({"tags": {"lr": 0.1}}, "tags"),
        ({"layers": "0"}, "layers"),
        ({"conv_slices": "separate"}, "layer_rules"),
    ],
)
def test_fingerprint_changes_with_each_shared_setting(options, field):
    base, changed = _fingerprint(), _fingerprint(**options)
    assert set(base) <= set(changed)
    differing = sorted(k for k in changed if base.get(k) != changed[k])
    assert differing == [field]


@pytest.mark.parametrize(
    "options",
    [{"log_dir": "somewhere"}, {"progress": True}, {"blas_threads": 3}, {"blas_threads": None},
     {"distributed": "auto"}, {"every": 10}, {"fit": "csn"}, {"plugins": [object()]}],
    ids=["log_dir", "progress", "blas_threads", "blas_threads-none", "distributed", "same-every", "same-fit",
         "plugins"],
)
def test_fingerprint_ignores_local_settings(options, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # log_dir="somewhere" writes its meta file there
    assert _fingerprint(**options) == _fingerprint()


def test_fingerprint_is_process_independent():
    a = _fingerprint(schedule=lambda step: step % 3 == 0)
    b = _fingerprint(schedule=lambda step: step % 3 == 0)
    assert a == b
    assert " at 0x" not in "".join(a.values())
    assert all(isinstance(v, str) for v in a.values())


def test_fingerprint_counts_mode_and_step():
    p = _pipeline("monitor")
    fp = p.settings.fingerprint(analyzers=p.analyzers, entries=p.entries, mode="shard", step=0)
    assert fp != p.settings.fingerprint(analyzers=p.analyzers, entries=p.entries, mode="rank0", step=0)
    assert fp != p.settings.fingerprint(analyzers=p.analyzers, entries=p.entries, mode="shard", step=4)


def test_tag_names_are_checked_against_the_columns():
    for column in COLUMNS:
        with pytest.raises(ValueError, match=f"'{column}'"):
            Settings.build("analyze", tags={column: 1})
    assert Settings.build("analyze", tags={"lr": 0.1, "seed": 3}).tags == {"lr": 0.1, "seed": 3}


# ---------------------------------------------------------------------------------------------- workers
def test_workers_defaults_to_one_and_takes_a_positive_int():
    assert Settings.build("analyze").workers == 1 and Settings.build("monitor").workers == 1
    assert Settings.build("analyze", workers=3).workers == 3
    assert Settings.build("analyze").replace(workers=2).workers == 2


@pytest.mark.parametrize("bad", [0, -2, True, False, 2.0, "2", None])
def test_workers_must_be_a_positive_int(bad):
    message = re.escape(f"workers must be a positive integer (1: analyze in this process, N > 1: in N worker "
                        f"processes), got {bad!r}")
    with pytest.raises(ValueError, match=message):
        Settings.build("analyze", workers=bad)
    with pytest.raises(ValueError, match=message):
        Settings.build("analyze").replace(workers=bad)
    with pytest.raises(ValueError, match=message):
        spectra.analyze(_mlp(), workers=bad)


@pytest.mark.parametrize("value", [2, 8, 0, True, "2"])
def test_workers_is_refused_by_a_training_driver(value):
    fragments = ["workers: a training driver analyzes in the training process", "decompose_threads=",
                 "background=True", "spectra.analyze(model_or_checkpoint, workers=...)"]
    err = _error(lambda: Settings.build("monitor", workers=value))
    assert type(err) is TypeError and all(f in str(err) for f in fragments), str(err)
    err = _bad_in_monitor({"workers": value})
    assert type(err) is TypeError and all(f in str(err) for f in fragments), str(err)
    with pytest.raises(TypeError, match="workers: a training driver"):  # nor inherited from offline settings
        Settings.build("monitor", Settings.build("analyze", workers=2))
    assert Settings.build("monitor", workers=1).workers == 1  # the default is no request


def test_workers_is_neither_a_convention_nor_in_the_fingerprint():
    one, many = _pipeline("analyze"), _pipeline("analyze", workers=3)
    assert many.settings.workers == 3
    assert many.settings.conventions(many.analyzers, source="analyze") == one.settings.conventions(
        one.analyzers, source="analyze")
    assert many.attrs == one.attrs

    def fingerprint(p):
        return p.settings.fingerprint(analyzers=p.analyzers, entries=p.entries, mode="shard")

    assert fingerprint(many) == fingerprint(one)
