"""The two-layer plugin's verdicts: the multi-repeat rule, margins, per-step claims on every repeat, and the paired
(common-random-number) sweeps (PAPER_NOTES.md §8.1–§8.2)."""

from __future__ import annotations

import ast
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from spectra_twolayer import config as C
from spectra_twolayer.claims import (
    CLAIMS,
    FAIL,
    INFO,
    NA,
    PASS,
    UNDECIDED,
    Band,
    allowed_failures,
    claim_rollup,
    evaluate_claims,
    judge,
)
from spectra_twolayer.data import make_problem
from spectra_twolayer.runner import run_twolayer
from spectra_twolayer.sweeps import build_runs

PLUGIN = Path(__file__).resolve().parents[1] / "plugins" / "spectra_twolayer"


def _reps(*values):
    return {f"r{i}": v for i, v in enumerate(values)}


# ------------------------------------------------------------------------------------------ the rule itself
def test_allowed_failures_is_one_in_five_rounded_down():
    assert [allowed_failures(r) for r in (1, 3, 4, 5, 9, 10, 40)] == [0, 0, 0, 1, 1, 2, 8]


def test_three_repeats_one_failing_fails_five_repeats_one_failing_passes():
    band = Band(lo=0.7)
    ok = judge(_reps(0.9, 0.85, 0.8), band)
    assert ok.verdict == PASS and ok.failed == [] and ok.repeats == 3
    one_bad = judge(_reps(0.9, 0.65, 0.8), band)  # the mean (0.78) passes, one repeat of three does not
    assert one_bad.mean_ok and one_bad.failed == ["r1"] and one_bad.verdict == FAIL
    five = judge(_reps(0.9, 0.65, 0.8, 0.85, 0.9), band)  # ⌊5/5⌋ = 1 failure tolerated
    assert five.failed == ["r1"] and five.verdict == PASS
    two_of_five = judge(_reps(0.9, 0.65, 0.8, 0.6, 0.9), band)
    assert two_of_five.verdict == FAIL
    mean_bad = judge(_reps(0.71, 0.72, 0.1, 0.75, 0.8), band)  # one failure allowed, but the mean is out
    assert not mean_bad.mean_ok and mean_bad.verdict == FAIL


def test_wider_single_value_band_and_mean_only_statements():
    # claim 1a: the mean must be in [0.97, 1.0], each init only in [0.95, 1.03]
    j = judge(_reps(0.96, 0.99, 0.985), Band(0.97, 1.0), repeat_band=Band(0.95, 1.03))
    assert j.failed == [] and j.verdict == PASS
    j = judge(_reps(0.955, 0.96, 0.965), Band(0.97, 1.0), repeat_band=Band(0.95, 1.03))
    assert j.failed == [] and j.verdict == FAIL  # every init is fine, the mean is not
    # claim 11b: a statement about the mean of >= 3 repeats; per-repeat values are not judged
    band = Band(0.02, 0.08)
    assert judge(_reps(0.05, 0.06), band, repeat_band=None, min_repeats=3).verdict == UNDECIDED
    j = judge(_reps(-0.01, 0.1, 0.06), band, repeat_band=None, min_repeats=3)
    assert j.verdict == PASS and j.failed == [] and math.isnan(j.z_repeat)


def test_missing_and_dropped_repeats():
    band = Band(hi=0.5)
    j = judge({"r0": 0.1, "r1": math.nan, "r2": 0.2}, band)  # a value that could not be computed fails
    assert j.repeats == 3 and j.failed == ["r1"] and j.verdict == FAIL
    j = judge({"r0": 0.1, "r1": None, "r2": 0.2}, band)  # the check does not apply to r1
    assert j.repeats == 2 and j.verdict == PASS
    assert judge({"r0": None}, band).verdict == NA


def test_margins_in_standard_errors():
    j = judge(_reps(1.0, 2.0, 3.0), Band(lo=0.0))
    assert math.isclose(j.mean, 2.0) and math.isclose(j.sd, 1.0) and math.isclose(j.se, 1 / math.sqrt(3))
    assert math.isclose(j.z_mean, 2 * math.sqrt(3))  # the mean is 2 / (1/√3) SEs above the threshold
    assert math.isclose(j.z_repeat, 1.0)  # the worst repeat is 1 sd above it
    assert math.isclose(j.margin, 1.0)
    f = judge(_reps(-1.0, -2.0, -3.0), Band(lo=0.0))
    assert f.verdict == FAIL and math.isclose(f.z_repeat, -3.0)  # the worst repeat, r2, is 3 sds below
    assert math.isclose(f.margin, -2 * math.sqrt(3))  # the strongest failure decides: the mean's
    exact = judge(_reps(0, 0, 0), Band(hi=0.5, label="= 0"))
    assert exact.verdict == PASS and exact.margin == math.inf  # counts that agree on every repeat
    assert math.isnan(judge(_reps(0.3), Band(lo=0.0)).margin)  # one repeat: no spread, no margin


