"""Loihi plan: the spiking IR as neuron populations joined by synapses, in float and fixed point.

One place computes what both the Lava run (``build``, ``compile``) and the bit-exact torch
reference (``torch_sim``) run, so they cannot drift apart.

Populations and synapses. Every spiking layer (and the Input, and the readout) is a
*population*. Everything between two populations is linear (AvgPool, Flatten, neuron-less Conv /
Dense / Add, BatchNorm), so the current that population B receives is

    I_B(t) = Σ_A M_{A→B} · p_A(t) + b_B

where p_A is what population A sends: its spikes s_A ∈ {0, 1} (θ_A is folded into the weights,
W_eff = W · θ_A per input channel) or, for the Input, the analog value x (a·x + c when the
model normalises its own input: ``_host_input_affine``). Each M_{A→B} becomes
one synapse: a convolution when the path is ``A → Conv`` or ``A → AvgPool(k=s) → Conv``
(the pool is folded into a conv of kernel k·K, stride k·S, padding k·P, exact), a 1×1
identity conv for a residual shortcut, and otherwise a dense matrix obtained by pushing unit
vectors through the linear ops (exact; limited to ``DENSE_LIMIT`` entries). b_B collects every
bias on the way.

Timing. On Lava every synapse delays by one step. A population's *depth* is the number of
synapses on its longest path from the Input; a synapse A→B whose source is shallower than
depth(B) − 1 gets ``delay = depth(B) − depth(A) − 1`` extra steps (a delay line), so all
branches of a residual Add arrive in the same step. With aligned branches the run is the
zero-delay network shifted: population B sees sample step τ at Lava step τ + depth(B).

Fixed point: ``fixed.py`` (number formats, and ``fix`` which fills the plan's integers).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from snncompile.backends.common import column_nonzeros
from snncompile.backends.loihi import neurons as loihi_neurons
from snncompile.backends.loihi.fixed import DENSE_LIMIT, INPUT_MAX, _scale_in, fix
from snncompile.interp import KERNELS
from snncompile.ir.diagnostics import CompileError, Diagnostic
from snncompile.ir.graph import Graph
from snncompile.ir.nodes import (
    Add,
    AvgPool2d,
    BatchNorm,
    Conv2d,
    CurrentMaxPool2d,
    Dense,
    Input,
    Layer,
    MaxPool2d,
    Node,
    Output,
    ReLU,
)
from snncompile.neurons import get_spec

NEURON_ROLES = ("input", "readout", "maxpool")  # population kinds that are not a neuron model
#: input axons per core: Loihi 1's published figure (Davies et al. 2018), an *estimate* for
#: Loihi 2 (whose figure is not public); a dense synapse whose neurons have more inputs is split
AXONS_PER_CORE = 4096


@dataclass
class Population:
    """A neuron population (an IR spiking layer, the Input or the readout).

    Arrays have the population's torch-order shape (C, H, W) or (N,).
    ``kind``: "input" | "readout" (non-spiking integrator) | "maxpool" (a spiking max-pool gate
    on ``gate_src``'s spikes: per window, pass the spike of the unit with the largest sum of
    spikes so far in the sample, ties to the first unit in row-major order; no synapse, no
    delay, same depth as its source; a host process, not a Loihi neuron) | a neuron model name
    (``snncompile.neurons``; its loihi implementation is ``neuron``). A graded (sigma-delta)
    population sends deltas in the payload unit 2^(exp+grid_exp), so synapses from it carry
    W·2^(exp+grid_exp), not W·θ_src (floating_pt sends d/θ).
    """

    name: str
    shape: tuple[int, ...]
    kind: str
    depth: int = 0
    origin: str = ""
    threshold: np.ndarray | None = None  # float θ per neuron
    alpha: float = 0.0
    bias: np.ndarray | None = None  # float current per step, per neuron
    exp: int = 0  # fixed point: unit u = 2^exp of the synaptic input a
    vth_mant: np.ndarray | None = None  # int per neuron
    v_init: np.ndarray | None = None  # int per neuron (state units, ×64)
    bias_mant: np.ndarray | None = None
    bias_exp: np.ndarray | None = None
    members: int = 1  # gn: members M (sends 0..M per step); bistable: the window ρ
    grid_exp: int = 0  # sigma-delta: act is floored to multiples of 2^(exp+grid_exp), the
    #                    payload unit (the delta threshold is 2..4 such units)
    neg_level: np.ndarray | None = None  # signed-if: negative spike when v <= -neg_level (×64)
    gate: MaxPool2d | None = None  # kind "maxpool": the pooling op
    gate_src: str | None = None  # kind "maxpool": the spiking population it gates
    #: a ``CurrentMaxPool2d`` population (``--maxpool current``): its synapses deliver the
    #: currents of the pooled candidates (shape ``pool_in``), a host process turns them into
    #: I(t) = M(t) − M(t−1) of the window max M of their cumulative sums, the neurons (shape
    #: ``shape``) integrate I(t) + bias (``snncompile.pooling``; Lava: ``lava_models.cummax``)
    pool: CurrentMaxPool2d | None = None
    pool_in: tuple[int, ...] | None = None

    @property
    def in_shape(self) -> tuple[int, ...]:
        """The shape of the synaptic current this population's synapses deliver."""
        return self.pool_in if self.pool_in is not None else self.shape

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def spiking(self) -> bool:
        return self.kind not in NEURON_ROLES

    @property
    def neuron(self) -> loihi_neurons.LoihiNeuron | None:
        """The loihi implementation of this population's model (None for input/readout/gate)."""
        return loihi_neurons.get(self.kind) if self.spiking else None

    @property
    def graded(self) -> bool:
        return self.spiking and get_spec(self.kind).graded

    @property
    def signed(self) -> bool:
        return self.spiking and get_spec(self.kind).signed

    def bias_state(self) -> np.ndarray:
        """Fixed-point bias in state units: bias_mant << bias_exp (int64)."""
        return np.left_shift(self.bias_mant.astype(np.int64), self.bias_exp.astype(np.int64))


