"""Which decomposition backend serves a matrix: LAPACK on the host, or torch on the tensor's device.

:func:`make_decomposer` is the one place the choice is made:

* ``backend="auto"`` (default): a CUDA tensor gets a :class:`~spectra.functional.torch_decompose.TorchDecomposer`
  on its device; a CPU tensor or anything array-like gets the LAPACK
  :class:`~spectra.functional.decompose.Decomposer` (float64 on the host), so CPU numbers and speed are those
  of that class;
* ``backend="torch"``: the torch backend on any device (CPU tensors and numpy arrays included: the very same
  device code path, which is how CPU-only CI tests it);
* ``backend="lapack"``: the LAPACK one (a CUDA tensor is copied to the host in float64).

``precision`` is the torch backend's compute dtype (``"fp64"``, default, or ``"fp32"``); the LAPACK backend
always computes in float64, so ``"fp32"`` with ``backend="auto"`` on a host matrix changes nothing and with
``backend="lapack"`` is refused.
"""

from __future__ import annotations

from typing import Any

from .torch_precision import PRECISIONS, check_precision

__all__ = ["BACKENDS", "PRECISIONS", "select_backend", "make_decomposer"]

BACKENDS = ("auto", "torch", "lapack")


def _device_type(A: Any) -> str:
    dev = getattr(A, "device", None)
    return str(getattr(dev, "type", "cpu")) if type(A).__module__.startswith("torch") else "cpu"


def select_backend(A: Any, backend: str = "auto") -> str:
    """The backend that serves ``A``: ``"torch"`` or ``"lapack"``.

    Args:
        A: the matrix (torch tensor or array-like); only its type and device are read.
        backend: ``"auto"`` (CUDA tensor → ``"torch"``, anything else → ``"lapack"``), ``"torch"`` or
            ``"lapack"``.

    Raises:
        ValueError: an unknown backend.
    """
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"unknown decomposition backend {backend!r}; allowed: {', '.join(BACKENDS)}")
    if backend != "auto":
        return backend
    return "torch" if _device_type(A) == "cuda" else "lapack"


def make_decomposer(
    A: Any, *, name: str = "A", strict: bool = True, backend: str = "auto", precision: str = "fp64"
) -> Any:
    """A decomposer of ``A`` from the selected backend (see the module docstring).

    Args:
        A: a 2-D torch tensor (any float dtype, any device) or array-like.
        name: the name used in validation errors.
        strict: the accuracy contract of the cheap routes (see :class:`~spectra.functional.decompose.Decomposer`).
        backend: ``"auto"``, ``"torch"`` or ``"lapack"``.
        precision: ``"fp64"`` or ``"fp32"`` (the torch backend's compute dtype).

    Returns:
        A :class:`~spectra.functional.decompose.Decomposer` or a
        :class:`~spectra.functional.torch_decompose.TorchDecomposer`; both serve ``plan``, ``compute``,
        ``fro2``, ``eigvals``, ``top_svd`` and ``routes``.

    Raises:
        ValueError: an unknown backend or precision, ``precision="fp32"`` with ``backend="lapack"``, or an invalid
            matrix (as the decomposers raise). TypeError: complex or non-numeric matrices.
    """
    chosen = select_backend(A, backend)
    check_precision(precision)
    if chosen == "torch":
        from .torch_decompose import TorchDecomposer

        return TorchDecomposer(A, name=name, strict=strict, precision=precision)
    if backend == "lapack" and precision != "fp64":
        raise ValueError(
            f"precision={precision!r} needs the torch backend (backend='torch' or 'auto' on a CUDA tensor); "
            "the LAPACK backend computes in float64 only"
        )
    from .decompose import Decomposer

    return Decomposer(A, name=name, strict=strict)
