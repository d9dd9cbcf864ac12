"""Decomposition plan vs the pre-plan snapshot route, per due step, on the paper net and transformer-like views.

Each case builds the snapshots of one due step (W_t, W_{t−1}, ΔW_t, G_{t−1}, float32, from real optimizer
steps) and times, interleaved over rounds and with fresh snapshots each time:

* ``old``: the snapshot route before the plan, reproduced verbatim below (every call decomposes on its own: the
  ESD by Gram ``eigh`` with an SVD fallback when λ_min < 1e-6·λ_max, each top-k by its own Gram ``eigh`` +
  Rayleigh–Ritz with a full SVD when σ_k² < 1e-6·σ₁²);
* ``plan``: ``LayerState.prefetch(DecompositionPlan.collect(analyzers, state))`` (one Gram product and one
  reduction per matrix, the routes of :mod:`spectra.functional.decompose`);

first the decompositions alone (``dec``), then the default analyzers (esd, tail, alignment with k = 10) end to
end (``all``), and compares every number the two produce (eigenvalues, singular values, analyzer rows). A last
case times the ESD alone (offline ``analyze``) on GPT-2-sized square views, where the old rule fell back to an
SVD after the Gram eigensolve.

Usage: python benchmarks/bench_decompose.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.linalg  # noqa: F401 - load scipy's own BLAS before threadpool_limits, so it is limited too
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import environment, write_table  # noqa: E402
from bench_monitor import TwoLayer  # noqa: E402

from spectra.analyzers.alignment import AlignmentAnalyzer  # noqa: E402
from spectra.analyzers.esd import EsdAnalyzer  # noqa: E402
from spectra.analyzers.tail import TailAnalyzer  # noqa: E402
from spectra.functional._validate import as_matrix  # noqa: E402
from spectra.snapshot import SVD, DecompositionPlan, LayerState  # noqa: E402

K = 10
KINDS = ("weight", "previous", "update", "grad")


# ---------------------------------------------------------------------------------------------- the old route
def _old_esd(W: Any) -> np.ndarray:
    """``spectra.functional.esd(W, method="auto")`` before the plan (CPU path)."""
    from scipy.linalg import eigh, svdvals

    A = as_matrix(W)
    G = A.T @ A if A.shape[0] >= A.shape[1] else A @ A.T
    lam = np.clip(eigh(G, eigvals_only=True, driver="evd", overwrite_a=True, check_finite=False), 0.0, None)
    if lam.size and lam[-1] > 0 and lam[0] < 1e-6 * lam[-1]:
        return np.sort(svdvals(A, check_finite=False) ** 2)
    return lam


def _old_top_svd(A: Any, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """``spectra.functional.alignment.top_svd`` before the plan."""
    from scipy.linalg import eigh, svd

    X = as_matrix(A, name="A")
    N, M = X.shape
    n = min(N, M)
    res = None
    if k < n and k <= 0.1 * n:
        left = N <= M
        G = X @ X.T if left else X.T @ X
        lam, Q = eigh(G, subset_by_index=[n - k, n - 1], driver="evr", check_finite=False, overwrite_a=True)
        if lam[-1] > 0 and lam[0] >= 1e-6 * lam[-1]:
            if left:
                W, S, Vh = svd(Q.T @ X, full_matrices=False, lapack_driver="gesdd", check_finite=False)
                res = (Q @ W, S, Vh)
            else:
                U, S, Zh = svd(X @ Q, full_matrices=False, lapack_driver="gesdd", check_finite=False)
                res = (U, S, Zh @ Q.T)
    full = False
    if res is None:
        U, S, Vh = svd(X, full_matrices=False, lapack_driver="gesdd", check_finite=False)
        full = k >= n
        res = (U, S, Vh) if full else (U[:, :k], S[:k], Vh[:k])
    U, S, Vh = res
    idx = np.argmax(np.abs(U), axis=0)
    signs = np.sign(U[idx, np.arange(U.shape[1])])
    signs[signs == 0] = 1.0
    return U * signs, S, Vh * signs[:, None], full


class OldLayerState(LayerState):
    """The snapshot's ``evals``/``svd`` before the plan: no shared reduction, the old fallbacks."""

    def evals(self, kind: str = "weight") -> np.ndarray:
        key = ("evals", kind)
        if key not in self._cache:
            lam = _old_esd(self.array(kind)) * self.eig_scale
            if self.normalize:
                lam = lam / max(self.shape(kind))
            self._cache[key] = lam
        return self._cache[key]

    def svd(self, kind: str = "weight", k: int | None = None) -> SVD:
        key = ("svd", kind, k)
        if key not in self._cache:
            self._cache[key] = SVD(*_old_top_svd(self.array(kind), k))
        return self._cache[key]


