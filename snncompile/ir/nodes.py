"""Typed IR ops: frozen, keyword-only dataclasses whose docstrings state their math.

Shapes exclude the batch axis: an image tensor is ``(C, H, W)``, a vector ``(N,)``.
Every op knows how to compute its output shape from its inputs' shapes (``out_shape``) and
reports local problems through ``check``; the verifier collects them all.

ANN form and spiking form share the op types. A *layer* (``Conv2d``, ``Dense``, ``Add``,
``ReLU``) may carry an ``act`` (the ANN activation fused into it) and, after conversion, a
``neuron`` (the spiking neuron that replaces the activation). A layer with a neuron emits
``θ·s(t)`` (spikes scaled by its threshold) at every timestep; an op without a neuron is
linear and passes currents through unchanged at every timestep.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import numpy as np

Shape = tuple[int, ...]

#: every concrete op class by its name, filled in by ``Node.__init_subclass__`` (used by the
#: serializer; nobody keeps this list by hand).
OP_TYPES: dict[str, type[Node]] = {}


def _freeze_arrays(obj: Any) -> None:
    for f in fields(obj):
        v = getattr(obj, f.name)
        if isinstance(v, np.ndarray):
            v.flags.writeable = False


def _bad_values(name: str, arr: np.ndarray | None) -> Iterator[str]:
    if arr is not None and arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        n_nan = int(np.isnan(arr).sum())
        n_inf = int(np.isinf(arr).sum())
        yield f"{name} has {n_nan} NaN and {n_inf} Inf values"


def _bad_scalars(obj: Any) -> Iterator[str]:
    """Every float field of ``obj`` is finite (a NaN α or shift would run, silently wrong)."""
    for f in fields(obj):
        v = getattr(obj, f.name)
        if isinstance(v, float) and not math.isfinite(v):
            yield f"{f.name}={v} must be finite"


def _geometry(op: Any) -> Iterator[str]:
    """Window geometry of a conv or pool: kernel, stride and dilation >= 1, padding >= 0 (a
    stride of 0 would divide by zero, a negative padding crop silently)."""
    for name, lo in (("kernel", 1), ("stride", 1), ("dilation", 1), ("padding", 0)):
        v = getattr(op, name, None)
        if v is not None and any(int(d) < lo for d in v):
            yield f"{name} {tuple(v)} must be >= {lo}"


@dataclass(frozen=True, eq=False, kw_only=True)
class Activation:
    """ANN activation fused into a layer.

    ``hi is None``: y = max(x, 0) (ReLU). ``hi`` set: y = clip(x, 0, hi) (Clip / ReLU6: ``hi``
    is the layer's threshold hint). ``levels`` set (quantized, QCFS-style, needs ``hi``):
    y = hi · clip(floor(x·L/hi + shift) / L, 0, 1).
    """

    hi: float | None = None
    levels: int | None = None
    shift: float = 0.5

    def check(self) -> Iterator[str]:
        yield from (m for m in _bad_scalars(self) if not m.startswith("hi="))
        if self.hi is not None and not (math.isfinite(self.hi) and self.hi > 0):
            yield f"activation upper bound {self.hi} must be a finite positive number"
        if self.levels is not None and (self.hi is None or self.levels < 1):
            yield "a quantized activation needs levels >= 1 and an upper bound"


@dataclass(frozen=True, eq=False, kw_only=True)
class Neuron:
    """Spiking neuron of a layer (DESIGN.md, neuron semantics). Per output channel c:

    v(t) = v(t-1) + I(t);  s(t) = 1 if v(t) >= θ_c else 0;  v(t) -= s(t)·θ_c  (the default
    model); v(0) = α·θ_c. The output sent downstream is θ_c·s(t). ``model`` is a key into the
    neuron registry (``snncompile.neurons``, where every model and its equations are declared);
    each backend registers one implementation per model name, not branches through the code.
    ``members`` is the group size of group neurons (``threshold`` is then the member threshold
    θ/M and s counts member spikes) and the window ρ of bistable neurons. ``threshold`` is the
    value of one spike unit: the layer emits threshold·s (for graded models, the delta
    threshold; s is graded). docs/neurons.md has every model.
    """

    model: str = "if"
    threshold: np.ndarray  # (C_out,) float32, > 0
    alpha: float = 0.5
    members: int = 1

    def __post_init__(self) -> None:
        _freeze_arrays(self)

    def check(self) -> Iterator[str]:
        yield from _bad_scalars(self)
        yield from _bad_values("threshold", self.threshold)
        if self.threshold.ndim != 1:
            yield f"threshold must be 1-D (per channel), got shape {self.threshold.shape}"
        elif np.any(self.threshold <= 0):
            yield f"threshold must be > 0, min is {float(self.threshold.min()):g}"
        if self.members < 1:
            yield f"members must be >= 1, got {self.members}"


@dataclass(frozen=True, eq=False, kw_only=True)
class QuantSpec:
    """Weights were quantized: ``weight == scale[c] · q`` exactly, q integer, |q| <= 2^(bits-1)-1.

    ``weight`` in the op keeps the (exactly representable) dequantized floats, so every backend
    runs the quantized network unchanged; the integer mantissas are ``round(weight / scale)``.
    ``scale`` has one entry per output channel (per-channel) or one entry (per-layer).
    ``exponent`` is set by the Loihi scheme (mantissa · 2^exponent).
    """

    bits: int
    scale: np.ndarray
    scheme: str = "symmetric"
    exponent: int | None = None

    def __post_init__(self) -> None:
        _freeze_arrays(self)

    def check(self) -> Iterator[str]:
        yield from _bad_values("quant scale", self.scale)
        if not 2 <= self.bits <= 16:
            yield f"weight bits {self.bits} outside 2..16"


@dataclass(frozen=True, eq=False, kw_only=True)
class Node:
    """Base of all IR ops. Identity is the op's name in the Graph, not its value."""

    origin: str = ""  # "Conv_7 (Conv)": the ONNX node(s) this op came from

    #: (min, max) number of inputs; max None = any
    arity: ClassVar[tuple[int, int | None]] = (1, 1)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        OP_TYPES[cls.__name__] = cls

    def __post_init__(self) -> None:
        _freeze_arrays(self)  # the frontend hands over fresh arrays

    def arrays(self) -> dict[str, np.ndarray]:
        return {f.name: v for f in fields(self)
                if isinstance(v := getattr(self, f.name), np.ndarray)}

    def check(self) -> Iterator[str]:
        yield from _bad_scalars(self)
        for name, arr in self.arrays().items():
            yield from _bad_values(name, arr)
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, (Activation, Neuron, QuantSpec)):
                yield from v.check()

    def out_shape(self, in_shapes: list[Shape]) -> Shape:
        raise NotImplementedError(type(self).__name__)


