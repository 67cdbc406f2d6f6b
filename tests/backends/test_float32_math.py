"""Simulations run their float32 convolutions in IEEE float32, not TF32 (a bug seen on an H200:
torch's default TF32 convolutions made CUDA runs differ from CPU runs, and would have broken the
Loihi reference's exact integer sums). CPU kernels ignore the setting, so the tests read the
setting that a convolution sees while it runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import snncompile
from snncompile.backends.common import float32_math
from snncompile.backends.gpu import compile as gpu_compile
from snncompile.backends.loihi import compile_reference
from snncompile.ir.graph import Graph
from snncompile.options import CompileOptions


def conv_precision() -> str:
    conv = getattr(getattr(torch.backends.cudnn, "conv", None), "fp32_precision", None)
    if conv is None:
        return "tf32" if torch.backends.cudnn.allow_tf32 else "ieee"
    return conv


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The conv precision setting at every F.conv2d call."""
    calls: list[str] = []
    real = F.conv2d

    def spy(*a, **k):  # type: ignore[no-untyped-def]
        calls.append(conv_precision())
        return real(*a, **k)

    monkeypatch.setattr(F, "conv2d", spy)
    return calls


@pytest.fixture(scope="module")
def snn(digits_cnn_onnx: Path) -> Graph:
    return snncompile.compile(digits_cnn_onnx, target="ir", dataset="digits", no_tune=True,
                              calibration_samples=64)


@pytest.fixture(scope="module")
def loihi_snn(digits_cnn_onnx: Path) -> Graph:
    return snncompile.convert(digits_cnn_onnx, target="loihi", dataset="digits", no_tune=True,
                              calibration_samples=64)[0]


X = np.random.default_rng(1).random((3, 1, 8, 8), np.float32)


@pytest.mark.parametrize("tf32", [False, True])
def test_gpu_simulation_sets_float32_math_and_restores_it(snn: Graph, seen: list[str],
                                                          tf32: bool) -> None:
    before = conv_precision()
    net = gpu_compile(snn, CompileOptions(device="cpu", timesteps=4, tf32=tf32))
    net.run(X, 4, progress=False)
    assert seen and set(seen) == {"tf32" if tf32 else "ieee"}
    assert conv_precision() == before


def test_loihi_reference_runs_in_ieee_float32(loihi_snn: Graph, seen: list[str]) -> None:
    before = conv_precision()
    ref = compile_reference(loihi_snn, CompileOptions(timesteps=4))
    seen.clear()
    with float32_math(tf32=True):  # even where the caller asked for TF32
        ref.run(X, progress=False)
    assert seen and set(seen) == {"ieee"}
    assert conv_precision() == before


def test_float32_math_restores_on_error() -> None:
    before = conv_precision()
    with pytest.raises(ZeroDivisionError), float32_math():
        1 / 0  # noqa: B018
    assert conv_precision() == before