# ---------------------------------------------------------------------------------------------- the cases
def _views_of(named: dict[str, tuple[torch.Tensor, ...]]) -> list[dict[str, torch.Tensor]]:
    return [dict(zip(KINDS, mats)) | {"name": name} for name, mats in named.items()]


def _step_mats(param: torch.Tensor, before: torch.Tensor, grad: torch.Tensor) -> tuple[torch.Tensor, ...]:
    W = param.detach().clone()
    return W, before, W - before, grad


def paper_net(optimizer: str, steps: int = 3) -> list[dict[str, torch.Tensor]]:
    """The paper's two-layer net at half scale (W: 750 × 500): full-batch Adam, or SGD with batch 8."""
    torch.manual_seed(0)
    model = TwoLayer(500, 750)
    if optimizer == "adam":
        opt = torch.optim.Adam([model.W.weight], lr=1.0)
        x, y = torch.randn(1000, 500), torch.randn(1000, 1)
    else:
        opt = torch.optim.SGD([model.W.weight], lr=100.0)
        x, y = torch.randn(8, 500), torch.randn(8, 1)
    for _ in range(steps):
        before = model.W.weight.detach().clone()
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        grad = model.W.weight.grad.detach().clone()
        opt.step()
    return _views_of({"W": _step_mats(model.W.weight, before, grad)})


def transformer_layer(steps: int = 3) -> list[dict[str, torch.Tensor]]:
    """One d=256 encoder layer (q, k, v, out: 256 × 256; ffn: 1024 × 256 and 256 × 1024), Adam."""
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(256, 4, 1024, dropout=0.0, batch_first=True)
    opt = torch.optim.Adam(layer.parameters(), lr=1e-3)
    x, y = torch.randn(16, 128, 256), torch.randn(16, 128, 256)
    params = {"in_proj": layer.self_attn.in_proj_weight, "out": layer.self_attn.out_proj.weight,
              "ffn1": layer.linear1.weight, "ffn2": layer.linear2.weight}
    for _ in range(steps):
        before = {k: p.detach().clone() for k, p in params.items()}
        opt.zero_grad()
        nn.functional.mse_loss(layer(x), y).backward()
        grads = {k: p.grad.detach().clone() for k, p in params.items()}
        opt.step()
    named = {}
    for k, p in params.items():
        mats = _step_mats(p, before[k], grads[k])
        if k == "in_proj":
            for i, v in enumerate("qkv"):
                named[v] = tuple(m[256 * i: 256 * (i + 1)] for m in mats)
        else:
            named[k] = mats
    return _views_of(named)


# ---------------------------------------------------------------------------------------------- timing
ANALYZERS = (EsdAnalyzer(), TailAnalyzer(), AlignmentAnalyzer(k=K))


def _states(cls: type, views: list[dict[str, torch.Tensor]]) -> list[LayerState]:
    return [cls(layer="l", view=v["name"], step=1, tensors={k: v[k] for k in KINDS}) for v in views]


def _decompose(st: LayerState, plan: bool, strict: bool) -> None:
    if plan:
        st.prefetch(DecompositionPlan.collect(ANALYZERS, st, strict=strict))
    else:  # the calls the default analyzers make
        st.evals("weight")
        for kind in KINDS:
            st.svd(kind, K)


def _analyze(st: LayerState, plan: bool, strict: bool) -> list[tuple]:
    if plan:
        st.prefetch(DecompositionPlan.collect(ANALYZERS, st, strict=strict))
    return [(an.name, m.matrix, m.metric, m.index, m.value, m.status) for an in ANALYZERS for m in an.analyze(st)]


def _timed(fn) -> tuple[float, float]:
    """(CPU seconds of this process, wall seconds) of ``fn()``; single-threaded, so CPU time is the work done,
    much less sensitive than wall time to other jobs on a shared machine."""
    c0, t0 = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - c0, time.perf_counter() - t0


def _reldiff(a: np.ndarray, b: np.ndarray, floor: float) -> float:
    return float(np.max(np.abs(a - b) / np.maximum(np.maximum(np.abs(a), np.abs(b)), floor))) if a.size else 0.0


