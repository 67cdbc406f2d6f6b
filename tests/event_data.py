"""Generated event recordings for the tests (no package ships sample data): bars sweeping in
one of four directions, written class per folder in the three event formats.

A bar of width ``BAR`` sweeps ``STEPS`` pixels from a seeded start; at each position its leading
edge emits ON events and its trailing edge OFF events (an ideal DVS), each with a seeded
timestamp jitter, plus a few noise events of random polarity. Class 0 moves right, 1 left,
2 down, 3 up.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from snncompile import events

SIZE = 12  # sensor H = W
BAR = 3
STEPS = 6
DT = 1000  # µs per position
CLASSES = ("0_right", "1_left", "2_down", "3_up")  # sorted: the label order


def bar(direction: int, rng: np.random.Generator, size: int = SIZE
        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x, y, t, p) of one sweep, sorted by t."""
    start = int(rng.integers(0, size - BAR - STEPS + 1))
    xs, ys, ts, ps = [], [], [], []
    sign = 1 if direction in (0, 2) else -1
    for k in range(STEPS):
        pos = start + k if sign > 0 else size - 1 - start - k  # the bar's leading column
        lead, trail = pos + sign, pos - sign * (BAR - 1)
        for edge, pol in ((lead, 1), (trail, 0)):
            if not 0 <= edge < size:
                continue
            across = np.arange(size)
            t = k * DT + rng.integers(0, DT, size)
            a, b = (np.full(size, edge), across) if direction < 2 else (across, np.full(size, edge))
            xs.append(a), ys.append(b), ts.append(t), ps.append(np.full(size, pol))
    noise = 4
    xs.append(rng.integers(0, size, noise)), ys.append(rng.integers(0, size, noise))
    ts.append(rng.integers(0, STEPS * DT, noise)), ps.append(rng.integers(0, 2, noise))
    x, y, t, p = (np.concatenate(v) for v in (xs, ys, ts, ps))
    order = np.argsort(t, kind="stable")
    return x[order], y[order], t[order], p[order]


def write_folder(root: Path, per_class: int, fmt: str, seed: int = 0) -> Path:
    """root/<direction>/<i>.<fmt> recordings (fmt: npy, bin or aedat4)."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(CLASSES):
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            x, y, t, p = bar(c, rng)
            path = d / f"{i:03d}.{fmt}"
            if fmt == "npy":
                events.write_npy(path, x, y, t, p)
            elif fmt == "bin":
                events.write_bin(path, x, y, t, p)
            else:
                from snncompile.aedat4 import write_aedat4

                write_aedat4(path, x, y, t, p, size=(SIZE, SIZE))
    return root


def arrays(per_class: int, seed: int = 0, frames: int | None = None
           ) -> tuple[np.ndarray, np.ndarray]:
    """The same recordings in memory: summed frames (N, 2, H, W) or (N, T, 2, H, W), labels."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for c in range(len(CLASSES)):
        for _ in range(per_class):
            x, y, t, p = bar(c, rng)
            ev = events._events(x, y, t, p)
            xs.append(events.bin_events(ev, (2, SIZE, SIZE), frames))
            ys.append(c)
    return np.stack(xs), np.asarray(ys, np.int64)


def trained_onnx(path: Path, per_class: int = 40, epochs: int = 30, seed: int = 0) -> Path:
    """A small CNN (2×12×12 -> 4) trained on the summed frames of generated sweeps, as ONNX
    (the ANN of the event tests; seconds on a CPU)."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
                          nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
                          nn.Flatten(), nn.Linear(16 * 3 * 3, 4))
    x, y = arrays(per_class, seed=seed + 1)
    xt, yt = torch.from_numpy(x / 4.0), torch.from_numpy(y)  # counts: ~1..4 per pixel
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(epochs):
        loss = nn.functional.cross_entropy(model(xt), yt)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():  # read the counts as they are: fold the 1/4 into the first conv
        model[0].weight /= 4.0
    torch.onnx.export(model, (torch.zeros(2, 2, SIZE, SIZE),), str(path), input_names=["input"],
                      output_names=["logits"], opset_version=17, dynamo=False,
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return path
