"""The two-layer plugin's data model, student, optimizer steps, config and metrics against direct formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate

import spectra
from spectra_twolayer import config as C
from spectra_twolayer.data import make_problem, odd_floor, rng, softplus
from spectra_twolayer.metrics import ReadoutAnalyzer, TeacherSimAnalyzer, kta, readout_metrics, ridge_readout
from spectra_twolayer.model import Student, normalize_weight_
from spectra_twolayer.sweeps import build_runs
from spectra_twolayer.train import make_optimizer


def _problem(**kw):
    args = dict(d=20, h=30, n=50, n_test=40, label_noise=0.3, seed=3, teacher_key=("r", 0), init_key=("r", 0),
                data_key=("r", 0))
    args.update(kw)
    return make_problem(**args)


# ------------------------------------------------------------------------------------------ data
def test_rng_is_deterministic_and_keyed():
    assert np.array_equal(rng(1, "a", 2).standard_normal(5), rng(1, "a", 2).standard_normal(5))
    assert not np.array_equal(rng(1, "a", 2).standard_normal(5), rng(1, "a", 3).standard_normal(5))
    assert not np.array_equal(rng(1, "a").standard_normal(5), rng(2, "a").standard_normal(5))
    assert not np.array_equal(rng(1, 0.3).standard_normal(5), rng(1, 0.5).standard_normal(5))


def test_problem_draws_match_the_data_model():
    p = _problem()
    assert p.beta.shape == (20,) and math.isclose(np.linalg.norm(p.beta), 1.0, rel_tol=1e-12)
    assert p.W0.shape == (30, 20) and p.a.shape == (30,)
    for ds, n in ((p.train, 50), (p.probe, 50), (p.test, 40)):
        assert ds.X.shape == (n, 20)
        resid = ds.y - np.log1p(np.exp(ds.X @ p.beta))
        # the residual is the label noise: mean ~0, std ~0.3 (loose, n is small)
        assert abs(resid.std() - 0.3) < 0.12
    # train, probe and test are independent draws
    assert not np.allclose(p.train.X[:40], p.test.X)
    assert not np.allclose(p.train.X, p.probe.X)


def test_pairing_keys_control_sharing():
    a, b = _problem(), _problem()
    for f in ("beta", "W0", "a"):
        assert np.array_equal(getattr(a, f), getattr(b, f))
    assert np.array_equal(a.train.y, b.train.y)
    c = _problem(data_key=("r", 1))
    assert np.array_equal(a.beta, c.beta) and np.array_equal(a.W0, c.W0)
    assert not np.allclose(a.train.X, c.train.X)
    e = _problem(teacher_key=("r", 1))
    assert not np.allclose(a.beta, e.beta) and np.array_equal(a.W0, e.W0)
    i = _problem(init_key=("r", 1))
    assert np.array_equal(a.beta, i.beta) and np.array_equal(a.test.y, i.test.y) and not np.allclose(a.W0, i.W0)


def test_common_random_numbers_across_n_and_label_noise():
    """The data draws do not depend on n or ρ_e: smaller n is a prefix, ρ_e only scales the same noise z."""
    base = _problem(n=80, label_noise=0.3)
    small = _problem(n=30, label_noise=0.3)
    for split in ("train", "probe"):
        big, sm = getattr(base, split), getattr(small, split)
        assert np.array_equal(sm.X, big.X[:30]) and np.array_equal(sm.z, big.z[:30])
        assert np.allclose(sm.y, big.y[:30], rtol=0, atol=1e-12)  # X @ β* may round differently per shape
    assert np.array_equal(small.test.X, base.test.X) and np.array_equal(small.test.y, base.test.y)
    noisy = _problem(n=80, label_noise=0.7)
    for split in ("train", "probe", "test"):
        x, y = getattr(base, split), getattr(noisy, split)
        assert np.array_equal(x.X, y.X) and np.array_equal(x.z, y.z)
        assert np.allclose(y.y - x.y, (0.7 - 0.3) * x.z, atol=1e-12)
        assert np.allclose(x.y, softplus(x.X @ base.beta) + 0.3 * x.z, atol=1e-12)
    assert np.array_equal(base.W0, noisy.W0) and np.array_equal(base.beta, noisy.beta)


def test_softplus_matches_torch():
    z = np.linspace(-30, 30, 101)
    assert np.allclose(softplus(z), torch.nn.functional.softplus(torch.as_tensor(z)).numpy(), atol=1e-8)


def test_odd_floor_against_quadrature():
    even_sq = integrate.quad(lambda z: np.log(2 * np.cosh(z / 2)) ** 2 * np.exp(-z * z / 2) / np.sqrt(2 * np.pi),
                             -30, 30, limit=200)[0]
    assert math.isclose(odd_floor(0.3), even_sq + 0.09, rel_tol=1e-8)
    assert 0.755 < odd_floor(0.3) < 0.767  # PAPER_NOTES.md §3: 0.671 + 0.09 = 0.761


def test_best_odd_predictor_attains_the_floor():
    """β*ᵀx/2 is the odd part of softplus(β*ᵀx): its MSE is the floor, in the population and on a given test set."""
    from spectra_twolayer.data import odd_floor_on

    z = np.linspace(-8, 8, 33)
    assert np.allclose(softplus(z) - softplus(-z), z)  # the odd part of softplus is z/2
    p = _problem(d=30, h=10, n=10, n_test=20000, label_noise=0.3)
    assert abs(odd_floor_on(p.test, p.beta) - odd_floor(0.3)) < 0.02
    # any other odd predictor (here a scaled β*ᵀx) does worse on the same large test set
    other = float(np.mean((p.test.y - 0.8 * p.test.X @ p.beta / 2) ** 2))
    assert other > odd_floor_on(p.test, p.beta)


# ------------------------------------------------------------------------------------------ model and steps
def test_student_forward_and_gradient_match_formulas():
    p = _problem()
    m = Student(p.W0, p.a, dtype=torch.float64)
    X, y = torch.as_tensor(p.train.X), torch.as_tensor(p.train.y)
    d, h, n = 20, 30, 50
    P = p.train.X @ p.W0.T / np.sqrt(d)
    A = np.tanh(P)
    f = A @ p.a / np.sqrt(h)
    assert np.allclose(m(X).detach().numpy(), f, rtol=0, atol=1e-12)
    loss = torch.mean((m(X) - y) ** 2)
    loss.backward()
    r = f - p.train.y
    G = (1 / np.sqrt(d)) * ((2 / n) * np.outer(r, p.a / np.sqrt(h)) * (1 - A**2)).T @ p.train.X
    assert np.allclose(m.W.weight.grad.numpy(), G, rtol=0, atol=1e-12)
    assert [n for n, q in m.named_parameters()] == ["W.weight"]  # the second layer is frozen


def _one_step(opt_name: str, lr: float):
    p = _problem(d=40, h=60, n=100)
    m = Student(p.W0, p.a)
    opt = make_optimizer(opt_name, m.W.parameters(), lr)
    X = torch.as_tensor(p.train.X, dtype=torch.float32)
    y = torch.as_tensor(p.train.y, dtype=torch.float32)
    W0 = m.W.weight.detach().clone()
    loss = torch.mean((m(X) - y) ** 2)
    loss.backward()
    g = m.W.weight.grad.detach().clone()
    opt.step()
    return m.W.weight.detach() - W0, g


def test_adam_first_step_is_minus_lr_sign_grad():
    lr = 0.3
    dW, g = _one_step("adam", lr)
    # exactly -lr * g / (|g| + eps) (torch Adam defaults, bias-corrected first step) ...
    assert torch.allclose(dW, -lr * g / (g.abs() + 1e-8), rtol=1e-4, atol=1e-6)
    # ... which is -lr * sign(g) wherever |g| >> eps (all but a vanishing fraction of entries)
    big = g.abs() > 1e-5
    assert big.float().mean() > 0.99
    assert torch.allclose(dW[big], -lr * torch.sign(g[big]), rtol=0, atol=lr * 1e-3)
    # and GD is exactly -lr * g
    dW, g = _one_step("gd", 5.0)
    assert torch.allclose(dW, -5.0 * g, atol=1e-5)


def test_weight_normalization_restores_frobenius_norm():
    W = torch.randn(30, 20) * 7.0
    normalize_weight_(W)
    assert math.isclose(float(torch.linalg.norm(W)), math.sqrt(600), rel_tol=1e-5)


# ------------------------------------------------------------------------------------------ metrics
def _analyze(analyzer, W) -> dict:
    """Run one analyzer on the weight W through the library's public offline entry point; metric → (value, row)."""
    W = torch.as_tensor(W)
    model = torch.nn.Linear(W.shape[1], W.shape[0], bias=False, dtype=W.dtype)
    with torch.no_grad():
        model.weight.copy_(W)
    df = spectra.analyze(model, analyzers=[analyzer], on_error="ignore", progress=False).to_pandas()
    df = df[df["analyzer"] == analyzer.name]
    return {r.metric: r for r in df.itertuples()}


