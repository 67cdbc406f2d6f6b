"""report.json, the printed accuracy/spike tables and the PNG plots of a simulation run.

``build_report`` assembles the DESIGN.md fields from a ``SimResult``
(``snncompile.backends.common``): accuracy after every step t (prediction at t = argmax of the
readout potential integrated up to t), the ANN accuracy on the same samples, spikes and synaptic
operations per sample, and per spiking layer its neuron count, threshold (a scalar, or [min,
max] when channel-wise), firing rate = spikes / (neurons · T) and spikes per sample.
``print_report`` prints the tables; ``plot_report`` writes accuracy_vs_timestep.png (with the
ANN line) and firing_rate.png (matplotlib, Agg backend). The ``energy`` block (synaptic ops,
neuron updates, the ANN's MACs, estimated energies and latency at every t, with their constants
and sources) is ``snncompile.evaluate.energy``'s, and so is accuracy_vs_energy.png.
"""

from __future__ import annotations

import platform
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from snncompile.evaluate.energy import energy_block, plot_energy, summary_lines
from snncompile.ir.graph import Graph
from snncompile.ir.nodes import Layer


def versions() -> dict[str, str | None]:
    """Versions of the interpreter and of the packages a result depends on."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist in ("torch", "numpy", "onnx", "lava-nc", "snncompile"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    if out["snncompile"] is None:
        from snncompile._version import __version__

        out["snncompile"] = __version__
    return out


def selected_steps(steps: int) -> list[int]:
    """1, 2, 4, 8, ... up to T, and T itself."""
    out, t = [], 1
    while t < steps:
        out.append(t)
        t *= 2
    return [*out, steps]


def _threshold(graph: Graph, name: str) -> float | list[float]:
    op = graph.op(name)
    th = op.neuron.threshold if isinstance(op, Layer) and op.neuron is not None else None
    if th is None:
        return 0.0
    lo, hi = float(th.min()), float(th.max())
    return lo if lo == hi else [lo, hi]


def build_report(result: Any, graph: Graph, labels: np.ndarray, *, ann_accuracy: float | None,
                 model: str, target: str, pipeline: str = "", options: dict[str, Any] | None = None,
                 notes: dict[str, Any] | None = None,
                 seconds: float | None = None) -> dict[str, Any]:
    """report.json's dict for a ``SimResult`` (``result``) of ``graph`` on labelled data."""
    acc = result.accuracy_by_timestep(labels)
    steps = result.timesteps
    rates = result.firing_rates()
    layers = []
    for name in result.layer_spikes:
        layers.append({
            "name": name, "op": type(graph.op(name)).__name__,
            "neuron": graph.op(name).neuron.model,  # type: ignore[union-attr]
            "neurons": result.layer_neurons[name], "threshold": _threshold(graph, name),
            "firing_rate": rates[name],
            "spikes_per_sample": float(result.layer_spikes[name].mean())})
    return {
        "model": model, "target": target, "timesteps": steps,
        "input": "event frames: frame t is the input of step t; accuracy_by_timestep[t] is "
                 "the accuracy after t frames" if result.input_frames else "static",
        "ann_accuracy": ann_accuracy, "snn_accuracy": float(acc[-1]),
        "accuracy_by_timestep": {str(t + 1): float(a) for t, a in enumerate(acc)},
        "spikes_per_sample": result.spikes_per_sample(),
        "synaptic_ops_per_sample": float(result.synops.mean()) if result.synops.size else 0.0,
        "layers": layers, "samples": result.samples,
        "seconds": float(seconds if seconds is not None else result.seconds),
        "device": result.device, "versions": versions(), "pipeline": pipeline,
        "options": options or {}, "notes": notes or {},
        "energy": energy_block(result, graph, acc, ann_accuracy=ann_accuracy,
                               step_time=(options or {}).get("step_time")),
    }


def print_report(report: dict[str, Any], file: TextIO | None = None) -> None:
    """The accuracy-by-timestep table (selected t vs the ANN) and the per-layer table."""
    import sys

    f = file or sys.stdout
    ann = report.get("ann_accuracy")
    by_t = report["accuracy_by_timestep"]
    print(f"{report['model']} -> {report['target']}: {report['samples']} samples, "
          f"T={report['timesteps']}, {report['seconds']:.2f} s on {report.get('device', '?')}",
          file=f)
    col = "frames" if report.get("input", "static") != "static" else "t"  # after t frames
    print(f"{col:>6}  {'SNN acc':>8}  {'ANN acc':>8}  {'gap':>7}", file=f)
    for t in selected_steps(report["timesteps"]):
        a = by_t[str(t)]
        gap = f"{a - ann:+.4f}" if ann is not None else "-"
        ann_s = f"{ann:.4f}" if ann is not None else "-"
        print(f"{t:>6}  {a:>8.4f}  {ann_s:>8}  {gap:>7}", file=f)
    print(f"spikes/sample {report['spikes_per_sample']:.1f}   synaptic ops/sample "
          f"{report['synaptic_ops_per_sample']:.4g}", file=f)
    for line in summary_lines(report["energy"]) if "energy" in report else ():
        print(line, file=f)
    w = max([8, *(len(ly["op"]) for ly in report["layers"])])  # CurrentMaxPool2d: 16
    print(f"{'layer':<24} {'op':<{w}} {'neurons':>8} {'threshold':>17} {'rate':>7} "
          f"{'spikes/sample':>14}", file=f)
    for ly in report["layers"]:
        th = ly["threshold"]
        th_s = f"{th:.4g}" if isinstance(th, float) else f"[{th[0]:.3g}, {th[1]:.3g}]"
        print(f"{ly['name'][:24]:<24} {ly['op']:<{w}} {ly['neurons']:>8} {th_s:>17} "
              f"{ly['firing_rate']:>7.4f} {ly['spikes_per_sample']:>14.1f}", file=f)


def plot_report(report: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """Write accuracy_vs_timestep.png and firing_rate.png into ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    by_t = report["accuracy_by_timestep"]
    ts = [int(t) for t in by_t]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(ts, [by_t[str(t)] for t in ts], marker=".", label="SNN")
    if report.get("ann_accuracy") is not None:
        ax.axhline(report["ann_accuracy"], color="k", ls="--", label="ANN")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("frames t (one per step)" if report.get("input", "static") != "static"
                  else "timestep t")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{Path(report['model']).name}: accuracy vs timestep")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    p1 = out / "accuracy_vs_timestep.png"
    fig.savefig(p1, dpi=100)
    plt.close(fig)

    names = [ly["name"] for ly in report["layers"]]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(names) + 2), 4))
    ax.bar(range(len(names)), [ly["firing_rate"] for ly in report["layers"]])
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("firing rate (spikes / neuron / step)")
    ax.set_title(f"firing rate per layer (T={report['timesteps']})")
    fig.tight_layout()
    p2 = out / "firing_rate.png"
    fig.savefig(p2, dpi=100)
    plt.close(fig)
    return [p1, p2, *([plot_energy(report, out)] if "energy" in report else [])]
