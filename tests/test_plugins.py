import inspect
import pathlib
import re

import numpy as np
import pytest
import torch

import spectra
from spectra import hookspecs
from spectra.analyzers.base import Analyzer, Measurement
from spectra.plugins import (
    DEFAULT_PLUGINS,
    PluginError,
    analyzer_registry,
    experiment_registry,
    get_plugin_manager,
    plugin_summary,
)

HOOKS = sorted(n for n, f in vars(hookspecs).items() if n.startswith("spectra_") and callable(f))


def test_builtins_registered_like_third_party():
    pm = get_plugin_manager(entrypoints=False)
    names = {n for n, _ in pm.list_name_plugin()}
    assert set(DEFAULT_PLUGINS) <= names
    reg = analyzer_registry(pm)
    assert {"esd", "tail", "alignment"} <= set(reg)


class _Nuclear(Analyzer):
    name = "nuclear"

    def analyze(self, layer):
        yield Measurement("nuclear_norm", float(layer.evals().clip(0).__pow__(0.5).sum()))


class _ThirdParty:
    @spectra.hookimpl
    def spectra_register_analyzers(self, register):
        register(_Nuclear)

    @spectra.hookimpl
    def spectra_register_experiments(self, register):
        register("toy", lambda **cfg: cfg)


def test_third_party_plugin_registers_analyzer_and_experiment():
    pm = get_plugin_manager(entrypoints=False, plugins=[_ThirdParty()])
    assert analyzer_registry(pm)["nuclear"] is _Nuclear
    assert experiment_registry(pm)["toy"](a=1) == {"a": 1}
    info = plugin_summary(pm)
    assert ("nuclear", info["analyzers"][[a for a, _ in info["analyzers"]].index("nuclear")][1]) in info["analyzers"]
    assert spectra.experiments.run("toy", plugin_manager=pm, x=2) == {"x": 2}
    with pytest.raises(ValueError, match="registered experiments: toy"):
        spectra.experiments.run("nope", plugin_manager=pm)


def test_disable_env_blocks_plugins(monkeypatch):
    monkeypatch.setenv("SPECTRA_DISABLE_PLUGINS", "spectra.analyzers.tail")
    pm = get_plugin_manager(entrypoints=False)
    assert "tail" not in analyzer_registry(pm)
    assert "esd" in analyzer_registry(pm)


def test_duplicate_analyzer_name_names_both_plugins():
    class Dup(Analyzer):
        name = "esd"

    class P:
        @spectra.hookimpl
        def spectra_register_analyzers(self, register):
            register(Dup)

    pm = get_plugin_manager(entrypoints=False, plugins=[P()])
    with pytest.raises(PluginError, match="registered by both"):
        analyzer_registry(pm)


def test_plugin_raising_at_registration_is_named():
    class Broken:
        @spectra.hookimpl
        def spectra_register_analyzers(self, register):
            raise RuntimeError("kaboom")

    pm = get_plugin_manager(entrypoints=False, plugins=[Broken()])
    with pytest.raises(PluginError, match="kaboom"):
        analyzer_registry(pm)


def test_bad_hookimpl_is_rejected():
    class Typo:
        @spectra.hookimpl
        def spectra_register_analyzer(self, register):  # missing "s": not a hook
            pass

    with pytest.raises(PluginError, match="failed to register|unknown hook"):
        get_plugin_manager(entrypoints=False, plugins=[Typo()])


def test_entry_point_plugin_is_loaded():
    pm = get_plugin_manager(entrypoints=True)
    assert "twolayer" in experiment_registry(pm)


def _hook_tests() -> dict[str, list[str]]:
    """``{hook name: [files defining def test_hook_<name>]}`` over every test module under tests/."""
    found: dict[str, list[str]] = {}
    tests_dir = pathlib.Path(__file__).parent
    for path in sorted(tests_dir.rglob("*.py")):
        for m in re.finditer(r"^\s*(?:async\s+)?def test_hook_(\w+)\s*\(", path.read_text(), re.MULTILINE):
            found.setdefault(m.group(1), []).append(str(path.relative_to(tests_dir)))
    return found


def test_hooks_are_the_plugin_managers_hooks():
    pm = get_plugin_manager(entrypoints=False)
    assert HOOKS
    assert HOOKS == sorted(n for n in vars(pm.hook) if n.startswith("spectra_"))


def test_every_hook_is_documented_and_tested():
    tested = _hook_tests()
    for name in HOOKS:
        doc = inspect.getdoc(getattr(hookspecs, name)) or ""
        assert len(doc) > 60, f"hook {name} lacks documentation"
        files = tested.get(name, [])
        assert len(files) == 1, (
            f"hook {name} needs exactly one test function named test_hook_{name} under tests/ (found in: "
            f"{files or 'none'})"
        )
    stale = sorted(set(tested) - set(HOOKS))
    assert not stale, f"test_hook_<name> functions for names that are not hooks: {stale}"


