"""The seeded replicate stream of :mod:`spectra.functional.bootstrap`, drawn sorted and in log space.

Per block of ``BLOCK_REPLICATES`` replicates of N points (see :class:`Block`), from one
``numpy.random.Generator``, in this order:

1. the number of power-law points of each replicate, ``nt ~ Binomial(N, n_tail/N)``, for a whole block even
   when fewer replicates are left (the widths below depend on them);
2. one B × (T + M) array of uniforms ``u``, T = max nt, M = max(N − nt), row by row (so the first
   replicates do not depend on how many are drawn): replicate r's power-law part comes from the last
   ``nt[r]`` of its first T, as standard exponentials ``−ln(1 − u)`` whose Rényi sums are its order
   statistics ``E`` (ascending); its bulk from the first ``nb[r] = N − nt[r]`` of its last M, as indices
   ``⌊u·n_bulk⌋`` into the data below xmin (sorted when needed, as int16 where they fit).

Above xmin, ``ln x = ln xmin + E/(α − 1)`` and ``x = xmin·exp(E/(α − 1))``; below it, the data's own values.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["BLOCK_REPLICATES", "Buffers", "Block"]

BLOCK_REPLICATES = 256  # replicates drawn and decided together (fixed: it is part of the seeded stream)


class Buffers:
    """Work arrays reused by the blocks of one call (re-allocating multi-MB temporaries costs page faults).

    Each name holds one array; :meth:`get` returns a view of it with the requested shape, growing it when
    needed, so a view is valid until the next :meth:`get` of the same name.
    """

    def __init__(self) -> None:
        self._arrays: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: Any = np.float64) -> np.ndarray:
        """An uninitialised array of this shape and dtype."""
        size = math.prod(shape)
        a = self._arrays.get(name)
        if a is None or a.size < size or a.dtype != np.dtype(dtype):
            a = self._arrays[name] = np.empty(max(size, 1), dtype=dtype)
        return a[:size].reshape(shape)


class Block:
    """B sorted replicates of one block of the stream (module docstring), assembled on demand.

    Attributes:
        N, B: points per replicate, replicates.
        nt, nb: per replicate, points above and below xmin (``nb`` is the index of its first power-law point).
        T, lead, E: the power-law window: ``E`` is B × T, replicate r's order statistics in its last ``nt[r]``
            columns and zeros in its first ``lead[r] = T − nt[r]``; column c of the window is column
            ``N − T + c`` of the replicate.
        inv, log_xmin: ``ln x = log_xmin + E·inv`` above xmin.
    """

    def __init__(self, rng: np.random.Generator, x: np.ndarray, n_bulk: int, xmin: float, alpha: float, B: int,
                 bufs: Buffers | None = None) -> None:
        N = x.size
        self.bufs = Buffers() if bufs is None else bufs
        self.N, self.B, self.xmin, self.log_xmin = N, B, xmin, math.log(xmin)
        self.inv = 1.0 / (alpha - 1.0)
        self.bulk, self.n_bulk = x[:n_bulk], n_bulk
        nt = rng.binomial(N, (N - n_bulk) / N, size=BLOCK_REPLICATES) if n_bulk else np.full(B, N)
        self.T = T = int(nt.max())
        self.nbmax = N - int(nt.min())
        self.nt = nt[:B].astype(np.int64)
        self.nb = N - self.nt
        self.lead = T - self.nt
        U = self.bufs.get("U", (B, T + self.nbmax))
        rng.random(out=U)
        self.E = self._renyi(U[:, :T])
        self._draws = None
        if self.nbmax:
            dtype = np.int16 if n_bulk < np.iinfo(np.int16).max else np.int32
            self._draws = np.empty((B, self.nbmax), dtype=dtype)
            np.multiply(U[:, T:], n_bulk, out=self._draws, casting="unsafe")  # ⌊u·n_bulk⌋ < n_bulk
            np.minimum(self._draws, n_bulk - 1, out=self._draws)
        self._log_bulk = np.r_[np.log(self.bulk), -np.inf]  # the last entry pads the sorted rows

    def _renyi(self, U: np.ndarray) -> np.ndarray:
        """Rényi's representation: the k-th spacing of n exponential order statistics is Exp(1)/(n − k)."""
        B, T = U.shape
        W = self.bufs.get("E", (B, T))
        np.subtract(1.0, U, out=W)
        np.log(W, out=W)  # −Exp(1): 1 − u ∈ (0, 1]
        W *= -1.0 / np.arange(T, 0, -1, dtype=np.float64)
        np.copyto(W, 0.0, where=np.arange(T)[None, :] < self.lead[:, None])
        return np.cumsum(W, axis=1, out=W)

    def bulk_index(self, rows: np.ndarray) -> np.ndarray:
        """Sorted bulk indices of the given replicates, padded with ``n_bulk`` beyond each one's ``nb``."""
        D = self._draws[rows]
        np.copyto(D, self.n_bulk, where=np.arange(self.nbmax)[None, :] >= self.nb[rows][:, None])
        D.sort(axis=1)
        return D

    def _assemble(self, rows: np.ndarray, out: np.ndarray, tail_part: np.ndarray) -> np.ndarray:
        """Complete rows whose first ``nbmax`` columns hold the sorted bulk (padded with −inf) from the window
        (its first ``lead`` entries unused)."""
        N, T, nbmax = self.N, self.T, self.nbmax
        if not nbmax:
            out[:] = tail_part
            return out
        ov = nbmax + T - N  # columns that are bulk in some replicates and power law in others
        np.copyto(tail_part[:, :ov], -np.inf, where=np.arange(ov)[None, :] < self.lead[rows][:, None])
        np.maximum(out[:, N - T:nbmax], tail_part[:, :ov], out=out[:, N - T:nbmax])
        out[:, nbmax:] = tail_part[:, ov:]
        return out

    def logs(self, rows: np.ndarray) -> np.ndarray:
        """``ln x`` of the given replicates (len(rows) × N, ascending rows), in the buffer ``"L"``."""
        L = self.bufs.get("L", (rows.size, self.N))
        Lt = self.bufs.get("Lt", (rows.size, self.T))
        np.multiply(self.E[rows], self.inv, out=Lt)
        Lt += self.log_xmin
        if self.nbmax:
            np.take(self._log_bulk, self.bulk_index(rows).astype(np.intp), out=L[:, :self.nbmax], mode="clip")
        return self._assemble(rows, L, Lt)

    def samples(self, rows: Any = slice(None)) -> np.ndarray:
        """The replicates themselves (sorted rows, a new array): bulk values, ``xmin·exp(E·inv)`` above xmin."""
        rows = np.arange(self.B)[rows]
        X = np.empty((rows.size, self.N))
        with np.errstate(over="ignore"):
            Xt = self.xmin * np.exp(self.E[rows] * self.inv)
        if self.nbmax:
            X[:, :self.nbmax] = np.r_[self.bulk, -np.inf][self.bulk_index(rows)]
        return self._assemble(rows, X, Xt)
