"""ImageNet-sized simulation (issue 12): peak memory against T and against ``--memory-budget``,
time against T × ANN forward, image·steps per second against SpikingJelly 2.0 on the same
models, 1 vs 2 processes (torchrun) and Lava samples/s with 1 and 2 ranks — one benchmark.

    .venv/bin/python -m benchmarks.scale                 # everything (~15 min here)
    .venv/bin/python -m benchmarks.scale --quick         # resnet18 only, ~2 min
    .venv/bin/python -m benchmarks.scale --only speed --rounds 2 --repeats 2 --merge
    .venv/bin/python -m benchmarks.scale --only speed --speed vgg11_bn@32 --threads 1 2
    .venv/bin/python -m benchmarks.scale --only memory --models resnet18 --budgets resnet18:1G

Models: torchvision resnet18, vgg11_bn, mobilenet_v2 with seeded random weights (speed and
memory do not depend on training), 3×224×224, exported to ONNX, converted with ``norm=max`` on
2 random calibration images (firing rates then are those of random weights: stated per run).
Every measurement runs in its own subprocess (its peak resident set is its own), with
OMP_NUM_THREADS and torch's thread count set to the row's ``threads``.

- **memory** rows: the child loads the converted IR, builds the network and runs
  ``GpuNetwork.run`` on the images once. ``process_peak_mb`` is the child's lifetime peak
  resident set (VmHWM of /proc/self/status read before and after the run: interpreter, torch
  (~0.7 GB resident on import here), weights, fan-outs, input and the run), the figure a
  ``--memory-budget`` must bound. ``ru_maxrss`` is not used: Linux carries the parent's
  high-water mark into a fork+exec'd child (kept in the JSON as ``ru_maxrss_mb``);
  ``setup_peak_mb`` is the peak before the run; ``run_peak_mb`` the run's own peak above the
  resident set before it (VmHWM after resetting it through /proc/self/clear_refs, after glibc's
  malloc_trim). ``pieces``: samples × time-chunk steps the budget picked. Done criteria:
  resnet18 process peak at T=128 ≤ 1.2 × at T=32; every budget row under its budget.
- **speed** rows (``--speed MODEL@T``): ``ann_s`` = one forward pass of the IR's ANN mode
  (``gpu_sim.AnnModule``: the same lowerings with ReLU) on the same images, best of 3;
  ``snn_s`` = one ``GpuNetwork.run`` (default budget), best of ``--repeats``; ``ratio`` =
  snn_s / (T · ann_s), the issue's floor (goal ≤ 1.5; depthwise ≤ 2). ``ratio_vs_batched_ann``
  divides by T·N / (ANN throughput at the simulator's rows per op) instead. Every time is also
  taken as the process's CPU seconds (``*_cpu_s``, ``img_steps_per_cpu_s``): with one thread
  on a shared machine, CPU seconds measure the work done, wall seconds add the waits for a
  core. ``--rounds R`` alternates ours and SpikingJelly R times in fresh processes and keeps
  each one's fastest round (all rounds in ``rounds``).
- **SpikingJelly** columns of the speed rows (resnet18, vgg11_bn): SpikingJelly 2.0 needs
  Python ≥ 3.11 and has no torchvision for its torch there, so ``benchmarks/sj2_runner.py``
  (job kind ``speed``) runs in its own venv (``--sj-python``) on the ``IMAGENET`` twins of
  ``benchmarks/models.py``:
  architectures (torchvision's layer names and shapes, written without torchvision) loaded with
  the *same* state dict as the exported torchvision model — checked here: the architecture's
  output equals torchvision's bit for bit (``arch_max_abs_diff``). Converted with
  ``ann2snn.FXConverter(RateCodingRecipe(mode="max"))`` on the same 2 calibration images, fed
  the same constant input for T steps from the reset state. Its CPU step modes are timed
  (``--sj-modes``: ``single`` = step mode "s", one call per step as in its examples; ``multi`` =
  step mode "m" on the whole [T, N, ...] sequence (torch backend: on CPU its IF kernel is a
  torch loop over t); ``multi:C`` = "m" on chunks of C steps, the neurons keep their state
  between calls), each best of ``--repeats``; ``sj_img_steps_per_s`` is its fastest mode whose
  summed output agrees with the single-step loop (same argmax, |Δ| ≤ 1e-3 of the output
  range). Same machine, same threads, same images, run right after ours.
- **processes** rows: ``torchrun --nproc-per-node N -m snncompile`` (``benchmarks/distributed.py``'s
  ``gpu_rows``) on resnet18 at 224 (``--procs-images`` random images, T = ``--procs-timesteps``,
  batch 2, ``--norm max --no-tune``): 1 × 1, 2 × 1 (and 1 × 2 threads) processes × threads,
  efficiency t(1 × 1) / (N · t(N × 1)) on the report's ``simulation_seconds``; the 2-process
  report must equal the 1-process one. **Lava** rows (``lava_rows``): ``--target loihi`` with 1
  and 2 ranks on the digits CNN (Lava at 224×224 is out of reach on CPU: resnet18 at 32×32
  already takes 2.3 s per step).

The machine is shared: every figure is stated with ``uptime``'s 1-minute load (after the row)
and the thread count. Writes benchmarks/results/scale.json and scale.md.
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

RESULTS = ROOT / "benchmarks" / "results"
SIZE = 224
SJ_PYTHON = Path("/work/sj-venv/bin/python")


def load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def _env(threads: int) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads),
            "MKL_NUM_THREADS": str(threads), "PYTHONWARNINGS": "ignore"}


def export(name: str, d: Path, size: int = SIZE) -> Path:
    """torchvision model, seed 0, to ONNX (input 3×size×size); its state dict to
    ``d/name.pt`` (SpikingJelly's weights; ``arch_check`` compares them with
    ``models.IMAGENET[name]``)."""
    import torchvision

    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None).eval()
    path = d / f"{name}.onnx"
    torch.onnx.export(model, torch.rand(1, 3, size, size), path, dynamo=False,
                      opset_version=17)
    torch.save(model.state_dict(), d / f"{name}.pt")
    return path


def arch_check(name: str, d: Path) -> float | None:
    """max |torchvision(x) − its benchmarks.models twin(x)| with the saved state dict (None:
    no twin)."""
    import torchvision

    from benchmarks.models import IMAGENET

    if name not in IMAGENET:
        return None
    sd = torch.load(d / f"{name}.pt")
    tv = getattr(torchvision.models, name)(weights=None).eval()
    tv.load_state_dict(sd)
    ours = IMAGENET[name]().eval()
    ours.load_state_dict(sd, strict=True)
    x = torch.from_numpy(images(2))
    with torch.no_grad():
        return float((tv(x) - ours(x)).abs().max())


def images(n: int, seed: int = 1, size: int = SIZE) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 3, size, size), dtype=np.float32)


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


# ----------------------------------------------------------------------------- children
def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def _reset_peak() -> int:
    """Trim the heap, reset VmHWM to VmRSS; returns VmRSS (KiB)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    return _status_kib("VmRSS")


