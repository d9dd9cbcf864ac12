"""spectra.compat.weightwatcher: agreement with WeightWatcher 0.7.7, layer plan, failures and import hygiene.

The reference is WeightWatcher itself (run on the same seeded models); tests that need it skip when it is not
installed (the [dev] extra pins weightwatcher==0.7.7).

One file for the whole package, as its tests share the seeded models and the WeightWatcher fixture: the
agreement, one-sided-row and failure sections exercise compare.py (with plan.py and runner.py under it), the
compat-mode section compatible.py and plan.py, the hygiene section runner.py.
"""

from __future__ import annotations

import logging
import math
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from spectra.compat import weightwatcher as cw
from spectra.compat.weightwatcher import runner

TOL = 1e-6
FIT_AND_NORMS = ("alpha", "xmin", "D", "lambda_max", "sv_max", "log_norm", "log_spectral_norm",
                 "alpha_weighted", "log_alpha_norm", "stable_rank")  # fmt: skip
EXACT = ("N", "M", "Q", "num_evals", "num_pl_spikes")


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """Multi-threaded LAPACK spins under CPU contention (docs/design.md, 'Conventions'); both sides get one thread."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


def _have_ww() -> bool:
    try:
        cw.import_weightwatcher()
    except ImportError:
        return False
    return True


needs_ww = pytest.mark.skipif(not _have_ww(), reason="weightwatcher==0.7.7 not installed")


def _seeded(model: nn.Module, seed: int, *, student_t: float | None = None, scale: float = 1.0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if student_t is None:
                p.copy_(torch.randn(p.shape, generator=g) * scale / math.sqrt(max(p.shape[-1], 1)))
            else:
                rng = np.random.default_rng(seed + p.numel())
                p.copy_(torch.from_numpy(rng.standard_t(student_t, size=tuple(p.shape))).float() * 0.02)
    return model


def _gpt2_block(student_t: float | None, seed: int) -> nn.Module:
    blk = nn.ModuleDict({
        "c_attn": nn.Linear(768, 2304), "c_proj": nn.Linear(768, 768),
        "c_fc": nn.Linear(768, 3072), "mlp_proj": nn.Linear(3072, 768), "ln": nn.LayerNorm(768),
    })  # fmt: skip
    return _seeded(blk, seed, student_t=student_t)


def _check_agreement(table, *, metrics=FIT_AND_NORMS + ("entropy", "sigma", "xmax")):
    both = table[table["analyzed_by"] == "both"]
    assert len(both) > 0
    assert (both["status_ww"] == "ok").all() and (both["status_spectra"].isin(["ok", "warn"])).all()
    for m in metrics:
        s, w = both[f"{m}_spectra"].to_numpy(float), both[f"{m}_ww"].to_numpy(float)
        rel = np.abs(s - w) / np.maximum(np.abs(w), 1e-300)
        assert np.all(np.isfinite(s)) and np.all(np.isfinite(w)), m
        assert rel.max() <= TOL, (m, both["layer"][rel.argmax()], s[rel.argmax()], w[rel.argmax()])
    for m in EXACT:
        assert np.array_equal(both[f"{m}_spectra"].to_numpy(float), both[f"{m}_ww"].to_numpy(float)), m
    return both


# --------------------------------------------------------------------------------------------- agreement
@needs_ww
def test_linear_stack_and_small_n_agree():
    # Linear(12, 64) has 12 eigenvalues: WeightWatcher 0.7.7's small-N path (tail >= 8, bias-corrected alpha)
    model = _seeded(nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 96), nn.Linear(96, 200),
                                  nn.Linear(12, 64)), 1)
    table = cw.compare_weightwatcher(model)
    both = _check_agreement(table)
    assert set(both["layer"]) == {"0", "2", "3", "4"}
    assert table.attrs["ww_version"] == "0.7.7" and "cpu" in table.attrs["ww_path"]
    assert table.attrs["fit"] == "ww" and table.attrs["spectra_version"]


@needs_ww
def test_conv2d_network_pooled_agrees_including_nm_swap():
    # Conv2d(16, 8, 2): out < in with an even rf, WeightWatcher reports N < M (its per-slice swap)
    model = _seeded(nn.Sequential(nn.Conv2d(3, 16, 3), nn.Conv2d(16, 32, 3), nn.Conv2d(32, 8, 2),
                                  nn.Conv2d(8, 24, 1), nn.Flatten(), nn.Linear(24, 10)), 2)
    table = cw.compare_weightwatcher(model)
    both = _check_agreement(table)
    row = both[both["layer"] == "2"].iloc[0]
    assert row["N_ww"] == 8 and row["M_ww"] == 32 and row["num_evals_ww"] == 8 * 4
    assert set(both["layer"]) == {"0", "1", "2", "3", "5"}


@needs_ww
def test_embedding_and_planted_heavy_tail_agree():
    model = nn.Sequential(nn.Embedding(1000, 64), nn.Linear(64, 256), nn.Linear(256, 64))
    _seeded(model, 3)
    _seeded(model[1], 4, student_t=2.5)
    table = cw.compare_weightwatcher(model)
    both = _check_agreement(table)
    assert len(both) == 3
    assert both.loc[both["layer"] == "1", "alpha_ww"].iloc[0] < 6  # the planted tail is heavy


@pytest.mark.slow
@needs_ww
def test_gpt2_shaped_stack_agrees():
    """Two GPT-2-shaped blocks (768x2304, 768x768, 768x3072, 3072x768): one random init, one Student-t(3)."""
    model = nn.ModuleDict({"h0": _gpt2_block(None, 5), "h1": _gpt2_block(3.0, 6)})
    table = cw.compare_weightwatcher(model)
    both = _check_agreement(table)
    assert len(both) == 8
    summary = cw.summarize_comparison(table)
    assert (summary.set_index("metric").loc[list(FIT_AND_NORMS), "max_rel_diff"] <= TOL).all()
    assert (summary["n_compared"] == 8).all()


@needs_ww
def test_state_dict_input_agrees():
    model = _seeded(nn.Sequential(nn.Linear(32, 64), nn.Conv2d(4, 16, 3), nn.LayerNorm(8)), 7)
    table = cw.compare_weightwatcher(model.state_dict())
    both = _check_agreement(table)
    assert set(both["layer"]) == {"0", "1"}
    assert table.loc[table["layer"] == "2.bias", "analyzed_by"].empty  # 1-D: neither side


# --------------------------------------------------------------------------------------------- one-sided rows
@needs_ww
def test_one_sided_rows_have_reasons_and_plan_matches_ww():
    model = _seeded(nn.Sequential(nn.Linear(4, 3), nn.LSTM(16, 32), nn.MultiheadAttention(32, 4),
                                  nn.Linear(10, 50001), nn.Linear(40, 40), nn.LayerNorm(40)), 8)
    table = cw.compare_weightwatcher(model)
    by = {(r.layer, r.view): r for r in table.itertuples()}
    assert by[("0", "W")].analyzed_by == "spectra" and "min_evals" in by[("0", "W")].reason
    assert "RNN" in by[("1.weight_ih_l0", "i")].reason
    assert "in_proj_weight" in by[("2.in_proj_weight", "q")].reason
    assert "max_N" in by[("3", "W")].reason
    assert by[("2.out_proj", "W")].analyzed_by == "both" and by[("4", "W")].analyzed_by == "both"
    assert not table.loc[table["analyzed_by"] != "both", "compared"].any()
    # the plan reproduces WeightWatcher's ids and shapes
    plan = {p.layer: p for p in cw.ww_layer_plan(model)}
    ww = cw.import_weightwatcher()
    with runner.hygiene([]), runner.restore_longname(model), runner.ww_cpu_path():
        details = ww.WeightWatcher(model=model).analyze(svd_method="accurate")
    assert sorted(details["longname"]) == sorted(k for k, p in plan.items() if p.analyzed)
    for rec in details.to_dict("records"):
        p = plan[rec["longname"]]
        assert (p.layer_id, p.N, p.M, p.rf, p.num_evals) == (rec["layer_id"], rec["N"], rec["M"], rec["rf"],
                                                             rec["num_evals"])


@needs_ww
def test_tied_weights_show_as_ww_only():
    emb = nn.Embedding(200, 48)
    head = nn.Linear(48, 200, bias=False)
    head.weight = emb.weight
    model = _seeded(nn.ModuleDict({"emb": emb, "head": head}), 9)
    table = cw.compare_weightwatcher(model)
    row = table[table["layer"] == "head"].iloc[0]
    assert row["analyzed_by"] == "weightwatcher" and "tied to emb" in row["reason"]
    assert not row["compared"]


@needs_ww
def test_layers_filter_restricts_both_sides():
    model = _seeded(nn.Sequential(nn.Linear(32, 64), nn.Linear(64, 64), nn.Linear(64, 16)), 10)
    table = cw.compare_weightwatcher(model, layers=["1", "2"])
    assert set(table["layer"]) == {"1", "2"} and (table["analyzed_by"] == "both").all()


# --------------------------------------------------------------------------------------------- failures
@needs_ww
def test_failed_ww_fit_is_nan_and_never_compared():
    model = nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 128))
    _seeded(model, 11)
    with torch.no_grad():
        model[0].weight.mul_(1e-4)  # every eigenvalue below 1e-5: WeightWatcher's fit fails (alpha = -1)
    table = cw.compare_weightwatcher(model)
    row = table[table["layer"] == "0"].iloc[0]
    assert row["status_ww"] == "failed" and "alpha = -1" in row["reason"]
    for m in cw.FIT_METRICS:
        assert math.isnan(row[f"{m}_ww"]) and math.isnan(row[f"{m}_rel_diff"])
    assert row["log_norm_ww"] == pytest.approx(row["log_norm_spectra"], rel=TOL)  # norms still reported
    summary = cw.summarize_comparison(table).set_index("metric")
    assert summary.loc["alpha", "n_compared"] == 1 and summary.loc["log_norm", "n_compared"] == 2
    assert summary["n_failed"].iloc[0] == 1


@needs_ww
def test_ww_error_still_reports_spectra_side(monkeypatch):
    ww = cw.import_weightwatcher()

    def boom(self, *a, **k):
        raise RuntimeError("cannot read this model")

    monkeypatch.setattr(ww.WeightWatcher, "analyze", boom)
    model = _seeded(nn.Sequential(nn.Linear(32, 64)), 12)
    table = cw.compare_weightwatcher(model)
    row = table.iloc[0]
    assert row["status_ww"] == "error" and "cannot read this model" in row["reason"]
    assert np.isfinite(row["alpha_spectra"]) and math.isnan(row["alpha_ww"])
    assert "RuntimeError" in table.attrs["ww_error"]


def test_missing_weightwatcher_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "weightwatcher", None)
    with pytest.raises(ImportError, match=r'pip install "spectra\[ww\]"'):
        cw.compare_weightwatcher(nn.Linear(16, 16))


def test_unsupported_option_is_refused():
    with pytest.raises(ValueError, match="pool"):
        cw.compare_weightwatcher(nn.Linear(16, 16), pool=False)


# --------------------------------------------------------------------------------------------- compat mode
def test_ww_compatible_mode_applies_skip_rules_without_weightwatcher(monkeypatch):
    monkeypatch.setitem(sys.modules, "weightwatcher", None)
    model = _seeded(nn.Sequential(nn.Linear(4, 3), nn.Linear(32, 64), nn.Embedding(50001, 8),
                                  nn.Embedding(60, 16), nn.LayerNorm(16)), 13)
    res = cw.analyze_ww_compatible(model)
    wide = res.to_wide()
    assert set(wide["layer"]) == {"1", "3"}
    assert "max_N" in res.attrs["ww_skipped"]["2"] and "min_evals" in res.attrs["ww_skipped"]["0"]
    assert res.attrs["ww_compat"]["fit"] == "ww"
    # entropy and alpha by an independent brute force: WWFit's scan and WeightWatcher's entropy formula
    W = model[1].weight.detach().double().numpy()
    lam = np.sort(np.linalg.svd(W, compute_uv=False) ** 2)
    x = lam[lam > 1e-5]
    best = (2.0, None)
    for i in range(len(x) - 1):
        n = len(x) - i
        a = 1 + n / (np.log(x[i:]).sum() - n * np.log(x[i]))
        d = np.max(np.abs(1 - (x[i:] / x[i]) ** (1 - a) - np.arange(n) / n)) if a > 1 else 1.0
        if d < best[0]:
            best = (d, a)
    row = wide[wide["layer"] == "1"].iloc[0]
    assert row["alpha"] == pytest.approx(best[1], rel=1e-9) and row["D"] == pytest.approx(best[0], rel=1e-9)
    p = lam / lam.sum() + 1e-10
    ent = -np.sum(p * np.log(p)) / np.log(np.linalg.matrix_rank(W) + 1e-10)
    assert row["entropy"] == pytest.approx(ent, rel=1e-12)


def test_plan_conv_bookkeeping_and_types():
    plan = {p.layer: p for p in cw.ww_layer_plan(nn.Sequential(
        nn.Conv2d(16, 8, 3), nn.Conv2d(16, 8, 2), nn.Conv2d(8, 16, 3), nn.Conv2d(2, 3, 5), nn.ConvTranspose2d(8, 8, 3),
        nn.Conv1d(16, 32, 9)))}  # fmt: skip
    assert (plan["0"].N, plan["0"].M) == (16, 8)  # odd rf, out < in: swapped back to N >= M
    assert (plan["1"].N, plan["1"].M, plan["1"].Q) == (8, 16, 0.5)  # even rf: WeightWatcher's N < M
    assert (plan["2"].N, plan["2"].M, plan["2"].num_evals) == (16, 8, 72)
    assert (plan["3"].N, plan["3"].M, plan["3"].num_evals) == (3, 2, 50)  # channel detection "fails": no swap
    assert plan["4"].ww_type == "unknown" and not plan["4"].analyzed
    assert plan["5"].analyzed and plan["5"].note and "not compared" in plan["5"].note
    with pytest.raises(TypeError, match="nn.Module or a state_dict"):
        cw.ww_layer_plan([1, 2])


def test_summarize_rejects_other_tables():
    import pandas as pd

    with pytest.raises(ValueError, match="compare_weightwatcher"):
        cw.summarize_comparison(pd.DataFrame({"a": [1]}))


# --------------------------------------------------------------------------------------------- hygiene
_IMPORT_SCRIPT = textwrap.dedent("""
    import logging, sys, warnings
    from spectra.compat.weightwatcher import import_weightwatcher  # numpy/torch add their own filters here
    root = logging.getLogger()
    before = (list(root.handlers), root.level, list(warnings.filters))
    assert "weightwatcher" not in sys.modules
    import_weightwatcher()
    assert "weightwatcher" in sys.modules
    after = (list(root.handlers), root.level, list(warnings.filters))
    assert before == after, (before, after)
    warnings.warn("still visible", UserWarning)
    """)


@pytest.mark.slow
@needs_ww
def test_import_leaves_logging_warnings_and_stdout_alone():
    proc = subprocess.run([sys.executable, "-c", _IMPORT_SCRIPT], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert "still visible" in proc.stderr  # warnings not silenced by WeightWatcher's simplefilter("ignore")
    assert "CUDA" not in proc.stderr and "reetting" not in proc.stderr  # its import notices are swallowed


@needs_ww
def test_compare_is_silent_and_restores_state(capfd):
    model = _seeded(nn.Sequential(nn.Linear(12, 40), nn.Linear(40, 40)), 14)  # small-N path prints in WW
    root = logging.getLogger()
    before = (list(root.handlers), root.level, list(warnings.filters), torch.cuda.is_available)
    table = cw.compare_weightwatcher(model)
    assert (list(root.handlers), root.level, list(warnings.filters), torch.cuda.is_available) == before
    out, err = capfd.readouterr()
    assert out == "" and "SMALL N" not in err
    assert not any("longname" in m.__dict__ for m in model.modules())  # WeightWatcher's attribute removed
    assert (table["analyzed_by"] == "both").all()


_CUDA_SCRIPT = textwrap.dedent("""
    import torch, numpy as np
    torch.cuda.is_available = lambda: True          # as on a GPU machine: WW picks its fp16 path on import
    import weightwatcher.weightwatcher as wwmod, weightwatcher.RMT_Util as rmt
    torch.cuda.is_available = lambda: False          # no real GPU here; WW's globals already chose fp16
    half = wwmod.torch_T_to_np
    assert half(torch.ones(2)).dtype == np.float16 and rmt.EPSILON == 6e-05
    from spectra.compat.weightwatcher import compare_weightwatcher
    g = torch.Generator().manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(64, 200), torch.nn.Linear(200, 96))
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    t = compare_weightwatcher(m)
    both = t[t.analyzed_by == "both"]
    assert len(both) == 2
    for c in ("alpha", "xmin", "D", "log_norm", "entropy", "lambda_max"):
        assert both[c + "_rel_diff"].max() <= 1e-6, (c, both[c + "_rel_diff"].max())
    assert "CUDA-path import" in t.attrs["ww_path"], t.attrs["ww_path"]
    assert wwmod.torch_T_to_np is half and rmt.EPSILON == 6e-05   # restored afterwards
    print("OK")
    """)


@pytest.mark.slow
@needs_ww
def test_cuda_path_import_is_forced_onto_cpu_path():
    proc = subprocess.run([sys.executable, "-c", _CUDA_SCRIPT], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "OK"
