"""SpectraMonitor: lifecycle, semantics of rows, optimizers, bad input, and the promise of not interfering."""

from __future__ import annotations

import copy
import os
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import spectra
from spectra import Analyzer, SpectraMonitor
from spectra.results import Results


def _mlp(seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 24), nn.Tanh(), nn.Linear(24, 6)).to(dtype)


def _data(seed=1, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(64, 12, generator=g, dtype=dtype), torch.randn(64, 6, generator=g, dtype=dtype)


def _train(model, opt, steps, x, y, scaler=None):
    for _ in range(steps):
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        opt.step()


def _val(df, **kw):
    q = df
    for k, v in kw.items():
        q = q[q[k] == v]
    assert len(q) == 1, (kw, len(q))
    return float(q["value"].iloc[0])


def test_rows_at_scheduled_steps_and_step_zero():
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = _data()
    mon = SpectraMonitor(model, opt, every=5, analyzers=("esd", "alignment"))
    _train(model, opt, 12, x, y)
    df = mon.to_pandas()
    assert mon.step == 12
    assert sorted(df["step"].unique().tolist()) == [0, 5, 10]
    assert set(df[df.step == 0]["matrix"]) == {"weight"}  # no update at step 0
    assert {"weight", "update", "grad"} <= set(df[df.step == 5]["matrix"])
    assert set(df["layer"]) == {"0", "2"}
    assert set(df["view"]) == {"W"}
    mon.detach()


def test_update_and_grad_rows_describe_the_right_matrices():
    """Row at step t: W_t, dW_t = W_t - W_{t-1} and G_{t-1}; plain SGD makes dW = -lr * G exactly."""
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = _data()
    mon = SpectraMonitor(model, opt, schedule=[3], analyzers=("esd", "alignment"))
    _train(model, opt, 2, x, y)
    w_prev = model[0].weight.detach().clone().double()
    _train(model, opt, 1, x, y)
    w_now = model[0].weight.detach().double()
    df = mon.to_pandas().query("step == 3 and layer == '0'")
    dW = (w_now - w_prev).numpy()
    s = np.linalg.svd(dW, compute_uv=False)
    assert _val(df, matrix="update", metric="sv", index=0) == pytest.approx(s[0], rel=1e-5)
    assert _val(df, matrix="update", metric="cos_update_grad") == pytest.approx(-1.0, abs=1e-5)
    assert _val(df, matrix="weight", metric="lambda_max") == pytest.approx(
        np.linalg.svd(w_now.numpy(), compute_uv=False)[0] ** 2, rel=1e-6)
    assert _val(df, matrix="grad", metric="sv", index=0) == pytest.approx(s[0] / 0.05, rel=1e-4)
    assert _val(df, matrix="update", metric="relative_norm") == pytest.approx(
        np.linalg.norm(dW) / np.linalg.norm(w_prev.numpy()), rel=1e-5)


def test_adam_first_step_is_sign_of_gradient():
    model = _mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = _data()
    mon = SpectraMonitor(model, opt, schedule=[1], analyzers=("alignment",))
    w0 = model[0].weight.detach().clone().double()
    _train(model, opt, 1, x, y)
    g_sign = torch.sign((w0 - model[0].weight.detach().double()) / 1e-2).numpy()
    df = mon.to_pandas().query("layer == '0'")
    assert _val(df, matrix="update", metric="sv", index=0) / 1e-2 == pytest.approx(
        np.linalg.svd(g_sign, compute_uv=False)[0], rel=1e-4)


def test_monitor_changes_nothing_bit_for_bit():
    x, y = _data()
    runs = []
    for monitored in (False, True):
        model = _mlp(3)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
        mon = SpectraMonitor(model, opt, every=2) if monitored else None
        grads = []
        for _ in range(7):
            opt.zero_grad()
            ((model(x) - y) ** 2).mean().backward()
            grads.append([p.grad.clone() for p in model.parameters()])
            opt.step()
        runs.append((copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict()), grads))
        if mon is not None:
            assert len(mon.to_pandas()) > 0
            mon.detach()
    (m0, o0, g0), (m1, o1, g1) = runs
    for k in m0:
        assert torch.equal(m0[k], m1[k]), k
    for a, b in zip(g0, g1):
        for ga, gb in zip(a, b):
            assert torch.equal(ga, gb)
    for pid in o0["state"]:
        for k, v in o0["state"][pid].items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(o1["state"][pid][k]))


