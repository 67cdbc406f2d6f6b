"""Threshold balancing choices: --norm (max, p99.9, p99.99) × layer-wise / channel-wise.

    .venv/bin/python -m benchmarks.thresholds          # digits CNN, ResNet and MaxPool test models

Models: the bundled ``examples/digits_cnn.onnx`` and, trained here in seconds with the seeds the
tests use, ``tests/models.py``'s ``resnet_block`` (10 epochs) and ``vgg_maxpool`` (12 epochs).
Calibration: the first 512 digits training images; evaluation: the 540 test images; direct
coding, IF neurons, α = 0.5; one run to T = 64 per setting gives every t ≤ 64 (these fixed rows
use ``no_tune=True``). The ``tuned`` row is what no flags at all give: for each T one
``snncompile.compile(..., timesteps=T)`` whose conversion ``snncompile.pipeline_search``
chose on held-out calibration samples (default budget: 8192 simulated samples), its accuracy at that
T and the tuning time (seconds, per T; the JSON also has the simulated samples spent).
Writes benchmarks/results/thresholds.json and prints a markdown table.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import snncompile
from benchmarks.models import tests as models  # tests/models.py
from snncompile.data import digits
from snncompile.interp import run_ann

ROOT = Path(__file__).resolve().parents[1]

STEPS = (4, 8, 16, 32, 64)


def write_results(name: str, samples: int, rows: list) -> Path:
    """``benchmarks/results/<name>.json``: the accuracy rows of a digits benchmark (``samples``
    test images, 512 calibration images, one thread) and the load at the end."""
    out = ROOT / "benchmarks" / "results" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"samples": samples, "calibration": 512, "threads": 1,
                               "load_average_at_end": os.getloadavg(), "rows": rows},
                              indent=1) + "\n")
    print(f"wrote {out}")
    return out
SETTINGS = [(norm, ch) for norm in ("max", "p99.9", "p99.99") for ch in (False, True)]


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
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
                                     norm=norm, channelwise=ch, device="cpu", no_tune=True)
            acc = net.run(test.x, 64, progress=False).accuracy_by_timestep(test.y)
            rows.append({"model": name, "ann": ann, "norm": norm, "channelwise": ch,
                         "accuracy": {t: float(acc[t - 1]) for t in STEPS},
                         "seconds": time.perf_counter() - t0})
            print(f"{name} {norm} channelwise={ch}: "
                  + " ".join(f"T={t} {acc[t - 1]:.4f}" for t in STEPS), flush=True)
        acc_t, secs, spent = {}, {}, {}
        for t in STEPS:
            _, _, ctx = snncompile.convert(path, calibration=train.take(512), timesteps=t)
            info = ctx.notes["tuning"]
            net = snncompile.compile(path, target="gpu", calibration=train.x[:512],
                                     timesteps=t, device="cpu",
                                     passes=snncompile.passes.split_pipeline(info["pipeline"]))
            acc_t[t] = float(net.run(test.x, t, progress=False).accuracy_by_timestep(test.y)[-1])
            secs[t], spent[t] = info["seconds"], info["spent_samples"]
        rows.append({"model": name, "ann": ann, "norm": "tuned", "channelwise": None,
                     "accuracy": acc_t, "tune_seconds": secs, "tune_samples": spent})
        print(f"{name} tuned: " + " ".join(f"T={t} {acc_t[t]:.4f} ({secs[t]:.1f} s)"
                                           for t in STEPS), flush=True)
    print("\n| model | ANN | norm | thresholds | " + " | ".join(f"T={t}" for t in STEPS)
          + " | tuning s (per T) |")
    print("|---|---|---|---|" + "---|" * (len(STEPS) + 1))
    for r in rows:
        gran = {None: "tuned per layer", True: "channel", False: "layer"}[r["channelwise"]]
        ts = " / ".join(f"{r['tune_seconds'][t]:.1f}" for t in STEPS) if "tune_seconds" in r \
            else ""
        print(f"| {r['model']} | {r['ann']:.4f} | {r['norm']} | {gran} | "
              + " | ".join(f"{r['accuracy'][t]:.4f}" for t in STEPS) + f" | {ts} |")
    write_results("thresholds", len(test), rows)


if __name__ == "__main__":
    main()
