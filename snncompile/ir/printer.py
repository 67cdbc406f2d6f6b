"""A one-line-per-op text summary of the IR (what `snn-compile --target ir` prints)."""

from __future__ import annotations

from dataclasses import fields
from typing import TYPE_CHECKING

import numpy as np

from snncompile.ir.nodes import Activation, Layer, Neuron, QuantSpec

if TYPE_CHECKING:
    from snncompile.ir.graph import Graph


def _fmt(v: object) -> str:
    if isinstance(v, np.ndarray):
        return f"<{'x'.join(map(str, v.shape)) or 'scalar'} {v.dtype}>"
    if isinstance(v, Activation):
        if v.levels is not None:
            return f"quant(L={v.levels},hi={v.hi:.4g})"
        return "relu" if v.hi is None else f"clip(0,{v.hi:.4g})"
    if isinstance(v, Neuron):
        th = v.threshold
        t = f"{float(th[0]):.4g}" if np.all(th == th[0]) else f"[{th.min():.3g}..{th.max():.3g}]"
        extra = f",members={v.members}" if v.members > 1 else ""
        return f"{v.model}(θ={t},α={v.alpha:g}{extra})"
    if isinstance(v, QuantSpec):
        return f"q{v.bits}({v.scheme})"
    return str(v)


def format_op(op: object) -> str:
    parts = []
    for f in fields(op):
        v = getattr(op, f.name)
        if f.name == "origin" or v is None or (f.name == "bias"):
            continue
        if f.name == "channels_last" and not v:  # shown only where it matters
            continue
        if isinstance(op, Layer) and f.name in ("act", "neuron"):
            continue
        parts.append(f"{f.name}={_fmt(v)}")
    return ", ".join(parts)


def format_graph(graph: Graph) -> str:
    rows = []
    for name, op in graph.topo():
        ins = ", ".join(graph.inputs(name))
        shape = "x".join(map(str, graph.shape(name) or ())) or "?"
        tail = ""
        if isinstance(op, Layer):
            if op.act is not None:
                tail += f"  act={_fmt(op.act)}"
            if op.neuron is not None:
                tail += f"  neuron={_fmt(op.neuron)}"
        rows.append(f"  {name:<14} {type(op).__name__:<10} ({ins}) -> {shape}  "
                    f"{format_op(op)}{tail}")
    n_params = sum(a.size for _, op in graph.topo() for a in op.arrays().values())
    return f"IR: {len(graph)} ops, {n_params} parameters\n" + "\n".join(rows)
