"""The randomisation null: the ESD of an element-shuffled copy of W ("correlation traps").

Martin & Mahoney (JMLR 2021, §5) compare a layer's ESD with that of the same entries in random positions.
Shuffling keeps the entry distribution and destroys every correlation, so the shuffled ESD is what the
layer's entries alone produce: a Marchenko–Pastur bulk when the entries are light-tailed. Eigenvalues of the
*shuffled* matrix beyond its MP edge are "correlation traps": a few very large entries that create spikes
on their own, whatever their position. WeightWatcher's ``randomize=True`` reports these as
``rand_num_spikes`` (``num_traps``).

Definitions here (λ = σ², no 1/N, times the view's scale; N ≥ M the matrix dimensions):

* the permutation: a uniformly random permutation of the flattened matrix (each slice of a stack
  separately, as WeightWatcher shuffles each Conv2d slice), drawn from a seeded ``numpy.random.Generator``
  or given explicitly. WeightWatcher draws ``np.random.shuffle`` from the global, unseeded generator; the
  same permutation is ``np.random.RandomState(s).permutation(size)`` after ``np.random.seed(s)``.
* ``rand_lambda_max``: the largest shuffled eigenvalue (WeightWatcher's ``max_rand_eval``).
* ``rand_bulk_max``: the MP upper edge of the shuffled ESD, with σ² estimated robustly from its median
  (:func:`spectra.functional.mp.mp_fit`; WeightWatcher fits σ by a KDE brute force).
* ``rand_num_spikes``: shuffled eigenvalues above ``rand_bulk_max`` plus one Tracy–Widom scale.
* ``rand_distance``: WeightWatcher's ``jensen_shannon_distance(evals, rand_evals)``: the Jensen–Shannon
  distance (natural log) between the two *sorted eigenvalue arrays*, each normalised to sum 1 and paired
  index by index: a distance between the two normalised quantile functions, not between densities.
  ``distance="wasserstein"`` gives instead the 1-Wasserstein distance between the two ESDs of log10 λ
  (scale-free, in decades).
* ``ww_softrank`` = λ_max(shuffled)/λ_max and ``ww_maxdist`` = λ_max − λ_max(shuffled), as WeightWatcher.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._validate import as_finite_stack
from .mp import mp_fit

__all__ = ["RandomizedESD", "shuffle_matrix", "randomized_esd", "rand_distance", "DISTANCES"]

DISTANCES = ("js", "wasserstein")


@dataclass(frozen=True)
class RandomizedESD:
    """Result of :func:`randomized_esd` (see the module docstring for the definitions).

    Attributes:
        rand_evals: the shuffled ESD, ascending (pooled over slices, times ``scale``).
        rand_lambda_max, rand_bulk_max, rand_num_spikes: the null's largest eigenvalue, MP edge and traps.
        rand_sigma2: the MP entry variance fitted to the shuffled ESD (unscaled); 0 when its median eigenvalue
            is at rounding level (then ``rand_bulk_max`` is NaN and ``rand_num_spikes`` 0).
        rand_distance: the distance between the real and the shuffled ESD.
        ww_softrank, ww_maxdist: λ_max(shuffled)/λ_max and λ_max − λ_max(shuffled).
    """

    rand_evals: np.ndarray
    rand_lambda_max: float
    rand_bulk_max: float
    rand_num_spikes: int
    rand_sigma2: float
    rand_distance: float
    ww_softrank: float
    ww_maxdist: float


def shuffle_matrix(W: Any, rng: Any = None, *, permutation: np.ndarray | None = None) -> np.ndarray:
    """An element-shuffled copy of W (each slice of a 3-D stack shuffled separately).

    Args:
        W: 2-D matrix or (slices, rows, cols) stack.
        rng: ``numpy.random.Generator``, a seed for one, or None (fresh entropy).
        permutation: use this permutation of the flattened matrix instead (2-D input only), e.g.
            ``np.random.RandomState(s).permutation(W.size)`` to reproduce WeightWatcher after
            ``np.random.seed(s)``.

    Returns:
        The shuffled copy, with W's shape (float64).
    """
    A = as_finite_stack(W)
    squeeze = np.ndim(W) == 2
    if permutation is not None:
        if A.shape[0] != 1:
            raise ValueError("an explicit permutation applies to a 2-D matrix only")
        p = np.asarray(permutation)
        if p.shape != (A[0].size,) or not np.array_equal(np.sort(p), np.arange(A[0].size)):
            raise ValueError(f"permutation must be a permutation of range({A[0].size})")
        out = A[0].ravel()[p].reshape(A.shape[1:])[None]
    else:
        gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        out = np.stack([S.ravel()[gen.permutation(S.size)].reshape(S.shape) for S in A])
    return out[0] if squeeze else out


def _evals(A: np.ndarray, scale: float) -> np.ndarray:
    lam = np.concatenate([np.linalg.svd(S, compute_uv=False) ** 2 for S in A])
    return np.sort(lam) * float(scale)


def rand_distance(evals: Any, rand_evals: Any, *, distance: str = "js") -> float:
    """Distance between a real and a shuffled ESD (see the module docstring).

    Args:
        evals, rand_evals: the two spectra (same length for ``"js"``).
        distance: ``"js"`` (WeightWatcher's definition) or ``"wasserstein"`` (W1 of log10 λ, λ > 0 only).

    Raises:
        ValueError: unknown ``distance``, or ``"js"`` with arrays of different lengths.
    """
    p = np.sort(np.asarray(evals, dtype=np.float64).ravel())
    q = np.sort(np.asarray(rand_evals, dtype=np.float64).ravel())
    if distance == "js":
        if p.size != q.size:
            raise ValueError(f"the 'js' distance pairs eigenvalues index by index: sizes {p.size} and {q.size}")
        from scipy.spatial.distance import jensenshannon

        p, q = np.clip(p, 0, None), np.clip(q, 0, None)
        if not (p.sum() > 0 and q.sum() > 0):
            return math.nan
        return float(jensenshannon(p, q))
    if distance == "wasserstein":
        from scipy.stats import wasserstein_distance

        p, q = p[p > 0], q[q > 0]
        if p.size == 0 or q.size == 0:
            return math.nan
        return float(wasserstein_distance(np.log10(p), np.log10(q)))
    raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")


def randomized_esd(W: Any, rng: Any = None, *, evals: Any = None, scale: float = 1.0, distance: str = "js",
                   permutation: np.ndarray | None = None) -> RandomizedESD:
    """The randomisation null of W: shuffled ESD, its MP edge, traps, and its distance to the real ESD.

    Args:
        W: 2-D matrix or (slices, rows, cols) stack (numpy or torch).
        rng: ``numpy.random.Generator``, a seed or a ``SeedSequence`` (None: fresh entropy).
        evals: the real ESD when already computed (default: computed here, with the same ``scale``).
        scale: eigenvalue scale of the view (½ for pooled Conv2d slices).
        distance: see :func:`rand_distance`.
        permutation: explicit permutation (2-D only; see :func:`shuffle_matrix`).

    Raises:
        ValueError: bad shapes, non-finite entries, or an unknown ``distance``.
    """
    if distance not in DISTANCES:
        raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
    A = as_finite_stack(W)
    S = shuffle_matrix(A if np.ndim(W) == 3 else A[0], rng, permutation=permutation)
    S = S[None] if S.ndim == 2 else S
    lam_r = _evals(S, scale)
    lam = _evals(A, scale) if evals is None else np.sort(np.asarray(evals, dtype=np.float64).ravel())
    N, M = max(A.shape[1:]), min(A.shape[1:])
    lmax_r, lmax = float(lam_r[-1]), float(lam[-1])
    # a median at rounding level (most entries zero, or a constant matrix) leaves no bulk to count traps against
    if lmax_r > 0 and float(np.median(lam_r)) > lmax_r * N * np.finfo(np.float64).eps:
        fit = mp_fit(lam_r / scale, N, M)
        bulk_max, s2 = fit.bulk_max * scale, fit.sigma2
        n_traps = int(np.count_nonzero(lam_r > (fit.bulk_max + fit.tw_scale) * scale))
    else:
        bulk_max, n_traps, s2 = math.nan, 0, 0.0 if lmax_r > 0 else math.nan
    return RandomizedESD(
        rand_evals=lam_r,
        rand_lambda_max=lmax_r,
        rand_bulk_max=bulk_max,
        rand_num_spikes=n_traps,
        rand_sigma2=s2,
        rand_distance=rand_distance(lam, lam_r, distance=distance),
        ww_softrank=lmax_r / lmax if lmax > 0 else math.nan,
        ww_maxdist=lmax - lmax_r,
    )
