"""spectra.functional.alignment against brute force (full numpy SVD, explicit formulas, scipy)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from spectra.functional.alignment import (
    GRAM_RCOND,
    SVD_FULL_FRACTION,
    frobenius_cosine,
    overlap_matrix,
    principal_angles,
    subspace_fraction,
    top_svd,
)


def _spectrum_matrix(rng, N, M, s):
    """N × M matrix with prescribed singular values s (len ≤ min(N, M)) and random singular vectors."""
    U, _ = np.linalg.qr(rng.standard_normal((N, len(s))))
    V, _ = np.linalg.qr(rng.standard_normal((M, len(s))))
    return (U * s) @ V.T, U, V


def _sign_fixed(U, Vh):
    idx = np.argmax(np.abs(U), axis=0)
    sg = np.sign(U[idx, np.arange(U.shape[1])])
    return U * sg, Vh * sg[:, None]


@pytest.mark.parametrize("shape", [(120, 200), (200, 120), (150, 150)])
@pytest.mark.parametrize("k", [1, 5, 12])
def test_top_svd_truncated_matches_full_numpy(shape, k):
    rng = np.random.default_rng(sum(shape) + k)
    N, M = shape
    n = min(N, M)
    s = np.sort(rng.uniform(0.01, 1.0, n))[::-1] * 1.0
    s[:15] = 10.0 * (0.9 ** np.arange(15))  # well-separated top of the spectrum
    A, _, _ = _spectrum_matrix(rng, N, M, s)
    U, S, Vh, full = top_svd(A, k)
    assert not full and U.shape == (N, k) and S.shape == (k,) and Vh.shape == (k, M)
    Ur, Sr, Vhr = np.linalg.svd(A, full_matrices=False)
    Ur, Vhr = _sign_fixed(Ur[:, :k], Vhr[:k])
    np.testing.assert_allclose(S, Sr[:k], rtol=1e-10, atol=0)
    np.testing.assert_allclose(U, Ur, atol=1e-10)
    np.testing.assert_allclose(Vh, Vhr, atol=1e-10)
    np.testing.assert_allclose(U.T @ U, np.eye(k), atol=1e-12)
    np.testing.assert_allclose(Vh @ Vh.T, np.eye(k), atol=1e-12)
    np.testing.assert_allclose(A @ Vh.T, U * S, atol=1e-10)


def test_top_svd_full_when_k_large_or_none():
    rng = np.random.default_rng(1)
    A = rng.standard_normal((40, 30))
    for k in (None, 30, 50, int(SVD_FULL_FRACTION * 30) + 1):
        U, S, Vh, full = top_svd(A, k)
        kk = 30 if k is None else min(k, 30)
        assert S.shape == (kk,)
        assert full == (kk == 30)
        np.testing.assert_allclose(S, np.linalg.svd(A, compute_uv=False)[:kk], rtol=1e-12)
        Ur, Sr, Vhr = np.linalg.svd(A, full_matrices=False)
        np.testing.assert_allclose((U * S) @ Vh, (Ur[:, :kk] * Sr[:kk]) @ Vhr[:kk], atol=1e-12)


def test_top_svd_sign_convention_and_determinism():
    rng = np.random.default_rng(2)
    A = rng.standard_normal((300, 200))
    U, S, Vh, _ = top_svd(A, 5)
    U2, S2, Vh2, _ = top_svd(-A, 5)  # same vectors up to sign of one side
    i = np.argmax(np.abs(U), axis=0)
    assert np.all(U[i, np.arange(5)] > 0)
    np.testing.assert_array_equal(U, top_svd(A, 5)[0])
    np.testing.assert_allclose(U2, U, atol=1e-12)
    np.testing.assert_allclose(Vh2, -Vh, atol=1e-12)


def test_top_svd_rank_deficient_falls_back_to_full():
    rng = np.random.default_rng(3)
    A, Ut, Vt = _spectrum_matrix(rng, 300, 400, np.array([5.0, 2.0]))  # rank 2, k = 10 > rank
    U, S, Vh, full = top_svd(A, 10)
    assert not full and S.shape == (10,)
    np.testing.assert_allclose(S[:2], [5.0, 2.0], rtol=1e-12)
    assert np.all(S[2:] < 1e-13)  # the Gram route would leave ~sqrt(eps)·σ₁ here
    np.testing.assert_allclose(U.T @ U, np.eye(10), atol=1e-12)
    # a zero matrix: zeros and orthonormal vectors, no crash
    U, S, Vh, _ = top_svd(np.zeros((100, 120)), 3)
    np.testing.assert_array_equal(S, 0.0)
    np.testing.assert_allclose(U.T @ U, np.eye(3), atol=1e-12)


def test_top_svd_ill_conditioned_top_k_keeps_relative_accuracy():
    # top-10 singular values spanning 8 decades: the Gram route alone loses σ_10 entirely (error ~0.7 relative)
    rng = np.random.default_rng(9)
    s = np.concatenate([np.geomspace(1.0, 1e-8, 10), 5e-9 * rng.uniform(0, 1, 190)])
    A, _, _ = _spectrum_matrix(rng, 300, 400, s)
    assert 1e-16 < GRAM_RCOND  # the fallback is active
    U, S, Vh, _ = top_svd(A, 10)
    Sr = np.linalg.svd(A, compute_uv=False)[:10]
    np.testing.assert_allclose(S, Sr, rtol=1e-10)
    np.testing.assert_allclose(A @ Vh.T, U * S, atol=1e-14)


def test_top_svd_accepts_torch_and_validates():
    rng = np.random.default_rng(4)
    A = rng.standard_normal((200, 150))
    U, S, _, _ = top_svd(torch.tensor(A, dtype=torch.float32), 3)
    np.testing.assert_allclose(S, np.linalg.svd(A.astype(np.float32).astype(np.float64), compute_uv=False)[:3],
                               rtol=1e-10)
    assert S.dtype == np.float64
    with pytest.raises(ValueError, match="k must be a positive integer"):
        top_svd(A, 0)
    with pytest.raises(ValueError, match="non-finite"):
        top_svd(np.full((3, 3), np.nan), 1)
    with pytest.raises(ValueError, match="2-D"):
        top_svd(np.ones(5), 1)


def test_overlap_matrix_bruteforce_and_hand_case():
    rng = np.random.default_rng(5)
    Ua, _ = np.linalg.qr(rng.standard_normal((50, 4)))
    Ub, _ = np.linalg.qr(rng.standard_normal((50, 3)))
    O = overlap_matrix(Ua, Ub)
    ref = np.array([[float(np.dot(Ua[:, i], Ub[:, j])) ** 2 for j in range(3)] for i in range(4)])
    np.testing.assert_allclose(O, ref, rtol=1e-13)
    np.testing.assert_allclose(overlap_matrix(Ua, Ua), np.eye(4), atol=1e-13)
    np.testing.assert_allclose(overlap_matrix(Ua, -Ua[:, ::-1]), np.eye(4)[:, ::-1], atol=1e-13)
    with pytest.raises(ValueError, match="same number of rows"):
        overlap_matrix(Ua, Ub[:10])


def test_subspace_fraction_bruteforce():
    rng = np.random.default_rng(6)
    W = rng.standard_normal((60, 80))
    dW = rng.standard_normal((60, 80))
    U, S, Vh = np.linalg.svd(W, full_matrices=False)
    k = 5
    Uk, Vk = U[:, :k], Vh[:k].T
    ref = np.linalg.norm(Uk @ Uk.T @ dW @ Vk @ Vk.T) ** 2 / np.linalg.norm(dW) ** 2
    assert subspace_fraction(dW, Uk, Vk) == pytest.approx(ref, rel=1e-12)
    # an update s·u1 v1ᵀ of W lies entirely in W's top-k subspaces; one orthogonal to both lies outside
    assert subspace_fraction(3.0 * np.outer(U[:, 0], Vh[0]), Uk, Vk) == pytest.approx(1.0, rel=1e-12)
    assert subspace_fraction(np.outer(U[:, 9], Vh[9]), Uk, Vk) == pytest.approx(0.0, abs=1e-14)
    assert np.isnan(subspace_fraction(np.zeros_like(dW), Uk, Vk))
    with pytest.raises(ValueError, match="shapes do not match"):
        subspace_fraction(dW.T, Uk, Vk)


def test_subspace_fractions_of_several_bases_equal_one_at_a_time():
    from spectra.functional.alignment import sq_norm, subspace_fractions_of

    rng = np.random.default_rng(7)
    dW = rng.standard_normal((60, 80))
    bases = []
    for k in (5, 3):
        U, _, Vh = np.linalg.svd(rng.standard_normal((60, 80)), full_matrices=False)
        bases.append((U[:, :k], Vh[:k].T))
    got = subspace_fractions_of(dW, bases, sq_norm(dW))
    np.testing.assert_allclose(got, [subspace_fraction(dW, U, V) for U, V in bases], rtol=1e-13)
    assert subspace_fractions_of(dW, bases[:1], sq_norm(dW)) == [subspace_fraction(dW, *bases[0])]
    assert all(np.isnan(v) for v in subspace_fractions_of(np.zeros_like(dW), bases, 0.0))


@pytest.mark.parametrize("ka,kb", [(5, 5), (6, 3), (2, 7)])
def test_principal_angles_vs_scipy(ka, kb):
    rng = np.random.default_rng(10 * ka + kb)
    A, _ = np.linalg.qr(rng.standard_normal((40, ka)))
    B, _ = np.linalg.qr(rng.standard_normal((40, kb)))
    theta = principal_angles(A, B)
    np.testing.assert_allclose(theta, np.sort(scipy.linalg.subspace_angles(A, B)), atol=1e-12)
    assert np.all(np.diff(theta) >= 0)


def test_principal_angles_small_angles_accurate():
    rng = np.random.default_rng(7)
    Q, _ = np.linalg.qr(rng.standard_normal((30, 6)))
    a, b = Q[:, :3], Q[:, 3:]
    eps = np.array([1e-9, 1e-6, 0.3])
    B = a * np.cos(eps) + b * np.sin(eps)  # rotate each column by a known angle
    np.testing.assert_allclose(principal_angles(a, B), eps, rtol=1e-6)
    np.testing.assert_allclose(principal_angles(a, a), 0.0, atol=1e-14)


def test_frobenius_cosine():
    rng = np.random.default_rng(8)
    A = rng.standard_normal((20, 30))
    B = rng.standard_normal((20, 30))
    ref = np.sum(A * B) / np.sqrt(np.sum(A * A) * np.sum(B * B))
    assert frobenius_cosine(A, B) == pytest.approx(ref, rel=1e-12)
    assert frobenius_cosine(A, -2.5 * A) == pytest.approx(-1.0, abs=1e-15)
    assert frobenius_cosine(torch.tensor(A), torch.tensor(A)) == pytest.approx(1.0, abs=1e-15)
    assert np.isnan(frobenius_cosine(A, np.zeros_like(A)))
    with pytest.raises(ValueError, match="same shape"):
        frobenius_cosine(A, B.T)
