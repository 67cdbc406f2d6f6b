"""fold-batchnorm: fold inference BatchNorm into the Conv2d / Dense before or after it, exactly.

With s = γ / sqrt(σ² + ε):  W'[o] = W[o] · s[o],  b'[o] = (b[o] − μ[o]) · s[o] + β[o]  (into the
layer before it, when the BN is that layer's single user and the layer has no activation yet).

Otherwise, as y = a·x + c (a = s, c = β − μ·s), into the layer after it, when that layer is its
single user (through Flatten and average pools): W'[:, i] = W[:, i] · a[i] and
b' = b + Σ_i W[:, i] · c[i]; for a Conv2d only where c = 0 or the conv has no padding (its zero
padding is of x, not of a·x + c). This is how a ``relu(x) * 0.5`` or an input normalisation
``(x − mean) / std`` written in the model disappears. Any other BN stays a per-channel affine op
(linear, so it still runs in both ANN and spiking form).
"""

from __future__ import annotations

import numpy as np

from snncompile.ir.graph import Graph
from snncompile.ir.nodes import AvgPool2d, BatchNorm, Conv2d, Dense, Flatten
from snncompile.passes.registry import PassContext, register_pass


def folded(layer: Conv2d | Dense, bn: BatchNorm) -> dict[str, np.ndarray]:
    s = (bn.scale.astype(np.float64) / np.sqrt(bn.var.astype(np.float64) + bn.eps))
    w = layer.weight.astype(np.float64) * s.reshape((-1,) + (1,) * (layer.weight.ndim - 1))
    b0 = layer.bias.astype(np.float64) if layer.bias is not None else np.zeros(len(s))
    b = (b0 - bn.mean) * s + bn.bias
    return {"weight": w.astype(np.float32), "bias": b.astype(np.float32)}


def affine(bn: BatchNorm) -> tuple[np.ndarray, np.ndarray]:
    """(a, c) of y = a·x + c per channel, in float64 (``BatchNorm.affine``)."""
    return bn.affine()


def folded_forward(bn: BatchNorm, layer: Conv2d | Dense,
                   repeat: int = 1) -> dict[str, np.ndarray] | None:
    """``layer``'s weight and bias with the BN before it folded in (``repeat``: the spatial
    positions per channel of a Flatten in between), or None where that is not exact."""
    a, c = affine(bn)
    a, c = np.repeat(a, repeat), np.repeat(c, repeat)
    w = layer.weight.astype(np.float64)
    b0 = layer.bias.astype(np.float64) if layer.bias is not None else np.zeros(w.shape[0])
    if isinstance(layer, Dense):
        return {"weight": (w * a).astype(np.float32), "bias": (b0 + w @ c).astype(np.float32)}
    if np.any(c != 0) and any(layer.padding):
        return None
    groups, cin = layer.groups, w.shape[1]  # input channel of W[o, i]: (o // (C_out/g))·cin + i
    rows = (np.arange(w.shape[0]) // (w.shape[0] // groups))[:, None] * cin + np.arange(cin)
    w2 = w * a[rows][:, :, None, None]
    b2 = b0 + (w * c[rows][:, :, None, None]).sum(axis=(1, 2, 3))
    return {"weight": w2.astype(np.float32), "bias": b2.astype(np.float32)}


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
        else:
            _fold_forward(g, name, bn)
    return g


def _fold_forward(g: Graph, name: str, bn: BatchNorm) -> None:
    """Fold ``bn`` into the Conv2d / Dense it feeds alone, through Flatten and average pools
    (an affine map per channel commutes with a channel's mean) on the way."""
    cur, flat = name, None
    while len(users := g.users(cur)) == 1:
        op = g.op(users[0])
        if isinstance(op, Flatten):
            flat = cur
        elif not (isinstance(op, AvgPool2d) and (not any(op.padding)
                                                 or not op.count_include_pad)):
            break
        cur = users[0]
    if len(users) != 1 or not isinstance(layer := g.op(users[0]), (Conv2d, Dense)) \
            or layer.quant is not None:
        return
    repeat = int(np.prod(g.shape(flat)[1:])) if flat else 1
    changes = folded_forward(bn, layer, repeat)
    if changes is None:
        return
    origin = f"{bn.origin} + {layer.origin}" if bn.origin else layer.origin
    g.replace(users[0], origin=origin, **changes)
    g.bypass(name)
