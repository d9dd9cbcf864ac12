"""LayerState's decomposition plan: requests, one shared reduction per matrix, identical results."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import spectra.functional.decompose as dec
import spectra.functional.topk as topk
from spectra.analyzers.alignment import AlignmentAnalyzer
from spectra.analyzers.base import Analyzer, Measurement
from spectra.analyzers.esd import EsdAnalyzer
from spectra.analyzers.tail import TailAnalyzer
from spectra.functional import esd, esd_pooled, top_svd
from spectra.snapshot import DecompositionPlan, LayerState, Request


def _state(weight, previous=None, update=None, grad=None, **kw):
    tensors = {"weight": weight, "previous": previous, "update": update, "grad": grad}
    return LayerState(layer="fc", view="W", step=1, tensors={k: v for k, v in tensors.items() if v is not None}, **kw)


def _mats(rng, N=160, M=120, rank=None):
    W0 = rng.standard_normal((N, M))
    if rank is None:
        dW = 0.05 * rng.standard_normal((N, M))
    else:  # an SGD-like update: rank `rank`
        dW = 0.05 * rng.standard_normal((N, rank)) @ rng.standard_normal((rank, M))
    G = -dW / 0.1 + 0.01 * rng.standard_normal((N, M))
    return W0 + dW, W0, dW, G


class _Counter:
    """Counts Gram reductions and full SVDs made through spectra.functional.decompose."""

    def __init__(self, monkeypatch):
        self.reductions = 0
        self.svds = 0
        real_reduce, real_svd = dec.gram_reduce, dec.full_svd

        def reduce(*a, **kw):
            self.reductions += 1
            return real_reduce(*a, **kw)

        def full(*a, **kw):
            self.svds += 1
            return real_svd(*a, **kw)

        for mod in (dec, topk):
            monkeypatch.setattr(mod, "gram_reduce", reduce)
        monkeypatch.setattr(dec, "full_svd", full)


def _rows(analyzers, st):
    return [(an.name, m.matrix, m.metric, m.index, m.value, m.status) for an in analyzers for m in an.analyze(st)]


DEFAULT = (EsdAnalyzer(), TailAnalyzer(), AlignmentAnalyzer(k=5))


# ---------------------------------------------------------------------------------------------- requests
def test_request_validation_and_merge():
    with pytest.raises(ValueError, match="unknown matrix kind"):
        Request("bias", evals=True)
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="k must be"):
            Request("weight", k=bad)
    plan = DecompositionPlan([Request("weight", evals=True), Request("weight", k=3), Request("update", k=5)])
    plan.add(Request("weight", k=7))
    plan.add(Request("update", k=None))
    assert plan.needs("weight") == (True, 7)
    assert plan.needs("update") == (False, None)  # None (all) wins
    assert plan.needs("grad") == (False, 0) and bool(plan)
    assert not DecompositionPlan() and "strict=False" in repr(DecompositionPlan(strict=False))
    with pytest.raises(TypeError, match="Request"):
        plan.add(("weight", True))


def test_builtin_requests(rng):
    W1, W0, dW, G = _mats(rng)
    st = _state(W1, W0, dW, G)
    plan = DecompositionPlan.collect(DEFAULT, st)
    assert dict(plan.items()) == {"weight": (True, 5), "previous": (False, 5), "update": (False, 5),
                                  "grad": (False, 5)}
    assert list(AlignmentAnalyzer().requests(_state(W1))) == []  # step 0: alignment emits nothing
    assert list(AlignmentAnalyzer(grad=False).requests(st)) == [Request(k, k=10) for k in
                                                                ("previous", "weight", "update")]
    assert list(EsdAnalyzer(matrices=("weight", "grad")).requests(_state(W1))) == [Request("weight", evals=True)]
    assert list(Analyzer().requests(st)) == []  # the base class asks nothing


def test_collect_tolerates_third_party_analyzers(rng):
    class Plain(Analyzer):  # written before requests() existed
        name = "plain"

        def analyze(self, layer):
            yield Measurement("top", float(layer.svd("weight", 2).S[0]))

    class Broken(Analyzer):
        name = "broken"

        def requests(self, layer):
            raise RuntimeError("bug in a hint")

        def analyze(self, layer):
            yield Measurement("n", float(layer.evals().size))

    st = _state(rng.standard_normal((50, 40)))
    plan = DecompositionPlan.collect([Plain(), Broken(), object(), EsdAnalyzer()], st)
    assert dict(plan.items()) == {"weight": (True, 0)}
    st.prefetch(plan)
    assert list(Plain().analyze(st))[0].value == pytest.approx(np.linalg.svd(st.array(), compute_uv=False)[0],
                                                               rel=1e-12)


# ---------------------------------------------------------------------------------------------- sharing
def test_one_reduction_serves_evals_and_topk(rng, monkeypatch):
    W1, W0, dW, G = _mats(rng)
    count = _Counter(monkeypatch)
    st = _state(W1, W0, dW, G)
    st.prefetch(DecompositionPlan.collect(DEFAULT, st))
    # one reduction per matrix: W_t's serves its ESD and its top-k; no SVD anywhere (dense Adam-like update)
    assert count.reductions == 4 and count.svds == 0
    _rows(DEFAULT, st)
    assert count.reductions == 4 and count.svds == 0  # the analyzers only read


def test_square_layer_esd_takes_no_svd(rng, monkeypatch):
    count = _Counter(monkeypatch)
    W = rng.standard_normal((200, 200))
    st = _state(W)
    st.prefetch([Request("weight", evals=True), Request("weight", k=10)])
    lam = st.evals()
    assert count.svds == 0 and count.reductions == 1
    np.testing.assert_allclose(lam, np.sort(scipy.linalg.svdvals(W) ** 2), rtol=1e-10)
    assert st._decomposer("weight").routes["evals"].startswith("gram+refine")


def test_low_rank_update_takes_the_qr_route(rng, monkeypatch):
    W1, W0, dW, G = _mats(rng, rank=4)
    count = _Counter(monkeypatch)
    st = _state(W1, W0, dW, None)
    st.prefetch(DecompositionPlan.collect([AlignmentAnalyzer(k=6, grad=False)], st))
    assert count.svds == 0
    assert st._decomposer("update").routes["svd"].startswith("deflate:qr(4)")
    S = st.svd("update", 6).S
    ref = np.linalg.svd(dW, compute_uv=False)
    np.testing.assert_allclose(S[:4], ref[:4], rtol=1e-12)
    assert np.all(S[4:] < 1e-12 * S[0])


@pytest.mark.parametrize("rank", [None, 3])
def test_results_identical_with_and_without_plan(rng, rank):
    W1, W0, dW, G = _mats(rng, rank=rank)
    analyzers = (EsdAnalyzer(matrices=("weight", "update")), TailAnalyzer(), AlignmentAnalyzer(k=5))
    plain = _rows(analyzers, _state(W1, W0, dW, G))
    st = _state(W1, W0, dW, G)
    st.prefetch(DecompositionPlan.collect(analyzers, st))
    planned = _rows(analyzers, st)
    assert [r[:4] + r[5:] for r in plain] == [r[:4] + r[5:] for r in planned]
    for a, b in zip(plain, planned):
        assert b[4] == pytest.approx(a[4], rel=1e-9, abs=1e-9) or (np.isnan(a[4]) and np.isnan(b[4])), a[:4]


def test_numbers_match_the_reference_functions(rng):
    W1, W0, dW, G = _mats(rng)
    st = _state(torch.tensor(W1, dtype=torch.float32), W0, dW, G, normalize=True, eig_scale=0.5)
    st.prefetch(DecompositionPlan.collect(DEFAULT, st))
    W32 = torch.tensor(W1, dtype=torch.float32).double().numpy()
    ref = np.sort(np.linalg.svd(W32, compute_uv=False) ** 2) / 160 * 0.5
    np.testing.assert_allclose(st.evals(), ref, rtol=1e-10)
    np.testing.assert_allclose(st.evals(), esd(W32, normalize=True) * 0.5, rtol=1e-10)
    for kind, X in (("weight", W32), ("previous", W0), ("update", dW), ("grad", G)):
        got = st.svd(kind, 5)
        U, S, Vh, _ = top_svd(X, 5)
        np.testing.assert_allclose(got.S, S, rtol=1e-12)
        np.testing.assert_allclose(np.abs(np.sum(got.U * U, axis=0)), 1.0, atol=1e-10)
        assert st.svd(kind, 3).S.shape == (3,)  # a smaller k is a view of the planned one


def test_lazy_plan_and_conv_stack(rng, monkeypatch):
    count = _Counter(monkeypatch)
    stack = rng.standard_normal((9, 20, 12))
    st = _state(stack, eig_scale=0.5)
    st.prefetch([Request("weight", evals=True, k=3)], compute=False)
    assert count.reductions == 0 and ("evals", "weight") not in st._cache
    np.testing.assert_allclose(st.evals(), esd_pooled(stack, scale=0.5), rtol=1e-12)
    flat = np.transpose(stack, (1, 2, 0)).reshape(20, 108)
    np.testing.assert_allclose(st.svd("weight", 3).S, np.linalg.svd(flat, compute_uv=False)[:3], rtol=1e-12)


def test_failures_surface_at_the_analyzer_not_the_prefetch(rng):
    W = rng.standard_normal((30, 20))
    W[0, 0] = np.nan
    st = _state(W, W, np.zeros_like(W))
    st.prefetch(DecompositionPlan.collect(DEFAULT, st))  # does not raise
    with pytest.raises(ValueError, match="1 non-finite"):
        st.evals()
    with pytest.raises(ValueError, match="non-finite"):
        st.svd("weight", 2)
    big = _state(rng.standard_normal((30, 20)) * 1e200)
    big.prefetch([Request("weight", evals=True)])
    with pytest.raises(ValueError, match="overflow"):
        big.evals()


def test_strict_flag_reaches_the_decompositions(rng):
    W0 = rng.standard_normal((200, 150)).astype(np.float32)
    step = (rng.standard_normal((200, 8)) @ rng.standard_normal((8, 150))).astype(np.float32)
    dW = (W0 - np.float32(0.05) * step).astype(np.float64) - W0.astype(np.float64)  # rank 8 + float32 rounding
    ref = np.linalg.svd(dW, compute_uv=False)[:10]
    for strict in (True, False):
        st = _state(W0.astype(np.float64) + dW, W0.astype(np.float64), dW)
        st.prefetch(DecompositionPlan([Request("update", k=10)], strict=strict))
        S = st.svd("update", 10).S
        route = st._decomposer("update").routes["svd"]
        assert route == ("svd (fallback)" if strict else "deflate:qr(8)+gram(2)")
        # strict: the SVD's own numbers; not strict: 1e-10 relative or the SVD's absolute accuracy, ~eps·σ₁
        atol = 0.0 if strict else 4 * np.finfo(np.float64).eps * ref[0]
        np.testing.assert_allclose(S, ref, rtol=1e-10, atol=atol)


@settings(max_examples=20, deadline=None)
@given(
    kinds=st.lists(st.sampled_from(["weight", "previous", "update", "grad"]), min_size=1, max_size=6),
    evals=st.lists(st.booleans(), min_size=6, max_size=6),
    ks=st.lists(st.one_of(st.none(), st.integers(0, 12)), min_size=6, max_size=6),
)
def test_plan_merge_is_order_independent(kinds, evals, ks):
    reqs = [Request(kind, evals=e, k=k) for kind, e, k in zip(kinds, evals, ks)]
    a, b = DecompositionPlan(reqs), DecompositionPlan(reversed(reqs))
    assert dict(a.items()) == dict(b.items())
    for kind in set(kinds):
        mine = [r for r in reqs if r.kind == kind]
        want_k = None if any(r.k is None for r in mine) else max(r.k for r in mine)
        assert a.needs(kind) == (any(r.evals for r in mine), want_k)


def test_a_formed_gram_matrix_gives_the_squared_norm_for_free_and_alignment_reads_it(monkeypatch):
    import spectra.analyzers.alignment as alignment

    passes = []
    monkeypatch.setattr(alignment, "sq_norm", lambda X: passes.append(X.shape) or float(np.vdot(X, X)))
    rng = np.random.default_rng(11)
    W, W0, dW, G = _mats(rng, N=90, M=140)  # wide: the decomposer works on the transpose
    st_ = _state(torch.from_numpy(W).float(), previous=torch.from_numpy(W0).float(),
                 update=torch.from_numpy(dW).float(), grad=torch.from_numpy(G).float())
    assert st_.known_sq_norm("update") is None  # nothing formed yet: the caller computes it
    an = AlignmentAnalyzer(k=4)
    st_.prefetch(DecompositionPlan.collect([an], st_))  # as the pipeline does before the analyzers run
    rows = an.analyze(st_)
    assert passes == []  # every norm came from a Gram matrix's trace, none from another pass over a matrix
    for kind in ("weight", "previous", "update", "grad"):
        X = st_.array(kind)
        assert st_.known_sq_norm(kind) == pytest.approx(float(np.vdot(X, X)), rel=1e-13)
    rel = {m.matrix: m.value for m in rows if m.metric == "relative_norm"}
    for kind in ("update", "grad"):
        expected = np.linalg.norm(st_.array(kind)) / np.linalg.norm(st_.array("previous"))
        assert rel[kind] == pytest.approx(expected, rel=1e-13)


def test_a_kind_read_while_its_task_runs_elsewhere_waits_for_it_instead_of_decomposing_it_again(rng, monkeypatch):
    import threading

    W1, W0, dW, G = _mats(rng)
    st = _state(W1, W0, dW, G)
    started, calls = threading.Event(), []
    top_svd_of = dec.Decomposer.top_svd

    def slow(self, k):
        calls.append(threading.get_native_id())
        started.set()
        threading.Event().wait(0.2)  # the task is mid-decomposition when the reader arrives
        return top_svd_of(self, k)

    monkeypatch.setattr(dec.Decomposer, "top_svd", slow)
    tasks = st.prefetch_tasks(DecompositionPlan.collect([AlignmentAnalyzer()], st))
    assert set(tasks) == {"weight", "previous", "update", "grad"}
    worker = threading.Thread(target=tasks["update"])
    worker.start()
    assert started.wait(5)
    read = st.svd("update", 10)  # blocks on the kind's lock until the task is done, then reads its result
    worker.join()
    assert len(calls) == 1 and calls[0] == worker.native_id
    assert read.S.shape == (10,)
    np.testing.assert_allclose(read.S, np.linalg.svd(dW, compute_uv=False)[:10], rtol=1e-10)


def test_an_analyzer_runs_as_soon_as_the_kinds_it_asked_for_are_decomposed(rng, monkeypatch):
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from spectra.pipeline.engine import ErrorPolicy, run_states

    W1, W0, dW, G = _mats(rng)
    st = _state(W1, W0, dW, G)
    events: list[str] = []
    prefetch = LayerState.prefetch_tasks

    def recorded(self, plan):
        def wrap(kind, task):
            def run():
                task()
                if kind != "weight":
                    threading.Event().wait(0.05)  # the alignment's matrices take a while
                events.append(f"done {kind}")
            return run
        return {kind: wrap(kind, task) for kind, task in prefetch(self, plan).items()}

    esd_analyze = EsdAnalyzer.analyze

    def esd_marked(self, layer):
        events.append("esd")
        yield from esd_analyze(self, layer)

    monkeypatch.setattr(LayerState, "prefetch_tasks", recorded)
    monkeypatch.setattr(EsdAnalyzer, "analyze", esd_marked)
    analyzers = [EsdAnalyzer(), AlignmentAnalyzer()]
    with ThreadPoolExecutor(1) as one_thread:  # the tasks run one after the other, in the plan's order
        rows = run_states([st], analyzers, run="r", policy=ErrorPolicy("raise"), executor=one_thread)[0]
    assert events[0] == "done weight" and events[1] == "esd"  # not after the three other matrices
    assert sorted(events[2:]) == ["done grad", "done previous", "done update"]
    assert [r.analyzer for r in rows] == sorted((r.analyzer for r in rows), key=["esd", "alignment"].index)
    reference = run_states([_state(W1, W0, dW, G)], analyzers, run="r", policy=ErrorPolicy("raise"))[0]
    assert [(r.metric, r.index, r.value) for r in rows] == [(r.metric, r.index, r.value) for r in reference]
