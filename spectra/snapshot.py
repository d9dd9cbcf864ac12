"""Frozen per-layer snapshots with memoized decompositions shared by every analyzer.

A :class:`LayerState` holds *copies* (never the live parameters) of one layer view at one step: the weight
W_t, the previous weight W_{t−1}, the update ΔW_t = W_t − W_{t−1} and the gradient G_{t−1} that produced it,
each only when some due analyzer asked for it. Decompositions (eigenvalues, top-k or full SVDs) are computed
at most once per matrix per snapshot, in float64 on CPU (or on the tensor's CUDA device), and shared.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from .functional.alignment import SVD_FULL_FRACTION  # re-exported: the truncated/full SVD threshold

__all__ = ["LayerState", "SVD", "MATRIX_KINDS", "SVD_FULL_FRACTION"]

MATRIX_KINDS = ("weight", "previous", "update", "grad")


@dataclass(frozen=True)
class SVD:
    """Top singular triplets of a matrix, descending: ``U[:, i] * S[i] @ Vh[i, :]``."""

    U: np.ndarray
    S: np.ndarray
    Vh: np.ndarray
    full: bool  # True when S holds every singular value


def _to_numpy64(t: Any) -> np.ndarray:
    if hasattr(t, "detach"):
        import torch

        return t.detach().to(device="cpu", dtype=torch.float64).numpy()
    return np.asarray(t, dtype=np.float64)


def _flatten_stack(a: np.ndarray) -> np.ndarray:
    """A (slices, rows, cols) stack seen as one matrix rows × (cols·slices), for vector-based metrics."""
    if a.ndim == 2:
        return a
    s, r, c = a.shape
    return np.ascontiguousarray(np.transpose(a, (1, 2, 0)).reshape(r, c * s))


@dataclass(eq=False)
class LayerState:
    """One layer view at one step.

    Attributes:
        layer: layer name (e.g. ``"encoder.0.fc1"``).
        view: view name (``"W"`` for the whole matrix, ``"q"``/``"k"``/``"v"``, gate names, slice names).
        step: completed optimizer steps when the snapshot was taken (0 = initial weights).
        tensors: matrix kind → copy (2-D, or 3-D stack of slices pooled for the ESD). Kinds: ``weight``
            (W_t), ``previous`` (W_{t−1}), ``update`` (ΔW_t), ``grad`` (G_{t−1}).
        eig_scale: factor applied to eigenvalues of this view (WeightWatcher's ½ for pooled Conv2d slices).
        normalize: divide eigenvalues by N (the (1/N)·WᵀW convention).
        esd_method: method passed to :func:`spectra.functional.esd`.
        module_type: class name of the owning module.
        context: free-form extras (e.g. the learning rate) for analyzers that want them.
    """

    layer: str
    view: str
    step: int
    tensors: Mapping[str, Any]
    eig_scale: float = 1.0
    normalize: bool = False
    esd_method: str = "auto"
    module_type: str = ""
    context: Mapping[str, Any] = field(default_factory=dict)
    _cache: dict = field(default_factory=dict, repr=False)

    def __setattr__(self, name: str, value: Any) -> None:
        if getattr(self, "_frozen", False):
            raise AttributeError(f"LayerState is frozen; cannot set {name!r}")
        object.__setattr__(self, name, value)

    def __post_init__(self) -> None:
        unknown = set(self.tensors) - set(MATRIX_KINDS)
        if unknown:
            raise ValueError(f"unknown matrix kind(s) {sorted(unknown)}; allowed: {', '.join(MATRIX_KINDS)}")
        object.__setattr__(self, "_frozen", True)

    # ------------------------------------------------------------------ access
    def has(self, kind: str) -> bool:
        """Whether the snapshot holds this matrix kind."""
        return kind in self.tensors and self.tensors[kind] is not None

    def _require(self, kind: str) -> Any:
        if not self.has(kind):
            raise KeyError(f"layer {self.layer!r} view {self.view!r} has no {kind!r} matrix at step {self.step}")
        return self.tensors[kind]

    def array(self, kind: str = "weight") -> np.ndarray:
        """The matrix as float64 numpy (a stack of slices is flattened to rows × (cols·slices))."""
        key = ("array", kind)
        if key not in self._cache:
            self._cache[key] = _flatten_stack(_to_numpy64(self._require(kind)))
        return self._cache[key]

    def shape(self, kind: str = "weight") -> tuple[int, int]:
        """(rows, cols) of the matrix as analysed (after flattening stacks)."""
        t = self._require(kind)
        shp = tuple(t.shape)
        if len(shp) == 3:
            return shp[1], shp[2] * shp[0]
        return shp  # type: ignore[return-value]

    # ------------------------------------------------------------------ decompositions
    def evals(self, kind: str = "weight") -> np.ndarray:
        """Eigenvalues of the matrix's Gram (pooled over slices, scaled by ``eig_scale``), ascending."""
        key = ("evals", kind)
        if key not in self._cache:
            from .functional.esd import esd, esd_pooled

            t = self._require(kind)
            if len(tuple(t.shape)) == 3:
                lam = esd_pooled(t, scale=self.eig_scale, normalize=self.normalize, method=self.esd_method)
            else:
                # CPU: the float64 copy that the SVDs use too; CUDA: stay on the device
                src = t if getattr(t, "is_cuda", False) else self.array(kind)
                lam = esd(src, normalize=self.normalize, method=self.esd_method) * self.eig_scale
            lam.setflags(write=False)
            self._cache[key] = lam
        return self._cache[key]

    def svd(self, kind: str = "weight", k: int | None = None) -> SVD:
        """Top-``k`` singular triplets (all when ``k`` is None), computed once and shared.

        A full thin SVD, once computed, serves every later ``k``; a truncated one serves every smaller ``k``.
        A truncated method is used when ``k`` is small relative to min(N, M) (see :data:`SVD_FULL_FRACTION`).
        """
        from .functional.alignment import top_svd

        best = None
        for key, val in self._cache.items():
            if key[0] != "svd" or key[1] != kind:
                continue
            if val.full or (k is not None and len(val.S) >= k):
                if best is None or val.full:
                    best = val
        if best is None:
            U, S, Vh, is_full = top_svd(self.array(kind), k)
            best = SVD(U, S, Vh, is_full)
            self._cache[("svd", kind, None if is_full else k)] = best
        if k is None or k >= len(best.S):
            return best
        return SVD(best.U[:, :k], best.S[:k], best.Vh[:k], False)

    def release(self) -> None:
        """Drop the copies and cached decompositions (the monitor calls this after a step)."""
        self._cache.clear()
        object.__setattr__(self, "tensors", {})
