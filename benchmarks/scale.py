"""ImageNet-sized simulation (issue 12): peak memory against T and against ``--memory-budget``,
time against T × ANN forward, image·steps per second.

    .venv/bin/python benchmarks/scale.py                      # resnet18 + vgg11_bn at 224, CPU
    .venv/bin/python benchmarks/scale.py --models resnet18 --images 2 --timesteps 32 128
    .venv/bin/python benchmarks/scale.py --speed-models resnet18 vgg11_bn mobilenet_v2

Models: torchvision resnet18, vgg11_bn, mobilenet_v2 with seeded random weights (speed and
memory do not depend on training), 3×224×224, exported to ONNX, converted with ``norm=max`` on
2 random calibration images (firing rates then are those of random weights: stated per run).

- **Memory** (``memory`` rows): each configuration runs in a fresh subprocess that loads the
  converted IR, builds the network and runs ``GpuNetwork.run`` on the images. ``process_peak_mb``
  is the child's lifetime peak resident set (VmHWM of /proc/self/status read before and after
  the run: interpreter, torch (~0.7 GB resident on import here), weights, fan-outs, input and
  the run), the figure a ``--memory-budget`` must bound. ``ru_maxrss`` is not used: Linux
  carries the parent's high-water mark into a fork+exec'd child (it is kept in the JSON as
  ``ru_maxrss_mb``); ``setup_peak_mb`` is the peak before the run; ``run_peak_mb`` is the run's own
  peak above the resident set before it (VmHWM after resetting it through
  /proc/self/clear_refs, after glibc's malloc_trim). ``pieces``: samples × time-chunk steps the
  budget picked. Done criteria: resnet18 process peak at T=128 ≤ 1.2 × at T=32; every budget
  row under its budget.
- **Speed** (``speed`` rows, in this process, same threads): ``ann_s`` = one forward pass of the
  IR's ANN mode (``gpu_sim.AnnModule``: the same lowerings with ReLU) on the same images, best
  of 3; ``snn_s`` = one ``GpuNetwork.run`` (default budget), best of ``--repeats``;
  ``ratio`` = snn_s / (T · ann_s), the issue's floor (goal ≤ 1.5; depthwise ≤ 2).
  ``ratio_vs_batched_ann`` divides by T·N / (ANN throughput at the simulator's rows per op
  instead): the floor of a dense simulator that batches T·N images per op.

Distributed columns (1 vs 2 processes, Lava ranks) are added by the torch.distributed work of
issue 12 (``distributed`` key in the JSON, left ``null`` here).

The machine is shared: every figure is stated with ``uptime``'s load and the thread count.
Writes benchmarks/results/scale.json and scale.md.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
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

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

RESULTS = ROOT / "benchmarks" / "results"
SIZE = 224


def load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def export(name: str, d: Path) -> Path:
    import torchvision

    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None).eval()
    path = d / f"{name}.onnx"
    torch.onnx.export(model, torch.rand(1, 3, SIZE, SIZE), path, dynamo=False,
                      opset_version=17)
    return path


def images(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 3, SIZE, SIZE), dtype=np.float32)


def convert(name: str, d: Path) -> tuple[Path, Path]:
    """ONNX export + conversion; returns (onnx path, folder holding the spiking IR)."""
    import snncompile
    from snncompile.ir.serialize import save

    onnx = export(name, d)
    ir, _, _ = snncompile.convert(onnx, target="gpu", calibration=images(2, seed=0),
                                  norm="max", calibration_samples=2)
    if not any(getattr(op, "neuron", None) is not None for _, op in ir.topo()):
        raise SystemExit(f"{name}: the conversion left no spiking layer")
    save(ir, d / name)
    return onnx, d / name


# ----------------------------------------------------------------------------- memory
def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def memory_child(ir_dir: str, steps: int, n: int, budget: str | None, threads: int) -> None:
    """In a fresh process: build, run once, print one JSON line."""
    torch.set_num_threads(threads)
    from snncompile.backends.gpu import compile as gpu_compile
    from snncompile.ir.serialize import load as load_ir
    from snncompile.options import CompileOptions

    net = gpu_compile(load_ir(ir_dir), CompileOptions(device="cpu", timesteps=steps,
                                                        memory_budget=budget))
    x = images(n)
    setup_peak = _status_kib("VmHWM")  # import, IR, module, fan-outs
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = _status_kib("VmRSS")
    t0 = time.perf_counter()
    res = net.run(x, steps, progress=False)
    secs = time.perf_counter() - t0
    run_hwm = _status_kib("VmHWM")
    spikes = sum(float(v.sum()) for v in res.layer_spikes.values())
    units = sum(res.layer_neurons.values()) * steps * n
    out = {"run_peak_mb": (run_hwm - before) / 1024, "rss_before_mb": before / 1024,
           "setup_peak_mb": setup_peak / 1024,
           "process_peak_mb": max(setup_peak, run_hwm) / 1024,
           "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "pieces": [net.pieces.batch, net.pieces.chunk], "seconds": secs,
           "img_steps_per_s": n * steps / secs, "firing_rate": spikes / units}
    print(json.dumps(out))


def memory_row(name: str, ir_dir: Path, steps: int, n: int, budget: str | None,
               threads: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--_child", str(ir_dir), str(steps), str(n),
           budget or "", str(threads)]
    ld = load()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=3600,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    if r.returncode != 0:
        raise SystemExit(r.stderr[-3000:])
    row = json.loads(r.stdout.strip().splitlines()[-1])
    row.update(kind="memory", model=name, timesteps=steps, images=n, threads=threads,
               budget=budget or "default", load_before=ld, load_after=load())
    if budget:
        from snncompile.options import parse_bytes

        row["budget_mb"] = parse_bytes(budget) / 2**20
        row["under_budget"] = row["process_peak_mb"] <= row["budget_mb"]
    return row


# ----------------------------------------------------------------------------- speed
def speed_row(name: str, onnx: Path, ir_dir: Path, steps: int, n: int, repeats: int,
              threads: int) -> dict[str, Any]:
    from gpu_sim import AnnModule

    import snncompile
    from snncompile.backends.gpu import compile as gpu_compile
    from snncompile.ir.serialize import load as load_ir
    from snncompile.options import CompileOptions

    net = gpu_compile(load_ir(ir_dir), CompileOptions(device="cpu", timesteps=steps))
    ann = AnnModule(snncompile.compile(onnx, target="ir")).eval()
    x = images(n)
    xb = torch.from_numpy(x)
    ld = load()
    with torch.no_grad():
        ann(xb)
        ann_s = min(_time(lambda: ann(xb)) for _ in range(3))
        snn = [_time(lambda: net.run(x, steps, progress=False)) for _ in range(repeats)]
        rows = net.pieces.batch * net.pieces.chunk
        xr = torch.from_numpy(images(rows))
        ann(xr)
        ann_rows_s = min(_time(lambda: ann(xr)) for _ in range(2))
    snn_s = min(snn)
    return {"kind": "speed", "model": name, "timesteps": steps, "images": n,
            "threads": threads, "ann_s": ann_s, "snn_s": snn_s,
            "ratio": snn_s / (steps * ann_s),
            "ann_rows": rows, "ann_rows_s": ann_rows_s,
            "ratio_vs_batched_ann": snn_s / (steps * n * ann_rows_s / rows),
            "img_steps_per_s": n * steps / snn_s,
            "pieces": [net.pieces.batch, net.pieces.chunk],
            "load_before": ld, "load_after": load()}


def _time(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# ----------------------------------------------------------------------------- report
def table(rows: list[dict[str, Any]]) -> str:
    mem = [r for r in rows if r["kind"] == "memory"]
    spd = [r for r in rows if r["kind"] == "speed"]
    out = ["| model | T | images | budget | pieces (b×Tc) | process peak MB | run peak MB "
           "| under budget | s | img·steps/s | load |", "|" + "---|" * 11]
    for r in mem:
        out.append(f"| {r['model']} | {r['timesteps']} | {r['images']} | {r['budget']} "
                   f"| {r['pieces'][0]}×{r['pieces'][1]} | {r['process_peak_mb']:.0f} "
                   f"| {r['run_peak_mb']:.0f} | {r.get('under_budget', '')} "
                   f"| {r['seconds']:.1f} | {r['img_steps_per_s']:.2f} "
                   f"| {r['load_after'][0]:.1f} |")
    if spd:  # noqa: SIM102
        out += ["", "| model | T | images | threads | ANN fwd (s) | SNN run (s) "
                "| SNN / (T·ANN) | SNN / batched-ANN floor | img·steps/s | load |",
                "|" + "---|" * 10]
        for r in spd:
            out.append(f"| {r['model']} | {r['timesteps']} | {r['images']} | {r['threads']} "
                       f"| {r['ann_s']:.3f} | {r['snn_s']:.1f} | {r['ratio']:.2f} "
                       f"| {r['ratio_vs_batched_ann']:.2f} | {r['img_steps_per_s']:.2f} "
                       f"| {r['load_after'][0]:.1f} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="*", default=["resnet18", "vgg11_bn"])
    ap.add_argument("--timesteps", nargs="+", type=int, default=[32, 128])
    ap.add_argument("--budgets", nargs="+", default=["resnet18:1G", "vgg11_bn:3G"],
                    help="MODEL:BUDGET --memory-budget runs, at the largest T")
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--speed-models", nargs="*", default=["resnet18", "vgg11_bn",
                                                          "mobilenet_v2"])
    ap.add_argument("--speed-timesteps", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--out", type=Path, default=RESULTS / "scale.json")
    ap.add_argument("--_child", nargs=5, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a._child:
        ir_dir, steps, n, budget, threads = a._child
        memory_child(ir_dir, int(steps), int(n), budget or None, int(threads))
        return
    from tqdm import tqdm

    torch.set_num_threads(a.threads)
    jobs: list[tuple[str, Any]] = []
    for m in a.models:
        jobs += [("memory", (m, t, None)) for t in a.timesteps]
        jobs += [("memory", (m, max(a.timesteps), b.split(":", 1)[1])) for b in a.budgets
                 if b.split(":", 1)[0] == m]
    jobs += [("speed", m) for m in a.speed_models]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as d:
        converted: dict[str, tuple[Path, Path]] = {}
        for kind, job in tqdm(jobs, desc="scale benchmark", unit="run"):
            name = job[0] if kind == "memory" else job
            if name not in converted:
                converted[name] = convert(name, Path(d))
            onnx, ir_dir = converted[name]
            if kind == "memory":
                rows.append(memory_row(name, ir_dir, job[1], a.images, job[2], a.threads))
            else:
                rows.append(speed_row(name, onnx, ir_dir, a.speed_timesteps, a.images,
                                      a.repeats, a.threads))
            tqdm.write(json.dumps(rows[-1]))
    checks = {}
    for m in a.models:
        peaks = {r["timesteps"]: r["process_peak_mb"] for r in rows
                 if r["kind"] == "memory" and r["model"] == m and r["budget"] == "default"}
        if len(peaks) >= 2:
            lo, hi = min(peaks), max(peaks)
            checks[f"{m}: peak T={hi} / T={lo}"] = peaks[hi] / peaks[lo]
    info = {"machine": platform.platform(), "cpu_count": os.cpu_count(), "threads": a.threads,
            "torch": torch.__version__, "image_size": SIZE, "rows": rows, "checks": checks,
            "distributed": None,
            "method": "memory: fresh subprocess per row, ru_maxrss (process) and VmHWM after "
                      "clear_refs (run); speed: same process and threads, best of runs"}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(info, indent=1) + "\n")
    md = table(rows) + "\n\n" + "\n".join(f"- {k}: {v:.2f}" for k, v in checks.items()) + "\n"
    a.out.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
