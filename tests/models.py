"""Small torch models for the tests (1×8×8 input, 10 outputs), ONNX export and quick training.

Every builder is seeded, so two calls give the same weights. ``trained`` fits a builder on the
bundled digits data in a few seconds; ``export`` writes ONNX with a dynamic batch axis.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from snncompile.data import digits

IN_SHAPE = (1, 8, 8)


def _seeded(seed: int) -> None:
    torch.manual_seed(seed)


class _Randomize:
    """Give BatchNorm non-trivial running stats, so that folding it is actually tested."""

    @staticmethod
    def bn(model: nn.Module, seed: int) -> nn.Module:
        g = torch.Generator().manual_seed(seed + 1)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
                c = m.num_features
                with torch.no_grad():
                    m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
                    m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
                    m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                    m.bias.copy_(torch.randn(c, generator=g) * 0.1)
        return model.eval()


def mlp(seed: int = 0) -> nn.Module:
    """Flatten -> Linear(64, 32) + ReLU -> Linear(32, 10)."""
    _seeded(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)).eval()


class MatMulMLP(nn.Module):
    """x.view(N, -1) @ W + b: exported as Shape/Gather/Concat/Reshape + MatMul + Add."""

    def __init__(self) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(64, 32) * 0.2)
        self.b1 = nn.Parameter(torch.randn(32) * 0.1)
        self.w2 = nn.Parameter(torch.randn(32, 10) * 0.2)
        self.b2 = nn.Parameter(torch.randn(10) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.view(x.size(0), -1)
        x = torch.relu(x @ self.w1 + self.b1)
        return x @ self.w2 + self.b2


def matmul_mlp(seed: int = 0) -> nn.Module:
    _seeded(seed)
    return MatMulMLP().eval()


def cnn_bn_avgpool(seed: int = 0) -> nn.Module:
    """Conv+BN+ReLU, AvgPool 2, Conv+BN+ReLU, AvgPool 2, Flatten, Linear (the digits layout)."""
    _seeded(seed)
    m = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AvgPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(16 * 2 * 2, 10))
    return _Randomize.bn(m, seed)


def vgg_maxpool(seed: int = 0) -> nn.Module:
    """VGG-style: Conv+ReLU ×2, MaxPool, Conv+ReLU, MaxPool, Linear+ReLU, Linear."""
    _seeded(seed)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 2 * 2, 32), nn.ReLU(), nn.Linear(32, 10)).eval()


def vgg3_maxpool(seed: int = 0) -> nn.Module:
    """Three MaxPools: (Conv+BN+ReLU, MaxPool 2) ×3 (8×8 → 1×1), Linear."""
    _seeded(seed)
    m = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32, 10))
    return _Randomize.bn(m, seed)


class PoolMix(nn.Module):
    """Conv+ReLU, MaxPool(3, stride 2, padding 1) (8×8 → 4×4), a residual block whose Add+ReLU
    feeds a MaxPool(2) (→ 2×2), a Conv whose MaxPool comes *before* its ReLU, Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),
                                  nn.MaxPool2d(3, stride=2, padding=1))
        self.c1 = nn.Conv2d(8, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.c3 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = self.c2(torch.relu(self.c1(x)))
        x = nn.functional.max_pool2d(torch.relu(x + y), 2)
        x = torch.relu(nn.functional.max_pool2d(self.c3(x), 2))  # pool, then ReLU
        return self.fc(x.flatten(1))


def pool_mix(seed: int = 0) -> nn.Module:
    _seeded(seed)
    return PoolMix().eval()


class BasicBlock(nn.Module):
    """Conv-BN-ReLU-Conv-BN + shortcut, then ReLU. A 1×1 strided conv + BN shortcut when the
    shape changes, the identity otherwise."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                          nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + self.shortcut(x))


def resnet_block(seed: int = 0) -> nn.Module:
    """Stem Conv+BN+ReLU (8 ch), an identity block, a downsampling block (16 ch, 4×4),
    GlobalAveragePool, Linear."""
    _seeded(seed)
    m = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        BasicBlock(8, 8), BasicBlock(8, 16, stride=2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    return _Randomize.bn(m, seed)


class ConcatBranch(nn.Module):
    """Stem conv, then a 3×3 and a 1×1 branch concatenated on channels."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU())
        self.a = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(8, 4, 1), nn.ReLU())
        self.head = nn.Sequential(nn.AvgPool2d(2), nn.Flatten(), nn.Linear(12 * 4 * 4, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return self.head(torch.cat([self.a(x), self.b(x)], dim=1))


def concat_branch(seed: int = 0) -> nn.Module:
    _seeded(seed)
    return ConcatBranch().eval()


def clip_cnn(seed: int = 0) -> nn.Module:
    """ReLU6 and hardtanh(0, 2) activations (ONNX Clip(0, m))."""
    _seeded(seed)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU6(), nn.AvgPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.Hardtanh(0.0, 2.0), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(64, 10)).eval()


def depthwise_cnn(seed: int = 0) -> nn.Module:
    """Conv, depthwise 3×3 (groups = channels, stride 2), pointwise 1×1, Linear."""
    _seeded(seed)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8), nn.ReLU(),
        nn.Conv2d(8, 16, 1), nn.ReLU(),
        nn.Flatten(), nn.Linear(16 * 4 * 4, 10)).eval()