@dataclass
class Synapse:
    """Synapses from population ``src`` (its spikes, or x for the Input) to ``dst``.

    ``kind="conv"``: ``weight`` (C_out, C_in/groups, kH, kW) in torch layout, symmetric
    ``padding`` (pH, pW). ``kind="dense"``: ``weight`` (dst size, src size) over torch-order
    flattened units. ``weight`` is the float W_eff; ``weight_int`` the fixed-point q.
    """

    src: str
    dst: str
    kind: str
    weight: np.ndarray
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    delay: int = 0
    weight_int: np.ndarray | None = None
    note: str = ""  # how it was built ("conv", "avgpool+conv", "identity", "linearized")

    @property
    def count(self) -> int:
        """Number of synapses (nonzero connections, counting a conv's weight sharing out)."""
        return int(self.connections)

    connections: int = 0


@dataclass
class LoihiPlan:
    """Populations (topological order), synapses, depths and fixed-point parameters."""

    pops: dict[str, Population]
    syns: list[Synapse]
    input_name: str
    readout_name: str
    input_frac_bits: int = 0
    #: (a, c) per input channel: y = a·x + c, the BatchNorms right after the Input (a model's
    #: own (x − mean) / std), applied by the host before the input payload is quantized
    input_affine: tuple[np.ndarray, np.ndarray] | None = None
    counts: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: dense synapses split by ``split_wide_synapses``: one record per original synapse
    splits: list[dict[str, Any]] = field(default_factory=list)

    @property
    def depth(self) -> int:
        """Synapses on the longest path: Lava needs N·T + depth steps for N samples."""
        return self.pops[self.readout_name].depth

    def spiking(self) -> list[str]:
        return [n for n, p in self.pops.items() if p.spiking]

    @property
    def delta_coded(self) -> bool:
        """Sigma-delta network: every synapse carries deltas (the Input sends x at the first
        step of each sample and nothing after; the readout decodes sigma, sends sigma + bias)."""
        return any(p.graded for p in self.pops.values())

    def payload_range(self, name: str) -> tuple[int, int]:
        """(min, max) of what population ``name`` sends per neuron and step (spikes: 0..1;
        signed-if: -1..1; gn: 0..M; a gate passes its source's)."""
        p = self.pops[name]
        if p.kind == "maxpool":
            return self.payload_range(p.gate_src)
        return p.neuron.payload(p) if p.spiking else (0, 1)

    def synapses_into(self, name: str) -> list[Synapse]:
        return [s for s in self.syns if s.dst == name]

    def input_value(self, x: np.ndarray) -> np.ndarray:
        """What the Input population sends, in float64: x, or a·x + c (``input_affine``)."""
        v = np.asarray(x, np.float64)
        if self.input_affine is not None:
            a, c = self.input_affine
            shape = (1, -1) + (1,) * (v.ndim - 2)
            v = v * a.reshape(shape) + c.reshape(shape)
        return v

    def input_int(self, x: np.ndarray) -> tuple[np.ndarray, int]:
        """Fixed-point input payload round(v·2^k) (int64) of v = ``input_value(x)``, and how
        many values were clipped."""
        q = np.rint(self.input_value(x) * 2.0 ** self.input_frac_bits)
        clipped = int(np.count_nonzero(np.abs(q) > INPUT_MAX))
        return np.clip(q, -INPUT_MAX, INPUT_MAX).astype(np.int64), clipped

    def summary(self) -> list[dict[str, Any]]:
        out = []
        for n, p in self.pops.items():
            syns = self.synapses_into(n)
            out.append({"name": n, "kind": p.kind, "shape": list(p.shape), "depth": p.depth,
                        "neurons": p.size if p.kind != "input" else 0,
                        "synapses": sum(s.count for s in syns),
                        "inputs": [f"{s.src}:{s.note}" + (f"+delay{s.delay}" if s.delay else "")
                                   for s in syns], "exp": p.exp})
        return out


