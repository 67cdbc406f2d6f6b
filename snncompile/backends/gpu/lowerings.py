"""Lowering table of the GPU simulator: IR op type -> torch module computing its *current*.

A lowered op maps its inputs' values to its output value at every timestep at once. Values are
either *static*, shape (B, ...), the same at every step (direct-coded input and linear functions
of it: computed once, not T times), or *dynamic*, shape (T·B, ...), one slice per step: the
batched op over T·B is what makes the simulator fast. ``forward(xs, steps)`` gets ``steps=None``
for static inputs and T for dynamic ones. All ops are linear per step but the spiking max-pools:

    MaxPool (dynamic input): per window, pass the input unit with the largest cumulative input
    Σ_{τ≤t} x(τ) (for a spiking input with one θ per channel: the highest spike count so far,
    including step t; ties: the first unit of the window in row-major order).
    CurrentMaxPool2d (``--maxpool current``): I(t) = M(t) − M(t−1), M(t) the window's largest
    cumulative input current (``snncompile.pooling``), feeding one neuron per window.

A lowering whose output depends on earlier steps (the two max-pools) takes a third argument,
``state``: a dict it carries from one time chunk to the next (``stateful = True``).

Neurons are not here: ``compile.SpikingNetwork`` applies the layer's neuron model
(``neurons.NEURON_MODELS``) to the current that the lowering returns. An op type without a
lowering is a CompileError naming the op and the supported types.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from snncompile.backends.common import column_nonzeros, maxpool_gate
from snncompile.interp import avgpool, maxpool, pad2d
from snncompile.ir.diagnostics import CompileError, Diagnostic
from snncompile.ir.graph import Graph
from snncompile.ir.nodes import (
    Add,
    AvgPool2d,
    BatchNorm,
    Concat,
    Conv2d,
    CurrentMaxPool2d,
    Dense,
    Flatten,
    Identity,
    Layer,
    MaxPool2d,
    Node,
    Output,
    OutputActivation,
    ReLU,
)
from snncompile.pooling import cummax_current

Tensor = torch.Tensor
LOWERINGS: dict[type[Node], Callable[[Node, torch.dtype], nn.Module]] = {}
#: dense layers with at most this many weights compute in float64 (``_min_rows``)
SMALL_DENSE = 2**16


def lowers(op_type: type[Node]) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: register a torch module as the lowering of ``op_type``."""

    def deco(cls: type[nn.Module]) -> type[nn.Module]:
        LOWERINGS[op_type] = cls  # type: ignore[assignment]
        return cls

    return deco


def lower(name: str, op: Node, dtype: torch.dtype) -> nn.Module:
    cls = LOWERINGS.get(type(op))
    if cls is None:
        raise CompileError("op not supported by the gpu target", [Diagnostic(
            type(op).__name__, node=name, origin=op.origin or None,
            hint=f"supported: {', '.join(sorted(t.__name__ for t in LOWERINGS))}")])
    return cls(op, dtype)


#: torch dtypes numpy holds: ``_buf`` converts in one copy, without a float64 intermediate
_NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64, torch.float16: np.float16}


def _buf(a: np.ndarray | None, dtype: torch.dtype) -> Tensor | None:
    """A copy (IR arrays are read-only, and torch may not share read-only memory) in ``dtype``,
    rounded once from the IR's values (numpy and torch both round to nearest, ties to even)."""
    if a is None:
        return None
    if dtype in _NUMPY_DTYPES:
        return torch.from_numpy(np.array(a, _NUMPY_DTYPES[dtype]))
    return torch.from_numpy(np.array(a, np.float64)).to(dtype)


def _min_rows(x: Tensor, rows: int) -> tuple[Tensor, int]:
    """x padded with zero rows to at least ``rows`` rows, and its own row count.

    Row-count invariance: the BLAS and oneDNN kernels behind ``F.linear`` and ``F.conv2d`` are
    chosen by the number of rows, and their sums round differently (measured on x86, torch 2.14
    CPU: linear rows differ for M < 12 unless M is 4 or 8; conv2d differs for a batch of 1).
    With the padding a sample's current does not depend on how many samples × steps were
    computed together, so batch pieces and time chunks (``SpikingNetwork.simulate``) leave
    every spike, graded sigma-delta values included, unchanged. Small dense layers (at most
    ``SMALL_DENSE`` weights) go through float64 and are rounded back: their float32 kernels
    also depend on a row's position among the rows (measured: 6 or 10 inputs × 10 outputs)."""
    n = x.shape[0]
    if n >= rows:
        return x, n
    return torch.cat([x, x.new_zeros(rows - n, *x.shape[1:])]), n


