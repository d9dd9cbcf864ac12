"""The exact Kolmogorov–Smirnov scan over candidate xmin values, with exact pruning by cheap bounds.

For every candidate xmin the continuous MLE α and the one-sided KS distance D of the tail {λ ≥ xmin} are
needed; the scan returns the candidate of least D. D is evaluated exactly only for candidates whose lower bound
(from a sample of each tail's points, refined level by level) can still beat the best exact D found so far, so
the result is the brute-force one (tested against it on random spectra) at a fraction of the cost. Exact D's
are computed in WeightWatcher's float order, so ``fit="ww"`` reproduces it bit for bit.
"""

from __future__ import annotations

import numpy as np

__all__ = ["scan", "suffix_alphas", "ks_single", "ks_exact"]

_EPS = float(np.finfo(np.float64).eps)
_BLOCK = 1 << 15  # elements per block of the candidates × points matrices (fits in L2 cache)
_M0 = 16  # sampled points per tail at the first bounding level
_LEAD = 64  # candidates with the smallest lower bounds evaluated exactly after each bounding level: an early
# tight upper bound prunes far more on true power laws, where many xmin have near-equal D (measured: Pareto
# n=2000 11 ms -> 2.4 ms, MP 2.6 -> 1.1 ms; see benchmarks/results/fit.md)