# ------------------------------------------------------------------------------ structure
def _is_spiking(graph: Graph, name: str) -> bool:
    op = graph.op(name)
    return isinstance(op, Layer) and op.neuron is not None


def _is_gate(graph: Graph, name: str) -> bool:
    """A MaxPool fed directly by a spiking layer: a spiking max-pool gate population."""
    return isinstance(graph.op(name), MaxPool2d) and _is_spiking(graph, graph.inputs(name)[0])


def _is_source(graph: Graph, name: str) -> bool:
    op = graph.op(name)
    return isinstance(op, Input) or _is_spiking(graph, name) or _is_gate(graph, name)


def _sources(graph: Graph, name: str) -> list[str]:
    """Populations that ``name``'s value depends on through linear ops only."""
    found: list[str] = []
    stack = list(graph.inputs(name))
    seen: set[str] = set()
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        if _is_source(graph, n):
            found.append(n)
        else:
            stack.extend(graph.inputs(n))
    order = {n: i for i, n in enumerate(graph.names())}
    return sorted(found, key=lambda n: order.get(n, 0))


def _maxpool_diag(name: str, op: Node) -> Diagnostic:
    return Diagnostic("MaxPool is supported only directly after a spiking layer (as a gate)",
                      node=name, origin=op.origin or None,
                      hint="put the MaxPool right after a Conv+ReLU, or use AvgPool")


def _evaluate(graph: Graph, name: str, values: dict[str, torch.Tensor],
              memo: dict[str, torch.Tensor] | None = None, top: bool = True) -> torch.Tensor:
    """Linear part of op ``name`` with population outputs given in ``values`` (batched)."""
    memo = {} if memo is None else memo
    if not top and name in values:
        return values[name]
    if name in memo:
        return memo[name]
    op = graph.op(name)
    if isinstance(op, MaxPool2d):
        raise CompileError("MaxPool is not supported by the loihi target",
                           [_maxpool_diag(name, op)])
    if not top and isinstance(op, Layer) and op.act is not None:
        raise CompileError("non-spiking activation on the loihi target", [Diagnostic(
            f"{type(op).__name__} with an activation but no neuron", node=name,
            origin=op.origin or None)])
    kernel = KERNELS.get(type(op))
    if kernel is None or isinstance(op, Input):
        raise CompileError("op not supported by the loihi target", [Diagnostic(
            type(op).__name__, node=name, origin=op.origin or None)])
    y = kernel(op, [_evaluate(graph, i, values, memo, top=False) for i in graph.inputs(name)])
    memo[name] = y
    return y


def _theta_per_channel(graph: Graph, name: str) -> np.ndarray | None:
    op = graph.op(name)
    if isinstance(op, Input):
        return None
    if isinstance(op, MaxPool2d):  # a gate passes its source's spikes (θ per channel)
        return _theta_per_channel(graph, graph.inputs(name)[0])
    return np.asarray(op.neuron.threshold, np.float64)


