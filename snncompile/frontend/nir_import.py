"""NIR frontend: a NIR graph (``.nir`` file) straight into the spiking IR, no conversion passes.

The only module that reads ``nir``. NIR (package ``nir`` 1.0.8) nodes are continuous-time;
we read them with dt = 1 step, and several edges into one node are summed (NIR's fan-in).
Mapping, NIR → ours (``snncompile.backends.nir_export`` writes the same mapping back):

- ``Input`` → Input (``input_type`` without a batch axis); ``Output`` → Output.
- ``Conv2d`` → Conv2d (padding int, (h, w), "valid" or "same"), ``Affine`` / ``Linear`` → Dense.
- ``AvgPool2d`` → AvgPool2d; ``SumPool2d`` → a depthwise Conv2d with ones (no neuron).
- ``Flatten`` over every axis (``start_dim=0`` without the batch axis) → Flatten.
- ``IF(r, v_threshold θ, v_reset)`` → the neuron of the layer feeding it (a Conv2d or Dense
  that feeds nothing else), of an Add when several edges enter it (residual fan-in), else
  of an identity-synapse ReLU layer. NIR's IF emits 1 per spike, ours emit c·s where c is the
  neuron threshold: an IF followed only by ``Scale(c)`` emits c·s, an IF without one emits s
  (c = 1). With v̇ = R·I at dt = 1 (v += r·I), "v ≥ θ, emit c" equals "v' ≥ c" for
  v' = v·c/θ, so the layer's weights and bias are multiplied by k = r·c/θ and its threshold is
  c. k = 1 exactly (our own files: c = θ, r = 1; sinabs files: θ = 1) keeps the weights bit
  for bit; other k cost one float rounding per weight. θ, c and r must be uniform over each
  channel (ours are per channel).
- Reset: metadata ``reset="subtract"`` → ``if``; ``reset="zero"`` or none (NIR's own
  reset-to-value, v_reset = 0) → ``if-hard``; ``reset=`` argument overrides the file (sinabs
  reads ``nir.IF`` as subtractive: load its files with ``reset="subtract"``). A non-zero
  v_reset with reset-to-value is refused.
- Initial potential: metadata ``alpha`` (ours), else ``v_init / θ`` when uniform, else 0 (NIR
  states start at zero).
- The readout: ``Affine``/``Linear``/``Conv2d`` → ``I`` → ``Output`` (I integrates: v̇ = r·I)
  or straight → ``Output`` (a per-step current, which our readout integrates; the prediction
  is the argmax of the running sum either way).

NIR fires at v > θ and we fire at v ≥ θ: spikes differ only when v hits θ exactly.
Refused, every one listed in one CompileError: LIF, LI, CubaLIF, CubaLI (no leak in our
neuron models), Threshold, Delay, Conv1d, nested NIRGraph, recurrent edges, a spiking
output, a Scale not after an IF, an I not before the Output, several Inputs or Outputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np

from snncompile.ir.diagnostics import CompileError, Diagnostic
from snncompile.ir.graph import Graph
from snncompile.ir.nodes import (
    Add,
    AvgPool2d,
    Conv2d,
    Dense,
    Flatten,
    Input,
    Layer,
    Neuron,
    Output,
    ReLU,
)
from snncompile.ir.verify import verify

SUPPORTED = ("Input", "Output", "Affine", "Linear", "Conv2d", "AvgPool2d", "SumPool2d", "Flatten",
             "IF", "Scale", "I")
RESETS = ("subtract", "zero")
_WHY = {"LIF": "leaky neurons (our neuron models do not leak)", "LI": "a leaky integrator",
        "CubaLIF": "current-based leaky neurons", "CubaLI": "a current-based leaky integrator",
        "NIRGraph": "a nested subgraph", "Delay": "synaptic delays"}


def _nir() -> Any:
    try:
        import nir
    except ModuleNotFoundError:
        raise CompileError("cannot read NIR", [Diagnostic(
            "the 'nir' package is not installed", hint="pip install nir==1.0.8")]) from None
    return nir


def read_nir(path: str | Path) -> Any:
    """The ``nir.NIRGraph`` in ``path`` (a one-line CompileError if it cannot be read)."""
    nir = _nir()
    p = Path(path)
    if not p.is_file():
        raise CompileError("cannot read NIR", [Diagnostic(f"{p}: no such file")])
    try:
        return nir.read(p)
    except (OSError, KeyError, ValueError, TypeError, AttributeError) as e:  # a damaged file
        raise CompileError("cannot read NIR", [Diagnostic(
            f"{p}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")]) from None


def _arr(v: Any) -> np.ndarray:
    if hasattr(v, "detach"):  # torch tensors from an in-memory graph
        v = v.detach().cpu().numpy()
    return np.asarray(v)


def _per_channel(v: Any, shape: tuple[int, ...], what: str, node: str,
                 bad: list[Diagnostic]) -> np.ndarray | None:
    """A per-neuron NIR array (or scalar) → one float64 value per channel, if uniform."""
    a = _arr(v).astype(np.float64)
    try:
        a = np.broadcast_to(a, shape)
    except ValueError:
        bad.append(Diagnostic(f"{what} has shape {a.shape}, the layer {shape}", node=node))
        return None
    flat = a.reshape(shape[0], -1)
    if not np.all(flat == flat[:, :1]):
        bad.append(Diagnostic(f"{what} varies within a channel (ours are per channel)", node=node))
        return None
    return flat[:, 0]


def _pair(v: Any) -> tuple[int, int]:
    a = np.atleast_1d(_arr(v)).astype(int).ravel()
    return (int(a[0]), int(a[0])) if a.size == 1 else (int(a[0]), int(a[1]))


def _conv_padding(node: Any, kernel: tuple[int, int],
                  dil: tuple[int, int]) -> tuple[int, int, int, int]:
    p = node.padding
    if isinstance(p, str):
        if p == "valid":
            return (0, 0, 0, 0)
        # "same" (stride 1): torch puts the odd pixel at the bottom/right
        th, tw = dil[0] * (kernel[0] - 1), dil[1] * (kernel[1] - 1)
        return (th // 2, tw // 2, th - th // 2, tw - tw // 2)
    ph, pw = _pair(p)
    return (ph, pw, ph, pw)


def load_nir(source: str | Path | Any, *, reset: str | None = None) -> Graph:
    """NIR file (or ``nir.NIRGraph``) → verified spiking IR (see the module docstring).

    ``reset``: None reads each IF's metadata (no metadata: NIR's reset-to-value);
    "subtract" or "zero" applies to every IF. Steps: every node type supported, the edges
    name known nodes and form a feed-forward graph with one Input and one Output
    (``_digraph``); each node, in a fixed topological order, by its reader (``_Reader``);
    every problem at once; the verifier.
    """
    nir = _nir()
    if reset is not None and reset not in RESETS:
        raise CompileError("bad option", [Diagnostic(f"reset={reset!r}; {' | '.join(RESETS)}")])
    g = source if isinstance(source, nir.NIRGraph) else read_nir(source)
    nodes: dict[str, Any] = dict(g.nodes)
    kind = {k: type(v).__name__ for k, v in nodes.items()}
    unsupported = [f"{t} at node {k}" + (f" ({_WHY[t]})" if t in _WHY else "")
                   for k, t in kind.items() if t not in SUPPORTED]
    if unsupported:  # every unsupported node in one line, like the ONNX frontend
        raise CompileError("unsupported NIR node", [Diagnostic(
            ", ".join(unsupported), hint=f"supported: {', '.join(SUPPORTED)}")])
    dg = _digraph(g.edges, nodes, kind)
    r = _Reader(nodes, kind, {k: sorted(dg.predecessors(k)) for k in nodes},
                {k: sorted(dg.successors(k)) for k in nodes}, reset)
    for k in nx.lexicographical_topological_sort(dg):
        r.read(k)
    if r.bad:
        raise CompileError("unsupported NIR graph", r.bad)
    verify(r.ir)
    return r.ir


def _digraph(edges: Any, nodes: dict[str, Any], kind: dict[str, str]) -> nx.DiGraph:
    """The NIR graph as a networkx DiGraph, refused when an edge names an unknown node, when
    it has a cycle, or when it has other than one Input and one Output."""
    bad: list[Diagnostic] = []
    dg = nx.DiGraph()
    dg.add_nodes_from(nodes)
    for src, dst in edges:
        for end in (src, dst):
            if end not in nodes:
                bad.append(Diagnostic(f"edge ({src}, {dst}) names an unknown node {end!r}"))
        dg.add_edge(src, dst)
    if bad:
        raise CompileError("bad NIR graph", bad)
    if not nx.is_directed_acyclic_graph(dg):
        cyc = " -> ".join(a for a, _ in nx.find_cycle(dg))
        raise CompileError("unsupported NIR graph", [Diagnostic(
            f"recurrent edges ({cyc}); snn-compile reads feed-forward networks")])
    ins = [k for k, t in kind.items() if t == "Input"]
    outs = [k for k, t in kind.items() if t == "Output"]
    if len(ins) != 1 or len(outs) != 1:
        raise CompileError("unsupported NIR graph", [Diagnostic(
            f"{len(ins)} Input and {len(outs)} Output nodes; snn-compile reads one of each")])
    return dg


@dataclass
class _Reader:
    """NIR nodes -> IR nodes, one at a time in topological order. ``val``: NIR node -> the IR
    node holding its value; ``absorbed``: the Scale nodes folded into the IF before them;
    ``bad``: every problem met. One reader method per NIR node type (``READERS``)."""

    nodes: dict[str, Any]
    kind: dict[str, str]
    preds: dict[str, list[str]]
    succs: dict[str, list[str]]
    reset: str | None
    ir: Graph = field(default_factory=Graph)
    val: dict[str, str] = field(default_factory=dict)
    absorbed: set[str] = field(default_factory=set)
    bad: list[Diagnostic] = field(default_factory=list)

    def operand(self, k: str) -> str | None:
        """The IR value of everything flowing into NIR node ``k`` (fan-in summed by an Add;
        for an IF, the Add that will carry its neuron takes our name from the metadata)."""
        ps = self.preds[k]
        if not ps:
            self.bad.append(Diagnostic("no input edge", node=k))
            return None
        if any(p not in self.val for p in ps):
            return None  # an upstream problem was reported already
        if len(ps) == 1:
            return self.val[ps[0]]
        base = _our_name(self.nodes[k]) if self.kind[k] == "IF" else None
        return self.ir.add(self.ir.unique(base or f"{k}_sum"), Add(origin=f"{k} fan-in"),
                           [self.val[p] for p in ps])

    def read(self, k: str) -> None:
        """NIR node ``k`` into the IR (``val[k]`` when it has a value)."""
        node, t = self.nodes[k], self.kind[k]
        origin = f"{k} ({t})"
        if t == "Input":
            shape = tuple(int(d) for d in _arr(node.input_type["input"]).ravel())
            self.val[k] = self.ir.add(self.ir.unique(k), Input(shape=shape, origin=origin))
            return
        if t == "Scale" and k in self.absorbed:  # the IF's layer already emits c·s
            self.val[k] = self.val[self.preds[k][0]]
            return
        if t == "Output" and any(self.kind[p] in ("IF", "Scale") for p in self.preds[k]):
            self.bad.append(Diagnostic("a spiking output; snn-compile reads the prediction "
                                       "from a non-spiking readout (Affine/Conv2d [→ I] → "
                                       "Output)", node=k))
            return
        src = self.operand(k)
        if src is None:
            return
        out = getattr(self, READERS[t])(k, node, src, origin)
        if out is not None:
            self.val[k] = out

    def affine(self, k: str, node: Any, src: str, origin: str) -> str | None:
        w = _arr(node.weight).astype(np.float32)
        b = _arr(node.bias).astype(np.float32) if self.kind[k] == "Affine" else None
        if b is not None:
            b = np.broadcast_to(b, (w.shape[0],)).astype(np.float32)
        return self.ir.add(self.ir.unique(k), Dense(weight=w, bias=b, origin=origin), [src])

    def conv2d(self, k: str, node: Any, src: str, origin: str) -> str | None:
        w = _arr(node.weight).astype(np.float32)
        stride, dil = _pair(node.stride), _pair(node.dilation)
        if isinstance(node.padding, str) and node.padding == "same" and stride != (1, 1):
            self.bad.append(Diagnostic("padding 'same' with a stride other than 1", node=k))
            return None
        bias = getattr(node, "bias", None)
        b = None if bias is None else np.broadcast_to(_arr(bias).astype(np.float32),
                                                      (w.shape[0],)).astype(np.float32)
        return self.ir.add(self.ir.unique(k), Conv2d(
            weight=w, bias=b, stride=stride, padding=_conv_padding(node, w.shape[2:], dil),
            dilation=dil, groups=int(node.groups), origin=origin), [src])

    def avgpool2d(self, k: str, node: Any, src: str, origin: str) -> str | None:
        ph, pw = _pair(node.padding)
        pool = AvgPool2d(kernel=_pair(node.kernel_size), stride=_pair(node.stride),
                         padding=(ph, pw, ph, pw), origin=origin)
        return self.ir.add(self.ir.unique(k), pool, [src])

    def sumpool2d(self, k: str, node: Any, src: str, origin: str) -> str | None:
        ph, pw = _pair(node.padding)
        kh, kw = _pair(node.kernel_size)
        c = self.ir.shape(src)[0]
        ones = np.ones((c, 1, kh, kw), np.float32)  # sum pooling = depthwise conv with ones
        conv = Conv2d(weight=ones, stride=_pair(node.stride), padding=(ph, pw, ph, pw),
                      groups=c, origin=origin)
        return self.ir.add(self.ir.unique(k), conv, [src])

    def flatten(self, k: str, node: Any, src: str, origin: str) -> str | None:
        shape = self.ir.shape(src)
        start, end = int(node.start_dim), int(node.end_dim)
        end = end + len(shape) if end < 0 else end
        if len(shape) > 1 and (start != 0 or end != len(shape) - 1):
            self.bad.append(Diagnostic(f"Flatten of axes {start}..{end} of a {shape} value "
                                       "(axes without the batch); snn-compile flattens every "
                                       "axis", node=k))
            return None
        return self.ir.add(self.ir.unique(k), Flatten(origin=origin), [src])

    def if_(self, k: str, node: Any, src: str, origin: str) -> str | None:
        out = _if_layer(self.ir, k, node, src, self.preds[k], self.succs, self.nodes,
                        self.kind, self.reset, self.absorbed, self.bad)
        return out if out != "" else None

    def scale(self, k: str, node: Any, src: str, origin: str) -> str | None:
        self.bad.append(Diagnostic("a Scale that does not follow an IF (ours scale spikes "
                                   "only)", node=k))
        return None

    def integrator(self, k: str, node: Any, src: str, origin: str) -> str | None:
        if [self.kind[s] for s in self.succs[k]] != ["Output"]:
            self.bad.append(Diagnostic("an integrator I that does not feed the Output", node=k))
            return None
        op = self.ir.op(src)
        if not isinstance(op, (Dense, Conv2d)) or op.neuron is not None \
                or len(self.ir.users(src)):
            self.bad.append(Diagnostic("an integrator I after something other than a linear "
                                       "Affine/Linear/Conv2d layer", node=k))
            return None
        r = _per_channel(node.r, self.ir.shape(src), "I.r", k, self.bad)
        if r is not None and np.any(r != 1):
            _scale_layer(self.ir, src, r)
        return src

    def output(self, k: str, node: Any, src: str, origin: str) -> str | None:
        op = self.ir.op(src)
        if isinstance(op, Layer) and op.neuron is not None:
            self.bad.append(Diagnostic("a spiking output; the readout must not spike", node=k))
            return None
        if not isinstance(op, (Dense, Conv2d, Add)):
            self.bad.append(Diagnostic(f"the Output is fed by {type(op).__name__}; the "
                                       "readout must be an Affine/Linear/Conv2d layer", node=k))
            return None
        self.ir.add(self.ir.unique(k), Output(origin=origin), [src])
        return None


#: NIR node type -> the ``_Reader`` method that reads it
READERS = {"Affine": "affine", "Linear": "affine", "Conv2d": "conv2d",
           "AvgPool2d": "avgpool2d", "SumPool2d": "sumpool2d", "Flatten": "flatten",
           "IF": "if_", "Scale": "scale", "I": "integrator", "Output": "output"}


def _our_name(node: Any) -> str | None:
    """The IR name our exporter recorded (metadata ``snncompile_name``), if any."""
    name = (getattr(node, "metadata", None) or {}).get("snncompile_name")
    if isinstance(name, bytes):
        name = name.decode()
    return str(name) if name else None


def _scale_layer(ir: Graph, name: str, k: np.ndarray) -> None:
    """Multiply the layer's weights and bias of each output channel by k[c] (float32)."""
    op = ir.op(name)
    kk = k.astype(np.float32)
    w = (op.weight * kk.reshape((-1,) + (1,) * (op.weight.ndim - 1))).astype(np.float32)
    b = None if op.bias is None else (op.bias * kk).astype(np.float32)
    ir.replace(name, weight=w, bias=b)


