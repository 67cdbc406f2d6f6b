"""Run SpikingJelly 2.0's ann2snn recipes on our trained models (inside SpikingJelly's venv).

    /work/sj-venv/bin/python benchmarks/sj2_runner.py JOB.json

JOB.json: {"data": "d.npz" (cal_x, test_x, test_y), "timesteps": T, "threads": n, "batch": B,
"models": {name: "state_dict.pt"}, "out": "result.json"}, and for networks of
``snncompile/zoo.py`` "zoo_file": its path, "zoo": {name: [builder, kwargs]}; "pickled": {name:
"model.pt"} loads a whole pickled module instead; "recipes": [key, ...] runs only those. For
every model and recipe: convert with ``ann2snn.FXConverter(recipe)`` and evaluate as
SpikingJelly's own example (``examples/cnn_mnist.py``) does: ``reset_net``, then per step ``out
+= snn(x)``; the prediction at t is the argmax of the accumulated output. Recipes:
RateCodingRecipe with mode "max", "99.9%", 1/2, 1/3 (the example's mode sweep),
RateCodingRecipe(99.9%, channel_wise, pre_spike_maxpool, half_threshold) (its strongest rate-
coding options), and LocalThresholdBalancingRecipe (Bu et al., CVPR 2025). Calibration batches
of 100, as in the example. Torch only: this file imports nothing from snncompile.

A job with ``"kind": "speed"`` times SpikingJelly's simulation instead (``speed``, used by
``benchmarks/scale.py``): {"kind": "speed", "model": "resnet18" | "vgg11_bn"
(``IMAGENET`` of ``models.py``), "state_dict": "sd.pt", "data": "d.npz" (cal_x, x), "timesteps":
[T, ...], "threads": n, "modes": ["single", "multi", "multi:8", ...], "repeats": r, "out":
"result.json", "device": "cpu" | "cuda" (default cpu)}. On CUDA the times are taken after
``torch.cuda.synchronize`` and the memory is ``torch.cuda.max_memory_allocated`` above what the
converted model and the input held before the run.
"""

from __future__ import annotations

import copy
import ctypes
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

import models as bench_models  # benchmarks/models.py: a script's own folder is on sys.path

RECIPES = {
    "rate max": {"mode": "max"},
    "rate 99.9%": {"mode": "99.9%"},
    "rate 0.5": {"mode": 0.5},
    "rate 1/3": {"mode": 1.0 / 3},
    "rate 99.9% channel-wise+pre-spike maxpool+half threshold": {
        "mode": "99.9%", "channel_wise": True, "pre_spike_maxpool": True,
        "half_threshold": True},
    "local threshold balancing": None,
}


def make_recipe(key: str, loader):
    from spikingjelly.activation_based import ann2snn

    if RECIPES[key] is None:
        return ann2snn.LocalThresholdBalancingRecipe(dataloader=loader)
    return ann2snn.RateCodingRecipe(dataloader=loader, **RECIPES[key])


@torch.no_grad()
def evaluate(snn: torch.nn.Module, x: np.ndarray, y: np.ndarray, steps: int,
             batch: int) -> np.ndarray:
    from spikingjelly.activation_based import functional

    correct = np.zeros(steps)
    for i in range(0, len(x), batch):
        xb = torch.from_numpy(x[i:i + batch])
        functional.reset_net(snn)
        out = None
        for t in range(steps):
            step = snn(xb)
            out = step if out is None else out + step
            correct[t] += float((out.argmax(1).numpy() == y[i:i + batch]).sum())
    return correct / len(x)


def _status_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


