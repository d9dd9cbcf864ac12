import copy

import numpy as np
import pytest
import torch
from torch import nn

import spectra
from spectra.checkpoints import UnsafeCheckpointError


def _cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 6 * 6, 64), nn.ReLU(),
                         nn.Linear(64, 10))


def test_analyze_module_matches_functional():
    model = _cnn()
    res = spectra.analyze(model, fit="ww")
    wide = res.to_wide()
    assert list(wide["layer"]) == ["0", "3", "5"]
    W = model[3].weight.detach()
    lam = spectra.functional.esd(W)
    fit = spectra.functional.fit_power_law(lam, method="ww")
    row = wide[wide.layer == "3"].iloc[0]
    assert row["alpha"] == pytest.approx(fit.alpha, rel=1e-12)
    assert row["lambda_max"] == pytest.approx(lam.max(), rel=1e-12)
    # conv: pooled slices scaled by 1/2 (WeightWatcher)
    conv = model[0].weight.detach().double().numpy()
    ref = np.concatenate([np.linalg.svd(conv[:, :, i, j], compute_uv=False) ** 2 for i in range(3) for j in range(3)])
    assert wide[wide.layer == "0"].iloc[0]["lambda_max"] == pytest.approx(ref.max() / 2, rel=1e-10)
    assert res.attrs["fit"] == "ww"
    layers = res.layers
    assert set(layers[layers.skip_reason.notna()]["layer"]) >= {"0.bias", "3.bias"}


def test_analyze_does_not_modify_model():
    model = _cnn()
    before = copy.deepcopy(model.state_dict())
    spectra.analyze(model)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_state_dict_and_checkpoint_files(tmp_path):
    model = _cnn()
    a = spectra.analyze(model).to_wide()
    b = spectra.analyze(model.state_dict()).to_wide()
    torch.save(model.state_dict(), tmp_path / "m.pt")
    torch.save({"epoch": 3, "state_dict": model.state_dict()}, tmp_path / "nested.pth")
    c = spectra.analyze(tmp_path / "m.pt").to_wide()
    d = spectra.analyze(str(tmp_path / "nested.pth")).to_wide()
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "m.safetensors"))
    e = spectra.analyze(tmp_path / "m.safetensors").to_wide()
    for other in (b, c, d, e):
        np.testing.assert_allclose(other["alpha"].to_numpy(), a["alpha"].to_numpy(), rtol=1e-12)


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickle_needing_code_execution_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(3, 3), "x": _Evil()}, path)
    with pytest.raises(UnsafeCheckpointError, match="refused"):
        spectra.analyze(path)
    assert "pwned" not in capsys.readouterr().out


def test_bad_inputs(tmp_path):
    with pytest.raises(TypeError, match="cannot analyze a int.*nn.Module"):
        spectra.analyze(3)
    with pytest.raises(FileNotFoundError):
        spectra.analyze(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="junk.pt"):
        spectra.analyze(tmp_path / "junk.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="not a state_dict"):
        spectra.analyze(tmp_path / "list.pt")
    with pytest.raises(ValueError, match="unknown fit method"):
        spectra.analyze(_cnn(), fit="nope")
    with pytest.raises(ValueError, match="registered analyzers"):
        spectra.analyze(_cnn(), analyzers=("esd", "nope"))


def test_nothing_to_analyze_warns_and_explains():
    model = nn.Sequential(nn.LayerNorm(8))
    with pytest.warns(RuntimeWarning, match="nothing to analyze"):
        res = spectra.analyze(model)
    assert len(res.to_pandas()) == 0
    assert res.layers["skip_reason"].notna().all()


def test_nan_layer_fails_alone():
    model = _cnn()
    with torch.no_grad():
        model[5].weight[0, 0] = float("inf")
    with pytest.warns(RuntimeWarning, match="non-finite"):
        res = spectra.analyze(model)
    df = res.to_pandas()
    assert (df[df.layer == "5"].status == "failed").all()
    assert (df[df.layer == "3"].status.isin(["ok", "warn"])).all()


def test_layer_filters_and_meta():
    model = _cnn()
    assert spectra.analyze(model, layers="[35]").to_wide()["layer"].tolist() == ["3", "5"]
    assert spectra.analyze(model, layers=nn.Conv2d).to_wide()["layer"].tolist() == ["0"]
    with torch.device("meta"):
        meta = nn.Linear(10, 10)
    with pytest.warns(RuntimeWarning):
        res = spectra.analyze(meta)
    assert "meta" in res.layers["skip_reason"].iloc[0]


def test_plugin_raising_during_registration_names_it():
    class Broken:
        @spectra.hookimpl
        def spectra_register_analyzers(self, register):
            raise RuntimeError("bad plugin")

    with pytest.raises(spectra.plugins.PluginError, match="bad plugin"):
        spectra.analyze(_cnn(), plugins=[Broken()])


def test_separate_conv_slices_and_spectrum_option():
    model = _cnn()
    res = spectra.analyze(model, conv_slices="separate", analyzers=("esd",), analyzer_options={"esd": {"spectrum": True}})
    df = res.to_pandas()
    assert len(set(df[df.layer == "0"]["view"])) == 9
    ev = df[(df.layer == "5") & (df.metric == "eigenvalue")].sort_values("index")["value"].to_numpy()
    np.testing.assert_allclose(ev, spectra.functional.esd(model[5].weight), rtol=1e-12)


def test_progress_bar_when_asked(capsys):
    spectra.analyze(_cnn(), progress=True)
    assert "spectra.analyze" in capsys.readouterr().err
