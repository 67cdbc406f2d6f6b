"""The two MNIST-shaped models of issue 10 on ``--target loihi``: resource report and exactness.

    .venv/bin/python -m benchmarks.loihi_mnist [--samples 8] [--timesteps 16]

Models (``tests/mnist_models.py``): an MNIST CNN ((Conv-BN-ReLU-AvgPool) ×2 -> Linear(1568, 128)
-> Linear(128, 10)) and a small ResNet (stem, two residual blocks, AvgPool, Linear(1568, 10)),
trained one epoch on scikit-learn's digits upsampled to 28×28 (seconds), exported at opset 17,
converted (p99.9 thresholds from 256 training images) and run in Lava (fixed_pt) on the first
``--samples`` test images, compared spike for spike with the GPU simulator's Loihi mode.
Writes benchmarks/results/loihi_mnist.json and prints the per-layer resource tables.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from benchmarks import models
from snncompile.tools.cli import main as cli

ROOT = Path(__file__).resolve().parents[1]

mnist_models = models.mnist  # tests/mnist_models.py


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--timesteps", type=int, default=16)
    args = ap.parse_args()
    torch.set_num_threads(2)
    tmp = Path(tempfile.mkdtemp())
    tr, te = mnist_models.digits28("train"), mnist_models.digits28("test")
    np.savez(tmp / "cal.npz", x=tr.x[:256], y=tr.y[:256])
    np.savez(tmp / "ev.npz", x=te.x[:args.samples], y=te.y[:args.samples])
    out = {"samples": args.samples, "timesteps": args.timesteps, "torch_threads": 2}
    for name in ("mnist_cnn", "mnist_resnet"):
        model = mnist_models.trained(getattr(mnist_models, name)(), epochs=1)
        path = mnist_models.export(model, tmp / f"{name}.onnx")
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            rc = cli([str(path), "--target", "loihi", "--calibration", str(tmp / "cal.npz"),
                      "--eval", str(tmp / "ev.npz"), "--timesteps", str(args.timesteps),
                      "--out", str(tmp / name)])
        assert rc == 0, buf.getvalue()
        rep = json.loads((tmp / name / "report.json").read_text())
        res = rep["resources"]
        # the former estimate: cores from neurons and synapses only (it refused the fan-in)
        before = sum(max(1, math.ceil(ly["neurons"] / res["limits"]["neurons_per_core"]),
                         math.ceil(ly["synapses"] / res["limits"]["synapses_per_core"]))
                     for ly in res["layers"])
        out[name] = {"ann_accuracy": rep["ann_accuracy"], "snn_accuracy": rep["snn_accuracy"],
                     "spike_exact": rep["spike_exact"],
                     "gpu_agreement": rep["gpu_agreement"], "resources": res,
                     "cores_without_axon_bound": before,
                     "lava_samples_per_second": rep["lava_samples_per_second"]}
        print(f"\n{name}: spike_exact {rep['spike_exact']}, agreement "
              f"{rep['gpu_agreement']:.4f}, ~{res['neuro_cores']} neuro-cores "
              f"({before} counting neurons and synapses only)\n")
        print("| population | neurons | synapses | max fan-in (per synapse group) | "
              "distinct inputs | cores | bound by |")
        print("|---|---|---|---|---|---|---|")
        for ly in res["layers"]:
            print(f"| {ly['name']} | {ly['neurons']} | {ly['synapses']:,} | {ly['fan_in_max']} "
                  f"({ly['fan_in_max_per_synapse']}) | {ly['distinct_inputs']} | "
                  f"{ly['cores']} | {ly['cores_bound_by']} |")
        for sp in res["splits"]:
            print(f"\nsplit: {sp['synapse']}: fan-in {sp['fan_in']} -> {sp['parts']} groups of "
                  f"<= {sp['inputs_per_part']} inputs")
    out["loadavg"] = os.getloadavg()
    (ROOT / "benchmarks" / "results" / "loihi_mnist.json").write_text(
        json.dumps(out, indent=1, default=str) + "\n")
    print(f"\nload average {out['loadavg'][0]:.1f}, 2 threads")


if __name__ == "__main__":
    main()