def _run_mode(snn: torch.nn.Module, x: torch.Tensor, steps: int, mode: str) -> torch.Tensor:
    """Run ``steps`` steps of constant input ``x`` from the reset state; returns the summed
    output. ``single``: step mode "s", one call per step (SpikingJelly's example loop);
    ``multi``: step mode "m" on the whole [T, N, ...] sequence; ``multi:C``: step mode "m" on
    chunks of C steps (the neurons keep their potential between calls)."""
    from spikingjelly.activation_based import functional

    functional.reset_net(snn)
    if mode == "single":
        functional.set_step_mode(snn, "s")
        out = snn(x)
        for _ in range(steps - 1):
            out = out + snn(x)
        return out
    functional.set_step_mode(snn, "m")
    chunk = int(mode.split(":")[1]) if ":" in mode else steps
    out = torch.zeros((), device=x.device)
    for t0 in range(0, steps, chunk):
        c = min(chunk, steps - t0)
        out = out + snn(x.unsqueeze(0).expand(c, *x.shape).contiguous()).sum(0)
    return out


@torch.no_grad()
def speed(job: dict) -> None:
    """Convert an ImageNet-sized model with RateCodingRecipe(mode="max") on the job's
    calibration images, time each step mode (best of ``repeats``, after one warm-up step),
    and compare every mode's summed output with the single-step loop's."""
    import copy as _copy
    from importlib.metadata import version

    from spikingjelly.activation_based import ann2snn, neuron

    torch.set_num_threads(int(job.get("threads", 1)))
    dev = torch.device(job.get("device", "cpu"))
    cuda = dev.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(dev)

    d = np.load(job["data"])
    cal, x = torch.from_numpy(d["cal_x"]).to(dev), torch.from_numpy(d["x"]).to(dev)
    model = bench_models.IMAGENET[job["model"]]().eval()
    model.load_state_dict(torch.load(job["state_dict"]), strict=True)
    model.to(dev)
    model(x)  # warm-up (cuDNN's algorithm choice)
    ann_s, ann_cpu = [], []
    for _ in range(3):
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        model(x)
        sync()
        ann_s.append(time.perf_counter() - t0)
        ann_cpu.append(time.process_time() - c0)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(cal, torch.zeros(len(cal))),
                                         batch_size=len(cal), shuffle=False)
    t0 = time.perf_counter()
    snn = ann2snn.FXConverter(recipe=ann2snn.RateCodingRecipe(dataloader=loader, mode="max"),
                              device=str(dev)).convert(_copy.deepcopy(model)).eval()
    conv_s = time.perf_counter() - t0
    ifs = [m for m in snn.modules() if isinstance(m, neuron.IFNode)]
    counts = {"n": 0.0, "spikes": 0.0}

    def count(_m: torch.nn.Module, _i: tuple, o: torch.Tensor) -> None:
        counts["n"] += o.numel()
        counts["spikes"] += float(o.sum())

    out: dict = {"spikingjelly": version("spikingjelly"), "torch": torch.__version__,
                 "threads": torch.get_num_threads(), "model": job["model"], "device": str(dev),
                 "gpu": torch.cuda.get_device_name(dev) if cuda else None,
                 "images": len(x), "convert_s": conv_s, "ann_s": min(ann_s),
                 "ann_cpu_s": min(ann_cpu),
                 "if_layers": len(ifs), "rows": []}
    _run_mode(snn, x, 1, "single")  # warm-up
    for steps in job["timesteps"]:
        hooks = [m.register_forward_hook(count) for m in ifs]
        counts.update(n=0.0, spikes=0.0)
        ref = _run_mode(snn, x, steps, "single")  # untimed: reference output + firing rate
        for h in hooks:
            h.remove()
        rate = counts["spikes"] / counts["n"]
        for mode in job["modes"]:
            times, cpu = [], []
            try:
                ctypes.CDLL("libc.so.6").malloc_trim(0)
            except (OSError, AttributeError):
                pass
            Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux)
            rss0 = _status_mb("VmRSS")
            if cuda:
                sync()
                torch.cuda.reset_peak_memory_stats(dev)
                base = torch.cuda.memory_allocated(dev)
            for _ in range(int(job.get("repeats", 1))):
                sync()
                t0, c0 = time.perf_counter(), time.process_time()
                o = _run_mode(snn, x, steps, mode)
                sync()
                times.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
            s = min(times)
            row = {"timesteps": steps, "mode": mode, "seconds": s, "runs_s": times,
                   "cpu_s": min(cpu), "img_steps_per_cpu_s": len(x) * steps / min(cpu),
                   "img_steps_per_s": len(x) * steps / s, "firing_rate": rate,
                   "max_abs_diff_vs_single": float((o - ref).abs().max()),
                   "max_abs_out": float(ref.abs().max()),
                   "argmax_equal_single": bool(torch.equal(o.argmax(1), ref.argmax(1))),
                   "run_peak_mb": ((torch.cuda.max_memory_allocated(dev) - base) / 2**20
                                   if cuda else _status_mb("VmHWM") - rss0),
                   "rss_peak_mb": _status_mb("VmHWM")}
            out["rows"].append(row)
            print(f"sj2 {job['model']} T={steps} {mode}: {s:.2f} s, "
                  f"{row['img_steps_per_s']:.2f} img·steps/s", file=sys.stderr, flush=True)
    Path(job["out"]).write_text(json.dumps(out, indent=1) + "\n")


