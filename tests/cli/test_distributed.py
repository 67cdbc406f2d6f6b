"""``torchrun --nproc-per-node 2 -m snncompile`` (gloo, CPU) against the single-process run
(``--no-tune``: the tuner's search is time-budgeted, so two runs may tune differently):
the same report (accuracy by timestep, spike counts, thresholds) for ``--target gpu`` and
``--target loihi``, ``--finetune`` within 0.5 percentage points; rank 1 writes nothing."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from snncompile.tools.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([str(exe), "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
                           "--master-port", str(_free_port()), "-m", "snncompile", *args],
                          capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)


def _both(tmp_path: Path, args: list[str]) -> tuple[dict, dict]:
    """(single-process report, 2-process report); checks that only --out was written."""
    one, two = tmp_path / "one" / "o", tmp_path / "two" / "o"
    assert main([*args, "--out", str(one)]) == 0
    res = torchrun(*args, "--out", str(two))
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("wrote ") == 1  # rank 0 only
    assert sorted(p.name for p in two.parent.iterdir()) == ["o"]  # no temporary leftovers
    return (json.loads((one / "report.json").read_text()),
            json.loads((two / "report.json").read_text()))


def _same(a: dict, b: dict) -> None:
    for k in ("samples", "accuracy_by_timestep", "ann_accuracy", "spikes_per_sample",
              "synaptic_ops_per_sample"):
        assert a[k] == b[k], k
    for la, lb in zip(a["layers"], b["layers"], strict=True):
        assert la["threshold"] == lb["threshold"], la["name"]
        assert la["spikes_per_sample"] == lb["spikes_per_sample"], la["name"]
        assert la["firing_rate"] == lb["firing_rate"], la["name"]


@pytest.mark.timeout(400)
def test_torchrun_gpu_target_equals_one_process(digits_cnn_onnx: Path, tmp_path: Path) -> None:
    """512 calibration samples (2 batches: one per rank, histograms all-reduced), 200 evaluation
    samples in 4 batches of 64 (two per rank, all-gathered)."""
    a, b = _both(tmp_path, [str(digits_cnn_onnx), "--target", "gpu", "--dataset", "digits",
                            "--timesteps", "6", "--eval-samples", "200", "--batch-size", "64",
                            "--device", "cpu", "--no-tune"])
    _same(a, b)
    assert b["processes"] == 2 and a["processes"] == 1


@pytest.mark.lava
@pytest.mark.timeout(400)
def test_torchrun_loihi_target_equals_one_process(digits_cnn_onnx: Path, tmp_path: Path) -> None:
    """Each rank runs its own Lava network on 2 of the 4 samples, spike-exact against its own
    torch Loihi reference."""
    a, b = _both(tmp_path, [str(digits_cnn_onnx), "--target", "loihi", "--dataset", "digits",
                            "--timesteps", "3", "--eval-samples", "4", "--device", "cpu",
                            "--no-tune"])
    _same(a, b)
    assert a["spike_exact"] is True and b["spike_exact"] is True
    assert [r["samples"] for r in b["lava_ranks"]] == [2, 2]
    assert all(r["spike_exact"] for r in b["lava_ranks"])
    assert b["gpu_agreement"] == a["gpu_agreement"] == 1.0


@pytest.mark.timeout(400)
def test_torchrun_finetune_within_half_a_point(digits_cnn_onnx: Path, tmp_path: Path) -> None:
    """The same global batch of 64 split over 2 ranks, gradients summed: accuracy within 0.5 pp
    of the single-process run (float summation order differs, nothing else)."""
    a, b = _both(tmp_path, [str(digits_cnn_onnx), "--target", "gpu", "--dataset", "digits",
                            "--timesteps", "4", "--eval-samples", "200", "--device", "cpu",
                            "--no-tune",
                            "--finetune", "temporal-consistency", "--finetune-epochs", "1",
                            "--finetune-samples", "256", "--finetune-lr", "3e-3"])
    assert a["finetune"]["accuracy_before"] == b["finetune"]["accuracy_before"]
    assert abs(a["snn_accuracy"] - b["snn_accuracy"]) <= 0.005
    la = a["finetune"]["steps"][0]["epochs"][0]["loss"]
    lb = b["finetune"]["steps"][0]["epochs"][0]["loss"]
    assert abs(la - lb) <= 1e-4 * abs(la)
