"""Threshold balancing choices: --norm (max, p99.9, p99.99) × layer-wise / channel-wise.

    .venv/bin/python benchmarks/thresholds.py          # digits CNN, ResNet and MaxPool test models

Models: the bundled ``examples/digits_cnn.onnx`` and, trained here in seconds with the seeds the
tests use, ``tests/models.py``'s ``resnet_block`` (10 epochs) and ``vgg_maxpool`` (12 epochs).
Calibration: the first 512 digits training images; evaluation: the 540 test images; direct
coding, IF neurons, α = 0.5; one run to T = 64 per setting gives every t ≤ 64.
Writes benchmarks/results/thresholds.json and prints a markdown table.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import snncompile  # noqa: E402
from snncompile.data import digits  # noqa: E402
from snncompile.interp import run_ann  # noqa: E402

import models  # noqa: E402

STEPS = (4, 8, 16, 32, 64)
SETTINGS = [(norm, ch) for norm in ("max", "p99.9", "p99.99") for ch in (False, True)]


def main() -> None:
    torch.manual_seed(0)
    train, test = digits("train"), digits("test")
    tmp = Path(tempfile.mkdtemp())
    paths = {"digits_cnn": ROOT / "examples" / "digits_cnn.onnx",
             "resnet": models.export(models.trained(models.resnet_block, epochs=10),
                                     tmp / "resnet.onnx"),
             "vgg_maxpool": models.export(models.trained(models.vgg_maxpool, epochs=12),
                                          tmp / "vgg.onnx")}
    rows = []
    for name, path in paths.items():
        ann = float(np.mean(run_ann(snncompile.load_onnx(path), test.x).argmax(1) == test.y))
        for norm, ch in SETTINGS:
            t0 = time.perf_counter()
            net = snncompile.compile(path, target="gpu", calibration=train.x[:512], timesteps=64,
                                     norm=norm, channelwise=ch, device="cpu")
            acc = net.run(test.x, 64, progress=False).accuracy_by_timestep(test.y)
            rows.append({"model": name, "ann": ann, "norm": norm, "channelwise": ch,
                         "accuracy": {t: float(acc[t - 1]) for t in STEPS},
                         "seconds": time.perf_counter() - t0})
            print(f"{name} {norm} channelwise={ch}: "
                  + " ".join(f"T={t} {acc[t - 1]:.4f}" for t in STEPS), flush=True)
    print("\n| model | ANN | norm | thresholds | " + " | ".join(f"T={t}" for t in STEPS) + " |")
    print("|---|---|---|---|" + "---|" * len(STEPS))
    for r in rows:
        print(f"| {r['model']} | {r['ann']:.4f} | {r['norm']} | "
              f"{'channel' if r['channelwise'] else 'layer'} | "
              + " | ".join(f"{r['accuracy'][t]:.4f}" for t in STEPS) + " |")
    out = ROOT / "benchmarks" / "results" / "thresholds.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"samples": len(test), "calibration": 512, "rows": rows},
                              indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
