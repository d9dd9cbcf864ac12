"""Driver options of the device path: backend=, precision=, and analyze(device=), tested on CPU tensors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import spectra


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(60, 40), nn.ReLU(), nn.Linear(40, 30), nn.ReLU(), nn.Linear(30, 80))


def _ok_values(df: pd.DataFrame) -> pd.Series:
    ok = df[df["status"] == "ok"].set_index(["layer", "metric", "index"], drop=True)["value"]
    return ok.sort_index()


def test_the_torch_backend_agrees_with_lapack_and_says_so():
    lapack = spectra.analyze(_model()).to_pandas()
    torch_ = spectra.analyze(_model(), backend="torch").to_pandas()
    a, b = _ok_values(lapack), _ok_values(torch_)
    assert a.index.equals(b.index) and len(a) > 30
    np.testing.assert_allclose(b.to_numpy(), a.to_numpy(), rtol=1e-10, atol=0)
    assert "decompositions" not in lapack.attrs
    assert torch_.attrs["decompositions"] == {"backend": "torch", "precision": "fp64"}


def test_fp32_stays_within_the_documented_alpha_bound():
    a = spectra.analyze(_model()).to_pandas()
    b = spectra.analyze(_model(), backend="torch", precision="fp32").to_pandas()
    alpha = lambda df: df[df["metric"] == "alpha"].set_index("layer")["value"].sort_index()  # noqa: E731
    assert np.max(np.abs(alpha(a) - alpha(b))) <= 1e-3  # docs/gpu.md: |Δα| ≤ 1e-3
    assert b.attrs["decompositions"]["precision"] == "fp32"


def test_device_cpu_gives_the_same_table():
    pd.testing.assert_frame_equal(spectra.analyze(_model(), device="cpu").to_pandas(),
                                  spectra.analyze(_model()).to_pandas())


def test_the_monitor_passes_the_backend_to_its_snapshots(monkeypatch):
    seen = []
    from spectra.snapshot import LayerState

    orig = LayerState.prefetch_tasks

    def spy(self, requests):
        seen.append((self.context.get("backend"), self.context.get("precision")))
        return orig(self, requests)

    monkeypatch.setattr(LayerState, "prefetch_tasks", spy)
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with spectra.SpectraMonitor(model, opt, every=1, backend="torch", warn_overhead=None) as mon:
        for _ in range(2):
            opt.zero_grad()
            model(torch.randn(8, 60)).pow(2).mean().backward()
            opt.step()
        assert mon.to_pandas().attrs["decompositions"]["backend"] == "torch"
    assert seen and set(seen) == {("torch", "fp64")}


@pytest.mark.parametrize("options, error, match", [
    ({"backend": "gpu"}, ValueError, "backend must be one of auto, torch, lapack, got 'gpu'"),
    ({"precision": "half"}, ValueError, "unknown precision 'half'; allowed: fp64, fp32"),
    ({"backend": "lapack", "precision": "fp32"}, ValueError, "needs the torch backend"),
    ({"device": "nope"}, ValueError, "device must be a torch device"),
])
def test_bad_options_are_refused(options, error, match):
    with pytest.raises(error, match=match):
        spectra.analyze(_model(), **options)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where CUDA is absent")
def test_cuda_without_cuda_is_refused():
    with pytest.raises(ValueError, match="CUDA is not available"):
        spectra.analyze(_model(), device="cuda")


def test_the_monitor_refuses_device():
    model = _model()
    with pytest.raises(TypeError, match="a training driver analyses the parameters on their own device"):
        spectra.SpectraMonitor(model, torch.optim.SGD(model.parameters(), lr=0.1), device="cpu")
