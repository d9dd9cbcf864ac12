"""Fault matrix, round two: hostile or broken files. spectra says what a file actually is before unpickling
anything, refuses files that would block or expand without bound, and keeps every tensor of a checkpoint."""

from __future__ import annotations

import io
import os
import threading
import zipfile

import pytest
import torch

import spectra
from spectra.checkpoint_guard import Limits
from spectra.checkpoints import load_state_dict

from .fault_cases import _cli
from .matrix import ENTRY_ANALYZE, ENTRY_CLI, case

LFS = b"version https://git-lfs.github.com/spec/v1\noid sha256:4d7a2146\nsize 1048576\n"
HTML = b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head><body>Not Found</body></html>\n"


@case("a Git LFS pointer saved as model.pt", ENTRY_ANALYZE,
      "ValueError: 'a Git LFS pointer ... run `git lfs pull`' (not 'needs code execution'); nothing is unpickled")
def _(tmp):
    (tmp / "model.pt").write_bytes(LFS)
    with pytest.raises(ValueError, match="Git LFS pointer.*git lfs pull") as err:
        spectra.analyze(tmp / "model.pt")
    assert "code execution" not in str(err.value)


@case("an HTML error page saved as pytorch_model.bin, and as model.safetensors", ENTRY_ANALYZE,
      "ValueError: 'an HTML/XML page (a failed download ...)' for both formats")
def _(tmp):
    for name in ("pytorch_model.bin", "model.safetensors"):
        (tmp / name).write_bytes(HTML)
        with pytest.raises(ValueError, match="HTML/XML page"):
            spectra.analyze(tmp / name)


@case("random bytes and an empty file saved as .pt", ENTRY_CLI,
      "exit 2 naming what the file is ('binary data of an unknown format (first bytes ...)', 'an empty file')")
def _(tmp):
    (tmp / "noise.pt").write_bytes(bytes(range(7, 250)) * 4)
    (tmp / "empty.pt").write_bytes(b"")
    for name, text in (("noise.pt", "binary data of an unknown format (first bytes: 07 08"), ("empty.pt", "empty file")):
        code, out, err = _cli("analyze", str(tmp / name), "-q")
        assert code == 2 and text in err and "code execution" not in err, err


@case("a FIFO named model.pt", ENTRY_ANALYZE, "ValueError 'it is a FIFO, not a regular file' at once; never blocks")
def _(tmp):
    fifo = tmp / "model.pt"
    os.mkfifo(fifo)
    result: list = []

    def load():
        try:
            spectra.analyze(fifo)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            result.append(exc)

    t = threading.Thread(target=load, daemon=True)
    t.start()
    t.join(30)
    if t.is_alive():  # unblock the reader so the test process can end, then fail
        with open(fifo, "wb"):
            pass
        pytest.fail("reading a FIFO blocked")
    assert isinstance(result[0], ValueError) and "is a FIFO, not a regular file" in str(result[0])


@case("a tiny checkpoint holding a stride-0 (expanded) 100000 x 50000 tensor", ENTRY_ANALYZE,
      "the tensor is skipped with the reason 'expanded tensor ... stride 0'; the other layers are analyzed; "
      "nothing of its logical size is allocated")
def _(tmp):
    torch.save({"bomb.weight": torch.ones(1, 1).expand(100000, 50000), "ok.weight": torch.randn(30, 20)},
               tmp / "bomb.pt")
    assert (tmp / "bomb.pt").stat().st_size < 10_000
    res = spectra.analyze(tmp / "bomb.pt")
    layers = res.layers.set_index("layer")
    assert "expanded tensor: 5000000000 elements" in layers.loc["bomb", "skip_reason"]
    assert set(res.to_pandas()["layer"]) == {"ok"}


@case("a zip checkpoint whose entry is compressed ~1000x (a compression bomb)", ENTRY_ANALYZE,
      "ValueError naming the entry and its expansion before anything is decompressed; "
      "`load_state_dict(path, limits=Limits(max_expansion=...))` reads it when trusted")
def _(tmp):
    buf = io.BytesIO()
    torch.save({"w.weight": torch.zeros(512, 1024)}, buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    with zipfile.ZipFile(tmp / "zipbomb.pt", "w", compression=zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    with pytest.raises(ValueError, match=r"entry .*data/0.* expands from \d+ to 2097152 bytes"):
        spectra.analyze(tmp / "zipbomb.pt")
    sd = load_state_dict(tmp / "zipbomb.pt", limits=Limits(max_expansion=1e6))
    assert sd["w.weight"].shape == (512, 1024)
    with pytest.raises(ValueError, match="over the limit of 1000"):
        load_state_dict(tmp / "zipbomb.pt", limits=Limits(max_bytes=1000, max_expansion=1e6))


@case("state_dict keys that collide after flattening ('0.weight' and {'0': {'weight': ...}})", ENTRY_ANALYZE,
      "both tensors are kept as distinct layers ('0' and '0[weight]'); none is dropped or taken for the other")
def _(tmp):
    a, b = torch.randn(20, 10), 3 * torch.randn(30, 10)
    res = spectra.analyze({"0.weight": a, "0": {"weight": b}})
    lam = res.to_pandas().query("metric == 'lambda_max'").set_index("layer")["value"]
    assert sorted(lam.index) == ["0", "0[weight]"]
    assert abs(lam["0"] - torch.linalg.matrix_norm(a.double(), 2).item() ** 2) < 1e-9 * lam["0"]
    assert abs(lam["0[weight]"] - torch.linalg.matrix_norm(b.double(), 2).item() ** 2) < 1e-9 * lam["0[weight]"]
