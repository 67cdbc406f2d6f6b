"""Evaluate a spiking IR on the gpu simulator: the report.json dict, tables and plots.

``evaluate_gpu`` is the ``gpu`` entry of ``snncompile.evaluate.EVALUATORS``: ANN accuracy from
the ANN reference interpreter (``ann``, the frontend graph) on the evaluation set, one
simulation run to T giving the accuracy at every t ≤ T, then the report (``report``).

The evaluation set streams (``backends.common.run_stream``): batches of ``--batch-size`` come
from the data source (a DataLoader whose workers decode ahead), each is simulated and run
through the ANN,
and the per-batch ``SimResult``s are merged (``SimResult.concat``) — the same numbers as one run
on the whole array, since samples are independent. Under ``torchrun`` each rank takes its block
of batches and the batches' results are all-gathered in global batch order; rank 0 prints and
writes. Poisson input is seeded per global batch (seed + 7919·b), so it does not depend on the
number of ranks either (batch 0 is the seed of a one-batch run).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np

from snncompile.evaluate.report import build_report, plot_report, print_report
from snncompile.interp import run_ann
from snncompile.ir.diagnostics import CompileError, Diagnostic
from snncompile.ir.graph import Graph
from snncompile.options import CompileOptions


def ann_accuracy(ann: Graph, x: np.ndarray, y: np.ndarray, batch_size: int = 256,
                 memory_budget: str | int | None = None) -> float:
    """ANN accuracy mean_n [argmax ann(x_n) = y_n], in batches whose values fit
    ``memory_budget`` (bytes, or a ``"4G"`` string; ``snncompile.memory``). ``x`` and ``y``
    are checked first (``validate.samples``, ``validate.labels``: one integer class per
    sample)."""
    from snncompile import validate
    from snncompile.memory import room_bytes

    x = validate.samples(x, "x", shape=ann.shape(ann.input_name))
    y = validate.labels(y, len(x), validate.classes(ann), "y")
    room = room_bytes(memory_budget)
    out = run_ann(ann, x, batch_size=batch_size, max_bytes=room)
    return float(np.mean(out.reshape(len(x), -1).argmax(1) == y))


def evaluate_gpu(net: Any, ann: Graph | None, ev: Any, opts: CompileOptions, out_dir: Path, *,
                 model: str = "", pipeline: Any = None, ctx: Any = None) -> dict[str, Any]:
    """Simulate ``net`` (the gpu target's ``CompiledNetwork``) on ``ev`` (a labelled
    ``Dataset`` or ``Source``), write plots, print the tables and return report.json's dict."""
    from snncompile import distributed
    from snncompile.backends.common import run_stream

    if ev is None or not getattr(ev, "labelled", getattr(ev, "y", None) is not None):
        raise CompileError("no labelled evaluation data", [Diagnostic(
            "the gpu target measures accuracy", hint="give --dataset digits or --eval F.npz")])
    t0 = time.perf_counter()
    snn = net.graph
    result, labels, ann_pred = run_stream(net, ev, opts, opts.timesteps, ann=ann)
    main = distributed.is_main()
    if main:
        net.save(out_dir)
    report = build_report(
        result, snn, labels, ann_accuracy=None if ann_pred is None  # a .nir input has no ANN
        else float(np.mean(ann_pred == labels)),
        model=model, target="gpu",
        pipeline=pipeline.spec() if pipeline is not None else "",
        options=dataclasses.asdict(opts), notes=getattr(ctx, "notes", None),
        seconds=time.perf_counter() - t0)
    report["simulation_seconds"] = result.seconds
    report["processes"] = distributed.world()
    if main:
        print_report(report)
        plot_report(report, out_dir)
    return report
