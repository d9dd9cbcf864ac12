"""The torch decomposition backend (spectra.functional.torch_decompose, .torch_esd, .backend) on CPU tensors.

The very same device code path as on CUDA (tests/test_gpu.py runs these checks there): TorchDecomposer against
scipy's full SVD (the LAPACK Decomposer's contract: 1e-10 relative down to the rank floor), the float32 mode
against float64 within the bounds docs/gpu.md documents, the batched solve, the factory and LayerState's wiring.
The ``check_*`` helpers take the device so that tests/test_gpu.py can reuse them.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spectra.analyzers.alignment import AlignmentAnalyzer
from spectra.analyzers.esd import EsdAnalyzer
from spectra.analyzers.tail import TailAnalyzer
from spectra.functional import esd, esd_pooled, fit_power_law
from spectra.functional.backend import BACKENDS, make_decomposer, select_backend
from spectra.functional.certify import EVALS_RTOL, rank_floor
from spectra.functional.decompose import Decomposer
from spectra.functional.esd import esd_from
from spectra.functional.torch_decompose import TorchDecomposer
from spectra.functional.torch_esd import batched_eigvals, torch_esd_pooled
from spectra.functional.torch_precision import matmul_eps
from spectra.snapshot import DecompositionPlan, LayerState, Request

EPS = np.finfo(np.float64).eps

# float32 mode, as documented in docs/gpu.md ("Precision"): measured worst cases times a margin
FP32_ERR_OVER_BOUND = 1.0  # |λ32 − λ64| ≤ δ32 = 8·eps32·‖A‖²_F (measured ≤ 0.2·δ32)
FP32_REL_TOP = 1e-4  # relative error of eigenvalues ≥ 1e-3·λ_max (measured ≤ 2.2e-5)
FP32_REL_TAIL = 5e-5  # relative error of the fitted tail, λ ≥ xmin (measured ≤ 7.8e-6)
FP32_ALPHA = 1e-3  # |α32 − α64|, xmin scanned on each (measured ≤ 1.0e-4)
FP32_SV_REL = 1e-5  # top-10 singular values, relative (measured ≤ 1.3e-6)
FP32_VEC = 1e-5  # 1 − |u32·u64| of isolated top-10 vectors (measured ≤ 5e-7)


# ---------------------------------------------------------------------------------------------- matrices
def spectrum_matrix(rng, N, M, s):
    U, _ = np.linalg.qr(rng.standard_normal((N, len(s))))
    V, _ = np.linalg.qr(rng.standard_normal((M, len(s))))
    return (U * s) @ V.T


def sgd_update(rng, N, M, rank=8, lr=1e-3):
    """W_t − W_{t−1} of a float32 step: rank ``rank`` plus float32 rounding of W_t."""
    W0 = rng.standard_normal((N, M)).astype(np.float32)
    step = spectrum_matrix(rng, N, M, rng.uniform(1, 3, rank)).astype(np.float32)
    return (W0 - np.float32(lr) * step).astype(np.float64) - W0.astype(np.float64)


def trained_like(rng, N, M):
    """A heavy-tailed spectrum as trained layers have: power-law singular values plus a small MP bulk."""
    n = min(N, M)
    return spectrum_matrix(rng, N, M, np.arange(1, n + 1) ** -0.6) + 0.02 * rng.standard_normal((N, M)) / np.sqrt(N)


def families(rng, N, M):
    n = min(N, M)
    yield "mp", rng.standard_normal((N, M))
    A = rng.standard_normal((N, M))
    U, s, Vt = np.linalg.svd(A, full_matrices=False)
    s[:3] *= 10
    yield "spiked", (U * s) @ Vt
    yield "f32", rng.standard_normal((N, M)).astype(np.float32).astype(np.float64) * 0.02
    yield "rank-deficient", spectrum_matrix(rng, N, M, rng.uniform(0.5, 2, max(1, n // 10)))
    yield "power-law", spectrum_matrix(rng, N, M, np.arange(1, n + 1) ** -1.0)
    yield "ill-conditioned", spectrum_matrix(rng, N, M, np.logspace(0, -7, n))
    yield "heavy-tailed", rng.standard_t(2.0, (N, M))
    yield "sgd-f32", sgd_update(rng, N, M, rank=min(8, n))
    yield "zero-column", np.hstack([rng.standard_normal((N, M - 1)), np.zeros((N, 1))])


SHAPES = [(60, 40), (40, 60), (90, 90), (150, 100), (80, 200)]


def ref_svd(A):
    return scipy.linalg.svd(A, full_matrices=False, lapack_driver="gesvd")


def eval_tol(S, shape):
    """1e-10 relative, plus what any backward-stable SVD leaves (≈ eps·σ₁ on σ_i), plus the rank floor."""
    fl = rank_floor(S[0], shape)
    return EVALS_RTOL * S**2 + 8 * EPS * S[0] * S + 4 * fl**2


def check_triplets(A, k, U, S, Vh, name="", ref=None):
    """The LAPACK Decomposer's test of top-k triplets (tests/test_functional_decompose.py)."""
    Ur, Sr, Vhr = ref_svd(A) if ref is None else ref
    n = min(A.shape)
    fl = rank_floor(Sr[0], A.shape)
    tol = EVALS_RTOL * Sr[:k] + 4 * EPS * Sr[0] + 2 * fl
    assert np.all(np.abs(S - Sr[:k]) <= tol), (name, float(np.max(np.abs(S - Sr[:k]) / tol)))
    np.testing.assert_allclose(U.T @ U, np.eye(k), atol=1e-12)
    np.testing.assert_allclose(Vh @ Vh.T, np.eye(k), atol=1e-12)
    np.testing.assert_allclose(A @ Vh.T, U * S, atol=1e-12 * Sr[0])
    for i in range(k):  # isolated values: the same vectors up to sign
        gap = np.min(np.abs(np.delete(Sr, i) - Sr[i])) if n > 1 else np.inf
        if Sr[i] > 10 * fl and gap > 1e-6 * Sr[0]:
            assert 1 - abs(U[:, i] @ Ur[:, i]) <= 1e-10 + (50 * EPS * Sr[0] / gap) ** 2, (name, i)
    resolved = int(np.sum(Sr[:k] > 10 * fl))
    if 0 < resolved < n and Sr[resolved - 1] - Sr[resolved] > 1e-6 * Sr[0]:
        ang = scipy.linalg.subspace_angles(U[:, :resolved], Ur[:, :resolved])
        assert np.max(ang) < 1e-8, (name, float(np.max(ang)))
    assert np.all(U[np.argmax(np.abs(U), axis=0), np.arange(k)] > 0)  # fix_signs' convention


