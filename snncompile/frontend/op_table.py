"""ONNX op -> IR op converters, one function per ONNX op type (the table *is* the supported list).

The converters of layout ops and selections (Reshape, Transpose, Squeeze, Flatten, GatherND,
ReduceMean over a view, Pad, Slice, Split, Gather, Cast) and the folds that resolve their views
live in ``layout_ops``, which registers them in the same table; ``Builder`` and the converters
of everything else live here.

Nothing here imports ``onnx``: ``onnx_import`` hands each converter an ``OnnxNode`` (attributes
already plain Python / numpy values) and a ``Builder`` that knows which tensors are constants
and which IR op produces each activation tensor. Shapes exclude the batch axis, as in the IR.

The mappings are exact (no approximation):

- Conv: y = W ⋆ x + b with ONNX pads (x1_begin, x2_begin, x1_end, x2_end) = IR (top, left,
  bottom, right); ``auto_pad`` SAME_*: total pad = max((⌈n/s⌉ − 1)·s + (k − 1)·d + 1 − n, 0),
  the odd pixel at the end (SAME_UPPER) or the beginning (SAME_LOWER).
- Gemm: Y = α·A·op(B) + β·C  ->  Dense(W = α·op(B)ᵀ, b = β·C);  MatMul: Y = A·B -> W = Bᵀ; an Add
  of a per-channel constant right after a bias-free MatMul / Gemm / Conv becomes its bias.
- Clip(0, m) = min(max(x, 0), m) -> ReLU with Activation(hi=m); Relu -> Activation(); a Clip
  with min absent or < 0 of a value ≥ 0 is the same clip; Relu -> Clip(max=m) is one ReLU.
- Slice (steps > 0), Split and Gather (constant 1-D indices) along C, H or W, and a zero Pad
  of C (with or without H, W): a selection y[c, h, w] = x[c_idx[c], h_idx[h], w_idx[w]] (0
  where an index is −1), lowered to a fixed 0/1 convolution (``selections``).
- Cast to float -> Identity; a final Softmax / LogSoftmax / Sigmoid -> OutputActivation.
- GlobalAveragePool and ReduceMean over (H, W) = AvgPool2d with kernel (H, W).
- Flatten(axis=1), Reshape to (N, C·H·W) and Squeeze of (N, C, 1, 1) -> Flatten (C-order, as
  both ONNX and torch).
- Mul / Div / Sub / Add of an activation and a per-channel constant -> BatchNorm (y = a·x + c).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from snncompile.frontend.selections import Selection, lower
from snncompile.frontend.views import Padded, View
from snncompile.ir.graph import Graph
from snncompile.ir.nodes import (
    Activation,
    Add,
    AvgPool2d,
    BatchNorm,
    Concat,
    Conv2d,
    Dense,
    Flatten,
    Identity,
    Layer,
    MaxPool2d,
    Node,
    OutputActivation,
    ReLU,
    Shape,
)

V = TypeVar("V")


class Unsupported(Exception):
    """A supported op type used in a way the IR cannot express; the message says why."""


@dataclass(frozen=True)
class OnnxNode:
    """An ONNX node with its attributes decoded (ints, floats, str, lists, numpy arrays)."""

    name: str
    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def origin(self) -> str:
        return f"{self.name} ({self.op_type})"

    def attr(self, key: str, default: Any = None) -> Any:
        return self.attrs.get(key, default)


class Builder:
    """The IR under construction plus what the converters need to know about ONNX tensors.

    ``consts`` maps a constant tensor to its value in two worlds that differ only in the batch
    size (``batch_sizes``): a value that differs between them depends on the batch size (e.g. the
    ``Shape -> Gather -> Concat`` chain torch emits for ``x.view(x.size(0), -1)``).
    """

    batch_sizes = (1_000_003, 1_000_033)  # two primes no real layer size equals

    def __init__(self, opset: int, graph_outputs: set[str], uses: dict[str, int],
                 fixed_batch: int | None = None) -> None:
        self.graph = Graph()
        self.opset = opset
        #: the batch size of a model exported without a dynamic batch axis (``dim_value`` of
        #: the input's first axis): its exporter wrote that size into constant target shapes
        self.fixed_batch = fixed_batch
        self.tensors: dict[str, str] = {}  # ONNX activation tensor -> IR op name
        self.consts: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.graph_outputs = graph_outputs
        self.uses = uses  # ONNX tensor -> number of readers (+1 per graph output)
        #: ONNX tensors that are layout views of IR data, not IR tensors (``views``)
        self.views: dict[str, View] = {}
        self.permutations: dict[str, np.ndarray] = {}  # IR 1×1 conv -> its channel permutation
        self.spatial_maps: dict[str, np.ndarray] = {}  # IR Dense op made from such a view -> S
        self.unchecked: set[str] = set()  # ONNX tensors whose IR shape is flat on purpose
        #: IR Flatten of a channels-last view -> p: the flat channels-last vector is x_flat[p]
        self.feature_perms: dict[str, np.ndarray] = {}
        #: IR 1×1 convs (Dense) made from a channel (feature) selection -> its index vector
        self.channel_selections: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------ queries
    def is_const(self, name: str) -> bool:
        return name in self.consts

    def view(self, name: str, kind: type[V]) -> V | None:
        """The view of ONNX tensor ``name`` if it is one of ``kind``."""
        v = self.views.get(name)
        return v if isinstance(v, kind) else None

    def unpadded(self, name: str) -> tuple[str, tuple[int, int, int, int]]:
        """(the ONNX tensor, its zero padding (top, left, bottom, right)) of ``name``."""
        p = self.view(name, Padded)
        return (p.data, p.pads) if p else (name, (0, 0, 0, 0))

    def const(self, name: str, what: str = "input") -> np.ndarray:
        """The value of a batch-independent constant tensor."""
        if name not in self.consts:
            raise Unsupported(f"{what} {name!r} must be a constant (an initializer)")
        a, b = self.consts[name]
        if a is not b and not (a.shape == b.shape and np.array_equal(a, b)):
            raise Unsupported(f"{what} {name!r} depends on the batch size")
        return a

    def tensor(self, name: str) -> str:
        """The IR op producing activation tensor ``name``."""
        if name in self.consts:
            raise Unsupported(f"input {name!r} is a constant; expected an activation tensor")
        v = self.views.get(name)
        if isinstance(v, Selection):
            return self._lower_selection(name)
        if v is not None and v.readers:  # no IR tensor of its own
            raise Unsupported(f"input {name!r} is {v.readers}")
        return self.tensors[name]

    def selection(self, name: str) -> Selection:
        """Activation ``name`` as a selection (an identity one unless it is a view; a padded
        view as its zero padding)."""
        v = self.views.get(name)
        if isinstance(v, Selection):
            return v
        if isinstance(v, Padded):
            top, left, bottom, right = v.pads
            sel = self.selection(v.data)
            return sel.pad(1, top, bottom, f"{name} (Pad)").pad(2, left, right, f"{name} (Pad)")
        src = self.tensor(name)
        return Selection.identity(src, tuple(self.shape(name)))

    def _lower_selection(self, name: str) -> str:
        """The IR op of selection ``name``, made (``selections.lower``) when first read."""
        sel = self.views[name]
        assert isinstance(sel, Selection)
        if sel.is_identity:
            del self.views[name]
            self.tensors[name] = sel.src
            return sel.src
        try:
            op = lower(sel)
        except ValueError as e:
            raise Unsupported(f"the selection {name!r} ({' + '.join(sel.nodes)}) is no strided "
                              f"window of H or W: {e}") from None
        del self.views[name]
        ir = self.graph.add(self.graph.unique(sanitize(sel.nodes[-1].split(" (")[0]) or "select"),
                            op, [sel.src])
        if all(sel.untouched(a) for a in range(1, len(sel.idx))):
            self.channel_selections[ir] = sel.idx[0]
        self.tensors[name] = ir
        return ir

    def shape(self, name: str) -> Shape:
        """IR shape (no batch axis) of activation tensor ``name``."""
        s = self.graph.shape(self.tensor(name))
        if s is None:
            raise Unsupported(f"the shape of {name!r} is unknown")
        return s

    def add(self, node: OnnxNode, op: Node, inputs: list[str]) -> str:
        return self.graph.add(self.graph.unique(sanitize(node.name)), op, inputs)


def sanitize(name: str) -> str:
    """An IR op name from an ONNX name: ``/layer1/conv1/Conv`` -> ``layer1_conv1_Conv``."""
    out = "".join(c if c.isalnum() or c in "_." else "_" for c in name).strip("_.")
    while "__" in out:
        out = out.replace("__", "_")
    return out or "op"


Converter = Callable[[OnnxNode, Builder], str]
#: ONNX op type -> converter; the supported op list is this table's keys
CONVERTERS: dict[str, Converter] = {}


def converts(*op_types: str) -> Callable[[Converter], Converter]:
    def deco(fn: Converter) -> Converter:
        for t in op_types:
            CONVERTERS[t] = fn
        return fn

    return deco


def supported_ops() -> list[str]:
    """ONNX op types with a converter; our own fused ops (``ai.snncompile.*``) are listed as
    what they stand for."""
    ops = sorted(f"{t} (by a constant)" if t in TWO_ACTIVATIONS else
                 f"{t} (at the graph output)" if t in OUTPUT_ONLY else t
                 for t in CONVERTERS if "." not in t)
    if len(ops) < len(CONVERTERS):
        ops.append("quantized activations (Floor/Round clip-floor-shift chains, "
                   "QuantizeLinear/DequantizeLinear around a Relu)")
    return ops


# ---------------------------------------------------------------------------- helpers
def _ints(v: Any, n: int, default: int, what: str) -> tuple[int, ...]:
    if v is None:
        return (default,) * n
    t = tuple(int(x) for x in v)
    if len(t) != n:
        raise Unsupported(f"{what} {list(t)} must have {n} entries (2-D ops only)")
    return t


def _image(node: OnnxNode, b: Builder, x: str) -> tuple[int, int, int]:
    s = b.shape(x)
    if len(s) != 3:
        raise Unsupported(f"expects an (N, C, H, W) input, got (N, {', '.join(map(str, s))})")
    return s  # type: ignore[return-value]


def _pads(node: OnnxNode, hw: tuple[int, int], k: tuple[int, ...], s: tuple[int, ...],
          d: tuple[int, ...]) -> tuple[int, int, int, int]:
    auto = node.attr("auto_pad", "NOTSET") or "NOTSET"
    if auto == "NOTSET":
        return _ints(node.attr("pads"), 4, 0, "pads")  # type: ignore[return-value]
    if auto == "VALID":
        return (0, 0, 0, 0)
    if auto not in ("SAME_UPPER", "SAME_LOWER"):
        raise Unsupported(f"auto_pad={auto}")
    begin, end = [], []
    for n, ki, si, di in zip(hw, k, s, d):
        total = max((math.ceil(n / si) - 1) * si + (ki - 1) * di + 1 - n, 0)
        small, big = total // 2, total - total // 2
        begin.append(small if auto == "SAME_UPPER" else big)
        end.append(big if auto == "SAME_UPPER" else small)
    return (begin[0], begin[1], end[0], end[1])


def _no_ceil(node: OnnxNode, hw: tuple[int, int], k: tuple[int, ...], s: tuple[int, ...],
             p: tuple[int, int, int, int], d: tuple[int, ...]) -> None:
    """ceil_mode=1 is accepted only where it gives the same output size as floor mode."""
    if not node.attr("ceil_mode", 0):
        return
    for i, (n, ki, si, di) in enumerate(zip(hw, k, s, d)):
        span = n + p[i] + p[i + 2] - di * (ki - 1) - 1
        ceil = -(-span // si) + 1
        if (ceil - 1) * si >= n + p[i]:  # torch/ONNX: the last window must start inside
            ceil -= 1
        if ceil != span // si + 1:
            raise Unsupported("ceil_mode=1 adds a partial window at the border; export with "
                              "ceil_mode=False")


def _ceil_pads(node: OnnxNode, hw: tuple[int, int], k: tuple[int, ...], s: tuple[int, ...],
               p: tuple[int, int, int, int], d: tuple[int, ...]) -> tuple[int, int, int, int]:
    """MaxPool with ceil_mode=1 as floor mode with extra −∞ padding at the bottom/right.

    ceil mode has o = ⌈(n + p_b + p_e − d(k−1) − 1)/s⌉ + 1 windows, less one if the last would
    start past n + p_b (torch/ONNX rule); floor mode gives the same o when the end padding grows
    by e = max((o − 1)·s + d(k−1) + 1 − (n + p_b + p_e), 0). The added cells are −∞ and every
    window keeps at least one real input, so the max is unchanged: exact.
    """
    if not node.attr("ceil_mode", 0):
        return p
    pads = list(p)
    for i, (n, ki, si, di) in enumerate(zip(hw, k, s, d)):
        span = n + p[i] + p[i + 2] - di * (ki - 1) - 1
        out = -(-span // si) + 1
        if (out - 1) * si >= n + p[i]:
            out -= 1
        pads[i + 2] += max((out - 1) * si + di * (ki - 1) + 1 - (n + p[i] + p[i + 2]), 0)
    return tuple(pads)  # type: ignore[return-value]


def _single_output(node: OnnxNode, b: Builder) -> None:
    for extra in node.outputs[1:]:
        if extra and b.uses.get(extra, 0):
            raise Unsupported(f"its extra output {extra!r} is used")


def _bias(v: np.ndarray, channels: int, shape: Shape) -> np.ndarray | None:
    """A constant added to a (C, ...) tensor as one value per channel, or None if it is not."""
    if v.ndim > len(shape) + 1 or (v.ndim == len(shape) + 1 and v.shape[0] != 1):
        return None
    try:
        full = np.broadcast_to(v.reshape(v.shape[1:] if v.ndim == len(shape) + 1 else v.shape),
                               shape)
    except ValueError:
        return None
    per = full.reshape(channels, -1)[:, 0]
    if not np.array_equal(full, np.broadcast_to(per.reshape((channels,) + (1,) * (len(shape) - 1)),
                                                shape)):
        return None
    return np.array(per, dtype=np.float64)


def _f32(a: np.ndarray) -> np.ndarray:
    return np.array(a, dtype=np.float32)  # a fresh array: the IR freezes it


# ---------------------------------------------------------------------------- converters
@converts("Conv")
def conv(node: OnnxNode, b: Builder) -> str:
    """Conv (2-D; groups 1, depthwise or grouped) -> Conv2d."""
    x, extra = b.unpadded(node.inputs[0])
    c, h, w = _image(node, b, x)
    weight = b.const(node.inputs[1], "weight")
    if weight.ndim != 4:
        raise Unsupported(f"weight of shape {weight.shape}: only 2-D convolutions")
    bias = b.const(node.inputs[2], "bias") if len(node.inputs) > 2 and node.inputs[2] else None
    k = tuple(weight.shape[2:])
    stride = _ints(node.attr("strides"), 2, 1, "strides")
    dil = _ints(node.attr("dilations"), 2, 1, "dilations")
    pads = _plus(_pads(node, _padded_hw((h, w), extra), k, stride, dil), extra)
    op = Conv2d(origin=node.origin, weight=_f32(weight),
                bias=None if bias is None else _f32(bias), stride=stride,  # type: ignore[arg-type]
                padding=pads, dilation=dil, groups=int(node.attr("group", 1)))  # type: ignore[arg-type]
    return b.add(node, op, [b.tensor(x)])


def _flat_input(node: OnnxNode, b: Builder, x: str) -> int:
    s = b.shape(x)
    if len(s) != 1:
        raise Unsupported(f"expects an (N, features) input, got (N, {', '.join(map(str, s))}); "
                          "flatten first")
    return s[0]


@converts("Gemm")
def gemm(node: OnnxNode, b: Builder) -> str:
    """Gemm Y = α·A·op(B) + β·C with transA=0 and constant B, C -> Dense."""
    if node.attr("transA", 0):
        raise Unsupported("transA=1")
    x = node.inputs[0]
    n_in = _flat_input(node, b, x)
    alpha, beta = float(node.attr("alpha", 1.0)), float(node.attr("beta", 1.0))
    wb = b.const(node.inputs[1], "B")
    if alpha != 1.0:  # α·B in float64, rounded once (without α: B's own float32 values, and no
        wb = wb.astype(np.float64)  # float64 copy of vgg's 25088 × 4096 weight)
    w = wb if node.attr("transB", 0) else wb.T
    if w.ndim != 2 or w.shape[1] != n_in:
        raise Unsupported(f"B of shape {wb.shape} does not fit {n_in} input features")
    w = w * alpha if alpha != 1.0 else w
    bias = None
    if len(node.inputs) > 2 and node.inputs[2]:
        c = b.const(node.inputs[2], "C").astype(np.float64)
        c = c * beta if beta != 1.0 else c
        bias = _bias(c, w.shape[0], (w.shape[0],))
        if bias is None:
            raise Unsupported(f"C of shape {c.shape} is not a per-output bias")
    op = Dense(origin=node.origin, weight=_f32(w), bias=bias)
    return b.add(node, op, [b.tensor(x)])


@converts("MatMul")
def matmul(node: OnnxNode, b: Builder) -> str:
    """MatMul A·B with constant 2-D B -> Dense (W = Bᵀ, no bias; a following Add gives it)."""
    x = node.inputs[0]
    n_in = _flat_input(node, b, x)
    wb = b.const(node.inputs[1], "B (the weight)")
    if wb.ndim != 2 or wb.shape[0] != n_in:
        raise Unsupported(f"B of shape {wb.shape} does not fit {n_in} input features")
    return b.add(node, Dense(origin=node.origin, weight=_f32(wb.T)), [b.tensor(x)])


@converts("Add")
def add(node: OnnxNode, b: Builder) -> str:
    """Add of two activations -> Add; + a per-channel constant after Conv/Dense -> its bias,
    elsewhere -> a per-channel affine op (``_channel_affine``)."""
    x, y = node.inputs[:2]
    if x == y and not b.is_const(x):  # x + x: one edge in the IR graph, so y = 2·x
        c = b.shape(x)[0]
        return _affine(node, b, x, np.full(c, 2.0), np.zeros(c))
    if not b.is_const(x) and not b.is_const(y):
        return b.add(node, Add(origin=node.origin), [b.tensor(x), b.tensor(y)])
    if b.is_const(x) and b.is_const(y):
        raise Unsupported("both operands are constants")
    t, c = (y, x) if b.is_const(x) else (x, y)
    src = b.tensor(t)
    op = b.graph.op(src)
    shape = b.shape(t)
    if isinstance(op, (Conv2d, Dense)) and op.act is None and b.uses.get(t, 0) == 1 \
            and t not in b.graph_outputs:
        v = b.const(c, "addend").astype(np.float64)
        old = np.zeros(shape[0]) if op.bias is None else op.bias.astype(np.float64)
        per = _bias(v, shape[0], shape)
        if per is not None:
            b.graph.replace(src, bias=_f32(old + per), origin=f"{op.origin} + {node.origin}")
            return src
    return _channel_affine(node, b, t, c)


#: ops supported only with one constant operand: with two activations the op is not linear
#: in time (a product of spike trains is not the product of their rates), so ``load_onnx``
#: counts such a node under this name among the unsupported op types
TWO_ACTIVATIONS = {"Mul": "Mul of two activations", "Div": "Div of two activations",
                   "Sub": "Sub of two activations"}


@converts("Mul", "Div", "Sub")
def arithmetic(node: OnnxNode, b: Builder) -> str:
    """An activation times, divided by, minus (or subtracted from) a constant that is one value
    per channel (or a scalar) -> BatchNorm(scale=a, bias=c, mean=0, var=1, eps=0): y = a·x + c,
    folded into the Conv/Dense before it by ``fold-batchnorm`` where there is one (the
    ``(x − mean) / std`` a model applies to its input, or ``relu(x) * 0.5``)."""
    x, y = node.inputs[:2]
    if b.is_const(x) and node.op_type == "Div":
        raise Unsupported("a constant divided by an activation (1/x) is not linear")
    t, c = (y, x) if b.is_const(x) else (x, y)
    return _channel_affine(node, b, t, c, negate=node.op_type == "Sub" and t == y)


def _channel_affine(node: OnnxNode, b: Builder, x: str, const: str, *,
                    negate: bool = False) -> str:
    """``x`` (op) ``const`` as the per-channel affine map y = a·x + c (a BatchNorm op)."""
    shape = b.shape(x)
    v = b.const(const, "operand").astype(np.float64)
    per = _bias(v, shape[0], shape)
    if per is None:
        raise Unsupported(f"the constant of shape {v.shape} is not one value per channel "
                          f"(or a scalar) of the (N, {', '.join(map(str, shape))}) activation")
    if not np.all(np.isfinite(per)):
        raise Unsupported("the constant is not finite")
    ones, zeros = np.ones_like(per), np.zeros_like(per)
    if node.op_type == "Mul":
        a, c = per, zeros
    elif node.op_type == "Div":
        if np.any(per == 0):
            raise Unsupported("division by zero")
        a, c = 1.0 / per, zeros
    elif negate:  # const − x
        a, c = -ones, per
    else:  # x + const, x − const
        a, c = ones, (-per if node.op_type == "Sub" else per)
    with np.errstate(over="ignore"):
        finite = np.isfinite(np.concatenate([a, c]).astype(np.float32)).all()
    if not finite:
        raise Unsupported("the scale or shift overflows float32")
    return _affine(node, b, x, a, c)


def _affine(node: OnnxNode, b: Builder, x: str, a: np.ndarray, c: np.ndarray) -> str:
    """y = a·x + c per channel as the IR's BatchNorm (mean 0, var 1, eps 0)."""
    op = BatchNorm(origin=node.origin, scale=_f32(a), bias=_f32(c), mean=_f32(np.zeros_like(a)),
                   var=_f32(np.ones_like(a)), eps=0.0)
    return b.add(node, op, [b.tensor(x)])