def test_nothing_due_captures_nothing(monkeypatch):
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = _data()
    mon = SpectraMonitor(model, opt, schedule=[4], analyzers=("alignment",))
    calls = []
    orig = mon._capture
    monkeypatch.setattr(mon, "_capture", lambda step, due: (calls.append(step), orig(step, due)))
    _train(model, opt, 6, x, y)
    assert calls == [4]


def test_weight_only_analyzers_clone_nothing():
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = _data()
    mon = SpectraMonitor(model, opt, every=1, analyzers=("esd",))
    seen = []
    orig = mon._post_hook

    def spy(*a):
        seen.append(mon._pending)
        return orig(*a)

    mon._handles[1].remove()
    mon._handles[1] = opt.register_step_post_hook(spy)
    _train(model, opt, 2, x, y)
    assert seen == [{}, {}]


@pytest.mark.parametrize("make_opt", [
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
    lambda p: torch.optim.Adam(p, lr=1e-2),
    lambda p: torch.optim.AdamW(p, lr=1e-2),
    lambda p: torch.optim.RMSprop(p, lr=1e-3),
])
def test_common_optimizers(make_opt):
    model = _mlp()
    opt = make_opt(model.parameters())
    x, y = _data()
    with SpectraMonitor(model, opt, every=3, analyzers=("esd", "alignment")) as mon:
        _train(model, opt, 6, x, y)
    df = mon.to_pandas()
    assert set(df.step.unique()) == {0, 3, 6}
    assert (df.status != "failed").all()
    assert not mon.attached


class SignSGD(torch.optim.Optimizer):
    def __init__(self, params, lr=0.01):
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None):
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is not None:
                    p.add_(torch.sign(p.grad), alpha=-g["lr"])


def test_custom_optimizer_subclass():
    model = _mlp()
    opt = SignSGD(model.parameters(), lr=0.01)
    x, y = _data()
    mon = SpectraMonitor(model, opt, schedule=[1], analyzers=("alignment",))
    w0 = model[0].weight.detach().clone()
    _train(model, opt, 1, x, y)
    df = mon.to_pandas().query("layer == '0'")
    dW = (model[0].weight.detach() - w0).double().numpy()
    assert _val(df, matrix="update", metric="sv", index=0) == pytest.approx(
        np.linalg.svd(dW, compute_uv=False)[0], rel=1e-5)


def test_param_groups_frozen_and_added_later():
    model = _mlp()
    model[2].weight.requires_grad_(False)
    with pytest.warns(RuntimeWarning, match="not in the optimizer"):
        opt = torch.optim.SGD([{"params": [model[0].weight], "lr": 0.1}, {"params": [model[0].bias], "lr": 0.2}])
        mon = SpectraMonitor(model, opt, every=1, analyzers=("esd", "alignment"))
    x, y = _data()
    _train(model, opt, 1, x, y)
    df = mon.to_pandas()
    assert set(df[df.step == 1]["layer"]) == {"0"}
    model[2].weight.requires_grad_(True)
    opt.add_param_group({"params": [model[2].weight], "lr": 0.1})
    _train(model, opt, 1, x, y)
    df = mon.to_pandas()
    assert set(df[df.step == 2]["layer"]) == {"0", "2"}
    assert set(df[(df.step == 2) & (df.layer == "2")]["matrix"]) >= {"update", "weight"}


def test_new_module_added_to_model_and_optimizer_is_discovered():
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = SpectraMonitor(model, opt, every=1, analyzers=("esd",))
    model.add_module("extra", nn.Linear(6, 6))
    opt.add_param_group({"params": model.extra.parameters()})
    x, y = _data()
    _train(model, opt, 1, x, y)
    assert "extra" in set(mon.to_pandas().query("step == 1")["layer"])