def test_ridge_matches_augmented_least_squares():
    g = np.random.default_rng(0)
    Z, y = g.standard_normal((80, 30)) * 0.1, g.standard_normal(80)
    lam = 0.05
    n, h = Z.shape
    ref = np.linalg.lstsq(np.vstack([Z, np.sqrt(lam * n / h) * np.eye(h)]), np.concatenate([y, np.zeros(h)]),
                          rcond=None)[0]
    got = ridge_readout(torch.as_tensor(Z), torch.as_tensor(y), lam).numpy()
    assert np.allclose(got, ref, atol=1e-10)
    # λ = 0 with more features than samples falls back to least squares without crashing
    got0 = ridge_readout(torch.as_tensor(Z[:10]), torch.as_tensor(y[:10]), 0.0).numpy()
    assert np.allclose(Z[:10] @ got0, y[:10], atol=1e-6)


def test_kta_matches_kernel_definition():
    g = np.random.default_rng(1)
    Z, y = g.standard_normal((25, 7)), g.standard_normal(25) + 1.0
    K, Ky = Z @ Z.T, np.outer(y, y)
    ref = np.sum(K * Ky) / (np.linalg.norm(K) * np.linalg.norm(Ky))
    assert math.isclose(kta(torch.as_tensor(Z), torch.as_tensor(y)), ref, rel_tol=1e-12)