def _if_layer(ir: Graph, k: str, node: Any, src: str, preds: list[str], succs: dict[str, list[str]],
              nodes: dict[str, Any], kind: dict[str, str], reset: str | None, absorbed: set[str],
              bad: list[Diagnostic]) -> str:
    """Attach an IR neuron for NIR IF ``k`` (see the module docstring). Returns the IR node whose
    output carries the IF's (scaled) spikes, or "" after reporting a problem."""
    shape = ir.shape(src)
    meta = dict(getattr(node, "metadata", None) or {})
    theta = _per_channel(node.v_threshold, shape, "v_threshold", k, bad)
    r = _per_channel(node.r, shape, "r", k, bad)
    if theta is None or r is None:
        return ""
    if np.any(theta <= 0):
        bad.append(Diagnostic("v_threshold must be > 0", node=k))
        return ""
    mode = reset or meta.get("reset")
    if isinstance(mode, bytes):
        mode = mode.decode()
    v_reset = _arr(node.v_reset) if getattr(node, "v_reset", None) is not None else np.zeros(1)
    if mode is None:
        mode = "zero"
    if mode not in RESETS:
        bad.append(Diagnostic(f"IF metadata reset={mode!r}; snn-compile reads {', '.join(RESETS)}",
                              node=k))
        return ""
    if mode == "zero" and np.any(v_reset != 0):
        bad.append(Diagnostic("IF resets to a non-zero v_reset (ours reset to 0 or subtract θ)",
                              node=k))
        return ""
    # the output scale c: a following Scale (the IF's only user) is absorbed
    c = np.ones_like(theta)
    users = succs[k]
    if len(users) == 1 and kind[users[0]] == "Scale" and len(nodes) and \
            sorted(n for n in nodes if users[0] in succs.get(n, [])) == [k]:
        sc = _per_channel(nodes[users[0]].scale, shape, "Scale.scale", users[0], bad)
        if sc is None:
            return ""
        if np.any(sc <= 0):
            bad.append(Diagnostic("a Scale <= 0 after an IF", node=users[0]))
            return ""
        c = sc
        absorbed.add(users[0])
    ratio = r * c / theta
    alpha = meta.get("alpha")
    if alpha is None and meta.get("v_init") is not None:
        a = _per_channel(meta["v_init"], shape, "metadata v_init", k, bad)
        uniform = a is not None and np.allclose(a / theta, a[0] / theta[0])
        alpha = float(a[0] / theta[0]) if uniform else None
        if alpha is None:
            bad.append(Diagnostic("metadata v_init is not one fraction of v_threshold", node=k))
            return ""
    alpha = float(alpha) if alpha is not None else 0.0
    if not 0.0 <= alpha <= 1.0:
        bad.append(Diagnostic(f"initial potential {alpha}·θ outside [0, θ]", node=k))
        return ""
    neuron = Neuron(model="if" if mode == "subtract" else "if-hard",
                    threshold=c.astype(np.float32), alpha=alpha)
    op = ir.op(src)
    own = (len(preds) == 1 and isinstance(op, (Conv2d, Dense)) and op.neuron is None
           and len(succs[preds[0]]) == 1 and not ir.users(src))
    if own:
        if np.any(ratio != 1):
            _scale_layer(ir, src, ratio)
        ir.replace(src, neuron=neuron)
        out = src
    else:
        if np.any(ratio != 1):
            bad.append(Diagnostic("an IF whose r·scale/v_threshold is not 1 after a node without "
                                  "weights (nothing to fold the factor into)", node=k))
            return ""
        if isinstance(op, Add) and op.neuron is None and len(preds) > 1:
            ir.replace(src, neuron=neuron)
            out = src
        else:
            out = ir.add(ir.unique(_our_name(node) or k), ReLU(neuron=neuron, origin=f"{k} (IF)"),
                         [src])
    return out
