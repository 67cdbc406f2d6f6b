"""CIFAR-10 at CIFAR scale: ANN vs SNN per T, as a user runs it, and SpikingJelly 2.0 beside it.

    python -m benchmarks.cifar [--data ../shared/data/cifar10-jpeg.tar.gz] [--work DIR]
        [--eval-samples 2000] [--timesteps 1 2 4 8 16 32 64] [--finetune] [--sj-python PY]
        [--finetune-timesteps 4] [--nets resnet20a ...] [--out FILE]

Networks: ``benchmarks/cifar_train.py`` trains them on the JPEG copy of CIFAR-10 (if their
checkpoints are not in ``--work`` yet) and exports them to ONNX as written (option-A
shortcuts: strided ``Slice`` + channel ``Pad``): ResNet-20 (option A), VGG-11 with BatchNorm
and MaxPool, and the ResNet-20 with QCFS activations (L = 4).

Data: ``--eval-samples`` (1000) test images (a seeded, class-balanced draw from the 10,000) and 1024
calibration images drawn the same way from the 50,000 training images, written as ``.npz``
files into ``--work`` (normalised as ``--preprocess cifar10`` does; nothing derived from the
data goes into the repository).

Rows, per network, each T one command-line run exactly as a user types it::

    snn-compile NET.onnx --target gpu --calibration calib.npz --eval test.npz --timesteps T

- ``snn-compile (defaults)``: no conversion flags, i.e. tuned for T on held-out calibration
  samples; its accuracy at T, the tuning's share of the whole job's wall time, the simulation
  time, spikes and synaptic operations per image;
- ``snn-compile --finetune distill`` (``--finetune``): the same plus distillation fine-tuning
  for T (``--finetune-epochs 2`` on the calibration images), at T ≤ 4;
- SpikingJelly 2.0 (``--sj-python``: a Python with spikingjelly 2.0.0, see
  ``benchmarks/sj2_runner.py``): the recipes ``SJ_RECIPES`` on the same float networks and
  images, one run to max(T); the row is its best recipe per T, chosen on the test set.

Everything runs on the CPU with ``--threads`` torch threads (default 1) unless CUDA is present;
the JSON records the machine's load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks import cifar_train

ROOT = Path(__file__).resolve().parents[1]
NETS = ("resnet20a", "vgg11", "resnet20a_qcfs4")
TIMESTEPS = (1, 2, 4, 8, 16, 32, 64)
FINETUNE_MAX_T = 4  # the --finetune rows: where conversion alone leaves most to gain
SNN_COMPILE = Path(sys.executable).with_name("snn-compile")
#: SpikingJelly's recipes run here: the three that were its best in some cell of the three-split
#: digits comparison (benchmarks/results/vs_spikingjelly_3splits.json: 15, 4 and 1 of 20 cells)
SJ_RECIPES = ("rate 99.9% channel-wise+pre-spike maxpool+half threshold",
              "local threshold balancing", "rate 99.9%")


def balanced(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Indices of ``n`` samples, as many of each class as possible, seeded."""
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    per = -(-n // len(classes))
    idx = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:per] for c in classes])
    return np.sort(rng.permutation(idx)[:n])


def data_files(work: Path, data: Path, n_eval: int, n_cal: int) -> tuple[Path, Path]:
    """calib.npz (from the training images) and test.npz (from the test images) in ``work``."""
    root = cifar_train.image_root(data, work)
    out = []
    for split, n, name in (("train", n_cal, "calib"), ("test", n_eval, "test")):
        path = work / f"{name}-{n}.npz"
        if not path.exists():
            x, y = cifar_train.decoded(root, split, work)
            i = balanced(y, n, seed=1)
            np.savez(path, x=cifar_train.normalise(x[i]), y=y[i])
        out.append(path)
    return out[0], out[1]


def run_cli(onnx: Path, calib: Path, test: Path, steps: int, out: Path, threads: int,
            extra: list[str]) -> dict[str, Any]:
    """One ``snn-compile`` run; its report.json plus the wall time of the whole command."""
    cmd = [str(SNN_COMPILE), str(onnx), "--target", "gpu", "--calibration", str(calib),
           "--eval", str(test), "--timesteps", str(steps), "--out", str(out), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1:], "command": " ".join(cmd)}
    report = json.loads((out / "report.json").read_text())
    report["wall_seconds"] = wall
    report["command"] = " ".join(cmd)
    return report


