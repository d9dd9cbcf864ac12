"""Frozen per-layer snapshots with memoized decompositions shared by every analyzer.

A :class:`LayerState` holds *copies* (never the live parameters) of one layer view at one step: the weight
W_t, the previous weight W_{t−1}, the update ΔW_t = W_t − W_{t−1} and the gradient G_{t−1} that produced it,
each only when some due analyzer asked for it. Decompositions (eigenvalues, top-k or full SVDs) are computed
at most once per matrix per snapshot and shared: each matrix has one decomposer
(:func:`spectra.functional.backend.make_decomposer`), so one Gram product and one reduction serve both
``evals(kind)`` and ``svd(kind, k)``. A CUDA tensor stays on its device and is decomposed there
(:class:`~spectra.functional.torch_decompose.TorchDecomposer`; only eigenvalues and top-k triplets come to the
host, and :meth:`LayerState.array` makes a host copy only when an analyzer asks for one); anything else is
copied once to float64 numpy and decomposed with LAPACK (:class:`~spectra.functional.decompose.Decomposer`).
The context entries ``"backend"`` (``"auto"``, ``"torch"``, ``"lapack"``) and ``"precision"`` (``"fp64"``,
``"fp32"``) override that choice (docs/gpu.md).

**The decomposition plan.** Which route is cheapest depends on everything that will be asked of a matrix
(e.g. a numerically low-rank update asked only for its top-k triplets takes a QR route that skips the
reduction; with its eigenvalues asked too, the reduction serves both). Before the analyzers run, the pipeline
collects their :class:`Request` values into a :class:`DecompositionPlan` and hands it to
:meth:`LayerState.prefetch`::

    plan = DecompositionPlan.collect(analyzers, state)   # each analyzer's requests(state)
    state.prefetch(plan)                                  # compute now (or compute=False: lazily)
    for an in analyzers:
        an.analyze(state)                                 # evals()/svd() served from the shared work

Numbers do not depend on the plan (only the cost does); an analyzer that declares nothing still gets the
shared reduction.
"""

from __future__ import annotations

import functools
import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from .decomposition_plan import MATRIX_KINDS, DecompositionPlan, Request  # re-exported: the plan's home
from .functional.alignment import SVD_FULL_FRACTION  # re-exported: the truncated/full SVD threshold

__all__ = ["LayerState", "SVD", "MATRIX_KINDS", "SVD_FULL_FRACTION", "Request", "DecompositionPlan"]

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class SVD:
    """Top singular triplets of a matrix, descending: ``U[:, i] * S[i] @ Vh[i, :]``."""

    U: np.ndarray
    S: np.ndarray
    Vh: np.ndarray
    full: bool  # True when S holds every singular value


def _to_numpy64(t: Any) -> np.ndarray:
    """The tensor as float64 numpy (a float64 CPU tensor's buffer is shared, as ``Tensor.to`` would share it).

    CPU tensors of a dtype numpy knows are cast by numpy: single-threaded and without the GIL, so that
    decompositions running in parallel threads do not each start a torch OpenMP team (bf16 and other dtypes
    numpy lacks go through torch). The values are the same either way: a widening cast is exact.
    """
    if hasattr(t, "detach"):
        import torch

        t = t.detach()
        if t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64, torch.float16) and not t.is_sparse:
            return np.asarray(t.numpy(), dtype=np.float64)
        return t.to(device="cpu", dtype=torch.float64).numpy()
    return np.asarray(t, dtype=np.float64)