def _conv_branch(graph: Graph, root: str, dst: str) -> Synapse | None:
    """A structured conv synapse for branch ``root`` of ``dst``, or None (use linearization)."""
    op = graph.op(root)
    if _is_source(graph, root) and root != dst:  # residual identity shortcut
        shape = graph.shape(root)
        if len(shape) != 3 or graph.shape(dst) != shape:
            return None
        c = shape[0]
        th = _theta_per_channel(graph, root)
        th = np.ones(c) if th is None else np.broadcast_to(th, (c,))
        w = np.zeros((c, c, 1, 1))
        w[np.arange(c), np.arange(c), 0, 0] = th
        return Synapse(src=root, dst=dst, kind="conv", weight=w, note="identity")
    if isinstance(op, AvgPool2d) and op.kernel == op.stride and not any(op.padding) \
            and _is_source(graph, graph.inputs(root)[0]) and root != dst:
        # a pooled residual shortcut: AvgPool(k = s) is a depthwise conv, weights θ_c/(kh·kw)
        src = graph.inputs(root)[0]
        c, h, w_ = graph.shape(src)
        kh, kw = op.kernel
        if h % kh or w_ % kw or graph.shape(dst) != graph.shape(root):
            return None
        wk = _scale_in(np.full((c, 1, kh, kw), 1.0 / (kh * kw)), _theta_per_channel(graph, src),
                       groups=c)
        return Synapse(src=src, dst=dst, kind="conv", weight=wk, stride=(kh, kw), groups=c,
                       note="avgpool")
    if not isinstance(op, Conv2d):
        return None
    t, l, b, r = op.padding
    if t != b or l != r:
        return None
    prev = graph.inputs(root)[0]
    if _is_source(graph, prev):
        w = _scale_in(op.weight, _theta_per_channel(graph, prev), op.groups)
        return Synapse(src=prev, dst=dst, kind="conv", weight=w, stride=op.stride,
                       padding=(t, l), dilation=op.dilation, groups=op.groups, note="conv")
    pool = graph.op(prev)
    if not (isinstance(pool, AvgPool2d) and pool.kernel == pool.stride and not any(pool.padding)
            and op.dilation == (1, 1) and op.groups == 1):
        return None
    src = graph.inputs(prev)[0]
    if not _is_source(graph, src):
        return None
    _, h, w_ = graph.shape(src)
    kh, kw = pool.kernel
    if h % kh or w_ % kw:
        return None
    # pool then conv == one conv: K[o,i,A,B] = W[o,i,A//kh,B//kw]/(kh·kw), stride k·S, pad k·P
    wk = np.repeat(np.repeat(op.weight.astype(np.float64), kh, axis=2), kw, axis=3) / (kh * kw)
    wk = _scale_in(wk, _theta_per_channel(graph, src))
    return Synapse(src=src, dst=dst, kind="conv", weight=wk,
                   stride=(kh * op.stride[0], kw * op.stride[1]), padding=(kh * t, kw * l),
                   note="avgpool+conv")


def _linearize(graph: Graph, root: str, dst: str, src: str, srcs: list[str]) -> Synapse:
    """Dense synapse src → root's value, by pushing unit vectors through the linear ops."""
    n_in = int(np.prod(graph.shape(src)))
    n_out = int(np.prod(graph.shape(dst)))
    if n_in * n_out > DENSE_LIMIT:
        op = graph.op(dst)
        hint = "use Conv or AvgPool(kernel=stride) before Conv"
        if isinstance(graph.op(src), Input) and any(
                isinstance(graph.op(u), BatchNorm) for u in graph.users(src)):
            # (x − mean) / std written in the model: its shift cannot pass a padded conv
            hint = ("the model shifts its input per channel (e.g. (x − mean) / std) before a "
                    "padded Conv; normalise the data instead and export the model without it")
        raise CompileError("synapse too large for a dense matrix", [Diagnostic(
            f"{src} -> {dst}: {n_out}x{n_in} weights > {DENSE_LIMIT}", node=dst,
            origin=op.origin or None, hint=hint)])
    zero = {s: torch.zeros((1, *graph.shape(s)), dtype=torch.float64) for s in srcs}
    top = root == dst
    base = _evaluate(graph, root, zero, top=top).reshape(1, -1)
    rows = []
    for i in range(0, n_in, 256):  # unit vectors in blocks: memory 256 · size, not n_in²
        k = min(256, n_in - i)
        vals = {s: zero[s].expand(k, *graph.shape(s)) for s in srcs}
        eye = torch.zeros((k, n_in), dtype=torch.float64)
        eye[torch.arange(k), torch.arange(i, i + k)] = 1.0
        vals[src] = eye.reshape(k, *graph.shape(src))
        rows.append(_evaluate(graph, root, vals, top=top).reshape(k, -1) - base)
    m = torch.cat(rows).T.numpy()
    th = _theta_per_channel(graph, src)
    if th is not None:
        shape = graph.shape(src)
        per_unit = np.broadcast_to(th.reshape((-1,) + (1,) * (len(shape) - 1)), shape).ravel()
        m = m * per_unit[None, :]
    m[np.abs(m) < 1e-12] = 0.0
    return Synapse(src=src, dst=dst, kind="dense", weight=m, note="linearized")


