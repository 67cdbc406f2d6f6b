"""report.json's energy block (issue 21): exact op counts on a hand-computable network, the
constants and their sources, latency, and the block on the gpu and loihi reports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from snncompile.backends import gpu
from snncompile.evaluate.energy import (
    E_AC_45NM,
    E_MAC_45NM,
    E_NEURON_LOIHI,
    E_SYNOP_LOIHI,
    energy_block,
    step_seconds,
)
from snncompile.ir import Activation, CompileError, Dense, Neuron
from snncompile.options import CompileOptions

from build import chain

CPU = CompileOptions(device="cpu")


def _net():
    """input (2) -> IF layer a (identity, θ = 1) -> readout b (3 outputs, 4 nonzero weights)."""
    a = Dense(weight=np.eye(2, dtype=np.float32), act=Activation(),
              neuron=Neuron(model="if", threshold=np.ones(2), alpha=0.5))
    b = Dense(weight=np.array([[1, 0], [1, 1], [0, 2]], np.float32))
    return chain((2,), ("a", a), ("b", b))


def test_counts_and_energies_by_hand() -> None:
    """x = (1, 0.5), T = 8: unit 0 fires every step (8), unit 1 every other step (4, α = 0.5);
    each feeds 2 synapses of b: 24 synaptic ops; the Input sends 2 nonzero values to 1 synapse
    each per step: 16 input ops; 2 + 3 neurons update 8 times: 40; the ANN: 2·2 + 3·2 = 10
    MACs."""
    g = _net()
    res = gpu.compile(g, CPU).run(np.array([[1.0, 0.5]], np.float32), 8, progress=False)
    e = energy_block(res, g, res.accuracy_by_timestep(np.array([0])), ann_accuracy=1.0)
    p = e["per_sample"]
    assert p["synaptic_ops"] == 24 and p["input_ops"] == 16
    assert p["neuron_updates"] == 40 and p["ann_macs"] == 10
    assert e["ann_layers"] == [{"name": "a", "macs": 4}, {"name": "b", "macs": 6}]
    assert [ly["synaptic_ops"] for ly in e["layers"]] == [24, 0.0]
    assert [ly["neuron_updates"] for ly in e["layers"]] == [16, 24]
    assert p["snn_45nm_J"] == pytest.approx(24 * E_AC_45NM + 16 * E_MAC_45NM)
    assert p["snn_loihi_J"] == pytest.approx(40 * E_SYNOP_LOIHI + 40 * E_NEURON_LOIHI)
    assert p["ann_45nm_J"] == pytest.approx(10 * E_MAC_45NM)
    by_t = e["by_timestep"]
    # spikes: unit 0 at every step, unit 1 at steps 1, 3, 5, 7 (v(0) = 0.5, +0.5 per step)
    assert by_t["synaptic_ops"] == [4, 6, 10, 12, 16, 18, 22, 24]
    assert by_t["input_ops"] == [2 * t for t in range(1, 9)]
    assert by_t["neuron_updates"] == [5 * t for t in range(1, 9)]
    assert by_t["snn_loihi_J"][-1] == pytest.approx(p["snn_loihi_J"])
    assert e["per_step_counts"] == "counted"
    c = e["constants"]
    assert c["ac_45nm_pJ"] == 0.9 and c["mac_45nm_pJ"] == 4.6
    assert c["synop_loihi_pJ"] == 23.6 and c["neuron_update_loihi_pJ"] == 81
    assert "Horowitz" in c["sources"]["45nm"] and "ISSCC 2014" in c["sources"]["45nm"]
    assert "Davies" in c["sources"]["loihi"] and "IEEE Micro" in c["sources"]["loihi"]


def test_latency_given_and_estimated() -> None:
    g = _net()
    res = gpu.compile(g, CPU).run(np.array([[1.0, 0.5]], np.float32), 8, progress=False)
    acc = res.accuracy_by_timestep(np.array([0]))
    given = energy_block(res, g, acc, step_time=1e-3)["latency"]
    assert given["seconds"] == pytest.approx(8e-3) and given["step_source"] == "--step-time"
    est = energy_block(res, g, acc)["latency"]
    # (24 + 16) / 8 ops per step, 5 neurons, one core: 465 + 5·3.5 + 5·8.4 ns
    assert est["step_seconds"] == pytest.approx(465e-9 + 5 * 3.5e-9 + 5 * 8.4e-9)
    assert step_seconds(0, 2048) == pytest.approx(465e-9 + 1024 * 8.4e-9)  # two cores
    assert "Davies" in est["step_source"]


def test_frames_count_input_ops_per_frame() -> None:
    """One frame per step: input ops count the nonzero values of each frame."""
    g = _net()
    x = np.zeros((1, 4, 2), np.float32)
    x[0, :, 0] = 1.0
    x[0, 1, 1] = 2.0
    res = gpu.compile(g, CPU).run(x, 4, progress=False)
    assert res.input_ops[0] == 5 and res.step_input_ops.tolist() == [1, 2, 1, 1]


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_step_time_is_refused(bad: float) -> None:
    with pytest.raises(CompileError, match="step_time"):
        CompileOptions(step_time=bad)


def test_gpu_report_has_the_energy_block(digits_cnn_onnx: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture) -> None:
    from snncompile.tools.cli import main

    out = tmp_path / "o"
    assert main([str(digits_cnn_onnx), "--target", "gpu", "--dataset", "digits", "-T", "8",
                 "--eval-samples", "40", "--out", str(out), "--device", "cpu", "--no-tune",
                 "--step-time", "0.001"]) == 0
    text = capsys.readouterr().out
    assert "energy/sample (estimates): SNN" in text and "MACs" in text
    report = json.loads((out / "report.json").read_text())
    e = report["energy"]
    assert e["per_sample"]["synaptic_ops"] == pytest.approx(report["synaptic_ops_per_sample"])
    assert e["per_sample"]["ann_macs"] > 0 and e["per_sample"]["input_ops"] > 0
    assert len(e["by_timestep"]["snn_loihi_J"]) == 8
    assert e["latency"]["seconds"] == pytest.approx(8e-3)
    assert (out / "accuracy_vs_energy.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.lava
@pytest.mark.timeout(180)
def test_loihi_report_has_the_energy_block(digits_cnn_onnx: Path, tmp_path: Path) -> None:
    from snncompile.tools.cli import main

    out = tmp_path / "o"
    assert main([str(digits_cnn_onnx), "--target", "loihi", "--dataset", "digits", "-T", "8",
                 "--eval-samples", "2", "--out", str(out), "--no-tune"]) == 0
    report = json.loads((out / "report.json").read_text())
    e = report["energy"]
    assert e["per_step_counts"] == "counted" and e["per_sample"]["snn_loihi_J"] > 0
    assert e["per_sample"]["synaptic_ops"] == pytest.approx(report["synaptic_ops_per_sample"])
    assert "Davies" in e["constants"]["sources"]["loihi"]
    assert (out / "accuracy_vs_energy.png").exists()
