"""When to analyze: schedules map a step number (completed optimizer steps) to yes/no.

Schedules are small immutable objects; combine them with ``|`` (either) and ``&`` (both).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable

__all__ = ["Schedule", "every", "at", "logspaced", "as_schedule"]


class Schedule:
    """Base class: ``schedule(step) -> bool``."""

    def __call__(self, step: int) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def __or__(self, other: "Schedule") -> "Schedule":
        return _Combined(self, as_schedule(other), "or")

    def __and__(self, other: "Schedule") -> "Schedule":
        return _Combined(self, as_schedule(other), "and")


@dataclass(frozen=True)
class _Combined(Schedule):
    a: Schedule
    b: Schedule
    op: str

    def __call__(self, step: int) -> bool:
        return (self.a(step) or self.b(step)) if self.op == "or" else (self.a(step) and self.b(step))


@dataclass(frozen=True)
class _Every(Schedule):
    n: int
    start: int = 0

    def __call__(self, step: int) -> bool:
        return step >= self.start and (step - self.start) % self.n == 0


@dataclass(frozen=True)
class _At(Schedule):
    steps: frozenset[int]

    def __call__(self, step: int) -> bool:
        return step in self.steps


@dataclass(frozen=True)
class _Predicate(Schedule):
    fn: Callable[[int], bool]

    def __call__(self, step: int) -> bool:
        return bool(self.fn(step))


def every(n: int, *, start: int = 0) -> Schedule:
    """Every ``n`` steps from ``start`` (step 0, the initial weights, included by default)."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"every(n) needs a positive integer n, got {n!r}")
    if not isinstance(start, int) or start < 0:
        raise ValueError(f"start must be a non-negative integer, got {start!r}")
    return _Every(n, start)


def at(steps: Iterable[int]) -> Schedule:
    """Exactly the given steps."""
    s = list(steps)
    bad = [x for x in s if not isinstance(x, int) or isinstance(x, bool) or x < 0]
    if bad:
        raise ValueError(f"at(steps) needs non-negative integers, got {bad!r}")
    return _At(frozenset(s))


def logspaced(start: int, stop: int, num: int, *, include_zero: bool = True) -> Schedule:
    """About ``num`` log-spaced steps between ``start`` (≥ 1) and ``stop``, rounded and de-duplicated.

    Early training changes fastest, so this spends the budget where the spectrum moves.
    """
    if not (isinstance(start, int) and isinstance(stop, int) and start >= 1 and stop >= start):
        raise ValueError(f"logspaced needs integers 1 <= start <= stop, got start={start!r}, stop={stop!r}")
    if not isinstance(num, int) or num < 1:
        raise ValueError(f"logspaced needs a positive integer num, got {num!r}")
    if num == 1:
        steps = {start}
    else:
        r = (math.log(stop) - math.log(start)) / (num - 1)
        steps = {int(round(math.exp(math.log(start) + i * r))) for i in range(num)}
    if include_zero:
        steps.add(0)
    return _At(frozenset(steps))


def as_schedule(obj: "Schedule | int | Iterable[int] | Callable[[int], bool] | None") -> Schedule | None:
    """Coerce user input: an int n → every(n); an iterable → at(...); a callable → predicate."""
    if obj is None or isinstance(obj, Schedule):
        return obj
    if isinstance(obj, bool):
        raise TypeError("a schedule cannot be a bool; use every(n), at([...]) or logspaced(...)")
    if isinstance(obj, int):
        return every(obj)
    if callable(obj):
        return _Predicate(obj)
    try:
        return at(list(obj))
    except TypeError:
        raise TypeError(
            f"cannot use {type(obj).__name__} as a schedule; pass an int, a list of steps, a callable or a Schedule"
        ) from None
