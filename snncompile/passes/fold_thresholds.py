"""fold-thresholds: weight normalisation (Rueckauer et al. 2017) — every threshold becomes 1.

A spiking layer l emits θ_l·s_l(t). Dividing its membrane potential by θ_l gives a neuron with
threshold 1 that spikes at exactly the same steps, if its input current is divided by θ_l too.
Track, for every tensor, the per-unit factor ``k`` by which the folded network's value is smaller
than the original one (x_folded = x / k):

    Input                 k = 1
    spiking layer l       k = θ_l                 (it now emits s_l instead of θ_l·s_l)
    Conv2d / Dense        W'[o, i] = W[o, i] · k_in[i] / k_out[o],  b' = b / k_out
                          k_out = θ_l (spiking); 1 (the readout: potentials stay in ANN units);
                          θ of its only user when that is a spiking Add / ReLU / pool; else 1
    Add / ReLU            operands must share k; an operand whose k differs gets a 1×1 depthwise
    (CurrentMaxPool2d too)
                          scaling op (Conv2d with groups=C, or a diagonal Dense) k_src/k_target
    pools, Identity       k passes through (positive per-channel factors commute with max and mean)
    Flatten / Concat      k is flattened / concatenated with the tensor
    BatchNorm             mean' = mean / k, bias' = bias / k

The folded network therefore has the same spikes as the unfolded one in exact arithmetic. Folded
weights are stored in float64 so that a float64 simulation reproduces the unfolded spikes exactly
(a float32 simulation rounds differently and may flip a spike sitting on its threshold); a
float32 backend casts them. A quantized layer keeps its QuantSpec with scale' = scale·k_in/k_out
when k_in is uniform; otherwise the rescaled weights are no longer n-bit and quant is dropped.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from snncompile.ir.diagnostics import CompileError, Diagnostic
from snncompile.ir.graph import Graph
from snncompile.ir.nodes import (
    Add,
    AvgPool2d,
    BatchNorm,
    Concat,
    Conv2d,
    CurrentMaxPool2d,
    Dense,
    Flatten,
    Identity,
    Input,
    Layer,
    MaxPool2d,
    Neuron,
    Output,
    OutputActivation,
    ReLU,
)
from snncompile.passes.registry import PassContext, register_pass


def _theta(op: Any) -> np.ndarray | None:
    if isinstance(op, Layer) and op.neuron is not None:
        return op.neuron.threshold.astype(np.float64)
    return None


def _ones_neuron(n: Neuron) -> Neuron:
    return dataclasses.replace(n, threshold=np.ones_like(n.threshold))


def _expand(k: np.ndarray, c: int) -> np.ndarray:
    return np.broadcast_to(k, (c,)).astype(np.float64) if k.size == 1 else k


def _scaled_weight(op: Conv2d | Dense, k_in: np.ndarray, k_out: np.ndarray) -> dict[str, Any]:
    w = op.weight.astype(np.float64)
    if isinstance(op, Conv2d):
        g = op.groups
        co, ci = w.shape[:2]
        kin = k_in.reshape(g, 1, ci)  # input channel g·ci + i feeds group g
        factor = (kin / k_out.reshape(g, co // g, 1)).reshape(co, ci, 1, 1)
    else:
        factor = k_in.reshape(1, -1) / k_out.reshape(-1, 1)
    changes: dict[str, Any] = {}
    if op.quant is not None:
        uniform = bool(np.all(k_in == k_in.flat[0]))
        if uniform:
            old = np.asarray(op.quant.scale, np.float64)
            q = np.rint(w / old.reshape((-1,) + (1,) * (w.ndim - 1)))
            scale = old * k_in.flat[0] / k_out
            changes["quant"] = dataclasses.replace(op.quant, scale=scale)
            changes["weight"] = q * scale.reshape((-1,) + (1,) * (w.ndim - 1))
        else:
            changes["quant"] = None
            changes["weight"] = w * factor
    else:
        changes["weight"] = w * factor
    if op.bias is not None:
        changes["bias"] = op.bias.astype(np.float64) / k_out
    return changes


def _align(g: Graph, src: str, dst: str, ratio: np.ndarray) -> str:
    """Insert ``y = ratio · x`` (per channel / per unit) on the edge src -> dst."""
    shape = g.shape(src)
    port = g.nx.edges[src, dst]["port"]
    name = g.unique(f"{src}_fold_scale")
    if len(shape) == 3:
        op: Any = Conv2d(weight=ratio.reshape(-1, 1, 1, 1).astype(np.float64), groups=shape[0],
                         origin="fold-thresholds")
    elif len(shape) == 1:
        op = Dense(weight=np.diag(ratio).astype(np.float64), origin="fold-thresholds")
    else:
        raise CompileError("fold-thresholds cannot rescale this tensor", [Diagnostic(
            f"shape {shape} between {src} and {dst}", node=dst)])
    g.add(name, op, [src])
    g.nx.remove_edge(src, dst)
    g.nx.add_edge(name, dst, port=port)
    g.reinfer(dst)
    return name


@register_pass("fold-thresholds")
def fold_thresholds(graph: Graph, ctx: PassContext) -> Graph:
    """Weight normalisation: fold every threshold into the weights so that θ = 1, same spikes."""
    g = graph.copy()
    readout = graph.readout_name
    k: dict[str, np.ndarray] = {}
    inserted: list[str] = []
    for name, op in graph.topo():
        ins = graph.inputs(name)
        c = graph.shape(name)[0] if graph.shape(name) else 1
        theta = _theta(op)
        if isinstance(op, Input):
            k[name] = np.ones(c)
        elif isinstance(op, (Conv2d, Dense)):
            k_in = _expand(k[ins[0]], graph.shape(ins[0])[0])
            users = graph.users(name)
            if theta is not None:
                k_out = theta
            elif name == readout:
                k_out = np.ones(c)
            elif len(users) == 1 and isinstance(graph.op(users[0]), (Add, ReLU,
                                                                    CurrentMaxPool2d)) \
                    and _theta(graph.op(users[0])) is not None:
                k_out = _theta(graph.op(users[0]))
            else:
                k_out = np.ones(c)
            k_out = _expand(k_out, c)
            changes = _scaled_weight(op, k_in, k_out)
            if theta is not None:
                changes["neuron"] = _ones_neuron(op.neuron)
            g.replace(name, **changes)
            k[name] = k_out
        elif isinstance(op, (Add, ReLU, CurrentMaxPool2d)):  # a positive k commutes with max
            target = _expand(theta, c) if theta is not None else _expand(k[ins[0]], c)
            for src in ins:
                ks = _expand(k[src], c)
                if not np.array_equal(ks, target):
                    inserted.append(_align(g, src, name, ks / target))
            if theta is not None:
                g.replace(name, neuron=_ones_neuron(op.neuron))
            k[name] = target
        elif isinstance(op, (AvgPool2d, MaxPool2d, Identity, OutputActivation, Output)):
            k[name] = k[ins[0]]
        elif isinstance(op, BatchNorm):
            ks = _expand(k[ins[0]], c)
            g.replace(name, mean=op.mean / ks, bias=op.bias / ks)
            k[name] = ks
        elif isinstance(op, Flatten):
            src_shape = graph.shape(ins[0])
            per = int(np.prod(src_shape[1:])) if len(src_shape) > 1 else 1
            k[name] = np.repeat(_expand(k[ins[0]], src_shape[0]), per)
        elif isinstance(op, Concat):
            if op.axis == 0:
                k[name] = np.concatenate([_expand(k[s], graph.shape(s)[0]) for s in ins])
            else:
                target = _expand(k[ins[0]], c)
                for src in ins[1:]:
                    ks = _expand(k[src], c)
                    if not np.array_equal(ks, target):
                        inserted.append(_align(g, src, name, ks / target))
                k[name] = target
        else:
            raise CompileError("fold-thresholds does not know this op", [Diagnostic(
                type(op).__name__, node=name, origin=op.origin or None)])
    # the readout must integrate in ANN units (k = 1) so the potentials are comparable
    kr = _expand(k[readout], graph.shape(readout)[0])
    if not np.all(kr == 1.0):
        inserted.append(_align(g, g.readout_name, g.output_name, kr))
    ctx.notes["fold-thresholds"] = {"inserted_scaling_ops": inserted}
    return g
