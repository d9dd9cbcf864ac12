"""The torch decomposition backend on a GPU: monitor overhead, analyze on the device, float32 vs float64.

One prepared script (about 5 minutes on an H200; a time budget skips what would not fit and says so). With
CUDA it measures, on a GPT-2-small-shaped model built from ``torch.nn`` (12 blocks, d = 768, 12 heads, vocab
50257 tied, sequence 256, batch 8; nothing downloaded):

* ``monitor``: the training overhead of ``SpectraMonitor(model, opt, every=10)`` and ``every=100`` (default
  analyzers: esd, tail, alignment), against the same AdamW loop unmonitored;
* ``analyze``: ``spectra.analyze(model)`` with the model on CUDA (device tensors: the torch backend through
  ``LayerState``) vs the same model on the CPU (LAPACK) vs WeightWatcher 0.7.7 (its CPU path, if importable),
  and how far their alphas agree;
* ``decompose``: per matrix shape of the model, eigenvalues + top-10 triplets with the LAPACK ``Decomposer``
  (device → host copy included) vs ``TorchDecomposer`` in float64 and float32;
* ``accuracy``: float32 vs float64 on the device (max relative eigenvalue error on the top of the spectrum and
  on the fitted tail, the error over the documented bound δ₃₂, alpha difference, top-10 singular values) on
  Gaussian, Student-t and trained-like matrices, and float64 on the device vs LAPACK;
* ``batched``: per-head / conv-slice stacks: one batched ``eigvalsh`` vs one decomposer per slice.

It writes ``benchmarks/results/gpu.md`` (device name, torch, CUDA and cuDNN versions in the header). Without CUDA
it exits with a message (code 0), unless asked for ``--cpu-smoke`` (tiny sizes on the CPU, under a minute, to
check the script runs) or ``--device cpu`` (the real sizes on the CPU, for reference; slow); both print their
tables and write a file only with ``--out``.

Usage::

    python benchmarks/bench_gpu.py                       # on a CUDA machine
    python benchmarks/bench_gpu.py --cpu-smoke           # anywhere: does it run?
    python benchmarks/bench_gpu.py --device cpu --only accuracy,batched --out /tmp/gpu_cpu.md
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import RESULTS_DIR, environment  # noqa: E402

SECTIONS = ("monitor", "analyze", "decompose", "accuracy", "batched")
FULL = {"blocks": 12, "d": 768, "heads": 12, "vocab": 50257, "seq": 256, "batch": 8, "steps_base": 200,
        "steps_10": 100, "steps_100": 200, "acc_shapes": [(768, 768), (3072, 768), (768, 2304)],
        "stacks": [(12, 768, 64), (9, 256, 256), (64, 128, 128)], "budget_s": 285.0}
SMOKE = {"blocks": 2, "d": 128, "heads": 4, "vocab": 512, "seq": 32, "batch": 2, "steps_base": 20,
         "steps_10": 20, "steps_100": 20, "acc_shapes": [(128, 128), (256, 64)],
         "stacks": [(12, 128, 16), (9, 48, 48)], "budget_s": 50.0}


# ---------------------------------------------------------------------------------------------- the model
class Block(nn.Module):
    """A GPT-2 block: pre-LayerNorm causal self-attention (fused q/k/v) and a 4·d GELU MLP."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln_1, self.ln_2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.c_attn, self.c_proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.c_fc, self.mlp_proj = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, d = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(d, dim=2)
        q, k, v = (t.view(B, T, self.heads, d // self.heads).transpose(1, 2) for t in (q, k, v))
        a = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.c_proj(a.transpose(1, 2).reshape(B, T, d))
        return x + self.mlp_proj(nn.functional.gelu(self.c_fc(self.ln_2(x))))


class GPT(nn.Module):
    """GPT-2-small-shaped language model (token and position embeddings, blocks, tied head)."""

    def __init__(self, blocks: int, d: int, heads: int, vocab: int, seq: int) -> None:
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(seq, d)
        self.h = nn.ModuleList(Block(d, heads) for _ in range(blocks))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.wte.weight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for b in self.h:
            x = b(x)
        return self.head(self.ln_f(x))


def build(cfg: dict, device: str, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    m = GPT(cfg["blocks"], cfg["d"], cfg["heads"], cfg["vocab"], cfg["seq"])
    for p in m.parameters():  # GPT-2's init scale
        if p.dim() == 2:
            nn.init.normal_(p, std=0.02)
    return m.to(device)


# ---------------------------------------------------------------------------------------------- helpers
def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: str, repeat: int = 3) -> tuple[float, Any]:
    """Best wall time of ``fn()`` over ``repeat`` runs (device synchronised), and its last result."""
    best, out = math.inf, None
    for _ in range(max(1, repeat)):
        sync(device)
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best, out


def fmt(v: Any) -> str:
    if isinstance(v, float):
        if v != v:
            return "nan"
        return f"{v:.3g}" if 1e-3 <= abs(v) < 1e4 or v == 0 else f"{v:.2e}"
    return "" if v is None else str(v)


def table(rows: list[dict]) -> list[str]:
    if not rows:
        return ["(nothing measured)"]
    cols: list[str] = []
    for r in rows:
        cols += [c for c in r if c not in cols]
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    return out + ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]


class Budget:
    """Wall-clock budget for the whole script: sections ask before starting work they may not finish."""

    def __init__(self, seconds: float) -> None:
        self.total = float(seconds)
        self.end = time.perf_counter() + seconds

    def left(self) -> float:
        return self.end - time.perf_counter()


# ---------------------------------------------------------------------------------------------- sections
def train(model: nn.Module, opt: Any, cfg: dict, device: str, steps: int) -> float:
    g = torch.Generator(device="cpu").manual_seed(1)
    x = torch.randint(0, cfg["vocab"], (cfg["batch"], cfg["seq"]), generator=g).to(device)
    y = torch.randint(0, cfg["vocab"], (cfg["batch"], cfg["seq"]), generator=g).to(device)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten()).backward()
        opt.step()
    sync(device)
    return time.perf_counter() - t0


