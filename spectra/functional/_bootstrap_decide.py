"""The decision engine of :mod:`spectra.functional.bootstrap`: is a replicate's fitted D below the observed D0?

See that module's docstring for the three stages. Everything works on a block of replicates in log space
(``L``: B × N, ascending rows) and returns, per replicate, the decision and whether it lies within the rounding
margin of D0 (then the caller re-decides it with the library's own fit).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["decide_csn", "decide_hill", "TOL"]

_CHUNK = 1 << 16  # elements per candidates × points work array
TOL = 1e-9  # decisions this close to the observed D are re-made exactly by the library's fit
_TOL = TOL


# ------------------------------------------------------------------------------------------------ bounds
def _pair_bounds(L: np.ndarray, pr: np.ndarray, pi: np.ndarray, e: np.ndarray, m: int, N: int):
    """Lower/upper bounds on D for candidate pairs (replicate ``pr``, xmin index ``pi``) from m+1 tail points."""
    lb = np.empty(pr.size)
    ub = np.empty(pr.size)
    t = np.arange(m + 1) / m
    Lf = L.ravel()
    step = max(1, _CHUNK // (m + 1))
    for s in range(0, pr.size, step):
        r, i, ee = pr[s:s + step], pi[s:s + step], e[s:s + step]
        n = (N - i).astype(np.float64)
        K = np.floor((n - 1.0)[:, None] * t[None, :]).astype(np.int64)
        base = r * N + i
        A = (Lf[base[:, None] + K] - Lf[base][:, None]) * ee[:, None]
        F = -np.expm1(A)
        q = K / n[:, None]
        dev = np.abs(F - q)
        lo = dev.max(axis=1)
        gap = np.maximum(F[:, 1:] - q[:, :-1], q[:, 1:] - F[:, :-1]).max(axis=1) - 1.0 / n
        lb[s:s + step] = lo
        ub[s:s + step] = np.maximum(lo, gap)
    return lb, ub


def _pair_exact(L: np.ndarray, pr: np.ndarray, pi: np.ndarray, e: np.ndarray, N: int,
                stop: float = math.inf) -> np.ndarray:
    """KS distance of each candidate pair over its whole tail (in log space; exact up to rounding).

    With ``stop``, a pair's evaluation ends as soon as its running maximum reaches ``stop`` (the value
    returned is then a lower bound ≥ ``stop``); the tail is then scanned in doubling column chunks.
    """
    out = np.zeros(pr.size)
    order = np.argsort(pi, kind="stable")
    pos = 0
    while pos < order.size:
        i0 = int(pi[order[pos]])
        sel = order[pos:pos + max(8, _CHUNK // (N - i0))]
        pos += sel.size
        r, i, ee = pr[sel], pi[sel], e[sel]
        Li = L[r, i]
        nf = (N - i).astype(np.float64)
        act = np.arange(sel.size)
        width = N - i0 if not math.isfinite(stop) else 128
        c0 = i0
        while c0 < N and act.size:
            c1 = min(N, c0 + width)
            q = (np.arange(c0, c1)[None, :] - i[act, None]) / nf[act, None]
            dev = np.abs(np.expm1((L[r[act], c0:c1] - Li[act, None]) * ee[act, None]) + q)
            dev[q < 0] = 0.0
            out[sel[act]] = np.maximum(out[sel[act]], dev.max(axis=1))
            act = act[out[sel[act]] < stop]
            c0, width = c1, 2 * width
    return out


# ------------------------------------------------------------------------------------------------ decisions
class _Levels:
    """Interval certificates "D ≥ D0" for blocks of G consecutive xmin candidates of one replicate.

    With a probe j beyond the block, every candidate i of the block has |F_i(x_j) − (j−i)/n_i| ≥ D0 if
    ``e_max·(L_j − L_{i1}) ≤ ln(1 − q(i0, j) − D0)`` or ``e_min·(L_j − L_{i0}) ≥ ln(1 − q(i1, j) + D0)``, with
    e = 1 − α over the block's valid candidates and q(i, j) = (j−i)/n_i: A_i = e_i·(L_j − L_i) is bounded by
    the block's extremes and both thresholds grow with i. No exponential is evaluated; a block of one is the
    exact per-candidate test.
    """

    def __init__(self, L: np.ndarray, Ev: np.ndarray, last: int, D0: float) -> None:
        self.L, self.Ev, self.last, self.D0 = L, Ev, last, D0
        self.N = L.shape[1]
        self._memo: dict[tuple[int, int, float], tuple] = {}
        invalid = np.isnan(Ev)
        self._lo = np.where(invalid, np.inf, Ev)  # invalid candidates widen nothing
        self._hi = np.where(invalid, -np.inf, Ev)

    def _tables(self, G: int, m: int, shift: float):
        """Per block index: probes J, thresholds T1/T2 (they do not depend on the replicate), e extremes."""
        key = (G, m, shift)
        if key not in self._memo:
            self._memo[key] = self._make_tables(G, m, shift)
        return self._memo[key]

    def _make_tables(self, G: int, m: int, shift: float):
        N, last, D0 = self.N, self.last, self.D0
        B, width = self.Ev.shape
        i0 = np.arange(width // G) * G
        i1 = np.minimum(i0 + G - 1, last)
        t = (np.arange(1, m + 1) - shift) / (m + 1)
        J = np.minimum(i1[:, None] + np.ceil((N - 1 - i1)[:, None] * t[None, :]).astype(np.int64), N - 1)
        q0 = (J - i0[:, None]) / (N - i0)[:, None].astype(np.float64)
        q1 = (J - i1[:, None]) / (N - i1)[:, None].astype(np.float64)
        lo = 1.0 - q0 - D0
        T1 = np.where(lo > 0, np.log(np.where(lo > 0, lo, 1.0)), -np.inf) - _TOL
        T2 = np.log(1.0 - q1 + D0) + _TOL
        if G == 1:
            return i0, i1, J, T1, T2, self.Ev, self.Ev
        emin, emax = self._lo[:, 0::G].copy(), self._hi[:, 0::G].copy()
        for k in range(1, G):
            np.minimum(emin, self._lo[:, k::G], out=emin)
            np.maximum(emax, self._hi[:, k::G], out=emax)
        none = emin == np.inf  # a block without valid candidates is certified outright
        emin[none], emax[none] = np.nan, np.nan
        return i0, i1, J, T1, T2, emin, emax

    def certify_all(self, rows: np.ndarray, G: int, m: int, shift: float = 0.0) -> np.ndarray:
        """Every block of the given replicates (dense): a (len(rows), width // G) boolean array."""
        i0, i1, J, T1, T2, emin, emax = self._tables(G, m, shift)
        out = np.empty((rows.size, i0.size), dtype=bool)
        step = max(1, _CHUNK // (i0.size * m))  # rows per chunk: the work arrays stay in cache
        for c in range(0, rows.size, step):
            rr = rows[c:c + step]
            L = self.L[rr]
            LJ = L[:, J]  # rows × blocks × m
            with np.errstate(invalid="ignore"):
                hit = (emax[rr][:, :, None] * (LJ - L[:, i1][:, :, None]) <= T1) | \
                      (emin[rr][:, :, None] * (LJ - L[:, i0][:, :, None]) >= T2)
            out[c:c + step] = hit.any(axis=2) | np.isnan(emin[rr])
        return out

    def certify(self, r: np.ndarray, b: np.ndarray, G: int, m: int, shift: float = 0.0) -> np.ndarray:
        """Blocks (replicate ``r``, block index ``b`` of size G), certified with m probes beyond the block."""
        i0, i1, J, T1, T2, emin, emax = self._tables(G, m, shift)
        lo, hi = emin[r, b], emax[r, b]
        LJ = self.L[r[:, None], J[b]]
        with np.errstate(invalid="ignore"):
            hit = (hi[:, None] * (LJ - self.L[r, i1[b]][:, None]) <= T1[b]) | \
                  (lo[:, None] * (LJ - self.L[r, i0[b]][:, None]) >= T2[b])
        return hit.any(axis=1) | np.isnan(lo)


def _lead(pr: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Position of the smallest score within each run of equal ``pr`` (``pr`` sorted ascending)."""
    brk = np.r_[True, pr[1:] != pr[:-1]]
    seg = np.cumsum(brk) - 1
    cand = np.flatnonzero(score == np.minimum.reduceat(score, np.flatnonzero(brk))[seg])
    return cand[np.r_[True, seg[cand][1:] != seg[cand][:-1]]]


def decide_csn(blk: Any, D0: float, min_tail: int) -> tuple[np.ndarray, np.ndarray]:
    """For each replicate of the block: (D_replicate ≥ D0, needs an exact re-fit)."""
    L, N = blk.L, blk.N
    B = L.shape[0]
    last = N - min_tail
    width = -(-(last + 1) // 2) * 2  # candidates padded to whole blocks of 2
    S = np.cumsum(L[:, ::-1], axis=1)[:, ::-1][:, : last + 1]
    Lc = L[:, : last + 1]
    n = (N - np.arange(last + 1)).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = 1.0 + n / (S - n * Lc)
    good = (alpha > 1.0) & np.isfinite(alpha)  # candidates with alpha <= 1 have D = 1 >= D0
    good[:, 1:] &= Lc[:, 1:] != Lc[:, :-1]  # one candidate per distinct value
    good &= Lc < L[:, -1:]
    Ev = np.full((B, width), np.nan)
    Ev[:, : last + 1] = np.where(good, 1.0 - alpha, np.nan)
    ge = np.ones(B, dtype=bool)  # D_rep >= D0 until a candidate below D0 is found
    refit = np.zeros(B, dtype=bool)

    def settle(r: np.ndarray, d: np.ndarray) -> None:
        ge[r[d < D0 - _TOL]] = False
        refit[r[np.abs(d - D0) <= _TOL]] = True

    # 1. the replicate's own xmin (where its power-law part starts) is the likeliest winner: try it exactly
    ia = np.minimum(blk.nb, last)
    ra = np.flatnonzero(good[np.arange(B), ia])
    settle(ra, _pair_exact(L, ra, ia[ra], Ev[ra, ia[ra]], N, stop=D0 + _TOL))
    live = np.flatnonzero(ge & ~refit)
    if live.size == 0:
        return ge, refit
    # 2. certify "D >= D0" by blocks of 2 (dense), then single candidates (no exponentials)
    lv = _Levels(L, Ev, last, D0)
    open2 = ~lv.certify_all(live, 2, 12, 0.5)  # dense over all blocks: cheaper than gathering the few left
    r, b = np.nonzero(open2)
    r = np.repeat(live[r], 2)
    b = (b[:, None] * 2 + np.arange(2)[None, :]).ravel()
    inside = b <= last
    r, b = r[inside], b[inside]
    keep = ~lv.certify(r, b, 1, 16, 0.25)
    r, b = r[keep], b[keep]
    sel = good[r, b] & (b != ia[r])
    pr, pi = r[sel], b[sel]  # sorted by replicate (then candidate) by construction
    e = Ev[pr, pi]
    if pr.size:  # a replicate with many uncertified candidates usually has many below D0: try its middle one
        brk = np.flatnonzero(np.r_[True, pr[1:] != pr[:-1], True])
        mid = (brk[:-1] + brk[1:]) // 2
        settle(pr[mid], _pair_exact(L, pr[mid], pi[mid], e[mid], N, stop=D0 + _TOL))
        keep = ge[pr] & ~refit[pr]
        keep[mid] = False
        pr, pi, e = pr[keep], pi[keep], e[keep]
    # 3. bound the rest more and more finely; each round, evaluate every replicate's best candidate exactly
    m = 32
    while pr.size:
        short = (N - pi) <= 4 * m
        lb, ub = np.empty(pr.size), np.empty(pr.size)
        if short.any():
            lb[short] = ub[short] = _pair_exact(L, pr[short], pi[short], e[short], N)
            settle(pr[short], lb[short])
        if (~short).any():
            lb[~short], ub[~short] = _pair_bounds(L, pr[~short], pi[~short], e[~short], m, N)
        ge[pr[ub < D0 - _TOL]] = False
        keep = (lb < D0 + _TOL) & ~short & ge[pr] & ~refit[pr]
        pr, pi, e, lb = pr[keep], pi[keep], e[keep], lb[keep]
        if pr.size:
            first = _lead(pr, lb)
            settle(pr[first], _pair_exact(L, pr[first], pi[first], e[first], N, stop=D0 + _TOL))
            keep = ge[pr] & ~refit[pr]
            keep[first] = False
            pr, pi, e = pr[keep], pi[keep], e[keep]
        m *= 4
    return ge, refit


def decide_hill(blk: Any, D0: float, xmin_pos: float) -> tuple[np.ndarray, np.ndarray]:
    """For each replicate of the block: (D of the Hill fit ≥ D0, needs an exact re-fit)."""
    L, N = blk.L, blk.N
    B = L.shape[0]
    i = int(N / xmin_pos)
    s = L[:, i:].sum(axis=1) - (N - i) * L[:, i]
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = 1.0 + (N - i) / s
    d = np.ones(B)
    good = np.isfinite(alpha) & (alpha > 1.0) & (s > 0)
    if good.any():
        d[good] = _pair_exact(L, np.flatnonzero(good), np.full(int(good.sum()), i), 1.0 - alpha[good], N)
    return d >= D0, np.abs(d - D0) <= _TOL
