"""Loihi 2 resource estimate and limit check for a ``LoihiPlan``.

Limits used (and where they come from):

- 128 neuro-cores, up to 1,048,576 neurons and 120 M synapses per chip: Intel Labs,
  "Taking Neuromorphic Computing to the Next Level with Loihi 2", technology brief (2021).
  Per core this gives 8,192 neurons and 120 M / 128 = 937,500 synapses; the synapse figure is
  an upper bound (the brief's chip total assumes compressed, shared synaptic memory), so the
  estimate below, which counts every connection without weight sharing, is conservative.
- Input axons: 4,096 per core is the Loihi 1 figure (Davies et al., "Loihi: a
  neuromorphic manycore processor with on-chip learning", IEEE Micro 38(1), 2018); Loihi 2's
  per-core axon count is not public in that detail, so we use the Loihi 1 number as an
  *estimate*. It bounds the distinct inputs of one core, not of one neuron: a dense synapse
  whose neurons have more inputs is split by the plan (``split_wide_synapses``: k blocks of
  source units, each on its own core(s), partial currents summed at the destination), and a
  population needs at least ⌈distinct source units / 4096⌉ cores to receive them all.
- Number formats (from Lava's bit-accurate models, ``lava/proc/lif/models.py``, and
  ``lava/utils/weightutils.py``): 8-bit weight mantissa (mixed sign: even values in
  [-256, 254]), 17-bit unsigned threshold mantissa, 13-bit signed bias mantissa with a 3-bit
  exponent, 24-bit state. The plan builds values inside these ranges and counts clipping.

Cores per population = max(⌈neurons / 8192⌉, ⌈synapses / 937,500⌉, ⌈inputs / 4096⌉,
number of split parts). Spiking MaxPool gates run as host processes and are listed, not counted;
so are the host processes of current max-pools (their neurons are counted).

What is certain and what is estimated. The chip totals (1,048,576 neurons, 120 M synapses) and
the number formats are published; a network above a chip total, or a weight outside the 8-bit
mantissa, certainly does not fit one chip: a ``CompileError``. The per-core figures (and so
the core count, and a convolution whose neurons have more inputs than a core's axons) are
estimates: they become warnings in ``res["warnings"]`` (printed, and in report.json), and
errors only with ``strict=True`` (``--strict-limits``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from snncompile.backends.loihi.fixed import BIAS_MANT_MAX, STATE_MAX, VTH_MANT_MAX, WEIGHT_MAX
from snncompile.backends.loihi.plan import AXONS_PER_CORE, LoihiPlan
from snncompile.ir.diagnostics import CompileError, Diagnostic

LIMITS = {
    "cores_per_chip": 128,
    "neurons_per_chip": 1_048_576,
    "synapses_per_chip": 120_000_000,
    "neurons_per_core": 8192,
    "synapses_per_core": 937_500,
    "axons_per_core": AXONS_PER_CORE,
    "weight_mantissa": [-256, 254],
    "vth_mantissa_max": VTH_MANT_MAX,
    "bias_mantissa_max": BIAS_MANT_MAX,
    "state_max": STATE_MAX,
}
SOURCES = {
    "cores_per_chip, neurons_per_core, synapses_per_core":
        "Intel Labs, 'Taking Neuromorphic Computing to the Next Level with Loihi 2', technology "
        "brief, 2021 (1 M neurons, 120 M synapses, 128 neuro-cores per chip; per core = chip/128)",
    "axons_per_core":
        "Loihi 1: 4096 input axons per core (Davies et al., IEEE Micro 38(1), 2018); Loihi 2's "
        "figure is not public: an estimate (wider dense synapses are split across cores)",
    "number formats": "lava-nc 0.10.0 lava/proc/lif/models.py (PyLifModelBitAcc), "
                      "lava/utils/weightutils.py (8-bit weights, LSB dropped for mixed sign)",
}


#: which limits are published (certain) and which are our estimates
ESTIMATED = ("neurons_per_core", "synapses_per_core", "axons_per_core",
             "neuro_cores (a count built on the per-core estimates)")


def _receptive(plan: LoihiPlan, s: Any) -> tuple[np.ndarray, np.ndarray]:
    """(inputs per neuron of ``s.dst``, which source units ``s`` reads at all)."""
    p = plan.pops[s.dst]
    if s.kind == "dense":
        nz = s.weight_int != 0
        return nz.sum(1).astype(np.float64).reshape(-1)[:p.size], nz.any(0)
    import torch

    w = torch.from_numpy((s.weight_int != 0).astype(np.float64))
    with torch.enable_grad():
        x = torch.ones((1, *plan.pops[s.src].shape), dtype=torch.float64, requires_grad=True)
        y = torch.nn.functional.conv2d(x, w, None, s.stride, s.padding, s.dilation, s.groups)
        y.sum().backward()
    return y.detach().numpy().ravel()[:p.size], x.grad.numpy().ravel() > 0


def _inputs(plan: LoihiPlan, name: str) -> tuple[int, int, int]:
    """(largest fan-in of one neuron, largest fan-in within one synapse, distinct source units
    read) of population ``name``."""
    total, part_max, used = None, 0, 0
    seen: dict[tuple[str, int], np.ndarray] = {}
    for s in plan.synapses_into(name):
        per, reads = _receptive(plan, s)
        part_max = max(part_max, int(per.max()) if per.size else 0)
        total = per if total is None else total + per
        key = (s.src, s.delay)
        seen[key] = reads if key not in seen else seen[key] | reads
    used = sum(int(r.sum()) for r in seen.values())
    return (int(total.max()) if total is not None else 0), part_max, used


def estimate(plan: LoihiPlan) -> dict[str, Any]:
    """Neurons, synapses and an estimate of Loihi 2 neuro-cores per population (module doc)."""
    layers = []
    parts = {}
    for sp in plan.splits:
        parts[sp["synapse"].split("->")[1]] = parts.get(sp["synapse"].split("->")[1], 0) \
            + sp["parts"]
    for name, p in plan.pops.items():
        if p.kind in ("input", "maxpool"):
            continue
        syns = plan.synapses_into(name)
        n_syn = sum(s.count for s in syns)
        weights = sum(int(np.count_nonzero(s.weight_int)) for s in syns)
        fan_in, fan_in_part, inputs = _inputs(plan, name)
        by = {"neurons": math.ceil(p.size / LIMITS["neurons_per_core"]),
              "synapses": math.ceil(n_syn / LIMITS["synapses_per_core"]),
              "axons": math.ceil(inputs / LIMITS["axons_per_core"]),
              "split_parts": parts.get(name, 0)}
        cores = max(1, *by.values())
        layers.append({"name": name, "kind": p.kind, "neurons": p.size, "synapses": n_syn,
                       "stored_weights": weights, "fan_in_max": fan_in,
                       "fan_in_max_per_synapse": fan_in_part, "distinct_inputs": inputs,
                       "cores": cores, "cores_bound_by": max(by, key=lambda k: by[k]),
                       "depth": p.depth, "delay_lines": sum(1 for s in syns if s.delay)})
    cores = sum(ly["cores"] for ly in layers)
    return {"neurons": sum(ly["neurons"] for ly in layers),
            "synapses": sum(ly["synapses"] for ly in layers),
            "neuro_cores": cores, "chips": math.ceil(cores / LIMITS["cores_per_chip"]),
            "pipeline_depth": plan.depth, "layers": layers, "splits": list(plan.splits),
            "limits": LIMITS, "estimated_limits": list(ESTIMATED),
            "host_maxpool_gates": [n for n, p in plan.pops.items() if p.kind == "maxpool"],
            "host_current_maxpools": [n for n, p in plan.pops.items() if p.pool is not None],
            "limit_sources": SOURCES}


def check(plan: LoihiPlan, res: dict[str, Any] | None = None,
          strict: bool = False) -> dict[str, Any]:
    """``estimate`` plus the limit check.

    Raises a CompileError listing every certain violation (and, with ``strict``, every
    estimated one); estimated violations otherwise go to ``res["warnings"]`` (one line each).
    """
    res = res or estimate(plan)
    bad, warn = [], []
    for s in plan.syns:
        if s.weight_int.size and np.abs(s.weight_int).max() > WEIGHT_MAX:
            bad.append(Diagnostic("weight mantissa out of the 8-bit range", node=s.dst))
    for key, what in (("neurons", "neurons"), ("synapses", "synapses")):
        if res[key] > LIMITS[f"{what}_per_chip"]:
            bad.append(Diagnostic(f"{res[key]} {what} > {LIMITS[f'{what}_per_chip']} on one "
                                  "Loihi 2 chip (published figure)", hint="use a smaller model"))
    for ly in res["layers"]:
        if ly["fan_in_max_per_synapse"] > LIMITS["axons_per_core"]:
            warn.append(Diagnostic(
                f"a neuron has {ly['fan_in_max_per_synapse']} inputs through one convolution, "
                f"more than the estimated {LIMITS['axons_per_core']} input axons of a core",
                node=ly["name"], origin=plan.pops[ly["name"]].origin or None,
                severity="warning", hint="estimate: the Loihi 2 figure is not public"))
    if res["neuro_cores"] > LIMITS["cores_per_chip"]:
        warn.append(Diagnostic(
            f"the network needs ~{res['neuro_cores']} neuro-cores (estimate); one Loihi 2 chip "
            f"has {LIMITS['cores_per_chip']}", severity="warning"))
    if strict:
        bad.extend(warn)
        warn = []
    if bad:
        raise CompileError("the network does not fit Loihi 2 limits", bad)
    res["warnings"] = [str(d) for d in warn]
    return res
