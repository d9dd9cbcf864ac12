"""The student: f(x) = aᵀ tanh(W x/√d)/√h with W ∈ R^{h×d} trainable and a frozen (PAPER_NOTES.md §3)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

__all__ = ["Student", "normalize_weight_", "student_mse"]


class Student(nn.Module):
    """Two-layer tanh network without biases; only the first layer ``W`` (an ``nn.Linear``) trains.

    The second layer ``a`` is a buffer (fixed during training, PAPER_NOTES.md §3), so the monitor sees one matrix, layer
    ``"W"``. The 1/√d and 1/√h factors live in the forward pass.
    """

    def __init__(self, W0: np.ndarray, a: np.ndarray, *, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        h, d = W0.shape
        self.d, self.h = d, h
        self.W = nn.Linear(d, h, bias=False, dtype=dtype)
        with torch.no_grad():
            self.W.weight.copy_(torch.as_tensor(W0, dtype=dtype))
        self.register_buffer("a", torch.as_tensor(a, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.W(x) / math.sqrt(self.d)) @ self.a / math.sqrt(self.h)


@torch.no_grad()
def normalize_weight_(W: torch.Tensor) -> None:
    """W ← W·√(h·d)/‖W‖_F in place: restores the expected initial Frobenius norm (PAPER_NOTES.md §4)."""
    h, d = W.shape
    W.mul_(math.sqrt(h * d) / torch.linalg.norm(W))


def student_mse(model: Student, X: torch.Tensor, y: torch.Tensor) -> float:
    """The student's own MSE (mean, no ½) on (X, y); NaN/inf are returned as they are."""
    with torch.no_grad():
        return float(torch.mean((model(X) - y) ** 2))