def snn_rows(net: str, onnx: Path, calib: Path, test: Path, args: argparse.Namespace,
             extra: list[str], label: str, timesteps: list[int]) -> dict[str, Any]:
    cells: dict[str, Any] = {}
    for steps in timesteps:
        out = args.work / "runs" / f"{net}-{label.replace(' ', '_')}-T{steps}"
        if args.reuse and (out / "run.json").exists():  # an earlier run of the same command
            r = json.loads((out / "run.json").read_text())
        else:
            if out.exists():
                import shutil

                shutil.rmtree(out)
            r = run_cli(onnx, calib, test, steps, out, args.threads, extra)
            if "error" not in r:
                (out / "run.json").write_text(json.dumps(r))
        if "error" in r:
            cells[str(steps)] = r
            print(f"{net} {label} T={steps}: {r['error']}", file=sys.stderr)
            continue
        tuning = r.get("tuning") or {}
        cells[str(steps)] = {
            "accuracy": r["snn_accuracy"], "ann_accuracy": r["ann_accuracy"],
            "tuning_seconds": tuning.get("seconds", 0.0), "wall_seconds": r["wall_seconds"],
            "seconds": r.get("seconds"), "tuning_share": tuning.get("seconds", 0.0)
            / r["wall_seconds"], "pipeline": tuning.get("pipeline") or r.get("pipeline"),
            "winner": tuning.get("winner"), "chosen": tuning.get("chosen"),
            "spikes_per_sample": r["spikes_per_sample"],
            "synaptic_ops_per_sample": r["synaptic_ops_per_sample"],
            "finetune": r.get("finetune"), "command": r["command"]}
        c = cells[str(steps)]
        print(f"{net} {label} T={steps}: {100 * c['accuracy']:.2f} % (ANN "
              f"{100 * c['ann_accuracy']:.2f}), tuning {c['tuning_seconds']:.0f} s of "
              f"{c['wall_seconds']:.0f} s", file=sys.stderr, flush=True)
    return cells


def spikingjelly(sj_python: str, nets: dict[str, Path], calib: Path, test: Path,
                 steps: int, work: Path, threads: int) -> dict[str, Any]:
    """Every SpikingJelly 2.0 recipe on the float networks (``sj2_runner.py``)."""
    d = np.load(test)
    c = np.load(calib)
    job_data = work / "sj-data.npz"
    np.savez(job_data, cal_x=c["x"][:512], test_x=d["x"], test_y=d["y"])
    zoo = {"resnet20a": ["cifar_resnet", {"depth": 20, "shortcut": "A"}],
           "vgg11": ["cifar_vgg", {"name": "vgg11", "width": cifar_train.VGG_WIDTH}]}
    job = {"data": str(job_data), "timesteps": steps, "threads": threads, "batch": 100,
           "zoo_file": str(ROOT / "snncompile" / "zoo.py"),
           "zoo": {n: zoo[n] for n in nets if n in zoo},
           "models": {n: str(p) for n, p in nets.items() if n in zoo},
           "recipes": list(SJ_RECIPES), "out": str(work / "sj-result.json")}
    (work / "sj-job.json").write_text(json.dumps(job))
    subprocess.run([sj_python, str(ROOT / "benchmarks" / "sj2_runner.py"),
                    str(work / "sj-job.json")], check=True)
    return json.loads((work / "sj-result.json").read_text())


