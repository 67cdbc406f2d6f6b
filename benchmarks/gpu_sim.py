"""Benchmark of the ``--target gpu`` simulator: throughput, peak memory, and the cost over the ANN.

    .venv/bin/python -m benchmarks.gpu_sim                  # CPU (and CUDA when present)
    .venv/bin/python -m benchmarks.gpu_sim --device cpu --repeats 5
    .venv/bin/python -m benchmarks.gpu_sim --quick          # smoke run: small batch, T=8

Two models: the bundled digits CNN (``examples/digits_cnn.onnx``, 1×8×8, digits test images) and a
deeper VGG-style CNN on 1×32×32 (five 3×3 convs, three AvgPools, two dense layers; seeded random
weights, exported to ONNX in a temp dir, thresholds calibrated on uniform random inputs).

For each model and device, at T timesteps and batch B (default T=32, B=256):

- ``snn_run_s``: one ``GpuNetwork.run(x, T)`` on B images (the whole user-facing call:
  simulation, spike and synop counting, predictions at every t), best of ``--repeats`` rounds;
- ``ann_s``: one float forward pass of the same network's ANN (the IR's ANN mode: the frontend
  graph's ops with ReLU, weights pre-placed on the device, same torch kernels), timed as T
  passes in a row and divided by T, best of the same rounds (interleaved with the SNN's);
- ``ratio`` = snn_s / (T · ann_s): ``T × ANN time`` is what a dense simulator cannot beat. Goal
  (issue 3): ratio ≤ 1.5;
- ``img_steps_per_s`` = B·T / snn_s;
- ``peak_mb``: peak memory of one run above what the process held before it, measured in a fresh
  subprocess. CPU: peak RSS (VmHWM, reset through /proc/self/clear_refs after glibc's
  malloc_trim; else the growth of ``ru_maxrss``) minus the RSS before the run (tracemalloc does
  not see torch's allocator); CUDA:
  ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``.

Writes benchmarks/results/gpu_sim.json and prints a markdown table. Timings on a shared machine
are noisy: take the best of several repeats, and compare runs only on the same machine.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import snncompile
from snncompile.backends.gpu.lowerings import lower
from snncompile.data import digits
from snncompile.interp import activation, run_ann
from snncompile.ir.graph import Graph
from snncompile.ir.nodes import Input, Layer

ROOT = Path(__file__).resolve().parents[1]

RESULTS = ROOT / "benchmarks" / "results"
DIGITS_CNN = ROOT / "examples" / "digits_cnn.onnx"


# ----------------------------------------------------------------------------- models
def vgg32(seed: int = 0) -> nn.Module:
    """VGG-style CNN on 1×32×32: conv16 conv16 pool conv32 conv32 pool conv64 pool fc128 fc10."""
    torch.manual_seed(seed)

    def block(c_in: int, c_out: int) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU()]

    return nn.Sequential(
        *block(1, 16), *block(16, 16), nn.AvgPool2d(2),
        *block(16, 32), *block(32, 32), nn.AvgPool2d(2),
        *block(32, 64), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(64 * 4 * 4, 128), nn.ReLU(), nn.Linear(128, 10)).eval()


def export_onnx(model: nn.Module, shape: tuple[int, ...], path: Path) -> Path:
    torch.onnx.export(model, (torch.zeros(1, *shape),), str(path), input_names=["input"],
                      output_names=["logits"], opset_version=17, dynamo=False,
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return path


def model_inputs(name: str, tmp: Path, batch: int) -> tuple[Path, np.ndarray, np.ndarray]:
    """(onnx path, calibration x, benchmark batch x) for a model name."""
    if name == "digits_cnn":
        cal = digits("train").x[:512]
        te = digits("test").x
        x = np.concatenate([te] * (batch // len(te) + 1))[:batch]
        return DIGITS_CNN, cal, x
    if name == "vgg32":
        rng = np.random.default_rng(0)
        path = export_onnx(vgg32(), (1, 32, 32), tmp / "vgg32.onnx")
        cal = rng.random((512, 1, 32, 32), dtype=np.float32)
        x = rng.random((batch, 1, 32, 32), dtype=np.float32)
        return path, cal, x
    raise SystemExit(f"unknown model {name!r}")


class AnnModule(nn.Module):
    """The IR's ANN mode as a torch module: each op's linear part (the simulator's own lowering,
    weights as device buffers) followed by the layer's activation."""

    def __init__(self, graph: Graph) -> None:
        super().__init__()
        self.graph = graph
        self.steps: list[tuple[str, list[str], str | None, Any]] = []
        self.ops = nn.ModuleDict()
        for i, (name, op) in enumerate(graph.topo()):
            if isinstance(op, Input):
                self.input_name = name
                continue
            key = f"op{i}"
            self.ops[key] = lower(name, op, torch.float32)
            act = op.act if isinstance(op, Layer) else None
            self.steps.append((name, graph.inputs(name), key, act))
        self.output_name = graph.output_name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        vals = {self.input_name: x}
        for name, ins, key, act in self.steps:
            y = self.ops[key]([vals[i] for i in ins], None)
            vals[name] = activation(act, y) if act is not None else y
        return vals[self.output_name]


