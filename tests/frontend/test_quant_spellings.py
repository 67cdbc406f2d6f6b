"""Quantized activations written as paper codes write them import to the same IR as ours.

Each module below is our own code for a formula from a paper (QCFS: Bu et al. 2022; Fast-SNN:
Hu et al. 2023), spelled the ways people spell it: ``x/λ`` or ``x·(1/λ)``, ``clamp`` or
``min``/``max`` or ``relu`` + ``min``, ``floor(·L + 0.5)`` or ``round``, the ``/L·λ`` tail in
either order, λ a trainable parameter or a Python constant, a straight-through estimator or
not. Every one must import as ``snncompile.qat.QuantReLU`` with the same L and λ does, and
the IR's ANN execution must equal onnxruntime's.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from snncompile.frontend import load_onnx, run_onnxruntime
from snncompile.interp import run_ann
from snncompile.ir import Conv2d, Dense, ReLU
from snncompile.qat import QuantReLU

L, LAM = 4, 0.75


class _Floor(torch.autograd.Function):
    """floor forward, identity backward (how QCFS-style codes train through floor)."""

    @staticmethod
    def forward(ctx, u):
        return torch.floor(u)

    @staticmethod
    def backward(ctx, g):
        return g


class Spelled(nn.Module):
    """An activation y = f(x, λ) given as a function; λ an ``nn.Parameter`` or a float."""

    def __init__(self, f: Callable, trainable: bool) -> None:
        super().__init__()
        self.f = f
        self.lam = nn.Parameter(torch.tensor([LAM])) if trainable else LAM

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.f(x, self.lam)


def _ste_round(u: torch.Tensor) -> torch.Tensor:
    return u + (torch.round(u) - u).detach()


SPELLINGS: dict[str, Callable] = {
    # QCFS paper code: floor(clamp(x/λ, 0, 1)·L + 0.5)/L·λ, floor through an autograd Function
    "qcfs": lambda x, lam: _Floor.apply(torch.clamp(x / lam, 0, 1) * L + 0.5) / L * lam,
    # the same with a reciprocal and the tail multiplied first
    "qcfs-recip": lambda x, lam: torch.floor(torch.clamp(x * (1 / lam), 0, 1) * L + 0.5)
    * lam / L,
    # Fast-SNN: α/L · round(clip(x/α, 0, 1)·L), rounding through a straight-through estimator
    "fastsnn": lambda x, lam: _ste_round(torch.clamp(x / lam, 0.0, 1.0) * L) * lam / L,
    # clip on x itself, then divide: round(clamp(x, 0, λ)/λ·L)/L·λ
    "clamp-first": lambda x, lam: torch.round(torch.clamp(x, 0, LAM) / lam * L) / L * lam,
    # min/max with tensors instead of clamp
    "minmax": lambda x, lam: torch.floor(torch.minimum(torch.maximum(
        x / lam, torch.zeros(())), torch.ones(())) * L + 0.5) / L * lam,
    # relu, then min
    "relu-min": lambda x, lam: torch.floor(torch.minimum(torch.relu(x) / lam, torch.ones(()))
                                           * L + 0.5) / L * lam,
}


def _net(act: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), act, nn.Flatten(),
                         nn.Linear(4 * 64, 10)).eval()


def _export(model: nn.Module, path: Path, opset: int) -> Path:
    torch.onnx.export(model, (torch.zeros(2, 1, 8, 8),), str(path), input_names=["input"],
                      output_names=["logits"], opset_version=opset, dynamo=False,
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return path


def _summary(path: Path) -> list[tuple]:
    g = load_onnx(path)
    out = []
    for _, op in g.topo():
        if isinstance(op, Conv2d | Dense):
            out.append((type(op).__name__, op.weight.tobytes(), None if op.bias is None
                        else op.bias.tobytes(), op.act and (op.act.levels, op.act.hi,
                                                            op.act.shift)))
        elif isinstance(op, ReLU):
            a = op.act
            out.append(("ReLU", a.levels, pytest.approx(a.hi, rel=1e-6), a.shift))
    return out


@pytest.mark.parametrize("opset", [13, 17])
@pytest.mark.parametrize("trainable", [True, False], ids=["param", "const"])
@pytest.mark.parametrize("spelling", sorted(SPELLINGS))
def test_spelling_imports_as_quant_relu(spelling: str, trainable: bool, opset: int,
                                        tmp_path: Path) -> None:
    ours = _export(_net(QuantReLU(L, init_bound=LAM)), tmp_path / "ours.onnx", opset)
    theirs = _export(_net(Spelled(SPELLINGS[spelling], trainable)), tmp_path / "t.onnx", opset)
    want = _summary(ours)
    assert [w[0] for w in want] == ["Conv2d", "ReLU", "Dense"]
    assert want[1][1:] == (L, pytest.approx(LAM, rel=1e-6), 0.5)
    assert _summary(theirs) == want
    x = np.random.default_rng(0).standard_normal((16, 1, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(run_ann(load_onnx(theirs), x), run_onnxruntime(theirs, x),
                               rtol=1e-5, atol=1e-5)


def test_old_train_name_still_loads_with_a_warning() -> None:
    """``snncompile.train`` (the old name of ``snncompile.qat``) and its ``quant`` module, which
    pickled models name, still resolve, with a DeprecationWarning."""
    import importlib
    import sys

    sys.modules.pop("snncompile.train", None)
    sys.modules.pop("snncompile.train.quant", None)
    with pytest.warns(DeprecationWarning, match="snncompile.qat"):
        old = importlib.import_module("snncompile.train")
    assert old.QuantReLU is QuantReLU
    assert importlib.import_module("snncompile.train.quant").QuantReLU is QuantReLU
