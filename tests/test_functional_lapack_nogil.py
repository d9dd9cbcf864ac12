"""The GIL-free LAPACK calls (spectra.functional._lapack) give the f2py wrappers' results bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import lapack

from spectra.functional import _lapack
from spectra.functional.tridiag import gram_reduce, reduction_eigh_range, reduction_eigvalsh


def _gram(shape, seed):
    A = np.random.default_rng(seed).standard_normal(shape) * np.geomspace(1, 1e-3, shape[1])
    return A, A.T @ A


def test_the_capsules_are_found():
    assert _lapack.nogil_available()  # else every call silently holds the GIL again


@pytest.mark.parametrize("shape", [(9, 2), (40, 17), (300, 130)])
def test_kernels_match_scipy_bit_for_bit(shape):
    _, G = _gram(shape, 3)
    n = G.shape[0]
    lwork = max(1, int(lapack.dsytrd_lwork(n, lower=1)[0]))
    c0, d0, e0, t0, i0 = lapack.dsytrd(G.copy().T, lower=1, lwork=lwork)
    c1, d1, e1, t1, i1 = _lapack.dsytrd(G.copy().T, lwork)
    assert i0 == i1 == 0
    for a, b in ((c0, c1), (d0, d1), (e0, e1), (t0, t1)):
        assert np.array_equal(a, b)
    w0, _ = lapack.dsterf(d0, e0)
    w1, _ = _lapack.dsterf(d1, e1)
    assert np.array_equal(w0, w1) and np.array_equal(d1, d0)  # inputs kept
    if n < 2:
        return
    m, w, iblock, isplit, _ = lapack.dstebz(d0, e0, 2, 0.0, 0.0, max(1, n - 2), n, 0.0, b"B")
    got = _lapack.dstebz_index(d0, e0, max(1, n - 2), n)
    assert got[0] == m and got[4] == 0
    for a, b in zip((w, iblock, isplit), got[1:4]):
        assert np.array_equal(a, b)
    e_n = np.append(e0, 0.0)  # dstemr's e has n entries (the last is workspace)
    m2, w2, Z2, i2 = lapack.dstemr(d0.copy(), e_n, 2, 0.0, 0.0, max(1, n - 2), n)
    got2 = _lapack.dstemr_index(d0, e0, max(1, n - 2), n)
    assert i2 == got2[2] == 0 and np.array_equal(w2[:m2], got2[0]) and np.array_equal(Z2[:, :m2], got2[1])
    Z0, _ = lapack.dstein(d0, e0, w[:m], iblock, isplit)
    Z1, info = _lapack.dstein(d0, e0, w[:m], iblock, isplit)
    assert info == 0 and np.array_equal(Z0, Z1)
    Z0, Z1 = np.asfortranarray(Z0), np.asfortranarray(Z1.copy())
    a = c0[1:, : n - 1]
    lw = Z0.shape[1]  # few vectors: the minimal workspace (dormqr's unblocked path), as dormqr_left chooses
    Zq, _, _ = lapack.dormqr(b"L", b"N", a, t0, Z0[1:, :], lw)
    assert _lapack.dormqr_left(c0, t0, Z1) == 0
    assert np.array_equal(Zq, Z1[1:, :]) and np.array_equal(Z0[0], Z1[0])


@pytest.mark.parametrize("m", [1, 10, _lapack.UNBLOCKED_BELOW - 1, _lapack.UNBLOCKED_BELOW, 60])
def test_back_transform_is_q_times_z_blocked_or_not(m):
    """Few vectors take LAPACK's unblocked path, many the blocked one (the optimal workspace); each is bit for bit
    the f2py wrapper with the same workspace, and both are Q·Z with Q formed explicitly (dorgqr), to rounding."""
    _, G = _gram((300, 130), 4)
    n = G.shape[0]
    lwork = max(1, int(lapack.dsytrd_lwork(n, lower=1)[0]))
    c, _, _, tau, _ = lapack.dsytrd(G.copy().T, lower=1, lwork=lwork)
    Z = np.asfortranarray(np.random.default_rng(m).standard_normal((n, m)))
    got = Z.copy(order="F")
    assert _lapack.dormqr_left(c, tau, got) == 0
    a = c[1:, : n - 1]
    lw = m if m < _lapack.UNBLOCKED_BELOW else int(lapack.dormqr(b"L", b"N", a, tau, Z[1:, :], -1)[1][0])
    ref, _, info = lapack.dormqr(b"L", b"N", a, tau, Z[1:, :].copy(order="F"), lw)
    assert info == 0 and np.array_equal(ref, got[1:, :]) and np.array_equal(got[0], Z[0])
    Q = lapack.dorgqr(a, tau)[0]  # the n-1 x n-1 orthogonal factor the reflectors hold
    np.testing.assert_allclose(got[1:, :], Q @ Z[1:, :], rtol=0, atol=1e-13 * np.abs(Z).max())


def test_back_transform_blocked_on_request():
    """``blocked=True`` takes the optimal workspace whatever the number of vectors (what the benchmark compares)."""
    _, G = _gram((300, 130), 4)
    n = G.shape[0]
    lwork = max(1, int(lapack.dsytrd_lwork(n, lower=1)[0]))
    c, _, _, tau, _ = lapack.dsytrd(G.copy().T, lower=1, lwork=lwork)
    Z = np.asfortranarray(np.random.default_rng(1).standard_normal((n, 10)))
    got = Z.copy(order="F")
    assert _lapack.dormqr_left(c, tau, got, blocked=True) == 0
    a = c[1:, : n - 1]
    lw = int(lapack.dormqr(b"L", b"N", a, tau, Z[1:, :], -1)[1][0])
    ref, _, _ = lapack.dormqr(b"L", b"N", a, tau, Z[1:, :].copy(order="F"), lw)
    assert np.array_equal(ref, got[1:, :])


def test_fallback_without_capsules_gives_the_same_numbers(monkeypatch):
    A, _ = _gram((120, 60), 5)
    red = gram_reduce(A)
    lam, (w, Z) = reduction_eigvalsh(red), reduction_eigh_range(red, 50, 59)
    monkeypatch.setattr(_lapack, "_routine", lambda name: None)
    red2 = gram_reduce(A)
    assert not _lapack.nogil_available()
    assert np.array_equal(reduction_eigvalsh(red2), lam)
    w2, Z2 = reduction_eigh_range(red2, 50, 59)
    assert np.array_equal(w2, w) and np.array_equal(Z2, Z)


def test_eigenpairs_fall_back_to_bisection_when_mrrr_fails(monkeypatch):
    """reduction_eigh_range takes dstemr's pairs; when dstemr reports a failure, bisection + inverse iteration give
    the same pairs to rounding."""
    A, G = _gram((300, 130), 6)
    red = gram_reduce(A)
    w, Z = reduction_eigh_range(red, 120, 129)
    calls = []

    def failing(d, e, il, iu):
        calls.append((il, iu))
        return np.empty(0), np.empty((d.size, 0)), 3

    monkeypatch.setattr(_lapack, "dstemr_index", failing)
    w2, Z2 = reduction_eigh_range(red, 120, 129)
    assert calls == [(121, 130)]
    np.testing.assert_allclose(w2, w, rtol=1e-13)
    np.testing.assert_allclose(np.abs(np.sum(Z * Z2, axis=0)), 1.0, atol=1e-12)
    np.testing.assert_allclose(G @ Z2, Z2 * w2, atol=1e-12 * w2[-1])
