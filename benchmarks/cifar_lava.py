"""The full CIFAR-10 ResNet-20 (option A) on ``--target loihi``: Lava spike for spike against the
torch Loihi reference, on a few real test images.

    python -m benchmarks.cifar_lava [--data ../shared/data/cifar10-jpeg.tar.gz] [--work DIR]
        [--samples 2] [--timesteps 8]

The network is ``benchmarks/cifar_train.py``'s ``resnet20a`` (He et al.'s ResNet-20 with option-A
shortcuts, 16/32/64 channels on 32×32, trained on the JPEG copy of CIFAR-10; trained first if its
checkpoint is not in ``--work``), exported from PyTorch as written (strided ``Slice`` + channel
``Pad`` in every downsampling shortcut). One command-line run, as a user types it::

    snn-compile resnet20a.onnx --target loihi --calibration calib.npz --eval test.npz
        --eval-samples N --timesteps T

converts (tuned for T on the calibration images), builds the Lava process graph
(``Loihi2SimCfg``, fixed point) and runs the first N test images in Lava and in the torch
Loihi reference. The row is the report's ``spike_exact`` (every spike of every layer at every
step equal), the spikes compared, the Lava processes, the wall time and Lava's samples/s.
Writes benchmarks/results/cifar_lava.json and prints a markdown table; the data files stay in
``--work`` (nothing derived from the data goes into the repository).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import cifar, cifar_train

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "cifar_lava.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=cifar_train.DEFAULT_DATA)
    ap.add_argument("--work", type=Path, default=cifar_train.DEFAULT_WORK)
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--timesteps", type=int, default=8)
    ap.add_argument("--calibration-samples", type=int, default=1024)
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    onnx = a.work / "resnet20a.onnx"
    if not onnx.exists():
        subprocess.run([sys.executable, "-m", "benchmarks.cifar_train", "--data", str(a.data),
                        "--work", str(a.work), "--nets", "resnet20a"], check=True, cwd=ROOT)
    calib, test = cifar.data_files(a.work, a.data, 1000, a.calibration_samples)
    out = a.work / "runs" / f"lava-T{a.timesteps}-n{a.samples}"
    cmd = [str(cifar.SNN_COMPILE), str(onnx), "--target", "loihi", "--calibration", str(calib),
           "--eval", str(test), "--eval-samples", str(a.samples), "--timesteps",
           str(a.timesteps), "--out", str(out)]
    if out.exists():  # an earlier run of this script: snn-compile keeps what is not its own
        shutil.rmtree(out)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"snn-compile failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    r = json.loads((out / "report.json").read_text())
    row = {k: r.get(k) for k in (
        "spike_exact", "spikes_mismatched", "gpu_reference", "lava_mode", "gpu_agreement",
        "lava_processes", "lava_ms_per_step",
        "lava_samples_per_second", "snn_accuracy", "ann_accuracy", "spikes_per_sample",
        "synaptic_ops_per_sample", "seconds", "seconds_total")}
    row.update(wall_seconds=wall, samples=a.samples, timesteps=a.timesteps,
               command=" ".join(["snn-compile", *cmd[1:]]),
               neurons=(r.get("resources") or {}).get("neurons"),
               pipeline=(r.get("tuning") or {}).get("pipeline") or r.get("pipeline"))
    table = "\n".join([
        "| network | images | T | spike-exact (Lava vs torch Loihi reference) | spikes/image "
        "| Lava images/s | wall s |", "|---|---|---|---|---|---|---|",
        f"| ResNet-20 option A (16/32/64 ch, 32×32) | {a.samples} | {a.timesteps} | "
        f"{row['spike_exact']} ({row['spikes_mismatched']} mismatched) | "
        f"{row['spikes_per_sample']:.0f} | {row['lava_samples_per_second']:.3g} | {wall:.0f} |"])
    result = {"benchmark": "cifar_lava", "row": row, "table": table,
              "command": " ".join(["python -m benchmarks.cifar_lava", *sys.argv[1:]]),
              "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count()},
              "load_average_at_end": os.getloadavg()}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1) + "\n")
    print(table)
    print(f"wrote {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
