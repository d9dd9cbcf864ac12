"""The ``alignment`` analyzer: how each optimizer update (and gradient) lines up with the weights.

For one layer view at step t it reads W_t (``weight``), W_{t−1} (``previous``), ΔW_t = W_t − W_{t−1}
(``update``) and the gradient G_{t−1} (``grad``), and compares the update's and the gradient's top-k singular
vectors with those of W_{t−1} ("before") and W_t ("after"), as in plugins/spectra_twolayer/PAPER_NOTES.md §5.8
and claim 9. All decompositions go through :meth:`LayerState.svd` so they are shared with other analyzers.

Metrics (``matrix="update"``; the gradient versions, where meaningful, have ``matrix="grad"``). Here k is
the *effective* k = min(requested k, N, M), reported in the ``k`` row; X is ΔW or G; O^L[i, j] =
(u_i(W)ᵀ u_j(X))² and O^R[i, j] = (v_i(W)ᵀ v_j(X))².

=============================  =====  ====================================================================
metric                         index  value
=============================  =====  ====================================================================
``k``                          –      effective k (message says when the requested k was clamped)
``sv``                         i      i-th largest singular value of X
``stable_rank``                –      ‖X‖²_F / σ₁(X)²
``overlap_{left,right}_{before,after}``
                               i·k+j  O[i, j]; decode with :func:`decode_pair_index` (only with ``overlaps="full"``)
``overlap_top1_{left,right}_{before,after}``
                               –      O[0, 0]: top singular vector of X against the top one of W
``overlap_max_{left,right}_{before,after}``
                               j      max_i O[i, j]: best match of X's j-th vector among W's top k
                                      (j = 0 only, unless ``overlaps`` is ``"vectors"`` or ``"full"``)
``overlap_argmax_{left,right}_{before,after}``
                               j      argmax_i O[i, j] (which of W's top-k vectors X's j-th one follows;
                                      j = 0 only, unless ``overlaps`` is ``"vectors"`` or ``"full"``)
``subspace_fraction_{before,after}``
                               –      ‖U_kᵀ X V_k‖²_F / ‖X‖²_F with U_k, V_k W's top-k singular vectors
``principal_angle_{left,right}``
                               i      principal angles (radians, ascending) between the top-k subspaces of
                                      W_{t−1} and W_t (``matrix="update"`` only; with ``overlaps`` set to
                                      ``"vectors"`` or ``"full"``)
``principal_angle_max_{left,right}``
                               –      the largest of them
``cos_update_grad``            –      ⟨ΔW, G⟩_F / (‖ΔW‖_F ‖G‖_F) (−1 for plain gradient descent)
``relative_norm``              –      ‖X‖_F / ‖W_{t−1}‖_F
=============================  =====  ====================================================================

How much is emitted (``overlaps``): the default ``"summary"`` gives the scalars, the singular values and the
overlaps of X's *top* vector (j = 0) — 50 rows per layer view at k = 10 with the gradient, so that the monitor's
default table stays small enough to leave on; ``"vectors"`` adds the per-vector profiles (``overlap_max``,
``overlap_argmax`` for every j, the principal angles): 4k + 2 more rows per compared pair; ``"full"`` (or
``True``) adds the k × k blocks as well (k² rows per block).

For the gradient, only "before" metrics are emitted (G_{t−1} is computed at W_{t−1}), and no principal angles.
At step 0 (only ``weight``) nothing is emitted. A zero update (frozen step) or zero gradient gives its
``relative_norm`` (0) and ``skipped`` rows with a message for the metrics that would divide by zero.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator

import numpy as np

from ..functional.alignment import (frobenius_cosine_of, overlap_matrix_of, principal_angles_of, sq_norm,
                                    subspace_fractions_of, top_svd)
from ..hookspecs import hookimpl
from ..snapshot import SVD, LayerState, Request
from .base import Analyzer, Measurement

__all__ = ["AlignmentAnalyzer", "AlignmentPlugin", "OVERLAP_LEVELS", "decode_pair_index", "encode_pair_index"]

#: how much of the overlap structure the analyzer emits, from least to most (see the module docstring)
OVERLAP_LEVELS = ("summary", "vectors", "full")


def encode_pair_index(i: int, j: int, k: int) -> int:
    """Index of the overlap-block entry (i, j) in a k × k block: ``i * k + j``."""
    return i * k + j


def decode_pair_index(index: int, k: int) -> tuple[int, int]:
    """Inverse of :func:`encode_pair_index`: (i, j) with i the W vector and j the update/gradient vector.

    Args:
        index: the ``index`` column of an ``overlap_{left,right}_{before,after}`` row.
        k: the effective k of that layer view (its ``k`` row).

    Raises:
        ValueError: ``index`` is outside [0, k²) or ``k`` < 1.
    """
    if k < 1 or not 0 <= index < k * k:
        raise ValueError(f"index {index} is not a pair index for k={k} (allowed 0..{k * k - 1})")
    return divmod(int(index), int(k))


class AlignmentAnalyzer(Analyzer):
    """Alignment of updates and gradients with the weights' top-k singular vectors (see module docstring).

    Args:
        k: number of top singular vectors compared (clamped to min(N, M) per layer view).
        grad: also analyze the gradient G_{t−1}.
        overlaps: how much of the overlap structure to emit: ``"summary"`` (default; ``False`` means the
            same): scalars, singular values and the overlaps of the top update/gradient vector;
            ``"vectors"``: also ``overlap_max``/``overlap_argmax`` for every vector and the principal angles
            (O(k) rows per pair); ``"full"`` (``True`` means the same): also the k × k overlap blocks (k² rows
            each, what :func:`spectra.plot.plot_overlap_heatmap` draws).
        schedule: optional own schedule.
    """

    name = "alignment"
    needs = frozenset({"weight", "update", "grad"})

    def __init__(self, *, k: int = 10, grad: bool = True, overlaps: bool | str = "summary",
                 schedule: Any = None) -> None:
        super().__init__(schedule=schedule)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"alignment option k must be a positive integer, got {k!r}")
        self.k = int(k)
        self.grad = bool(grad)
        if overlaps is True or overlaps is False:
            overlaps = "full" if overlaps else "summary"
        if overlaps not in OVERLAP_LEVELS:
            raise ValueError(
                f"alignment option overlaps must be one of {', '.join(map(repr, OVERLAP_LEVELS))} (or True for "
                f"'full', False for 'summary'), got {overlaps!r}"
            )
        self.overlaps: str = overlaps
        self._vectors = overlaps != "summary"
        # without gradient metrics the monitor need not copy gradients
        self.needs = frozenset({"weight", "update", "grad"} if self.grad else {"weight", "update"})

    def config(self) -> dict[str, Any]:
        """The options in force (``k`` is the requested value; the per-layer effective k is a ``k`` row)."""
        return {"k": self.k, "grad": self.grad, "overlaps": self.overlaps}

    # ------------------------------------------------------------------ analysis
    def requests(self, layer: LayerState) -> Iterable[Request]:
        """The top-k triplets of W_{t−1}, W_t, ΔW_t and (with ``grad``) G_{t−1} that :meth:`analyze` reads."""
        has = layer.has
        has_prev = has("previous") or (has("weight") and has("update"))
        has_update = has("update") or (has("weight") and has("previous"))
        has_grad = self.grad and has("grad")
        if not has_prev or not (has_update or has_grad):
            return []  # analyze() emits nothing (step 0)
        kinds = [kind for kind in ("previous",) if has(kind)]
        if has_update:
            kinds += [kind for kind in ("weight", "update") if has(kind)]
        if has_grad:
            kinds.append("grad")
        N, M = layer.shape("previous" if has("previous") else "weight")
        k = min(self.k, N, M)
        return [Request(kind, k=k) for kind in kinds]

    def analyze(self, layer: LayerState) -> Iterable[Measurement]:
        """Measure one layer view; see the module docstring for the metrics."""
        return list(self._analyze(layer))

    def _analyze(self, layer: LayerState) -> Iterator[Measurement]:
        src = _Matrices(layer)
        has_update = src.has("update")
        has_grad = self.grad and src.has("grad")
        if not src.has("previous") or not (has_update or has_grad):
            return  # step 0, or nothing to compare
        N, M = src.array("previous").shape
        k = min(self.k, N, M)
        clamp_msg = f"requested k={self.k} clamped to min(N, M)={k}" if k < self.k else ""
        W_prev = src.svd("previous", k)
        norm_prev = float(np.sqrt(src.sq_norm("previous")))

        if has_update:
            yield Measurement("k", float(k), matrix="update", message=clamp_msg)
            W_after = src.svd("weight", k) if src.has("weight") else None
            yield from self._against_weight(src, "update", k, norm_prev, W_prev, W_after)
            if W_after is not None:
                yield from _angles(W_prev, W_after, vectors=self._vectors)
            if has_grad:
                cos = frobenius_cosine_of(src.array("update"), src.array("grad"), src.sq_norm("update"),
                                          src.sq_norm("grad"))
                if np.isnan(cos):
                    yield Measurement("cos_update_grad", cos, matrix="update", status="skipped",
                                      message="update or gradient is zero")
                else:
                    yield Measurement("cos_update_grad", cos, matrix="update")
        if has_grad:
            yield Measurement("k", float(k), matrix="grad", message=clamp_msg)
            yield from self._against_weight(src, "grad", k, norm_prev, W_prev, None)

    def _against_weight(
        self, src: "_Matrices", kind: str, k: int, norm_prev: float, W_prev: SVD, W_after: SVD | None
    ) -> Iterator[Measurement]:
        X = src.array(kind)
        fro2 = src.sq_norm(kind)
        rel = float(np.sqrt(fro2)) / norm_prev if norm_prev > 0 else float("nan")
        if np.isnan(rel):
            yield Measurement("relative_norm", rel, matrix=kind, status="skipped", message="W_{t-1} is zero")
        else:
            yield Measurement("relative_norm", rel, matrix=kind)
        if fro2 == 0.0:
            what = "update is zero (frozen parameter or skipped step)" if kind == "update" else "gradient is zero"
            names = ["stable_rank"]
            for when, Wd in (("before", W_prev), ("after", W_after)):
                if Wd is not None:
                    names += [f"overlap_top1_{side}_{when}" for side in ("left", "right")]
                    names.append(f"subspace_fraction_{when}")
            for metric in names:
                yield Measurement(metric, float("nan"), matrix=kind, status="skipped", message=what)
            return
        D = src.svd(kind, k)
        for i, s in enumerate(D.S):
            yield Measurement("sv", float(s), matrix=kind, index=i)
        yield Measurement("stable_rank", fro2 / float(D.S[0]) ** 2, matrix=kind)
        compared = [(when, Wd) for when, Wd in (("before", W_prev), ("after", W_after)) if Wd is not None]
        fractions = subspace_fractions_of(X, [(Wd.U, Wd.Vh.T) for _, Wd in compared], fro2)  # X read once
        for (when, Wd), frac in zip(compared, fractions):
            for side, A, B in (("left", Wd.U, D.U), ("right", Wd.Vh.T, D.Vh.T)):
                O = overlap_matrix_of(A, B)
                yield from self._overlap_rows(O, f"{side}_{when}", kind, k)
            yield Measurement(f"subspace_fraction_{when}", frac, matrix=kind)

    def _overlap_rows(self, O: np.ndarray, suffix: str, kind: str, k: int) -> Iterator[Measurement]:
        if self.overlaps == "full":
            for i in range(k):
                for j in range(k):
                    yield Measurement(f"overlap_{suffix}", float(O[i, j]), matrix=kind,
                                      index=encode_pair_index(i, j, k))
        yield Measurement(f"overlap_top1_{suffix}", float(O[0, 0]), matrix=kind)
        best = O.max(axis=0)
        arg = O.argmax(axis=0)
        width = k if self._vectors else 1  # "summary": X's top vector only
        for j in range(width):
            yield Measurement(f"overlap_max_{suffix}", float(best[j]), matrix=kind, index=j)
        for j in range(width):
            yield Measurement(f"overlap_argmax_{suffix}", float(arg[j]), matrix=kind, index=j)


def _angles(W_prev: SVD, W_after: SVD, *, vectors: bool) -> Iterator[Measurement]:
    for side, A, B in (("left", W_prev.U, W_after.U), ("right", W_prev.Vh.T, W_after.Vh.T)):
        theta = principal_angles_of(A, B)
        if vectors:
            for i, t in enumerate(theta):
                yield Measurement(f"principal_angle_{side}", float(t), matrix="update", index=i)
        yield Measurement(f"principal_angle_max_{side}", float(theta[-1]), matrix="update")


class _Matrices:
    """Matrix access for one snapshot: the snapshot's own (cached, shared) matrices and decompositions, and
    ``previous``/``update`` derived from the other two when the snapshot lacks one (cached locally)."""

    def __init__(self, layer: LayerState) -> None:
        self.layer = layer
        self._arrays: dict[str, np.ndarray] = {}
        self._svds: dict[str, SVD] = {}
        self._sq_norms: dict[str, float] = {}

    def _derivable(self, kind: str) -> bool:
        L = self.layer
        if kind == "previous":
            return L.has("weight") and L.has("update")
        if kind == "update":
            return L.has("weight") and L.has("previous")
        return False

    def has(self, kind: str) -> bool:
        return self.layer.has(kind) or self._derivable(kind)

    def array(self, kind: str) -> np.ndarray:
        if self.layer.has(kind):
            return self.layer.array(kind)
        if kind not in self._arrays:
            L = self.layer
            if kind == "previous":
                self._arrays[kind] = L.array("weight") - L.array("update")
            else:
                self._arrays[kind] = L.array("weight") - L.array("previous")
        return self._arrays[kind]

    def sq_norm(self, kind: str) -> float:
        """‖X‖²_F of a kind, once per snapshot: the trace of the Gram matrix its decomposition formed, or one pass
        over the snapshot's float64 copy (NaN/Inf entries raise)."""
        if kind not in self._sq_norms:
            # the trace of the Gram matrix its decomposition formed (the matrix was checked finite there)
            value = self.layer.known_sq_norm(kind) if self.layer.has(kind) else None
            if value is None:
                X = self.array(kind)
                value = sq_norm(X)
                if not np.isfinite(value):  # NaN/Inf entries are an error (an overflowing finite X is kept)
                    bad = int(X.size - np.count_nonzero(np.isfinite(X)))
                    if bad:
                        raise ValueError(f"{kind} holds {bad} non-finite value(s) (NaN or Inf) out of {X.size}")
            self._sq_norms[kind] = value
        return self._sq_norms[kind]

    def svd(self, kind: str, k: int) -> SVD:
        if self.layer.has(kind):
            return self.layer.svd(kind, k)
        if kind not in self._svds:
            U, S, Vh, full = top_svd(self.array(kind), k)
            self._svds[kind] = SVD(U, S, Vh, full)
        return self._svds[kind]


class AlignmentPlugin:
    """Built-in plugin registering :class:`AlignmentAnalyzer`."""

    @hookimpl
    def spectra_register_analyzers(self, register: Any) -> None:
        """Register the ``alignment`` analyzer."""
        register(AlignmentAnalyzer)
