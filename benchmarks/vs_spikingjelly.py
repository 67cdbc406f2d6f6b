"""snn-compile against SpikingJelly's ann2snn on the same trained models: accuracy vs T, throughput.

    .venv/bin/pip install -e '.[bench]'        # spikingjelly==0.0.0.0.14 (+ requests)
    .venv/bin/python benchmarks/vs_spikingjelly.py
    .venv/bin/python benchmarks/vs_spikingjelly.py --quick      # smoke run: 1 model, T ≤ 16

The peer. Issue 3 names "spikingjelly 2.0, its RateCodingRecipe with modes max / 99.9% / 0.5".
Version 2.0 with its recipes exists only in SpikingJelly's git master, not on PyPI; the newest
release, 0.0.0.0.14, has ``spikingjelly.activation_based.ann2snn.Converter(dataloader, mode=...)``
with the same three modes: 'max' (scale = max activation), '99.9%' (the 99.9th percentile) and
0.5 (half the max), each an exponential moving average over calibration batches (momentum 0.1),
Conv+BN fused, every ``nn.ReLU`` replaced by VoltageScaler(1/s) → IFNode(θ=1, soft reset,
v(0)=0) → VoltageScaler(s). That release is what is measured here, and the JSON says so.

Models (trained here with the project's own recipes, on digits("train"); evaluated on the 540
images of digits("test")):

- ``digits_cnn``: examples/train_digits.py's ``build()`` + ``train()`` (the bundled model's
  recipe, retrained: same seed, so the same architecture and training, not the same file);
- ``resnet``: tests/models.py's ``resnet_block`` (two BasicBlocks, one downsampling), written
  with ``nn.ReLU`` modules (SpikingJelly only converts ReLU *modules*; same weights and maths);
- ``vgg_maxpool``: tests/models.py's ``vgg_maxpool`` (two MaxPool2d).

Each trained torch module is exported to ONNX for snn-compile (default settings: p99.9
layer-wise thresholds, α = 0.5, IF with reset by subtraction, 512 calibration images) and handed,
deep-copied, to SpikingJelly's Converter with the same 512 calibration images (batches of 100, as
in SpikingJelly's MNIST example). One run to T = 64 gives each method's accuracy at every t ≤ 64
(both accumulate the readout over steps; SpikingJelly is stepped as its own example does:
``reset_net``, then ``out += snn(x)`` per step).

Also measured, as an ablation (not "our default"): snn-compile with ``alpha=0``, i.e. v(0) = 0
like SpikingJelly's IFNode, to show how much of the low-T difference the initial potential makes.

Throughput: images·steps/s of one evaluation run to T = 64 over the test set at batch 256, on the
same device, best of ``--repeats``. Ours is ``GpuNetwork.run`` (including spike and synop
counting); SpikingJelly's is its single-step loop (``step_mode='s'``, torch backend: what its
Converter produces; its CuPy multi-step backend needs CUDA and SpikingJelly's own layer wrappers).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
for p in (str(ROOT), str(ROOT / "tests"), str(ROOT / "examples")):
    if p not in sys.path:
        sys.path.insert(0, p)

import train_digits  # noqa: E402  (examples/train_digits.py)

import snncompile  # noqa: E402
from snncompile.data import digits  # noqa: E402

import models as test_models  # noqa: E402  (tests/models.py)

RESULTS = ROOT / "benchmarks" / "results"
T_REPORT = (4, 8, 16, 32, 64)
SJ_MODES: tuple[str | float, ...] = ("max", "99.9%", 0.5)


# ----------------------------------------------------------------------------- models
class ReluBlock(test_models.BasicBlock):
    """tests/models.py's BasicBlock with its two ReLUs as modules (same parameters)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__(c_in, c_out, stride)
        self.relu1 = nn.ReLU()
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu1(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu2(y + self.shortcut(x))


def resnet(seed: int = 0) -> nn.Module:
    """tests/models.py's resnet_block (same layers, same seeded init), ReLUs as modules."""
    torch.manual_seed(seed)
    m = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        ReluBlock(8, 8), ReluBlock(8, 16, stride=2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    return test_models._Randomize.bn(m, seed)


def train_digits_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    tr = digits("train", seed=0)
    model = train_digits.build()
    train_digits.train(model, tr.x, tr.y, epochs=40, seed=seed)
    return model.eval()


def trained_models(names: list[str]) -> dict[str, nn.Module]:
    out = {}
    for name in names:
        if name == "digits_cnn":
            out[name] = train_digits_cnn()
        elif name == "resnet":
            out[name] = test_models.trained(resnet, epochs=10)
        elif name == "vgg_maxpool":
            out[name] = test_models.trained(test_models.vgg_maxpool, epochs=12)
        else:
            raise SystemExit(f"unknown model {name!r}")
    return out


# ----------------------------------------------------------------------------- evaluation
def ann_accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        return float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


@torch.no_grad()
def sj_run(snn: nn.Module, x: np.ndarray, steps: int, batch: int,
           device: torch.device) -> np.ndarray:
    """SpikingJelly's evaluation loop: predictions (T, N) after each step."""
    from spikingjelly.activation_based import functional

    preds = []
    for i in range(0, len(x), batch):
        xb = torch.from_numpy(x[i:i + batch]).to(device)
        functional.reset_net(snn)
        out = None
        pb = []
        for _ in range(steps):
            y = snn(xb)
            out = y if out is None else out + y
            pb.append(out.argmax(1))
        preds.append(torch.stack(pb).cpu().numpy())
    return np.concatenate(preds, axis=1)


def sj_convert(model: nn.Module, cal: np.ndarray, mode: str | float,
               device: torch.device) -> nn.Module:
    from spikingjelly.activation_based import ann2snn

    ds = torch.utils.data.TensorDataset(torch.from_numpy(cal), torch.zeros(len(cal)))
    loader = torch.utils.data.DataLoader(ds, batch_size=100, shuffle=False)
    # deep copy: the Converter's Conv-BN fusion replaces submodules of nested blocks in place
    ann = copy.deepcopy(model).to(device).eval()
    return ann2snn.Converter(loader, device=str(device), mode=mode)(ann).eval()


def best_of(fn: Any, repeats: int, device: torch.device) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return best, out


def bench_model(name: str, model: nn.Module, device: torch.device, steps: int, batch: int,
                repeats: int, tmp: Path) -> dict[str, Any]:
    tr, te = digits("train"), digits("test")
    cal = tr.x[:512]  # what `snn-compile --dataset digits` calibrates on (the first 512)
    onnx = test_models.export(model, tmp / f"{name}.onnx")
    row: dict[str, Any] = {"model": name, "ann_accuracy": ann_accuracy(model, te.x, te.y),
                           "samples": len(te), "methods": {}}
    ours = snncompile.compile(onnx, target="gpu", calibration=cal, timesteps=steps,
                              device=device.type, batch_size=batch)
    # ablation: v(0) = 0 as SpikingJelly's IFNode starts (shows what α = 0.5 buys at low T)
    ours_a0 = snncompile.compile(onnx, target="gpu", calibration=cal, timesteps=steps,
                                 device=device.type, batch_size=batch, alpha=0.0)
    runs: dict[str, Any] = {
        "snn-compile (default)": lambda: ours.run(te.x, steps, progress=False)
        .accuracy_by_timestep(te.y),
        "snn-compile alpha=0": lambda: ours_a0.run(te.x, steps, progress=False)
        .accuracy_by_timestep(te.y)}
    for mode in SJ_MODES:
        snn = sj_convert(model, cal, mode, device)
        runs[f"spikingjelly {mode}"] = (
            lambda snn=snn: (sj_run(snn, te.x, steps, batch, device)
                             == te.y.reshape(1, -1)).mean(axis=1))
    # rounds interleave the methods, so that a load change on a shared machine hits them alike;
    # each method's time is its best round
    best = {k: float("inf") for k in runs}
    accs: dict[str, np.ndarray] = {}
    for r in range(repeats + 1):  # round 0 is a warm-up
        for meth, fn in runs.items():
            sec, acc = best_of(fn, 1, device)
            if r > 0:
                best[meth] = min(best[meth], sec)
                if not np.array_equal(acc, accs[meth]):  # every run must give the same answer
                    raise RuntimeError(f"{meth}: accuracy changed between runs")
            accs[meth] = acc
    for meth in runs:
        row["methods"][meth] = {
            "accuracy_by_timestep": np.asarray(accs[meth]).tolist(), "seconds": best[meth],
            "img_steps_per_s": len(te) * steps / best[meth]}
    return row


# ----------------------------------------------------------------------------- output
def summarize(rows: list[dict[str, Any]], t_report: tuple[int, ...]) -> str:
    lines = []
    head = "| model | method | " + " | ".join(f"T={t}" for t in t_report) + " | img·steps/s |"
    lines += [head, "|" + "---|" * (len(t_report) + 3)]
    for r in rows:
        lines.append(f"| {r['model']} | ANN | " + " | ".join(f"{r['ann_accuracy']:.4f}"
                                                           for _ in t_report) + " | |")
        for meth, m in r["methods"].items():
            acc = m["accuracy_by_timestep"]
            cells = " | ".join(f"{acc[t - 1]:.4f}" if t <= len(acc) else "" for t in t_report)
            lines.append(f"| {r['model']} | {meth} | {cells} | {m['img_steps_per_s']:,.0f} |")
    lines += ["", "| model | ours − best SpikingJelly mode, per T (+ = we win) | speed-up |",
              "|---|---|---|"]
    for r in rows:
        ours = r["methods"]["snn-compile (default)"]
        sj = {k: v for k, v in r["methods"].items() if k.startswith("spikingjelly")}
        diffs = []
        for t in t_report:
            if t > len(ours["accuracy_by_timestep"]):
                continue
            best = max(v["accuracy_by_timestep"][t - 1] for v in sj.values())
            diffs.append(f"T={t}: {ours['accuracy_by_timestep'][t - 1] - best:+.4f}")
        fastest = max(v["img_steps_per_s"] for v in sj.values())
        lines.append(f"| {r['model']} | {', '.join(diffs)} | "
                     f"{ours['img_steps_per_s'] / fastest:.1f}× |")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(rows), figsize=(5 * len(rows), 4), squeeze=False)
    for ax, r in zip(axes[0], rows):
        for meth, m in r["methods"].items():
            acc = m["accuracy_by_timestep"]
            ax.plot(range(1, len(acc) + 1), acc, label=meth,
                    lw=2.2 if meth == "snn-compile (default)" else 1.2,
                    ls=":" if "alpha=0" in meth else "-")
        ax.axhline(r["ann_accuracy"], color="k", ls="--", lw=1, label="ANN")
        ax.set_xscale("log", base=2)
        ax.set_ylim(0, 1.02)
        ax.set_title(r["model"])
        ax.set_xlabel("timestep t")
        ax.set_ylabel("test accuracy")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument("--models", default="digits_cnn,resnet,vgg_maxpool")
    ap.add_argument("--timesteps", type=int, default=64)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--quick", action="store_true", help="smoke run: digits_cnn, T=16, 1 repeat")
    ap.add_argument("--out", type=Path, default=RESULTS / "vs_spikingjelly.json")
    a = ap.parse_args(argv)
    try:
        import spikingjelly  # noqa: F401
    except ImportError:
        raise SystemExit("spikingjelly is not installed: .venv/bin/pip install -e '.[bench]'")
    from importlib.metadata import version

    torch.set_num_threads(a.threads)
    if a.quick:
        a.models, a.timesteps, a.repeats = "digits_cnn", 16, 1
    device = torch.device("cuda" if a.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if a.device == "auto" else a.device))
    names = a.models.split(",")
    t_report = tuple(t for t in T_REPORT if t <= a.timesteps)
    trained = trained_models(names)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for name in names:
            rows.append(bench_model(name, trained[name], device, a.timesteps, a.batch,
                                    a.repeats, Path(d)))
            print(f"done {name}", file=sys.stderr)
    text = summarize(rows, t_report)
    print(text)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    info = {
        "benchmark": "vs_spikingjelly",
        "peer": f"spikingjelly {version('spikingjelly')} ann2snn.Converter (modes "
                f"{', '.join(map(str, SJ_MODES))}); issue 3 names spikingjelly 2.0's "
                "RateCodingRecipe, which is not released on PyPI",
        "ours": "snn-compile defaults: p99.9 layer-wise thresholds, alpha 0.5, IF subtract",
        "device": str(device), "threads": a.threads, "batch": a.batch,
        "timesteps": a.timesteps, "repeats": a.repeats, "quick": a.quick,
        "machine": {"platform": platform.platform(), "torch": torch.__version__,
                    "cpu_count": __import__("os").cpu_count()},
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "load_average_at_end": __import__("os").getloadavg(), "table": text, "rows": rows}
    a.out.write_text(json.dumps(info, indent=1) + "\n")
    png = a.out.with_suffix(".png")
    plot(rows, png)
    print(f"wrote {a.out} and {png}", file=sys.stderr)


if __name__ == "__main__":
    main()
