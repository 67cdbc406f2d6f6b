"""The two MNIST-shaped models of issue 10 on ``--target loihi``: wide layers are split across
cores, the run is spike-exact with the GPU simulator's Loihi mode, the report says what was
split. Random weights (the mapping does not depend on training); 2 samples, T = 4."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import mnist_models


@pytest.fixture(scope="module")
def data28(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("d28")
    tr, te = mnist_models.digits28("train"), mnist_models.digits28("test")
    np.savez(d / "cal.npz", x=tr.x[:64], y=tr.y[:64])
    np.savez(d / "ev.npz", x=te.x[:2], y=te.y[:2])
    return d / "cal.npz", d / "ev.npz"


@pytest.mark.lava
@pytest.mark.timeout(300)
@pytest.mark.parametrize("name, split", [("mnist_cnn", "4_Conv->9_Gemm"),
                                         ("mnist_resnet", "5_Add->8_Gemm")])
def test_mnist_models_run_on_loihi_spike_exact(name: str, split: str, data28, tmp_path: Path,
                                               capsys) -> None:
    from snncompile.tools.cli import main

    path = mnist_models.export(getattr(mnist_models, name)(), tmp_path / f"{name}.onnx")
    cal, ev = data28
    out = tmp_path / "o"
    rc = main([str(path), "--target", "loihi", "--calibration", str(cal), "--eval", str(ev),
               "--timesteps", "4", "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "spike-exact vs GPU loihi mode: yes" in text
    assert f"resources: {split} has " in text and "split into 2 synapse groups" in text
    report = json.loads((out / "report.json").read_text())
    assert report["spike_exact"] is True and report["gpu_agreement"] == 1.0
    res = report["resources"]
    (sp,) = res["splits"]
    assert sp["synapse"] == split and sp["parts"] == 2 and sp["fan_in"] > 4096
    assert sp["inputs_per_part"] <= res["limits"]["axons_per_core"]
    head = next(ly for ly in res["layers"] if ly["name"] == split.split("->")[1])
    assert head["cores"] == 2 and head["fan_in_max_per_synapse"] <= 4096
    assert res["warnings"] == [] and res["neuro_cores"] <= res["limits"]["cores_per_chip"]