def ks_exact(x: np.ndarray, rows: np.ndarray, e: np.ndarray, xref: np.ndarray | None = None) -> np.ndarray:
    """One-sided KS distance of each candidate, with WeightWatcher's exact float operations.

    For candidate row ``i`` (tail ``x[i:]``, ``n = N − i``, exponent ``e = 1 − α``):
    ``D = max_k |1 − (x[i+k]/x[i])**e − k/n|``. ``xref`` replaces ``x[i]`` as the reference (fixed xmin).
    """
    N = x.size
    out = np.empty(rows.size)
    order = np.argsort(rows, kind="stable")
    r_sorted = rows[order]
    start = 0
    while start < r_sorted.size:
        r0 = int(r_sorted[start])
        cnt = max(1, _BLOCK // max(N - r0, 1))
        idx = order[start:start + cnt]
        rr = rows[idx]
        ref = x[rr] if xref is None else xref[idx]
        n = (N - rr).astype(np.float64)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            P = np.power(x[None, r0:] / ref[:, None], e[idx][:, None])
            K = (np.arange(r0, N)[None, :] - rr[:, None]) / n[:, None]
            dev = np.abs(1 - P - K)
        dev[K < 0] = 0.0
        out[idx] = dev.max(axis=1)
        start += cnt
    return out


def _bounds_block(L: np.ndarray, rows: np.ndarray, e: np.ndarray, stride: int, N: int):
    """Lower/upper bounds on D for ascending ``rows`` from tail points sampled every ``stride`` indices."""
    r0 = int(rows[0])
    cols = np.arange(r0, N, stride)
    if cols[-1] != N - 1:
        cols = np.append(cols, N - 1)
    n = (N - rows).astype(np.float64)[:, None]
    k = cols[None, :] - rows[:, None]
    valid = k > 0  # column r0 (or any column ≤ row) stands for the point i itself: F = 0, k = 0
    with np.errstate(over="ignore", invalid="ignore"):
        A = (L[cols][None, :] - L[rows][:, None]) * e[:, None]
        F = np.where(valid, 1.0 - np.exp(A), 0.0)
    kf = np.where(valid, k, 0) / n
    lb = np.abs(F - kf).max(axis=1)
    # Between sampled tail points a < b: F(a) ≤ F(k) ≤ F(b) and (a+1)/n ≤ k/n ≤ (b−1)/n.
    gap = np.maximum(F[:, 1:] - kf[:, :-1], kf[:, 1:] - F[:, :-1]) - 1.0 / n
    ub = np.maximum(lb, gap.max(axis=1))
    return lb, ub


def _bounds(L: np.ndarray, rows: np.ndarray, e: np.ndarray, m: int, N: int):
    """Bounds with about ``m``–``2m`` samples per tail: rows are banded by ⌊log2 n⌋, one stride per band."""
    n = N - rows
    band = np.floor(np.log2(n)).astype(np.int64)
    lb = np.empty(rows.size)
    ub = np.empty(rows.size)
    cuts = np.flatnonzero(np.diff(band)) + 1
    for s0, s1 in zip(np.r_[0, cuts], np.r_[cuts, rows.size]):
        stride = max(1, (1 << int(band[s0])) // m)
        step = max(1, _BLOCK // ((N - int(rows[s0])) // stride + 2))
        for c in range(s0, s1, step):
            sl = slice(c, min(s1, c + step))
            lb[sl], ub[sl] = _bounds_block(L, rows[sl], e[sl], stride, N)
    return lb, ub


def scan(x: np.ndarray, cand: np.ndarray, alpha: np.ndarray) -> tuple[int, float, int]:
    """Exact argmin over candidates of the one-sided KS distance, first position on ties.

    Args:
        x: ascending positive data.
        cand: ascending candidate indices into ``x`` (each with a tail of at least 2 points).
        alpha: MLE exponent of each candidate.

    Returns:
        (position in ``cand`` of the winner, its D, number of candidates evaluated exactly). Candidates with
        ``alpha ≤ 1`` (or non-finite) have D = 1; if all do, position 0 is returned with D = 1.
    """
    N = x.size
    good = np.isfinite(alpha) & (alpha > 1)
    if not good.any():
        return 0, 1.0, 0
    pos = np.flatnonzero(good)
    rows = cand[pos]
    e = 1.0 - alpha[pos]
    n = N - rows
    L = np.log(x)
    # rounding margin between exp/log bounds and the exact power formula (a generous multiple of the
    # propagated error |e|·eps·(|ln x_j| + |ln x_i| + ...) plus a few ulps of the CDF arithmetic)
    tol = 64.0 * _EPS * (1.0 + np.abs(e) * (6.0 * float(np.abs(L).max()) + 2.0))
    lb = np.zeros(rows.size)
    D = np.full(rows.size, np.inf)
    act = np.arange(rows.size)
    upper = np.inf
    m = _M0
    while True:
        big = act[n[act] > 4 * m]  # tails this short are cheaper to evaluate exactly than to bound
        if big.size == 0:
            break
        b_lo, b_hi = _bounds(L, rows[big], e[big], m, N)
        lb[big] = np.maximum(lb[big], b_lo)
        upper = min(upper, float((b_hi + tol[big]).min()))
        act = act[lb[act] - tol[act] <= upper]
        lead = act[np.argsort(lb[act], kind="stable")[:_LEAD]]
        lead = lead[np.isinf(D[lead])]
        if lead.size:
            D[lead] = ks_exact(x, rows[lead], e[lead])
            upper = min(upper, float(D[lead].min()))
            act = act[lb[act] - tol[act] <= upper]
        m *= 4
    todo = act[np.isinf(D[act])]
    todo = todo[np.argsort(lb[todo], kind="stable")]
    done, batch = 0, 8
    while done < todo.size:
        b = todo[done:done + batch]
        D[b] = ks_exact(x, rows[b], e[b])
        upper = min(upper, float(D[b].min()))
        done += b.size
        rest = todo[done:]
        todo = np.concatenate((todo[:done], rest[lb[rest] - tol[rest] <= upper]))
        batch *= 2
    d_min = float(D.min())
    best = int(np.flatnonzero(D == d_min)[0])  # rows ascending: the first index on exact ties
    return int(pos[best]), d_min, int(np.isfinite(D).sum())


def suffix_alphas(x: np.ndarray) -> np.ndarray:
    """α_i = 1 + n_i/(Σ_{j≥i} ln x_j − n_i ln x_i) for every i, in WeightWatcher's operation order."""
    N = x.size
    L = np.log(x)
    S = np.cumsum(L[::-1].astype(np.longdouble))[::-1].astype(np.float64)
    n = (N - np.arange(N)).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return 1 + n / (S - n * L)


def ks_single(tail: np.ndarray, ref: float, e: float) -> float:
    n = float(tail.size)
    with np.errstate(over="ignore", invalid="ignore"):
        return float(np.max(np.abs(1 - (tail / ref) ** e - np.arange(n) / n)))


