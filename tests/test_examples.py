"""The examples run as tests, at tiny size."""

import importlib.util
import pathlib


EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_monitor_training_example(tmp_path):
    out = _load("monitor_training").main(["--steps", "20", "--every", "10", "--width", "48", "--out", str(tmp_path)])
    for f in ("records.parquet", "records.csv", "summary.csv", "alpha_hill_vs_step.png", "overlap_heatmap.png",
              "alpha_bars.png", "overlap_top1_vs_step.png", "esd_over_steps.png"):
        assert (out / f).stat().st_size > 0, f
    import spectra

    back = spectra.Results.read(out / "log").to_pandas()
    assert sorted(back.step.unique()) == [0, 10, 20]


def test_analyze_model_example(tmp_path):
    out = _load("analyze_model").main(["--out", str(tmp_path)])
    assert (out / "layers.csv").exists() and (out / "alpha_bars.png").exists()


def test_custom_analyzer_plugin_example():
    wide = _load("custom_analyzer_plugin").main()
    assert len(wide) == 2
    assert (wide["effective_rank"] > 1).all()
    assert (wide["nuclear_norm"] > 0).all()


def test_lightning_callback_example(tmp_path):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = _load("lightning_callback").main(["--steps", "12", "--every", "4", "--width", "32", "--out",
                                                 str(tmp_path)])
    finally:
        torch.set_num_threads(threads)
    import pandas as pd

    table = pd.read_csv(out / "alpha_by_step.csv")
    assert sorted(table["step"].unique()) == [0, 4, 8, 12] and set(table["fit"]) == {"csn"}
    logged = pd.read_csv(next((out / "logs").rglob("metrics.csv")))
    assert sorted(logged.dropna(subset=["spectra/alpha"])["step"].astype(int)) == [0, 4, 8, 12]
    assert (out / "alpha_hill_vs_step.png").stat().st_size > 0


def test_hf_trainer_callback_example(tmp_path):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = _load("hf_trainer_callback").main(["--steps", "8", "--every", "4", "--out", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)
    import pandas as pd

    table = pd.read_csv(out / "alpha_by_step.csv")
    assert sorted(table["step"].unique()) == [0, 4, 8]
    assert "transformer.h.1.mlp.c_fc" in set(table["layer"]) and (out / "checkpoint-4").is_dir()