@dataclass(frozen=True, eq=False, kw_only=True)
class Layer(Node):
    """An op that may carry a fused activation (ANN form) and a spiking neuron (SNN form)."""

    act: Activation | None = None
    neuron: Neuron | None = None

    @property
    def spiking(self) -> bool:
        return self.neuron is not None


# ------------------------------------------------------------------------------ graph ends
@dataclass(frozen=True, eq=False, kw_only=True)
class Input(Node):
    """The network input, ``shape`` without the batch axis. Direct coding feeds x every step.

    ``channels_last``: the ONNX model reads (N, H, W, C) and transposes it first (TensorFlow /
    Keras through tf2onnx); that Transpose is absorbed, so the IR (and the Python API) take
    (N, C, H, W), and snn-compile's data files may be in either layout (``data.channels_first``).
    """

    shape: Shape
    channels_last: bool = False
    arity: ClassVar[tuple[int, int | None]] = (0, 0)

    def check(self) -> Iterator[str]:
        yield from super().check()
        if not self.shape or any(int(d) < 1 for d in self.shape):
            yield f"input shape {tuple(self.shape)} must have dimensions >= 1"

    def out_shape(self, in_shapes: list[Shape]) -> Shape:
        return tuple(self.shape)


@dataclass(frozen=True, eq=False, kw_only=True)
class Output(Node):
    """Marks the network output. The op feeding it integrates (never spikes): the prediction at
    t is the argmax of its accumulated potential."""

    def out_shape(self, in_shapes: list[Shape]) -> Shape:
        return in_shapes[0]


