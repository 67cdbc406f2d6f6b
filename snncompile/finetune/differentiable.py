"""Differentiable mode of the GPU simulator: surrogate gradients, trainable weights and thresholds.

``DifferentiableSNN(graph, surrogate="triangle")`` is the gpu target's ``SpikingNetwork`` (same
lowerings, same neuron scans from ``backends.gpu.neurons``, same readout), with three changes:

1. Conv2d / Dense weights and biases, and every spiking layer's threshold θ, are
   ``nn.Parameter``s instead of buffers. A layer whose converted thresholds are all equal keeps
   one shared θ (a (1,) parameter broadcast over its channels), so training never turns a
   per-layer threshold into per-channel ones (Loihi wants one threshold per layer).
2. Every neuron scan runs on the *normalised* membrane, the layer's current divided by its θ:

       scan(I / θ, θ=1)  emits  s(t);  the layer sends θ·s(t) downstream.

   For the models in the simulator (if, if-hard, signed-if, gn, ...) the dynamics are
   positively homogeneous in (v, I, θ), so the spikes are those of ``scan(I, θ)``; what changes
   is that the surrogate sees x = v/θ − 1, a dimensionless distance to threshold, so one
   surrogate width fits every layer whatever its scale. The gradient reaches θ both through
   the emitted θ·s and through I/θ.
3. The spike nonlinearity is ``surrogate``: forward the Heaviside step s = [x ≥ 0] (the
   simulator's spikes, unchanged), backward a pseudo-derivative:

       triangle (default)  ds/dx = max(0, 1 − |x|)        (piecewise linear, Esser et al. 2016)
       rectangle           ds/dx = 1 if |x| < 1/2 else 0
       sigmoid             ds/dx = k·σ(kx)·(1 − σ(kx)),  k = 4  (derivative of a sigmoid)

   all with unit area, so the expected gradient of a spike count matches the rate's slope 1/θ.

Backpropagation runs through all T steps (the scans build an out-of-place graph under autograd).
Memory is bounded by the caller, which runs a batch in chunks (``finetune.loop``).
``write_back(graph, net)`` returns a new IR with the trained weights, biases and thresholds.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import nn

from snncompile.backends.gpu.compile import SpikingNetwork
from snncompile.backends.gpu.neurons import NeuronModel
from snncompile.ir.diagnostics import CompileError, Diagnostic
from snncompile.ir.graph import Graph
from snncompile.ir.nodes import WEIGHTED_TYPES, Layer, QuantSpec
from snncompile.ir.verify import verify

Tensor = torch.Tensor


# ------------------------------------------------------------------------------ surrogates
def _sigmoid_derivative(x: Tensor, k: float = 4.0) -> Tensor:
    sg = torch.sigmoid(k * x)
    return k * sg * (1.0 - sg)


#: name -> d spike / dx used in the backward pass (x = v/θ − 1)
DERIVATIVES: dict[str, Callable[[Tensor], Tensor]] = {
    "triangle": lambda x: torch.clamp(1.0 - x.abs(), min=0.0),
    "rectangle": lambda x: (x.abs() < 0.5).to(x.dtype),
    "sigmoid": _sigmoid_derivative,
}


class _Spike(torch.autograd.Function):
    """Heaviside forward (x ≥ 0 -> 1), a surrogate derivative backward."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor,
                derivative: Callable[[Tensor], Tensor]) -> Tensor:
        ctx.save_for_backward(x)
        ctx.derivative = derivative  # type: ignore[attr-defined]
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> tuple[Tensor, None]:
        (x,) = ctx.saved_tensors
        return grad * ctx.derivative(x), None  # type: ignore[attr-defined]


