"""FARMS: heavy-tail exponents without aspect-ratio bias, from fixed-shape sub-matrix ESDs.

Liu et al., "Eigenspectrum Analysis of Neural Networks without Aspect Ratio Bias" (FARMS, ICML 2025). The
ESD of an N×M matrix depends on Q = N/M even for pure noise (Marchenko–Pastur), so α fitted to the whole ESD
drifts with Q (Hill-median α of a Gaussian matrix rises from ≈2.1 at Q = 1 to ≈4.5 at Q = 8). FARMS instead
pools the eigenvalues of many sub-matrices of one fixed shape a × Q·a (default 100 × 200) and fits that pooled
ESD, so matrices of any shape are measured on the same footing.

Windows (the reference implementation's ``fixed_sampling``, ``sampling_ops_per_dim = 10``): along each axis
of length L with window length w, ``step = max(1, (L − w) // (k − 1))``, ``min(k, (L − w) // step + 1)``
windows starting at ``min(i·step, L − w)``: a grid of up to k × k windows, overlapping when L < k·w. The
matrix is used in its given orientation (rows × cols) when the window fits; otherwise transposed; when it
fits neither way, the window shrinks to the largest a × Q·a that fits (a ≥ ``min_window``), which for a
square Conv2d slice of M channels gives FARMS's (M/Q) × M blocks.

The pooled eigenvalues λ = σ² (no 1/N, times ``scale``) are fitted by Hill-median (FARMS's ``xmin_mid``,
``xmin_pos = 2``) or any :func:`~spectra.functional.fit_power_law` method.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._validate import as_finite_stack
from .powerlaw import TailFit, fit_power_law

__all__ = ["FarmsESD", "farms_windows", "farms_esd", "farms_alpha"]


@dataclass(frozen=True)
class FarmsESD:
    """The pooled sub-matrix ESD of :func:`farms_esd`.

    Attributes:
        evals: pooled eigenvalues σ² of every window (times ``scale``), ascending.
        n_windows: number of windows (summed over slices for a stack).
        window: (rows, cols) of each window, in the orientation used.
        transposed: the matrix was transposed to fit the window.
    """

    evals: np.ndarray
    n_windows: int
    window: tuple[int, int]
    transposed: bool


def _starts(length: int, w: int, k: int) -> np.ndarray:
    step = max(1, (length - w) // (k - 1)) if k > 1 else max(1, length - w + 1)
    n = min(k, max(1, (length - w) // step + 1))
    return np.minimum(np.arange(n) * step, length - w)


def farms_windows(shape: tuple[int, int], *, window: int = 100, q: float = 2.0, per_dim: int = 10,
                  min_window: int = 8) -> tuple[np.ndarray, np.ndarray, int, int, bool] | None:
    """Window grid for a ``rows × cols`` matrix: (row starts, col starts, a, b, transposed) or None.

    Args:
        shape: the matrix shape (rows, cols) in its given orientation.
        window: rows a of a window (its short side when q ≥ 1).
        q: the window's aspect ratio b/a (FARMS: 2).
        per_dim: windows per axis (FARMS: 10).
        min_window: smallest a allowed when the window must shrink.

    Returns:
        None when even an ``min_window × ⌊q·min_window⌋`` window does not fit.
    """
    rows, cols = int(shape[0]), int(shape[1])
    a = int(window)
    b = int(round(q * a))
    for tr, (r, c) in ((False, (rows, cols)), (True, (cols, rows))):
        if a <= r and b <= c:
            return _starts(r, a, per_dim), _starts(c, b, per_dim), a, b, tr
    # shrink: the largest a with a <= short side and q*a <= long side
    short, long_ = min(rows, cols), max(rows, cols)
    a = min(a, short, int(math.floor(long_ / q)))
    if a < min_window:
        return None
    b = int(round(q * a))
    tr = rows > cols  # put the long side of the window along the long side of the matrix
    r, c = (cols, rows) if tr else (rows, cols)
    return _starts(r, a, per_dim), _starts(c, b, per_dim), a, b, tr


def _window_evals(W: np.ndarray, rs: np.ndarray, cs: np.ndarray, a: int, b: int) -> np.ndarray:
    """σ² of every a × b window (batched Gram eigenvalues of the a × a side)."""
    ii = (rs[:, None] + np.arange(a)[None, :])[:, None, :, None]  # nr × 1 × a × 1
    jj = (cs[:, None] + np.arange(b)[None, :])[None, :, None, :]  # 1 × nc × 1 × b
    blocks = W[ii, jj].reshape(-1, a, b)
    gram = blocks @ np.swapaxes(blocks, 1, 2)
    lam = np.linalg.eigvalsh(gram).ravel()
    return np.clip(lam, 0.0, None)


def farms_esd(W: Any, *, window: int = 100, q: float = 2.0, per_dim: int = 10, scale: float = 1.0,
              min_window: int = 8) -> FarmsESD | None:
    """Pooled ESD of FARMS's fixed-shape windows of a matrix, or of every slice of a (slices, rows, cols) stack.

    Args:
        W: 2-D matrix or 3-D stack (numpy or torch; converted to float64).
        window, q, per_dim, min_window: see :func:`farms_windows`.
        scale: multiply the eigenvalues (e.g. WeightWatcher's ½ for pooled Conv2d slices; α does not change).

    Returns:
        A :class:`FarmsESD`, or None when the matrix is too small for a window.

    Raises:
        ValueError: not a 2-D or 3-D array, or non-finite values.
    """
    A = as_finite_stack(W)
    grid = farms_windows(A.shape[1:], window=window, q=q, per_dim=per_dim, min_window=min_window)
    if grid is None:
        return None
    rs, cs, a, b, tr = grid
    parts = [_window_evals(S.T if tr else S, rs, cs, a, b) for S in A]
    lam = np.sort(np.concatenate(parts)) * float(scale)
    return FarmsESD(lam, int(A.shape[0] * rs.size * cs.size), (a, b), tr)


def farms_alpha(W: Any, *, window: int = 100, q: float = 2.0, per_dim: int = 10, scale: float = 1.0,
                method: str = "hill", xmin_pos: float = 2, min_window: int = 8,
                **fit_options: Any) -> tuple[TailFit, FarmsESD | None]:
    """FARMS α: the power-law fit of :func:`farms_esd` (Hill-median by default, as FARMS).

    Returns:
        (the :class:`~spectra.functional.powerlaw.TailFit`, the pooled ESD). The fit has
        ``status="skipped"`` when the matrix is too small for a window.
    """
    pooled = farms_esd(W, window=window, q=q, per_dim=per_dim, scale=scale, min_window=min_window)
    if pooled is None:
        shape = tuple(np.shape(W))[-2:]
        fit = TailFit(*(math.nan,) * 5, 0, method, "skipped",
                      f"matrix {shape[0]}x{shape[1]} is too small for a {min_window}x{int(round(q * min_window))} "
                      "FARMS window")
        return fit, None
    kw = dict(fit_options)
    if method == "hill":
        kw["xmin_pos"] = xmin_pos
    lam = pooled.evals
    floor = float(lam[-1]) * max(pooled.window) * np.finfo(np.float64).eps * 16 if lam.size else 0.0
    if lam.size and float(np.median(lam)) <= floor:  # rank-deficient windows: the median is rounding noise
        n_zero = int(np.count_nonzero(lam <= floor))
        fit = TailFit(*(math.nan,) * 5, 0, method, "failed",
                      f"{n_zero} of {lam.size} window eigenvalues are zero to rounding (rank-deficient or constant "
                      "matrix): the pooled ESD has no tail to fit", n_total=int(lam.size))
        return fit, pooled
    return fit_power_law(lam, method=method, **kw), pooled
