"""The single-index teacher, the student's initial weights and the three datasets (PAPER §2–§3), seeded.

Every random draw comes from its own generator, derived from the base seed plus a tuple of keys that names
the draw's role and what it is shared across (PAPER §6 pairing): e.g. ``rng(seed, "teacher", "r", 0)``. The
generators are NumPy PCG64 streams from :class:`numpy.random.SeedSequence`, so the draws are identical on every
platform and device; tensors are moved to the device afterwards.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["rng", "Dataset", "Problem", "make_teacher", "make_init", "make_dataset", "make_problem",
           "softplus", "odd_floor"]


def _key_int(key: Any) -> int:
    """A stable non-negative 32-bit integer for a key (str/float via CRC32 of its repr; ints as is)."""
    if isinstance(key, (bool, np.bool_)):
        return int(key)
    if isinstance(key, (int, np.integer)) and key >= 0:
        return int(key)
    return zlib.crc32(repr(key).encode())


def rng(seed: int, *keys: Any) -> np.random.Generator:
    """An independent generator for (base seed, keys...). Same arguments → same stream."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), *map(_key_int, keys)])))


def softplus(z: np.ndarray) -> np.ndarray:
    """log(1 + e^z), computed stably (torch's softplus with beta=1; its threshold=20 changes < 3e-9)."""
    return np.logaddexp(0.0, z)


@dataclass(frozen=True)
class Dataset:
    """Inputs X (n×d) and labels y (n,), float64 numpy (training casts to float32)."""

    X: np.ndarray
    y: np.ndarray

    @property
    def n(self) -> int:
        return self.X.shape[0]


@dataclass(frozen=True)
class Problem:
    """Everything a run needs: teacher β*, initial student (W₀, a) and the train/probe/test sets."""

    beta: np.ndarray
    W0: np.ndarray
    a: np.ndarray
    train: Dataset
    probe: Dataset
    test: Dataset
    label_noise: float


def make_teacher(d: int, gen: np.random.Generator) -> np.ndarray:
    """β* = g/‖g‖ with g ~ N(0, I_d): uniform on the unit sphere."""
    g = gen.standard_normal(d)
    return g / np.linalg.norm(g)


def make_init(d: int, h: int, gen_w: np.random.Generator, gen_a: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """W₀ ~ N(0,1)^{h×d} and a ~ N(0,1)^h (plain normal init, the scale factors live in the forward pass)."""
    return gen_w.standard_normal((h, d)), gen_a.standard_normal(h)


def make_dataset(beta: np.ndarray, n: int, label_noise: float, gen: np.random.Generator) -> Dataset:
    """x ~ N(0, I_d), y = softplus(β*ᵀx) + ε with ε ~ N(0, ρ_e²). X first, then ε, from one stream."""
    X = gen.standard_normal((n, beta.shape[0]))
    eps = gen.standard_normal(n)
    y = softplus(X @ beta) + label_noise * eps
    return Dataset(X=X, y=y)


def make_problem(
    *,
    d: int,
    h: int,
    n: int,
    n_test: int,
    label_noise: float,
    seed: int,
    teacher_key: tuple,
    init_key: tuple,
    data_key: tuple,
) -> Problem:
    """Draw a problem; runs with equal keys share the corresponding draws exactly (PAPER §6 pairing)."""
    beta = make_teacher(d, rng(seed, "teacher", d, *teacher_key))
    W0, a = make_init(d, h, rng(seed, "init_W", d, h, *init_key), rng(seed, "init_a", h, *init_key))
    data_id = (*teacher_key, "|", *data_key, label_noise)
    train = make_dataset(beta, n, label_noise, rng(seed, "train", d, *data_id))
    probe = make_dataset(beta, n, label_noise, rng(seed, "probe", d, *data_id))
    test = make_dataset(beta, n_test, label_noise, rng(seed, "test", d, *data_id))
    return Problem(beta=beta, W0=W0, a=a, train=train, probe=probe, test=test, label_noise=label_noise)


def odd_floor(label_noise: float, *, points: int = 200) -> float:
    """E[e(z)²] + ρ_e², the test-MSE floor of any odd student (PAPER §3), z ~ N(0,1).

    e(z) = log(2·cosh(z/2)) is the even part of softplus; the expectation uses Gauss–Hermite quadrature.
    """
    x, w = np.polynomial.hermite_e.hermegauss(points)
    e = np.logaddexp(x / 2, -x / 2)  # log(2 cosh(z/2))
    return float(np.sum(w * e**2) / np.sqrt(2 * np.pi) + label_noise**2)