def sigmoid_cnn(seed: int = 0) -> nn.Module:
    """Unsupported ops: Sigmoid and Tanh."""
    _seeded(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.Sigmoid(), nn.Conv2d(4, 4, 3, padding=1), nn.Tanh(),
        nn.Flatten(), nn.Linear(4 * 8 * 8, 10)).eval()


BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "mlp": mlp, "matmul_mlp": matmul_mlp, "cnn_bn_avgpool": cnn_bn_avgpool,
    "vgg_maxpool": vgg_maxpool, "resnet_block": resnet_block, "concat_branch": concat_branch,
    "clip_cnn": clip_cnn, "depthwise_cnn": depthwise_cnn, "vgg3_maxpool": vgg3_maxpool,
    "pool_mix": pool_mix,
}


def export(model: nn.Module, path: str | Path, opset: int = 17, dynamo: bool = False,
           fold: bool = True) -> Path:
    """Write ``model`` as ONNX with a dynamic batch axis (input "input", output "logits").

    ``fold=False`` (TorchScript exporter only) turns off the exporter's constant folding, which
    otherwise folds BatchNorm into the conv before it: the ONNX file then keeps its
    BatchNormalization nodes (and the Shape arithmetic of ``view``).
    """
    path = Path(path)
    model = model.eval()
    dummy = torch.zeros(2, *IN_SHAPE)
    if dynamo:
        torch.onnx.export(model, (dummy,), str(path), input_names=["input"],
                          output_names=["logits"], opset_version=opset, dynamo=True,
                          dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
    else:
        torch.onnx.export(model, (dummy,), str(path), input_names=["input"],
                          output_names=["logits"], opset_version=opset, dynamo=False,
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                          do_constant_folding=fold)
    return path


def trained(model_fn: Callable[..., nn.Module], epochs: int = 8, seed: int = 0,
            data_seed: int = 0) -> nn.Module:
    """``model_fn(seed)`` trained on digits("train", data_seed) with Adam (seconds on a CPU);
    eval mode.

    The test accuracy on digits("test", data_seed) is stored in ``model.test_accuracy``.
    """
    torch.manual_seed(seed)
    model = model_fn(seed).train()
    tr, te = digits("train", data_seed), digits("test", data_seed)
    xt, yt = torch.from_numpy(tr.x), torch.from_numpy(tr.y)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    for _ in range(epochs):
        perm = torch.randperm(len(xt), generator=g)
        for i in range(0, len(xt), 64):
            idx = perm[i:i + 64]
            loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        pred = model(torch.from_numpy(te.x)).argmax(1).numpy()
    model.test_accuracy = float(np.mean(pred == te.y))  # type: ignore[assignment]
    return model
