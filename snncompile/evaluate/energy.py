"""Energy and latency estimates of a simulation run: report.json's ``energy`` block.

Counts (per sample, exact for the simulated run):

- synaptic ops of a spiking layer = Σ_t Σ_units messages(t) · fan-out (``SimResult.layer_synops``:
  a binary spike reaches every synapse it drives, each an accumulate of one weight);
- input ops = Σ_t Σ_units [x(t) ≠ 0] · fan-out of the Input (``SimResult.input_ops``): the first
  layer multiplies each nonzero analog value (or frame value) by its weights, every step;
- neuron updates = (spiking and readout neurons) · t (a time-stepped chip updates every neuron
  every step);
- the ANN's MACs = Σ over Conv2d and Dense layers of output units · fan-in (Cin/groups·kh·kw, or
  in_features), dense weights; pooling, BatchNorm and bias adds are not counted. The layers are
  the spiking graph's, whose shapes are the ANN's (BatchNorms folded into the weights).

Energies (estimates, joules per sample), with the constants below:

    E_ANN,45nm(t)   = 4.6 pJ · MACs                      (one forward pass, independent of t)
    E_SNN,45nm(t)   = 0.9 pJ · synops(t) + 4.6 pJ · input ops(t)
    E_SNN,Loihi(t)  = 23.6 pJ · (synops(t) + input ops(t)) + 81 pJ · neuron updates(t)

``synops(t)`` sums the ops of steps 1..t (``SimResult.step_synops``; where a backend counted
whole runs only, the run's ops are spread evenly over its steps and the block says so). The
45 nm figures are 32-bit float operations (Horowitz, ISSCC 2014); the SNN's 45 nm estimate leaves
out the neuron updates (no per-update figure there). The Loihi figures are the first Loihi's
(14 nm) pre-silicon per-operation energies (Davies et al., IEEE Micro 2018, Table 2): the
minimum energy of a synaptic spike op and the active neuron update; static power, spike routing
between cores and the host's input are not included.

Latency(t) = t · step time: ``--step-time`` (seconds) when given, else the Loihi estimate
t_step = 465 ns (mesh-wide barrier sync, 32 tiles) + (ops per step · 3.5 ns + neurons · 8.4 ns)
/ cores, with the work spread evenly over cores = ⌈neurons / 1024⌉ (1024 compartments per core);
Davies et al. 2018, Table 2 (maximum time per synaptic op, active neuron update).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from snncompile.ir.graph import Graph
from snncompile.ir.nodes import Conv2d, Dense, Output

#: joules per operation, and where each figure comes from
E_AC_45NM = 0.9e-12
E_MAC_45NM = 4.6e-12
E_SYNOP_LOIHI = 23.6e-12
E_NEURON_LOIHI = 81e-12
T_SYNOP_LOIHI = 3.5e-9
T_NEURON_LOIHI = 8.4e-9
T_BARRIER_LOIHI = 465e-9
NEURONS_PER_CORE_LOIHI = 1024

HOROWITZ = ("M. Horowitz, 'Computing's energy problem (and what we can do about it)', ISSCC "
            "2014: 45 nm, 0.9 V; 32-bit float add 0.9 pJ, 32-bit float multiply 3.7 pJ "
            "(a multiply-accumulate 4.6 pJ)")
DAVIES = ("M. Davies et al., 'Loihi: A Neuromorphic Manycore Processor with On-Chip Learning', "
          "IEEE Micro 38(1), 2018, Table 2 (pre-silicon circuit simulation, 14 nm): energy per "
          "synaptic spike op (min) 23.6 pJ, per neuron update (active / inactive) 81 / 52 pJ; "
          "time per synaptic spike op (max) 3.5 ns, per neuron update (active / inactive) "
          "8.4 / 5.3 ns; mesh-wide barrier sync 113-465 ns (1-32 tiles); 1024 compartments per "
          "core")


def constants() -> dict[str, Any]:
    """The figures every estimate uses, with their sources (report.json states them)."""
    return {
        "ac_45nm_pJ": E_AC_45NM * 1e12, "mac_45nm_pJ": E_MAC_45NM * 1e12,
        "synop_loihi_pJ": E_SYNOP_LOIHI * 1e12, "neuron_update_loihi_pJ": E_NEURON_LOIHI * 1e12,
        "synop_loihi_ns": T_SYNOP_LOIHI * 1e9, "neuron_update_loihi_ns": T_NEURON_LOIHI * 1e9,
        "barrier_loihi_ns": T_BARRIER_LOIHI * 1e9, "neurons_per_core": NEURONS_PER_CORE_LOIHI,
        "sources": {"45nm": HOROWITZ, "loihi": DAVIES},
        "note": "estimates from published per-operation figures, not measurements of a chip; "
                "the 45 nm SNN figure leaves out neuron updates, the Loihi figure static power "
                "and spike routing",
    }


def ann_macs(graph: Graph) -> list[dict[str, Any]]:
    """Multiply-accumulates per sample of each Conv2d and Dense layer (dense weights)."""
    out = []
    for name, op in graph.topo():
        if isinstance(op, Conv2d):
            fan_in = int(np.prod(op.weight.shape[1:]))  # Cin/groups · kh · kw
        elif isinstance(op, Dense):
            fan_in = int(op.weight.shape[1])
        else:
            continue
        out.append({"name": name, "macs": int(np.prod(graph.shape(name))) * fan_in})
    return out


def _neurons(graph: Graph, result: Any) -> dict[str, int]:
    """Units updated every step: the spiking layers and the readout."""
    units = dict(result.layer_neurons)
    ro = graph.readout_name
    if ro is not None and not isinstance(graph.op(ro), Output) and ro not in units:
        units[ro] = int(np.prod(graph.shape(ro)))
    return units


def _cumulative(total: float, per_step: np.ndarray | None, samples: int,
                steps: int) -> np.ndarray:
    """Ops of steps 1..t per sample, t = 1..T (spread evenly without per-step counts)."""
    if per_step is None:
        return total * np.arange(1, steps + 1) / steps
    return np.cumsum(np.asarray(per_step, np.float64)) / max(samples, 1)


def step_seconds(ops_per_step: float, neurons: int) -> float:
    """Estimated time of one Loihi step (module docstring)."""
    cores = max(1, math.ceil(neurons / NEURONS_PER_CORE_LOIHI))
    return T_BARRIER_LOIHI + (ops_per_step * T_SYNOP_LOIHI + neurons * T_NEURON_LOIHI) / cores


def energy_block(result: Any, graph: Graph, accuracy: np.ndarray, *,
                 step_time: float | None = None,
                 ann_accuracy: float | None = None) -> dict[str, Any]:
    """report.json's ``energy`` block for a ``SimResult`` of ``graph`` (module docstring)."""
    steps, n = result.timesteps, result.samples
    units = _neurons(graph, result)
    syn = {k: float(v.mean()) for k, v in result.layer_synops.items()}
    synops = float(result.synops.mean()) if result.synops.size else 0.0
    inputs = float(result.input_ops.mean()) if result.input_ops is not None else 0.0
    syn_t = _cumulative(synops, result.step_synops, n, steps)
    in_t = _cumulative(inputs, result.step_input_ops if result.input_ops is not None
                       else None, n, steps)
    neurons = sum(units.values())
    upd_t = neurons * np.arange(1, steps + 1, dtype=np.float64)
    e45 = E_AC_45NM * syn_t + E_MAC_45NM * in_t
    eloihi = E_SYNOP_LOIHI * (syn_t + in_t) + E_NEURON_LOIHI * upd_t
    given = step_time is not None
    dt = float(step_time) if given else step_seconds((synops + inputs) / steps, neurons)
    macs = ann_macs(graph)
    total_macs = sum(m["macs"] for m in macs)
    layers = [{"name": k, "neurons": v, "synaptic_ops": syn.get(k, 0.0),
               "neuron_updates": v * steps,
               "spikes": float(result.layer_spikes[k].mean()) if k in result.layer_spikes
               else 0.0} for k, v in units.items()]
    return {
        "per_sample": {
            "synaptic_ops": synops, "input_ops": inputs, "neuron_updates": neurons * steps,
            "ann_macs": total_macs,
            "snn_45nm_J": float(e45[-1]), "snn_loihi_J": float(eloihi[-1]),
            "ann_45nm_J": E_MAC_45NM * total_macs,
        },
        "layers": layers, "input": {"name": graph.input_name, "ops": inputs},
        "ann_layers": macs,
        "latency": {"step_seconds": dt, "seconds": dt * steps,
                    "step_source": "--step-time" if given else
                    "estimate from Davies et al. 2018, Table 2 (see energy.py)"},
        "by_timestep": {
            "t": list(range(1, steps + 1)), "accuracy": [float(a) for a in accuracy],
            "synaptic_ops": syn_t.tolist(), "input_ops": in_t.tolist(),
            "neuron_updates": upd_t.tolist(), "snn_45nm_J": e45.tolist(),
            "snn_loihi_J": eloihi.tolist(),
            "latency_seconds": (dt * np.arange(1, steps + 1)).tolist()},
        "per_step_counts": "counted" if result.step_synops is not None
        else "not recorded by this backend: a run's ops spread evenly over its steps",
        "ann_accuracy": ann_accuracy,
        "constants": constants(),
    }