def _compare(views: list[dict[str, torch.Tensor]], strict: bool) -> dict[str, float]:
    """Max relative differences between the two routes (values below the rank floor compared absolutely)."""
    eps = np.finfo(np.float64).eps
    out = {"evals": 0.0, "sv": 0.0, "vec": 0.0, "rows": 0.0}
    for old, new in zip(_states(OldLayerState, views), _states(LayerState, views)):
        rows_old, rows_new = _analyze(old, False, strict), _analyze(new, True, strict)
        lo, ln = old.evals(), new.evals()
        floor2 = (lo[-1] ** 0.5 * max(old.shape()) * eps) ** 2
        out["evals"] = max(out["evals"], _reldiff(lo, ln, floor2))
        ref = np.sort(scipy.linalg.svdvals(old.array()) ** 2)  # the reference: singular values squared
        out["evals_old_vs_svd"] = max(out.get("evals_old_vs_svd", 0.0), _reldiff(lo, ref, floor2))
        out["evals_plan_vs_svd"] = max(out.get("evals_plan_vs_svd", 0.0), _reldiff(ln, ref, floor2))
        for kind in KINDS:
            so, sn = old.svd(kind, K), new.svd(kind, K)
            floor = so.S[0] * max(old.shape(kind)) * eps
            out["sv"] = max(out["sv"], _reldiff(so.S, sn.S, floor))
            ok = so.S > 1e-5 * so.S[0]  # vectors of values the SVD itself resolves
            dots = np.abs(np.sum(so.U[:, ok] * sn.U[:, ok], axis=0))
            out["vec"] = max(out["vec"], float(np.max(1 - dots)) if dots.size else 0.0)
        assert [r[:4] + r[5:] for r in rows_old] == [r[:4] + r[5:] for r in rows_new]
        a = np.array([r[4] for r in rows_old], dtype=float)
        b = np.array([r[4] for r in rows_new], dtype=float)
        assert np.array_equal(np.isfinite(a), np.isfinite(b))
        fin = np.isfinite(a)
        # overlaps and angles live in [0, 1] / [0, π/2]: compared absolutely; argmax rows: counted when different
        absolute = np.array([r[2].startswith(("overlap_", "principal_angle")) and "argmax" not in r[2]
                             for r in rows_old])
        argmax = np.array(["argmax" in r[2] for r in rows_old])
        rel = fin & ~absolute & ~argmax
        out["rows"] = max(out["rows"], _reldiff(a[rel], b[rel], 1e-300))
        out["overlap_abs"] = max(out.get("overlap_abs", 0.0), float(np.max(np.abs(a - b)[fin & absolute]))
                                 if np.any(fin & absolute) else 0.0)
        out["argmax_changed"] = out.get("argmax_changed", 0) + int(np.sum(a[argmax] != b[argmax]))
    return out


def square_layers() -> list[dict[str, torch.Tensor]]:
    """GPT-2-sized square views (768 × 768): Marchenko–Pastur at init and a heavy-tailed (Student-t) one."""
    g = torch.Generator().manual_seed(0)
    mp = torch.randn(768, 768, generator=g) * 0.02
    heavy = torch.distributions.StudentT(3.0).sample((768, 768)) * 0.02
    return [{"name": "init", "weight": mp}, {"name": "heavy", "weight": heavy}]


ESD_ONLY = (EsdAnalyzer(), TailAnalyzer())


def run_esd_case(name: str, views: list[dict[str, torch.Tensor]], rounds: int) -> dict[str, Any]:
    """Offline ``analyze``: only ``evals(W)`` (esd + tail), old auto rule vs the error bound."""
    times: dict[str, list[float]] = {"old": [], "plan": []}
    for _ in range(rounds):
        for label, cls in (("old", OldLayerState), ("plan", LayerState)):
            sts = [cls(layer="l", view=v["name"], step=0, tensors={"weight": v["weight"]}) for v in views]
            times[label].append(_timed(lambda: [st.evals() for st in sts])[0])
    med = {k: statistics.median(v) for k, v in times.items()}
    eps = np.finfo(np.float64).eps
    worst_old = worst_new = 0.0
    routes = []
    for v in views:
        old = OldLayerState(layer="l", view=v["name"], step=0, tensors={"weight": v["weight"]})
        new = LayerState(layer="l", view=v["name"], step=0, tensors={"weight": v["weight"]})
        ref = np.sort(scipy.linalg.svdvals(old.array()) ** 2)
        floor2 = (ref[-1] ** 0.5 * 768 * eps) ** 2
        worst_old = max(worst_old, _reldiff(old.evals(), ref, floor2))
        worst_new = max(worst_new, _reldiff(new.evals(), ref, floor2))
        routes.append(f"{v['name']}:{new._decomposer('weight').routes['evals']}")
    return {"case": name, "strict": True, "old_dec_ms": round(1e3 * med["old"], 1),
            "plan_dec_ms": round(1e3 * med["plan"], 1), "dec_speedup": round(med["old"] / med["plan"], 2),
            "evals_old_vs_svd": worst_old, "evals_plan_vs_svd": worst_new, "routes (plan)": "; ".join(routes)}


