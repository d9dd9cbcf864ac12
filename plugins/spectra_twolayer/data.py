"""The single-index teacher, the student's initial weights and the three datasets, seeded (PAPER_NOTES.md §2–§3).

Every random draw comes from its own generator, derived from the base seed plus a tuple of keys that names
the draw's role and what it is shared across (PAPER_NOTES.md §6 pairing): e.g. ``rng(seed, "teacher", "r", 0)``.
The generators are NumPy PCG64 streams from :class:`numpy.random.SeedSequence`, so the draws are identical on
every platform and device; tensors are moved to the device afterwards.

Common random numbers (PAPER_NOTES.md §8.2): the inputs X and the standard-normal noise draws z of a split come
from two separate streams that depend on neither the sample size n nor the label-noise level ρ_e. So two problems
with the same keys and different n share their first min(n) samples exactly (NumPy fills arrays in order from
the stream), and two problems with different ρ_e have the same inputs and the same z, their labels differing
only by (ρ_e − ρ_e')·z. The test set (n_test samples) is the same for every arm of a sweep.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["rng", "Dataset", "Problem", "make_teacher", "make_init", "make_dataset", "make_problem",
           "softplus", "odd_floor", "odd_floor_on"]


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
    """Inputs X (n×d), labels y (n,) and the standard-normal noise draw z behind them, float64 numpy.

    ``y = softplus(X β*) + ρ_e·z``; training casts X and y to float32.
    """

    X: np.ndarray
    y: np.ndarray
    z: np.ndarray | None = None

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


def make_dataset(
    beta: np.ndarray, n: int, label_noise: float, gen_x: np.random.Generator, gen_noise: np.random.Generator
) -> Dataset:
    """x ~ N(0, I_d), y = softplus(β*ᵀx) + ρ_e·z with z ~ N(0, 1): X from ``gen_x``, z from ``gen_noise``.

    Each stream is read from its start, so a smaller n gives a prefix of a larger draw, and ρ_e only scales z.
    """
    X = gen_x.standard_normal((n, beta.shape[0]))
    z = gen_noise.standard_normal(n)
    y = softplus(X @ beta) + label_noise * z
    return Dataset(X=X, y=y, z=z)


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
    """Draw a problem; runs with equal keys share the corresponding draws exactly (PAPER_NOTES.md §6 pairing).

    The data draws depend on (seed, teacher_key, data_key, d) only, not on n or ρ_e (see the module docstring):
    problems that differ only in n or ρ_e are paired by common random numbers.
    """
    beta = make_teacher(d, rng(seed, "teacher", d, *teacher_key))
    W0, a = make_init(d, h, rng(seed, "init_W", d, h, *init_key), rng(seed, "init_a", h, *init_key))
    data_id = (*teacher_key, "|", *data_key)

    def split(role: str, size: int) -> Dataset:
        return make_dataset(beta, size, label_noise, rng(seed, f"{role}_X", d, *data_id),
                            rng(seed, f"{role}_noise", *data_id))

    return Problem(beta=beta, W0=W0, a=a, train=split("train", n), probe=split("probe", n),
                   test=split("test", n_test), label_noise=label_noise)


def odd_floor(label_noise: float, *, points: int = 200) -> float:
    """E[e(z)²] + ρ_e², the test-MSE floor of any odd student (PAPER_NOTES.md §3), z ~ N(0,1).

    e(z) = log(2·cosh(z/2)) is the even part of softplus; the expectation uses Gauss–Hermite quadrature.
    """
    x, w = np.polynomial.hermite_e.hermegauss(points)
    e = np.logaddexp(x / 2, -x / 2)  # log(2 cosh(z/2))
    return float(np.sum(w * e**2) / np.sqrt(2 * np.pi) + label_noise**2)


def odd_floor_on(ds: Dataset, beta: np.ndarray) -> float:
    """The MSE on ``ds`` of the best odd predictor, β*ᵀx/2 (the odd part of softplus(β*ᵀx)).

    Its population value is :func:`odd_floor`; on a finite test set it carries the same sampling error as the
    student's test loss (sd ≈ 0.04 at n_test = 200), so comparing the two on one test set is a paired comparison.
    """
    return float(np.mean((ds.y - ds.X @ beta / 2.0) ** 2))
