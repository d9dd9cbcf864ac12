"""The alignment analyzer on hand-built snapshots, against explicit numpy formulas."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from spectra.analyzers.alignment import AlignmentAnalyzer, AlignmentPlugin, decode_pair_index, encode_pair_index
from spectra.analyzers.base import Measurement
from spectra.snapshot import LayerState


def _state(weight=None, previous=None, update=None, grad=None, step=1):
    tensors = {"weight": weight, "previous": previous, "update": update, "grad": grad}
    return LayerState(layer="fc", view="W", step=step, tensors={k: v for k, v in tensors.items() if v is not None})


def _table(rows):
    """(matrix, metric) → {index: (value, status, message)}."""
    out: dict = {}
    for r in rows:
        assert isinstance(r, Measurement)
        key = (r.matrix, r.metric)
        assert r.index not in out.setdefault(key, {}), f"duplicate row {key} {r.index}"
        out[key][r.index] = (r.value, r.status, r.message)
    return out


def _vals(tab, matrix, metric):
    d = tab[(matrix, metric)]
    return np.array([d[i][0] for i in sorted(d)]) if None not in d else d[None][0]


def _svd(A):
    U, S, Vh = np.linalg.svd(A, full_matrices=False)
    return U, S, Vh


@pytest.fixture
def mats():
    rng = np.random.default_rng(0)
    N, M = 120, 90
    W0 = rng.standard_normal((N, M))
    U, S, Vh = _svd(W0)
    # an update mostly along W0's top direction plus noise; a gradient roughly opposite to it
    dW = 4.0 * np.outer(U[:, 0], Vh[0]) + 0.3 * rng.standard_normal((N, M))
    G = -dW / 0.1 + 2.0 * rng.standard_normal((N, M))
    return W0, W0 + dW, dW, G


def test_metrics_match_bruteforce(mats):
    W0, W1, dW, G = mats
    k = 4
    rows = AlignmentAnalyzer(k=k, overlaps="full").analyze(_state(W1, W0, dW, G))
    tab = _table(rows)
    Ub, Sb, Vhb = _svd(W0)
    Ua, Sa, Vha = _svd(W1)
    for matrix, X in (("update", dW), ("grad", G)):
        Ux, Sx, Vhx = _svd(X)
        assert _vals(tab, matrix, "k") == k
        np.testing.assert_allclose(_vals(tab, matrix, "sv"), Sx[:k], rtol=1e-10)
        assert _vals(tab, matrix, "stable_rank") == pytest.approx(np.sum(X**2) / Sx[0] ** 2, rel=1e-10)
        assert _vals(tab, matrix, "relative_norm") == pytest.approx(np.linalg.norm(X) / np.linalg.norm(W0), rel=1e-12)
        whens = (("before", Ub, Vhb), ("after", Ua, Vha)) if matrix == "update" else (("before", Ub, Vhb),)
        for when, Uw, Vhw in whens:
            for side, A, B in (("left", Uw[:, :k], Ux[:, :k]), ("right", Vhw[:k].T, Vhx[:k].T)):
                ref = np.array([[np.dot(A[:, i], B[:, j]) ** 2 for j in range(k)] for i in range(k)])
                block = _vals(tab, matrix, f"overlap_{side}_{when}")
                got = np.zeros((k, k))
                for idx, v in enumerate(block):
                    got[decode_pair_index(idx, k)] = v
                np.testing.assert_allclose(got, ref, atol=1e-10)
                assert _vals(tab, matrix, f"overlap_top1_{side}_{when}") == pytest.approx(ref[0, 0], abs=1e-10)
                np.testing.assert_allclose(_vals(tab, matrix, f"overlap_max_{side}_{when}"), ref.max(0), atol=1e-10)
                np.testing.assert_array_equal(_vals(tab, matrix, f"overlap_argmax_{side}_{when}"), ref.argmax(0))
            P = Uw[:, :k].T @ X @ Vhw[:k].T
            frac = np.sum(P**2) / np.sum(X**2)
            assert _vals(tab, matrix, f"subspace_fraction_{when}") == pytest.approx(frac, rel=1e-10)
    assert ("grad", "subspace_fraction_after") not in tab and ("grad", "overlap_top1_left_after") not in tab
    cos = np.sum(dW * G) / (np.linalg.norm(dW) * np.linalg.norm(G))
    assert _vals(tab, "update", "cos_update_grad") == pytest.approx(cos, rel=1e-12)
    assert cos < -0.5  # the test data is built so: checks the sign is kept
    for side, A, B in (("left", Ub[:, :k], Ua[:, :k]), ("right", Vhb[:k].T, Vha[:k].T)):
        ref = np.sort(scipy.linalg.subspace_angles(A, B))
        np.testing.assert_allclose(_vals(tab, "update", f"principal_angle_{side}"), ref, atol=1e-10)
        assert _vals(tab, "update", f"principal_angle_max_{side}") == pytest.approx(ref[-1], abs=1e-10)
    assert all(r.status == "ok" for r in rows)


def test_rank_one_update_along_top_direction():
    rng = np.random.default_rng(1)
    W0 = rng.standard_normal((80, 60))
    U, S, Vh = _svd(W0)
    dW = 2.5 * np.outer(U[:, 0], Vh[0])
    tab = _table(AlignmentAnalyzer(k=3, grad=False, overlaps="full").analyze(_state(W0 + dW, W0, dW)))
    for side in ("left", "right"):
        for when in ("before", "after"):
            assert _vals(tab, "update", f"overlap_top1_{side}_{when}") == pytest.approx(1.0, abs=1e-10)
    assert _vals(tab, "update", "subspace_fraction_before") == pytest.approx(1.0, abs=1e-12)
    assert _vals(tab, "update", "subspace_fraction_after") == pytest.approx(1.0, abs=1e-12)
    assert _vals(tab, "update", "stable_rank") == pytest.approx(1.0, abs=1e-12)
    # W's singular vectors do not move: a rank-1 update along (u1, v1) only changes σ1
    np.testing.assert_allclose(_vals(tab, "update", "principal_angle_left"), 0.0, atol=1e-7)
    assert not any(m == "grad" for m, _ in tab)
    assert ("update", "cos_update_grad") not in tab


def test_overlap_matches_later_direction():
    # an update along W's 3rd singular pair: its top vector's best match among W's top 4 is index 2
    rng = np.random.default_rng(2)
    W0 = rng.standard_normal((70, 50))
    U, S, Vh = _svd(W0)
    dW = 1e-3 * np.outer(U[:, 2], Vh[2])
    tab = _table(AlignmentAnalyzer(k=4, grad=False, overlaps=False).analyze(_state(W0 + dW, W0, dW)))
    assert _vals(tab, "update", "overlap_argmax_left_before")[0] == 2
    assert _vals(tab, "update", "overlap_max_left_before")[0] == pytest.approx(1.0, abs=1e-10)
    assert _vals(tab, "update", "overlap_top1_left_before") == pytest.approx(0.0, abs=1e-10)
    assert ("update", "overlap_left_before") not in tab  # overlaps=False drops the blocks


def test_step0_and_missing_grad():
    rng = np.random.default_rng(3)
    W = rng.standard_normal((30, 20))
    assert list(AlignmentAnalyzer().analyze(_state(weight=W, step=0))) == []
    rows = AlignmentAnalyzer(k=2, overlaps="full").analyze(_state(W, W - 0.1, np.full_like(W, 0.1), None))
    assert rows and all(r.matrix == "update" for r in rows)
    # grad=False ignores a present gradient
    rows = AlignmentAnalyzer(k=2, grad=False, overlaps="full").analyze(_state(W, W - 0.1, np.full_like(W, 0.1), W))
    assert all(r.matrix == "update" for r in rows) and not any(r.metric == "cos_update_grad" for r in rows)


def test_previous_or_update_derived_when_missing(mats):
    W0, W1, dW, G = mats
    ref = _table(AlignmentAnalyzer(k=3, overlaps="full").analyze(_state(W1, W0, dW, G)))
    for st in (_state(W1, None, dW, G), _state(W1, W0, None, G)):
        got = _table(AlignmentAnalyzer(k=3, overlaps="full").analyze(st))
        assert got.keys() == ref.keys()
        for key in ref:
            for idx in ref[key]:
                assert got[key][idx][0] == pytest.approx(ref[key][idx][0], abs=1e-9), (key, idx)


def test_zero_update_is_skipped_not_nan_crash():
    rng = np.random.default_rng(4)
    W = rng.standard_normal((40, 30))
    G = rng.standard_normal((40, 30))
    rows = AlignmentAnalyzer(k=3, overlaps="full").analyze(_state(W, W.copy(), np.zeros_like(W), G))
    tab = _table(rows)
    assert _vals(tab, "update", "relative_norm") == 0.0
    for metric in ("stable_rank", "subspace_fraction_before", "overlap_top1_left_before", "cos_update_grad"):
        (value, status, message), = tab[("update", metric)].values()
        assert np.isnan(value) and status == "skipped" and "zero" in message
    assert ("update", "sv") not in tab
    np.testing.assert_allclose(_vals(tab, "update", "principal_angle_left"), 0.0, atol=1e-7)
    # the gradient is still analysed
    assert all(s == "ok" for _, s, _ in tab[("grad", "sv")].values())
    # a zero gradient too
    tab = _table(AlignmentAnalyzer(k=3, overlaps="full").analyze(_state(W, W.copy(), np.zeros_like(W), np.zeros_like(W))))
    (value, status, _), = tab[("grad", "stable_rank")].values()
    assert np.isnan(value) and status == "skipped"


def test_k_clamped_and_recorded():
    rng = np.random.default_rng(5)
    W0 = rng.standard_normal((12, 5))
    dW = 0.1 * rng.standard_normal((12, 5))
    an = AlignmentAnalyzer(k=50, overlaps="full")
    tab = _table(an.analyze(_state(W0 + dW, W0, dW, dW)))
    assert an.config() == {"k": 50, "grad": True, "overlaps": "full"}
    value, status, message = tab[("update", "k")][None]
    assert value == 5 and status == "ok" and "clamped" in message
    assert len(tab[("update", "sv")]) == 5 and len(tab[("update", "overlap_left_before")]) == 25
    np.testing.assert_allclose(_vals(tab, "update", "sv"), np.linalg.svd(dW, compute_uv=False), rtol=1e-10)
    # k = M: V_k spans all of R^M, so the fraction is the share of ΔW in W's column space
    U = _svd(W0)[0]
    ref = np.sum((U.T @ dW) ** 2) / np.sum(dW**2)
    assert _vals(tab, "update", "subspace_fraction_before") == pytest.approx(ref, rel=1e-10)


def test_conv_like_stack_is_flattened():
    rng = np.random.default_rng(6)
    W0 = torch.tensor(rng.standard_normal((9, 16, 8)), dtype=torch.float32)  # kh·kw slices of out × in
    dW = 0.05 * torch.tensor(rng.standard_normal((9, 16, 8)), dtype=torch.float32)
    st = _state(W0 + dW, W0, dW, None)
    tab = _table(AlignmentAnalyzer(k=3, overlaps="full").analyze(st))

    def flat(t):
        return np.transpose(t.double().numpy(), (1, 2, 0)).reshape(16, 72)

    np.testing.assert_allclose(_vals(tab, "update", "sv"), np.linalg.svd(flat(dW), compute_uv=False)[:3],
                               rtol=1e-10)
    Ub = _svd(flat(W0))[0]
    Ux = _svd(flat(dW))[0]
    assert _vals(tab, "update", "overlap_top1_left_before") == pytest.approx(np.dot(Ub[:, 0], Ux[:, 0]) ** 2, abs=1e-9)


def test_shared_decompositions_are_used(mats):
    W0, W1, dW, G = mats
    st = _state(W1, W0, dW, G)
    AlignmentAnalyzer(k=3, overlaps="full").analyze(st)
    kinds = {key[1] for key in st._cache if key[0] == "svd"}
    assert kinds == {"weight", "previous", "update", "grad"}


def test_pair_index_roundtrip_and_errors():
    for k in (1, 3, 10):
        for i in range(k):
            for j in range(k):
                assert decode_pair_index(encode_pair_index(i, j, k), k) == (i, j)
    with pytest.raises(ValueError, match="not a pair index"):
        decode_pair_index(9, 3)


def test_bad_options_and_plugin():
    with pytest.raises(ValueError, match="positive integer"):
        AlignmentAnalyzer(k=0, overlaps="full")
    with pytest.raises(TypeError):
        AlignmentAnalyzer(kk=3)
    assert AlignmentAnalyzer.name == "alignment"
    assert AlignmentAnalyzer.needs == frozenset({"weight", "update", "grad"})
    got = []
    AlignmentPlugin().spectra_register_analyzers(got.append)
    assert got == [AlignmentAnalyzer]


def test_default_rows_are_compact_and_more_detail_is_opt_in():
    """By default the scalars, singular values and the top vector's overlaps (50 rows at k = 10 with the
    gradient); "vectors" adds every vector's best match and the principal angles; "full" the k x k blocks."""
    rng = np.random.default_rng(7)
    W0, dW, G = rng.standard_normal((40, 30)), 0.1 * rng.standard_normal((40, 30)), rng.standard_normal((40, 30))
    st = _state(W0 + dW, W0, dW, G)
    rows = {lv: list(AlignmentAnalyzer(k=10, overlaps=lv).analyze(st)) for lv in ("summary", "vectors", "full")}
    assert len(rows["summary"]) == 50
    assert [m.metric for m in AlignmentAnalyzer(k=10, overlaps=False).analyze(st)] == [m.metric for m in rows["summary"]]
    assert [m.metric for m in AlignmentAnalyzer(k=10, overlaps=True).analyze(st)] == [m.metric for m in rows["full"]]
    key = lambda m: (m.matrix, m.metric, m.index)  # noqa: E731
    for small, big in (("summary", "vectors"), ("vectors", "full")):
        extra = {key(m): m.value for m in rows[big]}
        for m in rows[small]:  # every coarser row is in the finer table, with the same value
            assert extra.pop(key(m)) == m.value
        added = {(mx, metric) for mx, metric, _ in extra}
        if small == "summary":  # 3 pairs (update before/after, grad before) x 2 sides: max and argmax for j >= 1
            assert len(extra) == 6 * 2 * 9 + 2 * 10 and ("update", "principal_angle_left") in added
        else:  # the 6 k x k blocks
            assert len(extra) == 6 * 100 and all(metric.startswith("overlap_") for _, metric in added)
    with pytest.raises(ValueError, match="overlaps must be one of 'summary', 'vectors', 'full'"):
        AlignmentAnalyzer(overlaps="all")
