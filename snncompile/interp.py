"""The ANN reference interpreter: float execution of the IR with torch on the CPU, for
``--check`` against onnxruntime, calibration and the ANN accuracy in reports.

Each op's math is in its docstring (``snncompile.ir.nodes``); the kernel table below maps op
types to torch code. A spiking layer runs its ANN activation here (ANN mode ignores neurons).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from snncompile.ir.diagnostics import CompileError, Diagnostic
from snncompile.ir.graph import Graph
from snncompile.ir.nodes import (
    Activation,
    Add,
    AvgPool2d,
    BatchNorm,
    Concat,
    Conv2d,
    CurrentMaxPool2d,
    Dense,
    Flatten,
    Identity,
    Input,
    Layer,
    MaxPool2d,
    Node,
    Output,
    OutputActivation,
    ReLU,
)
from snncompile.ir.verify import check_input

Tensor = torch.Tensor


def _t(a: np.ndarray | None, dtype: torch.dtype) -> Tensor | None:
    # copy: IR arrays are read-only and torch warns about non-writable buffers
    return None if a is None else torch.from_numpy(np.array(a)).to(dtype)


def pad2d(x: Tensor, padding: tuple[int, int, int, int], value: float = 0.0) -> Tensor:
    """Pad (top, left, bottom, right) the last two axes."""
    t, l, b, r = padding
    if not any(padding):
        return x
    return F.pad(x, (l, r, t, b), value=value)


def conv2d(op: Conv2d, x: Tensor) -> Tensor:
    w = _t(op.weight, x.dtype)
    return F.conv2d(pad2d(x, op.padding), w, _t(op.bias, x.dtype), op.stride, 0, op.dilation,
                    op.groups)


def dense(op: Dense, x: Tensor) -> Tensor:
    return F.linear(x, _t(op.weight, x.dtype), _t(op.bias, x.dtype))


def avgpool(op: AvgPool2d, x: Tensor) -> Tensor:
    p = op.padding
    if x.device.type == "cpu" and op.kernel[0] * op.kernel[1] <= 16 and (
            not any(p) or op.count_include_pad):
        return _window_mean(pad2d(x, p) if any(p) else x, op.kernel, op.stride)
    if p[0] == p[2] and p[1] == p[3]:
        return F.avg_pool2d(x, op.kernel, op.stride, (p[0], p[1]),
                            count_include_pad=op.count_include_pad)
    if not op.count_include_pad:
        ones = torch.ones_like(x[:1, :1])
        num = F.avg_pool2d(pad2d(x, p), op.kernel, op.stride) * (op.kernel[0] * op.kernel[1])
        den = F.avg_pool2d(pad2d(ones, p), op.kernel, op.stride) * (op.kernel[0] * op.kernel[1])
        return num / den
    return F.avg_pool2d(pad2d(x, p), op.kernel, op.stride)


def _window_mean(x: Tensor, kernel: tuple[int, int], stride: tuple[int, int]) -> Tensor:
    """F.avg_pool2d(x, kernel, stride) bit for bit on CPU (the same sums in the same order, row
    by row, then one division), as strided slices added up: 3-9x faster than torch's CPU kernel
    on the spike maps of a simulation, where pooling cost more than the convolutions
    (benchmarks/whole_job.py)."""
    (kh, kw), (sh, sw) = kernel, stride
    ho, wo = (x.shape[-2] - kh) // sh + 1, (x.shape[-1] - kw) // sw + 1
    acc = x[..., :sh * (ho - 1) + 1:sh, :sw * (wo - 1) + 1:sw]
    for i in range(kh):
        for j in range(kw):
            if i or j:
                acc = acc + x[..., i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw]
    return acc / (kh * kw)


def maxpool(op: MaxPool2d | CurrentMaxPool2d, x: Tensor) -> Tensor:
    return F.max_pool2d(pad2d(x, op.padding, float("-inf")), op.kernel, op.stride, 0, op.dilation)


def activation(act: Activation, x: Tensor) -> Tensor:
    if act.levels is not None and act.hi is not None:
        q = torch.floor(x * (act.levels / act.hi) + act.shift) / act.levels
        return act.hi * torch.clamp(q, 0.0, 1.0)
    return torch.clamp(x, min=0.0, max=act.hi)


def batchnorm(op: BatchNorm, x: Tensor) -> Tensor:
    shape = (1, -1) + (1,) * (x.dim() - 2)
    inv = _t(op.scale / np.sqrt(op.var + op.eps), x.dtype).reshape(shape)
    return (x - _t(op.mean, x.dtype).reshape(shape)) * inv + _t(op.bias, x.dtype).reshape(shape)


def output_activation(op: OutputActivation, x: Tensor) -> Tensor:
    if op.onnx_op == "Softmax":
        return torch.softmax(x, dim=1)
    if op.onnx_op == "LogSoftmax":
        return torch.log_softmax(x, dim=1)
    return torch.sigmoid(x)


#: the linear part of every op (no activation): inputs -> output
KERNELS: dict[type[Node], Callable[..., Tensor]] = {
    Conv2d: lambda op, xs: conv2d(op, xs[0]),
    Dense: lambda op, xs: dense(op, xs[0]),
    Add: lambda op, xs: torch.stack(xs).sum(0),
    ReLU: lambda op, xs: xs[0],
    BatchNorm: lambda op, xs: batchnorm(op, xs[0]),
    AvgPool2d: lambda op, xs: avgpool(op, xs[0]),
    MaxPool2d: lambda op, xs: maxpool(op, xs[0]),
    CurrentMaxPool2d: lambda op, xs: maxpool(op, xs[0]),
    Flatten: lambda op, xs: xs[0].flatten(1),
    Concat: lambda op, xs: torch.cat(xs, dim=op.axis + 1),
    Identity: lambda op, xs: xs[0],
    OutputActivation: lambda op, xs: output_activation(op, xs[0]),
    Output: lambda op, xs: xs[0],
}


def standard_layout(x: Tensor) -> Tensor:
    """``x`` with the row-major strides of its shape. An input whose size-1 axes carry other
    strides (an (N, 1, H, W) array made by a transpose has the strides of channels-last) is
    contiguous to torch, but its convolutions then take a channels-last kernel, which rounds
    its sums differently on some CPUs (seen on an AMD EPYC): the same values would give other
    activations, thresholds and spikes than the same array laid out row-major."""
    want, step = [], 1
    for d in reversed(x.shape):
        want.append(step)
        step *= d
    if tuple(reversed(want)) == x.stride():
        return x
    return x.clone(memory_format=torch.contiguous_format)


def run_ann_torch(graph: Graph, x: Tensor, *, record: bool = False,
                  pre_activation: bool = False) -> tuple[Tensor, dict[str, Tensor]]:
    """Run ``graph`` on ``x`` (B, *input shape). Returns the output and, with ``record``, every
    op's output by name (``pre_activation``: a layer's value before its activation)."""
    vals: dict[str, Tensor] = {}
    rec: dict[str, Tensor] = {}
    order = list(graph.topo())
    # index of each value's last reader: a value is dropped after it (unless recorded)
    last = {i: k for k, (n, _) in enumerate(order) for i in graph.inputs(n)}
    for k, (name, op) in enumerate(order):
        if isinstance(op, Input):
            vals[name] = standard_layout(x)
            continue
        kernel = KERNELS.get(type(op))
        if kernel is None:
            raise CompileError("no ANN kernel for IR op", [Diagnostic(type(op).__name__, node=name,
                                                                       origin=op.origin)])
        y = kernel(op, [vals[p] for p in graph.inputs(name)])
        if record and pre_activation:
            rec[name] = y
        if isinstance(op, Layer) and op.act is not None:
            y = activation(op.act, y)
        vals[name] = y
        if record and not pre_activation:
            rec[name] = y
        for i in graph.inputs(name):
            if last.get(i) == k and i != graph.output_name:
                vals.pop(i, None)
    return vals[graph.output_name], rec


def batch_for(graph: Graph, max_bytes: int | None, batch_size: int, itemsize: int = 4) -> int:
    """The largest batch ≤ ``batch_size`` whose forward pass keeps about ``max_bytes``: a pass
    holds the values alive at the widest point of the op order (``run_ann_torch`` drops a value
    after its last reader), estimated per sample as the two widest values plus the input."""
    if max_bytes is None:
        return batch_size
    return max(1, min(batch_size, int(max_bytes) // max(sample_bytes(graph, itemsize), 1)))


def sample_bytes(graph: Graph, itemsize: int = 4) -> int:
    """Bytes one sample's forward pass holds (``batch_for``): the two widest values plus the
    input."""
    units = sorted((int(np.prod(graph.shape(n))) for n, _ in graph.topo()), reverse=True)
    return (sum(units[:2]) + int(np.prod(graph.shape(graph.input_name)))) * itemsize


@torch.no_grad()
def run_ann(graph: Graph, x: np.ndarray, *, batch_size: int = 1024,
            dtype: torch.dtype = torch.float32, max_bytes: int | None = None) -> np.ndarray:
    """Float forward pass of the IR; returns the output as numpy (N, *out shape). Batches of
    at most ``batch_size`` samples, fewer when ``max_bytes`` bounds a batch's values
    (``batch_for``)."""
    check_input(graph, x)
    batch_size = batch_for(graph, max_bytes, batch_size, torch.finfo(dtype).bits // 8)
    outs = []
    for i in range(0, max(len(x), 1), batch_size):
        xb = torch.from_numpy(np.ascontiguousarray(x[i:i + batch_size])).to(dtype)
        outs.append(run_ann_torch(graph, xb)[0].numpy())
    return np.concatenate(outs).astype(np.float32) if outs else np.zeros((0,), np.float32)


@torch.no_grad()
def record_activations(graph: Graph, x: np.ndarray, *, batch_size: int = 256,
                       pre_activation: bool = False) -> dict[str, np.ndarray]:
    """Every op's ANN output on ``x`` (N, ...), as numpy, by op name."""
    check_input(graph, x)
    parts: dict[str, list[np.ndarray]] = {}
    for i in range(0, len(x), batch_size):
        xb = torch.from_numpy(np.ascontiguousarray(x[i:i + batch_size])).float()
        _, rec = run_ann_torch(graph, xb, record=True, pre_activation=pre_activation)
        for k, v in rec.items():
            parts.setdefault(k, []).append(v.numpy())
    return {k: np.concatenate(v) for k, v in parts.items()}