@pytest.mark.parametrize("scale", ["repo", "model"])
def test_readout_metrics_against_closed_form(scale):
    p = _problem()
    W = p.W0 * 1.7
    s = 20.0 if scale == "repo" else math.sqrt(20.0)
    Z = np.tanh(p.probe.X @ W.T / s) / np.sqrt(30)
    a = np.linalg.solve(Z.T @ Z + (0.01 / 30) * 50 * np.eye(30), Z.T @ p.probe.y)
    Zt = np.tanh(p.test.X @ W.T / s) / np.sqrt(30)
    ref = {"train_loss": np.mean((Z @ a - p.probe.y) ** 2), "test_loss": np.mean((Zt @ a - p.test.y) ** 2),
           "kta": np.linalg.norm(Z.T @ p.probe.y) ** 2 / (np.linalg.norm(Z.T @ Z) * p.probe.y @ p.probe.y)}
    T = {k: torch.as_tensor(v) for k, v in dict(Xp=p.probe.X, yp=p.probe.y, Xt=p.test.X, yt=p.test.y).items()}
    got = readout_metrics(torch.as_tensor(W), T["Xp"], T["yp"], T["Xt"], T["yt"], reg_lambda=0.01, s=s)
    for k in ref:
        assert math.isclose(got[k], ref[k], rel_tol=1e-9), k
    an = ReadoutAnalyzer(X_probe=p.probe.X, y_probe=p.probe.y, X_test=p.test.X, y_test=p.test.y,
                         reg_lambda=0.01, feature_scale=scale)
    rows = _analyze(an, torch.as_tensor(W, dtype=torch.float32))
    for k in ref:
        assert rows[k].status == "ok" and math.isclose(rows[k].value, ref[k], rel_tol=1e-5), k


def test_readout_guards_nonfinite_weights():
    p = _problem()
    an = ReadoutAnalyzer(X_probe=p.probe.X, y_probe=p.probe.y, X_test=p.test.X, y_test=p.test.y)
    W = torch.as_tensor(p.W0, dtype=torch.float32)
    W[0, 0] = float("inf")
    rows = _analyze(an, W)  # a failed row naming the problem, never an exception
    assert {r.status for r in rows.values()} == {"failed"}
    assert all("non-finite" in r.message for r in rows.values())
    # huge but finite weights (degenerate Adam runs) still give finite losses
    rows = _analyze(an, torch.as_tensor(p.W0 * 1e8))
    assert set(rows) == {"train_loss", "test_loss", "kta"} and all(math.isfinite(r.value) for r in rows.values())
    # without data the analyzer emits skipped rows instead of failing
    assert {r.status for r in _analyze(ReadoutAnalyzer(), W).values()} == {"skipped"}


