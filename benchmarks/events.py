"""Benchmark of event-camera input (issue 21): the ANN on summed event frames vs the converted SNN
fed one event frame per step, at T = 1..16, with and without temporal-consistency fine-tuning
on the frames.

    .venv/bin/python -m benchmarks.events --steps 1,2,4,8,16 --finetune-steps 2,8 \
        --finetune-epochs 2                                # the README table
    .venv/bin/python -m benchmarks.events                  # T = 1..16, fine-tuned at 1, 2, 4, 8, 16
    .venv/bin/python -m benchmarks.events --quick          # smoke run

Data: there is no event data set here, so scikit-learn's 8×8 digits are turned into events by
*simulated saccades*, as N-MNIST was recorded (Orchard et al. 2015) but in software: each digit
(bilinearly upsampled to 16×16, intensity = pixel/16, on a black 20×20 canvas) is moved along
N-MNIST's three-saccade triangle ((0,0) -> (2,2) -> (4,0) -> (0,0) pixels, 100 ms per saccade)
in 1 ms sub-pixel bilinear shifts, and an ideal DVS emits an event whenever a pixel's log
intensity log(I + 0.05) has changed by a contrast threshold (0.2, ±3 % per pixel, seeded) since
its last event (ON for an increase, OFF for a decrease; several events for a large step; times
uniform within the millisecond), plus uniform noise events at 0.2 Hz per pixel. The recordings
are written as tonic .npy files, class per folder (digits' seeded 70/30 split: 1257 train, 540
test) and read back through ``snncompile.data.open_data`` as the CLI reads ``--eval``.

ANN: a small CNN (2×20×20 -> conv8 -> pool -> conv16 -> pool -> fc 10, ReLU) trained with Adam
on the training recordings' summed frames (event counts per pixel and polarity), exported to
ONNX. SNN: ``snncompile.convert`` with the default pipeline and tuning for each T on 512
training recordings (summed frames), simulated on the gpu target (CPU) on the test recordings
binned into T frames by time (frame t at step t). Fine-tuned: ``temporal-consistency`` on all
training recordings binned into T frames (``--finetune-epochs`` epochs, the default relative
Adam lr, batch 64), at T in ``--finetune-steps``. Energies are the report's estimates
(``evaluate.energy``): per sample, the SNN on Loihi (Davies et al. 2018) vs the ANN at 45 nm
(Horowitz 2014).

Writes benchmarks/results/events.json and events.md (the table) and prints the table.
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

ROOT = Path(__file__).resolve().parents[1]

import snncompile  # noqa: E402
from snncompile import data, events  # noqa: E402
from snncompile.backends.gpu import compile as gpu_compile  # noqa: E402
from snncompile.evaluate.energy import energy_block  # noqa: E402
from snncompile.finetune import FinetuneConfig, train  # noqa: E402
from snncompile.interp import run_ann  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
CANVAS = 20
SHAPE = (2, CANVAS, CANVAS)
SACCADES = ((0.0, 0.0), (2.0, 2.0), (4.0, 0.0), (0.0, 0.0))  # (dx, dy) vertices, pixels
MS_PER_SACCADE = 100
CONTRAST = 0.2
NOISE_HZ = 0.2


def saccade_events(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """(x, y, t µs, p) of an ideal DVS watching ``img`` (8×8 in [0, 1]) move along SACCADES."""
    from scipy.ndimage import shift, zoom

    canvas = np.zeros((CANVAS, CANVAS))
    canvas[1:17, 1:17] = np.clip(zoom(img, 2, order=1), 0, 1)
    path = []
    for (x0, y0), (x1, y1) in zip(SACCADES, SACCADES[1:]):
        for k in range(MS_PER_SACCADE):
            a = k / MS_PER_SACCADE
            path.append((x0 + a * (x1 - x0), y0 + a * (y1 - y0)))
    path.append(SACCADES[-1])
    thr = CONTRAST * (1 + 0.03 * rng.standard_normal((CANVAS, CANVAS)))
    ref = np.log(canvas + 0.05)
    xs, ys, ts, ps = [], [], [], []
    for ms, (dx, dy) in enumerate(path[1:]):
        now = np.log(np.clip(shift(canvas, (dy, dx), order=1), 0, 1) + 0.05)
        n = np.trunc((now - ref) / thr).astype(np.int64)  # signed number of events
        ref = ref + n * thr
        yy, xx = np.nonzero(n)
        k = np.abs(n[yy, xx])
        xs.append(np.repeat(xx, k)), ys.append(np.repeat(yy, k))
        ps.append(np.repeat(n[yy, xx] > 0, k))
        ts.append(ms * 1000 + rng.integers(0, 1000, int(k.sum())))
    dur = len(path) * 1000
    m = rng.poisson(NOISE_HZ * CANVAS * CANVAS * dur / 1e6)
    xs.append(rng.integers(0, CANVAS, m)), ys.append(rng.integers(0, CANVAS, m))
    ts.append(rng.integers(0, dur, m)), ps.append(rng.integers(0, 2, m) > 0)
    x, y, t, p = (np.concatenate(v) for v in (xs, ys, ts, ps))
    order = np.argsort(t, kind="stable")
    return x[order], y[order], t[order], p[order]


def write_recordings(root: Path, seed: int) -> dict[str, Any]:
    """digits -> root/{train,test}/<digit>/<i>.npy; returns event statistics."""
    rng = np.random.default_rng(seed)
    counts = []
    for split in ("train", "test"):
        ds = data.digits(split, seed=seed)
        for i, (img, label) in enumerate(zip(ds.x[:, 0], ds.y)):
            d = root / split / str(int(label))
            d.mkdir(parents=True, exist_ok=True)
            x, y, t, p = saccade_events(img, rng)
            events.write_npy(d / f"{i:04d}.npy", x, y, t, p)
            counts.append(len(x))
    return {"events_per_recording_mean": float(np.mean(counts)),
            "events_per_recording_min": int(np.min(counts)),
            "events_per_recording_max": int(np.max(counts))}


def read(root: Path, frames: int | None) -> data.Dataset:
    src = data.open_data(root, events=events.EventBinning(SHAPE, frames, "time"), workers=0)
    return src.materialize()


def train_ann(x: np.ndarray, y: np.ndarray, path: Path, epochs: int, seed: int) -> Path:
    from torch import nn

    torch.manual_seed(seed)
    scale = float(np.percentile(x[x > 0], 99))
    model = nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
                          nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
                          nn.Flatten(), nn.Linear(16 * 5 * 5, 10))
    xt, yt = torch.from_numpy(x / scale), torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(len(xt), generator=g)
        for i in range(0, len(xt), 64):
            idx = perm[i:i + 64]
            loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():  # the model reads event counts: the scale goes into the first conv
        model[0].weight /= scale
    torch.onnx.export(model, (torch.zeros(2, *SHAPE),), str(path), input_names=["input"],
                      output_names=["logits"], opset_version=17, dynamo=False,
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return path


def run_t(onnx: Path, root: Path, calib: data.Dataset, steps: int, ft: FinetuneConfig | None,
          train_frames: data.Dataset | None) -> dict[str, Any]:
    """Convert for T = steps, simulate the test recordings in T frames; optionally fine-tune."""
    t0 = time.perf_counter()
    snn, _, _ = snncompile.convert(onnx, target="gpu", calibration=calib.x[:512],
                                   timesteps=steps, seed=0)
    convert_s = time.perf_counter() - t0
    test = read(root / "test", steps)
    opts = snncompile.CompileOptions(timesteps=steps, device="cpu")
    out: dict[str, Any] = {"T": steps, "convert_seconds": convert_s}
    graphs = {"converted": snn}
    if ft is not None and train_frames is not None:
        t1 = time.perf_counter()
        graphs["temporal"] = train(snn, train_frames, "temporal-consistency",
                                   config=ft)[-1].graph
        out["finetune_seconds"] = time.perf_counter() - t1
    for name, g in graphs.items():
        res = gpu_compile(g, opts).run(test.x, steps, progress=False)
        acc = res.accuracy_by_timestep(test.y)
        e = energy_block(res, g, acc)
        out[name] = {"accuracy": float(acc[-1]), "by_t": [float(a) for a in acc],
                     "snn_loihi_uJ": e["per_sample"]["snn_loihi_J"] * 1e6,
                     "snn_45nm_uJ": e["per_sample"]["snn_45nm_J"] * 1e6,
                     "synaptic_ops": e["per_sample"]["synaptic_ops"],
                     "ann_45nm_uJ": e["per_sample"]["ann_45nm_J"] * 1e6}
    return out


def table(rows: list[dict[str, Any]], ann: float) -> str:
    lines = ["| T | ANN (summed frames) | SNN on events | SNN + temporal-consistency | "
             "SNN energy, Loihi (µJ/sample) | ANN energy, 45 nm (µJ/sample) |",
             "|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        tc = f"{r['temporal']['accuracy']:.4f}" if "temporal" in r else "-"
        c = r["converted"]
        lines.append(f"| {r['T']} | {ann:.4f} | {c['accuracy']:.4f} | {tc} | "
                     f"{c['snn_loihi_uJ']:.3g} | {c['ann_45nm_uJ']:.3g} |")
    return "\n".join(lines)


def _steps(text: str) -> list[int]:
    """"1-16" -> 1..16; "1,2,4" -> [1, 2, 4]."""
    if "-" in text:
        lo, hi = text.split("-")
        return list(range(int(lo), int(hi) + 1))
    return [int(v) for v in text.split(",")]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", default="1-16", help="T values: a range a-b or a comma list")
    p.add_argument("--finetune-steps", default="1,2,4,8,16")
    p.add_argument("--finetune-epochs", type=int, default=3)
    p.add_argument("--ann-epochs", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="T = 1, 4; 1 fine-tuning epoch")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    steps, ft_steps = _steps(a.steps), set(_steps(a.finetune_steps))
    if a.quick:
        steps, ft_steps, a.finetune_epochs, a.ann_epochs = [1, 4], {4}, 1, 5
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        stats = write_recordings(root, a.seed)
        calib = read(root / "train", None)
        test_sum = read(root / "test", None)
        onnx = train_ann(calib.x, calib.y, root / "events_cnn.onnx", a.ann_epochs, a.seed)
        ann = float(np.mean(run_ann(snncompile.load_onnx(onnx), test_sum.x).argmax(1)
                            == test_sum.y))
        rows = []
        for steps_t in steps:
            ft = (FinetuneConfig(epochs=a.finetune_epochs, timesteps=steps_t,
                                 seed=a.seed, batch_size=64, device="cpu", progress=False)
                  if steps_t in ft_steps else None)
            frames = read(root / "train", steps_t) if ft is not None else None
            rows.append(run_t(onnx, root, calib, steps_t, ft, frames))
            print(f"T={steps_t}: {rows[-1]['converted']['accuracy']:.4f}"
                  + (f", temporal {rows[-1]['temporal']['accuracy']:.4f}"
                     if "temporal" in rows[-1] else ""), file=sys.stderr)
    md = table(rows, ann)
    result = {"data": "sklearn digits turned into events by simulated saccades (see docstring)",
              "recordings": {"train": len(calib), "test": len(test_sum), **stats},
              "ann_accuracy": ann, "rows": rows, "finetune_epochs": a.finetune_epochs,
              "ann_epochs": a.ann_epochs, "seconds": time.perf_counter() - t0,
              "machine": {"python": platform.python_version(), "torch": torch.__version__,
                          "threads": a.threads, "cpu": platform.processor() or platform.machine()},
              "command": "python -m benchmarks.events " + " ".join(argv if argv is not None
                                                            else sys.argv[1:])}
    if not a.quick:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "events.json").write_text(json.dumps(result, indent=1) + "\n")
        (RESULTS / "events.md").write_text(md + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