def _branches(graph: Graph, name: str) -> list[str]:
    op = graph.op(name)
    if isinstance(op, Add):
        return graph.inputs(name)
    return [name]


def _connections(graph: Graph, syn: Synapse) -> int:
    if syn.kind == "dense":
        return int(np.count_nonzero(syn.weight))
    # conv: every output unit connects to its receptive field's nonzero weights
    x = torch.ones((1, *graph.shape(syn.src)), dtype=torch.float64)
    w = torch.from_numpy((syn.weight != 0).astype(np.float64))
    y = torch.nn.functional.conv2d(x, w, None, syn.stride, syn.padding, syn.dilation, syn.groups)
    return int(y.sum().item())


def _host_input_affine(graph: Graph) -> tuple[Graph, tuple[np.ndarray, np.ndarray] | None]:
    """The BatchNorms (per-channel affine maps) that the Input alone feeds, one after the
    other: the input preprocessing a model does itself, ``(x − mean) / std``. They move to the
    host, which sends a·x + c instead of x (``LoihiPlan.input_value``), so the first layer
    keeps a convolution synapse (a shift cannot pass its zero padding, and x -> conv would
    otherwise be a dense matrix). Returns (the graph without them, (a, c)) or (graph, None)."""
    name, chain = graph.input_name, []
    while len(users := graph.users(name)) == 1 and isinstance(graph.op(users[0]), BatchNorm):
        name = users[0]
        chain.append(name)
    if not chain:
        return graph, None
    c_in = graph.shape(graph.input_name)[0]
    a, c = np.ones(c_in), np.zeros(c_in)
    g = graph.copy()
    for name in chain:
        a_k, c_k = graph.op(name).affine()
        a, c = a * a_k, c * a_k + c_k
        g.bypass(name)
    return g, (a, c)


def build_plan(graph: Graph, grid_exp: int | None = None) -> LoihiPlan:
    """Spiking IR -> ``LoihiPlan`` (float and fixed-point parameters, synapses, depths).

    ``grid_exp``: sigma-delta payload unit exponent for every sigma-delta population
    (``NETX_GRID_EXP`` when exporting netx; default: chosen per layer, ``_choose_grid``).
    Steps: the host takes the input's own affine preprocessing (``_host_input_affine``); one
    population per spiking layer, gate and readout with its incoming synapses
    (``_population``); every problem collected, then raised at once; depths and alignment
    delays (``_set_depths``); connections; the fixed-point parameters (``fix``); wide dense
    synapses split over cores (``split_wide_synapses``)."""
    graph, affine = _host_input_affine(graph)
    problems: list[Diagnostic] = []
    pops: dict[str, Population] = {}
    syns: list[Synapse] = []
    for name, op in graph.topo():
        pop = _population(graph, name, op, syns, problems)
        if pop is not None:
            pops[name] = pop
    problems += _graded_problems(pops)
    if problems:
        unique = {(d.message, d.node): d for d in problems}  # a MaxPool is met twice
        raise CompileError("cannot compile for the loihi target", list(unique.values()))
    _set_depths(pops, syns)
    for s in syns:
        s.connections = _connections(graph, s)
    plan = LoihiPlan(pops=pops, syns=syns, input_name=graph.input_name,
                     readout_name=graph.readout_name, input_affine=affine)
    fix(plan, grid_exp)
    split_wide_synapses(plan, graph)
    return plan


