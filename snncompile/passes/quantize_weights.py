"""quantize-weights: symmetric n-bit weights, per layer or per output channel.

For every Conv2d / Dense with weight W (the readout included):

    q_max = 2^(bits-1) - 1
    scale = max|W| / q_max                (granularity=layer: one scale;
                                           granularity=channel: one per output channel)
    q     = clip(round(W / scale), -q_max, q_max)
    W'    = q · scale                     (exactly representable in float32)

The op keeps ``W'`` as its weight and records ``quant=QuantSpec(bits, scale)``, so every
backend runs the quantized network unchanged and the integer mantissas are ``round(W'/scale)``.
Biases stay float (a backend with integer state quantizes them with its own scheme).
``ctx.notes["quantize-weights"]`` holds each layer's relative error ||W'-W||/||W|| and max |W'-W|.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from snncompile.ir.diagnostics import CompileError, Diagnostic
from snncompile.ir.graph import Graph
from snncompile.ir.nodes import WEIGHTED_TYPES, QuantSpec
from snncompile.passes.registry import PassContext, register_pass


def quantize(w: np.ndarray, bits: int, per_channel: bool) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric quantization of ``w`` (out, ...). Returns (W' float32, scale float32)."""
    qmax = 2 ** (bits - 1) - 1
    w64 = w.astype(np.float64)
    if per_channel:
        amax = np.abs(w64.reshape(w.shape[0], -1)).max(axis=1)
    else:
        amax = np.array([np.abs(w64).max() if w.size else 0.0])
    scale = (amax / qmax).astype(np.float32)
    scale[scale == 0] = 1.0  # an all-zero channel: any scale represents it exactly
    bshape = (-1,) + (1,) * (w.ndim - 1) if per_channel else (1,) * w.ndim
    s = scale.reshape(bshape)
    q = np.clip(np.rint(w64 / s), -qmax, qmax).astype(np.float32)
    return (q * s).astype(np.float32), scale


@register_pass("quantize-weights")
@dataclass(frozen=True)
class QuantizeWeights:
    """Quantize Conv2d/Dense weights to symmetric n-bit values (per layer or per channel)."""

    bits: int = 8
    granularity: Literal["layer", "channel"] = "layer"

    def __post_init__(self) -> None:
        bad = []
        if not 2 <= self.bits <= 16:
            bad.append(Diagnostic(f"quantize-weights.bits={self.bits}; must be in 2..16"))
        if self.granularity not in ("layer", "channel"):
            bad.append(Diagnostic(f"quantize-weights.granularity={self.granularity!r}; "
                                  "layer | channel"))
        if bad:
            raise CompileError("bad pass option", bad)

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        g = graph.copy()
        notes: dict[str, Any] = {}
        for name, op in graph.topo():
            if not isinstance(op, WEIGHTED_TYPES):
                continue
            w = op.weight
            wq, scale = quantize(w, self.bits, self.granularity == "channel")
            err = wq.astype(np.float64) - w
            norm = float(np.linalg.norm(w.astype(np.float64)))
            notes[name] = {"relative_error": float(np.linalg.norm(err) / norm) if norm else 0.0,
                           "max_abs_error": float(np.abs(err).max()) if err.size else 0.0,
                           "bits": self.bits, "granularity": self.granularity}
            g.replace(name, weight=wq, quant=QuantSpec(bits=self.bits, scale=scale))
        ctx.notes["quantize-weights"] = notes
        return g
