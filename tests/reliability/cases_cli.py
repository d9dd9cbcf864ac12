"""Fault matrix, round two: CLI output handling. Outputs are validated before any work; one bad layer never
stops the other figures; the exit codes are documented in ``spectra --help``."""

from __future__ import annotations

import torch
from torch import nn

from ._util import mlp
from .fault_cases import _cli
from .matrix import ENTRY_CLI, case


def _checkpoint(tmp, sd=None):
    path = tmp / "m.pt"
    torch.save(sd if sd is not None else mlp().state_dict(), path)
    return path


@case("--out whose directory cannot be created (a file is in the way)", ENTRY_CLI,
      "exit 2 before the checkpoint is even read, naming the directory")
def _(tmp):
    (tmp / "blocker").write_text("x")
    code, out, err = _cli("analyze", str(tmp / "missing.pt"), "--out", str(tmp / "blocker" / "t.csv"), "-q")
    assert code == 2 and "blocker is a file" in err and "missing.pt" not in err, err


@case("--out that is a directory", ENTRY_CLI, "exit 2 before any analysis: give a file name")
def _(tmp):
    (tmp / "outdir.csv").mkdir()
    code, out, err = _cli("analyze", str(tmp / "missing.pt"), "--out", str(tmp / "outdir.csv"), "-q")
    assert code == 2 and "is a directory" in err and not list((tmp / "outdir.csv").iterdir())


@case("--plot that is a file", ENTRY_CLI, "exit 2 before any analysis; the file is unchanged")
def _(tmp):
    (tmp / "plots").write_text("keep")
    code, out, err = _cli("analyze", str(_checkpoint(tmp)), "--plot", str(tmp / "plots"), "-q")
    assert code == 2 and "is a file" in err and (tmp / "plots").read_text() == "keep"


@case("a layer name longer than a file name may be, with --plot", ENTRY_CLI,
      "exit 0; its ESD figure is written under a shortened name with a hash, the others as usual")
def _(tmp):
    long = "x" * 400
    sd = {f"{long}.weight": torch.randn(30, 20), "short.weight": torch.randn(30, 20)}
    code, out, err = _cli("analyze", str(_checkpoint(tmp, sd)), "--plot", str(tmp / "plots"), "-q")
    assert code == 0, err
    names = sorted(p.name for p in (tmp / "plots").iterdir())
    assert "esd_short_W.png" in names and "alpha_bars.png" in names
    (cut,) = [n for n in names if n.startswith("esd_xxx")]
    assert len(cut.encode()) <= 255


@case("one all-zero layer with --plot", ENTRY_CLI,
      "exit 0; the other layers' figures are written, and stderr names the layer whose figure could not be drawn")
def _(tmp):
    sd = {"zero.weight": torch.zeros(30, 20), "a.weight": torch.randn(30, 20), "b.weight": torch.randn(40, 20)}
    code, out, err = _cli("analyze", str(_checkpoint(tmp, sd)), "--plot", str(tmp / "plots"), "-q")
    assert code == 0, err
    names = {p.name for p in (tmp / "plots").iterdir()}
    assert {"esd_a_W.png", "esd_b_W.png", "alpha_bars.png"} <= names and "esd_zero_W.png" not in names
    assert "no ESD figure for zero [W]" in err


@case("asking what the exit codes mean", ENTRY_CLI, "`spectra --help` lists 0, 2 and 130 and what each means")
def _(tmp):
    from spectra.cli import build_parser

    text = build_parser().format_help()
    for code in ("0    done", "2    nothing was done", "130  interrupted"):
        assert code in text