# ------------------------------------------------------------------------------ layers
def _conv_out(n: int, k: int, s: int, p0: int, p1: int, d: int) -> int:
    return (n + p0 + p1 - d * (k - 1) - 1) // s + 1


@dataclass(frozen=True, eq=False, kw_only=True)
class Conv2d(Layer):
    """y[o] = b[o] + Σ_i W[o, i] ⋆ x[g(o)·C_in/g + i]  (cross-correlation, as torch and ONNX).

    ``weight`` (C_out, C_in/groups, kH, kW); ``padding`` (top, left, bottom, right).
    """

    weight: np.ndarray
    bias: np.ndarray | None = None
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    quant: QuantSpec | None = None

    def out_shape(self, in_shapes: list[Shape]) -> Shape:
        c, h, w = in_shapes[0]
        co, ci, kh, kw = self.weight.shape
        oh = _conv_out(h, kh, self.stride[0], self.padding[0], self.padding[2], self.dilation[0])
        ow = _conv_out(w, kw, self.stride[1], self.padding[1], self.padding[3], self.dilation[1])
        return (co, oh, ow)

    def check(self) -> Iterator[str]:
        yield from super().check()
        yield from _geometry(self)
        if self.weight.ndim != 4:
            yield f"conv weight must be 4-D, got shape {self.weight.shape}"
        elif self.bias is not None and self.bias.shape != (self.weight.shape[0],):
            yield f"bias shape {self.bias.shape} does not match {self.weight.shape[0]} channels"
        if self.groups < 1 or self.weight.shape[0] % self.groups:
            yield f"groups={self.groups} does not divide {self.weight.shape[0]} output channels"


@dataclass(frozen=True, eq=False, kw_only=True)
class Dense(Layer):
    """y = W x + b, ``weight`` (out, in)."""

    weight: np.ndarray
    bias: np.ndarray | None = None
    quant: QuantSpec | None = None

    def out_shape(self, in_shapes: list[Shape]) -> Shape:
        return (self.weight.shape[0],)

    def check(self) -> Iterator[str]:
        yield from super().check()
        if self.weight.ndim != 2:
            yield f"dense weight must be 2-D, got shape {self.weight.shape}"
        elif self.bias is not None and self.bias.shape != (self.weight.shape[0],):
            yield f"bias shape {self.bias.shape} does not match {self.weight.shape[0]} outputs"


@dataclass(frozen=True, eq=False, kw_only=True)
class Add(Layer):
    """y = Σ_k x_k (residual join); a fused ReLU makes it a spiking layer of its own."""

    arity: ClassVar[tuple[int, int | None]] = (2, None)

    def out_shape(self, in_shapes: list[Shape]) -> Shape:
        return in_shapes[0]


@dataclass(frozen=True, eq=False, kw_only=True)
class ReLU(Layer):
    """A standalone activation that could not be fused into a preceding layer: y = act(x).

    In spiking form it is a neuron population fed through identity synapses."""

    def out_shape(self, in_shapes: list[Shape]) -> Shape:
        return in_shapes[0]


# ------------------------------------------------------------------------------ linear ops
@dataclass(frozen=True, eq=False, kw_only=True)
class BatchNorm(Node):
    """y[c] = (x[c] − mean[c]) / sqrt(var[c] + eps) · scale[c] + bias[c] (inference form)."""

    scale: np.ndarray
    bias: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    eps: float = 1e-5

    def out_shape(self, in_shapes: list[Shape]) -> Shape:
        return in_shapes[0]

    def affine(self) -> tuple[np.ndarray, np.ndarray]:
        """(a, c) of y = a·x + c per channel, in float64: a = scale / sqrt(var + eps),
        c = bias − mean·a."""
        a = self.scale.astype(np.float64) / np.sqrt(self.var.astype(np.float64) + self.eps)
        return a, self.bias.astype(np.float64) - self.mean.astype(np.float64) * a


