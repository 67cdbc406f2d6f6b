"""The whole default job against SpikingJelly 2.0's, on an MNIST-sized CNN: wall time of one
command from start to accuracy, as a user meets it.

    python -m benchmarks.whole_job [--sj-python /work/sj-venv/bin/python] [--repeats 3]

Model: ``tests/mnist_models.mnist_cnn`` (1×28×28, two conv layers, 1.2 M MACs), trained for a
few seconds on scikit-learn's digits upsampled to 28×28 (``mnist_models.digits28``). Test
set: 4000 images, the 28×28 test digits and copies of them shifted by one pixel (seeded),
stated as such (there is no MNIST on this machine); calibration: 512 training images.

Rows (each the wall time of a fresh process, so imports and start-up count):

- ``snn-compile (defaults)``: ``snn-compile cnn.onnx --target gpu --calibration cal.npz --eval
  test.npz --timesteps 32``: tuning for T = 32 (its default budget), conversion, evaluation;
- ``snn-compile --no-tune``: the same with the fixed default pipeline;
- ``SpikingJelly 2.0``: ``sj2_runner.py`` with one recipe (``rate 99.9%``, its example's
  default mode), converting and evaluating the same 4000 images at T = 32 in its own venv.

The table gives each row's median over ``--repeats`` runs, its ratio to SpikingJelly's and, for
the default row, the tuning's share. One torch thread everywhere; the JSON records the load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SNN_COMPILE = Path(sys.executable).with_name("snn-compile")
OUT = ROOT / "benchmarks" / "results" / "whole_job.json"
STEPS = 32


def data(tmp: Path) -> tuple[Path, Path, Path]:
    """Train the CNN; write cnn.onnx, cal.npz (512) and test.npz (4000) into ``tmp``."""
    from benchmarks.models import mnist as mnist_models

    train, test = mnist_models.digits28("train"), mnist_models.digits28("test")
    model = mnist_models.trained(mnist_models.mnist_cnn(), epochs=4)
    onnx = mnist_models.export(model, tmp / "cnn.onnx")
    rng = np.random.default_rng(0)
    xs, ys = [test.x], [test.y]
    while sum(len(x) for x in xs) < 4000:
        dy, dx = rng.integers(-1, 2, 2)
        xs.append(np.roll(test.x, (int(dy), int(dx)), axis=(2, 3)))
        ys.append(test.y)
    x, y = np.concatenate(xs)[:4000], np.concatenate(ys)[:4000]
    np.savez(tmp / "cal.npz", x=train.x[:512], y=train.y[:512])
    np.savez(tmp / "test.npz", x=x, y=y)
    torch.save(model.state_dict(), tmp / "cnn.pt")
    torch.save(model, tmp / "cnn-module.pt")  # an nn.Sequential: SpikingJelly's venv loads it
    return onnx, tmp / "cal.npz", tmp / "test.npz"


def timed(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, capture_output=True, text=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sj-python", default="/work/sj-venv/bin/python")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args()
    torch.set_num_threads(1)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    rows: dict[str, list[float]] = {}
    tuning: list[float] = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        onnx, cal, test = data(tmp)
        ours = [str(SNN_COMPILE), str(onnx), "--target", "gpu", "--calibration", str(cal),
                "--eval", str(test), "--timesteps", str(STEPS), "--device", "cpu"]
        t = np.load(test)
        c = np.load(cal)
        np.savez(tmp / "sj.npz", cal_x=c["x"], test_x=t["x"], test_y=t["y"])
        job = {"data": str(tmp / "sj.npz"), "timesteps": STEPS, "threads": 1, "batch": 256,
               "models": {"mnist_cnn": str(tmp / "cnn.pt")}, "recipes": ["rate 99.9%"],
               "pickled": {"mnist_cnn": str(tmp / "cnn-module.pt")},
               "out": str(tmp / "sj.json")}
        (tmp / "job.json").write_text(json.dumps(job))
        sj_env = {k: v for k, v in env.items() if k != "PYTHONPATH"}
        for _ in range(a.repeats):
            out = tmp / "o"
            rows.setdefault("snn-compile (defaults)", []).append(
                timed([*ours, "--out", str(out)], env))
            rep = json.loads((out / "report.json").read_text())
            tuning.append(rep["tuning"]["seconds"])
            acc, ann, winner = rep["snn_accuracy"], rep["ann_accuracy"], rep["tuning"]["winner"]
            rows.setdefault("snn-compile --no-tune", []).append(
                timed([*ours, "--no-tune", "--out", str(tmp / "o2")], env))
            acc_fixed = json.loads((tmp / "o2" / "report.json").read_text())["snn_accuracy"]
            if a.sj_python:
                rows.setdefault("SpikingJelly 2.0 (rate 99.9%)", []).append(timed(
                    [a.sj_python, str(ROOT / "benchmarks" / "sj2_runner.py"),
                     str(tmp / "job.json")], sj_env))
                sj_acc = json.loads((tmp / "sj.json").read_text())["models"]["mnist_cnn"][
                    "rate 99.9%"]["accuracy_by_timestep"][-1]
    sj = np.median(rows["SpikingJelly 2.0 (rate 99.9%)"]) if a.sj_python else None
    lines = ["| job (4000 images, T = 32, 1 thread) | wall s (median) | vs SpikingJelly |",
             "|---|---|---|"]
    for k, v in rows.items():
        ratio = f"{np.median(v) / sj:.2f}×" if sj else "–"
        lines.append(f"| {k} | {np.median(v):.1f} | {ratio} |")
    share = float(np.median(tuning)) / float(np.median(rows["snn-compile (defaults)"]))
    lines.append(f"\ntuning {np.median(tuning):.1f} s = {share:.0%} of the default job; "
                 f"tuner's choice: {winner}; accuracy at T = {STEPS}: ANN {ann:.4f}, ours "
                 f"{acc:.4f} (--no-tune {acc_fixed:.4f})"
                 + (f", SpikingJelly {sj_acc:.4f}" if a.sj_python else ""))
    text = "\n".join(lines)
    print(text)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({
        "benchmark": "whole_job", "rows": rows, "tuning_seconds": tuning, "table": text,
        "accuracy": {"ann": ann, "defaults": acc, "no_tune": acc_fixed,
                     **({"spikingjelly": sj_acc} if a.sj_python else {})},
        "threads": 1, "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count()},
        "command": "python -m benchmarks.whole_job --repeats " + str(a.repeats),
        "load_average_at_end": os.getloadavg()}, indent=1) + "\n")
    print(f"wrote {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