def test_sim_is_top_right_singular_vector_overlap():
    g = np.random.default_rng(2)
    d, h = 20, 30
    beta = g.standard_normal(d)
    beta /= np.linalg.norm(beta)
    W = g.standard_normal((h, d)) + 6.0 * np.outer(g.standard_normal(h), beta)  # a spike along β*
    v1 = np.linalg.svd(W)[2][0]
    m = _analyze(TeacherSimAnalyzer(beta=beta, k=3), W)["sim"]
    assert m.status == "ok" and math.isclose(m.value, abs(v1 @ beta), rel_tol=1e-9)
    assert m.value > 0.9
    m0 = _analyze(TeacherSimAnalyzer(beta=beta), W[:, ::-1].copy())["sim"]
    assert m0.value < m.value


# ------------------------------------------------------------------------------------------ config and sweeps
@pytest.mark.parametrize("preset", C.PRESETS)
def test_every_preset_builds(preset):
    cfg = C.make_config(preset)
    runs = build_runs(cfg)
    assert runs and len({r.name for r in runs}) == len(runs)


def test_scales_and_overrides():
    assert (C.make_config("quick").d, C.make_config("quick").h, C.make_config("quick").n) == (500, 750, 1000)
    full = C.make_config("quick", {"scale": "full"})
    assert (full.d, full.h, full.n) == (1000, 1500, 2000) and full.overlap_runs[1] == "gd:2000"
    q = C.make_config("paper", {"scale": "quarter", "seed": "7", "repeats": "2", "lr_grid": "0.1, 1",
                                "readout_feature_scale": "model", "alpha_ks": "false"})
    assert (q.d, q.h, q.n, q.seed, q.repeats, q.lr_grid) == (250, 375, 500, 7, 2, (0.1, 1.0))
    assert q.readout_feature_scale == "model" and q.alpha_ks is False
    assert C.make_config("quick", {"d": "100"}).scale == "custom"


@pytest.mark.parametrize(
    "preset, overrides, match",
    [
        ("nope", {}, "valid presets: quick"),
        ("quick", {"learning_rate": 1}, "valid keys: .*lr_grid"),
        ("quick", {"lr_grid": "-1"}, "lr_grid"),
        ("quick", {"d": 0}, "d must be a positive integer"),
        ("quick", {"d": "abc"}, "d must be an integer"),
        ("quick", {"n": 2.5}, "n must be an integer"),
        ("quick", {"device": "tpu"}, "device must be one of cpu, cuda"),
        ("quick", {"scale": "double"}, "scale must be one of"),
        ("quick", {"readout_feature_scale": "paper"}, "readout_feature_scale"),
        ("quick", {"overlap_runs": "sgd:1"}, "overlap_runs"),
        ("quick", {"schedule_gammas": "1.5"}, "gamma"),
        ("quick", {"alpha_ks": "maybe"}, "alpha_ks must be a boolean"),
        ("quick", {"label_noise": -0.1}, "label_noise"),
    ],
)
def test_bad_config_is_rejected_with_a_named_error(preset, overrides, match):
    with pytest.raises(ValueError, match=match):
        C.make_config(preset, overrides)


def test_grid_runs_of_a_repeat_share_one_problem():
    cfg = C.make_config("quick", {"repeats": 2})
    runs = build_runs(cfg)
    grid = [r for r in runs if r.group == "grid"]
    assert len(grid) == 2 * 2 * 9
    keys = {r.repeat: set() for r in grid}
    for r in grid:
        keys[r.repeat].add(r.problem_key())
    assert all(len(v) == 1 for v in keys.values()) and keys[0] != keys[1]
    # the overlap and schedule runs are paired with the grid (same n at the quick preset)
    ov = [r for r in runs if r.group in ("overlap", "schedule") and r.repeat == 0]
    assert {r.problem_key() for r in ov} == keys[0]
    assert {r.gamma for r in runs if r.group == "schedule"} == {1.0, 0.6}


