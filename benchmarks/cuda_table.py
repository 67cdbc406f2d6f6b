"""The CUDA table: the ``--target gpu`` simulator on a GPU, at 224×224, against SpikingJelly 2.0.

    python -m benchmarks.cuda_table          # on a machine with CUDA (and spikingjelly)
    .venv/bin/python -m benchmarks.cuda_table --device cpu --quick --models resnet18   # smoke run

Models: torchvision's resnet18, vgg11_bn and mobilenet_v2 (seed 0, random weights: speed and
memory do not depend on training), exported to ONNX and converted with ``--norm max`` on 4
random calibration images, as ``benchmarks/scale.py`` does on the CPU. For each model and T
(default 32 and 128), on ``--images`` images (default 32) at once:

- ``ann_s``: one forward pass of the same network's ANN on the same device (``gpu_sim``'s
  ``AnnModule``: the simulator's own lowerings with ReLU), best of 5 after a warm-up;
- ``snn_s``: one ``GpuNetwork.run(x, T)`` (the whole user-facing call: host→device copy,
  simulation, spike and synaptic-op counts, predictions at every t), best of ``--repeats``;
- ``ratio`` = snn_s / (T · ann_s): what a dense simulator of T steps cannot beat is 1;
- ``img_steps_per_s`` = images · T / snn_s;
- ``peak_mb``: ``torch.cuda.max_memory_allocated`` during the run above what was allocated
  before it (weights and buffers excluded); ``peak_T/peak_T0``: its growth with T;
- SpikingJelly 2.0 (``sj2_runner.py``'s speed job, ``FXConverter(RateCodingRecipe("max"))`` on
  the same state dict, loaded into the twin of torchvision's model in ``benchmarks/models.py``):
  single-step and multi-step (chunks of 8 and 32 steps) modes; its fastest mode whose summed
  output agrees with the single-step loop's; input already on the GPU.

Also on the same machine: the ``faithful`` rows, the bundled digits CNN compiled with the tuner
for T=16 on CUDA and on the CPU (same pipeline chosen? same accuracy at every t? largest
difference of the spike counts per layer). Writes benchmarks/results/cuda_table.{json,md}.
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
from typing import Any

import numpy as np
import torch

from benchmarks.scale import SIZE, export, images

ROOT = Path(__file__).resolve().parents[1]

RESULTS = ROOT / "benchmarks" / "results"
SJ_MODELS = ("resnet18", "vgg11_bn")  # those with a twin in models.IMAGENET


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def best(fn: Any, dev: torch.device, repeats: int) -> list[float]:
    fn()  # warm-up: cuDNN's algorithm choice, the allocator
    out = []
    for _ in range(repeats):
        sync(dev)
        t0 = time.perf_counter()
        fn()
        sync(dev)
        out.append(time.perf_counter() - t0)
    return out


@torch.no_grad()
def ours(name: str, d: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    from gpu_sim import AnnModule

    import snncompile
    from snncompile.backends.gpu import compile as gpu_compile
    from snncompile.options import CompileOptions

    onnx = export(name, d, args.size)
    ir, _, _ = snncompile.convert(onnx, target="gpu", calibration=images(4, 0, args.size),
                                  norm="max", calibration_samples=4)
    dev = torch.device(args.device)
    ann = AnnModule(snncompile.compile(onnx, target="ir")).to(dev).eval()
    x = images(args.images, size=args.size)
    xb = torch.from_numpy(x).to(dev)
    ann_s = min(best(lambda: ann(xb), dev, 5))
    rows = []
    for steps in args.timesteps:
        net = gpu_compile(ir, CompileOptions(device=args.device, timesteps=steps, tf32=args.tf32))
        last: dict[str, Any] = {}
        times = best(lambda: last.update(r=net.run(x, steps, progress=False)),
                     dev, args.repeats)
        res = last.pop("r")
        peak = None
        if dev.type == "cuda":
            sync(dev)
            torch.cuda.reset_peak_memory_stats(dev)
            base = torch.cuda.memory_allocated(dev)
            net.run(x, steps, progress=False)
            sync(dev)
            peak = (torch.cuda.max_memory_allocated(dev) - base) / 2**20
        snn_s = min(times)
        rate = (sum(float(v.sum()) for v in res.layer_spikes.values())
                / (sum(res.layer_neurons.values()) * steps * len(x)))
        rows.append({"kind": "ours", "tf32": args.tf32, "model": name, "timesteps": steps,
                     "images": len(x),
                     "ann_s": ann_s, "snn_s": snn_s, "snn_runs_s": times,
                     "ratio": snn_s / (steps * ann_s), "img_steps_per_s": len(x) * steps / snn_s,
                     "peak_mb": peak, "firing_rate": rate,
                     "pieces": [net.pieces.batch, net.pieces.chunk]})
        say(f"ours {name} T={steps}: {snn_s:.3f} s, ratio {rows[-1]['ratio']:.2f}, "
            f"{rows[-1]['img_steps_per_s']:.0f} img·steps/s, peak {peak} MB")
    return rows


def spikingjelly(name: str, d: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    data = d / "sj_data.npz"
    np.savez(data, cal_x=images(4, 0, args.size), x=images(args.images, size=args.size))
    out = d / f"sj_{name}.json"
    modes = ["single", *(f"multi:{c}" for c in (8, 32))]
    job = {"kind": "speed", "model": name, "state_dict": str(d / f"{name}.pt"),
           "data": str(data), "timesteps": list(args.timesteps), "threads": args.threads,
           "modes": modes, "repeats": args.repeats, "out": str(out), "device": args.device}
    (d / "sj_job.json").write_text(json.dumps(job))
    r = subprocess.run([str(args.sj_python), str(ROOT / "benchmarks" / "sj2_runner.py"),
                        str(d / "sj_job.json")], capture_output=True, text=True)
    if r.returncode != 0:
        say(f"SpikingJelly failed on {name}:\n{r.stderr[-2000:]}")
        return [{"kind": "spikingjelly", "model": name, "error": r.stderr[-500:]}]
    res = json.loads(out.read_text())
    rows = []
    for steps in args.timesteps:
        ok = [m for m in res["rows"] if m["timesteps"] == steps and m["argmax_equal_single"]
              and m["max_abs_diff_vs_single"] <= 1e-3 * max(m["max_abs_out"], 1e-12)]
        b = max(ok, key=lambda m: m["img_steps_per_s"])
        rows.append({"kind": "spikingjelly", "model": name, "timesteps": steps,
                     "images": args.images, "spikingjelly": res["spikingjelly"],
                     "torch": res["torch"], "ann_s": res["ann_s"], "best_mode": b["mode"],
                     "snn_s": b["seconds"], "img_steps_per_s": b["img_steps_per_s"],
                     "peak_mb": b["run_peak_mb"], "firing_rate": b["firing_rate"],
                     "ratio": b["seconds"] / (steps * res["ann_s"]),
                     "modes": [m for m in res["rows"] if m["timesteps"] == steps]})
        say(f"spikingjelly {name} T={steps}: {b['mode']} {b['seconds']:.3f} s, "
            f"{b['img_steps_per_s']:.0f} img·steps/s, peak {b['run_peak_mb']:.0f} MB")
    return rows


def faithful(args: argparse.Namespace) -> dict[str, Any]:
    """The digits CNN, tuned for T=16, compiled and evaluated on CUDA and on the CPU."""
    import snncompile
    from snncompile.backends.gpu import compile as gpu_compile
    from snncompile.data import digits
    from snncompile.options import CompileOptions

    cal, te = digits("train").take(512), digits("test")
    out: dict[str, Any] = {}
    for dev in (args.device, "cpu"):
        t0 = time.perf_counter()
        ir, pm, _ = snncompile.convert(ROOT / "examples" / "digits_cnn.onnx", target="gpu",
                                       calibration=cal, timesteps=16, device=dev)
        net = gpu_compile(ir, CompileOptions(device=dev, timesteps=16))
        res = net.run(te.x, 16, progress=False)
        out[dev] = {"pipeline": pm.spec(),
                    "accuracy_by_timestep": [float(np.mean(p == te.y)) for p in res.predictions],
                    "spikes": {k: float(v.sum()) for k, v in res.layer_spikes.items()},
                    "seconds": time.perf_counter() - t0}
    a, b = out[args.device], out["cpu"]
    out["same_pipeline"] = a["pipeline"] == b["pipeline"]
    out["max_accuracy_diff"] = max(abs(u - v) for u, v in zip(a["accuracy_by_timestep"],
                                                               b["accuracy_by_timestep"]))
    out["max_spike_rel_diff"] = max(abs(a["spikes"][k] - b["spikes"][k]) / max(b["spikes"][k], 1)
                                    for k in b["spikes"])
    say(f"faithful: same pipeline {out['same_pipeline']}, max accuracy diff "
        f"{out['max_accuracy_diff']}, max spike-count rel diff {out['max_spike_rel_diff']:.2e}")
    return out


def table(rows: list[dict[str, Any]]) -> str:
    """One line per model and T: ours in IEEE float32 (the default), ours with ``--tf32`` (when
    measured), SpikingJelly (torch's defaults: TF32 convolutions on CUDA)."""
    lines = ["| model | T | snn-compile img·steps/s (SNN/(T·ANN)) | snn-compile --tf32 | "
             "SpikingJelly 2.0 (mode) | ours / SJ (--tf32 / SJ) | peak MB ours / SJ |",
             "|---|---|---|---|---|---|---|"]
    key = {(r["kind"], bool(r.get("tf32")), r["model"], r.get("timesteps")): r for r in rows
           if "error" not in r}
    for r in rows:
        if r["kind"] != "ours" or r.get("tf32"):
            continue
        at = (r["model"], r["timesteps"])
        t = key.get(("ours", True, *at))
        s = key.get(("spikingjelly", False, *at))
        cell = lambda x: f"{x['img_steps_per_s']:,.0f} ({x['ratio']:.2f})"  # noqa: E731
        vs = (f"{r['img_steps_per_s'] / s['img_steps_per_s']:.2f}×"
              + (f" ({t['img_steps_per_s'] / s['img_steps_per_s']:.2f}×)" if t else "")
              if s else "—")
        peak = "" if r["peak_mb"] is None else f"{r['peak_mb']:,.0f}"
        lines.append(f"| {r['model']} | {r['timesteps']} | {cell(r)} | "
                     f"{cell(t) if t else '—'} | "
                     + (f"{s['img_steps_per_s']:,.0f} ({s['best_mode']})" if s else "—")
                     + f" | {vs} | {peak} / " + (f"{s['peak_mb']:,.0f}" if s else "—") + " |")
    return "\n".join(lines)


def combine(paths: list[Path], out: Path) -> None:
    """One table from several runs of this script on the same machine (e.g. a run with
    ``--tf32 --no-sj`` beside the default run): rows tagged with their run's ``tf32``; a
    model, T and kind measured twice keeps the later file's row."""
    runs = [json.loads(p.read_text()) for p in paths]
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    for run in runs:
        for r in run["rows"]:
            r = {**r, "tf32": bool(run.get("tf32")) and r["kind"] == "ours"}
            rows[(r["kind"], r["tf32"], r["model"], r.get("timesteps"))] = r
    result = {"benchmark": "cuda_table", "combined_from": [
        {k: run.get(k) for k in ("command", "gpu", "machine", "tf32", "threads", "images",
                                 "size", "seconds", "faithful")} for run in runs],
              "rows": list(rows.values())}
    result["table"] = table(result["rows"])
    out.write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text(result["table"] + "\n")
    print(result["table"])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--models", nargs="*", default=["resnet18", "vgg11_bn", "mobilenet_v2"])
    ap.add_argument("--timesteps", nargs="+", type=int, default=[32, 128])
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--size", type=int, default=SIZE)
    ap.add_argument("--sj-python", type=Path, default=Path(sys.executable))
    ap.add_argument("--no-sj", action="store_true")
    ap.add_argument("--no-faithful", action="store_true")
    ap.add_argument("--tf32", action="store_true",
                    help="our runs with --tf32 (TF32 convolutions; default IEEE float32)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 64×64 images, T 4 and 8, 2 images, 1 repeat")
    ap.add_argument("--out", type=Path, default=RESULTS / "cuda_table.json")
    ap.add_argument("--combine", nargs="+", type=Path,
                    help="only merge these result files of earlier runs into --out")
    args = ap.parse_args(argv)
    if args.combine:
        combine(args.combine, args.out)
        return
    if args.quick:
        args.size, args.timesteps, args.images, args.repeats = 64, [4, 8], 2, 1
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("cuda.py: no CUDA device here (use --device cpu for a smoke run)")
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        for name in args.models:
            rows += ours(name, d, args)
            if not args.no_sj and name in SJ_MODELS:
                rows += spikingjelly(name, d, args)
    for name in args.models:
        mine = [r for r in rows if r["kind"] == "ours" and r["model"] == name]
        if len(mine) > 1 and mine[0]["peak_mb"]:
            for r in mine:
                r["peak_vs_first_T"] = r["peak_mb"] / mine[0]["peak_mb"]
    dev = torch.device(args.device)
    result = {
        "benchmark": "cuda_table", "device": args.device,
        "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "torch": torch.__version__, "cuda": torch.version.cuda,
                    "load_average_at_end": list(os.getloadavg())},
        "threads": args.threads, "images": args.images, "size": args.size,
        "command": "python -m " + " ".join(["benchmarks.cuda_table", *(argv or sys.argv[1:])]),
        "tf32": args.tf32, "rows": rows,
        "faithful": None if args.no_faithful else faithful(args),
        "seconds": time.perf_counter() - t0}
    result["table"] = table(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(result["table"] + "\n")
    print(result["table"])


if __name__ == "__main__":
    main()
