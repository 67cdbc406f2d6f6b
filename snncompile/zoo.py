"""Reference architectures of the kind users train and publish, for tests and benchmarks.

They are written the way the published code writes them, not the way snn-compile would like
them, so that what the frontend meets in a test is what it meets in a user's ONNX file:

- ``cifar_resnet``: He et al. 2016 (§4.2), the CIFAR ResNets 6n+2 (ResNet-20/32/44/56/110):
  a 3×3 conv of 16 channels, three stages of n basic blocks with 16, 32, 64 channels (the
  first block of stages 2 and 3 strides by 2), global average pooling, one linear layer.
  Shortcuts where the shape changes:

  * option A (the paper's choice for CIFAR, and the most copied implementation):
    ``F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, c // 4, c // 4))``, a strided slice of H and W and
    a zero pad of the channel axis; no parameters. ONNX: ``Slice`` (steps 2) and ``Pad``.
  * option B: a 1×1 stride-2 conv and a BatchNorm (torchvision's ``downsample``).

- ``cifar_vgg``: VGG-11/13/16 for 32×32 inputs (conv-BN-ReLU blocks, 2×2 MaxPool between
  stages, one linear classifier on the 1×1×512 map).
- ``act``: ``"relu"``; ``"relu6"`` (``nn.ReLU6``: ONNX ``Clip(0, 6)``); ``"clip"``
  (``torch.clamp(relu(x), max=m)`` as hardware-aware training writes it: ``Relu`` then
  ``Clip(max=m)``). ``snncompile.qat.quantize_relus`` turns the ReLUs of a trained model into
  QCFS activations.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = ("relu", "relu6", "clip")


class ClippedReLU(nn.Module):
    """min(relu(x), m): a Relu followed by a Clip with only a maximum in ONNX."""

    def __init__(self, bound: float = 4.0) -> None:
        super().__init__()
        self.bound = float(bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(F.relu(x), max=self.bound)


def activation(act: str) -> nn.Module:
    if act == "relu":
        return nn.ReLU()
    if act == "relu6":
        return nn.ReLU6()
    if act == "clip":
        return ClippedReLU()
    raise ValueError(f"act must be one of {ACTIVATIONS}, got {act!r}")


class OptionA(nn.Module):
    """The parameter-free shortcut of He et al.: subsample by 2, zero-pad the channels."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.pad = (c_out - c_in) // 2
        self.extra = c_out - c_in - self.pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.extra), "constant", 0.0)


class BasicBlock(nn.Module):
    """relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))."""

    def __init__(self, c_in: int, c_out: int, stride: int, shortcut: str, act: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.act1 = activation(act)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.act2 = activation(act)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            if shortcut == "A":
                self.shortcut = OptionA(c_in, c_out)
            elif shortcut == "B":
                self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                              nn.BatchNorm2d(c_out))
            else:
                raise ValueError(f"shortcut must be 'A' or 'B', got {shortcut!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.bn1(self.conv1(x)))
        return self.act2(self.bn2(self.conv2(y)) + self.shortcut(x))


class CifarResNet(nn.Module):
    """He et al.'s CIFAR ResNet with depth 6n + 2."""

    def __init__(self, depth: int = 20, shortcut: str = "A", classes: int = 10,
                 width: int = 16, act: str = "relu") -> None:
        super().__init__()
        if (depth - 2) % 6 or depth < 8:
            raise ValueError(f"depth must be 6n + 2 with n >= 1 (20, 32, 44, 56, 110), got {depth}")
        n = (depth - 2) // 6
        self.conv = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.act = activation(act)
        blocks, c = [], width
        for stage, c_out in enumerate((width, 2 * width, 4 * width)):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(c, c_out, stride, shortcut, act))
                c = c_out
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.act(self.bn(self.conv(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


def cifar_resnet(depth: int = 20, shortcut: str = "A", classes: int = 10, width: int = 16,
                 act: str = "relu", seed: int | None = None) -> CifarResNet:
    """ResNet-``depth`` for 32×32 inputs (``width`` = 16 is the paper's)."""
    if seed is not None:
        torch.manual_seed(seed)
    return CifarResNet(depth, shortcut, classes, width, act)


VGG_CONFIGS = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg13": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M"),
}


def cifar_vgg(name: str = "vgg11", classes: int = 10, width: float = 1.0, act: str = "relu",
              seed: int | None = None) -> nn.Sequential:
    """VGG for 32×32 inputs: conv3×3-BN-act blocks, 2×2 MaxPool, a linear classifier.

    ``width`` scales every channel count (0.25 gives a net small enough to train on a CPU).
    """
    if name not in VGG_CONFIGS:
        raise ValueError(f"name must be one of {sorted(VGG_CONFIGS)}, got {name!r}")
    if seed is not None:
        torch.manual_seed(seed)
    layers: list[nn.Module] = []
    c = 3
    for v in VGG_CONFIGS[name]:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
            continue
        c_out = max(8, int(round(int(v) * width)))
        layers += [nn.Conv2d(c, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out),
                   activation(act)]
        c = c_out
    layers += [nn.Flatten(), nn.Linear(c, classes)]
    return nn.Sequential(*layers)
