"""Quantized clip-floor-shift activations (QCFS) for training ANNs that convert near-exactly.

The activation with ``L`` levels and a learnable upper bound ``λ`` (Bu et al., QCFS) is

    y = λ · clamp(floor(x · L / λ + s) / L, 0, 1),        s = 0.5 (the shift)

i.e. ``L + 1`` output values {0, λ/L, ..., λ}. An IF neuron with threshold θ = λ, reset by
subtraction and membrane pre-charge v(0) = s·θ driven for T = L steps by a constant current x
fires exactly floor(x·L/λ + s) times (clipped to 0..L), so spike count · θ / T equals y: a
quantized ANN converts to an SNN that is exact for one layer at T = L and close for deep nets.

Training: ``floor`` has zero gradient almost everywhere, so the backward pass uses a straight-
through estimator (d floor(u)/du := 1). The gradient then reaches the upstream weights (inside
0 < y < λ) and λ itself (through the outer ``λ·`` and the inner ``x/λ``; above the clip only the
outer factor remains, which pulls λ up).

ONNX export: ``torch.onnx.export(model, ..., opset_version=13..20, dynamo=False)`` emits, for
each ``QuantReLU``, the plain chain

    Div(x, λ) → Mul(·, L) → Add(·, s) → Floor → Div(·, L) → Clip(·, 0, 1) → Mul(·, λ)

with λ an initializer (shape (1,)) and L, s, 0, 1 scalar ``Constant`` nodes; the straight-through
estimator is a training-only branch and leaves no trace in the graph. The snn-compile frontend
(``snncompile.frontend.quant_patterns``) folds that chain back into one quantized activation.

Recipe (see ``examples/train_quantized_digits.py``):

1. Train the float ANN as usual (ReLU activations, BatchNorm allowed).
2. ``quantize_relus(model, levels=L, sample=x_train[:512])``: every ``nn.ReLU`` becomes a
   ``QuantReLU`` whose λ starts at the 99th percentile of that ReLU's output on ``sample``.
3. Fine-tune a few epochs at a lower learning rate (λ trains with the weights; weight decay
   on λ is best left off, as ``quant_parameters`` lets you do).
4. ``model.eval()`` and ``torch.onnx.export(..., dynamo=False)``; compile the ONNX file with
   snn-compile at T ≈ L..4L timesteps. Thresholds come from λ (θ = λ, v(0) = θ/2), not from
   calibration data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn


class _FloorSTE(torch.autograd.Function):
    """floor(u) forward, identity backward (straight-through estimator)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, u: torch.Tensor) -> torch.Tensor:
        return torch.floor(u)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        return grad


class QuantReLU(nn.Module):
    """y = λ · clamp(floor(x · L / λ + shift) / L, 0, 1) with a learnable bound λ > 0.

    Args:
        levels: L, the number of non-zero output levels (L = T for an exact one-layer SNN).
        init_bound: initial λ.
        shift: s in the formula; 0.5 (QCFS) makes the SNN's expected error zero.
    """

    def __init__(self, levels: int, init_bound: float = 8.0, shift: float = 0.5) -> None:
        super().__init__()
        if int(levels) != levels or levels < 1:
            raise ValueError(f"levels must be a positive integer, got {levels!r}")
        if not init_bound > 0:
            raise ValueError(f"init_bound must be > 0, got {init_bound!r}")
        self.levels = int(levels)
        self.shift = float(shift)
        self.bound = nn.Parameter(torch.tensor([float(init_bound)]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lam, L = self.bound, float(self.levels)
        u = x / lam * L + self.shift
        # a plain Floor in the exported graph; the STE only where a gradient is wanted
        if torch.onnx.is_in_onnx_export() or not torch.is_grad_enabled():
            k = torch.floor(u)
        else:
            k = _FloorSTE.apply(u)
        return torch.clamp(k / L, 0.0, 1.0) * lam

    def extra_repr(self) -> str:
        bound = float(self.bound.detach()[0])
        return f"levels={self.levels}, bound={bound:.4g}, shift={self.shift}"


def quantize_relus(model: nn.Module, levels: int, *, init_bound: float = 8.0,
                   sample: torch.Tensor | np.ndarray | None = None,
                   percentile: float = 99.0) -> nn.Module:
    """Replace every ``nn.ReLU`` in ``model`` (in place) by a ``QuantReLU(levels)``.

    Args:
        model: the trained float ANN.
        levels: L for every activation.
        init_bound: λ of every QuantReLU when no ``sample`` is given.
        sample: input batch; with it, each λ starts at the ``percentile`` of that ReLU's output
            on the batch (a few epochs of fine-tuning then suffice).
        percentile: see ``sample``.

    Returns:
        ``model`` (modified in place).
    """
    relus = [(parent, name) for parent in model.modules()
             for name, child in parent.named_children() if isinstance(child, nn.ReLU)]
    bounds = {}
    if sample is not None:
        x = torch.as_tensor(np.asarray(sample, np.float32)) if isinstance(sample, np.ndarray) \
            else sample
        outs: dict[int, torch.Tensor] = {}
        hooks = [getattr(p, n).register_forward_hook(_recorder(outs, id(getattr(p, n))))
                 for p, n in relus]
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(x)
        model.train(was_training)
        for h in hooks:
            h.remove()
        for p, n in relus:
            o = outs[id(getattr(p, n))].flatten()
            b = float(np.percentile(o.numpy(), percentile)) if o.numel() else init_bound
            bounds[id(getattr(p, n))] = b if b > 1e-6 else init_bound
    for p, n in relus:
        setattr(p, n, QuantReLU(levels, bounds.get(id(getattr(p, n)), init_bound)))
    return model


def _recorder(outs: dict[int, torch.Tensor], key: int) -> Callable[..., None]:
    """A forward hook that keeps the module's output under ``key``."""
    def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        outs[key] = output.detach()
    return hook


def quant_parameters(model: nn.Module) -> Iterator[nn.Parameter]:
    """The λ parameters of every QuantReLU (for an optimizer group without weight decay)."""
    for m in model.modules():
        if isinstance(m, QuantReLU):
            yield m.bound