@converts("BatchNormalization")
def batchnorm(node: OnnxNode, b: Builder) -> str:
    """BatchNormalization (inference) -> BatchNorm."""
    if node.attr("training_mode", 0):
        raise Unsupported("training_mode=1")
    _single_output(node, b)
    x = node.inputs[0]
    c = b.shape(x)[0]
    scale, bias, mean, var = (b.const(n, what) for n, what in
                              zip(node.inputs[1:5], ("scale", "B", "mean", "var")))
    for v, what in ((scale, "scale"), (bias, "B"), (mean, "mean"), (var, "var")):
        if v.shape != (c,):
            raise Unsupported(f"{what} of shape {v.shape} does not match {c} channels")
    op = BatchNorm(origin=node.origin, scale=_f32(scale), bias=_f32(bias), mean=_f32(mean),
                   var=_f32(var), eps=float(node.attr("epsilon", 1e-5)))
    return b.add(node, op, [b.tensor(x)])


@converts("Relu")
def relu(node: OnnxNode, b: Builder) -> str:
    """Relu -> ReLU (fused into the layer before it by ``fuse-activations``)."""
    return b.add(node, ReLU(origin=node.origin, act=Activation()), [b.tensor(node.inputs[0])])


@converts("Clip")
def clip(node: OnnxNode, b: Builder) -> str:
    """Clip(min=0, max=m) (ReLU6, hardtanh(0, m)) -> ReLU with an upper bound; on a value that
    is never negative (``_non_negative``: after a Relu, ``torch.clamp(relu(x), max=m)``) a
    missing or negative min is the same clip. Right after a Relu that nothing else reads, the
    bound moves into that ReLU: min(max(x, 0), m) is one clipped ReLU."""
    def bound(i: int, attr: str) -> float | None:
        if len(node.inputs) > i and node.inputs[i]:
            return float(b.const(node.inputs[i], attr).reshape(()))
        return None if node.attr(attr) is None else float(node.attr(attr))

    x = node.inputs[0]
    lo, hi = bound(1, "min"), bound(2, "max")
    src = b.tensor(x)
    if lo != 0.0 and not ((lo is None or lo < 0) and _non_negative(b.graph, src)):
        raise Unsupported(f"min={lo}; only Clip(min=0, max=m), or a clip with min absent "
                          "or < 0 of a value that is never negative (after a Relu), maps to a "
                          "spiking ReLU")
    if hi is not None and not (math.isfinite(hi) and hi > 0):
        raise Unsupported(f"max={hi}; needs a finite max > 0")
    hi = None if hi is None or math.isinf(hi) else hi
    op = b.graph.op(src)
    if isinstance(op, ReLU) and op.act is not None and op.act.levels is None \
            and b.uses.get(x, 0) == 1 and x not in b.graph_outputs:
        top = op.act.hi if hi is None else hi if op.act.hi is None else min(hi, op.act.hi)
        b.graph.replace(src, act=dataclasses.replace(op.act, hi=top),
                        origin=f"{op.origin} + {node.origin}")
        return src
    return b.add(node, ReLU(origin=node.origin, act=Activation(hi=hi)), [src])