def _population(graph: Graph, name: str, op: Any, syns: list[Synapse],
                problems: list[Diagnostic]) -> Population | None:
    """The population of node ``name`` (None: the node has none, or a problem went to
    ``problems``); its incoming synapses are appended to ``syns``."""
    if isinstance(op, Input):
        return Population(name=name, shape=tuple(graph.shape(name)), kind="input")
    if _is_gate(graph, name):
        return Population(name=name, shape=tuple(graph.shape(name)), kind="maxpool",
                          origin=op.origin, gate=op, gate_src=graph.inputs(name)[0])
    if name != graph.readout_name and not _is_source(graph, name):
        if isinstance(op, MaxPool2d):
            problems.append(_maxpool_diag(name, op))
        return None
    if isinstance(op, Output):
        return None
    shape = tuple(graph.shape(name))
    params = _neuron_params(graph, name, op, shape, problems)
    if params is None:
        return None
    kind, theta, alpha, members = params
    # a CurrentMaxPool2d: the synapses deliver its input's value (the pooled candidates)
    pool = op if isinstance(op, CurrentMaxPool2d) else None
    at = graph.inputs(name)[0] if pool is not None else name
    if pool is not None and _is_source(graph, at):
        problems.append(Diagnostic(
            "a current max-pool reads synaptic currents, not the spikes of a population",
            node=name, origin=op.origin or None, hint="use --maxpool gate"))
        return None
    at_shape = tuple(graph.shape(at))
    try:
        bias, incoming = _incoming(graph, name, at)
    except CompileError as e:
        problems.extend(e.diagnostics)
        return None
    syns.extend(incoming)
    if pool is not None:
        per_channel = bias.reshape(at_shape[0], -1)
        if np.ptp(per_channel, axis=1).max() > 1e-9 * max(1.0, np.abs(per_channel).max()):
            problems.append(Diagnostic(
                "a current max-pool whose input bias varies within a channel (the bias "
                "must move behind the max)", node=name, origin=op.origin or None,
                hint="use --maxpool gate"))
            return None
        bias = np.broadcast_to(per_channel[:, :1, None], shape).astype(np.float64)
    return Population(name=name, shape=shape, kind=kind, threshold=theta,
                      alpha=alpha, bias=bias, origin=op.origin, members=members,
                      pool=pool, pool_in=at_shape if pool is not None else None)


def _neuron_params(graph: Graph, name: str, op: Any, shape: tuple[int, ...],
                   problems: list[Diagnostic]) -> tuple[str, Any, float, int] | None:
    """(kind, θ broadcast to ``shape``, α, members) of a spiking layer, or of the readout
    ("readout", None, 0, 1); None with a problem when the target cannot take it."""
    if name == graph.readout_name:
        if not isinstance(op, (Conv2d, Dense, Add, ReLU)) or (
                isinstance(op, Layer) and op.neuron is not None):
            problems.append(Diagnostic(f"readout {type(op).__name__} must be a non-spiking "
                                       "Conv/Dense/Add", node=name, origin=op.origin or None))
            return None
        return "readout", None, 0.0, 1
    kind = op.neuron.model
    try:
        loihi_neurons.get(kind, node=name, origin=op.origin or None)
    except CompileError as e:
        problems.extend(e.diagnostics)
        return None
    th = np.asarray(op.neuron.threshold, np.float64)
    theta = np.broadcast_to(th.reshape((-1,) + (1,) * (len(shape) - 1)), shape).copy()
    return kind, theta, float(op.neuron.alpha), int(op.neuron.members)