# ----------------------------------------------------------------------------- measuring
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_times(fns: dict[str, Any], device: torch.device, repeats: int) -> dict[str, float]:
    """Best wall time of each function over ``repeats`` rounds after a warm-up round (allocator,
    mkldnn / cuDNN algorithm choice). Each round runs every function once, so that a load change
    on a shared machine hits them alike."""
    best = {k: float("inf") for k in fns}
    for r in range(repeats + 1):
        for k, fn in fns.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            if r:
                best[k] = min(best[k], time.perf_counter() - t0)
    return best


def build(name: str, tmp: Path, batch: int, steps: int,
          device: str) -> tuple[Any, nn.Module, np.ndarray, Graph]:
    """(compiled SNN, ANN module on the same device, input batch, ANN IR)."""
    path, cal, x = model_inputs(name, tmp, batch)
    net = snncompile.compile(path, target="gpu", calibration=cal, timesteps=steps, device=device,
                             batch_size=batch)
    ann_ir = snncompile.compile(path, target="ir")
    ann = AnnModule(ann_ir).to(net.device).eval()
    return net, ann, x, ann_ir


def measure_memory(name: str, batch: int, steps: int, device: str, what: str) -> float:
    """Peak memory (MB) of one run, measured in this process (call it in a fresh one)."""
    with tempfile.TemporaryDirectory() as d, torch.no_grad():
        net, ann, x, _ = build(name, Path(d), batch, steps, device)
        dev = net.device
        xb = torch.from_numpy(x).to(dev)
        if what == "ann":
            fn = lambda: ann(xb)  # noqa: E731
        else:
            fn = lambda: net.run(x, steps, progress=False)  # noqa: E731
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
            torch.cuda.reset_peak_memory_stats(dev)
            base = torch.cuda.memory_allocated(dev)
            fn()
            torch.cuda.synchronize(dev)
            return (torch.cuda.max_memory_allocated(dev) - base) / 2**20
        gc.collect()
        _malloc_trim()  # hand free heap pages back, so that the run's own pages count
        if _reset_peak_rss():
            before = _status_kib("VmRSS")
            fn()
            return (_status_kib("VmHWM") - before) / 1024
        # no clear_refs: the growth of the lifetime peak (0 when setup peaked higher)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        fn()
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return (after - before) / 1024  # ru_maxrss is in KiB on Linux


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def _malloc_trim() -> None:
    """glibc: return free heap memory to the OS (setup's freed buffers would otherwise be
    reused by the run without raising RSS, hiding its peak)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak_rss() -> bool:
    """Reset the process's peak RSS (VmHWM) so that it measures what comes next (Linux ≥ 4.0:
    writing 5 to /proc/self/clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _status_kib("VmHWM") <= _status_kib("VmRSS") + 1024
    except (OSError, KeyError):
        return False


def memory_in_subprocess(name: str, batch: int, steps: int, device: str, what: str,
                         threads: int) -> float | None:
    cmd = [sys.executable, "-m", "benchmarks.gpu_sim", "--_memory", name, what,
           "--batch", str(batch), "--timesteps", str(steps), "--device", device,
           "--threads", str(threads)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT)
    if r.returncode != 0:
        print(r.stderr[-2000:], file=sys.stderr)
        return None
    return float(r.stdout.strip().splitlines()[-1])


