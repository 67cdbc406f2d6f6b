"""``--export nir``: the spiking IR as a NIR graph (Neuromorphic Intermediate Representation).

NIR (Pedersen et al., Nature Communications 15, 8122 (2024); package ``nir`` 1.0.8) describes a
network as continuous-time nodes joined by edges; several edges into one node are summed. We
write the discrete network we simulate with dt = 1 step. Mapping, ours → NIR (the import,
``snncompile.frontend.nir_import``, reads every one of them back to the same IR):

=====================================  ================================================
ours                                    NIR
=====================================  ================================================
Input (C, H, W)                         ``Input(input_type=(C, H, W))``
Conv2d (symmetric padding)              ``Conv2d`` (bias zeros when we have none)
Dense                                   ``Affine`` (bias zeros when we have none)
AvgPool2d (symmetric padding)           ``AvgPool2d``
Flatten                                 ``Flatten(start_dim=0, end_dim=-1)`` (no batch axis)
Add (residual)                          no node: each input gets an edge to each user
                                        (NIR sums fan-in); with a neuron, the edges go
                                        into its ``IF``
Identity, OutputActivation              no node (edges pass through)
neuron ``if`` (threshold θ_c)           ``IF(r=1, v_threshold=θ, v_reset=0)`` with metadata
                                        ``reset="subtract"``, then ``Scale(θ)`` when any
                                        θ ≠ 1 (NIR spikes are 1; ours weigh θ)
neuron ``if-hard``                      the same with metadata ``reset="zero"`` (NIR's
                                        own reset-to-value with v_reset = 0)
v(0) = α·θ                              metadata ``alpha`` (float) and ``v_init`` (array)
readout (the op feeding Output)         its synapse node, then ``I(r=1)`` (v̇ = I: the
                                        integrated potential), then ``Output``;
                                        ``readout="current"`` leaves ``I`` out (for
                                        importers without ``nir.I``: the Output then
                                        carries the per-step current, whose running sum
                                        is our potential)
=====================================  ================================================

Refused by name (NIR cannot express them; no file is written): the spiking max-pool gate,
``signed-if`` (negative spikes), ``gn`` (several spikes per step), ``bistable`` (phase
windows), ``sigma-delta`` (graded spikes), Concat, asymmetric padding, AvgPool2d without the
padding in its divisor.

Semantics NIR leaves open, recorded in each IF's metadata: NIR's IF resets to ``v_reset``
(NIR PR #129) and fires when v > θ; ours fires when v ≥ θ and (model ``if``) subtracts θ.
sinabs reads ``nir.IF`` as subtractive too; NIR's own reading is the ``reset="zero"`` one.
Array fields are per neuron (the layer's output shape), as NIR requires.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from snncompile.ir.diagnostics import CompileError, Diagnostic
from snncompile.ir.graph import Graph
from snncompile.ir.nodes import (
    Add,
    AvgPool2d,
    Conv2d,
    Dense,
    Flatten,
    Identity,
    Input,
    Layer,
    Output,
    OutputActivation,
    ReLU,
)

#: our neuron model -> the value of the IF metadata "reset"
RESETS = {"if": "subtract", "if-hard": "zero"}
#: tuning may choose signed IF; asking for NIR when converting keeps plain IF
NEURON_HINT = ("NIR export supports --neuron if, if-hard; convert with --export nir (Python: "
               "export=\"nir\" or neuron=\"if\") so that the tuner keeps IF neurons")
REFUSED_NEURONS = {
    "signed-if": "negative spikes (NIR spikes are 0 or 1)",
    "gn": "group neurons send up to M spikes per step",
    "bistable": "bistable phase windows have no NIR node",
    "sigma-delta": "graded sigma-delta spikes have no NIR node",
}
READOUTS = ("integrator", "current")


def _nir() -> Any:
    try:
        import nir
    except ModuleNotFoundError:
        raise CompileError("cannot export nir", [Diagnostic(
            "the 'nir' package is not installed", hint="pip install nir==1.0.8")]) from None
    return nir


def _key(name: str) -> str:
    """NIR node names also become torch module names in nirtorch: [A-Za-z0-9_] only."""
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def _pad2(pad: tuple[int, int, int, int], node: str, origin: str,
          bad: list[Diagnostic]) -> tuple[int, int]:
    top, left, bottom, right = pad
    if (top, left) != (bottom, right):
        bad.append(Diagnostic(f"asymmetric padding {pad} (NIR pads both sides alike)", node=node,
                              origin=origin or None))
    return int(top), int(left)


def _per_neuron(per_channel: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """(C,) → the layer's output shape (C, ...), float32."""
    v = np.asarray(per_channel, np.float32).reshape((-1,) + (1,) * (len(shape) - 1))
    return np.broadcast_to(v, shape).astype(np.float32)


