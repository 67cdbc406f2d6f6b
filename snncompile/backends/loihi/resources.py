"""Loihi 2 resource estimate and limit check for a ``LoihiPlan``.

Limits used (and where they come from):

- 128 neuro-cores, up to 1,048,576 neurons and 120 M synapses per chip: Intel Labs,
  "Taking Neuromorphic Computing to the Next Level with Loihi 2", technology brief (2021).
  Per core this gives 8,192 neurons and 120 M / 128 = 937,500 synapses; the synapse figure is
  an upper bound (the brief's chip total assumes compressed, shared synaptic memory), so the
  estimate below, which counts every connection without weight sharing, is conservative.
- Fan-in: 4,096 input axons per core is the Loihi 1 figure (Davies et al., "Loihi: a
  neuromorphic manycore processor with on-chip learning", IEEE Micro 38(1), 2018); Loihi 2's
  per-core axon count is not public in that detail, so we keep the Loihi 1 number as a
  conservative bound on the distinct inputs a neuron may have.
- Number formats (from Lava's bit-accurate models, ``lava/proc/lif/models.py``, and
  ``lava/utils/weightutils.py``): 8-bit weight mantissa (mixed sign: even values in
  [-256, 254]), 17-bit unsigned threshold mantissa, 13-bit signed bias mantissa with a 3-bit
  exponent, 24-bit state. The plan builds values inside these ranges and counts clipping.

Spiking MaxPool gates run as host processes and are listed, not counted as cores.
A network is rejected (CompileError naming each layer) when a neuron's fan-in exceeds the
axon bound or the estimate needs more cores than one chip has.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from snncompile.ir.diagnostics import CompileError, Diagnostic
from snncompile.backends.loihi.fixed import BIAS_MANT_MAX, STATE_MAX, VTH_MANT_MAX, WEIGHT_MAX
from snncompile.backends.loihi.plan import LoihiPlan

LIMITS = {
    "cores_per_chip": 128,
    "neurons_per_core": 8192,
    "synapses_per_core": 937_500,
    "fan_in_per_neuron": 4096,
    "weight_mantissa": [-256, 254],
    "vth_mantissa_max": VTH_MANT_MAX,
    "bias_mantissa_max": BIAS_MANT_MAX,
    "state_max": STATE_MAX,
}
SOURCES = {
    "cores_per_chip, neurons_per_core, synapses_per_core":
        "Intel Labs, 'Taking Neuromorphic Computing to the Next Level with Loihi 2', technology "
        "brief, 2021 (1 M neurons, 120 M synapses, 128 neuro-cores per chip; per core = chip/128)",
    "fan_in_per_neuron":
        "Loihi 1: 4096 input axons per core (Davies et al., IEEE Micro 38(1), 2018); Loihi 2's "
        "figure is not public, used as a conservative bound",
    "number formats": "lava-nc 0.10.0 lava/proc/lif/models.py (PyLifModelBitAcc), "
                      "lava/utils/weightutils.py (8-bit weights, LSB dropped for mixed sign)",
}


def _fan_in(plan: LoihiPlan, name: str) -> int:
    """Largest number of nonzero incoming connections of one neuron of ``name``."""
    worst = 0
    total = None
    p = plan.pops[name]
    for s in plan.synapses_into(name):
        if s.kind == "dense":
            per = (s.weight_int != 0).sum(1).astype(np.float64)
        else:
            import torch

            x = torch.ones((1, *plan.pops[s.src].shape), dtype=torch.float64)
            w = torch.from_numpy((s.weight_int != 0).astype(np.float64))
            per = torch.nn.functional.conv2d(x, w, None, s.stride, s.padding, s.dilation,
                                             s.groups).numpy().ravel()
        per = per.reshape(-1)[:p.size]
        total = per if total is None else total + per
    if total is not None:
        worst = int(total.max())
    return worst


def estimate(plan: LoihiPlan) -> dict[str, Any]:
    """Neurons, synapses and an estimate of Loihi 2 neuro-cores per population."""
    layers = []
    for name, p in plan.pops.items():
        if p.kind in ("input", "maxpool"):
            continue
        syns = plan.synapses_into(name)
        n_syn = sum(s.count for s in syns)
        weights = sum(int(np.count_nonzero(s.weight_int)) for s in syns)
        cores = max(1, math.ceil(p.size / LIMITS["neurons_per_core"]),
                    math.ceil(n_syn / LIMITS["synapses_per_core"]))
        layers.append({"name": name, "kind": p.kind, "neurons": p.size, "synapses": n_syn,
                       "stored_weights": weights, "fan_in_max": _fan_in(plan, name),
                       "cores": cores, "depth": p.depth,
                       "delay_lines": sum(1 for s in syns if s.delay)})
    cores = sum(ly["cores"] for ly in layers)
    return {"neurons": sum(ly["neurons"] for ly in layers),
            "synapses": sum(ly["synapses"] for ly in layers),
            "neuro_cores": cores, "chips": math.ceil(cores / LIMITS["cores_per_chip"]),
            "pipeline_depth": plan.depth, "layers": layers, "limits": LIMITS,
            "host_maxpool_gates": [n for n, p in plan.pops.items() if p.kind == "maxpool"],
            "limit_sources": SOURCES}


def check(plan: LoihiPlan, res: dict[str, Any] | None = None) -> dict[str, Any]:
    """``estimate`` plus the limit check; raises CompileError listing every violation."""
    res = res or estimate(plan)
    bad = []
    for ly in res["layers"]:
        if ly["fan_in_max"] > LIMITS["fan_in_per_neuron"]:
            bad.append(Diagnostic(
                f"fan-in {ly['fan_in_max']} > {LIMITS['fan_in_per_neuron']} inputs per neuron",
                node=ly["name"], origin=plan.pops[ly["name"]].origin or None,
                hint="use a smaller kernel / fewer input channels, or split the layer"))
    for s in plan.syns:
        if s.weight_int.size and np.abs(s.weight_int).max() > WEIGHT_MAX:
            bad.append(Diagnostic("weight mantissa out of the 8-bit range", node=s.dst))
    if res["neuro_cores"] > LIMITS["cores_per_chip"]:
        bad.append(Diagnostic(
            f"the network needs ~{res['neuro_cores']} neuro-cores; one Loihi 2 chip has "
            f"{LIMITS['cores_per_chip']}", hint="use a smaller model"))
    if bad:
        raise CompileError("the network does not fit Loihi 2 limits", bad)
    return res