def memory_child(job: dict[str, Any]) -> dict[str, Any]:
    """Build, run once; the memory row's measurements."""
    from snncompile.backends.gpu import compile as gpu_compile
    from snncompile.ir.serialize import load as load_ir
    from snncompile.options import CompileOptions

    steps, n = job["timesteps"], job["images"]
    net = gpu_compile(load_ir(job["ir"]), CompileOptions(device="cpu", timesteps=steps,
                                                           memory_budget=job["budget"]))
    x = images(n)
    setup_peak = _status_kib("VmHWM")  # import, IR, module, fan-outs
    before = _reset_peak()
    t0 = time.perf_counter()
    res = net.run(x, steps, progress=False)
    secs = time.perf_counter() - t0
    run_hwm = _status_kib("VmHWM")
    spikes = sum(float(v.sum()) for v in res.layer_spikes.values())
    units = sum(res.layer_neurons.values()) * steps * n
    return {"run_peak_mb": (run_hwm - before) / 1024, "rss_before_mb": before / 1024,
            "setup_peak_mb": setup_peak / 1024,
            "process_peak_mb": max(setup_peak, run_hwm) / 1024,
            "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "pieces": [net.pieces.batch, net.pieces.chunk], "seconds": secs,
            "img_steps_per_s": n * steps / secs, "firing_rate": spikes / units}


