"""The ``snn-compile`` command: targets, --check, pipeline flags, and one-line errors (exit 2,
nothing left behind in --out)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from snncompile.data import save_npz
from snncompile.tools.cli import main

import models

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the installed console script, as a user would."""
    exe = Path(sys.executable).with_name("snn-compile")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"}, timeout=300)


def assert_bad_input(res: subprocess.CompletedProcess, *words: str) -> None:
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "Traceback" not in res.stderr
    for w in words:
        assert w in lines[0], lines[0]


def test_target_ir_writes_the_ir(digits_cnn_onnx: Path, tmp_path: Path) -> None:
    res = cli(str(digits_cnn_onnx), "--target", "ir", "--out", str(tmp_path / "o"))
    assert res.returncode == 0, res.stderr
    assert "Conv2d" in res.stdout and "Dense" in res.stdout
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [".snn-compile", "ir.json",
                                                                  "ir.npz"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dir left


def test_check_against_onnxruntime(digits_cnn_onnx: Path, tmp_path: Path, digits_test) -> None:
    save_npz(tmp_path / "d.npz", digits_test.x[:50], digits_test.y[:50])
    res = cli(str(digits_cnn_onnx), "--check", "--data", str(tmp_path / "d.npz"))
    assert res.returncode == 0, res.stderr
    assert "50 samples" in res.stdout and "OK" in res.stdout


def test_gpu_target_report(digits_cnn_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    assert main([str(digits_cnn_onnx), "--target", "gpu", "--dataset", "digits", "--timesteps",
                 "16", "--eval-samples", "200", "--out", str(out), "--device", "cpu"]) == 0
    report = json.loads((out / "report.json").read_text())
    for key in ("model", "target", "timesteps", "ann_accuracy", "snn_accuracy",
                "accuracy_by_timestep", "spikes_per_sample", "synaptic_ops_per_sample", "layers",
                "samples", "seconds", "versions"):
        assert key in report, key
    assert report["samples"] == 200 and report["timesteps"] == 16
    assert len(report["accuracy_by_timestep"]) == 16
    assert report["snn_accuracy"] == report["accuracy_by_timestep"]["16"]
    assert report["snn_accuracy"] > 0.9
    assert {"name", "op", "neurons", "threshold", "firing_rate"} <= set(report["layers"][0])
    for png in ("accuracy_vs_timestep.png", "firing_rate.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


def test_print_pipeline_and_list_passes() -> None:
    res = cli("--target", "gpu", "--norm", "max", "--alpha", "0.25", "--print-pipeline")
    assert res.returncode == 0, res.stderr
    first = res.stdout.splitlines()[0]
    assert first.startswith("fold-batchnorm,remove-identity,fuse-activations,maxpool-current,"
                            "balance-thresholds")
    assert "norm=max" in first and "alpha=0.25" in first
    res = cli("--target", "gpu", "--neuron", "bistable", "--bistable-period", "3",
              "--print-pipeline")
    assert "select-neurons{model=bistable,period=3}" in res.stdout.splitlines()[0]
    res = cli("--target", "gpu", "--neuron", "sigma-delta", "--sd-delta", "0.125",
              "--print-pipeline")
    assert "select-neurons{model=sigma-delta,delta=0.125}" in res.stdout.splitlines()[0]
    res = cli("--list-passes")
    assert res.returncode == 0 and "fold-batchnorm" in res.stdout


def test_pass_from_module_on_the_command_line(digits_cnn_onnx: Path, tmp_path: Path) -> None:
    (tmp_path / "my_passes.py").write_text(
        "def zero_readout_bias(graph, ctx):\n"
        "    g = graph.copy()\n"
        "    op = g.op(g.readout_name)\n"
        "    g.replace(g.readout_name, bias=op.bias * 0)\n"
        "    return g\n")
    out = tmp_path / "o"
    res = cli(str(digits_cnn_onnx), "--target", "ir", "--pass", "my_passes:zero_readout_bias",
              "--out", str(out), "--dump-ir-after", "zero_readout_bias", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    from snncompile.ir import load

    g = load(out)
    assert not g.op(g.readout_name).bias.any()
    assert (out / "ir-after" / "04-zero-readout-bias" / "ir.json").exists()


# ------------------------------------------------------------------------------ bad input
def test_missing_file(tmp_path: Path) -> None:
    out = tmp_path / "o"
    assert_bad_input(cli(str(tmp_path / "nope.onnx"), "--out", str(out)), "not found", "nope.onnx")
    assert not out.exists()


def test_not_an_onnx_file(tmp_path: Path) -> None:
    f = tmp_path / "model.onnx"
    f.write_text("hello, I am text\n")
    assert_bad_input(cli(str(f), "--target", "ir", "--out", str(tmp_path / "o")), "not an ONNX")
    assert not (tmp_path / "o").exists()


def test_corrupt_protobuf(digits_cnn_onnx: Path, tmp_path: Path) -> None:
    f = tmp_path / "cut.onnx"
    f.write_bytes(digits_cnn_onnx.read_bytes()[:3000])
    assert_bad_input(cli(str(f), "--target", "ir", "--out", str(tmp_path / "o")), "cut.onnx")
    assert not (tmp_path / "o").exists()


def test_unsupported_op(tmp_path: Path) -> None:
    path = models.export(models.sigmoid_cnn(), tmp_path / "sig.onnx")
    res = cli(str(path), "--target", "ir", "--out", str(tmp_path / "o"))
    assert_bad_input(res, "unsupported ops: Sigmoid not at the graph output ×1 (first at node",
                     "supported:", "Conv")
    assert not (tmp_path / "o").exists()


def test_data_does_not_fit_the_model(digits_cnn_onnx: Path, tmp_path: Path) -> None:
    save_npz(tmp_path / "wrong.npz", np.zeros((10, 3, 32, 32), np.float32), np.zeros(10, np.int64))
    out = tmp_path / "o"
    res = cli(str(digits_cnn_onnx), "--target", "gpu", "--calibration", str(tmp_path / "wrong.npz"),
              "--eval", str(tmp_path / "wrong.npz"), "--out", str(out))
    assert_bad_input(res, "does not fit", "wrong.npz")
    assert not out.exists()


def test_wrong_data_file(digits_cnn_onnx: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    np.savez(bad, images=np.zeros((4, 1, 8, 8), np.float32))
    res = cli(str(digits_cnn_onnx), "--target", "gpu", "--eval", str(bad),
              "--out", str(tmp_path / "o"))
    assert_bad_input(res, "bad.npz")
    assert not (tmp_path / "o").exists()


def test_nan_weights(tmp_path: Path) -> None:
    import onnx
    from onnx import numpy_helper

    path = models.export(models.mlp(), tmp_path / "m.onnx")
    m = onnx.load(str(path))
    init = m.graph.initializer[0]
    arr = numpy_helper.to_array(init).copy()
    arr.flat[0] = np.nan
    init.CopyFrom(numpy_helper.from_array(arr, init.name))
    onnx.save(m, str(path))
    assert_bad_input(cli(str(path), "--target", "ir", "--out", str(tmp_path / "o")), "NaN")
    assert not (tmp_path / "o").exists()


def test_failure_after_output_started_leaves_nothing(digits_cnn_onnx: Path,
                                                     tmp_path: Path) -> None:
    """The eval file has no labels: found only when the gpu target evaluates, after the IR was
    written into the temporary directory."""
    save_npz(tmp_path / "nolabels.npz", np.zeros((8, 1, 8, 8), np.float32))
    out = tmp_path / "o"
    res = cli(str(digits_cnn_onnx), "--target", "gpu", "--eval", str(tmp_path / "nolabels.npz"),
              "--out", str(out))
    assert res.returncode == 2, res.stderr
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".o.tmp")]


@pytest.mark.parametrize("args, words", [
    (["--timesteps", "0"], ["timesteps"]),
    (["--weight-bits", "40"], ["weight_bits"]),
])
def test_bad_options(args: list[str], words: list[str], digits_cnn_onnx: Path,
                     tmp_path: Path) -> None:
    res = cli(str(digits_cnn_onnx), "--target", "gpu", "--dataset", "digits", *args,
              "--out", str(tmp_path / "o"))
    assert_bad_input(res, *words)


def test_warnings_after_a_run_skip_dependencies_import_notes(monkeypatch, capsys) -> None:
    """networkx (imported by Lava) warns "pandas not found" as an ImportWarning, which Python
    hides by default; the CLI shows the other warnings of a successful run, not that one."""
    import warnings

    from snncompile.tools import cli as cli_module

    def run(a: object) -> int:
        warnings.warn("pandas not found, skipping conversion test.", ImportWarning)
        warnings.warn("overflow encountered in cast", RuntimeWarning)
        return 0

    monkeypatch.setattr(cli_module, "run", run)
    assert main(["model.onnx", "--target", "ir"]) == 0
    err = capsys.readouterr().err
    assert "overflow encountered" in err and "pandas" not in err
