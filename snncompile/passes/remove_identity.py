"""remove-identity: drop Identity, inference Dropout and a final Softmax/LogSoftmax/Sigmoid.

Each leaves the argmax readout unchanged: y = x for Identity/Dropout, softmax and sigmoid are
monotonic per sample. The frontend accepts Softmax/LogSoftmax/Sigmoid only right before the
output.
"""

from __future__ import annotations

from snncompile.ir.graph import Graph
from snncompile.ir.nodes import Identity, OutputActivation
from snncompile.passes.registry import PassContext, register_pass


@register_pass("remove-identity")
def remove_identity(graph: Graph, ctx: PassContext) -> Graph:
    """Drop Identity, Dropout and a final Softmax/LogSoftmax/Sigmoid (argmax is unchanged)."""
    g = graph.copy()
    for name, op in list(g.topo()):
        if isinstance(op, (Identity, OutputActivation)):
            g.bypass(name)
    return g