def _incoming(graph: Graph, name: str, at: str) -> tuple[np.ndarray, list[Synapse]]:
    """The bias (the value at ``at`` with every source at zero, float64) and the synapses into
    population ``name`` from the sources ``at`` reads: a conv-shaped branch as one conv synapse,
    an identity shortcut that is not conv-shaped as a diagonal dense matrix, anything else
    linearised (``_linearize``). A CompileError names what cannot be mapped."""
    at_shape = tuple(graph.shape(at))
    srcs = _sources(graph, at)
    zero = {s: torch.zeros((1, *graph.shape(s)), dtype=torch.float64) for s in srcs}
    bias = _evaluate(graph, at, zero).reshape(at_shape).numpy().astype(np.float64)
    out: list[Synapse] = []
    for root in _branches(graph, at):
        syn = _conv_branch(graph, root, at)
        if syn is not None:
            out.append(syn)
            continue
        shortcut = _is_source(graph, root) and root != at
        root_srcs = [root] if shortcut else _sources(graph, root) if root != at else srcs
        for s in root_srcs:
            if shortcut:  # identity shortcut that is not conv-shaped: a diagonal dense matrix
                th = _theta_per_channel(graph, root)
                n = int(np.prod(at_shape))
                diag = np.ones(n) if th is None else np.broadcast_to(
                    th.reshape((-1,) + (1,) * (len(at_shape) - 1)), at_shape).ravel()
                out.append(Synapse(src=s, dst=name, kind="dense", weight=np.diag(diag),
                                   note="identity"))
            else:
                out.append(_linearize(graph, root, at, s, root_srcs))
    for syn in out:
        syn.dst = name
    return bias, out


def _graded_problems(pops: dict[str, Population]) -> list[Diagnostic]:
    """A graded network carries deltas on every synapse: every layer must be graded, and
    neither a current max-pool nor a gate may meet graded deltas."""
    graded = sorted({p.kind for p in pops.values() if p.graded})
    if not graded:
        return []
    problems = []
    for name, p in pops.items():
        if p.spiking and not p.graded:
            problems.append(Diagnostic(
                f"neuron model {p.kind!r} in a {graded[0]} network", node=name,
                origin=p.origin or None, hint=f"use {graded[0]} for every layer"))
        if p.pool is not None:
            problems.append(Diagnostic(
                f"a current max-pool of {p.kind} neurons (graded deltas)", node=name,
                origin=p.origin or None, hint="use AvgPool"))
        if p.kind == "maxpool" and pops[p.gate_src].graded:
            problems.append(Diagnostic(
                f"MaxPool after a {pops[p.gate_src].kind} layer (graded deltas cannot be "
                "gated)", node=name, origin=p.origin or None, hint="use AvgPool"))
    return problems


def _set_depths(pops: dict[str, Population], syns: list[Synapse]) -> None:
    """Each population's depth (1 + the deepest source; a gate: its source's) and each
    synapse's alignment delay (depth − source depth − 1), so that all inputs of a population
    arrive in the same step."""
    for name, p in pops.items():
        ins = [s for s in syns if s.dst == name]
        if p.kind == "maxpool":
            p.depth = pops[p.gate_src].depth
        elif p.kind != "input":
            p.depth = max(pops[s.src].depth + 1 for s in ins)
            for s in ins:
                s.delay = p.depth - pops[s.src].depth - 1


