import numpy as np
import pytest
import torch

from spectra.functional import esd, esd_pooled
from spectra.functional.esd import AUTO_SVD_RCOND


def _ref(W):
    s = np.linalg.svd(np.asarray(W, dtype=np.float64), compute_uv=False)
    return np.sort(s**2)


@pytest.mark.parametrize("shape", [(200, 100), (100, 200), (64, 64), (1000, 30)])
@pytest.mark.parametrize("method", ["eigh", "svd", "auto"])
def test_matches_float64_svd(rng, shape, method):
    W = rng.standard_normal(shape)
    lam = esd(W, method=method)
    ref = _ref(W)
    assert lam.shape == (min(shape),)
    assert np.all(np.diff(lam) >= 0)
    top = slice(-10, None)
    np.testing.assert_allclose(lam[top], ref[top], rtol=1e-10)
    np.testing.assert_allclose(lam, ref, rtol=1e-8, atol=1e-12 * ref.max())


def test_torch_inputs_all_dtypes(rng):
    W = rng.standard_normal((50, 30))
    ref = _ref(W.astype(np.float32))
    for dt in (torch.float32, torch.float64):
        np.testing.assert_allclose(esd(torch.tensor(W, dtype=torch.float32).to(dt)), ref, rtol=1e-6)
    for dt in (torch.bfloat16, torch.float16):
        t = torch.tensor(W).to(dt)
        lam = esd(t)
        np.testing.assert_allclose(lam, _ref(t.double().numpy()), rtol=1e-8)
        assert lam.dtype == np.float64


def test_normalize_divides_by_larger_dim(rng):
    W = rng.standard_normal((300, 100))
    np.testing.assert_allclose(esd(W, normalize=True), esd(W) / 300, rtol=1e-12)
    np.testing.assert_allclose(esd(W.T, normalize=True), esd(W) / 300, rtol=1e-12)


def test_auto_falls_back_to_svd_for_ill_conditioned(rng):
    # singular values spanning 1e6 -> eigenvalues spanning 1e12: Gram+eigh loses the small ones
    U, _ = np.linalg.qr(rng.standard_normal((80, 40)))
    V, _ = np.linalg.qr(rng.standard_normal((40, 40)))
    s = np.logspace(0, -6, 40)
    W = (U * s) @ V.T
    ref = np.sort(s**2)
    auto = esd(W, method="auto")
    gram = esd(W, method="eigh")
    assert ref[0] < AUTO_SVD_RCOND * ref[-1]
    np.testing.assert_allclose(auto, ref, rtol=1e-6)
    # the Gram route is measurably worse on the smallest eigenvalue: the reason for the fallback
    assert abs(gram[0] - ref[0]) / ref[0] > 1e-8


def test_pooled_concatenates_and_scales(rng):
    stack = rng.standard_normal((9, 20, 12))
    pooled = esd_pooled(stack, scale=0.5)
    ref = np.sort(np.concatenate([_ref(m) for m in stack])) * 0.5
    np.testing.assert_allclose(pooled, ref, rtol=1e-10)


@pytest.mark.parametrize("bad", [np.zeros(5), np.zeros((2, 3, 4)), np.zeros((0, 3))])
def test_bad_shapes(bad):
    with pytest.raises(ValueError, match="2-D|empty"):
        esd(bad)


def test_nan_inf_counted():
    W = np.ones((4, 3))
    W[0, 0] = np.nan
    W[1, 1] = np.inf
    with pytest.raises(ValueError, match="2 non-finite"):
        esd(W)


def test_unknown_method_lists_allowed():
    with pytest.raises(ValueError, match="auto, eigh, svd"):
        esd(np.ones((3, 3)), method="qr")


def test_complex_rejected():
    with pytest.raises(TypeError, match="complex"):
        esd(np.ones((3, 3), dtype=complex))


def test_transpose_invariance(rng):
    W = rng.standard_normal((70, 40))
    np.testing.assert_allclose(esd(W), esd(W.T), rtol=1e-10)
