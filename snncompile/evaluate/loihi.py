"""Evaluate a spiking IR on Lava (``--target loihi``): report.json's dict, tables and plots.

``evaluate_loihi`` is the ``loihi`` entry of ``snncompile.evaluate.EVALUATORS``. It takes the
Lava network (built and checked against Loihi 2 limits by ``backends.loihi.compile``), runs
the evaluation samples through one Lava network, and runs the same samples on the GPU
simulator in the matching numeric mode (``lava_mode=fixed``: the Loihi fixed-point mode, spike
trains compared one to one; ``float``: the float simulator). The report is the GPU target's,
plus ``lava_mode``, ``gpu_agreement``, ``gpu_spike_ratio``, ``spike_exact``,
``lava_samples_per_second``,
``resources`` and ``fixed_point`` (every rounded or clipped value, per layer).

Under ``torchrun`` the samples are split into contiguous blocks, one per rank; each rank builds
and runs its own Lava network on its block and checks it spike for spike against its own
reference run; the per-rank results are all-gathered in sample order (``SimResult.concat``),
``spike_exact`` holds when every rank's check holds, and ``lava_samples_per_second`` is the
aggregate (all samples / the slowest rank's wall time). A Lava run holds its block in memory
(the network's input buffer is built for all its samples at once).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from snncompile.evaluate.gpu import ann_accuracy  # noqa: F401  (re-exported)
from snncompile.evaluate.report import build_report, plot_report, print_report
from snncompile.interp import run_ann
from snncompile.ir.diagnostics import CompileError, Diagnostic
from snncompile.ir.graph import Graph
from snncompile.options import CompileOptions

#: Lava runs ~1 ms per process per step on a CPU: without --eval-samples, evaluate this many
DEFAULT_LAVA_SAMPLES = 100


def _spike_exact(lava: Any, ref: Any) -> tuple[bool, int]:
    if lava.spike_trains is None or ref.spike_trains is None:
        return False, -1
    diff = sum(int((lava.spike_trains[k] != ref.spike_trains[k]).sum())
               for k in lava.spike_trains)
    pots = lava.potentials is not None and ref.potentials is not None and np.array_equal(
        lava.potentials, ref.potentials.reshape(lava.potentials.shape))
    return diff == 0 and pots, diff


def _merge_counts(dicts: list[dict[str, int] | None]) -> dict[str, int] | None:
    if any(d is None for d in dicts):
        return None
    out: dict[str, int] = {}
    for d in dicts:
        for k, v in d.items():  # type: ignore[union-attr]
            out[k] = out.get(k, 0) + v
    return out


def evaluate_loihi(net: Any, ann: Graph | None, ev: Any, opts: CompileOptions,
                   out_dir: Path, *,
                   model: str = "", pipeline: Any = None, ctx: Any = None) -> dict[str, Any]:
    """Run ``net`` (the loihi target's ``CompiledNetwork``: Lava processes) on ``ev`` (a
    labelled ``Dataset`` or ``Source``) and its torch reference on the same samples; returns
    report.json's dict. Steps: the samples (``_samples``), this rank's block run in Lava and
    in the reference (``_run_block``), the blocks gathered, the report (``_lava_entries``),
    printed and plotted by rank 0 (``_print_lava``)."""
    from snncompile import distributed
    from snncompile.backends.common import SimResult

    if ev is None or not getattr(ev, "labelled", getattr(ev, "y", None) is not None):
        raise CompileError("no labelled evaluation data", [Diagnostic(
            "the loihi target measures accuracy", hint="give --dataset digits or --eval F.npz")])
    src = _samples(ev, opts)
    main = distributed.is_main()
    block = distributed.shard(len(src))  # this rank's samples
    t0 = time.perf_counter()
    mine = _run_block(net, ann, src, block, opts) if len(block) else None
    ranks = [r for r in distributed.all_gather(mine) if r is not None]
    result = SimResult.concat([r["result"] for r in ranks])
    labels = np.concatenate([r["y"] for r in ranks])
    if main:
        net.save(out_dir)
    ann_acc = None if ann is None else float(
        np.mean(np.concatenate([r["ann"] for r in ranks]) == labels))
    report = build_report(
        result, net.graph, labels, ann_accuracy=ann_acc,  # None: a .nir input has no ANN
        model=model, target="loihi", pipeline=pipeline.spec() if pipeline is not None else "",
        options=dataclasses.asdict(opts), notes=getattr(ctx, "notes", None),
        seconds=time.perf_counter() - t0)
    report.update(_lava_entries(net, ranks, result, labels, opts))
    if main:
        _print_lava(report)
        plot_report(report, out_dir)
    return report


def _samples(ev: Any, opts: CompileOptions) -> Any:
    """The evaluation ``Source``: without ``eval_samples``, at most ``DEFAULT_LAVA_SAMPLES``
    spread over the set (rank 0 says so)."""
    from snncompile import distributed
    from snncompile.backends.common import as_source

    src = as_source(ev)
    if opts.eval_samples is None and len(src) > DEFAULT_LAVA_SAMPLES:
        if distributed.is_main():
            print(f"note: Lava simulates ~tens of samples/s; evaluating "
                  f"{DEFAULT_LAVA_SAMPLES} of {len(src)} (set --eval-samples)", file=sys.stderr)
        src = src.spread(DEFAULT_LAVA_SAMPLES)
    return src


def _run_block(net: Any, ann: Graph | None, src: Any, block: range,
               opts: CompileOptions) -> dict[str, Any]:
    """This rank's samples in Lava and in the reference of the same numeric mode (fixed: the
    torch Loihi reference, spike trains compared here; float: the gpu simulator), and the
    ANN's predictions; the results without their spike trains (not gathered)."""
    from snncompile.backends.common import ann_input
    from snncompile.backends.gpu import compile as gpu_compile
    from snncompile.backends.loihi import compile_reference as loihi_reference

    fixed = opts.lava_mode == "fixed"
    part = src.take(len(block), offset=block.start).materialize()
    result = net.run(part.x, opts.timesteps, record=fixed)
    ref_net = (loihi_reference if fixed else gpu_compile)(net.graph, opts)
    ref = ref_net.run(part.x, opts.timesteps, record=fixed)
    exact, mismatched = _spike_exact(result, ref) if fixed else (None, None)
    ann_pred = None if ann is None else run_ann(
        ann, ann_input(net.graph, part.x), batch_size=opts.batch_size).reshape(
        len(part.x), -1).argmax(1)
    strip = dict(spike_trains=None, potentials=None)  # per-rank checks done; not gathered
    return {"result": dataclasses.replace(result, **strip),
            "ref": dataclasses.replace(ref, **strip), "y": part.y, "ann": ann_pred,
            "exact": exact, "mismatched": mismatched, "run": net.last_run,
            "input_clipped": getattr(net, "input_clipped", 0),
            "saturations": getattr(ref_net, "saturations", None) if fixed else None}