def bench_one(name: str, device: str, batch: int, steps: int, repeats: int,
              threads: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d, torch.no_grad():
        net, ann, x, ann_ir = build(name, Path(d), batch, steps, device)
        dev = net.device
        xb = torch.from_numpy(x).to(dev)
        # the IR's ANN mode and AnnModule agree (same ops): a guard against timing the wrong net
        ref = run_ann(ann_ir, x[:8])
        np.testing.assert_allclose(ann(xb[:8]).cpu().numpy(), ref, rtol=1e-4, atol=1e-4)
        # T ANN passes per round: the same work as one T-step run, timed as one unit
        times = best_times({"ann": lambda: [ann(xb) for _ in range(steps)],
                            "run": lambda: net.run(x, steps, progress=False)}, dev, repeats)
        ann_s, run_s = times["ann"] / steps, times["run"]
        n_layers = len(net.module.neurons)
    row = {
        "model": name, "device": str(dev), "batch": batch, "timesteps": steps,
        "spiking_layers": n_layers, "threads": threads,
        "ann_s": ann_s, "snn_run_s": run_s, "ratio": run_s / (steps * ann_s),
        "img_steps_per_s": batch * steps / run_s,
        "ann_img_per_s": batch / ann_s,
    }
    row["snn_peak_mb"] = memory_in_subprocess(name, batch, steps, device, "snn", threads)
    row["ann_peak_mb"] = memory_in_subprocess(name, batch, steps, device, "ann", threads)
    return row


def table(rows: list[dict[str, Any]]) -> str:
    head = ("| model | device | threads | B | T | ANN fwd (ms) | SNN run (s) "
            "| ratio SNN/(T·ANN) | img·steps/s | SNN peak MB | ANN peak MB |")
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        mem = lambda v: "n/a" if v is None else f"{v:.0f}"  # noqa: E731
        lines.append(
            f"| {r['model']} | {r['device']} | {r['threads']} | {r['batch']} | {r['timesteps']} "
            f"| {r['ann_s'] * 1e3:.1f} | {r['snn_run_s']:.3f} | {r['ratio']:.2f} "
            f"| {r['img_steps_per_s']:,.0f} | {mem(r['snn_peak_mb'])} | {mem(r['ann_peak_mb'])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("all", "cpu", "cuda"), default="all",
                    help="all: CPU, plus CUDA when torch sees a GPU")
    ap.add_argument("--models", default="digits_cnn,vgg32")
    ap.add_argument("--timesteps", type=int, default=32)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", default=str(torch.get_num_threads()),
                    help="torch CPU threads, a comma list runs each (default: torch's default)")
    ap.add_argument("--quick", action="store_true", help="smoke run: B=32, T=8, 1 repeat")
    ap.add_argument("--out", type=Path, default=RESULTS / "gpu_sim.json")
    ap.add_argument("--_memory", nargs=2, metavar=("MODEL", "WHAT"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    threads = [int(t) for t in a.threads.split(",")]
    torch.set_num_threads(threads[0])
    if a._memory:
        print(measure_memory(a._memory[0], a.batch, a.timesteps, a.device, a._memory[1]))
        return
    if a.quick:
        a.batch, a.timesteps, a.repeats = 32, 8, 1
    devices = ["cpu", "cuda"] if a.device == "all" else [a.device]
    if "cuda" in devices and not torch.cuda.is_available():
        if a.device == "cuda":
            raise SystemExit("--device cuda, but torch sees no GPU")
        devices.remove("cuda")
    rows = []
    for dev in devices:
        for n_threads in threads if dev == "cpu" else threads[:1]:
            torch.set_num_threads(n_threads)
            for name in a.models.split(","):
                row = bench_one(name, dev, a.batch, a.timesteps, a.repeats, n_threads)
                rows.append(row)
                print(f"{name} on {dev} ({n_threads} threads): ratio {row['ratio']:.2f}, "
                      f"{row['img_steps_per_s']:,.0f} img·steps/s", file=sys.stderr)
    print(table(rows))
    info = {"benchmark": "gpu_sim", "goal": "ratio <= 1.5 at T=32, batch 256",
            "machine": {"platform": platform.platform(), "processor": platform.processor(),
                        "cpu_count": __import__("os").cpu_count(), "torch": torch.__version__,
                        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available()
                        else None},
            "command": " ".join([Path(sys.executable).name, "-m", "benchmarks.gpu_sim",
                                 *sys.argv[1:]]),
            "quick": a.quick, "repeats": a.repeats,
            "load_average_at_end": __import__("os").getloadavg(), "rows": rows}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(info, indent=1) + "\n")
    print(f"wrote {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
