"""The decision engine of :mod:`spectra.functional.bootstrap`: is a replicate's fitted D below the observed D0?

See that module's docstring for the stages and :mod:`spectra.functional._bootstrap_kernels` for the float32
error bound. Everything works on a block of replicates (:class:`spectra.functional._bootstrap_sample.Block`)
and returns, per replicate, the decision and whether it lies within the rounding margin of D0 (then the
caller re-decides it with the library's own fit).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._bootstrap_kernels import CHUNK, curves32, exact64, margin32, probe32, thresholds32, window_curves32

__all__ = ["decide_csn", "decide_hill", "TOL"]

TOL = 1e-9  # decisions this close to the observed D are re-made exactly by the library's fit
_DENSE_FRACTION = 0.2  # anchor rounds test every candidate while more than this fraction is uncertified


class _Verdicts:
    """Per-replicate decisions of a block: "D ≥ D0" until a candidate below D0 is found; refits near D0."""

    def __init__(self, B: int, D0: float) -> None:
        self.D0 = D0
        self.ge = np.ones(B, dtype=bool)
        self.refit = np.zeros(B, dtype=bool)

    def below(self, rows: np.ndarray) -> None:
        """These replicates have a candidate whose D is certainly below D0 − TOL."""
        self.ge[rows] = False

    def settle(self, rows: np.ndarray, d: np.ndarray) -> None:
        """Float64 distances ``d`` of one candidate of each of the given replicates."""
        self.ge[rows[d < self.D0 - TOL]] = False
        self.refit[rows[np.abs(d - self.D0) <= TOL]] = True

    def open(self, rows: np.ndarray) -> np.ndarray:
        """Which of the given replicates are still undecided."""
        return self.ge[rows] & ~self.refit[rows]


def _classify(v: _Verdicts, rows: np.ndarray, D32: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort float32 distances (within ``m`` of exact) into below D0 (recorded), clearly above, and ambiguous."""
    D0 = v.D0
    below = D32 < D0 - TOL - m
    v.below(rows[below])
    clear = D32 >= D0 + TOL + m
    return clear, ~below & ~clear


# ------------------------------------------------------------------------------------------------ step 2
def _own_xmin(blk: Any, v: _Verdicts, min_tail: int) -> tuple[np.ndarray, np.ndarray]:
    """Step 2: the candidate where each replicate's power-law part starts (index ``nb``), from that part alone.

    Returns:
        ``(probes, certified)``: per replicate the columns of that candidate's largest and smallest
        deviation (−1 where it was not evaluated) and whether the candidate itself has D ≥ D0.
    """
    B, N, T = blk.B, blk.N, blk.T
    probes = np.full((B, 2), -1, dtype=np.int64)
    certified = np.zeros(B, dtype=bool)
    rows = np.flatnonzero(blk.nt >= max(min_tail, 2))  # the candidate leaves at least min_tail points
    if rows.size == 0:
        return probes, certified
    E, lead, nt = blk.E, np.minimum(blk.lead, T - 1), blk.nt  # (rows without a power-law part are not used)
    t = E.sum(axis=1) - nt * E[np.arange(B), lead]  # Σ (E_c − E_first) over the tail = n/(inv·(α − 1))
    ok = np.zeros(B, dtype=bool)
    ok[rows] = t[rows] > nt[rows] * 1e-30  # α > 1, and an exponent float32 holds
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(ok, -nt / t, 0.0)  # e·inv: the exponent of exp(·) per unit of E
    hi, jhi, lo, jlo = window_curves32(E, lead, s)
    rows = np.flatnonzero(ok)
    hi, jhi, lo, jlo, s, lead = hi[rows], jhi[rows], lo[rows], jlo[rows], s[rows], lead[rows]
    clear, amb = _classify(v, rows, np.maximum(hi, -lo), margin32(np.abs(s), E[rows, -1]))
    if amb.any():
        v.settle(rows[amb], exact64(E, rows[amb], lead[amb], s[amb], T))
    done = clear | (amb & v.open(rows))
    probes[rows[done], 0] = jhi[done] + (N - T)
    probes[rows[done], 1] = jlo[done] + (N - T)
    certified[rows[done]] = True
    return probes, certified