def test_rollup_never_turns_an_undecided_check_into_a_pass():
    rows = []
    for cid in CLAIMS:
        rows.append({"claim": cid, "check": cid, "verdict": PASS, "repeats": 3, "margin": 5.0})
    rows.append({"claim": "11", "check": "11b", "verdict": UNDECIDED, "repeats": 2, "margin": math.nan})
    rows.append({"claim": "12", "check": "12x", "verdict": FAIL, "repeats": 3, "margin": -0.5})
    rows.append({"claim": "12", "check": "12y", "verdict": INFO, "repeats": 3, "margin": -50.0})
    roll = claim_rollup(pd.DataFrame(rows)).set_index("claim")
    assert roll.loc["11", "verdict"] == UNDECIDED and not roll.loc["11", "robust"]
    assert roll.loc["12", "verdict"] == FAIL and roll.loc["12", "margin"] == -0.5  # info rows are not judged
    assert roll.loc["1", "verdict"] == PASS and roll.loc["1", "robust"] and roll.loc["1", "repeats"] == "3"


# ------------------------------------------------------------------------------------------ per-step claims
@pytest.fixture(scope="module")
def quarter_overlaps():
    """Quarter scale, 3 seeded repeats of the per-step overlap runs (Adam η=1, GD η=500, probes every step)."""
    torch.set_num_threads(1)
    return run_twolayer(preset="overlaps", scale="quarter", repeats=3, seed=11, alpha_ks=False, progress=False)


def _checks(summary: pd.DataFrame, cfg: dict) -> pd.DataFrame:
    return evaluate_claims(summary, cfg).set_index("check")


def _adam_step(s: pd.DataFrame, repeat: int, step: int) -> pd.Series:
    return (s["group"] == "overlap") & (s["optimizer"] == "adam") & (s["repeat"] == repeat) & (s["step"] == step)


@pytest.mark.slow
def test_one_repeat_failing_a_per_step_check_fails_it(quarter_overlaps):
    s, cfg = quarter_overlaps.summary, quarter_overlaps.config
    assert sorted(s["repeat"].unique()) == [0, 1, 2]
    base = _checks(s, cfg)
    for chk in ("8a-adam", "8b-adam", "8d-adam", "9a", "9b", "9c", "9d"):
        assert base.loc[chk, "repeats"] == 3, chk  # per-step claims rest on every repeat
    assert base.loc["8d-adam", "verdict"] == PASS  # α_Hill non-increasing over the steps of every repeat
    # make repeat 1's α_Hill rise by 0.03 from step 4 to step 5 (a reversal above the 0.01 tolerance)
    bad = s.copy()
    bad.loc[_adam_step(bad, 1, 5), "alpha_hill"] = float(bad.loc[_adam_step(bad, 1, 4), "alpha_hill"].iloc[0]) + 0.03
    out = _checks(bad, cfg)
    assert out.loc["8d-adam", "verdict"] == FAIL  # the documented verdict: 1 of 3 repeats fails → FAIL
    assert out.loc["8d-adam", "failed_repeats"] == "r1" and out.loc["8d-adam", "repeats"] == 3
    assert out.loc["8d-adam", "margin"] < 0
    assert claim_rollup(evaluate_claims(bad, cfg)).set_index("claim").loc["8", "verdict"] == FAIL
    # judged on repeat 0 alone (the old behaviour) the failure would go unnoticed
    assert _checks(bad[bad["repeat"] == 0], cfg).loc["8d-adam", "verdict"] == PASS
    # with five repeats, one failing repeat is tolerated (⌊5/5⌋ = 1) as long as the mean passes
    five = pd.concat([bad, bad[bad["repeat"] == 0].assign(repeat=3), bad[bad["repeat"] == 2].assign(repeat=4)])
    out5 = _checks(five, cfg)
    assert out5.loc["8d-adam", "repeats"] == 5 and out5.loc["8d-adam", "failed_repeats"] == "r1"
    assert out5.loc["8d-adam", "verdict"] == PASS


