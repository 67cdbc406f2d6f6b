"""Spiking max-pool variants on MaxPool networks: ``--maxpool gate`` vs ``--maxpool current``.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.maxpool [--models vgg_maxpool,...]

Models (``tests/models.py``, trained here in seconds on the digits data, seed 0):
``vgg_maxpool`` (two MaxPool2d, 12 epochs; the same weights as ``benchmarks/models.py``'s
vgg_maxpool, which ``vs_spikingjelly.py`` and ``thresholds.py`` train the same way),
``vgg_maxpool_long`` (the same, 40 epochs: larger activations), ``vgg3_maxpool`` (three
MaxPools, Conv+BN, 12 epochs) and ``pool_mix`` (MaxPool 3/stride 2/padding 1, a MaxPool after a
residual Add+ReLU, a MaxPool before its ReLU; 12 epochs).
Calibration: the first 512 digits training images (with labels); evaluation: the 540 test
images; direct coding, IF neurons. Rows per variant: ``no-tune`` (fixed p99.9 layer-wise, α =
0.5; one run to T = 64 gives every t) and ``tuned`` (no conversion flags: one
``snncompile.compile(..., timesteps=T)`` per T, tuned on held-out calibration samples; its
accuracy at T and the tuning seconds). Writes benchmarks/results/maxpool.json and prints a
markdown table (accuracy %, and the difference to the ANN in points).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import snncompile
from benchmarks.models import tests as models  # tests/models.py
from benchmarks.thresholds import write_results
from snncompile.data import digits
from snncompile.interp import run_ann

ROOT = Path(__file__).resolve().parents[1]

STEPS = (4, 8, 16, 32, 64)
MODELS = {"vgg_maxpool": (models.vgg_maxpool, 12), "vgg_maxpool_long": (models.vgg_maxpool, 40),
          "vgg3_maxpool": (models.vgg3_maxpool, 12), "pool_mix": (models.pool_mix, 12)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=",".join(MODELS))
    a = ap.parse_args()
    torch.set_num_threads(1)
    train, test = digits("train"), digits("test")
    cal = train.take(512)
    tmp = Path(tempfile.mkdtemp())
    rows = []
    for name in a.models.split(","):
        fn, epochs = MODELS[name]
        path = models.export(models.trained(fn, epochs=epochs), tmp / f"{name}.onnx")
        ann = float(np.mean(run_ann(snncompile.load_onnx(path), test.x).argmax(1) == test.y))
        print(f"{name}: ANN {ann:.4f}", flush=True)
        for mp in ("gate", "current"):
            net = snncompile.compile(path, target="gpu", calibration=cal.x, timesteps=64,
                                     device="cpu", no_tune=True, maxpool=mp)
            acc = net.run(test.x, 64, progress=False).accuracy_by_timestep(test.y)
            rows.append({"model": name, "ann": ann, "maxpool": mp, "setting": "no-tune",
                         "accuracy": {t: float(acc[t - 1]) for t in STEPS}})
            acc_t, secs = {}, {}
            for t in STEPS:
                t0 = time.perf_counter()
                net = snncompile.compile(path, target="gpu", calibration=cal, timesteps=t,
                                         device="cpu", maxpool=mp)
                secs[t] = time.perf_counter() - t0
                acc_t[t] = float(net.run(test.x, t, progress=False)
                                 .accuracy_by_timestep(test.y)[-1])
            rows.append({"model": name, "ann": ann, "maxpool": mp, "setting": "tuned",
                         "accuracy": acc_t, "compile_seconds": secs})
            for r in rows[-2:]:
                print(f"  {mp} {r['setting']}: " + " ".join(
                    f"T={t} {r['accuracy'][t]:.4f}" for t in STEPS), flush=True)
    print("\n| model (ANN) | max-pool | setting | " + " | ".join(f"T={t}" for t in STEPS)
          + " |")
    print("|---|---|---|" + "---|" * len(STEPS))
    for r in rows:
        cells = [f"{100 * r['accuracy'][t]:.2f} ({100 * (r['accuracy'][t] - r['ann']):+.2f})"
                 for t in STEPS]
        print(f"| {r['model']} ({100 * r['ann']:.2f}) | {r['maxpool']} | {r['setting']} | "
              + " | ".join(cells) + " |")
    write_results("maxpool", len(test), rows)


if __name__ == "__main__":
    main()
