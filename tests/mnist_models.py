"""The two MNIST-shaped models of issue 10 (1×28×28 input), built from the issue's description,
and 28×28 digits (scikit-learn's 8×8 digits upsampled bilinearly) to train them for seconds.

- ``mnist_cnn``: (Conv3×3-BN-ReLU-AvgPool2) ×2 with 16 and 32 channels -> Linear(1568, 128)
  -> ReLU -> Linear(128, 10). Folding the second AvgPool into the first Linear gives its
  neurons 32·14·14 = 6272 inputs each.
- ``mnist_maxpool``: ``mnist_cnn`` with MaxPool2 instead of AvgPool2 (the MNIST CNN of issue
  22, whose fine-tuning regressed: the tuner converts its pools into current max-pools).
- ``mnist_resnet``: Conv3×3(1->32)-BN-ReLU, AvgPool2 (14×14), two residual blocks
  (Conv-BN-ReLU-Conv-BN + identity, ReLU; 32 channels, so that the issue's Linear(1568, 10)
  fits 32·7·7), AvgPool2 (7×7) -> Linear(1568, 10).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from snncompile.data import Dataset, digits

IN_SHAPE = (1, 28, 28)


def mnist_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.AvgPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(1568, 128), nn.ReLU(), nn.Linear(128, 10))


def mnist_maxpool(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(1568, 128), nn.ReLU(), nn.Linear(128, 10))


class _Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)
        self.c2, self.b2 = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.b2(self.c2(torch.relu(self.b1(self.c1(x))))))


def mnist_resnet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.AvgPool2d(2),
        _Block(32), _Block(32), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(1568, 10))


def digits28(split: str) -> Dataset:
    d = digits(split)
    x = torch.nn.functional.interpolate(torch.from_numpy(d.x), size=(28, 28), mode="bilinear",
                                        align_corners=False)
    return Dataset(x.numpy().astype(np.float32), d.y, f"digits {split}, upsampled to 28x28")


def trained(model: nn.Module, epochs: int = 2, seed: int = 0) -> nn.Module:
    """A few seconds of Adam on 28×28 digits; eval mode."""
    torch.manual_seed(seed)
    tr = digits28("train")
    x, y = torch.from_numpy(tr.x), torch.from_numpy(tr.y).long()
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 64):
            j = perm[i:i + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[j]), y[j]).backward()
            opt.step()
    return model.eval()


def export(model: nn.Module, path: str | Path) -> Path:
    path = Path(path)
    torch.onnx.export(model.eval(), (torch.zeros(2, *IN_SHAPE),), str(path),
                      input_names=["input"], output_names=["logits"], opset_version=17,
                      dynamo=False, dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return path
