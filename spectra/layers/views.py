"""Matrix views of a parameter, and the coercion of ``spectra_as_matrices`` answers into them.

A :class:`MatrixView` is one matrix (or a stack of matrices whose eigenvalues are pooled) seen in a parameter;
a :class:`ViewShape` is its shape summary as the layers table records it. :func:`views_from_hook` asks the
layer hooks for the views of a tensor and turns whatever a plugin answered into :class:`MatrixView` objects,
naming the plugin's hook and the parameter when it fails.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

__all__ = ["MatrixView", "ViewShape", "as_view", "hook_error", "views_from_hook"]


@dataclass(frozen=True, eq=False)
class MatrixView:
    """One matrix (or a stack of matrices whose eigenvalues are pooled) seen in a parameter.

    Attributes:
        name: view name: ``"W"`` for a whole matrix, ``"q"``/``"k"``/``"v"`` for fused attention, gate names
            for RNNs, ``"k{i}_{j}"`` for a Conv2d slice in per-slice mode.
        tensor: a 2-D tensor, or a 3-D stack (slices, rows, cols) whose eigenvalues are pooled (Conv kernels
            in the default pooled mode). Usually an alias of the parameter, not a copy.
        eig_scale: factor applied to every eigenvalue of this view: 1/2 for pooled Conv slices, rf/2 per
            slice in per-slice mode (WeightWatcher's convention), 1 otherwise.
    """

    name: str
    tensor: Any
    eig_scale: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"MatrixView name must be a non-empty string, got {self.name!r}")
        ndim = len(tuple(getattr(self.tensor, "shape", ())))
        if ndim not in (2, 3):
            raise ValueError(
                f"MatrixView {self.name!r} needs a 2-D matrix or a 3-D stack (slices, rows, cols), "
                f"got shape {tuple(getattr(self.tensor, 'shape', ()))}"
            )
        scale = float(self.eig_scale)
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"MatrixView {self.name!r} eig_scale must be finite and > 0, got {self.eig_scale!r}")
        object.__setattr__(self, "eig_scale", scale)

    @property
    def num_matrices(self) -> int:
        """Number of matrices in the view (slices of a stack; 1 for a 2-D view)."""
        shp = tuple(self.tensor.shape)
        return int(shp[0]) if len(shp) == 3 else 1

    @property
    def matrix_shape(self) -> tuple[int, int]:
        """(rows, cols) of each matrix in the view."""
        shp = tuple(int(s) for s in self.tensor.shape)
        return (shp[1], shp[2]) if len(shp) == 3 else (shp[0], shp[1])

    @property
    def N(self) -> int:
        """The larger dimension of each matrix."""
        return max(self.matrix_shape)

    @property
    def M(self) -> int:
        """The smaller dimension of each matrix (= number of eigenvalues per matrix)."""
        return min(self.matrix_shape)

    @property
    def Q(self) -> float:
        """Aspect ratio N/M (≥ 1)."""
        return self.N / self.M if self.M else math.nan


class ViewShape(NamedTuple):
    """Shape summary of one view: N = max dim, M = min dim, Q = N/M, num_matrices = slices."""

    view: str
    N: int
    M: int
    Q: float
    num_matrices: int


def as_view(item: Any, layer: str) -> MatrixView:
    """Wrap one item of a plugin's ``spectra_as_matrices`` answer.

    Args:
        item: a :class:`MatrixView`, or a ``(name, tensor)`` / ``(name, tensor, eig_scale)`` tuple or list.
        layer: the layer name, for the error message.

    Returns:
        The item itself when it is a :class:`MatrixView`, else a new one built from the tuple.

    Raises:
        TypeError: ``item`` is neither a view nor a 2- or 3-item tuple/list.
        ValueError: the tuple describes an invalid view (see :class:`MatrixView`).
    """
    if isinstance(item, MatrixView):
        return item
    if isinstance(item, (tuple, list)) and len(item) in (2, 3):
        return MatrixView(*item)
    raise TypeError(
        f"spectra_as_matrices for {layer!r} returned {type(item).__name__} {item!r}; "
        "allowed: a MatrixView or a (view_name, matrix) / (view_name, matrix, eig_scale) tuple"
    )


def hook_error(hook_name: str, param_name: str, exc: Exception) -> Exception:
    """The error to raise when a plugin's layer hook raised.

    Args:
        hook_name: the hook that raised (``"spectra_as_matrices"``, ``"spectra_include_param"``).
        param_name: the full parameter name it was called for.
        exc: what it raised.

    Returns:
        A :class:`~spectra.plugins.PluginError` naming the hook, the parameter and the original error.
    """
    from ..plugins import PluginError

    return PluginError(
        f"a plugin's {hook_name} raised for parameter {param_name!r}: {type(exc).__name__}: {exc} "
        "(block the plugin with SPECTRA_DISABLE_PLUGINS=<name>)"
    )


def views_from_hook(hook: Any, name: str, tensor: Any, module: Any, layer: str) -> list[MatrixView] | None:
    """Ask the layer hooks for the views of ``tensor`` and coerce the answer.

    Args:
        hook: a pluggy hook relay carrying ``spectra_as_matrices``.
        name: the full parameter name passed to the hook.
        tensor: the tensor to view (detached, an alias, before the hook sees it).
        module: the owning module, or ``None`` for a state_dict.
        layer: the layer name, for error messages.

    Returns:
        One :class:`MatrixView` per item of the answer, or ``None`` when no plugin answered.

    Raises:
        PluginError: the hook raised.
        TypeError: an item of the answer is not a view (see :func:`as_view`).
    """
    try:
        out = hook.spectra_as_matrices(name=name, param=tensor.detach(), module=module)
    except Exception as exc:
        raise hook_error("spectra_as_matrices", name, exc) from exc
    if out is None:
        return None
    return [as_view(item, layer) for item in out]