def _lava_entries(net: Any, ranks: list[dict[str, Any]], result: Any, labels: np.ndarray,
                  opts: CompileOptions) -> dict[str, Any]:
    """The report's Lava entries: agreement and spike ratio with the reference, the
    spike-exact check of every rank, speed, resources and fixed-point counts."""
    from snncompile.backends.common import SimResult

    fixed = opts.lava_mode == "fixed"
    resources = net.resources
    ref = SimResult.concat([r["ref"] for r in ranks])
    run = ranks[0]["run"]
    lava_wall = max(r["run"].seconds for r in ranks)
    samples_per_second = len(labels) / lava_wall if len(ranks) > 1 else run.samples_per_second
    agreement = float(np.mean(result.predictions[-1] == ref.predictions[-1]))
    spikes_ref = sum(float(v.sum()) for v in ref.layer_spikes.values())
    spike_ratio = sum(float(v.sum()) for v in result.layer_spikes.values()) / max(spikes_ref, 1)
    exact = all(r["exact"] for r in ranks) if fixed else None
    mismatched = (sum(r["mismatched"] for r in ranks) if fixed and all(
        r["mismatched"] >= 0 for r in ranks) else (-1 if fixed else None))
    return {
        "lava_mode": opts.lava_mode,
        "lava_tag": "fixed_pt" if fixed else "floating_pt",
        "gpu_agreement": agreement,
        "gpu_reference": "gpu loihi fixed-point mode" if fixed else "gpu float simulator",
        "gpu_accuracy": float(ref.accuracy_by_timestep(labels)[-1]),
        "gpu_spike_ratio": spike_ratio,  # total Lava spikes / total GPU spikes
        "spike_exact": exact,
        "spikes_mismatched": mismatched,
        "lava_samples_per_second": samples_per_second,
        "lava_ranks": [{"samples": r["result"].samples, "spike_exact": r["exact"],
                        "samples_per_second": r["run"].samples_per_second,
                        "seconds": r["run"].seconds} for r in ranks],
        "lava_ms_per_step": run.ms_per_step,
        "lava_steps": run.steps,
        "lava_processes": run.processes,
        "lava_seconds": {"build": run.build_seconds, "compile": run.compile_seconds,
                         "steps": run.run_seconds,
                         "read_back": run.get_seconds, "stop": run.stop_seconds},
        "resources": resources,
        "fixed_point": {"input_frac_bits": net.plan.input_frac_bits,
                        "input_clipped": sum(r["input_clipped"] for r in ranks),
                        "layers": net.plan.counts,
                        "state_saturations": _merge_counts([r["saturations"] for r in ranks])
                        if fixed else None},
    }


def _print_lava(report: dict[str, Any]) -> None:
    """The tables, the Lava line (agreement, spike-exact, speed) and the resources."""
    print_report(report)
    exact, mismatched = report["spike_exact"], report["spikes_mismatched"]
    resources = report["resources"]
    exact_s = ("" if exact is None else
               f", spike-exact vs GPU loihi mode: {'yes' if exact else f'NO ({mismatched})'}")
    print(f"lava {report['lava_tag']}: agreement with {report['gpu_reference']} "
          f"{report['gpu_agreement']:.4f}, spikes ×{report['gpu_spike_ratio']:.4f}{exact_s}; "
          f"{report['lava_samples_per_second']:.2f} samples/s "
          f"({report['lava_ms_per_step']:.1f} ms/step, {report['lava_processes']} processes)")
    print(f"resources: {resources['neurons']} neurons, {resources['synapses']} synapses, "
          f"~{resources['neuro_cores']} Loihi 2 neuro-cores (limits: "
          f"{resources['limits']['neurons_per_core']} neurons, "
          f"{resources['limits']['synapses_per_core']} synapses per core, estimates)")
    for sp in resources.get("splits", []):
        print(f"resources: {sp['synapse']} has {sp['fan_in']} inputs per neuron; split into "
              f"{sp['parts']} synapse groups of <= {sp['inputs_per_part']} inputs (one core "
              f"each at least; {sp['axons_per_core_estimate']} axons per core, estimate)")
    for w in resources.get("warnings", []):
        print(f"warning: Loihi 2 limits (estimate): {w}", file=sys.stderr)