def _spike_fn(derivative: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    return lambda x: _Spike.apply(x, derivative)


#: name -> spike function (Heaviside forward, surrogate backward)
SURROGATES: dict[str, Callable[[Tensor], Tensor]] = {
    name: _spike_fn(d) for name, d in DERIVATIVES.items()}


def get_surrogate(name: str) -> Callable[[Tensor], Tensor]:
    if name not in SURROGATES:
        raise CompileError("unknown surrogate gradient", [Diagnostic(
            repr(name), hint=f"choose from {', '.join(SURROGATES)}")])
    return SURROGATES[name]


def _normalised(model: NeuronModel) -> NeuronModel:
    """The same neuron model, scanned on I/θ with θ = 1 (see the module docstring)."""
    triangle = get_surrogate("triangle")

    def scan(current: Tensor, theta: Tensor, alpha: float, members: int = 1,
             spike: Callable[[Tensor], Tensor] = triangle) -> Tensor:
        return model.scan(current / theta, torch.ones_like(theta), alpha, members, spike)

    def scan_state(current: Tensor, theta: Tensor, alpha: float, members: int = 1,
                   spike: Callable[[Tensor], Tensor] = triangle,
                   state: dict | None = None) -> Tensor:  # carried across time chunks
        return model.scan(current / theta, torch.ones_like(theta), alpha, members, spike,
                          state=state)

    carries = "state" in inspect.signature(model.scan).parameters
    return dataclasses.replace(model, scan=scan_state if carries else scan)


# ------------------------------------------------------------------------------ module
class DifferentiableSNN(SpikingNetwork):
    """``SpikingNetwork`` with trainable parameters and a surrogate spike (module docstring)."""

    def __init__(self, graph: Graph, dtype: torch.dtype = torch.float32,
                 surrogate: str = "triangle") -> None:
        super().__init__(graph, dtype, spike=get_surrogate(surrogate))
        self.surrogate = surrogate
        #: op name -> {"weight": Parameter, "bias": Parameter?} of Conv2d / Dense ops
        self.weights: dict[str, dict[str, nn.Parameter]] = {}
        #: spiking layer name -> its θ parameter ((1,) shared or (C,) per channel)
        self.thresholds: dict[str, nn.Parameter] = {}
        self._theta_shape: dict[str, tuple[int, ...]] = {}
        for name in self.order:
            op = graph.op(name)
            if isinstance(op, WEIGHTED_TYPES):
                mod = self.ops[self.keys[name]]
                params: dict[str, nn.Parameter] = {}
                for field in ("weight", "bias"):
                    buf = mod._buffers.pop(field, None)
                    if buf is None:
                        setattr(mod, field, None)
                        continue
                    p = nn.Parameter(buf.detach().clone())
                    setattr(mod, field, p)
                    params[field] = p
                self.weights[name] = params
            if name in self.neurons:
                model, alpha, members = self.neurons[name]
                self.neurons[name] = (_normalised(model), alpha, members)
                key = f"theta_{self.keys[name]}"
                theta = self._buffers.pop(key)
                self._theta_shape[name] = tuple(theta.shape)
                th = op.neuron.threshold  # type: ignore[union-attr]
                shared = th.size > 0 and bool(np.all(th == th.flat[0]))
                p = nn.Parameter(theta.flatten()[:1].clone() if shared else theta.flatten().clone())
                self.thresholds[name] = p
                self.register_parameter(key + "_p", p)
        self._theta_min = {n: float(p.detach().abs().min()) * 1e-3
                           for n, p in self.thresholds.items()}

    def theta(self, name: str) -> Tensor:
        p = self.thresholds[name]
        shape = self._theta_shape[name]
        return p.reshape((-1,) + (1,) * (len(shape) - 1)).expand(shape) if p.numel() == 1 \
            else p.reshape(shape)

    def clamp_thresholds(self) -> None:
        """Keep θ > 0 after an optimiser step (projected gradient)."""
        with torch.no_grad():
            for name, p in self.thresholds.items():
                p.clamp_(min=self._theta_min[name])

    def segment_params(self, name: str) -> list[nn.Parameter]:
        """The parameters that shape layer ``name``'s output given its spiking inputs: its θ and
        the weights of every op between it and the previous spiking layers (or the input)."""
        out: list[nn.Parameter] = []
        seen: set[str] = set()
        todo = [name]
        while todo:
            n = todo.pop()
            if n in seen:
                continue
            seen.add(n)
            out.extend(self.weights.get(n, {}).values())
            for src in self.inputs.get(n, []):
                if src not in self.neurons:
                    todo.append(src)
        if name in self.thresholds:
            out.append(self.thresholds[name])
        return out

    def spiking_layers(self) -> list[str]:
        """Spiking layers in topological order (from the input side)."""
        return [n for n in self.order if n in self.neurons]

    def named_trainables(self) -> Iterator[tuple[str, nn.Parameter]]:
        for n, ps in self.weights.items():
            for f, p in ps.items():
                yield f"{n}.{f}", p
        for n, p in self.thresholds.items():
            yield f"{n}.threshold", p


# ------------------------------------------------------------------------------ write back
def _requantize(w: np.ndarray, q: QuantSpec) -> np.ndarray:
    """Put trained weights back on the layer's quantization grid: scale · clip(round(w/scale)).

    The scale (and a Loihi exponent) stays as converted, so the integer mantissas keep their
    bit width; a weight that grew past the grid's largest value is clipped to it."""
    qmax = 2 ** (q.bits - 1) - 1
    scale = np.asarray(q.scale, np.float64)
    s = scale.reshape((-1,) + (1,) * (w.ndim - 1)) if scale.size > 1 else scale.reshape(
        (1,) * w.ndim)
    return (np.clip(np.rint(w.astype(np.float64) / s), -qmax, qmax) * s).astype(w.dtype)


def write_back(graph: Graph, net: DifferentiableSNN) -> Graph:
    """A new IR: ``graph`` with ``net``'s weights, biases and thresholds (``graph`` unchanged).

    Quantized layers (``op.quant``) are re-quantized on their own grid (``_requantize``)."""
    g = graph.copy()
    for name, params in net.weights.items():
        op = graph.op(name)
        changes: dict[str, np.ndarray] = {}
        for field, p in params.items():
            old = getattr(op, field)
            arr = p.detach().cpu().double().numpy().astype(old.dtype).reshape(old.shape)
            if field == "weight" and getattr(op, "quant", None) is not None:
                arr = _requantize(arr, op.quant)  # type: ignore[attr-defined]
            changes[field] = arr
        g.replace(name, **changes)
    for name, p in net.thresholds.items():
        op = g.op(name)
        assert isinstance(op, Layer) and op.neuron is not None
        old = op.neuron.threshold
        th = p.detach().cpu().double().numpy()
        th = np.broadcast_to(th, old.shape).astype(old.dtype).copy()
        g.replace(name, neuron=dataclasses.replace(op.neuron, threshold=th))
    verify(g, stage="after finetune")
    return g
