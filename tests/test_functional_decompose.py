"""spectra.functional.{tridiag,certify,lowrank,decompose} against independent references (LAPACK SVDs, eigh)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spectra.functional import certify
from spectra.functional.certify import EVALS_RTOL, gram_error_bound, rank_floor
from spectra.functional.decompose import Decomposer
from spectra.functional.lowrank import lowrank_columns, qr_stage, svd_from_factors
from spectra.functional.tridiag import gram_reduce, reduction_eigh_range, reduction_eigvalsh, reduction_eigvals_range

EPS = np.finfo(np.float64).eps


def _spectrum_matrix(rng, N, M, s):
    U, _ = np.linalg.qr(rng.standard_normal((N, len(s))))
    V, _ = np.linalg.qr(rng.standard_normal((M, len(s))))
    return (U * s) @ V.T


def _sgd_update(rng, N, M, rank=8, lr=1e-3):
    """W_t − W_{t−1} of a float32 step: rank ``rank`` plus float32 rounding of W_t."""
    W0 = rng.standard_normal((N, M)).astype(np.float32)
    step = _spectrum_matrix(rng, N, M, rng.uniform(1, 3, rank)).astype(np.float32)
    return (W0 - np.float32(lr) * step).astype(np.float64) - W0.astype(np.float64)


def _matrices(rng, N, M):
    n = min(N, M)
    yield "mp", rng.standard_normal((N, M))
    A = rng.standard_normal((N, M))
    U, s, Vt = np.linalg.svd(A, full_matrices=False)
    s[:3] *= 10
    yield "spiked", (U * s) @ Vt
    yield "f32", rng.standard_normal((N, M)).astype(np.float32).astype(np.float64) * 0.02
    yield "rank-deficient", _spectrum_matrix(rng, N, M, rng.uniform(0.5, 2, max(1, n // 10)))
    yield "power-law", _spectrum_matrix(rng, N, M, np.arange(1, n + 1) ** -1.0)
    yield "ill-conditioned", _spectrum_matrix(rng, N, M, np.logspace(0, -7, n))
    yield "heavy-tailed", rng.standard_t(2.0, (N, M))
    yield "sgd-f32", _sgd_update(rng, N, M, rank=min(8, n))
    yield "zero-column", np.hstack([rng.standard_normal((N, M - 1)), np.zeros((N, 1))])


SHAPES = [(60, 40), (40, 60), (90, 90), (150, 100), (80, 200)]


def _ref(A):
    return scipy.linalg.svd(A, full_matrices=False, lapack_driver="gesvd")


def _eval_tol(S, shape):
    """1e-10 relative, plus what any backward-stable SVD leaves (≈ eps·σ₁ on σ_i), plus the rank floor."""
    lam = S**2
    fl = rank_floor(S[0], shape)
    return EVALS_RTOL * lam + 8 * EPS * S[0] * S + 4 * fl**2


# ---------------------------------------------------------------------------------------------- tridiag
@pytest.mark.parametrize("shape", [(120, 80), (80, 80), (5, 2), (3, 1)])
def test_reduction_matches_lapack_eigh(rng, shape):
    A = rng.standard_normal(shape)
    G = A.T @ A
    red = gram_reduce(A)
    lam = reduction_eigvalsh(red)
    np.testing.assert_array_equal(lam, scipy.linalg.eigh(G, eigvals_only=True, driver="evd"))  # same kernels
    n = shape[1]
    k = min(4, n)
    w, X = reduction_eigh_range(red, n - k, n - 1)
    w2, X2 = scipy.linalg.eigh(G, subset_by_index=[n - k, n - 1], driver="evr")
    np.testing.assert_allclose(w, w2, rtol=1e-13)
    np.testing.assert_allclose(np.abs(np.sum(X * X2, axis=0)), 1.0, atol=1e-12)
    np.testing.assert_allclose(X.T @ X, np.eye(k), atol=1e-13)
    np.testing.assert_allclose(G @ X, X * w, atol=1e-12 * lam[-1])
    with pytest.raises(ValueError, match="outside"):
        reduction_eigh_range(red, 0, n)
    # values only: the bisection's, or read from every eigenvalue when given
    lo = max(0, n - k - 1)
    np.testing.assert_allclose(reduction_eigvals_range(red, lo, n - 1), lam[lo:], rtol=1e-13)
    np.testing.assert_array_equal(reduction_eigvals_range(red, lo, lo, lam), lam[lo : lo + 1])
    with pytest.raises(ValueError, match="outside"):
        reduction_eigvals_range(red, -1, 0)


def test_reduction_rescales_extreme_magnitudes(rng):
    A = rng.standard_normal((40, 30))
    ref = reduction_eigvalsh(gram_reduce(A))
    for f in (2.0**-300, 2.0**250):  # squares underflow / overflow without the power-of-two scaling
        np.testing.assert_allclose(reduction_eigvalsh(gram_reduce(A * f)), ref * f * f, rtol=1e-13)
    with pytest.raises(np.linalg.LinAlgError):
        gram_reduce(A * 1e200)  # the eigenvalues themselves overflow float64


# ---------------------------------------------------------------------------------------------- the bound
def test_gram_error_bound_holds_with_margin(rng):
    """The Gram route's error stays below δ/2 on every family and shape, once the reference SVD's own rounding
    (≈ eps·σ₁ on each σ_i, i.e. 2σ_i·eps·σ₁ on λ_i; it dominates at the top of the spectrum) is allowed for."""
    worst = 0.0
    for shape in SHAPES + [(300, 60)]:
        for name, A in _matrices(rng, *shape):
            lam = scipy.linalg.eigh(A.T @ A if shape[0] >= shape[1] else A @ A.T, eigvals_only=True, driver="evd")
            S = np.sort(_ref(A)[1])
            excess = np.abs(lam - S**2) - 8 * EPS * S[-1] * S
            worst = max(worst, float(np.max(excess)) / gram_error_bound(np.sum(A * A)))
    assert worst < 0.5, worst


def test_gram_error_bound_against_extended_precision(rng):
    """Against 40-digit singular values (mpmath), the realised error is below δ/3."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 40
    for name, A in list(_matrices(rng, 24, 16))[::2]:
        lam = scipy.linalg.eigh(A.T @ A, eigvals_only=True, driver="evd")
        exact = np.sort([float(s**2) for s in mpmath.svd_r(mpmath.matrix(A.tolist()), compute_uv=False)])
        assert np.max(np.abs(lam - exact)) < gram_error_bound(np.sum(A * A)) / 3, name