# ---------------------------------------------------------------------------------------------- checks (any device)
def check_families(device, shape, seed=0):
    """Eigenvalues and top-k triplets of every family against scipy's SVD, with the Decomposer's tolerance."""
    rng = np.random.default_rng(seed)
    n = min(shape)
    for name, A in families(rng, *shape):
        ref = ref_svd(A)
        S = ref[1]
        t = torch.tensor(A, device=device)
        d = TorchDecomposer(t)
        lam = d.eigvals()
        err = np.abs(lam - np.sort(S**2))
        tol = eval_tol(S, shape)[::-1]
        assert np.all(err <= tol), (name, d.routes, float(np.max(err / tol)))
        assert lam.dtype == np.float64 and np.all(np.diff(lam) >= 0)
        for k in (1, 3, max(1, n // 10)):
            U, Sk, Vh, full = TorchDecomposer(t).top_svd(k)
            assert not full and Sk.shape == (k,) and isinstance(U, np.ndarray)
            check_triplets(A, k, U, Sk, Vh, name, ref)
        for strict in (True, False):  # planned together: one eigh serves both
            d = TorchDecomposer(t, strict=strict)
            d.plan(evals=True, k=max(1, n // 10))
            d.compute()
            assert np.all(np.abs(d.eigvals() - np.sort(S**2)) <= tol), (name, strict, d.routes)
            check_triplets(A, max(1, n // 10), *d.top_svd(max(1, n // 10))[:3], name, ref)


def check_input_dtypes(device):
    """float32, bfloat16 and float16 tensors are decomposed as their exact float64 values."""
    rng = np.random.default_rng(1)
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        for shape in [(120, 80), (80, 120), (96, 96)]:
            W = torch.tensor(rng.standard_normal(shape) * 0.05, dtype=dtype, device=device)
            A = W.double().cpu().numpy()
            _, S, _ = ref_svd(A)
            d = TorchDecomposer(W)
            assert d.matrix.dtype == torch.float64 and d.matrix.device == W.device
            assert np.all(np.abs(d.eigvals() - np.sort(S**2)) <= eval_tol(S, shape)[::-1]), (dtype, shape)
            check_triplets(A, 4, *TorchDecomposer(W).top_svd(4)[:3], str(dtype))


def check_agrees_with_lapack(device):
    """Same numbers, signs and (on these well-posed matrices) routes as the LAPACK Decomposer."""
    rng = np.random.default_rng(2)
    cases = [
        (rng.standard_normal((300, 200)), 10, "gram", "gram"),
        (rng.standard_normal((200, 300)), 10, "gram", "gram"),
        (rng.standard_normal((256, 256)), 10, "gram+refine", "gram"),
        (spectrum_matrix(rng, 200, 100, np.ones(5)), 3, "svdvals", "svd (fallback)"),
        (spectrum_matrix(rng, 300, 200, np.linspace(3, 1, 8)), 10, "svdvals", "deflate:qr(8)+zero"),
    ]
    for A, k, ev_route, svd_route in cases:
        t = torch.tensor(A, device=device)
        ours, lapack = TorchDecomposer(t), Decomposer(A)
        np.testing.assert_allclose(ours.eigvals(), lapack.eigvals(), rtol=1e-10, atol=4 * rank_floor(
            np.sqrt(lapack.eigvals()[-1]), A.shape) ** 2)
        assert ours.routes["evals"].startswith(ev_route) and lapack.routes["evals"].startswith(ev_route)
        U, S, Vh, _ = TorchDecomposer(t).top_svd(k)
        Ul, Sl, Vhl, _ = lapack.top_svd(k)
        fresh = TorchDecomposer(t)
        fresh.top_svd(k)
        assert fresh.routes["svd"] == svd_route, fresh.routes
        check_triplets(A, k, U, S, Vh)
        resolved = Sl > 1e-6 * Sl[0]
        np.testing.assert_allclose(S, Sl, rtol=1e-10, atol=4 * EPS * Sl[0] * max(A.shape))
        gaps = np.abs(np.diff(np.concatenate([[np.inf], Sl, [0.0]])))
        isolated = resolved & (np.minimum(gaps[:-1], gaps[1:]) > 1e-3 * Sl[0])
        np.testing.assert_allclose(U[:, isolated], Ul[:, isolated], atol=1e-8)  # same signs too
        np.testing.assert_allclose(Vh[isolated], Vhl[isolated], atol=1e-8)


def check_strict_and_deflation(device):
    """The deflation stages and the strict flag choose what the LAPACK Decomposer chooses."""
    rng = np.random.default_rng(3)
    coarse = sgd_update(rng, 300, 200, rank=8, lr=1e-4)
    d = TorchDecomposer(torch.tensor(coarse, device=device))
    check_triplets(coarse, 10, *d.top_svd(10)[:3])
    assert d.routes["svd"] == "deflate:gram(8)+gram(2)"
    for lr in (1e-2, 1.0):
        A = sgd_update(rng, 300, 200, rank=8, lr=lr)
        t = torch.tensor(A, device=device)
        strict, loose = TorchDecomposer(t), TorchDecomposer(t, strict=False)
        Us, Ss, _, _ = strict.top_svd(10)
        Ul, Sl, Vhl, _ = loose.top_svd(10)
        assert strict.routes["svd"] == "svd (fallback)" and loose.routes["svd"] == "deflate:qr(8)+gram(2)"
        np.testing.assert_allclose(Ss, np.linalg.svd(A, compute_uv=False)[:10], rtol=1e-10)
        check_triplets(A, 10, Ul, Sl, Vhl)


def check_edge_cases(device):
    rng = np.random.default_rng(4)
    d = TorchDecomposer(torch.zeros(30, 20, device=device))
    np.testing.assert_array_equal(d.eigvals(), 0.0)
    U, S, Vh, _ = d.top_svd(2)
    np.testing.assert_array_equal(S, 0.0)
    np.testing.assert_allclose(U.T @ U, np.eye(2))
    assert d.routes == {"evals": "gram", "svd": "zero"}
    for shape in [(1, 1), (1, 7), (7, 1), (2, 3), (1, 300), (300, 1)]:
        A = rng.standard_normal(shape)
        t = torch.tensor(A, device=device)
        S = np.linalg.svd(A, compute_uv=False)
        np.testing.assert_allclose(TorchDecomposer(t).eigvals(), np.sort(S**2), rtol=1e-12)
        U, S2, Vh, full = TorchDecomposer(t).top_svd(1)
        assert full == (min(shape) == 1) and S2.shape == (1,)
        np.testing.assert_allclose(S2, S[:1], rtol=1e-12)
        np.testing.assert_allclose(A @ Vh.T, U * S2, atol=1e-12 * S[0])
    # full SVD requests (k None or large) and reuse for the eigenvalues
    A = rng.standard_normal((50, 40))
    d = TorchDecomposer(torch.tensor(A, device=device))
    U, S, Vh, full = d.top_svd(None)
    assert full and d.routes["svd"] == "svd" and U.shape == (50, 40) and Vh.shape == (40, 40)
    np.testing.assert_allclose(A, (U * S) @ Vh, atol=1e-12 * S[0])
    np.testing.assert_allclose(d.eigvals(), np.sort(S**2), rtol=0)
    assert d.routes["evals"] == "svd (shared)"
    np.testing.assert_allclose(d.eigvals("svd"), np.sort(np.linalg.svd(A, compute_uv=False) ** 2), rtol=1e-12)
    assert d.top_svd(5)[1].shape == (5,)
    # extreme magnitudes: power-of-two scaling of the Gram matrix, eigenvalues scaled back
    ref = TorchDecomposer(torch.tensor(A, device=device)).eigvals()
    for f in (2.0**-300, 2.0**250):
        np.testing.assert_allclose(TorchDecomposer(torch.tensor(A * f, device=device)).eigvals(), ref * f * f,
                                   rtol=1e-12)
    big = TorchDecomposer(torch.tensor(A * 1e200, device=device))
    with pytest.raises(ValueError, match="overflow float64"):
        esd_from(big)
    np.testing.assert_allclose(big.top_svd(3)[1], np.linalg.svd(A * 1e200, compute_uv=False)[:3], rtol=1e-12)
    with pytest.raises(ValueError, match="underflow float64"):
        esd_from(TorchDecomposer(torch.tensor(A * 1e-170, device=device)))


def check_validation(device):
    with pytest.raises(ValueError, match="2 non-finite"):
        TorchDecomposer(torch.tensor([[np.nan, 1.0], [np.inf, 2.0]], device=device))
    with pytest.raises(ValueError, match="must be 2-D"):
        TorchDecomposer(torch.ones(3, device=device))
    with pytest.raises(ValueError, match="empty"):
        TorchDecomposer(torch.ones(0, 3, device=device))
    with pytest.raises(TypeError, match="complex"):
        TorchDecomposer(torch.ones(3, 3, dtype=torch.complex64, device=device))
    with pytest.raises(ValueError, match="unknown precision 'fp16'; allowed: fp64, fp32"):
        TorchDecomposer(torch.ones(3, 3, device=device), precision="fp16")
    with pytest.raises(ValueError, match="beyond float32's range"):
        TorchDecomposer(torch.full((3, 3), 1e300, dtype=torch.float64, device=device), precision="fp32")
    d = TorchDecomposer(torch.ones(4, 3, device=device))
    with pytest.raises(ValueError, match="k must be a positive integer"):
        d.top_svd(0)
    with pytest.raises(ValueError, match="auto, eigh, svd"):
        d.eigvals("qr")


def fp32_errors(A, device, k=10):
    """float32 against float64 on one matrix: the quantities docs/gpu.md documents."""
    t = torch.tensor(A, dtype=torch.float32, device=device)
    d64, d32 = TorchDecomposer(t), TorchDecomposer(t, precision="fp32")
    l64, l32 = d64.eigvals(), d32.eigvals()
    err = np.abs(l32 - l64)
    f64, f32 = fit_power_law(l64), fit_power_law(l32)
    tail, top = l64 >= f64.xmin, l64 >= 1e-3 * l64[-1]
    U64, S64, _, _ = d64.top_svd(k)
    U32, S32, _, _ = d32.top_svd(k)
    gaps = np.abs(np.diff(np.concatenate([[np.inf], S64, [0.0]])))
    isolated = np.minimum(gaps[:-1], gaps[1:]) > 1e-2 * S64[0]
    return {
        "err_over_bound": float(err.max() / d32.error_bound),
        "rel_top": float(np.max(err[top] / l64[top])),
        "rel_tail": float(np.max(err[tail] / l64[tail])),
        "alpha": abs(f32.alpha - f64.alpha),
        "sv_rel": float(np.max(np.abs(S32 - S64) / S64)),
        "vec": float(np.max(1 - np.abs(np.sum(U32 * U64, axis=0))[isolated], initial=0.0)),
        "routes": (d32.routes, d64.routes),
    }


def check_fp32_bounds(device):
    """float32 mode within the documented bounds on Gaussian, Student-t and trained-like matrices."""
    for seed, (N, M) in enumerate([(300, 300), (400, 200), (150, 450)]):
        rng = np.random.default_rng(100 + seed)
        for name, A in (("gaussian", rng.standard_normal((N, M))), ("student-t(3)", rng.standard_t(3, (N, M))),
                        ("student-t(2)", rng.standard_t(2, (N, M))), ("trained-like", trained_like(rng, N, M))):
            e = fp32_errors(A, device)
            assert e["routes"][0] == {"evals": "gram", "svd": "gram"}, e["routes"]
            assert e["err_over_bound"] <= FP32_ERR_OVER_BOUND, (name, e)
            assert e["rel_top"] <= FP32_REL_TOP and e["rel_tail"] <= FP32_REL_TAIL, (name, e)
            assert e["alpha"] <= FP32_ALPHA, (name, e)
            assert e["sv_rel"] <= FP32_SV_REL and e["vec"] <= FP32_VEC, (name, e)
            # and float32 is really float32: it differs from float64 (a test that could not fail otherwise)
            assert e["rel_top"] > 1e-9, (name, e)


def check_batched(device):
    rng = np.random.default_rng(5)
    for shape in [(9, 40, 30), (12, 64, 96), (6, 50, 50)]:
        X = rng.standard_normal(shape)
        X[1] = spectrum_matrix(rng, shape[1], shape[2], np.ones(3))  # rank 3: needs the SVD
        X[2] *= 2.0**300  # its Gram trace overflows: scaled, slice by slice
        t = torch.tensor(X, device=device)
        lam = batched_eigvals(t)
        assert lam.shape == (shape[0], min(shape[1:])) and lam.dtype == np.float64
        for b in range(shape[0]):
            _, S, _ = ref_svd(X[b])
            assert np.all(np.abs(lam[b] - np.sort(S**2)) <= eval_tol(S, X[b].shape)[::-1]), (shape, b)
            np.testing.assert_allclose(lam[b], TorchDecomposer(t[b]).eigvals(), rtol=1e-10,
                                       atol=4 * rank_floor(S[0], X[b].shape) ** 2)
        np.testing.assert_allclose(batched_eigvals(t, method="svd"),
                                   np.stack([np.sort(np.linalg.svd(x, compute_uv=False) ** 2) for x in X]),
                                   rtol=1e-12, atol=1e-12 * 2.0**600)
        e = batched_eigvals(t, method="eigh")
        assert e.shape == lam.shape and np.all(e >= 0)
    one = rng.standard_normal((20, 10))
    np.testing.assert_allclose(batched_eigvals(torch.tensor(one, device=device))[0],
                               np.sort(np.linalg.svd(one, compute_uv=False) ** 2), rtol=1e-12)
    stack = rng.standard_normal((9, 20, 12))
    for normalize in (False, True):
        np.testing.assert_allclose(
            torch_esd_pooled(torch.tensor(stack, device=device), scale=0.5, normalize=normalize),
            esd_pooled(stack, scale=0.5, normalize=normalize), rtol=1e-10,
        )
    with pytest.raises(ValueError, match="non-finite"):
        batched_eigvals(torch.tensor([[[np.nan, 1.0]]], device=device))
    with pytest.raises(ValueError, match="3-D stack"):
        batched_eigvals(torch.ones(2, 2, 2, 2, device=device))
    with pytest.raises(ValueError, match="overflow"):
        torch_esd_pooled(torch.tensor(stack * 1e200, device=device))


def check_esd_entry_points(device, backend):
    """esd(), esd_pooled() and esd_from() on the device path: the TorchDecomposer's and batched_eigvals' numbers,
    with the same checks and messages as on the host."""
    rng = np.random.default_rng(9)
    kw = {} if backend is None else {"backend": backend}
    for shape in [(60, 40), (40, 60), (50, 50)]:
        A = rng.standard_normal(shape)
        t = torch.tensor(A, dtype=torch.float32, device=device)
        lam = esd(t, **kw)
        np.testing.assert_array_equal(lam, TorchDecomposer(t, name="W").eigvals())
        ref = esd(t.cpu().numpy())  # the LAPACK Decomposer's, certified to the same contract
        np.testing.assert_allclose(lam, ref, rtol=2e-10, atol=4 * rank_floor(np.sqrt(ref[-1]), shape) ** 2)
        np.testing.assert_array_equal(esd(t, normalize=True, method="svd", **kw),
                                      TorchDecomposer(t).eigvals("svd") / max(shape))
        np.testing.assert_array_equal(esd_from(TorchDecomposer(t), method="eigh"), TorchDecomposer(t).eigvals("eigh"))
    stack = rng.standard_normal((9, 20, 12))
    ts = torch.tensor(stack, device=device)
    for normalize in (False, True):
        np.testing.assert_array_equal(esd_pooled(ts, scale=0.5, normalize=normalize, **kw),
                                      torch_esd_pooled(ts, scale=0.5, normalize=normalize))
        np.testing.assert_allclose(esd_pooled(list(ts), scale=0.5, normalize=normalize, **kw),
                                   esd_pooled(stack, scale=0.5, normalize=normalize), rtol=1e-10)
    np.testing.assert_array_equal(esd_pooled(ts[0], scale=2.0, **kw), 2.0 * esd(ts[0], **kw))
    A = rng.standard_normal((30, 20))
    with pytest.raises(ValueError, match="overflow float64"):
        esd(torch.tensor(A * 1e200, device=device), **kw)
    with pytest.raises(ValueError, match="underflow float64"):
        esd(torch.tensor(A * 1e-170, device=device), **kw)
    with pytest.raises(ValueError, match="overflow float64"):
        esd_pooled(ts * 1e200, **kw)
    with pytest.raises(ValueError, match="W holds 1 non-finite"):
        esd(torch.tensor([[np.nan, 1.0]], device=device), **kw)
    with pytest.raises(ValueError, match="W must be 2-D"):
        esd(torch.ones(3, device=device), **kw)
    with pytest.raises(ValueError, match="needs at least one matrix"):
        esd_pooled(torch.ones(0, 3, 4, device=device), **kw)
    with pytest.raises(ValueError, match="unknown esd method"):
        esd(torch.ones(3, 3, device=device), method="qr", **kw)


def _state(device, weight, previous=None, update=None, grad=None, **context):
    tensors = {"weight": weight, "previous": previous, "update": update, "grad": grad}
    tensors = {k: torch.tensor(v, device=device) if isinstance(v, np.ndarray) else v
               for k, v in tensors.items() if v is not None}
    return LayerState(layer="fc", view="W", step=1, tensors=tensors, context=context)


def _rows(analyzers, st):
    return [(an.name, m.matrix, m.metric, m.index, m.value, m.status) for an in analyzers for m in an.analyze(st)]


def check_layer_state(device, backend):
    """LayerState through the torch backend: the same rows as the LAPACK backend's, no host copy for the
    ESD, one eigensolve serving eigenvalues and top-k."""
    rng = np.random.default_rng(6)
    W0 = rng.standard_normal((160, 120))
    dW = 0.05 * rng.standard_normal((160, 4)) @ rng.standard_normal((4, 120))
    W1, G = W0 + dW, -dW / 0.1 + 0.01 * rng.standard_normal((160, 120))
    analyzers = (EsdAnalyzer(matrices=("weight", "update")), TailAnalyzer(), AlignmentAnalyzer(k=5))
    ref = _state("cpu", W1, W0, dW, G, backend="lapack")
    ref.prefetch(DecompositionPlan.collect(analyzers, ref))
    st = _state(device, W1, W0, dW, G, **({} if backend is None else {"backend": backend}))
    assert st._backend("weight") == "torch"
    st.prefetch(DecompositionPlan.collect(analyzers, st))
    assert all(isinstance(st._decomposer(k), TorchDecomposer) for k in ("weight", "previous", "update", "grad"))
    assert not any(key[0] == "array" for key in st._cache)  # ESD and top-k without a host copy
    assert st._decomposer("update").routes == ref._decomposer("update").routes  # rank 4, evals too: gram
    a, b = _rows(analyzers, ref), _rows(analyzers, st)
    assert [r[:4] + r[5:] for r in a] == [r[:4] + r[5:] for r in b]
    for x, y in zip(a, b):
        assert y[4] == pytest.approx(x[4], rel=1e-9, abs=1e-9) or (np.isnan(x[4]) and np.isnan(y[4])), x[:4]
    np.testing.assert_allclose(st.evals(), ref.evals(), rtol=1e-10)
    # a pooled stack: one batched solve; its flattened matrix for the SVD
    stack = rng.standard_normal((9, 20, 12))
    sp = LayerState(layer="c", view="W", step=0, tensors={"weight": torch.tensor(stack, device=device)},
                    eig_scale=0.5, context={} if backend is None else {"backend": backend})
    np.testing.assert_allclose(sp.evals(), esd_pooled(stack, scale=0.5), rtol=1e-10)
    flat = np.transpose(stack, (1, 2, 0)).reshape(20, 108)
    np.testing.assert_allclose(sp.svd("weight", 3).S, np.linalg.svd(flat, compute_uv=False)[:3], rtol=1e-12)
    assert isinstance(sp._decomposer("weight"), TorchDecomposer)
    # float32 through the context
    st32 = _state(device, W1, precision="fp32", **({} if backend is None else {"backend": backend}))
    assert st32._decomposer("weight").precision == "fp32"
    np.testing.assert_allclose(st32.evals(), ref.evals(), rtol=FP32_REL_TOP)


# ---------------------------------------------------------------------------------------------- CPU tests
@pytest.mark.parametrize("shape", SHAPES)
def test_families_match_full_svd(shape):
    check_families("cpu", shape)


def test_input_dtypes():
    check_input_dtypes("cpu")


@settings(max_examples=20, deadline=None)
@given(
    N=st.integers(1, 70),
    M=st.integers(1, 70),
    kind=st.sampled_from(["mp", "lowrank", "decay", "f32", "sgd"]),
    seed=st.integers(0, 2**31 - 1),
    strict=st.booleans(),
)
def test_property_matches_svd(N, M, kind, seed, strict):
    rng = np.random.default_rng(seed)
    n = min(N, M)
    if kind == "mp":
        A = rng.standard_normal((N, M))
    elif kind == "lowrank":
        A = spectrum_matrix(rng, N, M, rng.uniform(0.1, 3.0, rng.integers(1, n + 1)))
    elif kind == "decay":
        A = spectrum_matrix(rng, N, M, np.geomspace(1.0, 10.0 ** -rng.uniform(1, 9), n))
    elif kind == "f32":
        A = rng.standard_normal((N, M)).astype(np.float32).astype(np.float64)
    else:
        A = sgd_update(rng, N, M, rank=int(rng.integers(1, n + 1)), lr=10.0 ** -rng.uniform(0, 4))
    if not np.any(A):
        return
    _, S, _ = ref_svd(A)
    t = torch.tensor(A)
    assert np.all(np.abs(TorchDecomposer(t, strict=strict).eigvals() - np.sort(S**2)) <= eval_tol(S, A.shape)[::-1])
    k = max(1, n // 10)
    U, Sk, Vh, _ = TorchDecomposer(t, strict=strict).top_svd(k)
    check_triplets(A, k, U, Sk, Vh, kind)


def test_agrees_with_lapack_decomposer():
    check_agrees_with_lapack("cpu")


def test_strict_and_deflation_routes():
    check_strict_and_deflation("cpu")


def test_edge_cases():
    check_edge_cases("cpu")


def test_validation():
    check_validation("cpu")
    with pytest.raises(ValueError, match="2 non-finite"):
        TorchDecomposer(np.array([[np.nan, 1.0], [np.inf, 2.0]]))  # arrays: as_matrix's messages
    d = TorchDecomposer(np.ones((4, 3)))  # an array becomes a CPU tensor
    assert d.device.type == "cpu" and d.shape == (4, 3) and d.n == 3 and d.backend == "torch"


def test_fp32_within_documented_bounds():
    check_fp32_bounds("cpu")


def test_fp32_eps_follows_torch_matmul_precision():
    assert matmul_eps("fp64") == EPS
    assert matmul_eps("fp32") == np.finfo(np.float32).eps
    old = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("high")
        assert matmul_eps("fp32") == 2.0**-10  # TF32 may be used: the bound widens
        torch.set_float32_matmul_precision("medium")
        assert matmul_eps("fp32") == 2.0**-7
    finally:
        torch.set_float32_matmul_precision(old)
    d = TorchDecomposer(torch.ones(4, 3), precision="fp32")
    assert d.error_bound == pytest.approx(8 * np.finfo(np.float32).eps * 12)


def test_batched_eigvals():
    check_batched("cpu")


def test_esd_entry_points_on_the_torch_backend():
    check_esd_entry_points("cpu", "torch")


def test_esd_entry_points_stay_on_lapack_by_default(rng):
    """Host inputs keep the LAPACK Decomposer's numbers bit for bit, whatever the entry point."""
    W = rng.standard_normal((70, 50))
    stack = rng.standard_normal((4, 20, 12))
    for method in ("auto", "eigh", "svd"):
        ref = esd_from(Decomposer(W), method=method)
        for x in (W, torch.tensor(W), W.astype(np.float32).astype(np.float64)):
            np.testing.assert_array_equal(esd(x, method=method), esd_from(Decomposer(x), method=method))
        np.testing.assert_array_equal(esd(W, method=method, backend="lapack"), ref)
        pooled = np.sort(np.concatenate([esd_from(Decomposer(m), method=method) for m in stack])) * 0.5
        for x in (stack, torch.tensor(stack), list(stack)):
            np.testing.assert_array_equal(esd_pooled(x, scale=0.5, method=method), pooled)
    with pytest.raises(ValueError, match="unknown decomposition backend 'gpu'"):
        esd(W, backend="gpu")


def test_plan_shares_one_eigensolve(monkeypatch):
    """Eigenvalues and top-k planned together: one ``eigh``, no ``eigvalsh``; eigenvalues alone: one
    ``eigvalsh``; a square matrix's refinement adds one ``eigh`` and no SVD of the whole matrix."""
    calls = {"eigh": 0, "eigvalsh": 0, "svd": 0}
    for fn in calls:
        real = getattr(torch.linalg, fn)

        def spy(*a, _real=real, _fn=fn, **kw):
            calls[_fn] += 1
            return _real(*a, **kw)

        monkeypatch.setattr(torch.linalg, fn, spy)
    rng = np.random.default_rng(7)
    d = TorchDecomposer(torch.tensor(rng.standard_normal((300, 200))))
    d.plan(evals=True, k=10)
    d.compute()
    assert calls == {"eigh": 1, "eigvalsh": 0, "svd": 1} and d.routes == {"evals": "gram", "svd": "gram"}
    assert d.top_svd(5)[1].shape == (5,) and calls["svd"] == 1  # served from the cached k = 10
    calls.update(eigh=0, svd=0)
    d = TorchDecomposer(torch.tensor(rng.standard_normal((200, 200))))
    d.eigvals()
    assert d.routes["evals"].startswith("gram+refine") and calls == {"eigh": 1, "eigvalsh": 1, "svd": 1}


def test_factory_selects_and_validates():
    rng = np.random.default_rng(8)
    A = rng.standard_normal((30, 20))
    t = torch.tensor(A, dtype=torch.float32)
    assert BACKENDS == ("auto", "torch", "lapack")
    for x in (A, t):
        assert select_backend(x) == "lapack" and type(make_decomposer(x)) is Decomposer
        assert select_backend(x, "torch") == "torch" and type(make_decomposer(x, backend="torch")) is TorchDecomposer
        assert type(make_decomposer(x, backend="lapack")) is Decomposer
    # CPU behaviour is the LAPACK Decomposer's, bit for bit; fp32 is only a permission there
    np.testing.assert_array_equal(make_decomposer(t, precision="fp32").eigvals(), Decomposer(t).eigvals())
    d = make_decomposer(t, backend="torch", precision="fp32", strict=False, name="Q")
    assert d.precision == "fp32" and d.strict is False and d.matrix.dtype == torch.float32
    with pytest.raises(ValueError, match=r"unknown decomposition backend 'gpu'; allowed: auto, torch, lapack"):
        make_decomposer(A, backend="gpu")
    with pytest.raises(ValueError, match="unknown decomposition backend"):
        select_backend(A, None)
    with pytest.raises(ValueError, match=r"unknown precision 'half'; allowed: fp64, fp32"):
        make_decomposer(A, precision="half")
    with pytest.raises(ValueError, match="needs the torch backend"):
        make_decomposer(A, backend="lapack", precision="fp32")
    with pytest.raises(ValueError, match=r"Q holds 1 non-finite"):
        make_decomposer(np.array([[np.nan, 1.0]]), backend="torch", name="Q")
    assert select_backend(torch.empty(3, 3, device="meta")) == "lapack"


@pytest.mark.parametrize("backend", ["torch"])
def test_layer_state_through_the_torch_backend(backend):
    check_layer_state("cpu", backend)


def test_layer_state_default_stays_on_lapack(rng):
    """CPU tensors and arrays keep the LAPACK Decomposer of the float64 host copy (the same object array()
    returns), unless the context asks otherwise; an unknown backend is an error at the call."""
    W = rng.standard_normal((40, 30))
    for x in (W, torch.tensor(W, dtype=torch.float32)):
        st = LayerState(layer="fc", view="W", step=0, tensors={"weight": x})
        assert st._backend("weight") == "lapack"
        dec = st._decomposer("weight")
        assert type(dec) is Decomposer and dec.matrix is st.array("weight")
        np.testing.assert_array_equal(st.evals(), Decomposer(st.array("weight")).eigvals())
    st = LayerState(layer="fc", view="W", step=0, tensors={"weight": W}, context={"backend": "torch"})
    assert isinstance(st._decomposer("weight"), TorchDecomposer)  # an array under backend="torch"
    np.testing.assert_allclose(st.evals(), np.sort(np.linalg.svd(W, compute_uv=False) ** 2), rtol=1e-10)
    bad = LayerState(layer="fc", view="W", step=0, tensors={"weight": W}, context={"backend": "cuda"})
    bad.prefetch([Request("weight", evals=True)])  # the plan swallows it; the analyzer's call raises
    with pytest.raises(ValueError, match="unknown decomposition backend 'cuda'"):
        bad.evals()
