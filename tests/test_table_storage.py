"""storage: round trips of every format, atomic writes, unreadable files, and reader errors."""

from __future__ import annotations

import math
import re
import sys

import pandas as pd
import pytest
import torch
from torch import nn

import spectra
from spectra.sinks import StreamingSink
from spectra.table import Results, storage
from spectra.table.schema import Record, layers_frame, records_frame

ATTRS = {"spectra_version": "0.1.0", "normalize": False, "fit": "csn", "analyzers": {"tail": {"method": "csn"}},
         "layer_rules": {}, "source": "test", "run": "007", "nested": {"list": [1, 2.5, "x"], "none": None}}


def _records(step=1, run="007"):
    tags = {"lr": 0.1, "opt": "sgd", "seed": 3}
    return [
        Record(run, step, "0.10", "W", "weight", "esd", "lambda_max", 2.25, None, "ok", "", tags),
        Record(run, step, "0.10", "W", "weight", "esd", "sv", 1.5, 0, "ok", "", tags),
        Record(run, step, "0.10", "W", "weight", "esd", "sv", 0.75, 1, "warn", 'tail, "short"\nsecond line', tags),
        Record(run, step, "0.2", "q", "update", "alignment", "cos", -0.5, None, "ok", "", tags),
        Record.failed(run=run, step=step, layer="0.2", view="", analyzer="capture", message="ValueError: a,b",
                      tags=tags),
    ]


def _layers():
    return layers_frame([
        {"layer": "0.10", "view": "W", "module_type": "Linear", "N": 8, "M": 6, "Q": 8 / 6, "num_matrices": 1,
         "dtype": "float32", "skip_reason": None},
        {"layer": "0.10.bias", "view": None, "module_type": "Linear", "N": None, "M": None, "Q": None,
         "num_matrices": None, "dtype": "float32", "skip_reason": "1-D parameter (bias/norm)"},
        {"layer": "0.2", "view": "q", "module_type": "MultiheadAttention", "N": 8, "M": 8, "Q": 1.0,
         "num_matrices": 1, "dtype": "bfloat16", "skip_reason": None},
    ])


def _no_temp_files(directory):
    return [p.name for p in directory.rglob("*") if ".tmp" in p.name]


# ---------------------------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_file_round_trip_keeps_rows_dtypes_attrs_and_layers(tmp_path, fmt):
    frame = records_frame(_records())
    write, read = {"parquet": (storage.write_parquet, storage.read_parquet),
                   "csv": (storage.write_csv, storage.read_csv)}[fmt]
    path = write(tmp_path / f"t.{fmt}", frame, ATTRS, _layers())
    assert path == tmp_path / f"t.{fmt}"
    back = read(path)
    pd.testing.assert_frame_equal(back.frame, frame)
    assert back.attrs == ATTRS
    pd.testing.assert_frame_equal(back.layers, _layers())
    # read_table dispatches on the suffix to the same reader
    again = storage.read_table(path)
    pd.testing.assert_frame_equal(again.frame, frame)
    assert again.attrs == ATTRS


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_file_round_trip_of_an_empty_table(tmp_path, fmt):
    frame = records_frame([])
    write, read = {"parquet": (storage.write_parquet, storage.read_parquet),
                   "csv": (storage.write_csv, storage.read_csv)}[fmt]
    back = read(write(tmp_path / f"e.{fmt}", frame, {}, layers_frame([])))
    pd.testing.assert_frame_equal(back.frame, frame)
    assert back.attrs == {} and len(back.layers) == 0


def test_csv_keeps_string_columns_verbatim(tmp_path):
    """Text that looks like numbers, missing values or CSV syntax comes back as written."""
    names = ["007", "0.10", "1e3", "NA", "", "null", "a,b", 'q"uote', "x\r\ny"]
    recs = [Record(n or "r", i, n, n, "weight", "esd", "m", float(i), None, "ok", n) for i, n in enumerate(names)]
    frame = records_frame(recs)
    back = storage.read_csv(storage.write_csv(tmp_path / "s.csv", frame, {}, layers_frame([])))
    pd.testing.assert_frame_equal(back.frame, frame)
    assert back.frame["layer"].tolist() == names


