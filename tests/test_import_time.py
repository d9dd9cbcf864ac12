"""A fresh process's first ``spectra.analyze`` imports nothing heavy it does not use (a structural check: which
modules are loaded, not how long it took; benchmarks/bench_analyze.py measures the time to a first result)."""

from __future__ import annotations

import json
import subprocess
import sys

# torch.distributed.tensor pulls in sympy (~3 s); neither is needed without a distributed job or a DTensor
HEAVY = ("sympy", "torch.distributed.tensor", "torch._dynamo", "spectra.pipeline.distributed", "matplotlib")

SCRIPT = f"""
import json, sys
import torch
from torch import nn
import spectra

torch.manual_seed(0)
res = spectra.analyze(nn.Linear(32, 24), progress=False)
assert res.to_wide()["alpha"].notna().all()
after_analyze = [m for m in {HEAVY!r} if m in sys.modules]
import torch.distributed.tensor  # the probe sees a module once something imports it
after_import = [m for m in {HEAVY!r} if m in sys.modules]
print(json.dumps([after_analyze, after_import]))
"""


def test_first_analyze_imports_no_distributed_stack_nor_sympy():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300, check=True)
    after_analyze, after_import = json.loads(out.stdout.strip().splitlines()[-1])
    assert after_analyze == []
    assert {"sympy", "torch.distributed.tensor"} <= set(after_import)  # the check itself can fail
