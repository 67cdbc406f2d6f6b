"""Latency benchmark of the low-latency conversion methods (issue 5): accuracy vs timesteps.

    .venv/bin/python -m benchmarks.latency                 # all models, every neuron option
    .venv/bin/python -m benchmarks.latency --quick         # smoke run: 100 samples, T <= 8

Models (all on the bundled digits data, 1×8×8, seeded; trained here in seconds):

- ``digits_cnn``: the bundled example ``examples/digits_cnn.onnx`` (float ReLU ANN);
- ``resnet``: ``tests/models.resnet_block`` (stem + identity block + downsampling block with a
  1×1 projection shortcut, BatchNorm) trained for ``--resnet-epochs`` epochs;
- ``cnn_qL`` for L = 2, 4, 8: the digits CNN architecture (``examples/train_digits.build``)
  trained as a float ANN, every ReLU swapped for ``snncompile.qat.QuantReLU(L)`` and
  fine-tuned (the recipe of ``examples/train_quantized_digits.py``, fewer epochs).

Neuron options: if, if-hard, signed-if, gn (M=2, M=4), bistable (window ρ=2), sigma-delta
(delta threshold θ/16); on the ResNet also if and bistable with ``sync-shortcuts``. Float
models take thresholds from calibration (p99.9 of 512 training images), quantized models from
their λ. One simulation to T=64 per (model, option) gives the accuracy at every t ≤ 64 (the
neuron scans are causal); spikes and synaptic operations per sample at t are the messages sent
up to t (``NeuronModel.events``: a GN step counts its member spikes, a negative spike counts 1,
a sigma-delta unit counts one message per nonzero delta), SOPs = messages × fan-out.

Writes benchmarks/results/latency.json, benchmarks/results/latency.png, and prints markdown
tables (accuracy; spikes and SOPs per sample at T = 8 and 64).
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
from benchmarks import models
from snncompile.backends.gpu import compile as gpu_compile
from snncompile.data import digits
from snncompile.interp import run_ann
from snncompile.options import CompileOptions

ROOT = Path(__file__).resolve().parents[1]

RESULTS = ROOT / "benchmarks" / "results"
TS = (1, 2, 4, 8, 16, 32, 64)
#: option label -> (convert kwargs, extra passes)
OPTIONS: dict[str, dict[str, Any]] = {
    "if": {}, "if-hard": {"neuron": "if-hard"}, "signed-if": {"neuron": "signed-if"},
    "gn M=2": {"neuron": "gn", "gn_members": 2}, "gn M=4": {"neuron": "gn", "gn_members": 4},
    "bistable": {"neuron": "bistable"}, "sigma-delta": {"neuron": "sigma-delta"},
}
RESNET_EXTRA = {"if +sync": {"sync_shortcuts": True},
                "bistable +sync": {"neuron": "bistable", "sync_shortcuts": True}}


# ------------------------------------------------------------------ models
def make_models(tmp: Path, quick: bool, resnet_epochs: int) -> dict[str, Path]:
    from snncompile.qat import quantize_relus

    build, export, train = (models.train_digits.build, models.train_digits.export,
                            models.train_digits.train)
    finetune = models.train_quantized_digits.finetune
    out = {"digits_cnn": ROOT / "examples" / "digits_cnn.onnx"}
    t0 = time.perf_counter()
    res = models.tests.trained(models.tests.resnet_block, epochs=2 if quick else resnet_epochs)
    out["resnet"] = models.tests.export(res, tmp / "resnet.onnx")
    tr = digits("train")
    torch.manual_seed(0)
    base = build()
    train(base, tr.x, tr.y, 4 if quick else 12, seed=0)
    state = {k: v.clone() for k, v in base.state_dict().items()}
    for levels in (2, 4, 8):
        m = build()
        m.load_state_dict(state)
        quantize_relus(m, levels, sample=torch.from_numpy(tr.x[:512]))
        finetune(m, tr.x, tr.y, 2 if quick else 5, seed=0)
        path = tmp / f"cnn_q{levels}.onnx"
        export(m, path)
        out[f"cnn_q{levels}"] = path
    print(f"trained models in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return out


# ------------------------------------------------------------------ one run
@torch.no_grad()
def measure(path: Path, kwargs: dict[str, Any], calib: np.ndarray, x: np.ndarray, y: np.ndarray,
            steps: int, batch: int = 100) -> dict[str, Any]:
    snn, pm, _ = snncompile.convert(path, target="gpu", calibration=calib, **kwargs)
    net = gpu_compile(snn, CompileOptions(device="cpu"))
    correct = np.zeros(steps)
    spikes = np.zeros(steps)
    sops = np.zeros(steps)
    t0 = time.perf_counter()
    for i in range(0, len(x), batch):
        xb = torch.from_numpy(x[i:i + batch])
        pot, trains = net.module.simulate(xb, steps)
        pred = pot.flatten(2).argmax(-1).numpy()  # (T, B)
        correct += (pred == y[i:i + batch][None]).sum(1)
        for name, s in trains.items():
            ev = net.module.neurons[name][0].events(s).to(torch.float64)  # (T, B, ...)
            spikes += ev.flatten(2).sum((1, 2)).numpy()
            sops += (ev * net.fanouts[name]).flatten(2).sum((1, 2)).numpy()
    n = len(x)
    return {"pipeline": pm.spec(), "seconds": time.perf_counter() - t0,
            "accuracy": {t: float(correct[t - 1] / n) for t in TS if t <= steps},
            "spikes_per_sample": {t: float(np.cumsum(spikes)[t - 1] / n) for t in TS if t <= steps},
            "sops_per_sample": {t: float(np.cumsum(sops)[t - 1] / n) for t in TS if t <= steps}}


# ------------------------------------------------------------------ output
def tables(results: dict[str, Any], steps: int) -> str:
    ts = [t for t in TS if t <= steps]
    lines = ["| model | neuron | ANN | " + " | ".join(f"T={t}" for t in ts) + " |",
             "|---|---|---|" + "---|" * len(ts)]
    for model, r in results["models"].items():
        for opt, m in r["options"].items():
            acc = " | ".join(f"{100 * m['accuracy'][t]:.1f}" for t in ts)
            lines.append(f"| {model} | {opt} | {100 * r['ann_accuracy']:.1f} | {acc} |")
    t_mid = 8 if steps >= 8 else steps
    lines += ["", f"| model | neuron | spikes/sample T={t_mid} | T={steps} | SOPs/sample "
              f"T={t_mid} | T={steps} |", "|---|---|---|---|---|---|"]
    for model, r in results["models"].items():
        for opt, m in r["options"].items():
            sp, so = m["spikes_per_sample"], m["sops_per_sample"]
            lines.append(f"| {model} | {opt} | {sp[t_mid]:.0f} | {sp[steps]:.0f} | "
                         f"{so[t_mid]:.3g} | {so[steps]:.3g} |")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["models"])
    cols = 3
    rows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    for ax, model in zip(axes.flat, names):
        r = results["models"][model]
        for opt, m in r["options"].items():
            ts = [int(t) for t in m["accuracy"]]
            ax.plot(ts, [m["accuracy"][t] for t in m["accuracy"]], marker="o", ms=3, label=opt)
        ax.axhline(r["ann_accuracy"], color="k", ls="--", lw=1, label="ANN")
        ax.set_xscale("log", base=2)
        ax.set_ylim(0, 1.02)
        ax.set_title(model)
        ax.set_xlabel("timesteps T")
        ax.set_ylabel("accuracy")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    widest = max(range(len(names)), key=lambda i: len(results["models"][names[i]]["options"]))
    axes.flat[widest].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="100 samples, T <= 8, short training")
    ap.add_argument("--samples", type=int, default=270,
                    help="test samples (default 270 of the 540: keeps the run within minutes)")
    ap.add_argument("--resnet-epochs", type=int, default=6)
    ap.add_argument("--out", type=Path, default=RESULTS / "latency.json")
    a = ap.parse_args()
    torch.set_num_threads(2)
    steps = 8 if a.quick else 64
    tr, te = digits("train"), digits("test")
    n = min(100 if a.quick else a.samples, len(te))
    x, y = te.x[:n], te.y[:n]
    calib = tr.x[:512]
    t_all = time.perf_counter()
    results: dict[str, Any] = {"timesteps": list(t for t in TS if t <= steps), "samples": n,
                               "machine": platform.platform(), "torch": torch.__version__,
                               "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_models(Path(tmp), a.quick, a.resnet_epochs)
        for model, path in paths.items():
            ann = snncompile.load_onnx(path)
            entry: dict[str, Any] = {"ann_accuracy": float(np.mean(run_ann(ann, x).argmax(1) == y)),
                                     "options": {}}
            opts = {**OPTIONS, **(RESNET_EXTRA if model == "resnet" else {})}
            for label, kw in opts.items():
                entry["options"][label] = measure(path, kw, calib, x, y, steps)
                m = entry["options"][label]
                print(f"{model:<11} {label:<15} acc@1/4/{steps}: "
                      f"{m['accuracy'][1]:.3f} {m['accuracy'][min(4, steps)]:.3f} "
                      f"{m['accuracy'][steps]:.3f}  ({m['seconds']:.1f} s)", file=sys.stderr)
            results["models"][model] = entry
    results["seconds"] = time.perf_counter() - t_all
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(results, indent=1) + "\n")
    plot(results, a.out.with_suffix(".png"))
    print(tables(results, steps))
    print(f"\n{n} test samples, {results['seconds']:.0f} s; wrote {a.out} and "
          f"{a.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
