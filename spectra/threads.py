"""BLAS thread control for the analysis itself (public: plugins and drivers use it too).

Measured on a 2-core machine (benchmarks/results/monitor.md): right after a torch forward/backward, torch's
OpenMP workers keep spinning, and a multi-threaded OpenBLAS ``eigh`` of a 500×500 Gram matrix then took
~2.9 s instead of ~0.1 s with one BLAS thread. The monitor therefore runs its linear algebra with one BLAS
thread by default (``blas_threads=1``); ``None`` leaves the process's settings alone.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

__all__ = ["limit_blas_threads", "blas_controller"]


def blas_controller() -> Any:
    """A threadpoolctl controller of the BLAS libraries loaded now, for :func:`limit_blas_threads` to reuse.

    Finding the loaded libraries costs about a millisecond (threadpoolctl scans the process's shared objects);
    a driver that limits the threads on every due step makes one controller and passes it each time. SciPy's
    linear algebra is imported first: it brings its own OpenBLAS, which a controller made before it was loaded
    would not know, and leave at every core (measured: due steps twice as long, an OpenBLAS thread spinning).
    ``None`` without threadpoolctl.
    """
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency; degrade gracefully anyway
        return None
    import scipy.linalg  # noqa: F401  # SciPy's own OpenBLAS runs the analysis's LAPACK: it must be known too

    return ThreadpoolController()


@contextlib.contextmanager
def limit_blas_threads(n: int | None, *, controller: Any = None) -> Iterator[None]:
    """Limit BLAS/LAPACK threads to ``n`` inside the block (no-op for ``None`` or without threadpoolctl).

    Args:
        n: the number of threads, or ``None`` to leave the settings alone.
        controller: a controller from :func:`blas_controller` (the libraries it knows are the ones limited);
            ``None`` finds the loaded libraries now.

    Raises:
        ValueError: ``n`` is not a positive integer or ``None``.
    """
    if n is None:
        yield
        return
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"blas_threads must be a positive integer or None, got {n!r}")
    if controller is None:
        controller = blas_controller()
    if controller is None:  # pragma: no cover - without threadpoolctl
        yield
        return
    with controller.limit(limits=n, user_api="blas"):
        yield
