"""Benchmark of ``torchrun --nproc-per-node N -m snncompile``: 1 vs 2 processes.

    .venv/bin/python -m benchmarks.distributed         # digits CNN: gpu T=32, Lava 16 samples
    .venv/bin/python -m benchmarks.distributed --lava-samples 8

Rows (the bundled digits CNN, ``examples/digits_cnn.onnx``, default pipeline, CPU, gloo):

- ``gpu``: ``--target gpu --dataset digits`` (540 evaluation samples, T=32, batch 64; 512
  calibration samples) with 1 process × 1 thread, 1 process × 2 threads and 2 processes × 1
  thread each. ``sim_s`` is the report's ``simulation_seconds`` (the slowest rank's streamed
  simulation, data loading included), ``wall_s`` the whole command (interpreter start, ONNX
  import, calibration, report). Scaling efficiency = t(1 process) / (N · t(N processes)) on
  ``sim_s``, against the 1-thread single process.
- ``loihi``: ``--target loihi`` on the first ``--lava-samples`` test digits, T=16: each rank runs
  its own Lava runtime on its block; ``samples_per_s`` is the report's aggregate
  ``lava_samples_per_second`` (all samples / the slowest rank's Lava run).

Every row also checks that the 2-process report equals the 1-process one (accuracy by timestep,
spikes per sample, thresholds). The machine load (``uptime``) is recorded before and after: on
a small shared machine (2 cores, other jobs) the scaling numbers say more about the load than
about the code. Writes benchmarks/results/distributed.json and prints a markdown table.
``benchmarks/scale.py`` runs the same rows (``gpu_rows``, ``lava_rows``) on resnet18 at 224×224.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DIGITS_CNN = ROOT / "examples" / "digits_cnn.onnx"


def _load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(procs: int, threads: int, args: list[str]) -> tuple[dict[str, Any], float]:
    out = Path(tempfile.mkdtemp(prefix="snn-bench-dist-")) / "o"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONWARNINGS": "ignore",
           "PYTHONPATH": str(ROOT)}
    cmd = [str(Path(sys.executable).with_name("torchrun")), "--nproc-per-node", str(procs),
           "--master-addr", "127.0.0.1", "--master-port", str(_port()), "-m", "snncompile",
           *args, "--out", str(out)]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=1800)
    wall = time.perf_counter() - t0
    try:
        if res.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}\n{res.stderr[-3000:]}")
        return json.loads((out / "report.json").read_text()), wall
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)


def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    keys = ("accuracy_by_timestep", "spikes_per_sample", "synaptic_ops_per_sample", "samples")
    return all(a[k] == b[k] for k in keys) and [ly["threshold"] for ly in a["layers"]] == [
        ly["threshold"] for ly in b["layers"]]


def gpu_rows(args: list[str], configs: tuple[tuple[int, int], ...] = ((1, 1), (1, 2), (2, 1)),
             label: str = "") -> list[dict[str, Any]]:
    """``--target gpu`` CLI runs (``args``) for each (processes, threads per process); scaling
    efficiency = t(first config) / (processes · t) on the report's ``simulation_seconds``."""
    rows: list[dict[str, Any]] = []
    base = None
    for procs, threads in configs:
        before = os.getloadavg()
        rep, wall = run(procs, threads, args)
        base = base or rep
        rows.append({"target": "gpu", "model": label, "processes": procs,
                     "threads_per_process": threads, "samples": rep["samples"],
                     "timesteps": rep["timesteps"], "sim_s": rep["simulation_seconds"],
                     "wall_s": wall, "samples_per_s": rep["samples"] / rep["simulation_seconds"],
                     "same_as_1_process": same(base, rep), "load_before": before,
                     "load_after": os.getloadavg()})
    for r in rows:
        r["scaling_efficiency"] = rows[0]["sim_s"] / (r["processes"] * r["sim_s"])
    return rows


def lava_rows(args: list[str], procs_list: tuple[int, ...] = (1, 2),
              label: str = "") -> list[dict[str, Any]]:
    """``--target loihi`` CLI runs (``args``) with 1, 2, ... ranks of 1 thread; efficiency =
    samples/s / (ranks · samples/s of the first row), on the report's aggregate
    ``lava_samples_per_second``."""
    rows: list[dict[str, Any]] = []
    base = None
    for procs in procs_list:
        before = os.getloadavg()
        rep, wall = run(procs, 1, args)
        base = base or rep
        sps = rep["lava_samples_per_second"]
        rows.append({"target": "loihi", "model": label, "processes": procs,
                     "threads_per_process": 1, "samples": rep["samples"],
                     "timesteps": rep["timesteps"], "sim_s": rep["samples"] / sps,
                     "wall_s": wall, "samples_per_s": sps, "spike_exact": rep["spike_exact"],
                     "same_as_1_process": same(base, rep),
                     "lava_processes_per_rank": rep["lava_processes"], "load_before": before,
                     "load_after": os.getloadavg()})
    for r in rows:
        r["scaling_efficiency"] = r["samples_per_s"] / (r["processes"] * rows[0]["samples_per_s"])
    return rows


def digits_gpu_args(timesteps: int) -> list[str]:
    return [str(DIGITS_CNN), "--target", "gpu", "--dataset", "digits", "--timesteps",
            str(timesteps), "--batch-size", "64", "--device", "cpu", "--no-tune"]


def digits_lava_args(samples: int, timesteps: int) -> list[str]:
    return [str(DIGITS_CNN), "--target", "loihi", "--dataset", "digits", "--timesteps",
            str(timesteps), "--eval-samples", str(samples), "--device", "cpu", "--no-tune"]


def markdown(rows: list[dict[str, Any]]) -> str:
    out = ["| target | model | processes × threads | samples | T | sim s | wall s | samples/s "
           "| scaling eff. | same report | load |", "|" + "---|" * 11]
    for r in rows:
        out.append(f"| {r['target']} | {r['model']} | {r['processes']} × "
                   f"{r['threads_per_process']} | {r['samples']} | {r['timesteps']} "
                   f"| {r['sim_s']:.2f} | {r['wall_s']:.1f} | {r['samples_per_s']:.1f} "
                   f"| {r['scaling_efficiency']:.2f} "
                   f"| {'yes' if r['same_as_1_process'] else 'NO'} "
                   f"| {r['load_after'][0]:.1f} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--timesteps", type=int, default=32)
    ap.add_argument("--lava-samples", type=int, default=16)
    ap.add_argument("--lava-timesteps", type=int, default=16)
    a = ap.parse_args()
    load_before = _load()
    rows = gpu_rows(digits_gpu_args(a.timesteps), label="digits_cnn")
    rows += lava_rows(digits_lava_args(a.lava_samples, a.lava_timesteps), label="digits_cnn")
    doc = {"rows": rows, "load_before": load_before, "load_after": _load(),
           "cpus": os.cpu_count(), "machine": platform.platform(),
           "python": platform.python_version(),
           "command": "python -m benchmarks.distributed " + " ".join(sys.argv[1:])}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "distributed.json").write_text(json.dumps(doc, indent=1) + "\n")
    print(markdown(rows))
    print(f"load before: {load_before}\nload after:  {doc['load_after']}; {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
