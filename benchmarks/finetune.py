"""Benchmark of post-conversion fine-tuning (issues 6 and 22): accuracy at T = 2, 4, 8 of each
model before and after fine-tuning, next to its ANN, and what the run kept.

    .venv/bin/python benchmarks/finetune.py                       # the MNIST-sized models, distill
    .venv/bin/python benchmarks/finetune.py --models mnist_maxpool --epochs 3
    .venv/bin/python benchmarks/finetune.py --methods distill temporal-consistency
    .venv/bin/python benchmarks/finetune.py --quick               # smoke run (1 epoch, 2 models)

Models (no MNIST on the benchmark machine): the MNIST-sized (1×28×28) models of
``tests/mnist_models.py`` — ``mnist_cnn`` (AvgPool), ``mnist_maxpool`` (the same with MaxPool;
issue 22's regression) and ``mnist_resnet`` — each trained here for ``--ann-epochs`` (8) epochs
of Adam on scikit-learn's digits upsampled to 28×28 (1257 training images), and, with
``--models``, the 8×8 ``digits_cnn`` (``examples/digits_cnn.onnx``) and ``tests/models.py``'s
``resnet_block``. Data: the digits training split calibrates, tunes and fine-tunes; the 540
test images are scored, by the gpu simulator in one run to T = 8.

Conversion: what ``snn-compile`` does without flags at ``--timesteps`` T = 4: the tuner's
pipeline (``snncompile.convert(..., timesteps=4)``; its choice is in the JSON). Fine-tuning:
``--finetune METHOD`` at T = 4 with the CLI's defaults (5 epochs, Adam lr 2e-3 relative to
each tensor's RMS, batch 64, seed 0), the ANN (the ONNX graph) teaching, 10 % of the training
images held out (``finetune.heldout``): the network kept is the better of the converted and the
fine-tuned one there. Columns: the converted SNN at T = 2, 4, 8, the network fine-tuning
returned, the ANN, ``kept`` and the held-out accuracy converted → fine-tuned (``ho``); ``old`` =
the same fine-tuning as before issue 22 (the converted IR's own ANN mode teaching — the biases
``bias-calibration`` shifted — no held-out check, all samples), at T = 4 (``--no-old`` skips it);
``s`` = fine-tuning seconds (1 torch thread; grows with the machine's load, in the JSON).
Writes benchmarks/results/finetune.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]

import snncompile  # noqa: E402
from snncompile.backends.gpu import compile as gpu_compile  # noqa: E402
from snncompile.data import Dataset, digits  # noqa: E402
from snncompile.finetune import FinetuneConfig, train  # noqa: E402
from snncompile.interp import run_ann  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
MNIST = ("mnist_maxpool", "mnist_cnn", "mnist_resnet")
OTHER = ("digits_cnn", "resnet_block")
STEPS = (2, 4, 8)


def _model(name: str, tmp: Path, ann_epochs: int) -> tuple[Path, Dataset, Dataset]:
    """(ONNX path, training split, test split) of ``name``."""
    if name in MNIST:
        from benchmarks.models import mnist as mnist_models

        m = mnist_models.trained(getattr(mnist_models, name)(), epochs=ann_epochs)
        return (mnist_models.export(m, tmp / f"{name}.onnx"), mnist_models.digits28("train"),
                mnist_models.digits28("test"))
    if name == "digits_cnn":
        return ROOT / "examples" / "digits_cnn.onnx", digits("train"), digits("test")
    from benchmarks.models import tests as models

    m = models.trained(models.resnet_block, epochs=10)
    return models.export(m, tmp / "resnet.onnx"), digits("train"), digits("test")


def _accuracy(graph: Any, te: Dataset) -> dict[str, float]:
    net = gpu_compile(graph, snncompile.CompileOptions(timesteps=max(STEPS), device="cpu"))
    acc = net.run(te.x, max(STEPS), progress=False).accuracy_by_timestep(te.y)
    return {str(t): float(acc[t - 1]) for t in STEPS}


def _finetune(snn: Any, tr: Dataset, method: str, cfg: FinetuneConfig, ann: Any,
              te: Dataset) -> dict[str, Any]:
    t0, c0 = time.perf_counter(), time.process_time()
    results = train(snn, tr, method, config=cfg, teacher=ann)
    last = results[-1]
    return {"accuracy": _accuracy(last.graph, te),
            "trained_accuracy": (_accuracy(last.trained, te) if last.trained is not last.graph
                                 else None),
            "seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0,
            "epochs_trained": sum(len(r.history) for r in results),
            "teacher": last.teacher, "held_out": None if last.check is None else
            last.check.report()}


def bench(name: str, methods: list[str], a: argparse.Namespace, tmp: Path) -> list[dict]:
    path, tr, te = _model(name, tmp, a.ann_epochs)
    ann = snncompile.load_onnx(path)
    ann_acc = float(np.mean(run_ann(ann, te.x).argmax(1) == te.y))
    t0 = time.perf_counter()
    snn, pm, ctx = snncompile.convert(path, calibration=tr, timesteps=a.timesteps)
    conv_s = time.perf_counter() - t0
    before = _accuracy(snn, te)
    data = tr.take(a.samples)
    rows = []
    for method in methods:
        print(f"[{name}] {method} ...", file=sys.stderr, flush=True)
        cfg = FinetuneConfig(epochs=a.epochs, timesteps=a.timesteps, seed=0, progress=False)
        new = _finetune(snn, data, method, cfg, ann, te)
        row = {"model": name, "method": method, "ann_accuracy": ann_acc,
               "pipeline": pm.spec(), "convert_seconds": conv_s, "converted": before,
               "finetuned": new["accuracy"], "finetune": new, "train_timesteps": a.timesteps,
               "epochs": a.epochs, "samples": len(data), "load_average": os.getloadavg()[0]}
        if a.old:  # before issue 22: the IR's ANN mode teaches, no held-out check
            old_cfg = FinetuneConfig(epochs=a.epochs, timesteps=a.timesteps, seed=0,
                                     progress=False, holdout=0.0, teacher=snn)
            row["old"] = _finetune(snn, data, method, old_cfg, None, te)
        rows.append(row)
        print(f"[{name}] {method}: ANN {ann_acc:.4f} converted T4 {before['4']:.4f} -> "
              f"{new['accuracy']['4']:.4f} ({new['seconds']:.0f} s, load "
              f"{row['load_average']:.1f})", file=sys.stderr, flush=True)
    return rows


def _kept(r: dict[str, Any]) -> tuple[str, str]:
    ho = r["finetune"]["held_out"]
    if ho is None:
        return "fine-tuned", "–"
    sc = ho["scores"]
    last = list(sc)[-1]
    return ho["kept"], f"{sc['converted']['accuracy']:.3f} → {sc[last]['accuracy']:.3f}"


def table(rows: list[dict[str, Any]]) -> str:
    head = ("| model | method | ANN | " + " | ".join(f"conv T={t}" for t in STEPS) + " | "
            + " | ".join(f"fine-tuned T={t}" for t in STEPS)
            + " | ANN − fine-tuned T=4 | kept | held-out | old T=4 | s |")
    out = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        c, f = r["converted"], r["finetuned"]
        kept, ho = _kept(r)
        old = r.get("old")
        out.append(
            f"| {r['model']} | {r['method']} | {r['ann_accuracy']:.4f} | "
            + " | ".join(f"{c[str(t)]:.4f}" for t in STEPS) + " | "
            + " | ".join(f"{f[str(t)]:.4f}" for t in STEPS)
            + f" | {100 * (r['ann_accuracy'] - f['4']):+.2f} pt | {kept} | {ho} | "
            + ("–" if old is None else f"{old['accuracy']['4']:.4f}")
            + f" | {r['finetune']['seconds']:.0f} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=list(MNIST), choices=[*MNIST, *OTHER])
    ap.add_argument("--methods", nargs="+", default=["distill"])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--ann-epochs", type=int, default=8)
    ap.add_argument("--timesteps", type=int, default=4)
    ap.add_argument("--samples", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-old", dest="old", action="store_false")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS / "finetune.json")
    a = ap.parse_args()
    if a.quick:
        a.epochs, a.models = 1, a.models[:2]
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for m in a.models:  # the JSON is rewritten after each model (a long run keeps its rows)
            rows += bench(m, a.methods, a, Path(tmp))
            _write(a, rows)
    print(table(rows))
    print(f"wrote {a.out}")


def _write(a: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    a.out.parent.mkdir(parents=True, exist_ok=True)
    cmd = "python -m benchmarks.finetune " + " ".join(sys.argv[1:])
    a.out.write_text(json.dumps({
        "command": cmd.strip(), "machine": platform.platform(), "cpu_threads": a.threads,
        "cpu_count": os.cpu_count(), "load_average_at_end": os.getloadavg(),
        "torch": torch.__version__, "rows": rows, "table": table(rows)}, indent=1) + "\n")


if __name__ == "__main__":
    main()
