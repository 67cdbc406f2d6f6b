"""select-neurons: choose the neuron model of every spiking layer.

The models, their equations and their parameters are declared once in ``snncompile.neurons``
(users can add their own); each backend implements them in its own table. This pass records
the choice in the IR and sets the two model parameters the IR neuron carries, as the model's
spec derives them from the pass options (``NeuronSpec.params``):

- ``threshold`` is always the value of one spike unit (the layer emits threshold·s): group
  neurons divide θ by M (the member threshold), sigma-delta multiplies it by δ (the delta
  threshold); every other built-in model keeps θ.
- ``members``: the group size M of group neurons, the window ρ of bistable neurons, 1 otherwise.

docs/neurons.md derives each model and lists what it needs on each backend.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from snncompile import neurons
from snncompile.ir.diagnostics import CompileError, Diagnostic
from snncompile.ir.graph import Graph
from snncompile.ir.nodes import Layer
from snncompile.passes.registry import PassContext, register_pass


@register_pass("select-neurons")
@dataclass(frozen=True)
class SelectNeurons:
    """Set the neuron model (a name from ``snncompile.neurons``) of every spiking layer."""

    model: str = "if"
    members: int = 1  # gn: members per group
    period: int = 2  # bistable: window ρ (steps integrating, then as many firing)
    delta: float = 0.0625  # sigma-delta: delta threshold as a fraction of θ

    def __post_init__(self) -> None:
        bad = []
        if self.model not in neurons.names():
            bad.append(Diagnostic(f"select-neurons.model={self.model!r}",
                                  hint=f"models: {', '.join(neurons.names())}"))
        if self.members < 1:
            bad.append(Diagnostic(f"select-neurons.members={self.members}; must be >= 1"))
        if self.period < 1:
            bad.append(Diagnostic(f"select-neurons.period={self.period}; must be >= 1"))
        if not 0.0 < self.delta <= 1.0:
            bad.append(Diagnostic(f"select-neurons.delta={self.delta}; must be in (0, 1]"))
        if bad:
            raise CompileError("unknown neuron model" if self.model not in neurons.names()
                               else "bad pass option", bad)

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        members, scale = neurons.get_spec(self.model).params(self.members, self.period,
                                                             self.delta)
        g = graph.copy()
        for name, op in graph.topo():
            if isinstance(op, Layer) and op.neuron is not None:
                theta = op.neuron.threshold
                if scale != 1.0:
                    theta = (theta.astype(np.float64) * scale).astype(theta.dtype)
                g.replace(name, neuron=dataclasses.replace(
                    op.neuron, model=self.model, members=members, threshold=theta))
        ctx.notes["select-neurons"] = {"model": self.model, "members": members,
                                       "threshold_scale": scale}
        return g