def test_csv_without_sidecar_reads_with_empty_attrs(tmp_path):
    frame = records_frame(_records())[["run", "step", "layer", "view", "matrix", "analyzer", "metric", "index",
                                       "value", "status", "message"]]
    frame = frame.assign(run="r", layer="fc", view="W")
    frame.to_csv(tmp_path / "plain.csv", index=False)
    back = storage.read_csv(tmp_path / "plain.csv")
    assert back.attrs == {} and len(back.layers) == 0
    assert back.frame["step"].tolist() == frame["step"].tolist()
    assert back.frame["value"].iloc[0] == 2.25 and math.isnan(back.frame["value"].iloc[4])


def _stream(log_dir, batches, attrs=ATTRS, layers=None):
    sink = StreamingSink(log_dir, attrs=attrs, layers=_layers() if layers is None else layers)
    for step, recs in batches:
        sink.spectra_log_records(records=recs, step=step, run=recs[0].run if recs else "007")
    return sink


def test_log_dir_round_trip_keeps_rows_dtypes_attrs_and_layers(tmp_path):
    log = tmp_path / "log"
    first, second = _records(step=0), _records(step=3)
    _stream(log, [(3, second), (0, first)])  # written out of order: read back in step order
    back = storage.read_log_dir(log)
    pd.testing.assert_frame_equal(back.frame, records_frame(first + second))
    assert {k: back.attrs[k] for k in ATTRS} == ATTRS
    pd.testing.assert_frame_equal(back.layers, _layers())
    via_results = Results.read(log)
    pd.testing.assert_frame_equal(via_results.to_pandas(), records_frame(first + second), check_flags=False)


def test_log_dir_rows_follow_the_layers_table_within_a_step(tmp_path):
    log = tmp_path / "log"
    recs = _records(step=2)
    late, early = [r for r in recs if r.layer == "0.2"], [r for r in recs if r.layer == "0.10"]
    _stream(log, [(2, late), (2, early)])  # two parts of one step (e.g. two ranks), layers interleaved
    back = storage.read_log_dir(log).frame
    assert back["layer"].tolist() == ["0.10"] * 3 + ["0.2"] * 2


def test_empty_batch_writes_no_part(tmp_path):
    log = tmp_path / "log"
    _stream(log, [(0, [])])
    assert not list(log.rglob("*.parquet"))
    back = storage.read_log_dir(log)
    assert len(back.frame) == 0 and list(back.frame.columns) == list(records_frame([]).columns)
    assert back.attrs["run"] == "007"


def test_results_round_trip_of_a_real_analysis(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4))
    res = spectra.analyze(model, tags={"lr": 0.1}, analyzer_options={"esd": {"spectrum": True}})
    for name in ("r.parquet", "r.csv"):
        path = res.to_parquet(tmp_path / name) if name.endswith("parquet") else res.to_csv(tmp_path / name)
        back = Results.read(path)
        pd.testing.assert_frame_equal(back.to_pandas(), res.to_pandas())
        assert back.attrs == res.attrs
        pd.testing.assert_frame_equal(back.layers, res.layers)