def test_trust_counts():
    lam = np.array([1e-9, 2e-6, 1e-3, 1.0])
    assert certify.untrusted_bottom(lam, 1e-16, 1e-10) == 1  # needs λ ≥ δ(1 + 1/rtol) ≈ 1e-6
    assert certify.trusted_top(lam[::-1], 1e-16, 1e-10) == 3
    assert certify.untrusted_bottom(lam, 0.0, 1e-10) == 0


@settings(max_examples=40, deadline=None)
@given(n=st.integers(3, 12), seed=st.integers(0, 2**31 - 1), noise=st.floats(1e-8, 1e-2))
def test_temple_bounds_bracket_true_eigenvalues(n, seed, noise):
    """Ritz pairs from a perturbed eigenbasis: the chained bounds always contain the true eigenvalues."""
    rng = np.random.default_rng(seed)
    lam = np.sort(rng.uniform(0.1, 10.0, n)) + np.arange(n) * 0.5
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    H = (Q * lam) @ Q.T
    m = max(1, n // 2)
    Vb, _ = np.linalg.qr(Q[:, :m] + noise * rng.standard_normal((n, m)))  # bottom subspace, perturbed
    th, Y = np.linalg.eigh(Vb.T @ H @ Vb)
    X = Vb @ Y
    rho = np.linalg.norm(H @ X - X * th, axis=0)
    beta_next = np.append(lam[1:m + 1], np.inf)[:m] - 1e-12  # known lower bounds on λ_{i+1}
    lb = certify.temple_lower_bounds(th, rho, beta_next)
    assert np.all(lb <= lam[:m] + 1e-9) and np.all(th >= lam[:m] - 1e-9)
    Vt, _ = np.linalg.qr(Q[:, n - m:] + noise * rng.standard_normal((n, m)))  # top subspace
    th, Y = np.linalg.eigh(Vt.T @ H @ Vt)
    th, Y = th[::-1], Y[:, ::-1]
    X = Vt @ Y
    rho = np.linalg.norm(H @ X - X * th, axis=0)
    caps = np.append(np.full(m, np.inf), lam[::-1][m] + 1e-12)
    ub = certify.temple_upper_bounds(th, rho, caps)
    assert np.all(ub >= lam[::-1][:m] - 1e-9) and np.all(th <= lam[::-1][:m] + 1e-9)


# ---------------------------------------------------------------------------------------------- eigenvalues
@pytest.mark.parametrize("shape", SHAPES)
def test_eigvals_auto_match_svd_on_every_family(rng, shape):
    for name, A in _matrices(rng, *shape):
        _, S, _ = _ref(A)
        d = Decomposer(A)
        lam = d.eigvals()
        err = np.abs(lam - np.sort(S**2))
        tol = _eval_tol(S, shape)[::-1]
        assert np.all(err <= tol), (name, d.routes, float(np.max(err / tol)))
        assert np.all(np.diff(lam) >= 0) and lam.dtype == np.float64


def test_eigvals_routes(rng):
    tall = Decomposer(rng.standard_normal((300, 200)))
    tall.eigvals()
    assert tall.routes["evals"] == "gram"  # well-conditioned: no second decomposition
    square = Decomposer(rng.standard_normal((256, 256)))
    lam = square.eigvals()
    assert square.routes["evals"].startswith("gram+refine")  # the hard edge: a few refined, no SVD
    np.testing.assert_allclose(lam, np.sort(np.linalg.svd(square.matrix, compute_uv=False) ** 2), rtol=1e-10)
    low = Decomposer(_spectrum_matrix(rng, 200, 100, np.ones(5)))
    low.eigvals()
    assert low.routes["evals"] == "svdvals"  # 95 zero eigenvalues: only the SVD resolves them
    eigh = Decomposer(square.matrix)
    assert not np.array_equal(eigh.eigvals("eigh"), lam)  # the Gram route alone differs on the small ones
    np.testing.assert_array_equal(eigh.eigvals("svd"), np.sort(scipy.linalg.svdvals(square.matrix) ** 2))
    with pytest.raises(ValueError, match="auto, eigh, svd"):
        eigh.eigvals("qr")


def test_zero_and_tiny_matrices(rng):
    d = Decomposer(np.zeros((30, 20)))
    np.testing.assert_array_equal(d.eigvals(), 0.0)
    U, S, Vh, _ = d.top_svd(2)
    np.testing.assert_array_equal(S, 0.0)
    np.testing.assert_allclose(U.T @ U, np.eye(2))
    for shape in [(1, 1), (1, 7), (7, 1), (2, 3)]:
        A = rng.standard_normal(shape)
        S = np.linalg.svd(A, compute_uv=False)
        np.testing.assert_allclose(Decomposer(A).eigvals(), np.sort(S**2), rtol=1e-12)


# ---------------------------------------------------------------------------------------------- top-k triplets
def _check_triplets(A, k, U, S, Vh, name=""):
    Ur, Sr, Vhr = _ref(A)
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
    # subspaces: the span of the resolved top values is the same wherever the spectrum has a gap after them
    resolved = int(np.sum(Sr[:k] > 10 * fl))
    if 0 < resolved < n and Sr[resolved - 1] - Sr[resolved] > 1e-6 * Sr[0]:
        ang = scipy.linalg.subspace_angles(U[:, :resolved], Ur[:, :resolved])
        assert np.max(ang) < 1e-8, (name, float(np.max(ang)))


@pytest.mark.parametrize("shape", SHAPES)
def test_top_svd_matches_full_svd_on_every_family(rng, shape):
    n = min(shape)
    for name, A in _matrices(rng, *shape):
        for k in (1, 3, max(1, n // 10)):
            U, S, Vh, full = Decomposer(A).top_svd(k)
            assert not full and S.shape == (k,)
            _check_triplets(A, k, U, S, Vh, name)


def test_top_svd_routes(rng):
    dense = Decomposer(rng.standard_normal((300, 200)))
    dense.top_svd(10)
    assert dense.routes["svd"] == "gram"
    exact = Decomposer(_spectrum_matrix(rng, 300, 200, np.linspace(3, 1, 8)))  # rank 8 < k = 10
    U, S, Vh, _ = exact.top_svd(10)
    assert exact.routes["svd"] == "deflate:qr(8)+zero"  # no reduction, no SVD
    assert np.all(S[8:] < rank_floor(S[0], (300, 200)))
    _check_triplets(exact.matrix, 10, U, S, Vh)
    # rank 8 plus float32 rounding, asked for k = 10: σ_9, σ_10 and their vectors are rounding noise
    coarse = Decomposer(_sgd_update(rng, 300, 200, rank=8, lr=1e-4))  # noise ~3e-3 σ_1: above the QR threshold
    U, S, Vh, _ = coarse.top_svd(10)
    assert coarse.routes["svd"] == "deflate:gram(8)+gram(2)"
    _check_triplets(coarse.matrix, 10, U, S, Vh)
    for lr in (1e-2, 1.0):  # noise ~3e-5 σ_1 and ~3e-7 σ_1
        # strict (the default): the noise triplets are reproducible to 1e-10 only by the very same SVD (their
        # values sit below ~1e-5·σ₁, their vectors' gaps below what eps·σ₁ resolves), so it runs; not strict:
        # QR for the 8, Gram on the deflated rest for 2, certified to the SVD's own accuracy
        A = _sgd_update(rng, 300, 200, rank=8, lr=lr)
        strict, loose = Decomposer(A), Decomposer(A, strict=False)
        Us, Ss, Vhs, _ = strict.top_svd(10)
        Ul, Sl, Vhl, _ = loose.top_svd(10)
        assert strict.routes["svd"] == "svd (fallback)" and loose.routes["svd"] == "deflate:qr(8)+gram(2)"
        np.testing.assert_allclose(Ss, np.linalg.svd(A, compute_uv=False)[:10], rtol=1e-12)
        _check_triplets(A, 10, Ul, Sl, Vhl)
    # σ_10 = 1e-8 σ_1 (and no rank gap): the same, for an ill-conditioned top-10
    s = np.concatenate([np.geomspace(1.0, 1e-8, 10), 5e-9 * rng.uniform(0, 1, 190)])
    A = _spectrum_matrix(rng, 300, 400, s)
    hard = Decomposer(A)
    U, S, Vh, _ = hard.top_svd(10)
    assert hard.routes["svd"] == "svd (fallback)"
    np.testing.assert_allclose(S, np.linalg.svd(A, compute_uv=False)[:10], rtol=1e-10)
    loose = Decomposer(A, strict=False)
    U, S, Vh, _ = loose.top_svd(10)
    assert loose.routes["svd"].startswith("deflate:")
    _check_triplets(A, 10, U, S, Vh)


def test_top_svd_planned_with_evals_shares_the_reduction(rng, monkeypatch):
    import spectra.functional.decompose as dec

    calls = []
    real = dec.gram_reduce
    monkeypatch.setattr(dec, "gram_reduce", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    A = rng.standard_normal((200, 200))
    d = Decomposer(A)
    d.plan(evals=True, k=10)
    d.compute()
    assert len(calls) == 1 and d.routes == {"evals": d.routes["evals"], "svd": "gram"}
    U, S, Vh, _ = d.top_svd(5)  # served from the cached k = 10
    assert len(calls) == 1 and S.shape == (5,)
    _check_triplets(A, 5, U, S, Vh)
    full = Decomposer(A)
    full.plan(evals=True, k=None)
    full.compute()
    assert full.routes == {"svd": "svd", "evals": "svd (shared)"}
    np.testing.assert_allclose(full.eigvals(), d.eigvals(), rtol=1e-10)


def test_clustered_values_compare_subspaces(rng):
    s = np.concatenate([[5.0, 5.0, 5.0], np.linspace(2, 1, 97)])  # a triple top singular value
    A = _spectrum_matrix(rng, 200, 100, s)
    U, S, Vh, _ = Decomposer(A).top_svd(3)
    Ur, Sr, _ = _ref(A)
    np.testing.assert_allclose(S, Sr[:3], rtol=1e-12)
    assert np.max(scipy.linalg.subspace_angles(U, Ur[:, :3])) < 1e-10


def test_torch_float32_inputs_and_signs(rng):
    W = torch.tensor(rng.standard_normal((150, 100)), dtype=torch.float32)
    ref = W.double().numpy()
    U, S, Vh, _ = Decomposer(W).top_svd(4)
    _check_triplets(ref, 4, U, S, Vh)
    assert np.all(U[np.argmax(np.abs(U), axis=0), np.arange(4)] > 0)
    np.testing.assert_array_equal(U, Decomposer(W).top_svd(4)[0])  # deterministic
    with pytest.raises(ValueError, match="k must be a positive integer"):
        Decomposer(W).top_svd(0)
    with pytest.raises(ValueError, match="2 non-finite"):
        Decomposer(np.array([[np.nan, 1.0], [np.inf, 2.0]]))


@settings(max_examples=25, deadline=None)
@given(
    N=st.integers(2, 70),
    M=st.integers(2, 70),
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
        A = _spectrum_matrix(rng, N, M, rng.uniform(0.1, 3.0, rng.integers(1, n + 1)))
    elif kind == "decay":
        A = _spectrum_matrix(rng, N, M, np.geomspace(1.0, 10.0 ** -rng.uniform(1, 9), n))
    elif kind == "f32":
        A = rng.standard_normal((N, M)).astype(np.float32).astype(np.float64)
    else:
        A = _sgd_update(rng, N, M, rank=int(rng.integers(1, n + 1)), lr=10.0 ** -rng.uniform(0, 4))
    if not np.any(A):
        return
    _, S, _ = _ref(A)
    lam = Decomposer(A, strict=strict).eigvals()
    assert np.all(np.abs(lam - np.sort(S**2)) <= _eval_tol(S, A.shape)[::-1])
    k = max(1, n // 10)
    U, Sk, Vh, _ = Decomposer(A, strict=strict).top_svd(k)
    _check_triplets(A, k, U, Sk, Vh, kind)


# ---------------------------------------------------------------------------------------------- low rank
def test_lowrank_columns_finds_rank_and_refuses_dense(rng):
    A = _spectrum_matrix(rng, 200, 150, np.array([4.0, 2.0, 1.0, 0.5]))
    cols = lowrank_columns(A.T @ A, 20)
    assert cols is not None and len(cols) == 4
    U, S, V, R = qr_stage(A, cols)
    np.testing.assert_allclose(S, np.linalg.svd(A, compute_uv=False)[:4], rtol=1e-12)
    np.testing.assert_allclose(A @ V, U * S, atol=1e-13)
    np.testing.assert_allclose(R, A - (U * S) @ V.T, atol=1e-15)
    assert np.linalg.norm(R) < 1e-13
    B = rng.standard_normal((200, 150))
    assert lowrank_columns(B.T @ B, 20) is None
    assert lowrank_columns(np.zeros((5, 5)), 3) is None


@pytest.mark.parametrize("rank", [1, 5, 13, 25, 26])
@pytest.mark.parametrize("spectrum", ["flat", "decaying"])
def test_lowrank_probe_exit_keeps_every_rank_up_to_the_probed_one(rng, rank, spectrum):
    # the early exit relies on a pivot removing ≥ trace/rank of its Schur complement: a flat spectrum is the
    # worst case (each pivot removes exactly 1/rank), plus float32-sized noise around the low rank
    s = np.ones(rank) if spectrum == "flat" else np.geomspace(1.0, 1e-3, rank)
    A = _spectrum_matrix(rng, 300, 200, s) + 1e-9 * rng.standard_normal((300, 200))
    cols = lowrank_columns(A.T @ A, 26)
    assert cols is not None and len(cols) == rank


def test_lowrank_probe_leaves_a_full_rank_matrix_after_a_few_pivots(rng, monkeypatch):
    B = rng.standard_normal((750, 500))
    G = B.T @ B
    seen = []
    real_argmax = np.argmax
    monkeypatch.setattr(np, "argmax", lambda a, *args, **kw: seen.append(1) or real_argmax(a, *args, **kw))
    assert lowrank_columns(G, 26) is None
    assert len(seen) <= 6  # five pivots, not 26


def test_svd_from_factors(rng):
    L = rng.standard_normal((120, 6))
    R = torch.tensor(rng.standard_normal((90, 6)))
    U, S, Vh = svd_from_factors(L, R)
    A = L @ R.numpy().T
    Ur, Sr, _ = np.linalg.svd(A, full_matrices=False)
    np.testing.assert_allclose(S, Sr[:6], rtol=1e-12)
    np.testing.assert_allclose((U * S) @ Vh, A, atol=1e-12 * Sr[0])
    np.testing.assert_allclose(np.abs(np.sum(U * Ur[:, :6], axis=0)), 1.0, atol=1e-10)
    assert svd_from_factors(L, R, k=2)[1].shape == (2,)
    with pytest.raises(ValueError, match="same number of columns"):
        svd_from_factors(L, R[:, :3])
