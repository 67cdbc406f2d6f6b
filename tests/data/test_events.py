"""Event-camera input (issue 21): the three file formats, binning into frames, one frame per
step on the gpu simulator and on Lava (spike-exact with the torch reference), and one-line
refusals of wrong files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import snncompile
from snncompile import data, events
from snncompile.aedat4 import read_aedat4, write_aedat4
from snncompile.ir import CompileError
from snncompile.tools.cli import main

import event_data


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("events")
    event_data.trained_onnx(root / "bar.onnx")
    for fmt in ("npy", "bin", "aedat4"):
        event_data.write_folder(root / fmt / "train", 10, fmt, seed=5)
        event_data.write_folder(root / fmt / "test", 5, fmt, seed=6)
    return root


def _ev(x, y, t, p):
    return events._events(np.asarray(x), np.asarray(y), np.asarray(t), np.asarray(p))


def test_binning_by_time_and_by_count() -> None:
    ev = _ev([0, 1, 1, 0, 2], [0, 0, 1, 1, 0], [0, 10, 20, 30, 100], [1, 0, 1, 1, 0])
    by_time = events.bin_events(ev, (2, 2, 3), 2, "time")  # bins [0, 50) and [50, 100]
    assert by_time.shape == (2, 2, 2, 3)
    assert by_time[0].sum() == 2 * 4 and by_time[1].sum() == 2 * 1  # × T
    assert by_time[1, 0, 0, 2] == 2  # the OFF event at t = 100 in the last bin
    by_count = events.bin_events(ev, (2, 2, 3), 2, "count")  # events 0, 1, 2 | 3, 4
    assert by_count[0].sum() == 2 * 3 and by_count[1].sum() == 2 * 2
    assert by_count[0, 1, 1, 1] == 2 and by_count[1, 1, 1, 0] == 2
    total = events.bin_events(ev, (2, 2, 3), None)
    np.testing.assert_array_equal(events.summed(by_time[None])[0], total)
    np.testing.assert_array_equal(events.summed(by_count[None])[0], total)
    assert events.bin_events(ev, (1, 2, 3), None).sum() == 5  # one channel: polarities summed


def test_three_formats_read_the_same_events(folders: Path) -> None:
    x, y = event_data.arrays(5, seed=6, frames=4)
    for fmt in ("npy", "bin", "aedat4"):
        src = data.open_data(folders / fmt / "test",
                             events=events.EventBinning((2, 12, 12), 4, "time"))
        assert len(src) == 20
        xs, ys = src.first(20)
        np.testing.assert_array_equal(xs, x)
        np.testing.assert_array_equal(ys, y)


def test_nmnist_overflow_events_shift_later_timestamps(tmp_path: Path) -> None:
    path = tmp_path / "o.bin"
    events.write_bin(path, [1, 2], [3, 4], [5, 6], [1, 0])
    raw = path.read_bytes()
    path.write_bytes(raw[:5] + bytes([0, 240, 0, 0, 0]) + raw[5:])  # an overflow marker
    ev = events.read_bin(path)
    assert ev["x"].tolist() == [1, 2] and ev["t"].tolist() == [5, 6 + 2 ** 13]
    assert ev["p"].tolist() == [1, 0]


def test_aedat4_round_trip_in_packets(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 10_000
    x, y = rng.integers(0, 346, n), rng.integers(0, 260, n)
    t, p = np.sort(rng.integers(0, 10 ** 7, n)), rng.integers(0, 2, n)
    write_aedat4(tmp_path / "r.aedat4", x, y, t, p, size=(346, 260), packet=3000)
    ev = read_aedat4(tmp_path / "r.aedat4")
    for k, v in (("x", x), ("y", y), ("t", t), ("p", p)):
        np.testing.assert_array_equal(ev[k], v)


@pytest.mark.parametrize("name, content, words", [
    ("a.npy", None, ["not an event array", "x, y, t, p"]),
    ("a.bin", b"\x00" * 7, ["7 bytes", "40-bit"]),
    ("a.aedat4", b"#!AER-DAT3.1\r\n" + b"\x00" * 20, ["AEDAT 4.0 version line"]),
])
def test_wrong_event_file_is_one_line(folders: Path, tmp_path: Path, capsys, name: str,
                                      content: bytes | None, words: list[str]) -> None:
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(folders / "npy" / "test", bad)
    path = bad / "1_left" / name
    if content is None:
        np.save(path, np.zeros(3, dtype=[("a", "i4"), ("b", "i4")]))
    else:
        path.write_bytes(content)
    out = tmp_path / "o"
    rc = main([str(folders / "bar.onnx"), "--eval", str(bad), "-T", "4", "--out", str(out),
               "--device", "cpu", "--workers", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and not out.exists(), err
    assert str(path) in err[0] and all(w in err[0] for w in words), err[0]


def test_event_outside_the_sensor_is_one_line(folders: Path, tmp_path: Path, capsys) -> None:
    d = tmp_path / "big" / "0_right"
    d.mkdir(parents=True)
    events.write_npy(d / "0.npy", [3, 12], [0, 0], [0, 5], [1, 1])
    rc = main([str(folders / "bar.onnx"), "--eval", str(tmp_path / "big"), "-T", "4",
               "--out", str(tmp_path / "o"), "--device", "cpu", "--workers", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "event 1 at (x=12, y=0)" in err[0] and "12×12" in err[0]


def test_event_folder_needs_the_input_shape_through_the_api(folders: Path) -> None:
    with pytest.raises(CompileError, match="input shape"):
        data.open_data(folders / "npy" / "train")


def test_constant_frames_equal_a_static_input(folders: Path) -> None:
    """Frames that repeat one image give the static run's spikes (the same current each step)."""
    x, _ = event_data.arrays(2, seed=3)
    snn = snncompile.convert(str(folders / "bar.onnx"), target="gpu", calibration=x,
                             no_tune=True)[0]
    from snncompile.backends.gpu import compile as gpu_compile

    net = gpu_compile(snn, snncompile.CompileOptions(device="cpu"))
    a = net.run(x, 6, record=True, progress=False)
    b = net.run(np.repeat(x[:, None], 6, axis=1), 6, record=True, progress=False)
    assert b.input_frames and not a.input_frames
    for k in a.spike_trains:
        np.testing.assert_array_equal(a.spike_trains[k], b.spike_trains[k])
    np.testing.assert_array_equal(a.input_ops, b.input_ops)
    with pytest.raises(CompileError, match="6 frames per sample"):
        net.run(np.repeat(x[:, None], 6, axis=1), 5, progress=False)


