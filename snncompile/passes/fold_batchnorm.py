"""fold-batchnorm: fold inference BatchNorm into the preceding Conv2d / Dense, exactly.

With s = γ / sqrt(σ² + ε):  W'[o] = W[o] · s[o],  b'[o] = (b[o] − μ[o]) · s[o] + β[o].
Folded only when the BN is the single user of a layer that has no activation yet; any other
BN stays a per-channel affine op (linear, so it still runs in both ANN and spiking form).
"""

from __future__ import annotations

import numpy as np

from snncompile.ir.graph import Graph
from snncompile.ir.nodes import BatchNorm, Conv2d, Dense
from snncompile.passes.registry import PassContext, register_pass


def folded(layer: Conv2d | Dense, bn: BatchNorm) -> dict[str, np.ndarray]:
    s = (bn.scale.astype(np.float64) / np.sqrt(bn.var.astype(np.float64) + bn.eps))
    w = layer.weight.astype(np.float64) * s.reshape((-1,) + (1,) * (layer.weight.ndim - 1))
    b0 = layer.bias.astype(np.float64) if layer.bias is not None else np.zeros(len(s))
    b = (b0 - bn.mean) * s + bn.bias
    return {"weight": w.astype(np.float32), "bias": b.astype(np.float32)}


@register_pass("fold-batchnorm")
def fold_batchnorm(graph: Graph, ctx: PassContext) -> Graph:
    """Fold BatchNorm into the preceding Conv2d/Dense: W' = W·γ/σ, b' = (b − μ)·γ/σ + β."""
    g = graph.copy()
    for name, bn in list(g.topo()):
        if not isinstance(bn, BatchNorm):
            continue
        src = g.inputs(name)[0]
        layer = g.op(src)
        if isinstance(layer, (Conv2d, Dense)) and layer.act is None and len(g.users(src)) == 1:
            origin = f"{layer.origin} + {bn.origin}" if bn.origin else layer.origin
            g.replace(src, origin=origin, **folded(layer, bn))
            g.bypass(name)
    return g