def test_grad_scaler_skipped_step_not_counted():
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**4)
    mon = SpectraMonitor(model, opt, every=1, analyzers=("esd",))
    x, y = _data()
    for bad in (False, True, False):
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean() * (float("inf") if bad else 1.0)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    assert mon.step == 2
    assert sorted(mon.to_pandas()["step"].unique()) == [0, 1, 2]


def test_lbfgs_with_closure():
    model = _mlp()
    opt = torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=4)
    x, y = _data()
    mon = SpectraMonitor(model, opt, every=1, analyzers=("esd", "alignment"))

    def closure():
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        return loss

    w0 = model[0].weight.detach().clone()
    opt.step(closure)
    opt.step(closure)
    assert mon.step == 2
    df = mon.to_pandas()
    assert (df.status != "failed").all()
    # step 1: the gradient did not exist yet when step() was entered, so no grad rows; the update is the
    # whole step's change
    assert df.query("step == 1 and matrix == 'grad'").empty
    assert not df.query("step == 2 and matrix == 'grad'").empty
    assert not df.query("step == 1 and matrix == 'update'").empty
    del w0


def test_bf16_weights_keep_small_updates():
    model = _mlp(dtype=torch.bfloat16)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x, y = _data(dtype=torch.bfloat16)
    mon = SpectraMonitor(model, opt, every=1, analyzers=("esd", "alignment"))
    w0 = model[0].weight.detach().clone()
    _train(model, opt, 1, x, y)
    df = mon.to_pandas().query("step == 1 and layer == '0'")
    dW = (model[0].weight.detach().float() - w0.float()).double().numpy()
    assert np.abs(dW).max() > 0
    assert _val(df, matrix="update", metric="sv", index=0) == pytest.approx(
        np.linalg.svd(dW, compute_uv=False)[0], rel=1e-5)
    assert (df.status != "failed").all()


def test_ddp_single_process_gloo(tmp_path):
    import torch.distributed as dist

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29533")
    dist.init_process_group("gloo", rank=0, world_size=1, init_method=f"file://{tmp_path}/pg")
    try:
        model = nn.parallel.DistributedDataParallel(_mlp())
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        mon = SpectraMonitor(model, opt, every=1, analyzers=("esd", "alignment"))
        x, y = _data()
        _train(model, opt, 2, x, y)
        df = mon.to_pandas()
        assert set(df["layer"]) == {"0", "2"}  # same names as the unwrapped model
        assert mon.step == 2
        mon.detach()
    finally:
        dist.destroy_process_group()


def test_attach_twice_detach_idempotent_and_context_manager():
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    events = []

    class Watch:
        @spectra.hookimpl
        def spectra_monitor_attached(self, monitor):
            events.append("attached")

        @spectra.hookimpl
        def spectra_monitor_detached(self, monitor):
            events.append("detached")

    mon = SpectraMonitor(model, opt, every=1, analyzers=("esd",), plugins=[Watch()])
    with pytest.raises(RuntimeError, match="already attached"):
        mon.attach()
    mon.detach()
    mon.detach()
    assert events == ["attached", "detached"]
    x, y = _data()
    n = len(mon.to_pandas())
    _train(model, opt, 2, x, y)
    assert len(mon.to_pandas()) == n and mon.step == 0  # detached: nothing recorded, steps not counted
    assert not opt._optimizer_step_pre_hooks and not opt._optimizer_step_post_hooks


def test_state_dict_round_trip_resumes_step_counter():
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = _data()
    mon = SpectraMonitor(model, opt, every=2, analyzers=("esd",))
    _train(model, opt, 3, x, y)
    state = mon.state_dict()
    mon.detach()
    mon2 = SpectraMonitor(model, opt, every=2, analyzers=("esd",), attach=False)
    mon2.load_state_dict(state)
    mon2.attach()
    _train(model, opt, 1, x, y)
    df = mon2.to_pandas()
    assert mon2.step == 4
    assert sorted(df.step.unique()) == [0, 2, 4]
    with pytest.raises(ValueError, match="missing 'step'"):
        mon2.load_state_dict({"records": []})
    with pytest.raises(RuntimeError, match="already recorded steps up to 4"):
        mon2.load_state_dict(state)  # a monitor that trained on cannot be rewound


