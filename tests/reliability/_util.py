"""Helpers shared by the reliability tests: tiny seeded models, training loops and bit-exact comparisons."""

from __future__ import annotations

import contextlib
import copy
import io
import warnings
from typing import Any, Callable

import torch
from torch import nn


def mlp(seed: int = 0, dtype: torch.dtype = torch.float32, sizes: tuple[int, ...] = (12, 24, 6)) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.Tanh()]
    return nn.Sequential(*layers[:-1]).to(dtype)


def batch(model: nn.Module, seed: int = 1, n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    first = next(p for p in model.parameters() if p.dim() == 2)
    last = [p for p in model.parameters() if p.dim() == 2][-1]
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, first.shape[1], generator=g).to(first.dtype)
    y = torch.randn(n, last.shape[0], generator=g).to(first.dtype)
    return x, y


def step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
    opt.zero_grad()
    ((model(x) - y) ** 2).float().mean().backward()
    opt.step()


def train(model: nn.Module, opt: torch.optim.Optimizer, steps: int, data: tuple | None = None) -> None:
    x, y = data if data is not None else batch(model)
    for _ in range(steps):
        step(model, opt, x, y)


def bits(t: torch.Tensor) -> bytes:
    """The raw bytes of a dense tensor (NaN-safe equality: torch.equal is False for NaN == NaN)."""
    t = t.detach().cpu().contiguous()
    return t.view(torch.uint8).numpy().tobytes() if t.numel() else b""


def same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and bits(a[k]) == bits(b[k]) for k in a
    )


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return copy.deepcopy({k: v.detach().clone() for k, v in model.state_dict().items()})


def twin_run(make_model: Callable[[], nn.Module], make_opt: Callable[[Any], torch.optim.Optimizer],
             body: Callable[[nn.Module, torch.optim.Optimizer, Any], Any], monitor_kwargs: dict[str, Any]):
    """Run ``body`` twice, unmonitored and monitored.

    Returns:
        (monitor, plain state, monitored state, (body's result, warning messages of the monitored run)).
    """
    import spectra

    m0 = make_model()
    o0 = make_opt(m0)
    body(m0, o0, None)
    m1 = make_model()
    o1 = make_opt(m1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mon = spectra.SpectraMonitor(m1, o1, **monitor_kwargs)
        out = body(m1, o1, mon)
    return mon, snapshot(m0), snapshot(m1), (out, [str(w.message) for w in caught])


def hooks_of(opt: torch.optim.Optimizer) -> int:
    return len(opt._optimizer_step_pre_hooks) + len(opt._optimizer_step_post_hooks)


@contextlib.contextmanager
def captured_cli():
    """Capture the CLI's stdout/stderr; yields a dict filled with ``out``/``err`` on exit."""
    out, err = io.StringIO(), io.StringIO()
    res: dict[str, str] = {}
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        yield res
    res["out"], res["err"] = out.getvalue(), err.getvalue()


def rows(mon_or_res: Any):
    return mon_or_res.to_pandas()