def _non_negative(g: Graph, name: str) -> bool:
    """Whether IR op ``name``'s output is ≥ 0 for every input: an activation (ReLU-like), or
    a pool, flatten, concat or non-negative linear map of such values."""
    op = g.op(name)
    if isinstance(op, Layer) and op.act is not None:
        return True
    if isinstance(op, OutputActivation):
        return op.onnx_op != "LogSoftmax"
    if isinstance(op, (MaxPool2d, AvgPool2d, Flatten, Identity, Concat)) or (
            isinstance(op, (Conv2d, Dense)) and np.all(op.weight >= 0)
            and (op.bias is None or np.all(op.bias >= 0))):
        return all(_non_negative(g, i) for i in g.inputs(name))
    return False


@converts("MaxPool")
def maxpool(node: OnnxNode, b: Builder) -> str:
    """MaxPool (2-D) -> MaxPool2d; ceil_mode=1 becomes extra −∞ padding (exact)."""
    _single_output(node, b)
    x = node.inputs[0]
    _, h, w = _image(node, b, x)
    k = _ints(node.attr("kernel_shape"), 2, 1, "kernel_shape")
    s = _ints(node.attr("strides"), 2, 1, "strides")
    d = _ints(node.attr("dilations"), 2, 1, "dilations")
    p = _ceil_pads(node, (h, w), k, s, _pads(node, (h, w), k, s, d), d)
    op = MaxPool2d(origin=node.origin, kernel=k, stride=s, padding=p, dilation=d)  # type: ignore[arg-type]
    return b.add(node, op, [b.tensor(x)])


