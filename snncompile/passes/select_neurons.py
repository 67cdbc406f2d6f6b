"""select-neurons: choose the neuron model of every spiking layer.

``if``: reset by subtraction, v -= s·θ (default, rate-exact up to 1/T). ``if-hard``: reset to
zero, v = 0 on a spike (stock Loihi CUBA behaviour; loses the residue above θ). The models and
their equations live in one table per backend (``snncompile.backends.gpu.neurons``); this pass
records the choice in the IR and sets the two model parameters the IR neuron carries:

- ``threshold`` is always the value of one spike unit (the layer emits threshold·s):
  ``gn`` with M members: θ ← θ/M (the member threshold; a step emits s ∈ {0..M} member
  spikes, at most the group threshold θ per step), ``sigma-delta``: θ ← δ·θ (the delta
  threshold, a fraction ``delta`` of the layer's activation bound; the layer emits graded
  values), every other model keeps θ.
- ``members``: the group size M (``gn``), the window ρ of ``bistable`` neurons (``period``),
  1 otherwise.

    signed-if   Fast-SNN signed IF: negative spikes take back earlier excess spikes
    gn          Group Neurons: M IF members with thresholds k·θ/M sharing one membrane
    bistable    BSNN bistable IF: integrate for ρ steps, fire during the next ρ steps
    sigma-delta Lava SDN: ReLU activations sent as graded deltas (threshold δ·θ)

docs/neurons.md derives each model and lists what it needs on each backend.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from snncompile.ir.diagnostics import CompileError, Diagnostic
from snncompile.ir.graph import Graph
from snncompile.ir.nodes import Layer
from snncompile.options import NEURONS
from snncompile.passes.registry import PassContext, register_pass


@register_pass("select-neurons")
@dataclass(frozen=True)
class SelectNeurons:
    """Set the neuron model (if, if-hard, signed-if, gn, bistable, sigma-delta) of every layer."""

    model: str = "if"
    members: int = 1  # gn: members per group
    period: int = 2  # bistable: window ρ (steps integrating, then as many firing)
    delta: float = 0.0625  # sigma-delta: delta threshold as a fraction of θ

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        bad = []
        if self.model not in NEURONS:
            bad.append(Diagnostic(f"select-neurons.model={self.model!r}",
                                  hint=f"models: {', '.join(NEURONS)}"))
        if self.members < 1:
            bad.append(Diagnostic(f"select-neurons.members={self.members}; must be >= 1"))
        if self.period < 1:
            bad.append(Diagnostic(f"select-neurons.period={self.period}; must be >= 1"))
        if not 0.0 < self.delta <= 1.0:
            bad.append(Diagnostic(f"select-neurons.delta={self.delta}; must be in (0, 1]"))
        if bad:
            raise CompileError("unknown neuron model" if self.model not in NEURONS
                               else "bad pass option", bad)
        members, scale = 1, 1.0
        if self.model == "gn":
            members, scale = int(self.members), 1.0 / int(self.members)
        elif self.model == "bistable":
            members = int(self.period)
        elif self.model == "sigma-delta":
            scale = float(self.delta)
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