def check_exportable(graph: Graph) -> list[Diagnostic]:
    """Every reason ``graph`` cannot be written as NIR (empty: it can)."""
    bad: list[Diagnostic] = []
    readout = graph.readout_name
    for name, op in graph.topo():
        origin = op.origin or None
        if isinstance(op, Layer) and op.neuron is not None and op.neuron.model not in RESETS:
            why = REFUSED_NEURONS.get(op.neuron.model, "no NIR node")
            bad.append(Diagnostic(f"neuron model {op.neuron.model!r}: {why}", node=name,
                                  origin=origin, hint=NEURON_HINT))
        elif isinstance(op, ReLU) and op.neuron is None:
            bad.append(Diagnostic("a ReLU without a neuron (ANN form)", node=name, origin=origin))
        elif not isinstance(op, (Input, Output, Conv2d, Dense, Add, ReLU, AvgPool2d, Flatten,
                                 Identity, OutputActivation)):
            what = {"MaxPool2d": "the spiking max-pool gate",
                    "CurrentMaxPool2d": "the current max-pool (CurrentMaxPool2d: a max over "
                                        "cumulative currents)"}.get(type(op).__name__,
                                                                     type(op).__name__)
            bad.append(Diagnostic(f"{what} has no NIR node", node=name, origin=origin,
                                  hint="NIR export supports Conv2d, Dense, AvgPool2d, Flatten, "
                                       "Add"))
        if isinstance(op, Conv2d):
            _pad2(op.padding, name, op.origin, bad)
        if isinstance(op, AvgPool2d):
            _pad2(op.padding, name, op.origin, bad)
            if any(op.padding) and not op.count_include_pad:
                bad.append(Diagnostic("average pool that leaves padding out of its divisor",
                                      node=name, origin=origin))
    if isinstance(graph.op(readout), Layer) and graph.op(readout).neuron is not None:
        bad.append(Diagnostic("the readout spikes", node=readout))
    return bad


def refuse_unexportable(graph: Graph) -> None:
    """Raise the CompileError ``export_nir`` would raise, before a backend runs anything."""
    bad = check_exportable(graph)
    if bad:
        raise CompileError("cannot export nir", bad)


def to_nir(graph: Graph, *, readout: str = "integrator") -> Any:
    """The spiking IR as a ``nir.NIRGraph`` (see the module docstring for the mapping): the
    NIR nodes of each IR node in topological order (``_export_node``)."""
    nir = _nir()
    if readout not in READOUTS:
        raise CompileError("bad option", [Diagnostic(
            f"readout={readout!r}; {' | '.join(READOUTS)}")])
    refuse_unexportable(graph)
    nodes: dict[str, Any] = {}
    edges: list[tuple[str, str]] = []
    #: IR name -> the NIR nodes whose (summed) outputs are that IR value
    value: dict[str, list[str]] = {}
    for name, op in graph.topo():
        _export_node(nir, graph, name, op, readout, nodes, edges, value)
    meta = {"producer": "snn-compile", "dt": 1.0, "readout": readout,
            "output": "integrated readout potential" if readout == "integrator"
            else "per-step readout current (sum over steps = readout potential)"}
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta)


