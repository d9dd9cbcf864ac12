"""Render RELIABILITY.md from the fault matrix data (``matrix.all_cases()``).

Usage (from the repository root): ``python -m tests.reliability.render`` rewrites the file;
``python -m tests.reliability.render --check`` exits 1 when the file is out of date. ``test_reliability_doc.py``
asserts the committed file equals :func:`render`, so the table cannot drift from the tests.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "RELIABILITY.md"

HEADER = """# Reliability

spectra runs inside expensive training jobs, so it promises four things, and `tests/reliability/` checks them in
CI:

1. **Never crash training, never corrupt the model.** Bad input gives a clear error at the API boundary, or
   `failed`/`skipped` rows with a message. Monitored runs end bit-identical to unmonitored twins. The monitor's
   hooks go away on `detach()`, and also when the monitor is garbage collected: the optimizer holds it only
   weakly. `KeyboardInterrupt` and `SystemExit` always propagate, because the user asked to stop, and the
   monitor's state stays consistent when they do.
2. **Never lose a computed record, never merge two runs.** Each analyzed step is written to `log_dir` as its
   own part, through a temporary file renamed into place. After a `SIGKILL` at any moment,
   `Results.read(log_dir)` returns every completed step in full. A truncated, foreign or mistyped part, or a
   malformed meta file, is skipped with a warning naming it, so the table it returns is never corrupt
   (`test_crash_safety.py`). Every part carries its run's id: two runs in one directory are never merged
   (`Results.read` asks which one, or returns both side by side), and resuming from `monitor.state_dict()` (a
   cursor, not the records) continues the run without a duplicate step. Every round trip (parquet, CSV, log
   directory, `state_dict`) returns exactly what was written, for any text and any accepted tag value
   (`tests/test_table_roundtrip_properties.py`, hypothesis); a truncated file is an error, not a short table.
3. **Never execute untrusted code.** Checkpoints are read with `torch.load(weights_only=True)` or safetensors.
   A pickle that would run code is refused, and the tests use a payload that really does run under an unsafe
   load. CLI arguments are imported only when written as `module:callable`. No output file is overwritten
   without `--force` (`test_security.py`).
4. **Bounded memory.** On a due step the monitor holds one float32-or-wider copy of each monitored matrix plus
   its gradient, and nothing else. No snapshot or copy outlives its step, and memory stays flat over 1000
   analyzed steps (`test_memory.py`); with `log_dir` no record is kept in memory at all (the results are read
   back from disk), and `close()` releases the model and optimizer.

Estimator properties (`test_properties.py`, hypothesis):
- alpha is invariant to scaling the eigenvalues (xmin scales with them).
- alpha is bit-identical under permutation.
- A fixed-xmin fit is bit-identical when eigenvalues are added below xmin. Hill's alpha equals the fixed-xmin
  fit at Hill's own xmin. The csn scan's D can only decrease when eigenvalues are added below xmin.
- `esd` is invariant to transposes and orthogonal rotations.
- A fit is finite or its status says why.
- Every shape metric of `analyze` (alpha, alpha_hill, D, n_tail, stable_rank, matrix_rank, num_spikes,
  mp_softrank, entropy) and its status are unchanged by W → cW, by `normalize=True`, by transposing W and by
  rotating it; a rank-r product reports rank r and r spikes, and never fits a tail to its rounding noise.
- No `ok` row holds a non-finite value in any test (a shared fixture in `tests/conftest.py` checks every
  record the analyzers produce).

## Fault matrix

Generated from `tests/reliability/fault_cases.py` and `cases_*.py` by `python -m tests.reliability.render`; every row is a test
(`tests/reliability/test_fault_matrix.py`).

"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render() -> str:
    """The full text of RELIABILITY.md."""
    from .matrix import all_cases

    CASES = all_cases()

    lines = ["| Input | Entry point | Outcome |", "|---|---|---|"]
    lines += [f"| {_cell(c.input)} | {_cell(c.entry)} | {_cell(c.outcome)} |" for c in CASES]
    return HEADER + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    text = render()
    if "--check" in argv:
        ok = DOC.exists() and DOC.read_text() == text
        if not ok:
            sys.stderr.write(f"{DOC} is out of date; run python -m tests.reliability.render\n")
        return 0 if ok else 1
    DOC.write_text(text)
    sys.stdout.write(f"wrote {DOC}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
