"""Security: checkpoints load with weights_only=True or safetensors only; code runs only when asked explicitly."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import pytest
import torch

import spectra
from spectra.checkpoints import UnsafeCheckpointError, load_state_dict

from ._util import captured_cli, mlp


class _Payload:
    """Unpickling this creates a marker file: stands for arbitrary code execution."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def _cli(*argv: str):
    from spectra.cli import main

    with captured_cli() as io_:
        code = main(list(argv))
    return code, io_["out"], io_["err"]


def test_torch_load_is_always_weights_only(tmp_path, monkeypatch):
    torch.save(mlp().state_dict(), tmp_path / "m.pt")
    seen = []
    real = torch.load

    def spy(*args, **kwargs):
        seen.append(kwargs.get("weights_only"))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    for suffix in (".pt", ".pth", ".bin", ".ckpt"):
        (tmp_path / f"m{suffix}").write_bytes((tmp_path / "m.pt").read_bytes())
        load_state_dict(tmp_path / f"m{suffix}")
    assert seen == [True] * 4


@pytest.mark.parametrize("fmt", ["torch-zip", "raw-pickle"])
@pytest.mark.parametrize("suffix", [".pt", ".bin", ".ckpt"])
def test_crafted_pickle_is_refused_and_never_runs(tmp_path, fmt, suffix):
    marker = tmp_path / "marker"
    payload = {"w": torch.zeros(3, 3), "x": _Payload(marker)}
    path = tmp_path / f"evil{suffix}"
    if fmt == "torch-zip":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    control = tmp_path / f"control{suffix}"
    control.write_bytes(path.read_bytes())
    try:  # the payload is real: an unsafe load runs it (a raw pickle then fails torch's magic-number check)
        torch.load(control, weights_only=False)
    except RuntimeError:
        assert fmt == "raw-pickle"
    assert marker.exists()
    marker.unlink()
    with pytest.raises((UnsafeCheckpointError, ValueError), match="refused|cannot read"):
        spectra.analyze(path)
    with pytest.raises((UnsafeCheckpointError, ValueError)):
        load_state_dict(path)
    code, out, err = _cli("analyze", str(path))
    assert code == 2 and not marker.exists()


def test_safetensors_is_read_without_pickle(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    sd = {k: v.contiguous() for k, v in mlp().state_dict().items()}
    save_file(sd, str(tmp_path / "m.safetensors"))
    monkeypatch.setattr(pickle, "Unpickler", None)  # any unpickling would now fail
    monkeypatch.setattr(torch, "load", None)
    got = load_state_dict(tmp_path / "m.safetensors")
    assert all(torch.equal(got[k], sd[k]) for k in sd)


def test_cli_imports_code_only_for_explicit_module_callable(tmp_path, monkeypatch):
    marker = tmp_path / "imported"
    (tmp_path / "usermodel.py").write_text(
        "import torch\n"
        f"open({str(marker)!r}, 'w').write('x')\n"
        "def build():\n    torch.manual_seed(0)\n    return torch.nn.Sequential(torch.nn.Linear(20, 30))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    for target in ("usermodel", "usermodel.py", "./usermodel:build", str(tmp_path / "usermodel.py")):
        code, out, err = _cli("analyze", target, "-q")
        assert code == 2 and not marker.exists(), target
    assert "usermodel" not in sys.modules
    (tmp_path / "os:getcwd").write_bytes(b"junk")  # an existing path wins over the module:callable reading
    code, out, err = _cli("analyze", "os:getcwd", "-q")
    assert code == 2 and "unsupported checkpoint type" in err
    code, out, err = _cli("analyze", "usermodel:build", "-q")
    assert code == 0 and marker.exists() and "0" in out
    sys.modules.pop("usermodel", None)


def test_no_subcommand_overwrites_without_force(tmp_path):
    torch.save(mlp().state_dict(), tmp_path / "m.pt")
    out = tmp_path / "table.csv"
    out.write_text("keep")
    for argv in (("analyze", str(tmp_path / "m.pt"), "--out", str(out), "-q"),
                 ("compare-ww", str(tmp_path / "m.pt"), "--out", str(out))):
        code, _, err = _cli(*argv)
        assert code == 2 and "pass --force" in err and out.read_text() == "keep", argv
