"""threshold-search: per-channel (or per-layer) θ that minimises the layer's conversion error at T.

An IF neuron (reset by subtraction, v(0) = α·θ) driven by a constant current a for T steps emits

    n(a) = clip(floor(a·T/θ + α), 0, T)      spikes, i.e. the rate-coded value  q(a) = θ·n(a)/T.

q is a uniform quantizer with step θ/T that clips at θ. A large θ (the max activation) wastes
resolution on rare large values; a small θ clips them. At small T the step dominates, so the
best θ depends on T. For each output channel c (``granularity=channel``) or the whole layer,
this pass picks

    θ* = argmin_θ  E_calibration[(a − q(a; θ))²]

over a grid of ``grid`` candidates θ = f·max(a), f ∈ [0.1, 1] spaced geometrically, with a
the layer's post-activation ANN output on the calibration data (at most ``samples`` values per
channel, drawn with the context's seed) and α the layer's own v(0) fraction (so run it after
``initial-potential``). Source: the threshold search of Li, Deng, Dong, Gong and Gu, "A Free
Lunch From ANN: Towards Efficient, Accurate Spiking Neural Networks Calibration", ICML 2021
(Sec. 4.1: θ minimising the MSE between the ANN activation and the clipped, floored SNN rate at
the target T); here per channel, and with the α-rounding of the initial potential included.

A quantized activation (QCFS: θ = λ makes the conversion exact) and the readout are left alone;
a Clip layer's θ stays at most its bound (its activations are clipped already). ``layers``
restricts the pass to the named layers with their own granularity (``NAME:layer|channel;...``);
empty means every spiking layer at ``granularity``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from snncompile.interp import record_activations
from snncompile.ir.diagnostics import CompileError, Diagnostic
from snncompile.ir.graph import Graph
from snncompile.ir.nodes import Layer
from snncompile.passes.layer_options import check_layers, parse_layer_map
from snncompile.passes.registry import PassContext, register_pass


def rate_quantize(a: np.ndarray, theta: np.ndarray, alpha: float, steps: int) -> np.ndarray:
    """q(a) = θ·clip(floor(a·T/θ + α), 0, T)/T (broadcasting a against θ)."""
    n = np.clip(np.floor(a * steps / theta + alpha), 0, steps)
    return theta * n / steps


def search_theta(a: np.ndarray, alpha: float, steps: int, grid: int = 48) -> float:
    """θ* = argmin_θ mean((a − q(a; θ))²) over θ = f·max(a), f ∈ [0.1, 1] (geometric)."""
    a = np.asarray(a, np.float64).reshape(-1)
    top = float(a.max()) if a.size else 0.0
    if top <= 0:
        return 0.0
    thetas = top * np.geomspace(0.1, 1.0, grid)
    err = ((a[None, :] - rate_quantize(a[None, :], thetas[:, None], alpha, steps)) ** 2).mean(1)
    return float(thetas[int(np.argmin(err))])


def mse_thresholds(acts: np.ndarray, alpha: float, steps: int, channelwise: bool,
                   grid: int = 48, samples: int = 8192, seed: int = 0) -> np.ndarray:
    """θ* per channel (C,) for post-activation outputs ``acts`` (N, C, ...)."""
    c = acts.shape[1]
    per = np.moveaxis(acts, 1, 0).reshape(c, -1)
    rng = np.random.default_rng(seed)
    if channelwise:
        out = np.empty(c, np.float64)
        for i in range(c):
            v = per[i]
            if v.size > samples:
                v = v[rng.choice(v.size, samples, replace=False)]
            out[i] = search_theta(v, alpha, steps, grid)
        return out
    flat = per.reshape(-1)
    if flat.size > samples * 4:
        flat = flat[rng.choice(flat.size, samples * 4, replace=False)]
    return np.full(c, search_theta(flat, alpha, steps, grid), np.float64)


@register_pass("threshold-search")
@dataclass(frozen=True)
class ThresholdSearch:
    """θ per channel minimising the rate-coding error at T (Li et al., ICML 2021)."""

    timesteps: int = 32
    granularity: str = "channel"  # channel | layer
    layers: str = ""  # NAME:layer|channel;... (empty: every spiking layer)
    grid: int = 48
    samples: int = 8192

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        if self.timesteps < 1 or self.grid < 2 or self.samples < 1:
            raise CompileError("bad pass option", [Diagnostic(
                f"threshold-search: timesteps={self.timesteps}, grid={self.grid}, "
                f"samples={self.samples}; need timesteps >= 1, grid >= 2, samples >= 1")])
        todo = {n: self.granularity for n, op in graph.topo()
                if isinstance(op, Layer) and op.neuron is not None and op.act is not None
                and op.act.levels is None}
        chosen = {n: g for n, (g,) in parse_layer_map(self.layers, "threshold-search.layers",
                                                      1).items()}
        check_layers(graph, chosen, "threshold-search.layers")
        if chosen:
            todo = {n: g for n, g in chosen.items() if n in todo}
        for gran in (self.granularity, *todo.values()):
            if gran not in ("layer", "channel"):
                raise CompileError("bad pass option", [Diagnostic(
                    f"threshold-search granularity {gran!r}", hint="layer | channel")])
        g = graph.copy()
        notes: dict[str, Any] = {}
        if not todo:
            ctx.notes["threshold-search"] = notes
            return g
        cal = ctx.need_calibration("threshold-search")
        if hasattr(cal, "materialize"):  # a streamed source (image or event folder): its
            cal = cal.materialize().x  # calibration samples, in memory (--calibration-samples)
        acts = record_activations(graph, cal)
        for name, gran in todo.items():
            op = graph.op(name)
            assert isinstance(op, Layer) and op.neuron is not None
            theta = mse_thresholds(acts[name], op.neuron.alpha, self.timesteps,
                                   gran == "channel", self.grid, self.samples, ctx.seed)
            dead = ~(theta > 0)
            theta[dead] = op.neuron.threshold[dead]  # no activity: keep what balancing chose
            g.replace(name, neuron=dataclasses.replace(op.neuron,
                                                       threshold=theta.astype(np.float32)))
            notes[name] = {"granularity": gran, "threshold": [float(theta.min()),
                                                              float(theta.max())]}
        ctx.notes["threshold-search"] = notes
        return g
