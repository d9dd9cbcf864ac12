"""Checkpoints as researchers have them: Hugging Face model directories (safetensors, sharded index, .bin),
Lightning .ckpt, torch.compile's _orig_mod., layers in depth order, and sharded reads that stay near one tensor."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import spectra
from spectra.checkpoints import load_state_dict, natural_key


@pytest.fixture(autouse=True)
def _one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=96, n_positions=32, n_embd=48, n_layer=3, n_head=2))


def _alphas(res):
    wide = res.to_wide()
    return dict(zip(wide["layer"], wide["alpha"]))


def _save_bin(model, path: Path, shards: int) -> None:
    """The legacy ``pytorch_model.bin`` layout (transformers >= 5 writes only safetensors): one file, or shards
    with an index, tied weights stored once as Hugging Face does."""
    model.config.save_pretrained(path)
    sd = model.state_dict()
    if shards == 1:
        torch.save(sd, path / "pytorch_model.bin")
        return
    keys = [k for k in sd if k != "lm_head.weight"]
    weight_map = {}
    for i in range(shards):
        name = f"pytorch_model-{i + 1:05d}-of-{shards:05d}.bin"
        part = {k: sd[k].clone() for k in keys[i::shards]}
        torch.save(part, path / name)
        weight_map.update({k: name for k in part})
    (path / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


@pytest.mark.parametrize("layout", ["safetensors", "sharded-safetensors", "bin", "sharded-bin"])
def test_hugging_face_model_directory(tmp_path, layout):
    model = _gpt2()
    if layout.endswith("bin"):
        _save_bin(model, tmp_path, shards=3 if layout.startswith("sharded") else 1)
    else:
        model.save_pretrained(tmp_path, **({"max_shard_size": "60KB"} if layout.startswith("sharded") else {}))
    index = {"sharded-safetensors": "model.safetensors.index.json", "sharded-bin": "pytorch_model.bin.index.json"}
    if layout in index:
        assert (tmp_path / index[layout]).exists() and len(list(tmp_path.glob("*-of-*"))) > 2
    assert (tmp_path / "config.json").exists()
    from_dir = _alphas(spectra.analyze(tmp_path))
    from_model = _alphas(spectra.analyze(model))
    assert "transformer.h.2.mlp.c_proj" in from_dir
    for layer, alpha in from_dir.items():  # same matrices (HF's Conv1D is transposed live; eigenvalues agree)
        np.testing.assert_allclose(alpha, from_model[layer], rtol=1e-10, err_msg=layer)


def test_layers_come_in_depth_order(tmp_path):
    torch.manual_seed(0)
    sd = {f"h.{i}.mlp.weight": torch.randn(24, 16) for i in (10, 2, 0, 1, 11, 3)}
    save_file(sd, str(tmp_path / "m.safetensors"))  # safetensors stores keys alphabetically: h.0, h.1, h.10, ...
    layers = spectra.analyze(tmp_path / "m.safetensors", analyzers=("esd",)).to_wide()["layer"].tolist()
    assert layers == [f"h.{i}.mlp" for i in (0, 1, 2, 3, 10, 11)]
    assert sorted(["b.10", "b.9", "a.2.x"], key=natural_key) == ["a.2.x", "b.9", "b.10"]
    # a torch file keeps its own order (the module order it was saved in)
    model = nn.Sequential(*[nn.Linear(16, 16) for _ in range(12)])
    torch.save(model.state_dict(), tmp_path / "m.pt")
    order = spectra.analyze(tmp_path / "m.pt", analyzers=("esd",)).to_wide()["layer"].tolist()
    assert order == [str(i) for i in range(12)]
    assert spectra.analyze(model, analyzers=("esd",)).to_wide()["layer_id"].tolist() == list(range(0, 24, 2))


def _rss_anon_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    raise OSError("no RssAnon")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_sharded_checkpoint_is_read_shard_by_shard_near_one_tensor(tmp_path):
    torch.manual_seed(0)
    tensor_mb, n = 2, 12
    names = [f"layers.{i}.weight" for i in range(n)]
    weight_map = {}
    for shard in range(4):  # 4 shards x 3 tensors x 2 MB
        part = {k: torch.randn(256, tensor_mb * 1024) for k in names[shard::4]}
        fname = f"model-{shard + 1:05d}-of-00004.safetensors"
        save_file(part, str(tmp_path / fname))
        weight_map.update({k: fname for k in part})
        del part
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (tmp_path / "config.json").write_text("{}")
    before = _rss_anon_kb()
    sd = load_state_dict(tmp_path)
    grown_mb = (_rss_anon_kb() - before) / 1024
    assert list(sd) == names  # every tensor, in depth order
    assert grown_mb < tensor_mb, f"loading {n * tensor_mb} MB of shards grew anonymous memory by {grown_mb:.1f} MB"
    res = spectra.analyze(tmp_path, analyzers=("esd",), layers="layers.1*")  # the analysis reads one at a time
    assert res.to_wide()["layer"].tolist() == ["layers.1", "layers.10", "layers.11"]


def test_lightning_checkpoint(tmp_path):
    import lightning.pytorch as pl

    class Module(pl.LightningModule):
        def __init__(self, width: int = 32):
            super().__init__()
            self.save_hyperparameters()
            self.encoder = nn.Sequential(nn.Linear(16, width), nn.ReLU(), nn.Linear(width, 16))

        def training_step(self, batch, batch_idx):
            return self.encoder(batch[0]).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    torch.manual_seed(0)
    module = Module()
    trainer = pl.Trainer(max_steps=2, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         accelerator="cpu", default_root_dir=str(tmp_path), enable_checkpointing=False)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 16)), batch_size=4)
    trainer.fit(module, loader)
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    res = spectra.analyze(tmp_path / "last.ckpt")  # weights_only: hyper_parameters, loops, optimizer states load
    assert _alphas(res).keys() == {"encoder.0", "encoder.2"}
    np.testing.assert_allclose(list(_alphas(res).values()), list(_alphas(spectra.analyze(module)).values()),
                               rtol=1e-12)


def test_torch_compile_prefix_is_stripped(tmp_path):
    torch.manual_seed(0)
    inner = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))

    class Holder(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = torch.compile(inner)  # compiled lazily: nothing runs without a forward pass

    compiled = torch.compile(inner)
    assert any("_orig_mod" in k for k in compiled.state_dict())
    plain = spectra.analyze(inner).to_wide()["layer"].tolist()
    assert spectra.analyze(compiled).to_wide()["layer"].tolist() == plain == ["0", "2"]
    assert spectra.analyze(Holder()).to_wide()["layer"].tolist() == ["net.0", "net.2"]
    torch.save(Holder().state_dict(), tmp_path / "compiled.pt")
    assert spectra.analyze(tmp_path / "compiled.pt").to_wide()["layer"].tolist() == ["net.0", "net.2"]
    save_file(dict(compiled.state_dict()), str(tmp_path / "compiled.safetensors"))
    assert spectra.analyze(tmp_path / "compiled.safetensors").to_wide()["layer"].tolist() == ["0", "2"]


def test_bad_layouts_say_what_is_wrong(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("hi")
    with pytest.raises(ValueError, match="without model weights.*model.safetensors.index.json.*notes.txt"):
        spectra.analyze(tmp_path / "empty")
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    save_file({"a.weight": torch.randn(8, 8)}, str(sharded / "model-00001-of-00002.safetensors"))
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "a.weight": "model-00001-of-00002.safetensors", "b.weight": "model-00002-of-00002.safetensors"}}))
    with pytest.raises(FileNotFoundError, match="missing: model-00002-of-00002.safetensors"):
        spectra.analyze(sharded)
    (sharded / "model.safetensors.index.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a sharded-checkpoint index"):
        spectra.analyze(sharded)
    (tmp_path / "w.onnx").write_text("x")
    with pytest.raises(ValueError, match="unsupported checkpoint type '.onnx'.*Hugging Face model directory"):
        spectra.analyze(tmp_path / "w.onnx")