def split_wide_synapses(plan: LoihiPlan, graph: Graph, axons: int = AXONS_PER_CORE) -> None:
    """Split every dense synapse whose neurons have more than ``axons`` inputs.

    A Loihi core receives at most ``axons`` distinct inputs, so a neuron with fan-in F > axons
    cannot get all its synapses on one core. The source units are cut into k = ⌈n/axons⌉
    contiguous blocks of at most ``axons`` (n = source units with a nonzero weight); each block
    becomes its own synapse (the same fixed-point weights, zero outside the block), placed on
    its own core(s), and the k partial currents are summed at the destination's input:

        I_B = Σ_j W[:, block_j] · s[block_j]  =  W · s       (integer sums: exact)

    In Lava the k Dense processes all connect to the population's ``a_in``, which sums what
    arrives; the GPU simulator's Loihi mode sums the same synapses. Convolutions are not split
    (their fan-in is kernel × input channels; see ``resources``). Records go to ``plan.splits``.
    """
    out: list[Synapse] = []
    for s in plan.syns:
        nz = s.weight_int != 0 if s.weight_int is not None else s.weight != 0
        fan_in = int(nz.sum(1).max()) if s.kind == "dense" and nz.size else 0
        if fan_in <= axons:
            out.append(s)
            continue
        cols = np.flatnonzero(nz.any(0))
        k = -(-len(cols) // axons)
        for j, block in enumerate(np.array_split(cols, k)):
            keep = np.zeros(nz.shape[1], bool)
            keep[block] = True
            part = Synapse(src=s.src, dst=s.dst, kind="dense", weight=np.where(keep, s.weight, 0.0),
                           delay=s.delay, weight_int=np.where(keep, s.weight_int, 0),
                           note=f"{s.note} part {j + 1}/{k}")
            part.connections = _connections(graph, part)
            out.append(part)
        plan.splits.append({"synapse": f"{s.src}->{s.dst}", "fan_in": fan_in, "parts": k,
                            "inputs_per_part": int(-(-len(cols) // k)),
                            "axons_per_core_estimate": axons})
    plan.syns = out


# ------------------------------------------------------------------------------ shared helpers
def gate_indices(pop: Population, src_shape: tuple[int, ...],
                 op: MaxPool2d | CurrentMaxPool2d | None = None) -> np.ndarray:
    """(H'·W', kH·kW) indices into the (-inf/0) padded H·W plane of ``pop.gate_src`` (or of
    the candidates of ``op``): the window of each output position, in row-major order (the
    tie-break order)."""
    op = pop.gate if op is None else op
    _, h, w = src_shape
    t, l, b, r = op.padding
    wp = w + l + r
    _, ho, wo = pop.shape
    kh, kw = op.kernel
    rows = (np.arange(ho)[:, None] * op.stride[0] + np.arange(kh)[None, :] * op.dilation[0])
    cols = (np.arange(wo)[:, None] * op.stride[1] + np.arange(kw)[None, :] * op.dilation[1])
    idx = rows[:, None, :, None] * wp + cols[None, :, None, :]  # (ho, wo, kh, kw)
    return idx.reshape(ho * wo, kh * kw)


def input_int(plan: LoihiPlan, x: np.ndarray, frames: bool) -> tuple[np.ndarray, int]:
    """``plan.input_int`` of samples (N, *in), or of frame sequences (N, T, *in) frame by
    frame (the same rounding and clipping per frame)."""
    if not frames:
        return plan.input_int(x)
    q, clipped = plan.input_int(x.reshape(-1, *x.shape[2:]))
    return q.reshape(x.shape), clipped


def refuse_delta_frames(plan: LoihiPlan, frames: bool) -> None:
    """Frame input (one frame per step) into a sigma-delta network is not built: its Input
    would have to send the frame-to-frame deltas."""
    if frames and plan.delta_coded:
        raise CompileError("event frames into a sigma-delta network", [Diagnostic(
            "the loihi target sends a sigma-delta network's input once, as a delta; frames "
            "that change every step are not supported", hint="use another --neuron")])


def fanout(plan: LoihiPlan, name: str) -> np.ndarray:
    """Synapses leaving each unit of population ``name`` (torch-flattened), over its outgoing
    synapses; a unit behind a max-pool gate counts the gate's synapses of every window that
    contains it (an upper bound, as the GPU simulator counts it)."""
    p = plan.pops[name]
    total = np.zeros(p.size)
    for s in plan.syns:
        if s.src != name:
            continue
        if s.kind == "dense":
            total += column_nonzeros(s.weight_int)
        else:
            with torch.enable_grad():
                x = torch.zeros((1, *p.shape), dtype=torch.float64, requires_grad=True)
                w = torch.from_numpy((s.weight_int != 0).astype(np.float64))
                torch.nn.functional.conv2d(x, w, None, s.stride, s.padding, s.dilation,
                                           s.groups).sum().backward()
            total += x.grad.numpy().ravel()
    for g in plan.pops.values():
        if g.kind == "maxpool" and g.gate_src == name:
            fan_g = torch.from_numpy(fanout(plan, g.name).reshape(1, *g.shape))
            op = g.gate
            t, l, b, r = op.padding
            with torch.enable_grad():
                x = torch.zeros((1, *p.shape), dtype=torch.float64, requires_grad=True)
                ones = torch.ones((p.shape[0], 1, *op.kernel), dtype=torch.float64)
                xp = torch.nn.functional.pad(x, (l, r, t, b))
                y = torch.nn.functional.conv2d(xp, ones, None, op.stride, 0, op.dilation,
                                               p.shape[0])
                (y * fan_g).sum().backward()
            total += x.grad.numpy().ravel()
    return total