def run_case(name: str, views: list[dict[str, torch.Tensor]], rounds: int, strict: bool) -> dict[str, Any]:
    times: dict[str, list[tuple[float, float]]] = {"old_dec": [], "plan_dec": [], "old_all": [], "plan_all": []}
    for _ in range(rounds):
        for label, cls, plan in (("old", OldLayerState, False), ("plan", LayerState, True)):
            sts = _states(cls, views)
            times[f"{label}_dec"].append(_timed(lambda: [_decompose(s, plan, strict) for s in sts]))
            sts = _states(cls, views)
            times[f"{label}_all"].append(_timed(lambda: [_analyze(s, plan, strict) for s in sts]))
    med = {k: statistics.median(c for c, _ in v) for k, v in times.items()}
    wall = {k: statistics.median(w for _, w in v) for k, v in times.items()}
    probe = _states(LayerState, views)
    for s in probe:
        _decompose(s, True, strict)
    routes = sorted({f"{k}:{s._decomposer(k).routes.get('svd', '-')}" for s in probe for k in KINDS}
                    | {f"evals:{s._decomposer('weight').routes.get('evals')}" for s in probe})
    diff = _compare(views, strict)
    return {
        "case": name,
        "strict": strict,
        "old_dec_ms": round(1e3 * med["old_dec"], 1),
        "plan_dec_ms": round(1e3 * med["plan_dec"], 1),
        "dec_speedup": round(med["old_dec"] / med["plan_dec"], 2),
        "old_all_ms": round(1e3 * med["old_all"], 1),
        "plan_all_ms": round(1e3 * med["plan_all"], 1),
        "all_speedup": round(med["old_all"] / med["plan_all"], 2),
        "wall_dec_speedup": round(wall["old_dec"] / wall["plan_dec"], 2),
        "wall_all_speedup": round(wall["old_all"] / wall["plan_all"], 2),
        "maxrel_evals": diff["evals"],
        "evals_old_vs_svd": diff["evals_old_vs_svd"],
        "evals_plan_vs_svd": diff["evals_plan_vs_svd"],
        "maxrel_sv": diff["sv"],
        "max_1-|u.u'|": diff["vec"],
        "maxrel_rows": diff["rows"],
        "maxabs_overlaps": diff["overlap_abs"],
        "argmax_changed": diff["argmax_changed"],
        "routes (plan)": "; ".join(routes),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default="decompose")
    args = ap.parse_args(argv)
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    with threadpool_limits(limits=1, user_api="blas"):
        env = environment()
        cases = [
            ("paper net 750x500, Adam full batch", paper_net("adam"), (True,)),
            ("paper net 750x500, SGD batch 8 (rank-8 update)", paper_net("sgd"), (True, False)),
            ("transformer layer d=256: q,k,v,out 256x256", transformer_layer()[:4], (True,)),
            ("transformer layer d=256: ffn 1024x256, 256x1024", transformer_layer()[4:], (True,)),
        ]
        for _, views, _ in cases[:1]:  # warm-up (imports, LAPACK workspaces)
            run_case("warm-up", views, 1, True)
        rows = [run_case(name, views, args.rounds, strict) for name, views, stricts in cases for strict in stricts]
        rows.append(run_esd_case("square 768x768 views, ESD only (offline analyze)", square_layers(), args.rounds))
        env["loadavg_after"] = tuple(round(v, 2) for v in __import__("os").getloadavg())
    notes = [
        f"rounds={args.rounds}; medians of interleaved old/plan runs, fresh snapshots each run; torch and BLAS at 1 "
        "thread; *_ms and *_speedup are process CPU time per due step for all views of the case (single-threaded, "
        "so the work done; the shared 2-core machine makes wall time swing 2-10x), wall_*_speedup the same ratios "
        "from wall-clock medians",
        "dec: the decompositions the default analyzers ask for (evals(W_t); svd(kind, 10) for W_t, W_{t-1}, dW, G); "
        "all: esd + tail + alignment(k=10) analyze() end to end, decompositions included",
        "maxrel_*: max |old - plan| / max(|old|, |plan|, floor) over every eigenvalue, top-10 singular value and "
        "analyzer row except overlaps/angles (floor: the rank floor sigma_1*max(N,M)*eps for values); "
        "maxabs_overlaps: max |old - plan| over the overlap and principal-angle rows (values in [0, 1]); "
        "evals_*_vs_svd: each route against scipy.linalg.svdvals squared (the old route kept Gram values down to "
        "lambda_min >= 1e-6 lambda_max, i.e. up to ~1e-10 relative error, so maxrel_evals can show the old error); "
        "argmax_changed: overlap_argmax rows that differ; max_1-|u.u'|: left singular vectors of values above "
        "1e-5*sigma_1",
        "strict=False: values between the rank floor and ~1e-5*sigma_1 (the float32 rounding tail of a rank-8 "
        "update asked for k=10) are certified to the SVD's own accuracy (~eps*sigma_1) instead of taking the SVD",
    ]
    write_table(args.out, rows, title=__doc__.splitlines()[0], notes=notes, env=env)


if __name__ == "__main__":
    main()
