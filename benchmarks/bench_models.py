"""The benchmark models, torch only (no snncompile import): loaded both by our benchmarks and by
``sj2_runner.py`` in SpikingJelly's own Python 3.11 venv, which rebuilds each architecture here
and loads the trained weights from a state-dict file. ReLUs are modules (SpikingJelly converts
ReLU *modules*). Same layers as ``tests/models.py`` and ``examples/train_digits.py``."""

from __future__ import annotations

import torch
from torch import nn


class ReluBlock(nn.Module):
    """Conv-BN-ReLU-Conv-BN + shortcut (identity, or 1×1 strided conv + BN), then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                          nn.BatchNorm2d(c_out))
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu1(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu2(y + self.shortcut(x))


def resnet(seed: int = 0) -> nn.Module:
    """Stem Conv+BN+ReLU (8 ch), an identity block, a downsampling block (16 ch), GAP, Linear."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        ReluBlock(8, 8), ReluBlock(8, 16, stride=2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)).eval()


def vgg_maxpool(seed: int = 0) -> nn.Module:
    """Conv+ReLU ×2, MaxPool, Conv+ReLU, MaxPool, Linear+ReLU, Linear."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 2 * 2, 32), nn.ReLU(), nn.Linear(32, 10)).eval()


def digits_cnn(seed: int = 0) -> nn.Module:
    """examples/train_digits.py's architecture."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.AvgPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(32 * 2 * 2, 64), nn.ReLU(), nn.Linear(64, 10)).eval()


#: model name -> architecture builder (the trained variants share an architecture)
ARCH = {"digits_cnn": digits_cnn, "resnet": resnet, "resnet_long": resnet,
        "vgg_maxpool": vgg_maxpool}