def table(results: dict[str, Any], steps: tuple[int, ...]) -> str:
    head = "| network | row | ANN | " + " | ".join(f"T={t}" for t in steps) + " |"
    lines = [head, "|" + "---|" * (3 + len(steps))]
    for net, r in results["networks"].items():
        ann = 100 * r["ann_accuracy"]
        for label, cells in r["rows"].items():
            vals = [cells.get(str(t), {}) for t in steps]
            txt = [f"{100 * v['accuracy']:.2f}" if "accuracy" in v else "–" for v in vals]
            if "error" in cells:  # e.g. SpikingJelly refusing the network
                txt = [f"refused: {cells['error'][:60]}"] + [""] * (len(steps) - 1)
            lines.append(f"| {net} | {label} | {ann:.2f} | " + " | ".join(txt) + " |")
        for label, key, fmt in (("tuning share of the job", "tuning_share", "{:.0%}"),
                                ("whole job, s", "wall_seconds", "{:.0f}"),
                                ("spikes / image (k)", "spikes_per_sample", "{:.0f}"),
                                ("synaptic ops / image (M)", "synaptic_ops_per_sample",
                                 "{:.1f}")):
            cells = r["rows"].get("snn-compile (defaults)", {})
            scale = 1e-3 if "spikes" in key else 1e-6 if "ops" in key else 1
            txt = [fmt.format(cells[str(t)][key] * scale) if key in cells.get(str(t), {})
                   else "–" for t in steps]
            lines.append(f"| {net} | {label} | | " + " | ".join(txt) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=cifar_train.DEFAULT_DATA)
    ap.add_argument("--work", type=Path, default=cifar_train.DEFAULT_WORK)
    ap.add_argument("--nets", nargs="+", default=list(NETS), choices=NETS)
    ap.add_argument("--timesteps", type=int, nargs="+", default=list(TIMESTEPS))
    ap.add_argument("--eval-samples", type=int, default=1000)
    ap.add_argument("--calibration-samples", type=int, default=1024)
    ap.add_argument("--finetune", action="store_true", help="add the --finetune distill rows")
    ap.add_argument("--finetune-timesteps", type=int, nargs="+", default=None,
                    help=f"the T of the --finetune rows (default: those <= {FINETUNE_MAX_T})")
    ap.add_argument("--sj-python", default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reuse", action="store_true",
                    help="take a cell from an earlier run of the same command in --work/runs")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "cifar.json")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    train_args = [sys.executable, "-m", "benchmarks.cifar_train", "--data", str(args.data),
                  "--work", str(args.work), "--threads", str(args.threads),
                  "--nets", *args.nets]
    if not all((args.work / f"{n}.onnx").exists() for n in args.nets):
        subprocess.run(train_args, check=True, cwd=ROOT)
    calib, test = data_files(args.work, args.data, args.eval_samples, args.calibration_samples)
    results: dict[str, Any] = {
        "eval_samples": args.eval_samples, "calibration_samples": args.calibration_samples,
        "threads": args.threads, "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(), "device": "cuda" if torch.cuda.is_available() else "cpu",
        "networks": {}}
    if args.out.exists():  # networks run earlier into the same file stay (one per command)
        old = json.loads(args.out.read_text())
        if old.get("eval_samples") == args.eval_samples:
            results["networks"] = {k: v for k, v in old["networks"].items()
                                   if k not in args.nets}
    for net in args.nets:
        onnx = args.work / f"{net}.onnx"
        rows = {"snn-compile (defaults)": snn_rows(net, onnx, calib, test, args, [],
                                                   "defaults", args.timesteps)}
        if args.finetune:
            rows["snn-compile --finetune distill"] = snn_rows(
                net, onnx, calib, test, args,
                ["--finetune", "distill", "--finetune-epochs", "2"], "finetune",
                args.finetune_timesteps or [t for t in args.timesteps if t <= FINETUNE_MAX_T])
        first = next(v for v in rows["snn-compile (defaults)"].values() if "accuracy" in v)
        results["networks"][net] = {"ann_accuracy": first["ann_accuracy"], "rows": rows}
    if args.sj_python:
        sj = spikingjelly(args.sj_python, {n: args.work / f"{n}.pt" for n in args.nets}, calib,
                          test, max(args.timesteps), args.work, args.threads)
        for net, recipes in sj["models"].items():
            best = {}
            for t in TIMESTEPS:
                accs = {k: v["accuracy_by_timestep"][t - 1] for k, v in recipes.items()
                        if "accuracy_by_timestep" in v}
                if accs:
                    k = max(accs, key=accs.get)
                    best[str(t)] = {"accuracy": accs[k], "recipe": k}
            if not best:  # every recipe refused the network: say why, once
                best = {"error": next(v["error"] for v in recipes.values() if "error" in v)}
            results["networks"][net]["rows"]["SpikingJelly 2.0 (best recipe per T)"] = best
            results["networks"][net]["spikingjelly"] = recipes
    results["load_average_at_end"] = os.getloadavg()
    results["table"] = table(results, TIMESTEPS)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(results["table"])
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