@converts("AveragePool")
def avgpool(node: OnnxNode, b: Builder) -> str:
    """AveragePool (2-D, no dilation) -> AvgPool2d."""
    x, extra = b.unpadded(node.inputs[0])
    _, h, w = _image(node, b, x)
    k = _ints(node.attr("kernel_shape"), 2, 1, "kernel_shape")
    s = _ints(node.attr("strides"), 2, 1, "strides")
    d = _ints(node.attr("dilations"), 2, 1, "dilations")
    if d != (1, 1):
        raise Unsupported(f"dilations={list(d)}")
    hw = _padded_hw((h, w), extra)
    p = _pads(node, hw, k, s, d)
    _no_ceil(node, hw, k, s, p, d)
    include = bool(node.attr("count_include_pad", 0))
    if any(extra):  # the Pad's zeros are values the mean counts
        if any(p) and not include:
            raise Unsupported("count_include_pad=0 with its own pads after a Pad")
        p, include = _plus(p, extra), True
    op = AvgPool2d(origin=node.origin, kernel=k, stride=s, padding=p,  # type: ignore[arg-type]
                   count_include_pad=include)
    return b.add(node, op, [b.tensor(x)])


def _padded_hw(hw: tuple[int, int], extra: tuple[int, int, int, int]) -> tuple[int, int]:
    return hw[0] + extra[0] + extra[2], hw[1] + extra[1] + extra[3]