class _Op(nn.Module):
    def __init__(self, op: Node, dtype: torch.dtype) -> None:
        super().__init__()
        self.op = op


@lowers(Conv2d)
class ConvLowering(_Op):
    """I = W ⋆ x + b at every step (bias every step)."""

    def __init__(self, op: Conv2d, dtype: torch.dtype) -> None:
        super().__init__(op, dtype)
        self.register_buffer("weight", _buf(op.weight, dtype))
        self.register_buffer("bias", _buf(op.bias, dtype))

    def forward(self, xs: list[Tensor], steps: int | None) -> Tensor:
        op = self.op
        x, n = _min_rows(xs[0], 2)
        t, l, b, r = op.padding
        if t == b and l == r:  # the conv pads itself: no padded copy of the (T·B, ...) input
            return F.conv2d(x, self.weight, self.bias, op.stride, (t, l), op.dilation,
                            op.groups)[:n]
        return F.conv2d(pad2d(x, op.padding), self.weight, self.bias, op.stride, 0,
                        op.dilation, op.groups)[:n]


@lowers(Dense)
class DenseLowering(_Op):
    """I = W x + b at every step."""

    def __init__(self, op: Dense, dtype: torch.dtype) -> None:
        super().__init__(op, dtype)
        self.register_buffer("weight", _buf(op.weight, dtype))
        self.register_buffer("bias", _buf(op.bias, dtype))

    def forward(self, xs: list[Tensor], steps: int | None) -> Tensor:
        x, n = _min_rows(xs[0], 16)
        if self.weight.numel() <= SMALL_DENSE and x.dtype != torch.float64:
            b = None if self.bias is None else self.bias.double()
            return F.linear(x.double(), self.weight.double(), b)[:n].to(x.dtype)
        return F.linear(x, self.weight, self.bias)[:n]


@lowers(Add)
class AddLowering(_Op):
    """I = Σ_k x_k: each branch already carries θ_k·s_k of its own layer."""

    def forward(self, xs: list[Tensor], steps: int | None) -> Tensor:
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out


@lowers(ReLU)
@lowers(Identity)
@lowers(OutputActivation)
@lowers(Output)
class PassLowering(_Op):
    """I = x (identity synapses; a final Softmax is dropped: argmax of the readout ignores it)."""

    def forward(self, xs: list[Tensor], steps: int | None) -> Tensor:
        return xs[0]


@lowers(BatchNorm)
class BatchNormLowering(_Op):
    """y = a·x + c per channel, a = γ/σ, c = β − μ·a (applied every step)."""

    def __init__(self, op: BatchNorm, dtype: torch.dtype) -> None:
        super().__init__(op, dtype)
        a = op.scale.astype(np.float64) / np.sqrt(op.var.astype(np.float64) + op.eps)
        self.register_buffer("a", _buf(a, dtype))
        self.register_buffer("c", _buf(op.bias - op.mean * a, dtype))

    def forward(self, xs: list[Tensor], steps: int | None) -> Tensor:
        shape = (1, -1) + (1,) * (xs[0].dim() - 2)
        return xs[0] * self.a.reshape(shape) + self.c.reshape(shape)


@lowers(AvgPool2d)
class AvgPoolLowering(_Op):
    """Exact: the mean of a window is linear, so it commutes with time."""

    def forward(self, xs: list[Tensor], steps: int | None) -> Tensor:
        return avgpool(self.op, xs[0])


@lowers(Flatten)
class FlattenLowering(_Op):
    def forward(self, xs: list[Tensor], steps: int | None) -> Tensor:
        return xs[0].flatten(1)


@lowers(Concat)
class ConcatLowering(_Op):
    def forward(self, xs: list[Tensor], steps: int | None) -> Tensor:
        return torch.cat(xs, dim=self.op.axis + 1)


@lowers(MaxPool2d)
class MaxPoolLowering(_Op):
    """Static input: the ANN max. Dynamic input: the spiking max-pool gate (``maxpool_gate``)."""

    stateful = True
    #: set by the simulator when the input is a spiking layer's θ·s (``maxpool_gate``)
    counts = False

    def forward(self, xs: list[Tensor], steps: int | None,
                state: dict[str, Tensor] | None = None, theta: Tensor | None = None) -> Tensor:
        """``state`` carries the gate's cumulative scores from one time chunk to the next;
        ``theta``: the input is a binary spiking layer's θ·s (the gate then compares counts)."""
        if steps is None:
            return maxpool(self.op, xs[0])
        x = xs[0].reshape(steps, -1, *xs[0].shape[1:])
        return maxpool_gate(self.op, x, state, counts=self.counts, theta=theta).flatten(0, 1)


