"""BLAS thread control for the analysis itself (public: plugins and drivers use it too).

Measured on a 2-core machine (benchmarks/results/monitor.md): right after a torch forward/backward, torch's
OpenMP workers keep spinning, and a multi-threaded OpenBLAS ``eigh`` of a 500×500 Gram matrix then took
~2.9 s instead of ~0.1 s with one BLAS thread. The monitor therefore runs its linear algebra with one BLAS
thread by default (``blas_threads=1``); ``None`` leaves the process's settings alone.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

__all__ = ["limit_blas_threads"]


@contextlib.contextmanager
def limit_blas_threads(n: int | None) -> Iterator[None]:
    """Limit BLAS/LAPACK threads to ``n`` inside the block (no-op for ``None`` or without threadpoolctl)."""
    if n is None:
        yield
        return
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"blas_threads must be a positive integer or None, got {n!r}")
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency; degrade gracefully anyway
        yield
        return
    with threadpool_limits(limits=n, user_api="blas"):
        yield