def speed_child(job: dict[str, Any]) -> dict[str, Any]:
    """ANN forward (best of 3) and SNN run (best of ``repeats``) in one process."""
    from gpu_sim import AnnModule

    import snncompile
    from snncompile.backends.gpu import compile as gpu_compile
    from snncompile.ir.serialize import load as load_ir
    from snncompile.options import CompileOptions

    steps, n = job["timesteps"], job["images"]
    net = gpu_compile(load_ir(job["ir"]), CompileOptions(device="cpu", timesteps=steps))
    ann = AnnModule(snncompile.compile(job["onnx"], target="ir")).eval()
    x = images(n)
    xb = torch.from_numpy(x)
    with torch.no_grad():
        ann(xb)
        ann_t = [_timed(lambda: ann(xb)) for _ in range(3)]
        ann_s, ann_cpu = min(t[0] for t in ann_t), min(t[1] for t in ann_t)
        before = _reset_peak()
        last: dict[str, Any] = {}
        snn_t = [_timed(lambda: last.update(res=net.run(x, steps, progress=False)))
                 for _ in range(job["repeats"])]
        snn, snn_cpu = [t[0] for t in snn_t], min(t[1] for t in snn_t)
        run_peak = (_status_kib("VmHWM") - before) / 1024
        res = last.pop("res")
        rate = (sum(float(v.sum()) for v in res.layer_spikes.values())
                / (sum(res.layer_neurons.values()) * steps * n))
        rows = net.pieces.batch * net.pieces.chunk
        xr = torch.from_numpy(images(rows))
        ann(xr)
        ann_rows_s = min(_time(lambda: ann(xr)) for _ in range(2))
    snn_s = min(snn)
    return {"ann_s": ann_s, "snn_s": snn_s, "snn_runs_s": snn, "ratio": snn_s / (steps * ann_s),
            "ann_rows": rows, "ann_rows_s": ann_rows_s,
            "ratio_vs_batched_ann": snn_s / (steps * n * ann_rows_s / rows),
            "img_steps_per_s": n * steps / snn_s, "run_peak_mb": run_peak, "firing_rate": rate,
            "ann_cpu_s": ann_cpu, "snn_cpu_s": snn_cpu, "ratio_cpu": snn_cpu / (steps * ann_cpu),
            "img_steps_per_cpu_s": n * steps / snn_cpu,
            "pieces": [net.pieces.batch, net.pieces.chunk]}


def _time(fn: Any) -> float:
    return _timed(fn)[0]


def _timed(fn: Any) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds) of ``fn()``."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def child(kind: str, job: dict[str, Any]) -> dict[str, Any]:
    """Run ``kind`` (memory | speed) in a fresh interpreter with the job's thread count."""
    cmd = [sys.executable, "-m", "benchmarks.scale", "--_child", kind, json.dumps(job)]
    ld = load()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=3600,
                       env=_env(job["threads"]))
    if r.returncode != 0:
        raise SystemExit(r.stderr[-3000:])
    row = json.loads(r.stdout.strip().splitlines()[-1])
    row.update(kind=kind, model=job["model"], timesteps=job["timesteps"],
               images=job["images"], threads=job["threads"], load_before=ld,
               load_after=load())
    return row


# ----------------------------------------------------------------------------- SpikingJelly
def sj_modes_for(modes: list[str], steps: int, n: int) -> list[str]:
    """The step modes worth timing at T = steps: ``multi`` (the whole sequence at once) only up
    to 64 rows (T·N: it holds every layer's [T, N, C, H, W] value), ``multi:C`` only for C < T."""
    out = []
    for m in modes:
        if m == "multi" and steps * n > 64:
            continue
        if m.startswith("multi:") and int(m.split(":")[1]) >= steps:
            continue
        out.append(m)
    return out