def section_monitor(cfg: dict, device: str, budget: Budget, notes: list[str]) -> list[dict]:
    import warnings

    import spectra

    def run(every: int | None, steps: int) -> tuple[float, int, int]:
        model = build(cfg, device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        with warnings.catch_warnings(record=True) as caught:  # e.g. the monitor's own overhead estimate
            warnings.simplefilter("always")
            mon = spectra.SpectraMonitor(model, opt, every=every) if every else None
            dt = train(model, opt, cfg, device, steps)
        for w in caught[:1]:
            notes.append(f"every={every}: {w.category.__name__}: {str(w.message)[:300]}")
        due = failed = 0
        if mon is not None:
            df = mon.results.to_pandas()
            due, failed = int(df["step"].nunique()), int((df["status"] == "failed").sum())
            mon.close()
        return dt, due, failed

    run(None, 3)  # warm-up (kernels, allocator)
    base = [run(None, cfg["steps_base"])[0]]
    rows: list[dict] = []
    for every, steps in ((100, cfg["steps_100"]), (10, cfg["steps_10"])):
        per_step = min(base) / cfg["steps_base"]
        prev = rows[-1] if rows else None
        cost = (prev["t"] - per_step * prev["steps"]) / prev["due steps"] if prev and prev["due steps"] else 0.0
        if cost > 0:  # fit every=10 into what is left (half the budget for the rest)
            fits = int((budget.left() - 0.5 * budget.total - cost) / (per_step + cost / 10) / 10) * 10
            if fits < steps:
                notes.append(f"monitor every=10: {max(fits, 10)} steps instead of {steps} (time budget)")
                steps = max(fits, 10)
        dt, due, failed = run(every, steps)
        base.append(run(None, cfg["steps_base"])[0])  # interleaved: the unmonitored time is the best of these
        rows.append({"mode": f"every={every}", "steps": steps, "s/step": dt / steps, "due steps": due,
                     "failed rows": failed, "t": dt})
    per_step = min(base) / cfg["steps_base"]
    out = [{"mode": "no monitor", "steps": cfg["steps_base"], "s/step": per_step, "due steps": 0,
            "overhead %": 0.0, "s per due step": None, "failed rows": 0}]
    for r in rows:
        t = r.pop("t")
        r["overhead %"] = 100.0 * (r["s/step"] / per_step - 1.0)
        r["s per due step"] = (t - per_step * r["steps"]) / r["due steps"] if r["due steps"] else None
        out.append(r)
    notes.append(f"unmonitored runs (s): {', '.join(f'{b:.2f}' for b in base)} for {cfg['steps_base']} steps; the "
                 "best is the baseline")
    return out


def _alphas(res: Any) -> Any:
    w = res.to_wide().set_index("layer")
    return w["alpha"].astype(float)


def section_analyze(cfg: dict, device: str, budget: Budget, notes: list[str]) -> list[dict]:
    import spectra

    model_dev = build(cfg, device)
    model_cpu = build(cfg, "cpu")
    rows = []
    spectra.analyze(build({**cfg, "blocks": 1}, device), progress=False)  # warm-up (imports, kernels)
    t_dev, res_dev = timed(lambda: spectra.analyze(model_dev, fit="ww", progress=False), device, 1)
    t_cpu, res_cpu = timed(lambda: spectra.analyze(model_cpu, fit="ww", progress=False), "cpu", 1)
    a_dev, a_cpu = _alphas(res_dev), _alphas(res_cpu)
    common = a_dev.index.intersection(a_cpu.index)
    rel = float(np.nanmax(np.abs(a_dev[common] - a_cpu[common]) / np.abs(a_cpu[common])))
    rows.append({"run": f"spectra.analyze, model on {device}", "layers": len(a_dev), "s": t_dev,
                 "alpha max rel diff": rel, "vs": "model on cpu"})
    rows.append({"run": "spectra.analyze, model on cpu", "layers": len(a_cpu), "s": t_cpu,
                 "alpha max rel diff": 0.0, "vs": "itself"})
    try:
        from spectra.compat.weightwatcher.runner import hygiene, import_weightwatcher, restore_longname, ww_cpu_path

        ww = import_weightwatcher()
    except Exception as exc:  # noqa: BLE001 - not installed: say so in the table
        notes.append(f"WeightWatcher not run: {type(exc).__name__}: {exc}")
        return rows
    if budget.left() < 0.4 * budget.total:
        notes.append("WeightWatcher not run: time budget")
        return rows

    def run_ww() -> Any:
        with hygiene([]), restore_longname(model_cpu), ww_cpu_path():
            return ww.WeightWatcher(model=model_cpu).analyze(svd_method="accurate")

    t_ww, details = timed(run_ww, "cpu", 1)
    d = details.set_index("longname")["alpha"].astype(float)
    common = d.index.intersection(a_cpu.index)
    rel = float(np.nanmax(np.abs(a_dev[common] - d[common]) / np.abs(d[common]))) if len(common) else math.nan
    rows.append({"run": f"WeightWatcher {ww.__version__} (CPU path, svd_method='accurate')", "layers": len(d),
                 "s": t_ww, "alpha max rel diff": rel, "vs": f"spectra on {device}, fit='ww'"})
    return rows


def _model_shapes(cfg: dict) -> list[tuple[int, int]]:
    d = cfg["d"]
    return [(3 * d, d), (d, d), (4 * d, d), (d, 4 * d), (cfg["vocab"], d)]


def section_decompose(cfg: dict, device: str, budget: Budget, notes: list[str]) -> list[dict]:
    from spectra.functional.decompose import Decomposer
    from spectra.functional.torch_decompose import TorchDecomposer

    rows = []
    for N, M in _model_shapes(cfg):
        if budget.left() < 0.2 * budget.total:
            notes.append("decompose: stopped early (time budget)")
            break
        g = torch.Generator(device="cpu").manual_seed(N * 7 + M)
        W = (torch.randn(N, M, generator=g) * 0.02).to(device)

        def lapack() -> Any:
            d = Decomposer(W)
            d.plan(evals=True, k=10)
            d.compute()
            return d

        def dev(precision: str) -> Any:
            d = TorchDecomposer(W, precision=precision)
            d.plan(evals=True, k=10)
            d.compute()
            return d

        t_l, dl = timed(lapack, device, 2)
        t_64, d64 = timed(lambda: dev("fp64"), device, 2)
        t_32, d32 = timed(lambda: dev("fp32"), device, 2)
        rows.append({"shape": f"{N}x{M}", "LAPACK (host) s": t_l, "torch fp64 s": t_64, "torch fp32 s": t_32,
                     "fp64 speedup": t_l / t_64, "fp32 speedup": t_l / t_32,
                     "fp64 max rel err vs LAPACK": float(np.max(np.abs(d64.eigvals() - dl.eigvals())
                                                               / np.maximum(dl.eigvals(), 1e-300))),
                     "routes (torch fp64)": f"{d64.routes.get('evals')}, {d64.routes.get('svd')}"})
    return rows


def trained_like(rng: np.random.Generator, N: int, M: int) -> np.ndarray:
    """Power-law singular values on random bases plus a small Marchenko–Pastur bulk (a trained-like ESD)."""
    n = min(N, M)
    U, _ = np.linalg.qr(rng.standard_normal((N, n)))
    V, _ = np.linalg.qr(rng.standard_normal((M, n)))
    return (U * np.arange(1, n + 1) ** -0.6) @ V.T + 0.02 * rng.standard_normal((N, M)) / np.sqrt(N)


FAMILIES = {
    "gaussian": lambda rng, N, M: rng.standard_normal((N, M)),
    "student-t(3)": lambda rng, N, M: rng.standard_t(3, (N, M)),
    "student-t(2)": lambda rng, N, M: rng.standard_t(2, (N, M)),
    "trained-like": trained_like,
}


def section_accuracy(cfg: dict, device: str, budget: Budget, notes: list[str], seeds: int = 2) -> list[dict]:
    from spectra.functional import fit_power_law
    from spectra.functional.decompose import Decomposer
    from spectra.functional.torch_decompose import TorchDecomposer

    rows = []
    for N, M in cfg["acc_shapes"]:
        for name, make in FAMILIES.items():
            worst: dict[str, float] = {}
            for seed in range(seeds):
                if budget.left() < 0.1 * budget.total:
                    notes.append("accuracy: stopped early (time budget)")
                    return rows
                A32 = torch.tensor(make(np.random.default_rng(seed), N, M), dtype=torch.float32)
                t = A32.to(device)
                d64, d32 = TorchDecomposer(t), TorchDecomposer(t, precision="fp32")
                l64, l32 = d64.eigvals(), d32.eigvals()
                lref = Decomposer(A32).eigvals()
                err = np.abs(l32 - l64)
                f64, f32 = fit_power_law(l64), fit_power_law(l32)
                tail, top = l64 >= f64.xmin, l64 >= 1e-3 * l64[-1]
                _, S64, _, _ = d64.top_svd(10)
                _, S32, _, _ = d32.top_svd(10)
                floor = 4 * (np.sqrt(lref[-1]) * max(N, M) * np.finfo(np.float64).eps) ** 2
                vals = {
                    "fp64 vs LAPACK max rel": float(np.max(np.abs(l64 - lref)[lref > floor] / lref[lref > floor])),
                    "fp32 err / bound": float(err.max() / d32.error_bound),
                    "fp32 max rel (λ ≥ 1e-3 λmax)": float(np.max(err[top] / l64[top])),
                    "fp32 max rel (tail)": float(np.max(err[tail] / l64[tail])),
                    "fp32 max rel (all)": float(np.max(err / np.maximum(l64, 1e-300))),
                    "|Δalpha| fp32": abs(f32.alpha - f64.alpha),
                    "top-10 σ max rel fp32": float(np.max(np.abs(S32 - S64) / S64)),
                }
                for k, v in vals.items():
                    worst[k] = max(worst.get(k, 0.0), v)
                worst["alpha"] = f64.alpha
            rows.append({"shape": f"{N}x{M}", "family": name, "seeds": seeds, **worst})
    return rows


def section_batched(cfg: dict, device: str, budget: Budget, notes: list[str]) -> list[dict]:
    from spectra.functional.decompose import Decomposer
    from spectra.functional.torch_decompose import TorchDecomposer
    from spectra.functional.torch_esd import batched_eigvals

    rows = []
    for B, N, M in cfg["stacks"]:
        if budget.left() < 0.03 * budget.total:
            notes.append("batched: stopped early (time budget)")
            break
        g = torch.Generator(device="cpu").manual_seed(B + N + M)
        X = (torch.randn(B, N, M, generator=g) * 0.02).to(device)
        t_loop, ref = timed(lambda: np.stack([TorchDecomposer(x).eigvals() for x in X]), device)
        t_b, lam = timed(lambda: batched_eigvals(X), device)
        t_be, _ = timed(lambda: batched_eigvals(X, method="eigh"), device)
        t_le, _ = timed(lambda: np.stack([TorchDecomposer(x).eigvals("eigh") for x in X]), device)
        t_lap, _ = timed(lambda: np.stack([Decomposer(x).eigvals() for x in X]), device)
        rows.append({"stack": f"{B}x{N}x{M}", "LAPACK loop s": t_lap, "torch loop (auto) s": t_loop,
                     "batched (auto) s": t_b, "speedup auto": t_loop / t_b, "torch loop (eigh) s": t_le,
                     "batched (eigh) s": t_be, "speedup eigh": t_le / t_be,
                     "max rel diff": float(np.max(np.abs(lam - ref) / np.maximum(ref, 1e-300)))})
    return rows


# ---------------------------------------------------------------------------------------------- main
def header(device: str) -> list[str]:
    env = environment(("numpy", "scipy", "torch"))
    if device.startswith("cuda"):
        env["device"] = torch.cuda.get_device_name(0)
        env["cuda"] = torch.version.cuda
        env["cudnn"] = torch.backends.cudnn.version()
        env["gpu memory GiB"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    else:
        env["device"] = f"cpu ({platform.processor() or platform.machine()})"
    env["float32 matmul precision"] = torch.get_float32_matmul_precision()
    return [" | ".join(f"{k}: {v}" for k, v in env.items())]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on the CPU: check that the script runs")
    ap.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    ap.add_argument("--out", default=None, help="markdown output (default benchmarks/results/gpu.md with CUDA)")
    ap.add_argument("--budget", type=float, default=None, help="seconds for the whole run")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch and BLAS threads for the whole run (default: leave the process's settings)")
    args = ap.parse_args(argv)
    if args.threads is not None:
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(args.threads)
        with threadpool_limits(limits=args.threads, user_api="blas"):
            return _run(ap, args, sys.argv[1:] if argv is None else argv)
    return _run(ap, args, sys.argv[1:] if argv is None else argv)


def _run(ap: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str]) -> int:
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [s for s in sections if s not in SECTIONS]
    if bad:
        ap.error(f"unknown section(s) {bad}; allowed: {', '.join(SECTIONS)}")
    if args.cpu_smoke:
        device, cfg = "cpu", SMOKE
    elif args.device == "cpu":
        device, cfg = "cpu", FULL
    elif torch.cuda.is_available():
        device, cfg = "cuda", FULL
    else:
        print("bench_gpu: CUDA is not available, nothing measured. Run it on a CUDA machine, or with "
              "--cpu-smoke (tiny sizes, checks the script) or --device cpu (real sizes on the CPU).")
        return 0
    budget = Budget(args.budget if args.budget is not None else cfg["budget_s"])
    t0 = time.perf_counter()
    notes: list[str] = [f"config: {', '.join(f'{k}={v}' for k, v in cfg.items() if not isinstance(v, list))}",
                        f"torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs"]
    titles = {
        "monitor": "SpectraMonitor overhead (esd, tail, alignment; AdamW)",
        "analyze": "spectra.analyze on the device vs on the CPU vs WeightWatcher (fit='ww')",
        "decompose": "One matrix: eigenvalues + top-10 triplets",
        "accuracy": "Accuracy: float32 vs float64 on the device (worst over seeds), float64 vs LAPACK",
        "batched": "Batched eigenvalues of same-shape stacks vs one decomposer per slice",
    }
    fns = {"monitor": section_monitor, "analyze": section_analyze, "decompose": section_decompose,
           "accuracy": section_accuracy, "batched": section_batched}
    lines = [f"# {__doc__.splitlines()[0]}", "", f"`python benchmarks/bench_gpu.py {' '.join(argv)}`",
             "", *header(device), ""]
    for s in sections:
        if budget.left() <= 0.02 * budget.total:
            notes.append(f"{s}: skipped (time budget)")
            continue
        ts = time.perf_counter()
        rows = fns[s](cfg, device, budget, notes)
        lines += [f"## {titles[s]}", "", *table(rows), "", f"({time.perf_counter() - ts:.1f} s)", ""]
        print("\n".join(lines[-len(rows) - 5:]), flush=True)
    lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [f"- total {time.perf_counter() - t0:.1f} s", ""]
    text = "\n".join(lines)
    out = args.out or (str(RESULTS_DIR / "gpu.md") if device == "cuda" else None)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text)
        print(f"wrote {out}")
    else:
        print("\n".join(f"- {n}" for n in notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