@lowers(CurrentMaxPool2d)
class CurrentMaxPoolLowering(_Op):
    """The current of a ``CurrentMaxPool2d`` neuron: static input, the ANN max (M(t) = t·max x);
    dynamic input, I(t) = M(t) − M(t−1) of the window's cumulative input currents
    (``snncompile.pooling``)."""

    stateful = True

    def forward(self, xs: list[Tensor], steps: int | None,
                state: dict[str, Tensor] | None = None) -> Tensor:
        """``state`` carries C and M from one time chunk to the next."""
        if steps is None:
            return maxpool(self.op, xs[0])
        x = xs[0].reshape(steps, -1, *xs[0].shape[1:])
        return cummax_current(self.op, x, state).flatten(0, 1)


# ----------------------------------------------------------------------------- synapse counts
def _count_kernel(op: Node, xs: list[Tensor], mask: Tensor | None) -> Tensor:
    """The 0/1 connectivity of ``op`` (conv weights -> 1 where nonzero, pools -> window sums;
    a Dense layer is counted by ``column_nonzeros`` in ``fanout``)."""
    if isinstance(op, Conv2d):
        return F.conv2d(pad2d(xs[0], op.padding), mask, None, op.stride, 0, op.dilation, op.groups)
    if isinstance(op, (AvgPool2d, MaxPool2d, CurrentMaxPool2d)):
        c = xs[0].shape[1]
        ones = torch.ones(c, 1, *op.kernel, dtype=xs[0].dtype)
        dil = op.dilation if isinstance(op, (MaxPool2d, CurrentMaxPool2d)) else (1, 1)
        return F.conv2d(pad2d(xs[0], op.padding), ones, None, op.stride, 0, dil, c)
    if isinstance(op, Flatten):
        return xs[0].flatten(1)
    if isinstance(op, Concat):
        return torch.cat(xs, dim=op.axis + 1)
    out = xs[0]
    for x in xs[1:]:
        out = out + x
    return out  # Add, ReLU, Identity, BatchNorm, Output: one-to-one


@torch.enable_grad()  # computed as a gradient: must work when compiled under torch.no_grad
def fanout(graph: Graph, name: str) -> np.ndarray:
    """Synapses driven by each unit of spiking layer ``name`` (array of its output shape).

    A spike of unit i reaches, through the linear ops that follow (pools, flatten, concat, a
    non-spiking Add), the inputs j of the next synaptic layers K (Conv2d, Dense, a spiking Add or
    ReLU, the readout); fan-out(i) = Σ_K Σ_j A[j, i] · syn_K(j), with syn_K(j) the number of
    nonzero weights that input j of K drives (1 for identity synapses) and A the 0/1 pooling
    windows that contain i. Computed exactly as the gradient of that linear count at batch 1;
    a Dense layer enters it as Σ_i x_i · (nonzero weights of column i), no 0/1 mask of its
    weights (``column_nonzeros``). A unit behind a MaxPool gate is counted as if its window
    passed it (an upper bound).
    """
    x = torch.ones(1, *graph.shape(name), dtype=torch.float64, requires_grad=True)
    vals: dict[str, Tensor] = {name: x}
    readout = graph.readout_name
    total = torch.zeros((), dtype=torch.float64)
    for n, op in graph.topo():
        ins = graph.inputs(n)
        if n == name or not any(i in vals for i in ins):
            continue
        xs = [vals[i] if i in vals else torch.zeros(1, *graph.shape(i), dtype=torch.float64)
              for i in ins]
        weighted = isinstance(op, (Conv2d, Dense))
        terminal = weighted or n == readout or (isinstance(op, Layer) and op.neuron is not None)
        if isinstance(op, Dense):  # Σ_j Σ_i [W_ji ≠ 0] x_i = Σ_i x_i · (nonzeros of column i)
            cols = torch.from_numpy(column_nonzeros(op.weight).astype(np.float64))
            total = total + (xs[0] * cols).sum()
            continue
        mask = torch.from_numpy(np.array(op.weight != 0, np.float64)) if weighted else None
        y = _count_kernel(op, xs, mask)
        if terminal:
            total = total + y.sum()
        elif not isinstance(op, Output):
            vals[n] = y
    if not total.requires_grad:
        return np.zeros(graph.shape(name))
    (g,) = torch.autograd.grad(total, x)
    return g[0].numpy()