# ---------------------------------------------------------------------------------------------- atomic writes
class _HalfThenFail:
    """A file object that writes half of the first chunk it gets, then fails like a full disk."""

    def __init__(self, fh):
        self._fh = fh

    def write(self, data):
        self._fh.write(data[: max(1, len(data) // 2)])
        self._fh.flush()
        raise OSError("No space left on device")

    def __getattr__(self, name):
        return getattr(self._fh, name)


def _break_atomic_writes(monkeypatch):
    """Make every writer's callback fail half-way, wherever storage's modules hold ``atomic_write``."""
    real = storage.atomic_write

    def flaky(path, write, **kwargs):
        return real(path, lambda fh: write(_HalfThenFail(fh)), **kwargs)

    patched = 0
    for name, module in list(sys.modules.items()):
        if (name == "spectra.table.storage" or name.startswith("spectra.table.storage.")) and getattr(
                module, "atomic_write", None) is real:
            monkeypatch.setattr(module, "atomic_write", flaky)
            patched += 1
    assert patched


def test_atomic_write_failure_keeps_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "f.bin"
    storage.atomic_write(path, lambda fh: fh.write(b"old contents"))
    for exc in (RuntimeError("boom"), KeyboardInterrupt()):
        def broken(fh, exc=exc):
            fh.write(b"new, half")
            raise exc

        with pytest.raises(type(exc)):
            storage.atomic_write(path, broken)
        assert path.read_bytes() == b"old contents"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]


def test_atomic_write_text_mode_and_new_file(tmp_path):
    path = tmp_path / "t.txt"
    with pytest.raises(ValueError):
        storage.atomic_write(path, lambda fh: (fh.write("partial"), int("x")), binary=False)
    assert not path.exists() and list(tmp_path.iterdir()) == []
    storage.atomic_write(path, lambda fh: fh.write("é\r\n"), binary=False)
    assert path.read_bytes() == "é\r\n".encode()


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_failed_rewrite_leaves_the_old_table(tmp_path, monkeypatch, fmt):
    write, read = {"parquet": (storage.write_parquet, storage.read_parquet),
                   "csv": (storage.write_csv, storage.read_csv)}[fmt]
    old = records_frame(_records(step=1))
    path = write(tmp_path / f"t.{fmt}", old, ATTRS, _layers())
    files = sorted(p.name for p in tmp_path.iterdir())
    _break_atomic_writes(monkeypatch)
    with pytest.raises(OSError, match="No space left"):
        write(path, records_frame(_records(step=9)), {"other": True}, layers_frame([]))
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == files
    assert _no_temp_files(tmp_path) == []
    back = read(path)
    pd.testing.assert_frame_equal(back.frame, old)
    assert back.attrs == ATTRS


def test_failed_part_leaves_no_part_and_no_temp(tmp_path, monkeypatch):
    log = tmp_path / "log"
    sink = _stream(log, [(0, _records(step=0))])
    before = sorted(p.relative_to(log) for p in log.rglob("*") if p.is_file())
    _break_atomic_writes(monkeypatch)
    with pytest.raises(OSError, match="No space left"):
        sink.spectra_log_records(records=_records(step=5), step=5, run="007")
    monkeypatch.undo()
    assert sorted(p.relative_to(log) for p in log.rglob("*") if p.is_file()) == before
    assert _no_temp_files(log) == []
    assert storage.read_log_dir(log).frame["step"].unique().tolist() == [0]


# ---------------------------------------------------------------------------------------------- unreadable files
def test_unreadable_part_is_skipped_with_a_warning_naming_it(tmp_path):
    log = tmp_path / "log"
    _stream(log, [(0, _records(step=0)), (2, _records(step=2)), (4, _records(step=4))])
    parts = sorted((log / "records").glob("*.parquet"))
    assert len(parts) == 3
    broken = next(p for p in parts if "-00000002-" in p.name)
    broken.write_bytes(broken.read_bytes()[:40])
    with pytest.warns(RuntimeWarning, match=re.escape(broken.name)):
        back = storage.read_log_dir(log)
    assert back.frame["step"].unique().tolist() == [0, 4]
    pd.testing.assert_frame_equal(back.frame, records_frame(_records(step=0) + _records(step=4)))


def test_empty_part_file_is_skipped_with_a_warning(tmp_path):
    log = tmp_path / "log"
    _stream(log, [(0, _records(step=0)), (1, _records(step=1))])
    victim = sorted((log / "records").glob("*.parquet"))[-1]
    victim.write_bytes(b"")
    with pytest.warns(RuntimeWarning, match=re.escape(victim.name)):
        back = storage.read_log_dir(log)
    assert back.frame["step"].unique().tolist() == [0]


def test_unreadable_meta_is_skipped_with_a_warning_naming_it(tmp_path):
    log = tmp_path / "log"
    _stream(log, [(0, _records(step=0))])
    (meta,) = list(log.rglob("*.json"))
    meta.write_text("{not json")
    with pytest.warns(RuntimeWarning, match=re.escape(meta.name)):
        back = storage.read_log_dir(log)
    assert len(back.frame) == len(_records())
    assert "fit" not in back.attrs and len(back.layers) == 0


# ---------------------------------------------------------------------------------------------- errors
def test_read_table_errors(tmp_path):
    missing = tmp_path / "nope.parquet"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        storage.read_table(missing)
    other = tmp_path / "results.txt"
    other.write_text("hello")
    with pytest.raises(ValueError, match=r"results\.txt: expected \.parquet, \.csv or a log directory"):
        storage.read_table(other)
    with pytest.raises(FileNotFoundError):
        Results.read(missing)


def test_read_table_of_a_log_dir(tmp_path):
    log = tmp_path / "log"
    _stream(log, [(0, _records(step=0))])
    pd.testing.assert_frame_equal(storage.read_table(log).frame, records_frame(_records(step=0)))