def spikingjelly(name: str, d: Path, steps: int, n: int, threads: int, modes: list[str],
                 repeats: int, sj_python: Path, say: Any) -> dict[str, Any]:
    """One SpikingJelly speed job (``sj2_runner.py``, its own venv) → a ``spikingjelly`` row."""
    data = d / f"sj_data_{n}.npz"
    if not data.exists():
        np.savez(data, cal_x=images(2, seed=0), x=images(n))
    out = d / f"sj_{name}_{steps}_{threads}.json"
    job = {"kind": "speed", "model": name, "state_dict": str(d / f"{name}.pt"),
           "data": str(data), "timesteps": [steps], "threads": threads,
           "modes": sj_modes_for(modes, steps, n), "repeats": repeats, "out": str(out)}
    (d / "sj_job.json").write_text(json.dumps(job))
    ld = load()
    proc = subprocess.Popen([str(sj_python), str(ROOT / "benchmarks" / "sj2_runner.py"),
                             str(d / "sj_job.json")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=_env(threads))
    tail: list[str] = []
    for line in proc.stderr or ():
        tail = (tail + [line])[-40:]
        if line.startswith("sj2 "):
            say("  " + line.rstrip())
    if proc.wait() != 0:
        raise SystemExit("SpikingJelly runner failed:\n" + "".join(tail))
    res = json.loads(out.read_text())
    ok = [r for r in res["rows"] if r["argmax_equal_single"]
          and r["max_abs_diff_vs_single"] <= 1e-3 * max(r["max_abs_out"], 1e-12)]
    best = max(ok, key=lambda r: r["img_steps_per_s"])
    return {"kind": "spikingjelly", "model": name, "timesteps": steps, "images": n,
            "threads": threads, "spikingjelly": res["spikingjelly"], "torch": res["torch"],
            "ann_s": res["ann_s"], "convert_s": res["convert_s"], "best_mode": best["mode"],
            "seconds": best["seconds"], "img_steps_per_s": best["img_steps_per_s"],
            "cpu_s": best["cpu_s"], "img_steps_per_cpu_s": best["img_steps_per_cpu_s"],
            "ann_cpu_s": res["ann_cpu_s"],
            "run_peak_mb": best["run_peak_mb"], "rss_peak_mb": best["rss_peak_mb"],
            "firing_rate": best["firing_rate"],
            "modes": res["rows"], "load_before": ld, "load_after": load()}


# ----------------------------------------------------------------------------- processes
def procs_rows(onnx: Path, d: Path, n: int, steps: int,
               configs: tuple[tuple[int, int], ...]) -> list[dict[str, Any]]:
    """``torchrun`` CLI runs of resnet18 at 224 (``distributed.gpu_rows``)."""
    from distributed import gpu_rows

    np.savez(d / "procs_cal.npz", x=images(2, seed=0))
    np.savez(d / "procs_eval.npz", x=images(n), y=np.zeros(n, np.int64))
    args = [str(onnx), "--target", "gpu", "--calibration", str(d / "procs_cal.npz"), "--eval",
            str(d / "procs_eval.npz"), "--norm", "max", "--no-tune", "--calibration-samples",
            "2", "--timesteps", str(steps), "--batch-size", "2", "--device", "cpu"]
    return [{**r, "kind": "processes"} for r in gpu_rows(args, configs, label=onnx.stem)]


def lava_rank_rows(samples: int, steps: int) -> list[dict[str, Any]]:
    from distributed import digits_lava_args, lava_rows

    return [{**r, "kind": "processes"} for r in lava_rows(digits_lava_args(samples, steps),
                                                          label="digits_cnn")]


# ----------------------------------------------------------------------------- report
def _cpu(r: dict[str, Any], s: dict[str, Any]) -> str:
    if "img_steps_per_cpu_s" not in r or "img_steps_per_cpu_s" not in s:
        return ""
    return f" ({r['img_steps_per_cpu_s'] / s['img_steps_per_cpu_s']:.2f})"


def table(rows: list[dict[str, Any]]) -> str:
    mem = sorted((r for r in rows if r["kind"] == "memory"),
                 key=lambda r: (r["model"], r["timesteps"], r.get("budget_mb", 0)))
    spd = sorted((r for r in rows if r["kind"] == "speed"),
                 key=lambda r: (r["model"], r["timesteps"], r["threads"]))
    sj = {(r["model"], r["timesteps"], r["images"], r["threads"]): r for r in rows
          if r["kind"] == "spikingjelly"}
    procs = [r for r in rows if r["kind"] == "processes"]
    out: list[str] = []
    if mem:
        out += ["| model | T | images | threads | budget | pieces (b×Tc) | process peak MB "
                "| run peak MB | under budget | s | img·steps/s | load |", "|" + "---|" * 12]
        for r in mem:
            out.append(f"| {r['model']} | {r['timesteps']} | {r['images']} | {r['threads']} "
                       f"| {r['budget']} | {r['pieces'][0]}×{r['pieces'][1]} "
                       f"| {r['process_peak_mb']:.0f} | {r['run_peak_mb']:.0f} "
                       f"| {r.get('under_budget', '')} | {r['seconds']:.1f} "
                       f"| {r['img_steps_per_s']:.2f} | {r['load_after'][0]:.1f} |")
    if spd:
        out += ["", "| model | T | images | threads | ANN fwd s | SNN s | SNN / (T·ANN) "
                "wall (CPU) | ours img·steps/s | SpikingJelly img·steps/s (mode) "
                "| ours / SJ wall (CPU) | SJ / (T·its ANN) | firing rate ours / SJ "
                "| load ours, SJ |", "|" + "---|" * 13]
        for r in spd:
            s = sj.get((r["model"], r["timesteps"], r["images"], r["threads"]))
            sjc = (f"{s['img_steps_per_s']:.2f} ({s['best_mode']}) "
                   f"| **{r['img_steps_per_s'] / s['img_steps_per_s']:.2f}**"
                   + _cpu(r, s) if s else "— | —")
            mb = (f"{s['seconds'] / (s['timesteps'] * s['ann_s']):.2f}" if s else "—")
            fr = f"{r['firing_rate']:.3f} / " + (f"{s['firing_rate']:.3f}" if s else "—")
            ld = f"{r['load_after'][0]:.1f}" + (f", {s['load_after'][0]:.1f}" if s else "")
            out.append(f"| {r['model']} | {r['timesteps']} | {r['images']} | {r['threads']} "
                       f"| {r['ann_s']:.3f} | {r['snn_s']:.2f} | {r['ratio']:.2f}"
                       + (f" ({r['ratio_cpu']:.2f}) " if "ratio_cpu" in r else " ")
                       + f"| {r['img_steps_per_s']:.2f} | {sjc} | {mb} | {fr} | {ld} |")
    if procs:
        from distributed import markdown

        out += ["", markdown(procs)]
    return "\n".join(out)


def _key(r: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(r.get(k) for k in ("kind", "target", "model", "timesteps", "images", "threads",
                                    "budget", "processes", "threads_per_process"))


def best_rounds(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Of the rounds of one speed / SpikingJelly configuration keep the fastest row, with every
    round's img·steps/s and load in ``rounds``."""
    out: list[dict[str, Any]] = []
    seen: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in rows:
        if r["kind"] not in ("speed", "spikingjelly"):
            out.append(r)
            continue
        key = (r["kind"], r["model"], r["timesteps"], r["images"], r["threads"])
        rnd = {"img_steps_per_s": r["img_steps_per_s"], "load_after": r["load_after"]}
        if key not in seen:
            seen[key] = {**r, "rounds": [rnd]}
            out.append(seen[key])
            continue
        best = seen[key]
        rounds = best["rounds"] + [rnd]
        if r["img_steps_per_s"] > best["img_steps_per_s"]:
            best.clear()
            best.update(r)
        best["rounds"] = rounds
    return out


def checks_of(rows: list[dict[str, Any]]) -> dict[str, Any]:
    checks: dict[str, Any] = {}
    for m in sorted({r["model"] for r in rows if r["kind"] == "memory"}):
        peaks = {r["timesteps"]: r["process_peak_mb"] for r in rows
                 if r["kind"] == "memory" and r["model"] == m and r["budget"] == "default"}
        if len(peaks) >= 2:
            lo, hi = min(peaks), max(peaks)
            checks[f"{m}: process peak T={hi} / T={lo} (goal ≤ 1.2)"] = round(
                peaks[hi] / peaks[lo], 3)
    for r in rows:
        if r["kind"] == "memory" and "under_budget" in r:
            checks[f"{r['model']} T={r['timesteps']} budget {r['budget']}: peak "
                   f"{r['process_peak_mb']:.0f} MB under budget"] = r["under_budget"]
        if r["kind"] == "speed":
            checks[f"{r['model']} T={r['timesteps']} {r['threads']} thread(s): SNN / (T·ANN) "
                   f"wall, CPU (goal ≤ {2.0 if 'mobilenet' in r['model'] else 1.5})"] = [
                round(r["ratio"], 2), round(r.get("ratio_cpu", float("nan")), 2)]
            sj = [q for q in rows if q["kind"] == "spikingjelly" and all(
                q[k] == r[k] for k in ("model", "timesteps", "images", "threads"))]
            if sj:
                checks[f"{r['model']} T={r['timesteps']} {r['threads']} thread(s): ours / "
                       f"SpikingJelly img·steps per second, per CPU second"] = [
                    round(r["img_steps_per_s"] / sj[0]["img_steps_per_s"], 2),
                    round(r.get("img_steps_per_cpu_s", float("nan"))
                          / sj[0].get("img_steps_per_cpu_s", float("nan")), 2)]
    return checks


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="resnet18 only: memory at T=32/128 and an 800M budget, speed and "
                         "SpikingJelly at T=32 (1 thread, modes single and multi:8), 1 vs 2 "
                         "processes on 2 images, Lava with 8 samples (< 5 min)")
    ap.add_argument("--only", nargs="+", choices=("memory", "speed", "procs", "lava"),
                    default=["memory", "speed", "procs", "lava"])
    ap.add_argument("--models", nargs="*", default=["resnet18", "vgg11_bn"],
                    help="memory rows: these models")
    ap.add_argument("--timesteps", nargs="+", type=int, default=[32, 128],
                    help="memory rows: these T")
    ap.add_argument("--budgets", nargs="*", default=["resnet18:800M", "resnet18:1G",
                                                     "vgg11_bn:2G", "vgg11_bn:3.5G"],
                    help="MODEL:BUDGET --memory-budget runs, at the largest T")
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--speed", nargs="*", default=["resnet18@32", "resnet18@128",
                                                   "vgg11_bn@32", "mobilenet_v2@32"],
                    help="speed rows MODEL@T (SpikingJelly too where benchmarks/models.py "
                         "has MODEL)")
    ap.add_argument("--threads", nargs="+", type=int, default=[1],
                    help="speed rows at each; memory rows at the first")
    ap.add_argument("--repeats", type=int, default=3,
                    help="speed: best of this many runs in one process")
    ap.add_argument("--rounds", type=int, default=1,
                    help="speed: alternate ours / SpikingJelly this many times (fresh "
                         "processes) and keep each one's best round: the load of a shared "
                         "machine changes over minutes")
    ap.add_argument("--sj-python", type=Path, default=SJ_PYTHON,
                    help="SpikingJelly 2.0's venv python (SpikingJelly columns skipped if "
                         "missing)")
    ap.add_argument("--sj-modes", nargs="+",
                    default=["single", "multi:4", "multi:8", "multi:16"],
                    help="SpikingJelly step modes to time (also: multi, the whole sequence)")
    ap.add_argument("--procs-images", type=int, default=4)
    ap.add_argument("--procs-timesteps", type=int, default=32)
    ap.add_argument("--lava-samples", type=int, default=16)
    ap.add_argument("--lava-timesteps", type=int, default=16)
    ap.add_argument("--out", type=Path, default=RESULTS / "scale.json")
    ap.add_argument("--merge", action="store_true",
                    help="keep --out's rows that this run does not measure again (same kind, "
                         "model, T, images, threads, budget, processes) and add this command")
    ap.add_argument("--_child", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    a.procs_configs = ((1, 1), (2, 1), (1, 2))
    if a.quick:
        a.models, a.timesteps, a.budgets = ["resnet18"], [32, 128], ["resnet18:800M"]
        a.speed, a.threads, a.repeats = ["resnet18@32"], [1], 2
        a.sj_modes, a.procs_images, a.lava_samples = ["single", "multi:8"], 2, 8
        a.procs_configs = ((1, 1), (2, 1))
    return a


def main(argv: list[str] | None = None) -> None:
    a = parse(argv)
    if a._child:
        job = json.loads(a._child[1])
        torch.set_num_threads(job["threads"])
        print(json.dumps((memory_child if a._child[0] == "memory" else speed_child)(job)))
        return
    from tqdm import tqdm

    from benchmarks.models import IMAGENET

    sj_ok = a.sj_python.exists()
    th0 = a.threads[0]
    jobs: list[tuple[str, Any]] = []
    if "memory" in a.only:
        for m in a.models:
            jobs += [("memory", (m, t, None, th0)) for t in a.timesteps]
            jobs += [("memory", (m, max(a.timesteps), b.split(":", 1)[1], th0))
                     for b in a.budgets if b.split(":", 1)[0] == m]
    if "speed" in a.only:
        for spec in a.speed:
            m, _, t = spec.partition("@")
            for th in a.threads:
                for _ in range(a.rounds):
                    jobs.append(("speed", (m, int(t or 32), None, th)))
                    if sj_ok and m in IMAGENET:
                        jobs.append(("spikingjelly", (m, int(t or 32), None, th)))
    if "procs" in a.only:
        jobs.append(("procs", ("resnet18", a.procs_timesteps, None, 1)))
    if "lava" in a.only:
        jobs.append(("lava", ("digits_cnn", a.lava_timesteps, None, 1)))
    rows: list[dict[str, Any]] = []
    arch: dict[str, float | None] = {}
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        converted: dict[str, tuple[Path, Path]] = {}
        bar = tqdm(jobs, desc="scale benchmark", unit="run")
        for kind, (m, t, budget, th) in bar:
            bar.set_postfix_str(f"{kind} {m} T={t} {budget or ''} {th} thr")
            if m not in converted and kind != "lava":
                converted[m] = convert(m, d)
                arch[m] = arch_check(m, d)
            job = {"model": m, "timesteps": t, "images": a.images, "threads": th,
                   "budget": budget}
            if kind == "memory":
                onnx, ir_dir = converted[m]
                row = child("memory", {**job, "ir": str(ir_dir)})
                row["budget"] = budget or "default"
                if budget:
                    from snncompile.options import parse_bytes

                    row["budget_mb"] = parse_bytes(budget) / 2**20
                    row["under_budget"] = row["process_peak_mb"] <= row["budget_mb"]
                new = [row]
            elif kind == "speed":
                onnx, ir_dir = converted[m]
                new = [child("speed", {**job, "ir": str(ir_dir), "onnx": str(onnx),
                                       "repeats": a.repeats})]
            elif kind == "spikingjelly":
                new = [spikingjelly(m, d, t, a.images, th, a.sj_modes, a.repeats,
                                    a.sj_python, tqdm.write)]
            elif kind == "procs":
                new = procs_rows(converted[m][0], d, a.procs_images, t, a.procs_configs)
            else:
                new = lava_rank_rows(a.lava_samples, t)
            for r in new:
                tqdm.write(json.dumps({k: v for k, v in r.items() if k != "modes"}))
            rows += new
    rows = best_rounds(rows)
    command = "python -m benchmarks.scale " + " ".join(argv if argv is not None else sys.argv[1:])
    commands = [command]
    if a.merge and a.out.exists():
        old = json.loads(a.out.read_text())
        keys = {_key(r) for r in rows}
        rows = [r for r in old["rows"] if _key(r) not in keys] + rows
        commands = old.get("commands", [old.get("command", "")]) + commands
        arch = {**old.get("arch_max_abs_diff", {}), **arch}
    checks = checks_of(rows)
    info = {"machine": platform.platform(), "cpu_count": os.cpu_count(), "threads": a.threads,
            "torch": torch.__version__, "image_size": SIZE, "images": a.images,
            "commands": commands,
            "minutes": round((time.perf_counter() - t_start) / 60, 1),
            "arch_max_abs_diff": arch, "rows": rows, "checks": checks,
            "method": "every row in its own subprocess; memory: VmHWM (process) and VmHWM "
                      "after clear_refs (run); speed: best of --repeats; SpikingJelly: its "
                      "fastest correct step mode, same images, weights and threads"}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(info, indent=1) + "\n")
    md = ("; ".join(f"`{c}`" for c in commands) + f" (last: {info['minutes']} min; "
          f"{os.cpu_count()} CPUs, torch {torch.__version__}; load = uptime's 1-minute "
          "average after the row)\n\n"
          + table(rows) + "\n\n" + "\n".join(f"- {k}: {v}" for k, v in checks.items()) + "\n")
    a.out.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
