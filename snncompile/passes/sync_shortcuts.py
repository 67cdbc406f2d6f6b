"""sync-shortcuts: BSNN synchronous neurons on the shortcut paths of residual blocks.

Each spiking layer on a path is one stage of delay: a bistable neuron (BSNN) fires in window k
what it integrated in window k−1, and on Loihi every synapse adds one step. A residual join
``Add(residual, shortcut)`` adds two paths whose stage counts differ (the residual path runs
through one or two more spiking layers), so the shortcut's information reaches the join earlier
than the residual's: the join sums the two branches' answers to *different* windows. BSNN's
synchronous neurons (SN) delay the fast path so that both arrive together.

Stage depth: depth(Input) = 0, depth(op) = max over its inputs + 1 if the op spikes. For every
``Add`` whose operands have depths d_i < d_max, the pass walks back from operand i through
linear one-input ops (a Conv2d / Dense / ReLU without neuron, BatchNorm, pools, Flatten,
Identity) to the spiking layer S that the path starts from, and inserts d_max − d_i
synchronous neurons on the edge leaving S towards the join:

    SN = ReLU(act=relu, neuron=copy of S's neuron)   (identity synapses)

An SN fed by S's spikes θ_S·s re-emits the same spikes one stage later (for IF neurons in the
zero-delay GPU simulator: the same step, exactly: v = α·θ + θ·Σs − θ·n stays in [α·θ, θ));
its ANN activation is a plain ReLU of a non-negative input, so the ANN function is unchanged.
A path that starts at the network Input (direct-coded analog input, no spikes) is left alone
and listed in ``ctx.notes``. Run it after select-neurons (the SNs copy the final neuron).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from snncompile.ir.graph import Graph
from snncompile.ir.nodes import (
    Activation,
    Add,
    AvgPool2d,
    BatchNorm,
    Conv2d,
    Dense,
    Flatten,
    Identity,
    Input,
    Layer,
    MaxPool2d,
    OutputActivation,
    ReLU,
)
from snncompile.passes.registry import PassContext, register_pass

_LINEAR = (Conv2d, Dense, ReLU, BatchNorm, AvgPool2d, MaxPool2d, Flatten, Identity,
           OutputActivation)


def _spiking(op: Any) -> bool:
    return isinstance(op, Layer) and op.neuron is not None


def _path_source(g: Graph, name: str, join: str) -> tuple[str, str] | None:
    """(S, child): the spiking layer S the operand ``name`` of ``join`` starts from and the op
    after S on that path (``join`` itself for an identity shortcut); None if the path reaches
    the Input or branches."""
    child = join
    while True:
        op = g.op(name)
        if _spiking(op):
            return name, child
        if isinstance(op, Input) or not isinstance(op, _LINEAR) or len(g.inputs(name)) != 1:
            return None
        child, name = name, g.inputs(name)[0]


@register_pass("sync-shortcuts")
def sync_shortcuts(graph: Graph, ctx: PassContext) -> Graph:
    """BSNN synchronous neurons: delay residual shortcuts to the residual path's depth."""
    g = graph.copy()
    depth: dict[str, int] = {}
    inserted: list[str] = []
    skipped: list[str] = []
    for name, op in graph.topo():
        ins = g.inputs(name)
        if isinstance(op, Add) and ins:
            d = [depth[i] for i in ins]
            top = max(d)
            for src, di in zip(ins, d):
                if di == top:
                    continue
                found = _path_source(g, src, name)
                if found is None:
                    skipped.append(f"{src} -> {name}")
                    continue
                s_name, child = found
                s_op = g.op(s_name)
                assert isinstance(s_op, Layer) and s_op.neuron is not None  # _path_source
                prev = s_name
                for _ in range(top - di):
                    sn = g.unique(f"{s_name}_sync")
                    port = g.nx.edges[prev, child]["port"]
                    g.add(sn, ReLU(act=Activation(), neuron=dataclasses.replace(s_op.neuron),
                                   origin=f"sync-shortcuts (synchronous neuron of {s_name})"),
                          [prev])
                    g.nx.remove_edge(prev, child)
                    g.nx.add_edge(sn, child, port=port)
                    g.reinfer(child)
                    depth[sn] = depth[prev] + 1
                    inserted.append(sn)
                    prev = sn
            ins = g.inputs(name)
        base = max((depth[i] for i in ins), default=0)
        depth[name] = base + (1 if _spiking(op) else 0)
        # a path rewritten above changed its ops' depths only through the new SNs
    ctx.notes["sync-shortcuts"] = {"synchronous_neurons": inserted, "skipped_paths": skipped}
    return g
