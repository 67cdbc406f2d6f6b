"""balance-thresholds: set every spiking layer's threshold from calibration activations.

Rate coding maps a ReLU activation a ∈ [0, θ] to a firing rate r = a/θ (IF neuron, reset by
subtraction, DESIGN.md). θ must bound the activations the layer really produces, or the neuron
saturates (r ≤ 1); a θ far above them wastes resolution (r ≈ 0). So θ_l is a robust maximum of
layer l's post-activation outputs on the calibration set:

    norm=max      θ = max a
    norm=pNN      θ = NN-th percentile of a        (p99, p99.9, p99.99; Rueckauer et al. 2017)

taken over all samples and positions (layer-wise: one θ broadcast to every channel) or per
output channel (``channelwise``). A Clip activation (ReLU6, hardtanh(0, m)) bounds the layer at
its ``hi``, but its real activations may stay far below (mobilenet_v2's ReLU6 at 6 with
activations around 1 fires at a few per cent), so with calibration data

    θ_c = min(hi, statistic_c)          (per channel with ``channelwise``)

and ``notes`` say which bound won (``source`` "clip", the norm, or "clip+<norm>" when it
differs per channel, with ``clip_channels`` = how many channels kept the clip bound). Without
calibration data θ = hi. A quantized activation's ``hi`` (λ, QCFS) is used as is: the
conversion is exact only with θ = λ. A layer that never fires on
the calibration data gets θ = 1 (no activity to scale to; noted in ``ctx.notes``). The readout
(the op feeding Output) integrates and never gets a neuron.

The statistics are streamed (``passes.statistics``): the calibration data (an array or a
streaming source) goes through the ANN in batches, keeping a running max and, for percentiles,
radix-select histograms, so no layer's activations are ever held whole; the result equals
``np.percentile`` (numpy 1.x) over all activations exactly, and is the same under ``torchrun``
sharding.

``layers`` overrides the statistic and granularity per layer (``NAME:NORM:layer|channel``
entries separated by ``;``, see ``layer_options``), e.g.
``balance-thresholds{norm=p99.9,layers=/0/Conv:max:channel;/3/Conv:p99:layer}``: what the
automatic tuner (``snncompile.pipeline_search``) writes, so its choice replays as a plain pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from snncompile.ir.diagnostics import CompileError, Diagnostic
from snncompile.ir.graph import Graph
from snncompile.ir.nodes import Layer, Neuron
from snncompile.passes.layer_options import check_layers, parse_layer_map
from snncompile.passes.registry import PassContext, register_pass
from snncompile.passes.statistics import exact_percentile, layer_statistics

#: norm name -> percentile of the activations (100 = max)
PERCENTILES = {"max": 100.0, "p99": 99.0, "p99.9": 99.9, "p99.99": 99.99}
DEAD_THRESHOLD = 1.0


def _robust_max(a: np.ndarray, q: float) -> float:
    if a.size == 0:
        return 0.0
    if q >= 100.0:
        return float(a.max())
    return exact_percentile(a, q)


def layer_thresholds(acts: np.ndarray, q: float, channelwise: bool) -> np.ndarray:
    """θ per channel (C,) from post-activation outputs ``acts`` (N, C, ...)."""
    c = acts.shape[1]
    if channelwise:
        per = np.moveaxis(acts, 1, 0).reshape(c, -1)
        return np.array([_robust_max(per[i], q) for i in range(c)], np.float64)
    return np.full(c, _robust_max(acts.reshape(-1), q), np.float64)


@register_pass("balance-thresholds")
@dataclass(frozen=True)
class BalanceThresholds:
    """Set each spiking layer's threshold θ from calibration activations (max or percentile)."""

    norm: Literal["max", "p99", "p99.9", "p99.99"] = "p99.9"
    channelwise: bool = False
    layers: str = ""  # per-layer overrides: NAME:NORM:layer|channel;...

    def __post_init__(self) -> None:
        for norm, _ in [(self.norm, None), *self.overrides().values()]:
            if norm not in PERCENTILES:
                raise CompileError("bad pass option", [Diagnostic(
                    f"pass 'balance-thresholds' option norm={norm!r}; expected one of "
                    f"{', '.join(PERCENTILES)}")])

    def overrides(self) -> dict[str, tuple[str, bool]]:
        """layer name -> (norm, channelwise) from ``layers``."""
        out = {}
        for name, (norm, gran) in parse_layer_map(self.layers, "balance-thresholds.layers",
                                                  2).items():
            if gran not in ("layer", "channel"):
                raise CompileError("bad pass option", [Diagnostic(
                    f"balance-thresholds.layers: {name}:{norm}:{gran}", hint="layer | channel")])
            out[name] = (norm, gran == "channel")
        return out

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        overrides = self.overrides()
        check_layers(graph, overrides, "balance-thresholds.layers")
        readout = graph.readout_name
        todo = [n for n, op in graph.topo()
                if isinstance(op, Layer) and op.act is not None and n != readout]
        notes: dict[str, Any] = {}
        g = graph.copy()
        if not todo:
            ctx.notes["balance-thresholds"] = notes
            return g
        have_data = ctx.calibration is not None
        need_data = [n for n in todo  # type: ignore[union-attr]
                     if graph.op(n).act.hi is None
                     or (have_data and graph.op(n).act.levels is None)]
        stats = layer_statistics(
            graph, need_data, ctx.need_calibration("balance-thresholds"),
            PERCENTILES[self.norm], self.channelwise,
            per_layer={k: (PERCENTILES[nm], cw) for k, (nm, cw) in overrides.items()}
        ) if need_data else {}
        for name in todo:
            op = graph.op(name)
            assert isinstance(op, Layer) and op.act is not None  # filtered above
            c = graph.shape(name)[0]
            norm, channelwise = overrides.get(name, (self.norm, self.channelwise))
            clip_won = 0
            if op.act.hi is not None and (op.act.levels is not None or name not in stats):
                theta = np.full(c, op.act.hi, np.float64)
                source = "clip"
            elif op.act.hi is not None:
                # the recorded activations are clipped already: stat <= hi, equal (up to the
                # float32 rounding of hi) where the bound is reached often enough
                stat = stats[name].copy()
                stat[~(stat > 0)] = op.act.hi  # no activity to scale to: keep the bound
                won = stat >= op.act.hi * (1 - 1e-6)
                theta = np.where(won, op.act.hi, np.minimum(stat, op.act.hi))
                clip_won = int(won.sum())
                source = "clip" if clip_won == c else norm if clip_won == 0 \
                    else f"clip+{norm}"
            else:
                theta = stats[name].copy()
                source = norm
            dead = ~(theta > 0)
            if dead.any():
                theta[dead] = DEAD_THRESHOLD
                ctx.log.warning("balance-thresholds: %s has %d channel(s) with no activity on the "
                                "calibration data; threshold set to %g", name, int(dead.sum()),
                                DEAD_THRESHOLD)
            old = op.neuron
            neuron = Neuron(model=old.model if old else "if", threshold=theta.astype(np.float32),
                            alpha=old.alpha if old else 0.5, members=old.members if old else 1)
            g.replace(name, neuron=neuron)
            t32 = neuron.threshold
            notes[name] = {"source": source, "granularity": "channel" if channelwise else "layer",
                           "threshold": float(t32[0]) if np.all(t32 == t32[0])
                           else [float(t32.min()), float(t32.max())],
                           "dead_channels": int(dead.sum())}
            if op.act.hi is not None and op.act.levels is None:
                notes[name].update(clip_bound=float(op.act.hi), clip_channels=clip_won
                                   if name in stats else c)
        ctx.notes["balance-thresholds"] = notes
        return g
