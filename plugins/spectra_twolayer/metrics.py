"""The paper's non-spectral metrics as spectra analyzers: ridge readout losses, KTA and sim(W, β*).

They run inside :class:`spectra.SpectraMonitor` on the same schedule as the spectral analyzers, so every number
lands in the same tidy table (PAPER_NOTES.md, "Implementation contract", item 2). Everything is computed in
float64 on the weight copy's device, with NaN/inf guarded: a non-finite W gives a ``failed`` row, never a crash.

* :class:`ReadoutAnalyzer` (``twolayer_readout``): features Z = tanh(X_probe Wᵀ/s)/√h, ridge
  â = (ZᵀZ + (λ/h)·n·I)⁻¹ Zᵀy on the probe set; ``train_loss`` (probe MSE), ``test_loss`` (test MSE with the
  same â) and uncentered ``kta`` = ‖Zᵀy‖²/(‖ZᵀZ‖_F‖y‖²) (PAPER_NOTES.md §5.1–§5.2). s = d ("repo") or √d
  ("model").
* :class:`TeacherSimAnalyzer` (``twolayer_sim``): sim = |v₁ᵀβ*|/‖v₁‖ with v₁ the top right singular vector of
  W from the snapshot's shared SVD (PAPER_NOTES.md §5.6).
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np
import torch

from spectra import Analyzer, Measurement

__all__ = ["ReadoutAnalyzer", "TeacherSimAnalyzer", "feature_scale", "readout_features", "ridge_readout", "kta",
           "readout_metrics"]


def feature_scale(name: str, d: int) -> float:
    """The divisor s of the readout features: d for ``"repo"`` (the authors' code), √d for ``"model"``."""
    if name == "repo":
        return float(d)
    if name == "model":
        return math.sqrt(d)
    raise ValueError(f"readout_feature_scale must be 'repo' or 'model', got {name!r}")


def readout_features(X: torch.Tensor, W: torch.Tensor, s: float) -> torch.Tensor:
    """Z = tanh(X Wᵀ/s)/√h (n×h)."""
    h = W.shape[0]
    return torch.tanh(X @ W.T / s) / math.sqrt(h)


def ridge_readout(Z: torch.Tensor, y: torch.Tensor, reg_lambda: float) -> torch.Tensor:
    """â = argmin (1/n)‖y − Z a‖² + (λ/h)‖a‖² = (ZᵀZ + (λ/h)·n·I)⁻¹ Zᵀy.

    Solved by Cholesky; when λ = 0 or the system is singular it falls back to least squares.
    """
    n, h = Z.shape
    A = Z.T @ Z + (reg_lambda / h) * n * torch.eye(h, dtype=Z.dtype, device=Z.device)
    b = Z.T @ y
    L, info = torch.linalg.cholesky_ex(A)
    if int(info) == 0:
        return torch.cholesky_solve(b.unsqueeze(1), L).squeeze(1)
    return torch.linalg.lstsq(A, b.unsqueeze(1), driver="gelsd" if A.device.type == "cpu" else None).solution.squeeze(1)


def kta(Z: torch.Tensor, y: torch.Tensor) -> float:
    """Uncentered kernel-target alignment ⟨ZZᵀ, yyᵀ⟩_F/(‖ZZᵀ‖_F‖yyᵀ‖_F) = ‖Zᵀy‖²/(‖ZᵀZ‖_F‖y‖²)."""
    zy = Z.T @ y
    return float((zy @ zy) / (torch.linalg.norm(Z.T @ Z) * (y @ y)))


def readout_metrics(
    W: torch.Tensor,
    X_probe: torch.Tensor,
    y_probe: torch.Tensor,
    X_test: torch.Tensor,
    y_test: torch.Tensor,
    *,
    reg_lambda: float,
    s: float,
) -> dict[str, float]:
    """Probe-ridge train loss, test loss and KTA for one first-layer weight (all float64)."""
    Z = readout_features(X_probe, W, s)
    a_hat = ridge_readout(Z, y_probe, reg_lambda)
    train = torch.mean((Z @ a_hat - y_probe) ** 2)
    Zt = readout_features(X_test, W, s)
    test = torch.mean((Zt @ a_hat - y_test) ** 2)
    return {"train_loss": float(train), "test_loss": float(test), "kta": kta(Z, y_probe)}


def _weight_tensor(layer: Any) -> torch.Tensor:
    """The snapshot's weight as a float64 torch tensor on its own device (CPU arrays stay on CPU)."""
    t = layer.tensors["weight"] if hasattr(layer, "tensors") else None
    if t is None or not hasattr(t, "detach"):
        return torch.as_tensor(layer.array("weight"))
    return t.detach().to(torch.float64)


class ReadoutAnalyzer(Analyzer):
    """Ridge-readout train/test loss and KTA of the first layer (PAPER_NOTES.md §5.1–§5.2).

    Args:
        X_probe, y_probe: the probe set (the ridge fit's data; "train loss" is measured here).
        X_test, y_test: the test set.
        reg_lambda: λ of the ridge penalty (λ/h)‖a‖².
        feature_scale: ``"repo"`` (s = d, default) or ``"model"`` (s = √d).
        schedule: optional own schedule (see :class:`spectra.Analyzer`).

    Without data (e.g. when instantiated by a registry listing) it emits ``skipped`` rows.
    """

    name = "twolayer_readout"
    needs = frozenset({"weight"})

    def __init__(
        self,
        *,
        X_probe: Any = None,
        y_probe: Any = None,
        X_test: Any = None,
        y_test: Any = None,
        reg_lambda: float = 0.01,
        feature_scale: str = "repo",
        schedule: Any = None,
    ) -> None:
        super().__init__(schedule=schedule)
        if feature_scale not in ("repo", "model"):
            raise ValueError(f"feature_scale must be 'repo' or 'model', got {feature_scale!r}")
        if not (math.isfinite(reg_lambda) and reg_lambda >= 0):
            raise ValueError(f"reg_lambda must be finite and >= 0, got {reg_lambda!r}")
        self.reg_lambda = float(reg_lambda)
        self.feature_scale = feature_scale
        self._data = None
        if X_probe is not None:
            self._data = tuple(torch.as_tensor(np.asarray(v, dtype=np.float64)) for v in (X_probe, y_probe, X_test, y_test))
        self._on: dict[Any, tuple] = {}

    def config(self) -> dict[str, Any]:
        return {"reg_lambda": self.reg_lambda, "feature_scale": self.feature_scale}

    def _data_on(self, device: torch.device) -> tuple:
        if device not in self._on:
            self._on = {device: tuple(t.to(device) for t in self._data)}
        return self._on[device]

    def analyze(self, layer: Any) -> Iterable[Measurement]:
        if self._data is None:
            for m in ("train_loss", "test_loss", "kta"):
                yield Measurement(m, float("nan"), status="skipped", message="no probe/test data given")
            return
        W = _weight_tensor(layer)
        if not bool(torch.isfinite(W).all()):
            raise ValueError(f"weight has {int((~torch.isfinite(W)).sum())} non-finite entries")
        Xp, yp, Xt, yt = self._data_on(W.device)
        s = feature_scale(self.feature_scale, W.shape[1])
        vals = readout_metrics(W, Xp, yp, Xt, yt, reg_lambda=self.reg_lambda, s=s)
        for k, v in vals.items():
            ok = math.isfinite(v)
            yield Measurement(k, v, status="ok" if ok else "warn", message="" if ok else "non-finite value")


class TeacherSimAnalyzer(Analyzer):
    """sim(W, β*) = |v₁ᵀβ*|/‖v₁‖ with v₁ the top right singular vector of W (PAPER_NOTES.md §5.6).

    Args:
        beta: the teacher direction β* (length d).
        k: number of singular triplets requested from the snapshot's shared SVD (match the alignment analyzer's
            ``k`` so one decomposition serves both).
        schedule: optional own schedule.
    """

    name = "twolayer_sim"
    needs = frozenset({"weight"})

    def __init__(self, *, beta: Any = None, k: int = 1, schedule: Any = None) -> None:
        super().__init__(schedule=schedule)
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        self.k = k
        self.beta = None if beta is None else np.asarray(beta, dtype=np.float64).ravel()

    def config(self) -> dict[str, Any]:
        return {"k": self.k}

    def analyze(self, layer: Any) -> Iterable[Measurement]:
        if self.beta is None:
            yield Measurement("sim", float("nan"), status="skipped", message="no teacher vector given")
            return
        A = layer.array("weight")
        if A.shape[1] != self.beta.shape[0]:
            raise ValueError(f"beta has length {self.beta.shape[0]} but W has {A.shape[1]} columns")
        if not np.isfinite(A).all():
            raise ValueError(f"weight has {int((~np.isfinite(A)).sum())} non-finite entries")
        v1 = np.asarray(layer.svd("weight", self.k).Vh[0], dtype=np.float64)
        yield Measurement("sim", float(abs(v1 @ self.beta) / np.linalg.norm(v1)))
