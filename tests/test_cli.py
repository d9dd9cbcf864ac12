import subprocess
import sys

import pytest
import torch
from torch import nn

from spectra.cli import main, resolve_target


def _save(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(40, 60), nn.ReLU(), nn.Linear(60, 30))
    path = tmp_path / "m.pt"
    torch.save(model.state_dict(), path)
    return path


def test_analyze_prints_summary_and_writes_table(tmp_path, capsys):
    ckpt = _save(tmp_path)
    out = tmp_path / "t.parquet"
    assert main(["analyze", str(ckpt), "--out", str(out), "--plot", str(tmp_path / "figs"), "-q"]) == 0
    text = capsys.readouterr().out
    assert "alpha" in text and "0" in text and "wrote" in text
    assert out.exists() and (tmp_path / "figs" / "alpha_bars.png").exists()
    assert sorted(p.name for p in (tmp_path / "figs").glob("esd_*.png")) == ["esd_0_W.png", "esd_2_W.png"]
    from spectra import Results

    assert set(Results.read(out).to_pandas()["layer"]) == {"0", "2"}
    # never overwrite without --force
    assert main(["analyze", str(ckpt), "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["analyze", str(ckpt), "--out", str(out), "--force", "-q"]) == 0


def test_analyze_module_callable_only_when_explicit(tmp_path, capsys):
    assert main(["analyze", "examples_not_here.py"]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["analyze", "torch.nn:Linear"]) == 2  # Linear() needs args: a clear error, not a crash
    err = capsys.readouterr().err
    assert "error" in err


def test_resolve_target_imports_only_module_callable(tmp_path):
    p = _save(tmp_path)
    assert resolve_target(str(p)) == p
    model = resolve_target("torch.nn:Identity")
    assert isinstance(model, torch.nn.Identity)
    with pytest.raises(ValueError, match="cannot import"):
        resolve_target("no_such_module_xyz:thing")


def test_plugins_lists_builtins_and_bundled_experiment(capsys):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    for name in ("esd", "tail", "alignment", "twolayer", "spectra.layers"):
        assert name in out


def test_console_script_entry_point():
    r = subprocess.run([sys.executable, "-m", "spectra.cli", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "reproduce" in r.stdout and "compare-ww" in r.stdout


def test_reproduce_bad_set_value(tmp_path, capsys):
    assert main(["reproduce", "--preset", "tiny", "--out", str(tmp_path / "o"), "--set", "novalue"]) == 2
    assert "key=value" in capsys.readouterr().err
