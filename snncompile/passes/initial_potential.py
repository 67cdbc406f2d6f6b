"""initial-potential: v(0) = α·θ for every spiking neuron.

With reset by subtraction an IF neuron driven by a constant current a ∈ [0, θ] has emitted
n(T) = floor((a·T + α·θ)/θ) spikes after T steps, so its rate error is at most 1/T for any α;
α = 0.5 rounds to nearest (n = round-half-up(a·T/θ)) instead of truncating, which removes the
systematic underestimate that α = 0 has at small T (Rueckauer et al. 2017; Bu et al. 2022).

A layer whose ANN activation is quantized (QCFS clip-floor-shift, ``Activation.levels`` set)
takes α = its shift s instead: then n(L) = clip(floor(a·L/θ + s), 0, L) at T = L, exactly the
ANN's quantized activation (θ = λ comes from balance-thresholds).

``layers`` sets α per layer (``NAME:ALPHA`` entries separated by ``;``), e.g.
``initial-potential{alpha=0.5,layers=/0/Conv:0.25}``: the tuner
(``snncompile.pipeline_search``) writes these. Why per layer: before a MaxPool gate, a higher
α makes every unit fire early, so the gate picks the winner from counts that are less quantized
at small T; a layer fed by noisy spike trains may prefer a different rounding point than the
first layer, which sees constant input.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from snncompile.ir.diagnostics import CompileError, Diagnostic
from snncompile.ir.graph import Graph
from snncompile.ir.nodes import Layer
from snncompile.passes.layer_options import check_layers, parse_layer_map
from snncompile.passes.registry import PassContext, register_pass


@register_pass("initial-potential")
@dataclass(frozen=True)
class InitialPotential:
    """Set the initial membrane potential v(0) = alpha·θ of every spiking neuron."""

    alpha: float = 0.5
    layers: str = ""  # per-layer α: NAME:ALPHA;...

    def __post_init__(self) -> None:
        for a in [self.alpha, *self.per_layer().values()]:
            if not 0.0 <= a <= 1.0:
                raise CompileError("bad pass option", [Diagnostic(
                    f"initial-potential.alpha={a}; must be in [0, 1]")])

    def per_layer(self) -> dict[str, float]:
        per_layer = {}
        for name, (text,) in parse_layer_map(self.layers, "initial-potential.layers", 1).items():
            try:
                per_layer[name] = float(text)
            except ValueError:
                raise CompileError("bad pass option", [Diagnostic(
                    f"initial-potential.layers: {name}:{text} is not a number")]) from None
        return per_layer

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        per_layer = self.per_layer()
        check_layers(graph, per_layer, "initial-potential.layers")
        g = graph.copy()
        for name, op in graph.topo():
            if isinstance(op, Layer) and op.neuron is not None:
                quantized = op.act is not None and op.act.levels is not None
                alpha = (float(op.act.shift) if quantized
                         else float(per_layer.get(name, self.alpha)))
                g.replace(name, neuron=dataclasses.replace(op.neuron, alpha=alpha))
        return g
