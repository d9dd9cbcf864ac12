"""The README's monitor example works as written (run at its own, already small, size)."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_monitor_example_runs(capsys):
    block = next(b for b in _python_blocks() if "SpectraMonitor" in b)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    df = namespace["df"]
    assert sorted(df["step"].unique().tolist()) == [0, 50, 100, 150, 200]
    out = capsys.readouterr().out
    assert "alpha" in out and "stable_rank" in out


def test_readme_plugin_snippet_registers():
    import spectra
    from spectra.plugins import analyzer_registry, get_plugin_manager

    block = next(b for b in _python_blocks() if "spectra_register_analyzers" in b)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    pm = get_plugin_manager(entrypoints=False, plugins=[namespace["MyPlugin"]()])
    assert "nuclear" in analyzer_registry(pm)
    import torch

    res = spectra.analyze(torch.nn.Linear(20, 30), analyzers=("nuclear",), plugin_manager=pm)
    assert res.to_pandas()["metric"].tolist() == ["nuclear_norm"]