def _export_node(nir: Any, graph: Graph, name: str, op: Any, readout: str,
                 nodes: dict[str, Any], edges: list[tuple[str, str]],
                 value: dict[str, list[str]]) -> None:
    """Add the NIR nodes and edges of IR node ``name``: its synapse (``_synapse_node``; an
    Add or ReLU is an identity synapse whose inputs' edges go straight on), then its IF neuron
    and threshold scale, or the readout's integrator; ``value[name]``: the NIR nodes whose
    summed outputs are its value."""
    key = _key(name)
    shape = tuple(graph.shape(name))
    meta: dict[str, Any] = {"snncompile_name": name}
    if op.origin:
        meta["origin"] = op.origin
    srcs = [s for i in graph.inputs(name) for s in value[i]]
    if isinstance(op, Input):
        nodes[key] = nir.Input(input_type=np.array(shape), metadata=meta)
        value[name] = [key]
        return
    if isinstance(op, Output):
        nodes[key] = nir.Output(output_type=np.array(shape), metadata=meta)
        edges.extend((s, key) for s in value[graph.inputs(name)[0]])
        return
    if isinstance(op, (Identity, OutputActivation)):
        value[name] = srcs
        return
    node = _synapse_node(nir, graph, name, op, meta)
    syn = srcs
    if node is not None:
        nodes[key] = node
        edges.extend((s, key) for s in srcs)
        syn = [key]
    if isinstance(op, Layer) and op.neuron is not None:
        syn = _neuron_nodes(nir, name, key, op.neuron, shape, syn, nodes, edges)
    elif name == graph.readout_name and readout == "integrator":
        i_key = f"{key}_integrator"
        nodes[i_key] = nir.I(r=np.ones(shape, np.float32), metadata={
            "snncompile_name": name, "why": "readout: prediction = argmax of v, v(t) = Σ I"})
        edges.extend((s, i_key) for s in syn)
        syn = [i_key]
    value[name] = syn


def _synapse_node(nir: Any, graph: Graph, name: str, op: Any, meta: dict[str, Any]) -> Any:
    """The NIR node of a Conv2d (``Conv2d``), Dense (``Affine``), AvgPool2d or Flatten (None
    for an Add or ReLU); quantized weights note their bits in ``meta``."""
    if isinstance(op, (Conv2d, Dense)) and op.quant is not None:
        meta["weight_bits"] = int(op.quant.bits)
    if isinstance(op, Conv2d):
        in_shape = graph.shape(graph.inputs(name)[0])
        bias = op.bias if op.bias is not None else np.zeros(op.weight.shape[0], np.float32)
        return nir.Conv2d(
            input_shape=(int(in_shape[1]), int(in_shape[2])), weight=np.array(op.weight),
            stride=tuple(op.stride), padding=_pad2(op.padding, name, op.origin, []),
            dilation=tuple(op.dilation), groups=int(op.groups), bias=np.array(bias),
            metadata=meta)
    if isinstance(op, Dense):
        bias = op.bias if op.bias is not None else np.zeros(op.weight.shape[0], np.float32)
        return nir.Affine(weight=np.array(op.weight), bias=np.array(bias), metadata=meta)
    if isinstance(op, AvgPool2d):
        return nir.AvgPool2d(kernel_size=np.array(op.kernel), stride=np.array(op.stride),
                             padding=np.array(_pad2(op.padding, name, op.origin, [])),
                             metadata=meta)
    if isinstance(op, Flatten):
        in_shape = graph.shape(graph.inputs(name)[0])
        return nir.Flatten(input_type={"input": np.array(in_shape)}, start_dim=0,
                           end_dim=-1, metadata=meta)
    return None


def _neuron_nodes(nir: Any, name: str, key: str, n: Any, shape: tuple[int, ...],
                  syn: list[str], nodes: dict[str, Any], edges: list[tuple[str, str]]
                  ) -> list[str]:
    """A layer's IF neuron fed by ``syn`` and, when θ ≠ 1, the Scale by θ behind it (a spike
    weighs its threshold); returns the node that carries the layer's value."""
    theta = _per_neuron(n.threshold, shape)
    if_key = f"{key}_if"
    nodes[if_key] = nir.IF(
        r=np.ones(shape, np.float32), v_threshold=theta,
        v_reset=np.zeros(shape, np.float32),
        metadata={"snncompile_name": name, "reset": RESETS[n.model],
                  "spike_condition": "v >= v_threshold", "alpha": float(n.alpha),
                  "v_init": (np.float32(n.alpha) * theta).astype(np.float32)})
    edges.extend((s, if_key) for s in syn)
    if not np.any(n.threshold != 1):
        return [if_key]
    sc_key = f"{key}_scale"
    nodes[sc_key] = nir.Scale(scale=theta.copy(), metadata={
        "snncompile_name": name, "why": "a spike of this layer weighs its threshold"})
    edges.append((if_key, sc_key))
    return [sc_key]


def export_nir(graph: Graph, path: str | Path, *, readout: str = "integrator") -> Path:
    """Write ``graph`` (spiking IR) as a NIR file (HDF5). Returns the path."""
    nir = _nir()
    g = to_nir(graph, readout=readout)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nir.write(path, g)
    return path