def test_loss_sweep_pairing_semantics():
    """Common random numbers: every arm of every loss sweep of a repeat shares teacher, init and data keys."""
    cfg = C.make_config("losses", {"scale": "quarter", "losses_repeats": 2})
    runs = build_runs(cfg)
    assert {r.sweep_param for r in runs} == set(C.LOSS_SWEEPS)
    for rep in (0, 1):
        ks = {(r.teacher_key, r.init_key, r.data_key) for r in runs if r.repeat == rep}
        assert len(ks) == 1
    assert len({(r.teacher_key, r.data_key) for r in runs}) == 2  # the repeats differ
    # coinciding arms (λ = 0.01 of the λ sweep and ρ_e = 0.3 of the ρ_e sweep, both at n = 8000·k) are one run
    keys = [r.compute_key() for r in runs if r.repeat == 0]
    assert len(keys) - len(set(keys)) >= 1


# ------------------------------------------------------------------------------------------ library estimators vs PAPER_NOTES.md §5.4–5.5
def _alpha_hill_ref(lam):
    lam = np.sort(lam)
    N = lam.size
    i = N // 2
    k = N - i
    return 1 + k / (np.sum(np.log(lam[i:])) - k * np.log(lam[i]))


def _alpha_ks_ref(lam):
    """PAPER_NOTES.md §5.5 literally: every xmin = λ_(i), i = 0..N−2; D_i = 1 when α_i ≤ 1; first argmin."""
    lam = np.sort(lam)
    N = lam.size
    best, best_d = None, np.inf
    for i in range(N - 1):
        k = N - i
        a = 1 + k / (np.sum(np.log(lam[i:])) - k * np.log(lam[i]))
        if a > 1:
            j = np.arange(k)
            D = np.max(np.abs(1 - (lam[i:] / lam[i]) ** (1 - a) - j / k))
        else:
            D = 1.0
        if D < best_d:
            best, best_d = a, D
    return best


@pytest.mark.parametrize("kind", ["mp", "heavy", "spike"])
def test_library_tail_options_match_paper_estimators(kind):
    """The plugin's `tail` options (method="ww", Hill at the median) reproduce PAPER_NOTES.md §5.4 and §5.5."""
    from spectra.functional import fit_power_law
    from spectra_twolayer.train import tail_options

    g = np.random.default_rng({"mp": 0, "heavy": 1, "spike": 2}[kind])
    W = g.standard_normal((150, 100))
    if kind == "heavy":
        W = g.standard_t(2.5, size=(150, 100))
    if kind == "spike":
        W += 3.0 * np.outer(g.standard_normal(150), g.standard_normal(100)) / 10
    lam = np.linalg.svd(W, compute_uv=False) ** 2
    opts = tail_options(C.make_config("tiny"))
    fit = fit_power_law(lam, method=opts["method"])
    assert math.isclose(fit.alpha, _alpha_ks_ref(lam), rel_tol=1e-9)
    hill = fit_power_law(lam, method="hill", xmin_pos=opts["xmin_pos"])
    assert math.isclose(hill.alpha, _alpha_hill_ref(lam), rel_tol=1e-12)


def test_weightnorm_comparison_reports_expected_direction():
    import pandas as pd

    from spectra_twolayer.report import weightnorm_comparison

    rows = []
    for wn, (edge, alpha, nout) in ((False, (200.0, 1.9, 300.0)), (True, (3.0, 1.7, 500.0))):
        for repeat in (0, 1):  # two repeats: the paper preset's case, averaged
            for step in (0, 10):
                rows.append({"group": "weightnorm", "weight_norm": wn, "step": step, "repeat": repeat,
                             "lambda1_over_edge": edge + repeat, "alpha_hill": alpha, "n_out": nout})
    table = weightnorm_comparison(pd.DataFrame(rows)).set_index("metric")
    assert table.loc["λ1/edge (spike)", "off"] == 200.5  # mean over the two repeats
    assert table.loc["λ1/edge (spike)", "observed"] == "as expected"
    assert table.loc["α_Hill (bulk)", "observed"] == "as expected"
    assert table.loc["n_out (outliers)", "observed"] == "not as expected"  # 500 > 300 outliers
    assert weightnorm_comparison(pd.DataFrame(rows).assign(group="grid")) is None