def _plus(p: tuple[int, ...], q: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    return tuple(int(a) + b for a, b in zip(p, q))  # type: ignore[return-value]


@converts("GlobalAveragePool")
def global_avgpool(node: OnnxNode, b: Builder) -> str:
    """GlobalAveragePool -> AvgPool2d with kernel (H, W): output (C, 1, 1)."""
    x = node.inputs[0]
    _, h, w = _image(node, b, x)
    return b.add(node, AvgPool2d(origin=node.origin, kernel=(h, w), stride=(h, w)), [b.tensor(x)])


@converts("Concat")
def concat(node: OnnxNode, b: Builder) -> str:
    """Concat on the channel axis (ONNX axis 1) -> Concat(axis=0); one input -> Identity."""
    ins = [b.tensor(i) for i in node.inputs]
    if len(ins) == 1:  # torch.cat([x], 1), as in torchvision's densenet
        return b.add(node, Identity(origin=node.origin, onnx_op="Concat"), ins)
    rank = len(b.shape(node.inputs[0])) + 1
    axis = int(node.attr("axis", 1))
    if axis % rank != 1:
        raise Unsupported(f"axis={axis}; only concatenation along channels (axis 1) is supported")
    return b.add(node, Concat(origin=node.origin, axis=0), ins)


@converts("Identity", "Dropout")
def identity(node: OnnxNode, b: Builder) -> str:
    """Identity and inference Dropout -> Identity (y = x)."""
    _single_output(node, b)
    if node.op_type == "Dropout" and len(node.inputs) > 2 and node.inputs[2]:
        if bool(b.const(node.inputs[2], "training_mode").reshape(())):
            raise Unsupported("training_mode=True")
    return b.add(node, Identity(origin=node.origin, onnx_op=node.op_type),
                 [b.tensor(node.inputs[0])])


#: ops supported only right before the graph output (monotone: the argmax is unchanged);
#: ``load_onnx`` counts such a node elsewhere among the unsupported op types
OUTPUT_ONLY = ("Softmax", "LogSoftmax", "Sigmoid")


@converts(*OUTPUT_ONLY)
def softmax(node: OnnxNode, b: Builder) -> str:
    """A final Softmax/LogSoftmax over the classes, or a final Sigmoid -> OutputActivation
    (argmax is unchanged)."""
    x = node.inputs[0]
    if node.outputs[0] not in b.graph_outputs:
        raise Unsupported("only allowed right before the graph output")
    s = b.shape(x)
    if node.op_type == "Sigmoid":
        if len(s) != 1:
            raise Unsupported(f"on an (N, {', '.join(map(str, s))}) input; only on (N, K)")
        return b.add(node, OutputActivation(origin=node.origin, onnx_op="Sigmoid"),
                     [b.tensor(x)])
    axis = int(node.attr("axis", -1 if b.opset >= 13 else 1))
    if len(s) != 1 or axis % 2 != 1:
        raise Unsupported(f"axis={axis} on an (N, {', '.join(map(str, s))}) input; only over the "
                          "classes of an (N, K) input")
    return b.add(node, OutputActivation(origin=node.origin, onnx_op=node.op_type),
                 [b.tensor(x)])


# the layout and selection converters register themselves in CONVERTERS (they use this module)
from snncompile.frontend import layout_ops  # noqa: E402,F401