def _architecture(job: dict, name: str) -> torch.nn.Module:
    """``bench_models.ARCH[name]``, or a builder of ``snncompile/zoo.py`` (``job["zoo"][name]``
    = [function, kwargs]), loaded from its file: zoo.py imports torch only."""
    if name in job.get("pickled", ()):  # a whole nn.Module of standard layers (torch.save)
        return torch.load(job["pickled"][name], weights_only=False)
    if name not in job.get("zoo", {}):
        return bench_models.ARCH[name]()
    import importlib.util

    spec = importlib.util.spec_from_file_location("snncompile_zoo", job["zoo_file"])
    zoo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(zoo)
    fn, kwargs = job["zoo"][name]
    return getattr(zoo, fn)(**kwargs)


def main() -> None:
    job = json.loads(Path(sys.argv[1]).read_text())
    if job.get("kind") == "speed":
        speed(job)
        return
    torch.set_num_threads(int(job.get("threads", 1)))
    d = np.load(job["data"])
    cal, x, y = d["cal_x"], d["test_x"], d["test_y"]
    ds = torch.utils.data.TensorDataset(torch.from_numpy(cal), torch.zeros(len(cal)))
    loader = torch.utils.data.DataLoader(ds, batch_size=100, shuffle=False)
    from importlib.metadata import version

    from spikingjelly.activation_based import ann2snn

    out: dict = {"spikingjelly": version("spikingjelly"), "torch": torch.__version__,
                 "models": {}}
    for name, sd_path in job["models"].items():
        model = _architecture(job, name)
        model.load_state_dict(torch.load(sd_path))
        model.eval()
        rows = {}
        for key in job.get("recipes", RECIPES):
            try:
                t0 = time.perf_counter()
                snn = ann2snn.FXConverter(recipe=make_recipe(key, loader), device="cpu").convert(
                    copy.deepcopy(model))
                conv_s = time.perf_counter() - t0
                t0 = time.perf_counter()
                acc = evaluate(snn.eval(), x, y, int(job["timesteps"]), int(job["batch"]))
                sim_s = time.perf_counter() - t0
                rows[key] = {"accuracy_by_timestep": acc.tolist(), "convert_seconds": conv_s,
                             "seconds": sim_s,
                             "img_steps_per_s": len(x) * int(job["timesteps"]) / sim_s}
            except Exception as e:  # noqa: BLE001  (a recipe that cannot convert a model is reported)
                rows[key] = {"error": f"{type(e).__name__}: {e}"}
            print(f"sj2 {name} {key}: " + (f"T=max {rows[key]['accuracy_by_timestep'][-1]:.4f}"
                                            if "error" not in rows[key] else rows[key]["error"]),
                  file=sys.stderr, flush=True)
        out["models"][name] = rows
    Path(job["out"]).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
