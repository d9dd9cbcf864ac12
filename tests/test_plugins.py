import inspect
import pathlib

import pytest

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


def test_every_hook_is_documented_and_tested():
    tests_dir = pathlib.Path(__file__).parent
    corpus = "\n".join(p.read_text() for p in tests_dir.rglob("test_*.py") if p.name != "test_plugins.py")
    corpus += pathlib.Path(__file__).read_text().split("def test_every_hook_is_documented_and_tested")[0]
    assert len(HOOKS) == 8
    for name in HOOKS:
        doc = inspect.getdoc(getattr(hookspecs, name)) or ""
        assert len(doc) > 60, f"hook {name} lacks documentation"
        assert name in corpus, f"hook {name} is not exercised by any test"
