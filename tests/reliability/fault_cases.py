"""The fault matrix as data: every (input, entry point) pair with its promised outcome and the check proving it.

``test_fault_matrix.py`` runs every :data:`CASES` check; ``render.py`` turns the same list into the table in
``RELIABILITY.md`` (and a test asserts the file equals the rendering), so the documented matrix cannot drift from
what is tested.

Promises checked throughout: a clear error at the API boundary, or ``failed``/``skipped`` rows with a message;
the model untouched bit for bit (against an unmonitored twin run or a copy taken before); hooks gone once the
monitor is detached or collected; training continuing.
"""

from __future__ import annotations

import contextlib
import gc
import math
import warnings
import weakref
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import spectra
from spectra import Analyzer, Measurement, SpectraMonitor
from spectra.functional import esd, fit_power_law, mp_fit, norm_metrics

from ._util import batch, captured_cli, hooks_of, mlp, same_state, snapshot, step, train, twin_run

from .matrix import ENTRY_ANALYZE, ENTRY_CLI, ENTRY_FUNCTIONAL, ENTRY_MONITOR, case  # noqa: F401


@contextlib.contextmanager
def _quiet():
    """Silence warnings (the checks assert on rows and messages, not on the warning stream)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _sv2(a) -> np.ndarray:
    return np.sort(np.linalg.svd(np.asarray(a, dtype=np.float64), compute_uv=False) ** 2)


# ============================================================================================ functional
@case("NaN / Inf weights", ENTRY_FUNCTIONAL,
      "`esd`, `norm_metrics`, `mp_fit`: ValueError giving the count of non-finite values; `fit_power_law`: "
      "`status=failed` with the count")
def _(tmp):
    W = torch.randn(6, 4)
    W[0, 0], W[1, 1] = math.nan, math.inf
    with pytest.raises(ValueError, match="2 non-finite"):
        esd(W)
    lam = np.array([1.0, 2.0, math.nan, math.inf] + list(range(3, 30)))
    fit = fit_power_law(lam)
    assert fit.status == "failed" and "2 of 31 eigenvalues are NaN or Inf" in fit.message
    with pytest.raises(ValueError, match="2 non-finite"):
        norm_metrics(lam)
    with pytest.raises(ValueError, match="2 non-finite"):
        mp_fit(lam, 40, 31)


@case("all-zero matrix", ENTRY_FUNCTIONAL,
      "`esd` all zeros; fits `skipped`/`failed` with why (nothing above threshold, xmin not positive); "
      "`norm_metrics` log norms `-inf`, stable rank NaN (documented)")
def _(tmp):
    lam = esd(torch.zeros(7, 5))
    assert lam.shape == (5,) and (lam == 0).all()
    assert fit_power_law(lam).status == "skipped"
    h = fit_power_law(lam, method="hill")
    assert h.status == "failed" and "not positive" in h.message
    m = norm_metrics(lam)
    assert m["log_norm"] == -math.inf and math.isnan(m["stable_rank"]) and m["entropy"] == -1.0
    assert math.isnan(mp_fit(lam, 7, 5).mp_softrank)


@case("rank-1 matrix", ENTRY_FUNCTIONAL,
      "one eigenvalue ‖u‖²‖v‖², the rest ≈ 0 (SVD path); csn fit `skipped` (1 eigenvalue above threshold)")
def _(tmp):
    u, v = torch.arange(1.0, 7.0), torch.arange(1.0, 6.0)
    lam = esd(torch.outer(u, v))
    expect = float((u @ u) * (v @ v))
    assert lam[-1] == pytest.approx(expect, rel=1e-12) and np.all(np.abs(lam[:-1]) <= 1e-12 * expect)
    fit = fit_power_law(lam)
    assert fit.status == "skipped" and "1 eigenvalue(s) above threshold" in fit.message


@case("1×1 and 2×3 matrices", ENTRY_FUNCTIONAL,
      "exact eigenvalues (w², the 2 squared singular values); csn/hill fits `skipped` (too few eigenvalues), "
      "ww `warn` (small-N fit, `alpha is unreliable`, as WeightWatcher)")
def _(tmp):
    assert esd(torch.tensor([[3.0]])).tolist() == [9.0]
    W = torch.randn(2, 3, dtype=torch.float64)
    np.testing.assert_allclose(esd(W), _sv2(W), rtol=1e-12)
    for method in ("csn", "hill"):
        fit = fit_power_law(esd(W), method=method)
        assert fit.status == "skipped" and fit.message
    ww = fit_power_law(esd(W), method="ww")
    assert ww.status == "warn" and "unreliable" in ww.message
    assert norm_metrics(esd(W), N=3)["matrix_rank"] == 2


@case("extreme aspect ratio 10000×3", ENTRY_FUNCTIONAL, "3 eigenvalues equal to numpy's σ² (and for the transpose)")
def _(tmp):
    W = torch.randn(10000, 3, dtype=torch.float64)
    ref = _sv2(W)
    np.testing.assert_allclose(esd(W), ref, rtol=1e-10)
    np.testing.assert_allclose(esd(W.T), ref, rtol=1e-10)


@case("integer / bool tensors", ENTRY_FUNCTIONAL, "read as float64 (exact same eigenvalues as the float cast)")
def _(tmp):
    Wi = torch.randint(-5, 6, (6, 4))
    Wb = torch.rand(6, 4) > 0.5
    np.testing.assert_array_equal(esd(Wi), esd(Wi.double()))
    np.testing.assert_array_equal(esd(Wb), esd(Wb.double()))
    np.testing.assert_array_equal(esd(Wi.numpy()), esd(Wi.double()))


@case("complex tensors", ENTRY_FUNCTIONAL,
      "`esd`/`norm_metrics`: TypeError naming the complex dtype; `fit_power_law`: `status=failed` (never drops "
      "the imaginary part)")
def _(tmp):
    with pytest.raises(TypeError, match="complex"):
        esd(torch.randn(4, 3, dtype=torch.complex64))
    lam = np.arange(1, 40) * (1 + 1j)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ComplexWarning: the value is refused, not cast
        fit = fit_power_law(lam)
    assert fit.status == "failed" and "complex" in fit.message
    with pytest.raises(TypeError, match="complex"):
        norm_metrics(lam)


@case("sparse tensors (COO, CSR)", ENTRY_FUNCTIONAL, "densified: same eigenvalues as the dense matrix")
def _(tmp):
    W = torch.randn(6, 4)
    W[W.abs() < 0.5] = 0
    with _quiet():
        csr = W.to_sparse_csr()
    np.testing.assert_array_equal(esd(W.to_sparse()), esd(W))
    np.testing.assert_array_equal(esd(csr), esd(W))


@case("meta tensors", ENTRY_FUNCTIONAL, "ValueError: on the meta device, holds no values")
def _(tmp):
    with pytest.raises(ValueError, match="meta device"):
        esd(torch.empty(4, 3, device="meta"))


@case("quantized tensors (quantize_per_tensor; int8 + scale)", ENTRY_FUNCTIONAL,
      "torch quantized tensor: TypeError asking for `.dequantize()`; a plain int8 tensor with its scale: "
      "esd(int8)·scale² = esd(dequantized)")
def _(tmp):
    W = torch.randn(6, 4)
    with _quiet():
        q = torch.quantize_per_tensor(W, 0.05, 0, torch.qint8)
    with pytest.raises(TypeError, match=r"quantized.*dequantize\(\)"):
        esd(q)
    scale = 0.05
    w8 = torch.clamp(torch.round(W / scale), -128, 127).to(torch.int8)
    np.testing.assert_allclose(esd(w8) * scale**2, esd(w8.double() * scale), rtol=1e-12)


@case("fp16 / bf16 weights", ENTRY_FUNCTIONAL, "computed in float64: identical to the float64 upcast")
def _(tmp):
    W = torch.randn(9, 5)
    for dt in (torch.float16, torch.bfloat16):
        np.testing.assert_array_equal(esd(W.to(dt)), esd(W.to(dt).double()))


@case("finite weights whose WᵀW overflows (|w| ~ 1e200)", ENTRY_FUNCTIONAL,
      "ValueError: eigenvalues overflow float64, rescale (was: LinAlgError or silent inf)")
def _(tmp):
    W = torch.full((3, 3), 1e200, dtype=torch.float64) + torch.eye(3, dtype=torch.float64)
    for method in ("auto", "eigh", "svd"):
        with pytest.raises(ValueError, match="overflow float64"):
            esd(W, method=method)


# ============================================================================================ analyze
def _analyze_untouched(model: nn.Module, **kw):
    before = snapshot(model)
    with _quiet():
        res = spectra.analyze(model, **kw)
    assert same_state(before, snapshot(model))
    return res


@case("NaN / Inf weights", ENTRY_ANALYZE, "that layer's rows `failed` with the count; other layers `ok`; model untouched")
def _(tmp):
    model = mlp(sizes=(12, 24, 24, 6))
    with torch.no_grad():
        model[0].weight[0, 0] = math.nan
        model[2].weight[1, 1] = math.inf
    df = _analyze_untouched(model).to_pandas()
    for layer in ("0", "2"):
        bad = df[df.layer == layer]
        assert len(bad) and (bad.status == "failed").all() and bad.message.str.contains("1 non-finite").all()
    assert df[df.layer == "4"].status.isin(["ok", "warn", "skipped"]).all()
    assert (df[df.layer == "4"].status != "failed").all()


@case("all-zero and rank-1 layers", ENTRY_ANALYZE,
      "norm metrics `ok`; MP description and tail fit `skipped`/`failed` with the reason; model untouched")
def _(tmp):
    model = nn.Sequential(nn.Linear(20, 30, bias=False), nn.Linear(30, 20, bias=False))
    with torch.no_grad():
        model[0].weight.zero_()
        model[1].weight.copy_(torch.ones(20, 1) @ torch.ones(1, 30))
    df = _analyze_untouched(model).to_pandas()
    z = df[df.layer == "0"]
    assert z.query("metric == 'lambda_max'").value.iloc[0] == 0.0
    assert (z.query("metric == 'mp_sigma2'").status == "skipped").all()
    r1 = df[df.layer == "1"]
    assert r1.query("metric == 'lambda_max'").value.iloc[0] == pytest.approx(600.0, rel=1e-12)
    assert (r1.query("metric == 'alpha'").status == "skipped").all()
    assert (df.status != "ok").sum() > 0 and df[df.status != "ok"].message.str.len().gt(0).all()


@case("1×1 and 2×3 layers", ENTRY_ANALYZE,
      "1×1: skipped (`effectively 1-D`) in the layers table; 2×3: esd `ok`, tail `skipped` with why")
def _(tmp):
    model = nn.Sequential(nn.Linear(1, 1), nn.Linear(1, 2), nn.Linear(2, 3))
    res = _analyze_untouched(model)
    lay = res.layers.set_index("layer")
    assert "effectively 1-D" in lay.loc["0", "skip_reason"]
    df = res.to_pandas()
    assert (df[(df.layer == "2") & (df.analyzer == "esd")].status == "ok").all()
    t = df[(df.layer == "2") & (df.metric == "alpha")]
    assert (t.status == "skipped").all() and "needs at least" in t.message.iloc[0]


@case("extreme aspect ratio 10000×3", ENTRY_ANALYZE, "rows `ok`, λ_max equals numpy's; N, M, Q in the layers table")
def _(tmp):
    model = nn.Sequential(nn.Linear(3, 10000, bias=False))
    res = _analyze_untouched(model)
    df = res.to_pandas()
    lmax = df.query("metric == 'lambda_max'").value.iloc[0]
    assert lmax == pytest.approx(_sv2(model[0].weight.detach())[-1], rel=1e-10)
    row = res.layers.iloc[0]
    assert (row.N, row.M, row.Q) == (10000, 3, pytest.approx(10000 / 3))


@case("integer / bool / complex / sparse / meta / quantized tensors in a state_dict", ENTRY_ANALYZE,
      "each skipped with its reason in the layers table; the float layer analyzed")
def _(tmp):
    with _quiet():
        q = torch.quantize_per_tensor(torch.randn(5, 4), 0.1, 0, torch.qint8)
    sd = {
        "ok.weight": torch.randn(8, 6),
        "int.weight": torch.randint(0, 5, (8, 6)),
        "bool.weight": torch.rand(8, 6) > 0.5,
        "cplx.weight": torch.randn(8, 6, dtype=torch.complex64),
        "sparse.weight": torch.randn(8, 6).to_sparse(),
        "meta.weight": torch.empty(8, 6, device="meta"),
        "q.weight": q,
    }
    with _quiet():
        res = spectra.analyze(sd)
    reasons = res.layers.set_index("layer")["skip_reason"].to_dict()
    assert pd.isna(reasons["ok"])
    expect = {"int": "non-float dtype int64", "bool": "non-float dtype bool", "cplx": "complex dtype",
              "sparse": "layout is not analyzed", "meta": "meta device", "q": "quantized tensor"}
    for layer, text in expect.items():
        assert text in reasons[layer], (layer, reasons[layer])
    assert set(res.to_pandas().layer) == {"ok"}


@case("fp16 / bf16 weights", ENTRY_ANALYZE, "rows `ok`; identical numbers to the float64 upcast; model untouched")
def _(tmp):
    for dt in (torch.float16, torch.bfloat16):
        model = mlp(dtype=dt, sizes=(40, 60, 30))
        a = _analyze_untouched(model).to_pandas()
        with _quiet():
            b = spectra.analyze(mlp(dtype=dt, sizes=(40, 60, 30)).double()).to_pandas()
        assert (a.status != "failed").all()
        np.testing.assert_array_equal(a.value.to_numpy(), b.value.to_numpy())


@case("tied weights", ENTRY_ANALYZE, "analyzed once; the other name skipped as `tied to <first>`")
def _(tmp):
    model = _tied()
    res = _analyze_untouched(model)
    assert res.layers.set_index("layer").loc["out", "skip_reason"] == "tied to emb"
    assert set(res.to_pandas().layer) == {"emb"}


class _Boom(Analyzer):
    name = "boom"

    def analyze(self, layer):
        raise RuntimeError("analyzer exploded")


class _Interrupt(Analyzer):
    """Raises KeyboardInterrupt on its ``at``-th call (the user pressing Ctrl-C inside an analyzer)."""

    name = "interrupt"

    def __init__(self, at: int = 1) -> None:
        super().__init__()
        self.at, self.calls = at, 0

    def analyze(self, layer):
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt
        yield Measurement("calls", float(self.calls))


@case("exception / KeyboardInterrupt inside an analyzer", ENTRY_ANALYZE,
      "exception: `failed` row per layer with the message, a warning; KeyboardInterrupt propagates; model "
      "untouched either way")
def _(tmp):
    model = mlp()
    before = snapshot(model)
    with pytest.warns(RuntimeWarning, match="exploded"):
        df = spectra.analyze(model, analyzers=["esd", _Boom()]).to_pandas()
    failed = df[df.status == "failed"]
    assert set(failed.analyzer) == {"boom"} and set(failed.message) == {"RuntimeError: analyzer exploded"}
    assert len(failed) == 2 and (df[df.analyzer == "esd"].status != "failed").all()
    with pytest.raises(KeyboardInterrupt):
        spectra.analyze(model, analyzers=[_Interrupt(2)])
    assert same_state(before, snapshot(model))


class _ViewRaiser:
    @spectra.hookimpl
    def spectra_as_matrices(self, name, param, module):
        if name.startswith("2."):
            raise RuntimeError("plugin bug")
        return None


@case("plugin raising at call time (layer hook)", ENTRY_ANALYZE,
      "PluginError naming the hook and the parameter, and how to block the plugin")
def _(tmp):
    with pytest.raises(spectra.plugins.PluginError,
                       match=r"spectra_as_matrices raised for parameter '2.weight'.*plugin bug.*SPECTRA_DISABLE"):
        spectra.analyze(mlp(), plugins=[_ViewRaiser()])


class _FakeEntryPoint:
    name = "broken_plugin"
    value = "broken_plugin.module"
    group = "spectra"

    def load(self):
        raise ImportError("No module named 'broken_dependency'")


def _fake_entry_points(monkeypatch):
    import importlib.metadata as md

    real = md.entry_points

    def entry_points(**kw):
        if kw.get("group") == "spectra":
            return [_FakeEntryPoint()]
        return real(**kw)

    monkeypatch.setattr(md, "entry_points", entry_points)


@case("plugin raising at import (entry point)", ENTRY_ANALYZE,
      "PluginError naming the plugin, its target and `SPECTRA_DISABLE_PLUGINS`; blocking it by name works")
def _(tmp):
    with pytest.MonkeyPatch.context() as mp:
        _fake_entry_points(mp)
        with pytest.raises(spectra.plugins.PluginError,
                           match=r"'broken_plugin' \(broken_plugin.module\) failed to import: ImportError.*"
                                 r"SPECTRA_DISABLE_PLUGINS=broken_plugin"):
            spectra.analyze(mlp())
        mp.setenv("SPECTRA_DISABLE_PLUGINS", "broken_plugin")
        with _quiet():
            assert len(spectra.analyze(mlp()).to_pandas()) > 0


# ============================================================================================ monitor
def _sgd(m):
    return torch.optim.SGD(m.parameters(), lr=0.05)


def _monitored(make_model, body, make_opt=_sgd, **kw):
    """Twin run; asserts the monitored model ends bit-identical to the unmonitored one."""
    kw.setdefault("every", 1)
    mon, plain, watched, out = twin_run(make_model, make_opt, body, kw)
    assert same_state(plain, watched), "the monitor changed the model"
    return mon, out


@case("NaN / Inf weights before training", ENTRY_MONITOR,
      "`failed` rows (count of non-finite values) from step 0 on; training continues; model identical to an "
      "unmonitored run")
def _(tmp):
    def make():
        m = mlp(sizes=(12, 24, 24, 6))
        with torch.no_grad():
            m[0].weight[0, 0] = math.nan
            m[2].weight[:] = math.inf
        return m

    mon, _ = _monitored(make, lambda m, o, mon: train(m, o, 3))
    df = mon.to_pandas()
    assert mon.step == 3 and set(df.step) == {0, 1, 2, 3}
    assert (df[df.layer == "0"].query("step == 0").status == "failed").all()
    assert df[df.status == "failed"].message.str.contains("non-finite").all()
    mon.detach()


@case("NaN weights mid-training", ENTRY_MONITOR,
      "rows of that layer `failed` from that step; earlier steps intact; training continues; model identical")
def _(tmp):
    def body(m, o, mon):
        train(m, o, 2)
        with torch.no_grad():
            m[2].weight[0, 0] = math.nan
        train(m, o, 2)

    mon, _ = _monitored(mlp, body)
    df = mon.to_pandas()
    assert mon.step == 4
    assert (df.query("step <= 2").status != "failed").all()
    assert (df.query("step == 3 and layer == '2'").status == "failed").all()
    mon.detach()


@case("all-zero, rank-1, 1×1, 2×3 and 10000×3 layers", ENTRY_MONITOR,
      "rows `ok`, or `skipped`/`failed` with the reason (zero update, too few eigenvalues, Hill xmin = 0 or at "
      "the noise floor, effectively 1-D); model identical")
def _(tmp):
    def make():
        torch.manual_seed(0)
        m = nn.ModuleDict({"zero": nn.Linear(20, 30, bias=False), "r1": nn.Linear(30, 20, bias=False),
                           "one": nn.Linear(1, 1), "small": nn.Linear(3, 2), "tall": nn.Linear(3, 10000)})
        with torch.no_grad():
            m["zero"].weight.zero_()
            m["r1"].weight.copy_(torch.ones(20, 1) @ torch.ones(1, 30))
        return m

    x20, x3 = torch.randn(4, 20), torch.randn(4, 3)

    def body(m, o, mon):
        for _ in range(2):
            o.zero_grad()
            loss = m["r1"](m["zero"](x20)).pow(2).mean() + m["small"](x3).pow(2).mean() + m["tall"](x3).pow(2).mean()
            (loss + m["one"](x3[:, :1]).pow(2).mean()).backward()
            o.step()

    mon, _ = _monitored(make, body)
    df = mon.to_pandas()
    failed = df[df.status == "failed"]  # only Hill fits: the zero matrix's median eigenvalue is 0, the rank-1's
    assert set(zip(failed.layer, failed.metric)) == {("zero", "alpha_hill"), ("r1", "alpha_hill")}  # is noise
    assert failed[failed.layer == "zero"].message.str.contains("is not positive").all()
    assert failed[failed.layer == "r1"].message.str.contains("numerical noise floor").all()
    assert set(df.layer) == {"zero", "r1", "small", "tall"}
    assert "effectively 1-D" in mon.results.layers.set_index("layer").loc["one", "skip_reason"]
    nok = df[df.status == "skipped"]
    assert len(nok) and nok.message.str.len().gt(0).all()
    mon.detach()


@case("fp16 / bf16 weights", ENTRY_MONITOR,
      "update ΔW computed in float32: non-zero `update` rows even for bf16; model identical")
def _(tmp):
    for dt in (torch.float16, torch.bfloat16):
        mon, _ = _monitored(lambda: mlp(dtype=dt), lambda m, o, mon: train(m, o, 2),
                            analyzers=("esd", "alignment"))
        df = mon.to_pandas()
        assert (df.status != "failed").all()
        rel = df.query("matrix == 'update' and metric == 'relative_norm'")
        assert len(rel) == 2 * 2 and (rel.value > 0).all()
        mon.detach()


@case("sparse gradients (Embedding(sparse=True))", ENTRY_MONITOR, "gradient densified for `grad` rows; model identical")
def _(tmp):
    idx = torch.randint(0, 30, (8,))

    def make():
        torch.manual_seed(0)
        return nn.Sequential(nn.Embedding(30, 8, sparse=True), nn.Linear(8, 4))

    def body(m, o, mon):
        for _ in range(2):
            o.zero_grad()
            m(idx).pow(2).mean().backward()
            o.step()

    mon, _ = _monitored(make, body, analyzers=("alignment",))
    df = mon.to_pandas()
    assert len(df.query("layer == '0' and matrix == 'grad'")) and (df.status != "failed").all()
    mon.detach()


@case("meta parameters", ENTRY_MONITOR, "skipped with `meta device (no values)` in the layers table")
def _(tmp):
    with torch.device("meta"):
        m = nn.Linear(4, 3)
    with _quiet():
        mon = SpectraMonitor(m, torch.optim.SGD(m.parameters(), lr=0.1), every=1)
    assert mon.results.layers.skip_reason.str.contains("meta device").all()
    mon.detach()


def _tied() -> nn.Module:
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.emb = nn.Embedding(20, 8)
            self.out = nn.Linear(8, 20, bias=False)
            self.out.weight = self.emb.weight

        def forward(self, i):
            return self.out(self.emb(i))

    return Tied()


@case("tied weights", ENTRY_MONITOR, "one set of rows (`tied to emb` for the alias); update = both uses' step; "
      "model identical")
def _(tmp):
    idx = torch.randint(0, 20, (8,))

    def body(m, o, mon):
        for _ in range(2):
            o.zero_grad()
            m(idx).pow(2).mean().backward()
            o.step()

    mon, _ = _monitored(_tied, body, make_opt=lambda m: torch.optim.Adam(m.parameters(), lr=1e-2))
    df = mon.to_pandas()
    assert set(df.layer) == {"emb"} and (df.status != "failed").all()
    assert mon.results.layers.set_index("layer").loc["out", "skip_reason"] == "tied to emb"
    mon.detach()


@case("parameter replaced with a new shape (`.data = …`)", ENTRY_MONITOR,
      "between steps: the next rows describe the new shape; between capture and update: `failed` row "
      "`changed shape`; training continues")
def _(tmp):
    m = mlp()
    o = _sgd(m)
    x, y = batch(m)
    with _quiet():
        mon = SpectraMonitor(m, o, every=1, analyzers=("esd", "alignment"))
        step(m, o, x, y)
        m[0].weight.data = torch.randn(24, 10)
        x10 = torch.randn(16, 10)
        step(m, o, x10, y)
    df = mon.to_pandas()
    assert (df.query("step == 2").status != "failed").all()
    assert df.query("step == 2 and layer == '0' and metric == 'num_evals'").value.iloc[0] == 10

    def reshape_after_capture(opt, args, kwargs):  # runs after the monitor's pre-hook captured W_{t-1}
        m[0].weight.data = torch.randn(24, 7)
        m[0].weight.grad = None

    h = o.register_step_pre_hook(reshape_after_capture)
    with pytest.warns(RuntimeWarning, match="changed shape"):
        step(m, o, x10, y)
    h.remove()
    failed = mon.to_pandas().query("step == 3 and status == 'failed'")
    assert list(failed.layer) == ["0"] and "changed shape from (24, 10) to (24, 7)" in failed.message.iloc[0]
    with _quiet():
        step(m, o, torch.randn(16, 7), y)
    assert mon.step == 4 and (mon.to_pandas().query("step == 4").status != "failed").all()
    mon.detach()


@case("optimizer gains a param group mid-run", ENTRY_MONITOR,
      "a warning names the parameters outside the optimizer; they are monitored from the step after "
      "`add_param_group`")
def _(tmp):
    m = mlp()
    o = torch.optim.SGD(m[0].parameters(), lr=0.1)
    with pytest.warns(RuntimeWarning, match="not in the optimizer.*2.weight"):
        mon = SpectraMonitor(m, o, every=1, analyzers=("esd", "alignment"))
    with _quiet():
        train(m, o, 1)
        o.add_param_group({"params": m[2].parameters()})
        train(m, o, 2)
    df = mon.to_pandas()
    assert set(df.query("step == 1").layer) == {"0"}
    assert set(df.query("step == 2").layer) == {"0", "2"}
    assert len(df.query("step == 2 and layer == '2' and matrix == 'update'")) > 0
    mon.detach()


@case("detach in the middle of training", ENTRY_MONITOR,
      "pending copies dropped, hooks removed, no further rows; training continues; re-attach resumes")
def _(tmp):
    m = mlp()
    o = _sgd(m)
    x, y = batch(m)
    with _quiet():
        mon = SpectraMonitor(m, o, every=1, analyzers=("alignment",))
        step(m, o, x, y)
        o.zero_grad()
        ((m(x) - y) ** 2).mean().backward()
        mon._pre_hook(o, (), {})  # captured, as inside optimizer.step(), then detached before the update
        assert mon._pending
        mon.detach()
        mon.detach()
    assert mon._pending is None and hooks_of(o) == 0
    o.step()
    train(m, o, 2)
    assert mon.step == 1 and set(mon.to_pandas().step) == {1}
    with _quiet():
        mon.attach()
        train(m, o, 1)
    assert mon.step == 2 and set(mon.to_pandas().step) == {1, 2}
    mon.detach()
    assert hooks_of(o) == 0


@case("monitor dropped without detach()", ENTRY_MONITOR,
      "the optimizer holds it only weakly: it is collected and its hooks are removed; training continues")
def _(tmp):
    m = mlp()
    o = _sgd(m)
    with _quiet():
        mon = SpectraMonitor(m, o, every=1)
        train(m, o, 1)
    ref = weakref.ref(mon)
    del mon
    gc.collect()
    assert ref() is None and hooks_of(o) == 0
    train(m, o, 2)


@case("exception inside an analyzer", ENTRY_MONITOR,
      "`failed` row per (analyzer, layer, step) with the message; one warning per (analyzer, layer); training "
      "continues; model identical")
def _(tmp):
    mon, (_, warns) = _monitored(mlp, lambda m, o, mon: train(m, o, 3), analyzers=["esd", _Boom()])
    assert sum("exploded" in w for w in warns) == 2
    df = mon.to_pandas()
    failed = df[df.status == "failed"]
    assert len(failed) == 2 * 4 and set(failed.message) == {"RuntimeError: analyzer exploded"}
    assert mon.step == 3
    mon.detach()


@case("KeyboardInterrupt inside an analyzer", ENTRY_MONITOR,
      "propagates out of `optimizer.step()` (the update itself is done and counted); copies and snapshots "
      "freed; hooks stay attached and later steps are analyzed; in the constructor (step 0): propagates and "
      "leaves no hooks")
def _(tmp):
    m = mlp()
    o = _sgd(m)
    x, y = batch(m)
    plain = mlp()
    po = _sgd(plain)
    states = []
    import spectra.pipeline.capture as capture_mod  # where snapshots are built

    orig = capture_mod.LayerState

    class Tracked(orig):
        def __post_init__(self):
            super().__post_init__()
            states.append(weakref.ref(self))

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(capture_mod, "LayerState", Tracked)
        # two layers: calls 1-2 at step 0, 3-4 at step 1, 5-6 at step 2 (the interrupt, on the second layer)
        mon = SpectraMonitor(m, o, every=1, analyzers=[_Interrupt(at=6), "alignment"])
        step(m, o, x, y)
        step(plain, po, x, y)
        with pytest.raises(KeyboardInterrupt):
            step(m, o, x, y)
        step(plain, po, x, y)
    gc.collect()
    assert mon.step == 2 and mon._pending is None and mon.attached and hooks_of(o) == 2
    assert all(r() is None for r in states), "a snapshot outlived the interrupted step"
    assert same_state(snapshot(plain), snapshot(m))
    with _quiet():
        step(m, o, x, y)
    assert mon.step == 3 and set(mon.to_pandas().query("analyzer == 'interrupt'").step) == {0, 1, 3}
    mon.detach()
    o2 = _sgd(m)
    with pytest.raises(KeyboardInterrupt):
        SpectraMonitor(m, o2, every=1, analyzers=[_Interrupt(at=1)])
    assert hooks_of(o2) == 0


class _SinkRaiser:
    @spectra.hookimpl
    def spectra_log_records(self, records, step, run):
        raise OSError("disk full")

    @spectra.hookimpl
    def spectra_monitor_attached(self, monitor):
        raise RuntimeError("attach observer bug")


@case("plugin raising at call time (sink, observer)", ENTRY_MONITOR,
      "a warning naming the hook and error; records kept in memory; training continues; model identical")
def _(tmp):
    mon, (_, warns) = _monitored(mlp, lambda m, o, mon: train(m, o, 2), plugins=[_SinkRaiser()])
    assert any("spectra_monitor_attached raised RuntimeError('attach observer bug')" in w for w in warns)
    assert sum("a results sink raised at step" in w and "disk full" in w for w in warns) == 3
    assert mon.step == 2 and set(mon.to_pandas().step) == {0, 1, 2}
    mon.detach()


@case("plugin raising at import (entry point)", ENTRY_MONITOR,
      "PluginError at construction (before training), naming the plugin; no hooks left on the optimizer")
def _(tmp):
    m = mlp()
    o = _sgd(m)
    with pytest.MonkeyPatch.context() as mp:
        _fake_entry_points(mp)
        with pytest.raises(spectra.plugins.PluginError, match="broken_plugin"):
            SpectraMonitor(m, o)
    assert hooks_of(o) == 0


# ============================================================================================ CLI
def _cli(*argv):
    from spectra.cli import main

    with captured_cli() as io_:
        with _quiet():
            code = main(list(argv))
    return code, io_["out"], io_["err"]


@case("NaN / Inf weights in a checkpoint", ENTRY_CLI, "exit 0; the summary names the failed layer and why")
def _(tmp):
    sd = mlp().state_dict()
    sd["2.weight"][0, 0] = math.nan
    torch.save(sd, tmp / "nan.pt")
    code, out, err = _cli("analyze", str(tmp / "nan.pt"), "-q")
    assert code == 0 and "1 layer(s) failed: 2: ValueError: W holds 1 non-finite" in out


@case("int / complex / quantized tensors in a checkpoint", ENTRY_CLI,
      "exit 0; each listed as skipped with its reason")
def _(tmp):
    with _quiet():
        q = torch.quantize_per_tensor(torch.randn(5, 4), 0.1, 0, torch.qint8)
    sd = {"ok.weight": torch.randn(8, 6), "int.weight": torch.randint(0, 5, (8, 6)),
          "cplx.weight": torch.randn(8, 6, dtype=torch.complex64), "q.weight": q}
    torch.save(sd, tmp / "mixed.pt")
    code, out, err = _cli("analyze", str(tmp / "mixed.pt"), "-q")
    assert code == 0, err
    for text in ("int (non-float dtype int64)", "cplx (complex dtype", "q (quantized tensor"):
        assert text in out


@case("crafted pickle that runs code", ENTRY_CLI, "exit 2 `refused … weights_only`; the payload never runs")
def _(tmp):
    marker = tmp / "pwned"
    torch.save({"w": torch.zeros(3, 3), "x": _Payload(str(marker))}, tmp / "evil.pt")
    code, out, err = _cli("analyze", str(tmp / "evil.pt"))
    assert code == 2 and "refused" in err and not marker.exists()


class _Payload:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


@case("a path to Python code (not `module:callable`)", ENTRY_CLI,
      "exit 2: an unsupported checkpoint type; the file is never imported or executed")
def _(tmp):
    marker = tmp / "imported"
    code_file = tmp / "model_def.py"
    code_file.write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    for target in (str(code_file), "model_def", str(tmp / "model_def")):
        code, out, err = _cli("analyze", target)
        assert code == 2 and not marker.exists(), (target, err)


@case("existing --out / --plot files", ENTRY_CLI, "exit 2 `exists; pass --force`, files unchanged; --force overwrites")
def _(tmp):
    torch.save(mlp().state_dict(), tmp / "m.pt")
    for name in ("t.parquet", "t.csv", "t.csv.meta.json"):
        (tmp / name).write_text("keep")
        target = tmp / ("t.csv" if name.startswith("t.csv") else name)
        if name == "t.csv.meta.json":
            (tmp / "t.csv").unlink()
        code, out, err = _cli("analyze", str(tmp / "m.pt"), "--out", str(target), "-q")
        assert code == 2 and "pass --force" in err and (tmp / name).read_text() == "keep", name
    (tmp / "plots").mkdir()
    (tmp / "plots" / "alpha_bars.png").write_text("keep")
    code, out, err = _cli("analyze", str(tmp / "m.pt"), "--plot", str(tmp / "plots"), "-q")
    assert code == 2 and (tmp / "plots" / "alpha_bars.png").read_text() == "keep"
    code, out, err = _cli("analyze", str(tmp / "m.pt"), "--out", str(tmp / "t.parquet"), "--force", "-q")
    assert code == 0 and spectra.Results.read(tmp / "t.parquet").to_pandas().shape[0] > 0
