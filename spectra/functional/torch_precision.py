"""The compute precisions of the torch backend, and the machine epsilon of its Gram product.

``precision="fp64"`` (the default) computes in float64 and certifies every value as the LAPACK
:class:`~spectra.functional.decompose.Decomposer` does; ``precision="fp32"`` computes in float32 and certifies
nothing (docs/gpu.md, "Precision"). :func:`matmul_eps` is the eps in the Gram error bound δ = 8·eps·‖A‖²_F,
read from torch's float32 matmul settings (TF32, bfloat16), never changing them. torch itself is imported only
when a function needs it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .certify import EPS

__all__ = ["PRECISIONS", "check_precision", "matmul_eps"]

PRECISIONS = ("fp64", "fp32")


def check_precision(precision: str) -> str:
    """Validate a ``precision=`` value (``"fp64"`` or ``"fp32"``)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; allowed: {', '.join(PRECISIONS)}")
    return precision


def matmul_eps(precision: str, device: Any = None) -> float:
    """The machine epsilon of the Gram product in this precision.

    float64: eps = 2⁻⁵². float32: 2⁻²³, or TF32's 2⁻¹⁰ when torch may use it for float32 matmuls
    (``torch.set_float32_matmul_precision("high")``, ``torch.backends.cuda.matmul.allow_tf32``), or
    bfloat16's 2⁻⁷ under ``"medium"``. Only reads torch's settings.
    """
    if check_precision(precision) == "fp64":
        return EPS
    import torch

    mode = torch.get_float32_matmul_precision()
    if mode == "medium":
        return 2.0**-7
    tf32 = mode == "high"
    if getattr(device, "type", None) == "cuda":
        cm = torch.backends.cuda.matmul
        tf32 = tf32 or bool(getattr(cm, "allow_tf32", False)) or getattr(cm, "fp32_precision", "") == "tf32"
    return 2.0**-10 if tf32 else float(np.finfo(np.float32).eps)