@dataclass(frozen=True, eq=False, kw_only=True)
class AvgPool2d(Node):
    """y = mean of each kernel window (zero padding counted when ``count_include_pad``)."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)
    count_include_pad: bool = True

    def check(self) -> Iterator[str]:
        yield from super().check()
        yield from _geometry(self)

    def out_shape(self, in_shapes: list[Shape]) -> Shape:
        c, h, w = in_shapes[0]
        p = self.padding
        return (c, _conv_out(h, self.kernel[0], self.stride[0], p[0], p[2], 1),
                _conv_out(w, self.kernel[1], self.stride[1], p[1], p[3], 1))


@dataclass(frozen=True, eq=False, kw_only=True)
class _Window:
    """The window geometry of the max-pools (a mixin listed first, so its ``out_shape``
    wins)."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilation: tuple[int, int] = (1, 1)

    def check(self) -> Iterator[str]:
        yield from super().check()  # type: ignore[misc]
        yield from _geometry(self)

    def out_shape(self, in_shapes: list[Shape]) -> Shape:
        c, h, w = in_shapes[0]
        p, d = self.padding, self.dilation
        return (c, _conv_out(h, self.kernel[0], self.stride[0], p[0], p[2], d[0]),
                _conv_out(w, self.kernel[1], self.stride[1], p[1], p[3], d[1]))


@dataclass(frozen=True, eq=False, kw_only=True)
class MaxPool2d(_Window, Node):
    """y = max of each kernel window (padding is −∞).

    Spiking form: a gate that passes, per window, the input unit with the highest spike count
    so far (ties: the first in the window)."""


@dataclass(frozen=True, eq=False, kw_only=True)
class CurrentMaxPool2d(_Window, Layer):
    """y = act(max of each kernel window of x) (padding is −∞): a max-pool with the activation
    of the layer before it moved behind it (exact for a monotone activation: max∘ReLU =
    ReLU∘max), written by the ``maxpool-current`` pass.

    Spiking form: one neuron per window, driven by the change of the window's largest
    *cumulative* input current, I(t) = M(t) − M(t−1) with M(t) = max_i Σ_{τ≤t} x_i(τ), so
    that Σ_{τ≤t} I(τ) = M(t) exactly: the neuron integrates the max of its candidates'
    integrated inputs (the inputs x are currents, not spikes)."""


@dataclass(frozen=True, eq=False, kw_only=True)
class Flatten(Node):
    """y = x reshaped to one axis, C-order (channel-major, as torch.flatten)."""

    def out_shape(self, in_shapes: list[Shape]) -> Shape:
        return (int(np.prod(in_shapes[0])),)


@dataclass(frozen=True, eq=False, kw_only=True)
class Concat(Node):
    """y = concatenation of the inputs along ``axis`` (0 = channels; batch axis excluded)."""

    axis: int = 0
    arity: ClassVar[tuple[int, int | None]] = (2, None)

    def out_shape(self, in_shapes: list[Shape]) -> Shape:
        out = list(in_shapes[0])
        out[self.axis] = sum(s[self.axis] for s in in_shapes)
        return tuple(out)


@dataclass(frozen=True, eq=False, kw_only=True)
class Identity(Node):
    """y = x: ONNX Identity, inference Dropout, and the no-op forms of Reshape, Transpose,
    Concat, Pad, Squeeze and Cast (``onnx_op`` says which). ``remove-identity`` drops it."""

    onnx_op: str = "Identity"

    def out_shape(self, in_shapes: list[Shape]) -> Shape:
        return in_shapes[0]


#: the monotone functions an OutputActivation computes (ONNX op type -> what it is)
OUTPUT_FUNCTIONS = {"Softmax": "softmax over the classes", "LogSoftmax": "log-softmax over the "
                    "classes", "Sigmoid": "sigmoid of each class"}


@dataclass(frozen=True, eq=False, kw_only=True)
class OutputActivation(Node):
    """y = softmax(x), log_softmax(x) or sigmoid(x) (``onnx_op``) right before the graph output.
    The readout is the argmax, which none of them changes, so ``remove-identity`` drops it;
    until then ANN mode computes it (to match ONNX)."""

    onnx_op: str = "Softmax"

    def out_shape(self, in_shapes: list[Shape]) -> Shape:
        return in_shapes[0]

    def check(self) -> Iterator[str]:
        yield from super().check()
        if self.onnx_op not in OUTPUT_FUNCTIONS:
            yield f"onnx_op={self.onnx_op!r}; expected one of {', '.join(OUTPUT_FUNCTIONS)}"


LAYER_TYPES = (Conv2d, Dense, Add, ReLU)
WEIGHTED_TYPES = (Conv2d, Dense)
