"""fuse-activations: move a ReLU/Clip into the preceding layer as its activation.

y = act(layer(x)) becomes one layer with ``act`` set. This is what makes the layer spiking
after conversion: its neuron replaces the activation. Fused when the activation's input is a
Conv2d / Dense / Add with no activation yet and the activation is its only user; otherwise the
ReLU stays a layer of its own (identity synapses + neurons in spiking form).
"""

from __future__ import annotations

from snncompile.ir.graph import Graph
from snncompile.ir.nodes import Add, Conv2d, Dense, ReLU
from snncompile.passes.registry import PassContext, register_pass


@register_pass("fuse-activations")
def fuse_activations(graph: Graph, ctx: PassContext) -> Graph:
    """Fuse ReLU/Clip into the preceding Conv2d/Dense/Add as its activation."""
    g = graph.copy()
    for name, op in list(g.topo()):
        if not isinstance(op, ReLU) or op.neuron is not None or op.act is None:
            continue
        src = g.inputs(name)[0]
        layer = g.op(src)
        if isinstance(layer, (Conv2d, Dense, Add)) and layer.act is None \
                and len(g.users(src)) == 1:
            origin = f"{layer.origin} + {op.origin}" if op.origin else layer.origin
            g.replace(src, act=op.act, origin=origin)
            g.bypass(name)
    return g
