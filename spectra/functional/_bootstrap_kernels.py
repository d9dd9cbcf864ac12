"""Numerical kernels of the bootstrap decision engine (:mod:`spectra.functional._bootstrap_decide`).

A candidate xmin at sorted index i of a replicate (ascending log values ``L``, exponent ``e = 1 − α < 0``,
tail size ``n = N − i``) has the KS deviations
``dev(c) = F(x_c) − (c − i)/n = (N − c)/n − exp(e·(L_c − L_i))`` for c ≥ i, and D = max |dev|. Two kinds of
evaluation:

* **float32 with a proven error bound** (``*32``): the curves of whole candidates (their extremes and where
  they lie) and the deviations of many candidates at given probe columns. The logs are stored relative to a
  per-row reference, ``|L − ref| ≤ R``, and ``e32`` is within 3u of ``e`` (u = 2⁻²⁴). Then, with
  d = L_c − L_i ∈ [0, 2R]: the rounded difference is within 4uR of d, the rounded product e32·d32 within
  ``4|e|uR + 6|e|uR + 2|e|uR = 12|e|uR`` of e·d (both ≤ 0, where exp is 1-Lipschitz), float32 ``exp`` adds
  at most 4 ulp ≤ 8u below 1 (NumPy's SIMD float32 exp is within 2.52 ulp, libm's within 1), and
  ``(N − c)·(1/n)`` and the final difference add 3u: the float32 deviation is within ``12|e|uR + 11u`` of the
  exact one. :func:`margin32` allows ``32u·(1 + |e|R)``, well over twice that. A float32 deviation beyond
  D0 ± (TOL + margin) is on the same side of D0 ± TOL in exact arithmetic.
* **float64 exact** (:func:`exact64`): the deviations over a whole tail (exact up to rounding, ~1e-15), for
  the few curves that come within the float32 bound of D0.

Columns before the candidate (c < i) are neutralised by clamping ``L_c − L_i ≥ 0`` and ``(N − c)/n ≤ 1``,
which makes their deviation exactly 0 (as is the deviation at c = i itself).
"""

from __future__ import annotations

import numpy as np

__all__ = ["U32", "CHUNK", "margin32", "thresholds32", "curves32", "window_curves32", "probe32", "exact64"]

U32 = 2.0 ** -24  # unit roundoff of float32
CHUNK = 1 << 16  # elements per work array (float32: 256 kB, in cache)


def margin32(e_abs: np.ndarray, R: np.ndarray) -> np.ndarray:
    """Bound on |float32 deviation − exact deviation| for exponents of magnitude ``e_abs`` and log range R."""
    return 32.0 * U32 * (1.0 + e_abs * R)


def thresholds32(level: float, e32: np.ndarray, R: np.ndarray, out: np.ndarray) -> np.ndarray:
    """float32 thresholds ≥ ``level + margin32(|e|, R)`` (``level > 0``), computed in float32 into ``out``.

    ``a + b·|e32|`` with ``a``, ``b`` inflated by 1e-6 relative: that covers |e| ≤ |e32|·(1 + 3u) and the
    rounding of the three float32 operations (each ≤ u relative, all terms positive).
    """
    a = np.float32((level + 32.0 * U32) * (1.0 + 1e-6))
    b = (32.0 * U32 * (1.0 + 1e-6)) * R.astype(np.float32)
    np.abs(e32, out=out)
    out *= b
    out += a
    return out


