"""Train the bundled example: a small CNN on scikit-learn's 8×8 digits, exported to ONNX.

    .venv/bin/python examples/train_digits.py            # writes examples/digits_cnn.onnx

Conv(1→16, 3×3) + BN + ReLU → AvgPool 2 → Conv(16→32, 3×3) + BN + ReLU → AvgPool 2 →
Flatten → Linear(128→64) + ReLU → Linear(64→10). Fixed seed; ~10 s on a 2-core CPU.
The train/test split is the one ``snn-compile --dataset digits`` uses (70/30, seed 0).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from snncompile.data import digits  # noqa: E402


def build() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 2 * 2, 64), nn.ReLU(),
        nn.Linear(64, 10),
    )


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int = 40, seed: int = 0,
          opt: torch.optim.Optimizer | None = None) -> None:
    """Cross-entropy, batches of 64 with random 1-pixel shifts, cosine schedule; ``opt``
    defaults to Adam (lr 3e-3, weight decay 1e-4)."""
    g = torch.Generator().manual_seed(seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = opt or torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(epochs, 1))
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(xt), generator=g)
        for i in range(0, len(xt), 64):
            idx = perm[i:i + 64]
            # light augmentation: random 1-pixel shifts
            xb = torch.roll(xt[idx], shifts=tuple(torch.randint(-1, 2, (2,), generator=g).tolist()),
                            dims=(2, 3))
            loss = nn.functional.cross_entropy(model(xb), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    model.eval()


def export(model: nn.Module, path: Path, opset: int = 17) -> None:
    dummy = torch.zeros(1, 1, 8, 8)
    torch.onnx.export(model, (dummy,), str(path), input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                      opset_version=opset, dynamo=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("digits_cnn.onnx"))
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    tr, te = digits("train", seed=0), digits("test", seed=0)
    model = build()
    train(model, tr.x, tr.y, a.epochs, a.seed)
    with torch.no_grad():
        acc = (model(torch.from_numpy(te.x)).argmax(1).numpy() == te.y).mean()
    export(model, a.out)
    print(f"test accuracy {acc:.4f} on {len(te)} samples; wrote {a.out} "
          f"({a.out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
