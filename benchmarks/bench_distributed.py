"""Sharded analysis across ranks: ``spectra.analyze(model, distributed="shard")`` on 1 vs 2 gloo ranks (CPU).

Model: a GPT-2-shaped stack of ``--blocks`` blocks (default 12), each with the four GPT-2 matrices as
``nn.Linear``: 768→2304 (fused qkv), 768→768 (attn proj), 768→3072 (mlp fc), 3072→768 (mlp proj); float32,
seeded default init. Analyzers: ``esd`` + ``tail`` (``analyze``'s defaults). One torch thread per rank (and
one BLAS thread), one run of each configuration, in one invocation: compare the ratios.

Per rank: the layers and the estimated cost share it was assigned (Σ N·M·min(N, M), LPT greedy), the time it
spent on its own share and the time it then waited in the gather (the wait is the imbalance plus transfer).
Run: ``python benchmarks/bench_distributed.py [--blocks 12]``. Writes ``benchmarks/results/distributed.md``/``.csv``.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import pickle
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import environment, write_table  # noqa: E402

GPT2_SHAPES = ((768, 2304), (768, 768), (768, 3072), (3072, 768))  # (in, out) of each Linear in a block


def build_model(blocks: int):
    """The GPT-2-shaped stack (never run forward: only its weights are analyzed)."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.ModuleList(
        nn.ModuleDict({name: nn.Linear(i, o) for name, (i, o) in zip(("qkv", "proj", "fc", "out"), GPT2_SHAPES)})
        for _ in range(blocks)
    )


class _Timing(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.items: list[dict] = []

    def emit(self, record: logging.LogRecord) -> None:
        if hasattr(record, "spectra_timing"):
            self.items.append(record.spectra_timing)


def _worker(rank: int, world: int, blocks: int, tmp: str) -> None:
    import torch
    import torch.distributed as dist
    from threadpoolctl import threadpool_limits

    import spectra

    torch.set_num_threads(1)
    handler = _Timing()
    log = logging.getLogger("spectra.distributed")
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    model = build_model(blocks)
    mode = None
    if world > 1:
        dist.init_process_group("gloo", rank=rank, world_size=world, init_method=f"file://{tmp}/pg",
                                timeout=datetime.timedelta(seconds=600))
        mode = "shard"
    try:
        with threadpool_limits(1), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            spectra.analyze(torch.nn.Linear(64, 32))  # warm-up: lazy imports, plugin manager
            if world > 1:
                dist.barrier()
            t0 = time.perf_counter()
            res = spectra.analyze(model, distributed=mode)
            wall = time.perf_counter() - t0
        out = {"rank": rank, "wall_s": wall, "rows": len(res.to_pandas()), "timing": handler.items,
               "ok": int((res.to_pandas()["status"] == "ok").sum())}
        Path(tmp, f"w{world}-r{rank}.pkl").write_bytes(pickle.dumps(out))
    finally:
        if world > 1:
            dist.destroy_process_group()


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, default=12)
    args = ap.parse_args(argv)

    import torch
    import torch.multiprocessing as mp

    from spectra.distributed import assign_layers, estimated_cost
    from spectra.layers import discover_layers
    from spectra.plugins import get_plugin_manager

    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    env = environment()
    entries = [e for e in discover_layers(build_model(args.blocks), hook=get_plugin_manager(entrypoints=False).hook)
               if e.analyzed]
    costs = [estimated_cost(e) for e in entries]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for world in (1, 2):
            t0 = time.perf_counter()
            mp.spawn(_worker, args=(world, args.blocks, tmp), nprocs=world, join=True)
            spawn_s = time.perf_counter() - t0
            outs = [pickle.loads(Path(tmp, f"w{world}-r{r}.pkl").read_bytes()) for r in range(world)]
            owner = assign_layers(entries, world)
            for o in outs:
                r = o["rank"]
                t = o["timing"][-1] if o["timing"] else {}
                mine = [c for c, w in zip(costs, owner) if w == r]
                rows.append({
                    "ranks": world, "rank": r, "layers": len(mine), "cost_share": sum(mine) / sum(costs),
                    "own_share_s": t.get("local_s", o["wall_s"]), "gather_wait_s": t.get("gather_s", 0.0),
                    "analyze_wall_s": o["wall_s"], "rows": o["rows"], "ok_rows": o["ok"],
                    "process_s": spawn_s,
                })
    walls = {w: max(r["analyze_wall_s"] for r in rows if r["ranks"] == w) for w in (1, 2)}
    notes = [
        f"GPT-2-shaped stack: {args.blocks} blocks x 4 Linear ({', '.join(f'{i}x{o}' for i, o in GPT2_SHAPES)}), "
        f"{len(entries)} matrices; analyzers esd+tail (csn); gloo on CPU; 1 torch + 1 BLAS thread per rank; one run",
        f"speedup 1 -> 2 ranks (slowest rank's analyze wall time): {walls[1] / walls[2]:.2f}x",
        "own_share_s: time on the rank's own layers; gather_wait_s: then waiting for the other rank and the "
        "all_gather of records (imbalance + transfer); process_s: whole spawn incl. interpreter and torch import",
        "cost_share: fraction of the estimated cost sum(N*M*min(N,M)) assigned by the LPT greedy",
        f"machine load (1/5/15 min) at start {env.get('loadavg_1_5_15')}: other people's jobs share these cores, "
        "so absolute times move; the 2-rank speedup is capped by the 2 shared cores",
    ]
    return write_table("distributed", rows, title="spectra.analyze sharded across gloo ranks: 1 vs 2", notes=notes,
                       env=env)


if __name__ == "__main__":
    print(main())
