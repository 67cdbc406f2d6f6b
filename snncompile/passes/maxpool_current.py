"""maxpool-current: move the activation of the layer before a MaxPool behind the pool, so that
the spiking max-pool takes the max over *cumulative input currents* instead of gating spikes.

Math. For a monotone non-decreasing activation f (ReLU, Clip, the QCFS staircase),
max_i f(z_i) = f(max_i z_i), so ``L(act=f) → MaxPool`` equals ``L(act=None) →
CurrentMaxPool2d(act=f)`` exactly in the ANN. In the SNN, L then has no neuron: it delivers the
synaptic currents x_i(t) of the pooled candidates, and ``CurrentMaxPool2d`` has one neuron per
window driven by

    I(t) = M(t) − M(t−1),   M(t) = max_i C_i(t),   C_i(t) = Σ_{τ≤t} x_i(τ),   M(0) = 0,

so the neuron's integrated input Σ_{τ≤t} I(τ) = M(t) is exactly the max of its candidates'
integrated inputs. With direct coding the first layer's x_i is constant and M(t) = t·max_i x_i:
the neuron sees the ANN's max-pooled pre-activation every step. Deeper in the network the rate
of an IF neuron converges to f(max_i z_i) (the ANN's value, up to the usual IF quantisation),
where the spike gate of the old variant passes the spikes of one candidate chosen by its
spike count so far, a choice that flips while counts are small and is exact only in the limit.

Sources. The equivalence max∘ReLU = ReLU∘max is used for conversion by Rueckauer et al.,
"Conversion of Continuous-Valued Deep Networks to Efficient Event-Driven Networks for Image
Classification", Front. Neurosci. 2017 (their gate instead picks the unit with the highest
*rate*, which we keep as ``--maxpool gate``); SpikingJelly's ``pre_spike_maxpool`` option pools
the per-step currents before the neuron (max_i x_i(t), not of cumulative sums, which is not
exact: Σ_t max_i x_i(t) ≥ max_i Σ_t x_i(t)). The cumulative form here is ours.

Applies to ``L → MaxPool`` where L is a Conv/Dense/Add/ReLU layer with a fused activation, no
neuron yet and the pool as its only reader, and to ``L → MaxPool → ReLU`` where L has no
activation (the ReLU is folded into the pool). Other MaxPools keep the spike gate; the reasons
are in ``ctx.notes["maxpool-current"]["gate"]``. Run it after the front passes and before any
conversion pass (it needs the ANN form).
"""

from __future__ import annotations

from typing import Any

from snncompile.ir.graph import Graph
from snncompile.ir.nodes import CurrentMaxPool2d, Layer, MaxPool2d, ReLU
from snncompile.passes.registry import PassContext, register_pass


def _reason(graph: Graph, name: str) -> str | None:
    """Why the MaxPool ``name`` cannot become a ``CurrentMaxPool2d`` (None: it can)."""
    src = graph.inputs(name)[0]
    op = graph.op(src)
    if not isinstance(op, Layer):
        return f"its input {src} is a {type(op).__name__}, not a layer"
    if op.neuron is not None:
        return f"its input {src} is already spiking (run maxpool-current before conversion)"
    if len(graph.users(src)) != 1:
        return f"{src} has other readers besides the pool"
    if src == graph.readout_name:
        return f"{src} is the readout"
    if op.act is None:
        users = graph.users(name)
        relu = graph.op(users[0]) if len(users) == 1 else None
        if not (isinstance(relu, ReLU) and relu.act is not None and relu.neuron is None):
            return f"{src} has no activation and the pool is not followed by one"
    return None


@register_pass("maxpool-current")
def maxpool_current(graph: Graph, ctx: PassContext) -> Graph:
    """Spiking MaxPool over cumulative input currents (module docstring); other pools keep
    the spike gate."""
    g = graph.copy()
    done: dict[str, str] = {}
    kept: dict[str, str] = {}
    for name, op in list(g.topo()):
        if not isinstance(op, MaxPool2d):
            continue
        why = _reason(g, name)
        if why is not None:
            kept[name] = why
            continue
        src = g.inputs(name)[0]
        pre = g.op(src)
        assert isinstance(pre, Layer)
        act, folded = pre.act, None
        if act is None:  # L → MaxPool → ReLU: the ReLU's activation moves into the pool
            folded = g.users(name)[0]
            act = g.op(folded).act  # type: ignore[union-attr]
        g.set_op(name, CurrentMaxPool2d(kernel=op.kernel, stride=op.stride, padding=op.padding,
                                        dilation=op.dilation, act=act,
                                        origin=op.origin if folded is None else
                                        f"{op.origin} + {g.op(folded).origin}".strip(" +")))
        if folded is not None:
            g.bypass(folded)
        else:
            g.replace(src, act=None)
        done[name] = src
    notes: dict[str, Any] = {"current": done, "gate": kept}
    ctx.notes["maxpool-current"] = notes
    for pool, why in kept.items():
        ctx.log.info("maxpool-current: %s keeps the spike gate: %s", pool, why)
    return g