def _flatten_tensor(t: Any) -> Any:
    """:func:`_flatten_stack` of a torch tensor, on its device (the same column order)."""
    if t.dim() == 2:
        return t.detach()
    s, r, c = t.shape
    return t.detach().permute(1, 2, 0).reshape(r, c * s)


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
        context: free-form extras (e.g. the learning rate) for analyzers that want them; ``"backend"`` and
            ``"precision"`` choose the decomposition backend (:func:`spectra.functional.backend.make_decomposer`).
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
        # one lock per kind: a kind's decompositions are computed by one thread at a time (a prefetch task
        # holds it while it runs), so an analyzer that reads a kind another thread is decomposing waits for it
        object.__setattr__(self, "_locks", {kind: threading.RLock() for kind in MATRIX_KINDS})
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
        with self._lock(kind):
            if key not in self._cache:
                self._cache[key] = _flatten_stack(_to_numpy64(self._require(kind)))
            return self._cache[key]

    def _lock(self, kind: str) -> Any:
        """The kind's lock (a fresh one for a kind outside :data:`MATRIX_KINDS`, which ``_require`` refuses)."""
        return self._locks.get(kind) or threading.RLock()

    def shape(self, kind: str = "weight") -> tuple[int, int]:
        """(rows, cols) of the matrix as analysed (after flattening stacks)."""
        t = self._require(kind)
        shp = tuple(t.shape)
        if len(shp) == 3:
            return shp[1], shp[2] * shp[0]
        return shp  # type: ignore[return-value]

    # ------------------------------------------------------------------ decompositions
    def _backend(self, kind: str) -> str:
        """``"torch"`` (on the tensor's device) or ``"lapack"`` (float64 numpy on the host) for a kind: the
        ``"backend"`` context entry (default ``"auto"``: CUDA tensors on their device)."""
        from .functional.backend import select_backend

        return select_backend(self._require(kind), self.context.get("backend", "auto"))

    def _decomposer(self, kind: str) -> Any:
        """The shared decomposer of a kind (of the flattened stack), from
        :func:`~spectra.functional.backend.make_decomposer`."""
        key = ("decomposer", kind)
        with self._lock(kind):
            return self._cache[key] if key in self._cache else self._make_decomposer(kind)

    def _make_decomposer(self, kind: str) -> Any:
        from .functional.backend import make_decomposer

        strict = self._cache.get(("plan", "strict"), True)
        t = self._require(kind)
        # the torch backend reads the tensor where it is; LAPACK (and arrays) the float64 host copy
        A = _flatten_tensor(t) if self._backend(kind) == "torch" and hasattr(t, "detach") else self.array(kind)
        dec = self._cache[("decomposer", kind)] = make_decomposer(
            A, name="W", strict=strict, backend=self.context.get("backend", "auto"),
            precision=self.context.get("precision", "fp64"),
        )
        return dec

    def _evals_from_decomposer(self, kind: str) -> bool:
        return len(tuple(self._require(kind).shape)) == 2

    def prefetch(self, requests: "DecompositionPlan | Iterable[Request]", *, compute: bool = True) -> None:
        """Declare what the analyzers will ask, and (by default) compute it now, once per matrix.

        Args:
            requests: a :class:`DecompositionPlan` or :class:`Request` values (kinds this snapshot lacks are
                ignored). The plan's ``strict`` flag applies to every decomposition of this snapshot.
            compute: compute the decompositions now; ``False`` only records the plan, and the first
                ``evals``/``svd`` call of each kind computes it.

        Errors (a non-finite matrix, an overflowing Gram matrix) are not raised here: the analyzer whose call
        needs the failed decomposition gets the exception, exactly as without a plan.
        """
        tasks = self.prefetch_tasks(requests)
        if compute:
            for task in tasks.values():
                task()

    def prefetch_tasks(self, requests: "DecompositionPlan | Iterable[Request]") -> dict[str, Callable[[], None]]:
        """Record the plan (as :meth:`prefetch` does) and return, by matrix kind, one task that computes it.

        Tasks of different kinds share nothing but this snapshot's cache (distinct keys), so they may run in
        parallel threads (the LAPACK kernels release the GIL); a task holds its kind's lock while it runs, so
        whoever reads that kind meanwhile waits for it. A task never raises: an error surfaces again at the
        analyzer's own call, as with :meth:`prefetch`.
        """
        plan = requests if isinstance(requests, DecompositionPlan) else DecompositionPlan(requests)
        self._cache[("plan", "strict")] = plan.strict
        for key, dec in list(self._cache.items()):
            if key[0] == "decomposer":
                dec.strict = plan.strict
        return {kind: functools.partial(self._compute_kind, kind, ev, k) for kind, (ev, k) in plan.items()
                if self.has(kind) and (ev or k != 0)}

    def _compute_kind(self, kind: str, evals: bool, k: int | None) -> None:
        """One kind's planned decompositions (a :meth:`prefetch_tasks` task): errors are logged, not raised.

        The task also makes the kind's decomposer (the float64 host copy and its validation included), so that
        this work, too, runs in the task's thread. It holds the kind's lock throughout.
        """
        with self._lock(kind):
            self._compute_locked(kind, evals, k)

    def _compute_locked(self, kind: str, evals: bool, k: int | None) -> None:
        try:
            shared = self._evals_from_decomposer(kind)
            if k != 0 or (evals and shared):
                self._decomposer(kind).plan(evals=evals and shared, k=k)
        except Exception as exc:  # surfaces again, with its traceback, at the analyzer's own call
            logger.debug("prefetch of %s/%s %r failed: %r", self.layer, self.view, kind, exc)
            return
        try:
            if evals:
                self.evals(kind)
            if k != 0:
                self.svd(kind, k)
        except Exception as exc:  # surfaces again, with its traceback, at the analyzer's own call
            logger.debug("prefetch of %s/%s %r failed: %r", self.layer, self.view, kind, exc)

    def evals(self, kind: str = "weight") -> np.ndarray:
        """Eigenvalues of the matrix's Gram (pooled over slices, scaled by ``eig_scale``), ascending."""
        key = ("evals", kind)
        with self._lock(kind):
            if key not in self._cache:
                self._cache[key] = self._eigenvalues(kind)
            return self._cache[key]

    def _eigenvalues(self, kind: str) -> np.ndarray:
        from .functional.esd import esd_from, esd_pooled

        t = self._require(kind)
        torch_backend = self._backend(kind) == "torch"
        if len(tuple(t.shape)) == 3:
            if torch_backend:  # one batched solve on the device
                from .functional.torch_esd import torch_esd_pooled

                lam = torch_esd_pooled(
                    t, scale=self.eig_scale, normalize=self.normalize, method=self.esd_method,
                    precision=self.context.get("precision", "fp64"),
                    strict=self._cache.get(("plan", "strict"), True),
                )
            else:
                src = _to_numpy64(t) if getattr(t, "is_cuda", False) else t  # backend="lapack"
                lam = esd_pooled(src, scale=self.eig_scale, normalize=self.normalize, method=self.esd_method)
        else:  # the shared decomposition that the SVDs use too (either backend)
            lam = esd_from(self._decomposer(kind), normalize=self.normalize, method=self.esd_method)
            lam = lam * self.eig_scale
        lam.setflags(write=False)
        return lam

    def svd(self, kind: str = "weight", k: int | None = None) -> SVD:
        """Top-``k`` singular triplets (all when ``k`` is None), computed once and shared.

        A full thin SVD, once computed, serves every later ``k``; a truncated one serves every smaller ``k``.
        A truncated method is used when ``k`` is small relative to min(N, M) (see :data:`SVD_FULL_FRACTION`
        and :mod:`spectra.functional.decompose` for the routes).
        """
        with self._lock(kind):
            return self._svd(kind, k)

    def _svd(self, kind: str, k: int | None) -> SVD:
        best = None
        for key, val in list(self._cache.items()):  # a copy: other kinds' tasks may add entries meanwhile
            if key[0] != "svd" or key[1] != kind:
                continue
            if val.full or (k is not None and len(val.S) >= k):
                if best is None or val.full:
                    best = val
        if best is None:
            U, S, Vh, is_full = self._decomposer(kind).top_svd(k)
            best = SVD(U, S, Vh, is_full)
            self._cache[("svd", kind, None if is_full else k)] = best
        if k is None or k >= len(best.S):
            return best
        return SVD(best.U[:, :k], best.S[:k], best.Vh[:k], False)

    def known_sq_norm(self, kind: str = "weight") -> float | None:
        """‖X‖²_F of a kind if a float64 decomposition of it already formed its Gram matrix (its trace, free);
        ``None`` otherwise (the caller computes it)."""
        with self._lock(kind):  # wait for a decomposition of it in flight: the same value whatever the timing
            dec = self._cache.get(("decomposer", kind))
        known = getattr(dec, "known_fro2", None)  # LAPACK's float64 decomposer only
        return None if known is None else known()

    def release(self) -> None:
        """Drop the copies and cached decompositions (the monitor calls this after a step)."""
        self._cache.clear()
        object.__setattr__(self, "tensors", {})