@pytest.mark.slow
def test_claim_9a_below_full_size_judges_steps_2_to_6_only(quarter_overlaps):
    s, cfg = quarter_overlaps.summary, quarter_overlaps.config
    base = _checks(s, cfg)
    assert "t=2…6" in base.loc["9a", "statement"] and base.loc["9a-late", "verdict"] == INFO
    late = s.copy()
    late.loc[_adam_step(late, 2, 8), "overlap_top1_left_before"] = 0.0  # a later step: information only
    out = _checks(late, cfg)
    assert out.loc["9a", "verdict"] == base.loc["9a", "verdict"]
    assert out.loc["9a", "measured"].split(" (")[0] == base.loc["9a", "measured"].split(" (")[0]
    assert "r2" in out.loc["9a-late", "failed_repeats"]
    early = s.copy()
    early.loc[_adam_step(early, 2, 3), "overlap_top1_left_before"] = 0.5  # a judged step of repeat 2
    out = _checks(early, cfg)
    assert out.loc["9a", "verdict"] == FAIL and "r2" in out.loc["9a", "failed_repeats"]


# ------------------------------------------------------------------------------------------ paired sweeps
def test_paired_sweep_arms_share_teacher_init_test_set_and_noise():
    cfg = C.make_config("quick", {"scale": "quarter"})
    runs = [r for r in build_runs(cfg) if r.group.startswith("losses_")]
    assert {r.group for r in runs} == {"losses_n", "losses_label_noise"}
    assert {r.repeat for r in runs} == {0, 1, 2}
    n_max = max(r.n for r in runs)

    def problem(r):
        return make_problem(d=r.d, h=r.h, n=r.n, n_test=r.n_test, label_noise=r.label_noise, seed=cfg.seed,
                            teacher_key=r.teacher_key, init_key=r.init_key, data_key=r.data_key)

    rep0 = [r for r in runs if r.repeat == 0]
    ref = problem(next(r for r in rep0 if r.n == n_max and r.group == "losses_n"))
    for r in rep0:
        p = problem(r)
        for f in ("beta", "W0", "a"):
            assert np.array_equal(getattr(p, f), getattr(ref, f)), (r.name, f)
        assert np.array_equal(p.test.X, ref.test.X) and np.array_equal(p.test.z, ref.test.z), r.name
        for split in ("train", "probe"):  # nested inputs and the same noise draws
            a, b = getattr(p, split), getattr(ref, split)
            assert np.array_equal(a.X, b.X[: r.n]) and np.array_equal(a.z, b.z[: r.n]), (r.name, split)
        # the labels differ only through ρ_e scaling the common noise
        assert np.allclose(p.test.y - ref.test.y, (r.label_noise - ref.label_noise) * ref.test.z, atol=1e-12)
    other = problem(next(r for r in runs if r.repeat == 1 and r.n == n_max and r.group == "losses_n"))
    assert not np.allclose(other.beta, ref.beta) and not np.allclose(other.test.X, ref.test.X)
    # the ρ_e sweep runs at the n sweep's largest n, so its ρ_e = 0.3 arm coincides with the n sweep's n_max arm
    keys = {}
    for r in rep0:
        keys.setdefault(r.compute_key(), []).append(r.name)
    assert any(len(v) == 2 for v in keys.values())


# ------------------------------------------------------------------------------------------ house rules
def test_plugin_imports_only_public_spectra_modules():
    for path in PLUGIN.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                if name.startswith("spectra.") or name == "spectra":
                    parts = name.split(".")
                    assert not any(p.startswith("_") for p in parts), (path.name, name)
                    assert name in ("spectra", "spectra.functional", "spectra.progress", "spectra.threads",
                                    "spectra.plot"), (path.name, name)


def test_citations_point_to_the_plugins_own_notes():
    notes = (PLUGIN / "PAPER_NOTES.md").read_text(encoding="utf-8")
    headings = set(re.findall(r"^##+ (\d+(?:\.\d+)?)\.? ", notes, flags=re.MULTILINE))
    for sec in ("0", "1", "2", "3", "4", "4.1", "5", "5.1", "5.4", "5.5", "5.9", "6", "7", "8", "8.1", "8.2", "9",
                "10", "11"):
        assert sec in headings, sec
    files = [*PLUGIN.glob("*.py"), *Path(__file__).parent.glob("test_twolayer_*.py")]
    cited = set()
    for f in files:
        text = f.read_text(encoding="utf-8")
        assert "PAPER" + " §" not in text, f.name  # spelled in two parts so that this file passes its own check
        cited |= set(re.findall(r"PAPER_NOTES\.md §(\d+(?:\.\d+)?)", text))
    assert cited and cited <= headings, cited - headings