def test_log_dir_streams_and_reloads(tmp_path):
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = _data()
    seen = []

    class Sink:
        @spectra.hookimpl
        def spectra_log_records(self, records, step, run):
            seen.append((step, len(records)))

    mon = SpectraMonitor(model, opt, every=2, analyzers=("esd", "alignment"), log_dir=tmp_path / "log",
                         run="exp1", tags={"lr": 0.1}, plugins=[Sink()])
    _train(model, opt, 4, x, y)
    parts = sorted((tmp_path / "log" / "records").glob("*.parquet"))
    assert len(parts) == 3 and [s for s, _ in seen] == [0, 2, 4]
    back = Results.read(tmp_path / "log").to_pandas()
    mine = mon.to_pandas()
    assert len(back) == len(mine)
    cols = ["run", "step", "layer", "view", "matrix", "analyzer", "metric", "index", "value", "status"]
    a = mine[cols].sort_values(cols[:8]).reset_index(drop=True)
    b = back[cols].sort_values(cols[:8]).reset_index(drop=True)
    assert a.equals(b)
    assert back.attrs["source"] == "monitor" and set(back["lr"]) == {0.1}
    # a truncated part is skipped with a warning, never a corrupt table
    parts[-1].write_bytes(parts[-1].read_bytes()[:50])
    with pytest.warns(RuntimeWarning, match="skipping unreadable"):
        partial = Results.read(tmp_path / "log").to_pandas()
    assert sorted(partial.step.unique()) == [0, 2]


class Boom(Analyzer):
    name = "boom"

    def analyze(self, layer):
        raise RuntimeError("analyzer exploded")


def test_failing_analyzer_rows_warn_once_and_training_continues():
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = _data()
    errors = []

    class Observe:
        @spectra.hookimpl
        def spectra_analyzer_error(self, analyzer, layer, error):
            errors.append((analyzer.name, layer))

    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        mon = SpectraMonitor(model, opt, every=1, analyzers=["esd", Boom()], plugins=[Observe()])
        _train(model, opt, 3, x, y)
    msgs = [str(m.message) for m in w if "exploded" in str(m.message)]
    assert len(msgs) == 2  # one per (analyzer, layer)
    df = mon.to_pandas()
    failed = df[df.status == "failed"]
    assert len(failed) == 2 * 4 and set(failed.message) == {"RuntimeError: analyzer exploded"}
    assert (df[df.analyzer == "esd"].status != "failed").all()
    assert len(errors) == 8 and mon.step == 3


def test_on_error_raise_reraises():
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(RuntimeError, match="exploded"):
        SpectraMonitor(model, opt, every=1, analyzers=[Boom()], on_error="raise")


def test_nan_weights_mid_training_become_failed_rows():
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = _data()
    mon = SpectraMonitor(model, opt, every=1, analyzers=("esd",))
    _train(model, opt, 1, x, y)
    with torch.no_grad():
        model[2].weight[0, 0] = float("nan")
    opt.zero_grad(set_to_none=False)  # zero gradients: the step keeps the NaN where it is
    with pytest.warns(RuntimeWarning, match="non-finite"):
        opt.step()
    df = mon.to_pandas().query("step == 2")
    assert (df[df.layer == "2"].status == "failed").all()
    assert "1 non-finite" in df[df.layer == "2"].message.iloc[0]
    assert (df[df.layer == "0"].status == "ok").all()
    _train(model, opt, 1, x, y)  # training goes on (the NaN spreads; every layer then fails, nothing raises)
    assert mon.step == 3