def summary_lines(block: dict[str, Any]) -> list[str]:
    """The printed summary's lines."""
    p, lat = block["per_sample"], block["latency"]
    return [
        f"ops/sample: {p['synaptic_ops']:.4g} synaptic + {p['input_ops']:.4g} input, "
        f"{p['neuron_updates']:.4g} neuron updates; ANN {p['ann_macs']:.4g} MACs",
        f"energy/sample (estimates): SNN {_joules(p['snn_45nm_J'])} at 45 nm, "
        f"{_joules(p['snn_loihi_J'])} on Loihi; ANN {_joules(p['ann_45nm_J'])} at 45 nm; "
        f"latency {_seconds(lat['seconds'])} ({_seconds(lat['step_seconds'])}/step)"]


def _joules(v: float) -> str:
    for unit, scale in (("J", 1.0), ("mJ", 1e-3), ("µJ", 1e-6), ("nJ", 1e-9)):
        if abs(v) >= scale:
            return f"{v / scale:.3g} {unit}"
    return f"{v * 1e12:.3g} pJ"


def _seconds(v: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if abs(v) >= scale:
            return f"{v / scale:.3g} {unit}"
    return f"{v * 1e9:.3g} ns"


def plot_energy(report: dict[str, Any], out_dir: Any) -> Any:
    """accuracy_vs_energy.png: accuracy after t steps against the estimated energy of steps
    1..t (45 nm and Loihi), with the ANN's point."""
    import matplotlib

    matplotlib.use("Agg")
    from pathlib import Path

    import matplotlib.pyplot as plt

    block = report["energy"]
    by_t = block["by_timestep"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (("snn_45nm_J", "SNN, 45 nm"), ("snn_loihi_J", "SNN, Loihi")):
        ax.plot(by_t[key], by_t["accuracy"], marker=".", label=label)
    if block.get("ann_accuracy") is not None:
        ax.plot([block["per_sample"]["ann_45nm_J"]], [block["ann_accuracy"]], "k*",
                markersize=10, label="ANN, 45 nm")
    ax.set_xscale("log")
    ax.set_xlabel("estimated energy per sample of steps 1..t (J)")
    ax.set_ylabel("accuracy after t steps")
    ax.set_title(f"{Path(report['model']).name}: accuracy vs energy (estimates)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(out_dir) / "accuracy_vs_energy.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


__all__ = ["ann_macs", "constants", "energy_block", "plot_energy", "step_seconds",
           "summary_lines"]