def test_cli_gpu_on_event_folders(folders: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "o"
    assert main([str(folders / "bar.onnx"), "--target", "gpu", "--calibration",
                 str(folders / "npy" / "train"), "--eval", str(folders / "bin" / "test"),
                 "--timesteps", "8", "--out", str(out), "--device", "cpu",
                 "--workers", "0"]) == 0
    text = capsys.readouterr().out
    assert "frames   SNN acc" in text
    report = json.loads((out / "report.json").read_text())
    assert report["input"].startswith("event frames") and report["samples"] == 20
    assert report["ann_accuracy"] >= 0.9 and report["snn_accuracy"] >= 0.8, report
    assert report["energy"]["per_sample"]["input_ops"] > 0
    assert report["options"]["event_binning"] == "time"


@pytest.mark.lava
@pytest.mark.timeout(240)
def test_cli_loihi_on_event_folders_is_spike_exact(folders: Path, tmp_path: Path,
                                                   capsys) -> None:
    out = tmp_path / "o"
    assert main([str(folders / "bar.onnx"), "--target", "loihi", "--calibration",
                 str(folders / "aedat4" / "train"), "--eval", str(folders / "aedat4" / "test"),
                 "--timesteps", "8", "--eval-samples", "4", "--event-binning", "count",
                 "--out", str(out), "--workers", "0"]) == 0
    text = capsys.readouterr().out
    assert "spike-exact vs GPU loihi mode: yes" in text
    report = json.loads((out / "report.json").read_text())
    assert report["spike_exact"] is True and report["gpu_agreement"] == 1.0
    assert report["input"].startswith("event frames") and report["samples"] == 4


def test_temporal_finetuning_trains_on_frames(folders: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "o"
    assert main([str(folders / "bar.onnx"), "--target", "gpu", "--calibration",
                 str(folders / "npy" / "train"), "--eval", str(folders / "npy" / "test"),
                 "-T", "4", "--no-tune", "--finetune", "temporal-consistency",
                 "--finetune-epochs", "2", "--out", str(out), "--device", "cpu",
                 "--workers", "0"]) == 0
    report = json.loads((out / "report.json").read_text())
    ft = report["finetune"]
    assert ft["samples"] == 40 and ft["timesteps"] == 4
    assert set(ft["accuracy_before"]) == set(ft["accuracy_after"]) == {"1", "2", "3", "4"}
    from snncompile import driver
    from snncompile.options import CompileOptions, FinetuneOptions

    def data_for(method: str):  # the driver's fine-tuning set for the method
        c = driver.Compilation(model=folders / "bar.onnx", options=CompileOptions(timesteps=4),
                               data=driver.DataSpec(calibration=str(folders / "npy" / "train"),
                                                    workers=0),
                               finetune=FinetuneOptions(finetune=method))
        c.snn = snncompile.load_onnx(folders / "bar.onnx")
        return driver.training_data(c, None)

    assert data_for("temporal-consistency").x.shape == (40, 4, 2, 12, 12)  # frames
    assert data_for("distill").x.shape == (40, 2, 12, 12)  # summed


def test_eval_only_calibrates_on_its_summed_frames(folders: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    assert main([str(folders / "bar.onnx"), "--eval", str(folders / "npy" / "test"), "-T", "4",
                 "--out", str(out), "--device", "cpu", "--workers", "0"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["input"].startswith("event frames") and report["samples"] == 20
