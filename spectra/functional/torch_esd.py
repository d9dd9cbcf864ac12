"""Eigenvalue spectra on a torch tensor's device: a whole stack of same-shape matrices in one batched solve.

:func:`batched_eigvals` computes the eigenvalues of the smaller Gram matrix of every slice of a (B, N, M) stack
(Conv kernel slices, attention heads) with B Gram products and one batched ``eigvalsh``, certified slice by
slice as :meth:`spectra.functional.torch_decompose.TorchDecomposer.eigvals` certifies one matrix.
:func:`torch_esd_pooled` is :func:`spectra.functional.esd.esd_pooled` on top of it (the same checks and
messages); :func:`~spectra.functional.esd.esd_pooled` itself takes this path for a stack on the torch backend.
A single matrix needs nothing here: :func:`spectra.functional.esd.esd_from` serves a
:class:`~spectra.functional.torch_decompose.TorchDecomposer` as it serves the LAPACK decomposer.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._esd_checks import TINY, check_method, check_underflow, overflow_error
from ._torch_kernels import _SAFE_EXP, _host, _linalg_errors, _must_refine, _refine_bottom, _torch, _validated_stack
from .certify import EVALS_RTOL, gram_error_bound, untrusted_bottom
from .decompose import _REFINE_EXTRA
from .torch_decompose import TorchDecomposer
from .torch_precision import check_precision

__all__ = ["batched_eigvals", "torch_esd_pooled"]


def batched_eigvals(
    W: Any, *, method: str = "auto", precision: str = "fp64", rtol: float = EVALS_RTOL, strict: bool = True,
    name: str = "W",
) -> np.ndarray:
    """Eigenvalues of the smaller Gram matrix of every slice of a (B, N, M) stack, with one batched solve.

    The B Gram products and one batched ``torch.linalg.eigvalsh`` run on the stack's device. With
    ``method="auto"`` in float64, each slice's values go through the same certificate as
    :meth:`TorchDecomposer.eigvals`: slices with untrusted small eigenvalues are refined (one batched ``eigh``
    for those slices, then a Rayleigh–Ritz step each) or, failing that, recomputed by ``svdvals``; slices whose
    Gram trace overflows or underflows go through :class:`TorchDecomposer` one by one (power-of-two scaling).

    Args:
        W: a 3-D tensor or array (a 2-D matrix is one slice).
        method: ``"auto"``, ``"eigh"`` (the Gram route as is) or ``"svd"`` (batched ``svdvals``, squared).
        precision: ``"fp64"`` or ``"fp32"`` (as for :class:`TorchDecomposer`).
        rtol: the relative accuracy ``"auto"`` guarantees in float64.
        strict: the certificate's contract (see :class:`TorchDecomposer`).
        name: the name used in validation errors.

    Returns:
        A (B, min(N, M)) float64 array, each row ascending, no normalisation.

    Raises:
        ValueError: not a 2-D/3-D stack, empty, non-finite, or an unknown method or precision.
        numpy.linalg.LinAlgError: a slice's Gram matrix overflows float64.
    """
    check_method(method)
    check_precision(precision)
    torch = _torch()
    X = _validated_stack(W, name=name, precision=precision)
    T = X if X.shape[1] >= X.shape[2] else X.transpose(1, 2)
    B, N, n = T.shape
    if method == "svd":
        return np.sort(_host(torch.linalg.svdvals(T)) ** 2, axis=1)
    G = T.transpose(1, 2) @ T
    tr = _host(torch.diagonal(G, dim1=1, dim2=2).sum(dim=1))
    lim = 2.0 ** _SAFE_EXP[precision]
    plain = np.isfinite(tr) & (tr > 1.0 / lim) & (tr < lim)  # others (zero trace too) one by one
    lam = np.empty((B, n))
    good = np.flatnonzero(plain)
    if good.size:
        idx = torch.as_tensor(good, device=G.device)
        Gg = G if good.size == B else G[idx]
        lam[good] = np.clip(_host(torch.linalg.eigvalsh(Gg)), 0.0, None)
    for b in np.flatnonzero(~plain):  # power-of-two scaling, or the overflow error, slice by slice
        lam[b] = TorchDecomposer(X[b], name=name, strict=strict, precision=precision).eigvals(method, rtol)
    if method != "auto" or precision != "fp64":
        return lam
    deltas = [gram_error_bound(float(tr[b])) for b in range(B)]
    counts = {b: untrusted_bottom(lam[b], deltas[b], rtol) for b in good}
    refine = [b for b, s in counts.items() if _must_refine(n, s)]
    redo = [b for b, s in counts.items() if s and b not in refine]
    if refine:
        idx = torch.as_tensor(refine, device=G.device)
        s2 = min(n, max(counts[b] for b in refine) + _REFINE_EXTRA)
        Z = torch.linalg.eigh(G[idx])[1][:, :, :s2]
        for i, b in enumerate(refine):
            s = counts[b]
            try:
                out = _refine_bottom(T[b], lam[b], Z[i, :, : min(n, s + _REFINE_EXTRA)], s, deltas[b], rtol, strict)
            except _linalg_errors():
                out = None
            if out is None:
                redo.append(b)
            else:
                lam[b] = out
    if redo:
        idx = torch.as_tensor(sorted(redo), device=G.device)
        lam[sorted(redo)] = np.sort(_host(torch.linalg.svdvals(T[idx])) ** 2, axis=1)
    return lam


def torch_esd_pooled(
    matrices: Any, *, scale: float = 1.0, normalize: bool = False, method: str = "auto", precision: str = "fp64",
    strict: bool = True,
) -> np.ndarray:
    """:func:`spectra.functional.esd.esd_pooled` of a (slices, rows, cols) stack with :func:`batched_eigvals`.

    Raises:
        ValueError: as :func:`batched_eigvals`, and when the eigenvalues overflow float64.
    """
    try:
        lam = batched_eigvals(matrices, method=method, precision=precision, strict=strict)
    except np.linalg.LinAlgError as exc:
        raise overflow_error(matrices) from exc
    if not np.all(np.isfinite(lam)):
        raise overflow_error(matrices)
    for b in np.flatnonzero(lam[:, -1] < TINY):  # as esd() checks each slice
        check_underflow(matrices[b])
    if normalize:
        lam = lam / float(max(matrices.shape[-2:]))
    return np.sort(lam.ravel()) * scale
