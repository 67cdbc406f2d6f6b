"""Benchmark of the ``--target loihi`` Lava simulation against the GPU simulator.

    .venv/bin/python -m benchmarks.lava_sim                # digits CNN, T=32, 32 samples
    .venv/bin/python -m benchmarks.lava_sim --samples 8    # quicker

Model: the bundled digits CNN (``examples/digits_cnn.onnx``), converted with the default
pipeline, first N digits test images, T=32. Rows:

- Lava ``fixed_pt`` and ``floating_pt`` (default synapses: pool+conv runs as an equivalent Lava
  Dense), and ``fixed_pt`` with every conv a Lava ``Conv`` (``conv_as_dense_limit=0``);
- the GPU simulator (torch, CPU here), float and Loihi fixed-point mode, on the same samples.

Columns: ``build_s`` (Process objects + source data), ``compile_s`` (Lava compile, runtime
start, first step), ``ms_per_step`` (steady state, all remaining N·T + depth steps),
``ms_per_step_per_process``, ``samples_per_s`` (N / whole ``run`` call) and
``steady_samples_per_s`` (1000 / (T · ms_per_step)), and ``gpu_ratio`` = GPU float samples/s
over the row's samples/s. Writes benchmarks/results/lava_sim.json and prints a markdown table.
Timings on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import snncompile
from snncompile.backends.gpu import compile as gpu_compile
from snncompile.backends.loihi import compile as lava_compile
from snncompile.backends.loihi import compile_reference as loihi_reference
from snncompile.data import digits

ROOT = Path(__file__).resolve().parents[1]

RESULTS = ROOT / "benchmarks" / "results"
DIGITS_CNN = ROOT / "examples" / "digits_cnn.onnx"


def lava_row(graph: Any, x: Any, steps: int, mode: str, conv_limit: int | None) -> dict[str, Any]:
    net = lava_compile(graph, snncompile.CompileOptions(lava_mode=mode))
    if conv_limit is not None:
        net.conv_as_dense_limit = conv_limit
    res = net.run(x, steps, progress=False)
    r = net.last_run
    name = f"lava {'fixed_pt' if mode == 'fixed' else 'floating_pt'}"
    if conv_limit == 0:
        name += " (all Lava Conv)"
    return {"backend": name, "samples": len(x), "timesteps": steps, "lava_steps": r.steps,
            "processes": r.processes, "build_s": r.build_seconds, "compile_s": r.compile_seconds,
            "steps_s": r.run_seconds, "read_back_s": r.get_seconds, "stop_s": r.stop_seconds,
            "ms_per_step": r.ms_per_step, "ms_per_step_per_process": r.ms_per_step / r.processes,
            "samples_per_s": r.samples_per_second,
            "steady_samples_per_s": 1000.0 / (steps * r.ms_per_step),
            "predictions": res.predictions[-1].tolist()}


def gpu_row(graph: Any, x: Any, steps: int, numeric: str, repeats: int = 3) -> dict[str, Any]:
    compile_ref = loihi_reference if numeric == "loihi" else gpu_compile
    net = compile_ref(graph, snncompile.CompileOptions())
    best = float("inf")
    res = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = net.run(x, steps, progress=False)
        best = min(best, time.perf_counter() - t0)
    return {"backend": f"gpu sim ({numeric}, {res.device})", "samples": len(x),
            "timesteps": steps, "samples_per_s": len(x) / best, "seconds": best,
            "predictions": res.predictions[-1].tolist()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--samples", type=int, default=32)
    p.add_argument("--timesteps", type=int, default=32)
    p.add_argument("--skip-conv", action="store_true", help="skip the all-Lava-Conv row")
    a = p.parse_args()
    import torch

    torch.set_num_threads(2)
    graph, _, _ = snncompile.convert(DIGITS_CNN, target="loihi", dataset="digits")
    x = digits("test").x[:a.samples]
    rows = [gpu_row(graph, x, a.timesteps, "float"), gpu_row(graph, x, a.timesteps, "loihi")]
    for mode in ("fixed", "float"):
        rows.append(lava_row(graph, x, a.timesteps, mode, None))
    if not a.skip_conv:
        rows.append(lava_row(graph, x, a.timesteps, "fixed", 0))
    gpu_sps = rows[0]["samples_per_s"]
    for r in rows:
        r["gpu_ratio"] = gpu_sps / r["samples_per_s"]
    ref = rows[1]["predictions"]
    for r in rows:
        r["same_predictions_as_gpu_loihi_mode"] = float(
            sum(int(u == v) for u, v in zip(r["predictions"], ref)) / len(ref))
        del r["predictions"]
    print(f"digits CNN, T={a.timesteps}, {a.samples} samples, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.1f}")
    print("| backend | processes | compile s | ms/step | ms/step/process | samples/s "
          "| steady samples/s | GPU float / this |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "ms_per_step" in r:
            print(f"| {r['backend']} | {r['processes']} | {r['compile_s']:.2f} | "
                  f"{r['ms_per_step']:.2f} | {r['ms_per_step_per_process']:.2f} | "
                  f"{r['samples_per_s']:.2f} | {r['steady_samples_per_s']:.2f} | "
                  f"{r['gpu_ratio']:.0f}x |")
        else:
            print(f"| {r['backend']} | - | - | - | - | {r['samples_per_s']:.1f} | - | "
                  f"{r['gpu_ratio']:.1f}x |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {"model": "examples/digits_cnn.onnx", "timesteps": a.timesteps, "samples": a.samples,
           "machine": {"cpus": os.cpu_count(), "load_avg_1min": os.getloadavg()[0],
                       "python": platform.python_version(), "torch": torch.__version__},
           "rows": rows}
    (RESULTS / "lava_sim.json").write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {RESULTS / 'lava_sim.json'}")


if __name__ == "__main__":
    main()