# ------------------------------------------------------------------------------------------------ steps 3-4
class _Candidates:
    """Every xmin candidate of a set of replicates: exponents, validity, float32 logs and thresholds.

    Built in row chunks that stay in cache. ``thr32`` is 0 for the candidates that need no certificate
    (α ≤ 1, repeated values: D = 1 or no candidate at all).
    """

    def __init__(self, L: np.ndarray, D0: float, last: int, bufs: Any) -> None:
        P, N = L.shape
        C = last + 1
        self.L, self.N, self.C = L, N, C
        n = (N - np.arange(C)).astype(np.float64)
        negn32 = (-n).astype(np.float32)
        self.invn32 = (1.0 / n).astype(np.float32)
        ref = 0.5 * (L[:, 0] + L[:, -1])
        self.R = np.maximum(L[:, -1] - ref, ref - L[:, 0]) * (1.0 + 1e-12)  # |L − ref| ≤ R
        self.L32 = bufs.get("L32", (P, N), np.float32)
        self.e32 = bufs.get("e32", (P, C), np.float32)
        self.thr32 = bufs.get("thr32", (P, C), np.float32)
        step = max(1, CHUNK // (2 * N))
        S = bufs.get("S", (min(step, P), N))
        for c in range(0, P, step):
            sl = slice(c, min(P, c + step))
            Lc = L[sl]
            s = S[: Lc.shape[0]]
            np.cumsum(Lc[:, ::-1], axis=1, out=s[:, ::-1])  # suffix sums
            t = s[:, :C]
            t -= n * Lc[:, :C]  # Σ_{j≥i} L_j − n·L_i = n/(α − 1)
            # α > 1 and finite; the others have D = 1 ≥ D0. (Consecutive distinct logs differ by ~1e-16 at
            # least, so a real candidate has t ≫ 1e-30, and its −n/t is a normal float32.)
            valid = t > 1e-30
            valid[:, 1:] &= Lc[:, 1:C] != Lc[:, :C - 1]  # one candidate per distinct value
            e = self.e32[sl]
            np.copyto(e, t, casting="same_kind")  # e = −n/t in float32: within 3u of the exact value
            np.maximum(e, 1e-30, out=e)  # (masks are applied by products: masked stores are slow)
            np.divide(negn32, e, out=e)
            e *= valid
            np.subtract(Lc, ref[sl, None], out=self.L32[sl], casting="same_kind")
            thr = thresholds32(D0 + TOL, e, self.R[sl, None], self.thr32[sl])
            thr *= valid  # 0: certified outright

    def exponents(self, r: np.ndarray, i: np.ndarray) -> np.ndarray:
        """float64 exponents 1 − α of the given pairs (recomputed from the logs)."""
        N = self.N
        n = (N - i).astype(np.float64)
        S = np.array([self.L[a, b:].sum() for a, b in zip(r, i)])
        return -n / (S - n * self.L[r, i])

    def margin(self, r: np.ndarray, i: np.ndarray) -> np.ndarray:
        """Bound on the float32 error of the pairs' deviations (``|e| ≤ |e32|·(1 + 1e-6)``)."""
        return margin32(np.abs(self.e32[r, i]).astype(np.float64) * (1.0 + 1e-6), self.R[r])

    def certify_dense(self, cert: np.ndarray, rows: np.ndarray, probes: np.ndarray) -> None:
        """OR into ``cert`` (local rows × C) the candidates of ``rows`` certified at one of their row's probes.

        Works on contiguous row chunks (views, no gathered copies) of the rows' range; rows of the range not
        given get probe 0, which certifies nothing. A probe j only reaches candidates i ≤ j, so each chunk
        stops at its largest j.
        """
        if rows.size == 0:
            return
        C, N = self.C, self.N
        r0, r1 = int(rows.min()), int(rows.max()) + 1
        J = np.zeros((r1 - r0, probes.shape[1]), dtype=np.int64)
        J[rows - r0] = probes
        step = max(1, CHUNK // C)
        for c in range(r0, r1, step):
            sl = slice(c, min(r1, c + step))
            k = np.arange(sl.start, sl.stop)
            for j in J[sl.start - r0:sl.stop - r0].T:
                w = int(min(C, j.max() + 1))
                cert[sl, :w] |= probe32(self.L32[k, j][:, None], j[:, None], self.L32[sl, :w], self.e32[sl, :w],
                                        self.invn32[None, :w], self.thr32[sl, :w], N)

    def certify_pairs(self, pr: np.ndarray, pi: np.ndarray, probes: list[np.ndarray]) -> np.ndarray:
        """Pairs (local row, candidate) with |deviation| ≥ threshold at one of the probe columns given."""
        N, C = self.N, self.C
        Lf = self.L32.ravel()
        base = pr * N
        flat = pr * C + pi
        Li, e32, thr, invn = Lf[base + pi], self.e32.ravel()[flat], self.thr32.ravel()[flat], self.invn32[pi]
        ok = np.zeros(pr.size, dtype=bool)
        for j in probes:
            ok |= probe32(Lf[base + j], j, Li, e32, invn, thr, N)
        return ok


def _anchors(cs: _Candidates, v: _Verdicts, rows: np.ndarray, ar: np.ndarray,
             ai: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Evaluate the anchors (local row, candidate) over their tails (recording any below D0).

    Returns:
        The columns of each anchor's largest and smallest deviation: its replicate's next probes.
    """
    hi, jhi, lo, jlo = curves32(cs.L32, ar, ai, cs.e32[ar, ai], cs.N)
    clear, amb = _classify(v, rows[ar], np.maximum(hi, -lo), cs.margin(ar, ai))
    if amb.any():
        a = np.flatnonzero(amb)
        v.settle(rows[ar[a]], exact64(cs.L, ar[a], ai[a], cs.exponents(ar[a], ai[a]), cs.N))
    return jhi, jlo


def _uncertified(cert: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(local row, candidate) of the uncertified entries, sorted by row (flat indices: faster than nonzero)."""
    return np.divmod(np.flatnonzero(~cert), cert.shape[1])


def _dense_rounds(cs: _Candidates, v: _Verdicts, rows: np.ndarray,
                  cert: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Anchor rounds on every candidate, while more than ``_DENSE_FRACTION`` of them are uncertified.

    The anchor of a replicate is its last uncertified candidate. Returns the uncertified pairs left.
    """
    while True:
        cert[~v.open(rows)] = True
        pr, pi = _uncertified(cert)
        if pr.size < _DENSE_FRACTION * cert.size:
            return pr, pi
        last = np.flatnonzero(np.r_[pr[1:] != pr[:-1], True])
        ar, ai = pr[last], pi[last]
        jhi, jlo = _anchors(cs, v, rows, ar, ai)
        cert[ar, ai] = True
        live = np.flatnonzero(v.open(rows[ar]))
        cs.certify_dense(cert, ar[live], np.stack([jhi[live], jlo[live]], axis=1))


def _sparse_rounds(cs: _Candidates, v: _Verdicts, rows: np.ndarray, pr: np.ndarray, pi: np.ndarray) -> None:
    """Anchor rounds on the few uncertified (row, candidate) pairs left (sorted by row), until none is.

    The anchor of a replicate is its middle uncertified candidate.
    """
    while pr.size:
        brk = np.flatnonzero(np.r_[True, pr[1:] != pr[:-1]])
        ends = np.r_[brk[1:], pr.size]
        mid = (brk + ends) // 2
        jhi, jlo = _anchors(cs, v, rows, pr[mid], pi[mid])
        seg = np.repeat(np.arange(brk.size), ends - brk)
        keep = v.open(rows[pr[mid]])[seg]
        keep[mid] = False
        pr, pi, seg = pr[keep], pi[keep], seg[keep]
        if pr.size:
            keep = ~cs.certify_pairs(pr, pi, [jhi[seg], jlo[seg]])
            pr, pi = pr[keep], pi[keep]


def decide_csn(blk: Any, D0: float, min_tail: int) -> tuple[np.ndarray, np.ndarray]:
    """For each replicate of the block: (D_replicate ≥ D0, needs an exact re-fit).

    Steps 2–4 of :mod:`spectra.functional.bootstrap`: each replicate's own xmin, then, for the replicates it
    leaves open, every candidate at their probes and anchor rounds until each is certified or one is below D0.
    """
    v = _Verdicts(blk.B, D0)
    probes, certified = _own_xmin(blk, v, min_tail)
    rows = np.flatnonzero(v.open(np.arange(blk.B)))
    if rows.size == 0:
        return v.ge, v.refit
    last = blk.N - min_tail
    cs = _Candidates(blk.logs(rows), D0, last, blk.bufs)
    own = certified[rows] & (blk.nb[rows] <= last)
    cs.thr32[np.flatnonzero(own), blk.nb[rows][own]] = 0.0
    cert = np.less_equal(cs.thr32, 0.0, out=blk.bufs.get("cert", cs.thr32.shape, bool))
    with_probes = np.flatnonzero(probes[rows, 0] >= 0)
    cs.certify_dense(cert, with_probes, probes[rows[with_probes]])
    pr, pi = _dense_rounds(cs, v, rows, cert)
    _sparse_rounds(cs, v, rows, pr, pi)
    return v.ge, v.refit


def decide_hill(blk: Any, D0: float, xmin_pos: float) -> tuple[np.ndarray, np.ndarray]:
    """For each replicate of the block: (D of the Hill fit ≥ D0, needs an exact re-fit)."""
    B, N = blk.B, blk.N
    L = blk.logs(np.arange(B))
    i = int(N / xmin_pos)
    s = L[:, i:].sum(axis=1) - (N - i) * L[:, i]
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = 1.0 + (N - i) / s
    d = np.ones(B)
    good = np.isfinite(alpha) & (alpha > 1.0) & (s > 0)
    if good.any():
        d[good] = exact64(L, np.flatnonzero(good), np.full(int(good.sum()), i), 1.0 - alpha[good], N)
    return d >= D0, np.abs(d - D0) <= TOL
