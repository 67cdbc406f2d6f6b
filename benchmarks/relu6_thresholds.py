"""ReLU6 / Clip layers: threshold = clip bound (before issue 10) vs min(bound, statistic).

    .venv/bin/python -m benchmarks.relu6_thresholds

Model: ``tests/models.py``'s ``clip_cnn`` (ReLU6 and hardtanh(0, 2) after its two convs) trained
8 epochs on digits (seconds). Every hidden layer is a Clip, so converting it *without*
calibration data gives θ = the clip bound everywhere (what every Clip layer got before); with
512 calibration images θ = min(bound, p99.9 statistic), layer-wise or channel-wise. 540 digits
test images, IF neurons, α = 0.5, CPU. Writes benchmarks/results/relu6_thresholds.json and
prints a markdown table (accuracy per T and mean firing rate of the hidden layers).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

import snncompile
from benchmarks.models import tests as models  # tests/models.py
from snncompile.backends.gpu import compile as gpu_compile
from snncompile.data import digits

ROOT = Path(__file__).resolve().parents[1]

STEPS = (4, 8, 16, 32, 64)


def main() -> None:
    torch.set_num_threads(2)
    train, test = digits("train"), digits("test")
    path = models.export(models.trained(models.clip_cnn), Path("/tmp") / "relu6_cnn.onnx")
    rows = []
    for label, kw in (("clip bound (no calibration)", {}),
                      ("min(bound, p99.9), layer", {"calibration": train.x[:512]}),
                      ("min(bound, p99.9), channel", {"calibration": train.x[:512],
                                                      "channelwise": True})):
        snn, _, ctx = snncompile.convert(path, target="gpu", **kw)
        net = gpu_compile(snn, snncompile.CompileOptions(device="cpu"))
        res = net.run(test.x, 64, progress=False)
        acc = res.accuracy_by_timestep(test.y)
        rates = res.firing_rates()
        notes = ctx.notes.get("balance-thresholds", {})
        rows.append({"thresholds": label, "accuracy": {t: float(acc[t - 1]) for t in STEPS},
                     "firing_rate": {k: round(v, 4) for k, v in rates.items()},
                     "notes": notes})
        print(label, {t: round(float(acc[t - 1]), 4) for t in STEPS}, rates, flush=True)
    ann = float(np.mean(snncompile.interp.run_ann(snncompile.load_onnx(path), test.x)
                        .argmax(1) == test.y))
    out = {"ann_accuracy": ann, "rows": rows, "loadavg": os.getloadavg(), "torch_threads": 2}
    (ROOT / "benchmarks" / "results" / "relu6_thresholds.json").write_text(
        json.dumps(out, indent=1) + "\n")
    print(f"\nANN {ann:.4f}; load average {out['loadavg'][0]:.1f}, 2 threads\n")
    print("| thresholds | " + " | ".join(f"T={t}" for t in STEPS) + " | firing rates |")
    print("|---|" + "---|" * len(STEPS) + "---|")
    for r in rows:
        rates = ", ".join(f"{v:.3f}" for v in r["firing_rate"].values())
        print(f"| {r['thresholds']} | " + " | ".join(f"{r['accuracy'][t]:.4f}" for t in STEPS)
              + f" | {rates} |")


if __name__ == "__main__":
    main()
