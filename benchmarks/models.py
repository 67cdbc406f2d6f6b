"""Every model the benchmarks run, from this one module.

Defined here, torch only (no snncompile import): the benchmark architectures, loaded both by
our benchmarks and by ``sj2_runner.py`` in SpikingJelly's own Python 3.11 venv, which rebuilds
each architecture here and loads the trained weights from a state-dict file. ReLUs are modules
(SpikingJelly converts ReLU *modules*). Same layers as ``tests/models.py`` and
``examples/train_digits.py``.

Kept where they are and loaded from their files on first use (PEP 562 ``__getattr__``, so that
importing this module needs torch only and nothing is added to ``sys.path``):

- ``models.tests``: ``tests/models.py``, the tests' model builders and ``trained``/``export``;
- ``models.mnist``: ``tests/mnist_models.py``, the MNIST-shaped models;
- ``models.train_digits``, ``models.train_quantized_digits``: the examples' training scripts.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

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


# ----------------------------------------------------------------------------- ImageNet-sized
# resnet18 and vgg11_bn with torchvision's layer names and shapes (so a torchvision state dict
# loads with ``load_state_dict(strict=True)``), written here because SpikingJelly's venv has no
# torchvision for its torch. Only the layout is torchvision's; weights come from the state dict.
# Every ReLU is its own module (torchvision's BasicBlock calls one ReLU twice; SpikingJelly's
# converter turns each ReLU *module* into one IF layer, so a shared one would share its state).


class BasicBlock(nn.Module):
    """3×3 conv (stride s) -BN-ReLU- 3×3 conv -BN, + shortcut (identity, or ``downsample``:
    1×1 conv stride s + BN), ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu_out = nn.ReLU()
        self.downsample: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                            nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.downsample is None else self.downsample(x)
        y = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu_out(y + skip)


class ResNet18(nn.Module):
    """Stem 7×7/2 conv-BN-ReLU, 3×3/2 max-pool; four stages of two BasicBlocks (64, 128, 256,
    512 channels, stride 2 from the second stage on); global average pool; Linear(512, 1000)."""

    def __init__(self, classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        widths, c_in = (64, 128, 256, 512), 64
        for i, c in enumerate(widths):
            stride = 1 if i == 0 else 2
            setattr(self, f"layer{i + 1}", nn.Sequential(BasicBlock(c_in, c, stride),
                                                         BasicBlock(c, c)))
            c_in = c
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class VGG11BN(nn.Module):
    """``features``: 3×3 conv-BN-ReLU blocks of 64, M, 128, M, 256, 256, M, 512, 512, M, 512,
    512, M (M = 2×2/2 max-pool); 7×7 adaptive average pool; ``classifier``: Linear(25088, 4096),
    ReLU, Dropout, Linear(4096, 4096), ReLU, Dropout, Linear(4096, 1000)."""

    PLAN = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")

    def __init__(self, classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for c in self.PLAN:
            if c == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c_in, int(c), 3, padding=1), nn.BatchNorm2d(int(c)),
                           nn.ReLU()]
                c_in = int(c)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(7)
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096), nn.ReLU(), nn.Dropout(),
            nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(), nn.Linear(4096, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.avgpool(self.features(x)), 1)
        return self.classifier(x)


#: ImageNet-sized architectures, state-dict-compatible with torchvision.models' same names
IMAGENET = {"resnet18": ResNet18, "vgg11_bn": VGG11BN}


_ROOT = Path(__file__).resolve().parents[1]
#: attribute -> the file it is loaded from (relative to the repository root)
_ELSEWHERE = {"tests": "tests/models.py", "mnist": "tests/mnist_models.py",
              "train_digits": "examples/train_digits.py",
              "train_quantized_digits": "examples/train_quantized_digits.py"}


def __getattr__(name: str) -> ModuleType:
    """``models.tests`` and the others of ``_ELSEWHERE``: the module, loaded once by path."""
    if name not in _ELSEWHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    key = f"{__name__}.{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, _ROOT / _ELSEWHERE[name])
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]
