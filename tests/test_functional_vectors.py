"""Eigenvector localization against WeightWatcher 0.7.7's RMT_Util functions and eigh brute force."""

from __future__ import annotations

import contextlib
import io
import logging

import numpy as np
import pytest

from spectra.functional.vectors import localization_ratio, participation_ratio, vector_localization


def _ww_funcs():
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            from weightwatcher.RMT_Util import localization_ratio as lr, participation_ratio as pr
    finally:
        logging.disable(logging.NOTSET)
    return lr, pr


@pytest.mark.parametrize("shape", [(120, 60), (50, 90)])
def test_matches_weightwatcher_on_gram_eigenvectors(shape):
    ww_lr, ww_pr = _ww_funcs()
    rng = np.random.default_rng(0)
    W = rng.standard_normal(shape) @ np.diag(np.linspace(1, 3, shape[1]))  # distinct singular values
    U, S, Vh = np.linalg.svd(W, full_matrices=False)
    k = 8
    ours = vector_localization(U[:, :k], Vh[:k], side="small")
    # WeightWatcher (vectors=True): eigenvectors of the smaller Gram matrix, largest eigenvalues first
    X = W @ W.T if shape[0] <= shape[1] else W.T @ W
    evals, V = np.linalg.eigh(X)
    V = V[:, ::-1][:, :k]
    np.testing.assert_allclose(ours["participation_ratio"], [ww_pr(V[:, i]) for i in range(k)], rtol=1e-8)
    np.testing.assert_allclose(ours["localization_ratio"], [ww_lr(V[:, i]) for i in range(k)], rtol=1e-8)
    left = vector_localization(U[:, :k], Vh[:k], side="left")["participation_ratio"]
    np.testing.assert_allclose(left, [ww_pr(U[:, i]) for i in range(k)], rtol=1e-12)


def test_limits_and_sign_invariance():
    n = 256
    e = np.zeros(n)
    e[7] = 1.0
    flat = np.ones(n) / np.sqrt(n)
    assert participation_ratio(e) == pytest.approx(1.0) and localization_ratio(e) == pytest.approx(1.0)
    assert participation_ratio(flat) == pytest.approx(n ** 0.25) and localization_ratio(flat) == pytest.approx(n)
    v = np.random.default_rng(1).standard_normal(n)
    v /= np.linalg.norm(v)
    assert participation_ratio(-v) == participation_ratio(v) and localization_ratio(-v) == localization_ratio(v)
    assert participation_ratio(v) ** 4 == pytest.approx(n / 3, rel=0.2)  # delocalised reference
    assert np.isnan(participation_ratio(np.zeros(5))) and np.isnan(localization_ratio(np.zeros(5)))
    with pytest.raises(ValueError):
        vector_localization(np.eye(3), np.eye(3), side="top")


def test_localized_directions_score_low():
    rng = np.random.default_rng(2)
    W = rng.standard_normal((200, 100)) * 0.1
    W[3, :] += 5.0 * rng.standard_normal(100)  # one row carries the top direction: u_0 ≈ e_3
    U, S, Vh = np.linalg.svd(W, full_matrices=False)
    left = vector_localization(U[:, :3], Vh[:3], side="left")
    assert left["participation_ratio"][0] < 1.2 and left["localization_ratio"][0] < 2.0
    assert left["participation_ratio"][1] > 2.5  # the rest stay delocalised
