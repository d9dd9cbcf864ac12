"""Scalar sinks: a few key metrics, grouped by metric, to TensorBoard-like writers, W&B (offline), MLflow (a local
file store) and any callable; a sink whose backend is missing names the extra to install."""

from __future__ import annotations

import math
import sys

import pytest
import torch
from torch import nn

import spectra
from spectra.sinks import CallableSink, MLflowSink, ScalarWriterSink, WandbSink
from spectra.table.schema import Record


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, 64), nn.Tanh(), nn.Linear(64, 32))


def _train(plugins, steps=4, every=2, **kw):
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = spectra.SpectraMonitor(model, opt, every=every, plugins=plugins, **kw)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 32, generator=g), torch.randn(64, 32, generator=g)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    mon.detach()
    return mon


def _value(mon, step, layer, metric, matrix="weight"):
    df = mon.to_pandas()
    q = df[(df.step == step) & (df.layer == layer) & (df.metric == metric) & (df.matrix == matrix) & df["index"].isna()]
    return float(q["value"].iloc[0])


class Writer:
    def __init__(self):
        self.calls = []

    def add_scalar(self, tag, value, step):
        self.calls.append((tag, value, step))


def test_scalar_writer_defaults_to_a_few_metrics_grouped_by_metric():
    w = Writer()
    mon = _train([ScalarWriterSink(w)])
    tags = {t for t, _, _ in w.calls}
    assert tags == {f"{m}/{layer}" for m in spectra.scalar_sinks.DEFAULT_METRICS for layer in ("0", "2")}
    assert sorted({s for _, _, s in w.calls}) == [0, 2, 4]
    assert ("alpha/2", _value(mon, 4, "2", "alpha"), 4) in w.calls


def test_scalar_writer_is_configurable():
    w = Writer()
    _train([ScalarWriterSink(w, metrics=["update_cos_update_grad", "lambda_max"], tag="{matrix}/{metric}/{layer}",
                             prefix="spectra/")])
    assert {t for t, _, _ in w.calls} == {"spectra/weight/lambda_max/0", "spectra/weight/lambda_max/2",
                                         "spectra/update/cos_update_grad/0", "spectra/update/cos_update_grad/2"}
    everything = Writer()
    _train([ScalarWriterSink(everything, metrics="all")], steps=0)
    assert len({t for t, _, _ in everything.calls}) > 30  # every scalar of the esd and tail analyzers
    with pytest.raises(ValueError, match="not a valid format string.*name, metric, matrix, layer, view, run"):
        ScalarWriterSink(w, tag="{nope}/{layer}")
    with pytest.raises(TypeError, match="add_scalar"):
        ScalarWriterSink(object())
    with pytest.raises(TypeError, match="metrics must be"):
        ScalarWriterSink(w, metrics=3)


def test_views_and_non_finite_values_in_tags():
    recs = [Record("r", 5, "attn.in_proj_weight", "q", "weight", "tail", "alpha", 3.0),
            Record("r", 5, "fc", "W", "weight", "tail", "alpha", math.nan, status="failed"),
            Record("r", 5, "fc", "W", "weight", "esd", "sv", 1.0, index=0)]
    assert spectra.scalar_sinks.scalar_values(recs) == {"alpha/attn.in_proj_weight:q": 3.0}
    assert spectra.scalar_sinks.layer_means(recs) == {"spectra/alpha": 3.0}


def test_callable_sink_gets_a_dict_per_step():
    got = []
    mon = _train([CallableSink(lambda metrics, step: got.append((step, metrics)), metrics=["alpha"])])
    assert [s for s, _ in got] == [0, 2, 4]
    assert got[-1][1] == {"alpha/0": _value(mon, 4, "0", "alpha"), "alpha/2": _value(mon, 4, "2", "alpha")}
    with pytest.raises(TypeError, match="fn must be callable"):
        CallableSink("not callable")


def test_wandb_sink_offline_logs_against_its_own_step_axis(tmp_path, monkeypatch):
    for k, v in {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true",
                 "WANDB_DISABLE_GIT": "true", "WANDB_CONSOLE": "off"}.items():
        monkeypatch.setenv(k, v)
    import wandb

    run = wandb.init(project="spectra-test", dir=str(tmp_path), mode="offline")
    try:
        logged = []
        real_log = run.log
        monkeypatch.setattr(run, "log", lambda data, *a, **k: (logged.append(dict(data)), real_log(data, *a, **k)))
        run.log({"loss": 1.0})  # the trainer's own logging moves W&B's step counter: spectra must not clash
        mon = _train([WandbSink(run, metrics=["alpha", "stable_rank"])])
        ours = [d for d in logged if "spectra/step" in d]
        assert [d["spectra/step"] for d in ours] == [0, 2, 4]
        assert ours[-1]["alpha/0"] == _value(mon, 4, "0", "alpha")
        assert run.summary["stable_rank/2"] == pytest.approx(_value(mon, 4, "2", "stable_rank"))
    finally:
        run.finish()
    with pytest.raises(RuntimeError, match="wandb.init"):
        WandbSink().send({"alpha/0": 1.0}, 0)  # no active run any more


def test_mlflow_sink_logs_steps_to_a_local_file_store(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks for it; nothing leaves tmp_path
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    import mlflow

    with mlflow.start_run() as active:
        mon = _train([MLflowSink(metrics=["alpha"])])
    client = mlflow.MlflowClient()
    hist = client.get_metric_history(active.info.run_id, "alpha/0")
    assert [(m.step, m.value) for m in hist] == [(s, _value(mon, s, "0", "alpha")) for s in (0, 2, 4)]
    run_id = client.create_run(client.create_experiment("by-id")).info.run_id
    _train([MLflowSink(run_id, client=client, metrics=["alpha"], tag="{name}/{layer}:x")], steps=0)
    assert set(client.get_run(run_id).data.metrics) == {"alpha/0_x", "alpha/2_x"}  # ':' is not a valid key


@pytest.mark.parametrize("sink, module", [(WandbSink, "wandb"), (MLflowSink, "mlflow")])
def test_missing_backend_names_the_extra(monkeypatch, sink, module):
    monkeypatch.setitem(sys.modules, module, None)  # as if it were not installed
    with pytest.raises(ImportError, match=rf'{sink.__name__} needs {module}.*pip install "spectra\[integrations\]"'):
        sink()


def test_sinks_are_importable_from_spectra_sinks():
    import spectra.scalar_sinks as ss

    assert spectra.sinks.ScalarWriterSink is ss.ScalarWriterSink
    assert {"StreamingSink", "ScalarWriterSink", "WandbSink", "MLflowSink", "CallableSink"} <= set(spectra.sinks.__all__)