def curves32(L32: np.ndarray, rows: np.ndarray, cand: np.ndarray, e32: np.ndarray,
             N: int) -> tuple[np.ndarray, ...]:
    """Extremes of the deviation curve of each (row, candidate) pair, in float32.

    Args:
        L32: float32 logs relative to their row reference (rows × N).
        rows, cand: the pairs (row of ``L32``, candidate column).
        e32: float32 exponent of each pair.
        N: points per replicate.

    Returns:
        ``(hi, jhi, lo, jlo)``: the largest deviation and its column, the smallest and its column (float64
        values of the float32 evaluation; see :func:`margin32` for how far they may be from exact).
    """
    P = rows.size
    hi, lo = np.empty(P), np.empty(P)
    jhi, jlo = np.empty(P, dtype=np.int64), np.empty(P, dtype=np.int64)
    order = np.argsort(cand, kind="stable")
    pos = 0
    while pos < P:
        c0 = int(cand[order[pos]])
        sel = order[pos:pos + max(1, CHUNK // (N - c0))]
        pos += sel.size
        r, i = rows[sel], cand[sel]
        d = L32[r, c0:] - L32[r, i][:, None]
        np.maximum(d, 0.0, out=d)
        d *= e32[sel][:, None]
        np.exp(d, out=d)
        om = np.arange(N - c0, 0, -1, dtype=np.float32)[None, :] * (1.0 / (N - i)).astype(np.float32)[:, None]
        np.minimum(om, 1.0, out=om)
        om -= d
        a, b = om.argmax(axis=1), om.argmin(axis=1)
        k = np.arange(sel.size)
        hi[sel], lo[sel] = om[k, a], om[k, b]
        jhi[sel], jlo[sel] = a + c0, b + c0
    return hi, jhi, lo, jlo


def window_curves32(E: np.ndarray, lead: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, ...]:
    """:func:`curves32` for the candidate at column ``lead[r]`` of every row of a float64 window ``E``.

    ``E`` holds non-negative values (``ln x`` up to an offset and a scale, zero before ``lead``), so the
    reference is 0 and ``R`` is each row's last value; ``s`` is the exponent per unit of ``E``. Worked in row
    chunks, without gathering copies.
    """
    B, T = E.shape
    hi, lo = np.empty(B), np.empty(B)
    jhi, jlo = np.empty(B, dtype=np.int64), np.empty(B, dtype=np.int64)
    s32 = s.astype(np.float32)
    invn32 = (1.0 / (T - lead)).astype(np.float32)
    back = np.arange(T, 0, -1, dtype=np.float32)  # T − c: (1 − q)·n
    step = max(1, CHUNK // max(T, 1))
    for c in range(0, B, step):
        sl = slice(c, min(B, c + step))
        d = E[sl].astype(np.float32)
        k = np.arange(d.shape[0])
        d -= d[k, lead[sl]][:, None]
        np.maximum(d, 0.0, out=d)
        d *= s32[sl, None]
        np.exp(d, out=d)
        om = back[None, :] * invn32[sl, None]
        np.minimum(om, 1.0, out=om)
        om -= d
        a, b = om.argmax(axis=1), om.argmin(axis=1)
        hi[sl], lo[sl], jhi[sl], jlo[sl] = om[k, a], om[k, b], a, b
    return hi, jhi, lo, jlo


def probe32(Lj: np.ndarray, j: np.ndarray, Li: np.ndarray, e32: np.ndarray, invn: np.ndarray, thr: np.ndarray,
            N: int) -> np.ndarray:
    """|deviation| ≥ thr of candidates at probe columns, in float32 (arguments broadcast to ``Lj − Li``).

    Args:
        Lj: float32 log at the probe; j: the probe column; Li: float32 log at the candidate.
        e32: float32 exponent; invn: float32 ``1/n`` of the candidate; thr: float32 threshold.
        N: points per replicate.
    """
    d = Lj - Li
    np.maximum(d, 0.0, out=d)
    d *= e32
    np.exp(d, out=d)
    om = np.asarray(N - j, dtype=np.float32) * invn  # (N − j)/n = 1 − q
    np.minimum(om, 1.0, out=om)
    np.subtract(om, d, out=d)
    np.abs(d, out=d)
    return d >= thr


def exact64(L: np.ndarray, rows: np.ndarray, cand: np.ndarray, e: np.ndarray, N: int) -> np.ndarray:
    """KS distance of each (row, candidate) pair over its whole tail, in float64 (exact up to rounding)."""
    out = np.zeros(rows.size)
    order = np.argsort(cand, kind="stable")
    pos = 0
    while pos < order.size:
        i0 = int(cand[order[pos]])
        sel = order[pos:pos + max(8, CHUNK // (2 * (N - i0)))]
        pos += sel.size
        r, i = rows[sel], cand[sel]
        q = (np.arange(i0, N)[None, :] - i[:, None]) / (N - i)[:, None].astype(np.float64)
        dev = np.abs(np.expm1((L[r, i0:] - L[r, i][:, None]) * e[sel][:, None]) + q)
        dev[q < 0] = 0.0  # columns before the candidate
        out[sel] = dev.max(axis=1)
    return out