# ---------------------------------------------------------------------------------------------- hook tests
# spectra_include_param, spectra_as_matrices and spectra_log_records: tests/test_pipeline.py;
# spectra_analyzer_error: tests/test_pipeline_engine.py.
def test_hook_spectra_register_analyzers():
    """An analyzer offered through spectra_register_analyzers is usable by name in a driver."""
    calls = []

    class Offer:
        @spectra.hookimpl
        def spectra_register_analyzers(self, register):
            calls.append(register)
            register(_Nuclear)

    pm = get_plugin_manager(entrypoints=False, plugins=[Offer()])
    assert analyzer_registry(pm)["nuclear"] is _Nuclear
    assert len(calls) == 1 and callable(calls[0])
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4))
    df = spectra.analyze(model, analyzers=["nuclear"], plugin_manager=pm).to_pandas()
    expected = float(np.linalg.svd(model[0].weight.detach().double().numpy(), compute_uv=False).sum())
    assert df["metric"].tolist() == ["nuclear_norm"] and df["analyzer"].tolist() == ["nuclear"]
    assert df["value"].iloc[0] == pytest.approx(expected, rel=1e-6)


def test_hook_spectra_register_experiments():
    """An experiment offered through spectra_register_experiments runs with the given config."""
    ran = []

    class Offer:
        @spectra.hookimpl
        def spectra_register_experiments(self, register):
            register("echo", lambda **cfg: ran.append(cfg) or {"ok": True, **cfg})

    pm = get_plugin_manager(entrypoints=False, plugins=[Offer()])
    assert set(experiment_registry(pm)) == {"echo"}
    assert spectra.experiments.run("echo", plugin_manager=pm, seed=3, out="x") == {"ok": True, "seed": 3, "out": "x"}
    assert ran == [{"seed": 3, "out": "x"}]

    class NotCallable:
        @spectra.hookimpl
        def spectra_register_experiments(self, register):
            register("bad", 42)

    with pytest.raises(PluginError, match="registered experiment 'bad' with a non-callable"):
        experiment_registry(get_plugin_manager(entrypoints=False, plugins=[NotCallable()]))


class _Lifecycle:
    def __init__(self):
        self.events = []

    @spectra.hookimpl
    def spectra_monitor_attached(self, monitor):
        self.events.append(("attached", monitor, monitor.attached, monitor.step))

    @spectra.hookimpl
    def spectra_monitor_detached(self, monitor):
        self.events.append(("detached", monitor, monitor.attached, monitor.step))


def _monitored(plugin, **options):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return model, opt, spectra.SpectraMonitor(model, opt, analyzers=("esd",), plugins=[plugin], **options)


def test_hook_spectra_monitor_attached():
    """spectra_monitor_attached fires after the hooks are registered, with the monitor, on every attach."""
    plugin = _Lifecycle()
    model, opt, mon = _monitored(plugin, every=1)
    assert [(e, m, a, s) for e, m, a, s in plugin.events] == [("attached", mon, True, 0)]
    model(torch.ones(2, 4)).sum().backward()
    opt.step()
    mon.detach()
    mon.attach()
    assert [(e, s) for e, _, _, s in plugin.events] == [("attached", 0), ("detached", 1), ("attached", 1)]
    mon.detach()
    plugin.events.clear()
    _, _, lazy = _monitored(plugin, attach=False)
    assert plugin.events == []
    lazy.attach()
    assert plugin.events == [("attached", lazy, True, 0)]
    lazy.detach()


def test_hook_spectra_monitor_detached():
    """spectra_monitor_detached fires once per detach, with the monitor, however often detach() is called."""
    plugin = _Lifecycle()
    _, _, mon = _monitored(plugin)
    mon.detach()
    mon.detach()
    assert [(e, m, a) for e, m, a, _ in plugin.events] == [("attached", mon, True), ("detached", mon, False)]
    plugin.events.clear()
    _, _, ctx = _monitored(plugin)
    with ctx:
        pass
    assert [e for e, _, _, _ in plugin.events] == ["attached", "detached"]
    plugin.events.clear()
    _, _, never = _monitored(plugin, attach=False)
    never.detach()
    assert plugin.events == []


def test_a_raising_lifecycle_hook_only_warns():
    class Broken:
        @spectra.hookimpl
        def spectra_monitor_attached(self, monitor):
            raise RuntimeError("observer failed")

    with pytest.warns(RuntimeWarning, match=r"plugin hook spectra_monitor_attached raised RuntimeError"):
        _, _, mon = _monitored(Broken())
    assert mon.attached
    mon.detach()
