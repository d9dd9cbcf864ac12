"""The torch decomposition backend on CUDA: tests/test_torch_backend.py's checks on the device, the automatic
backend choice, and the drivers on a CUDA model. Skipped without CUDA."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from test_torch_backend import (
    SHAPES,
    check_agrees_with_lapack,
    check_batched,
    check_edge_cases,
    check_esd_entry_points,
    check_families,
    check_fp32_bounds,
    check_input_dtypes,
    check_layer_state,
    check_strict_and_deflation,
    check_validation,
)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

CUDA = "cuda"


@pytest.mark.parametrize("shape", SHAPES)
def test_families_match_full_svd(shape):
    check_families(CUDA, shape)


def test_input_dtypes():
    check_input_dtypes(CUDA)


def test_agrees_with_lapack_decomposer():
    check_agrees_with_lapack(CUDA)


def test_strict_and_deflation_routes():
    check_strict_and_deflation(CUDA)


def test_edge_cases():
    check_edge_cases(CUDA)


def test_validation():
    check_validation(CUDA)


def test_fp32_within_documented_bounds():
    check_fp32_bounds(CUDA)


def test_batched_eigvals():
    check_batched(CUDA)


@pytest.mark.parametrize("backend", [None, "torch"])
def test_esd_entry_points_on_the_device(backend):
    check_esd_entry_points(CUDA, backend)


@pytest.mark.parametrize("backend", [None, "torch"])
def test_layer_state_stays_on_the_device(backend):
    check_layer_state(CUDA, backend)


def test_auto_selects_the_device_backend(rng):
    from spectra.functional.backend import make_decomposer, select_backend
    from spectra.functional.decompose import Decomposer
    from spectra.functional.torch_decompose import TorchDecomposer
    from spectra.snapshot import LayerState

    W = torch.tensor(rng.standard_normal((64, 48)), dtype=torch.float32, device=CUDA)
    assert select_backend(W) == "torch"
    d = make_decomposer(W)
    assert isinstance(d, TorchDecomposer) and d.device.type == "cuda" and d.matrix.dtype == torch.float64
    assert type(make_decomposer(W, backend="lapack")) is Decomposer
    np.testing.assert_allclose(d.eigvals(), make_decomposer(W, backend="lapack").eigvals(), rtol=1e-10)
    st = LayerState(layer="fc", view="W", step=0, tensors={"weight": W}, context={"backend": "lapack"})
    assert st._backend("weight") == "lapack" and type(st._decomposer("weight")) is Decomposer
    np.testing.assert_allclose(st.evals(), d.eigvals(), rtol=1e-10)


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(96, 192), torch.nn.ReLU(), torch.nn.Linear(192, 192),
                               torch.nn.ReLU(), torch.nn.Linear(192, 10))


def test_analyze_on_cuda_matches_cpu():
    import spectra

    model = _model()
    cpu = spectra.analyze(model, progress=False).to_wide().set_index("layer")
    gpu = spectra.analyze(_model().to(CUDA), progress=False).to_wide().set_index("layer")
    assert list(gpu.index) == list(cpu.index)
    for col in ("alpha", "lambda_max", "stable_rank", "log_norm"):
        if col in cpu.columns:
            np.testing.assert_allclose(gpu[col].to_numpy(float), cpu[col].to_numpy(float), rtol=1e-8)


def test_monitor_on_a_cuda_model():
    import spectra

    model = _model().to(CUDA)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    mon = spectra.SpectraMonitor(model, opt, every=2)
    x, y = torch.randn(32, 96, device=CUDA), torch.randint(0, 10, (32,), device=CUDA)
    for _ in range(4):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    df = mon.results.to_pandas()
    mon.close()
    assert len(df) and not (df["status"] == "failed").any()