def test_per_analyzer_schedule():
    from spectra.analyzers.esd import EsdAnalyzer

    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = _data()
    mon = SpectraMonitor(model, opt, every=2, analyzers=[EsdAnalyzer(schedule=spectra.at([3])), "alignment"])
    _train(model, opt, 4, x, y)
    df = mon.to_pandas()
    assert sorted(df[df.analyzer == "esd"].step.unique()) == [3]
    assert sorted(df[df.analyzer == "alignment"].step.unique()) == [2, 4]


def test_bad_input_messages():
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TypeError, match="torch.optim.Optimizer"):
        SpectraMonitor(model, object())
    with pytest.raises(TypeError, match="nn.Module"):
        SpectraMonitor(object(), opt)
    with pytest.raises(ValueError, match="registered analyzers: .*alignment.*esd.*tail"):
        SpectraMonitor(model, opt, analyzers=("esd", "nope"))
    from spectra.analyzers.esd import EsdAnalyzer

    with pytest.raises(TypeError, match="pass an instance"):
        SpectraMonitor(model, opt, analyzers=[EsdAnalyzer])
    with pytest.raises(ValueError, match="on_error"):
        SpectraMonitor(model, opt, on_error="explode")
    with pytest.raises(ValueError, match="either every= or schedule="):
        SpectraMonitor(model, opt, every=2, schedule=[1])
    with pytest.raises(ValueError, match="unknown fit method"):
        SpectraMonitor(model, opt, fit="magic")
    assert not opt._optimizer_step_pre_hooks  # failed constructions leave no hooks behind


def test_default_analyzers_and_tail_fit_rows():
    model = nn.Sequential(nn.Linear(80, 120), nn.Tanh(), nn.Linear(120, 60))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(32, 80)
    mon = SpectraMonitor(model, opt, every=2)
    for _ in range(2):
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()
    wide = mon.to_wide()
    assert {"alpha", "alpha_hill", "xmin", "D", "lambda_max", "stable_rank"} <= set(wide.columns)
    assert len(wide) == 4
    assert mon.results.attrs["fit"] == "csn"
    assert mon.results.layers["layer"].tolist()[:1] == ["0"]


def test_scalar_writer_sink_receives_scalars():
    from spectra.sinks import ScalarWriterSink

    class FakeWriter:
        def __init__(self):
            self.calls = []

        def add_scalar(self, tag, value, step):
            self.calls.append((tag, value, step))

    w = FakeWriter()
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = _data()
    mon = SpectraMonitor(model, opt, every=2, analyzers=("esd", "alignment"),
                         plugins=[ScalarWriterSink(w, metrics={"lambda_max", "update_cos_update_grad"})])
    _train(model, opt, 2, x, y)
    tags = {t for t, _, _ in w.calls}  # grouped by metric (wide-view names): one chart section per metric
    assert tags == {"lambda_max/0", "lambda_max/2", "update_cos_update_grad/0", "update_cos_update_grad/2"}
    assert {s for _, _, s in w.calls} == {0, 2}
    df = mon.to_pandas()
    expected = df.query("step == 2 and layer == '0' and metric == 'lambda_max'")["value"].iloc[0]
    assert ("lambda_max/0", expected, 2) in w.calls
    with pytest.raises(TypeError, match="add_scalar"):
        ScalarWriterSink(object())


def test_esd_of_update_and_grad_matrices():
    from spectra.analyzers.esd import EsdAnalyzer

    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = _data()
    mon = SpectraMonitor(model, opt, every=1, analyzers=[EsdAnalyzer(matrices=("weight", "update", "grad"))])
    w0 = model[0].weight.detach().clone().double()
    _train(model, opt, 1, x, y)
    df = mon.to_pandas().query("step == 1 and layer == '0'")
    dW = model[0].weight.detach().double() - w0
    s = np.linalg.svd(dW.numpy(), compute_uv=False)
    assert _val(df, matrix="update", metric="lambda_max") == pytest.approx(s[0] ** 2, rel=1e-5)
    assert _val(df, matrix="grad", metric="lambda_max") == pytest.approx((s[0] / 0.1) ** 2, rel=1e-4)
