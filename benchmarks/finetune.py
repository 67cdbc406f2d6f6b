"""Benchmark of post-conversion fine-tuning (issue 6): accuracy by timestep before/after each
method, seconds per epoch on the CPU, and peak memory.

    .venv/bin/python -m benchmarks.finetune                     # both models, every method
    .venv/bin/python -m benchmarks.finetune --models digits_cnn --epochs 3
    .venv/bin/python -m benchmarks.finetune --quick             # smoke run (1 epoch, 256 samples)

Models: the bundled digits CNN (``examples/digits_cnn.onnx``) and the ResNet-style
``tests/models.py:resnet_block`` (trained on digits in seconds, exported to ONNX in a temp dir).
Both are converted with the default pipeline (p99.9 thresholds, α = 0.5) on 512 training
images; fine-tuning uses the whole digits training split (1257 images, labels) at T = 4
(``--timesteps``), Adam lr 1e-3, batch 64, seed 0; accuracy is measured on the digits test split
(540 images) by the gpu simulator at t = 1, 2, 4, 8 (one run to T = 8).

Methods: ``converted`` (no training), ``distill`` (LaSNN, attention maps), ``distill{layer_loss=
rate}`` (rate-matching baseline), ``temporal-consistency`` and ``distill+temporal-consistency``;
``--epochs`` epochs per method (distill adds one epoch per spiking layer for its layer stages).

Columns: ``s/epoch`` = training seconds / epochs trained (layer stages included) on this
machine's CPU with 1 torch thread (``--threads``; wall time grows with the machine's load); ``CPU
s/epoch`` = process CPU time per epoch (less sensitive to load); ``peak MB`` = peak RSS growth
during the method's training (VmHWM reset through /proc/self/clear_refs); ``saved MB`` = the
largest set of tensors autograd kept for one chunk's backward pass (what backprop through T
steps costs).
Writes benchmarks/results/finetune.{json,png} and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import snncompile
from snncompile.backends.gpu import compile as gpu_compile
from snncompile.data import digits
from snncompile.finetune import train
from snncompile.interp import run_ann

ROOT = Path(__file__).resolve().parents[1]

RESULTS = ROOT / "benchmarks" / "results"
METHODS = ("converted", "distill", "distill{layer_loss=rate}", "temporal-consistency",
           "distill+temporal-consistency")
STEPS = (1, 2, 4, 8)


def _rss_kb(field: str) -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _model(name: str, tmp: Path) -> Path:
    if name == "digits_cnn":
        return ROOT / "examples" / "digits_cnn.onnx"
    from benchmarks.models import tests as models  # tests/models.py

    m = models.trained(models.resnet_block, epochs=10)
    return models.export(m, tmp / "resnet.onnx")


def _accuracy(graph: Any, te: Any) -> dict[str, float]:
    net = gpu_compile(graph, snncompile.CompileOptions(timesteps=max(STEPS), device="cpu"))
    acc = net.run(te.x, max(STEPS), progress=False).accuracy_by_timestep(te.y)
    return {str(t): float(acc[t - 1]) for t in STEPS}


def bench(model: str, methods: tuple[str, ...], epochs: int, steps: int, samples: int | None,
          tmp: Path) -> list[dict[str, Any]]:
    tr, te = digits("train"), digits("test")
    path = _model(model, tmp)
    snn, _, _ = snncompile.convert(path, calibration=tr.take(512))
    ann = snncompile.load_onnx(path)
    ann_acc = float(np.mean(run_ann(ann, te.x).argmax(1) == te.y))
    data = tr.take(samples)
    rows = []
    for method in methods:
        print(f"[{model}] {method} ...", file=sys.stderr, flush=True)
        row: dict[str, Any] = {"model": model, "method": method, "ann_accuracy": ann_acc,
                               "train_timesteps": steps, "epochs": epochs, "samples": len(data)}
        if method == "converted":
            row.update(accuracy=_accuracy(snn, te), seconds=0.0, epochs_trained=0,
                       s_per_epoch=None, cpu_s_per_epoch=None, peak_mb=None, saved_mb=None)
        else:
            rss0 = _rss_kb("VmRSS")
            _reset_peak()
            t0, c0 = time.perf_counter(), time.process_time()
            results = train(snn, data, method, epochs=epochs, timesteps=steps, seed=0,
                            progress=False)
            secs, cpu = time.perf_counter() - t0, time.process_time() - c0
            n_ep = sum(len(r.history) for r in results)
            row.update(accuracy=_accuracy(results[-1].graph, te), seconds=secs,
                       epochs_trained=n_ep, s_per_epoch=secs / max(n_ep, 1),
                       cpu_s_per_epoch=cpu / max(n_ep, 1),
                       peak_mb=max(_rss_kb("VmHWM") - rss0, 0) / 1024,
                       saved_mb=max(r.peak_memory_bytes for r in results) / 2**20,
                       final_loss=results[-1].history[-1]["loss"])
        rows.append(row)
        a = row["accuracy"]
        print(f"[{model}] {method}: " + " ".join(f"T{t}={a[str(t)]:.4f}" for t in STEPS)
              + (f"  {row['s_per_epoch']:.2f} s/epoch" if row["s_per_epoch"] else ""),
              file=sys.stderr, flush=True)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    head = ("| model | method | " + " | ".join(f"T={t}" for t in STEPS)
            + " | ΔT=4 | s/epoch | CPU s/epoch | peak MB | saved MB |")
    out = [head, "|" + "---|" * (head.count("|") - 1)]
    base = {r["model"]: r["accuracy"]["4"] for r in rows if r["method"] == "converted"}
    for r in rows:
        a = r["accuracy"]
        d = a["4"] - base.get(r["model"], a["4"])
        f = (lambda v, k: "–" if v is None else format(v, k))  # noqa: E731
        out.append(f"| {r['model']} | {r['method']} | "
                   + " | ".join(f"{a[str(t)]:.4f}" for t in STEPS)
                   + f" | {d:+.4f} | {f(r['s_per_epoch'], '.2f')} | "
                   f"{f(r.get('cpu_s_per_epoch'), '.2f')} | {f(r['peak_mb'], '.0f')} | "
                   f"{f(r['saved_mb'], '.1f')} |")
    anns = {r["model"]: r["ann_accuracy"] for r in rows}
    out.append("")
    out.append("ANN accuracy: " + ", ".join(f"{m} {a:.4f}" for m, a in anns.items()))
    return "\n".join(out)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4), squeeze=False)
    for ax, m in zip(axes[0], models):
        for r in (r for r in rows if r["model"] == m):
            ax.plot(STEPS, [r["accuracy"][str(t)] for t in STEPS], marker="o", label=r["method"])
        ax.axhline(next(r["ann_accuracy"] for r in rows if r["model"] == m), color="k", ls="--",
                   label="ANN")
        ax.set_xscale("log", base=2)
        ax.set_xticks(STEPS, [str(t) for t in STEPS])
        ax.set_xlabel("timestep t")
        ax.set_ylabel("accuracy (digits test)")
        ax.set_title(f"{m}: fine-tuned at T=4")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["digits_cnn", "resnet_block"],
                    choices=["digits_cnn", "resnet_block"])
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--timesteps", type=int, default=4)
    ap.add_argument("--samples", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS / "finetune.json")
    a = ap.parse_args()
    if a.quick:
        a.epochs, a.samples = 1, 256
    torch.set_num_threads(a.threads)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for m in a.models:
            rows += bench(m, tuple(a.methods), a.epochs, a.timesteps, a.samples, Path(tmp))
    md = table(rows)
    print(md)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    cmd = "python -m benchmarks.finetune " + " ".join(sys.argv[1:])
    a.out.write_text(json.dumps({
        "command": cmd.strip(), "machine": platform.platform(), "cpu_threads": a.threads,
        "torch": torch.__version__, "rows": rows, "table": md}, indent=1) + "\n")
    plot(rows, a.out.with_suffix(".png"))
    print(f"wrote {a.out} and {a.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
