"""Evaluate a spiking IR on the gpu simulator: the report.json dict, tables and plots.

``evaluate_gpu`` is the ``gpu`` entry of ``snncompile.evaluate.EVALUATORS``: ANN accuracy from
the ANN reference interpreter (``ann``, the frontend graph) on the evaluation set, one
simulation run to T giving the accuracy at every t ≤ T, then the report (``report``).
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
                 memory_budget: str | None = None) -> float:
    """ANN accuracy, in batches whose values fit ``memory_budget`` (``backends.memory``)."""
    import torch

    from snncompile.backends.memory import room_bytes

    room = room_bytes(memory_budget, torch.device("cpu"))
    out = run_ann(ann, x, batch_size=batch_size, max_bytes=room)
    return float(np.mean(out.reshape(len(x), -1).argmax(1) == y))


def evaluate_gpu(snn: Graph, ann: Graph | None, ev: Any, opts: CompileOptions, out_dir: Path, *,
                 model: str = "", pipeline: Any = None, ctx: Any = None) -> dict[str, Any]:
    """Simulate ``snn`` on ``ev`` (a labelled ``Dataset``), write plots, print the tables and
    return report.json's dict."""
    from snncompile.backends.gpu import compile as gpu_compile

    if ev is None or ev.y is None:
        raise CompileError("no labelled evaluation data", [Diagnostic(
            "the gpu target measures accuracy", hint="give --dataset digits or --eval F.npz")])
    t0 = time.perf_counter()
    net = gpu_compile(snn, opts)
    result = net.run(ev.x, opts.timesteps)
    net.save(out_dir)
    report = build_report(
        result, snn, ev.y, ann_accuracy=None if ann is None  # a .nir input has no ANN
        else ann_accuracy(ann, ev.x, ev.y, opts.batch_size, opts.memory_budget),
        model=model, target="gpu",
        pipeline=pipeline.spec() if pipeline is not None else "",
        options=dataclasses.asdict(opts), notes=getattr(ctx, "notes", None),
        seconds=time.perf_counter() - t0)
    report["simulation_seconds"] = result.seconds
    print_report(report)
    plot_report(report, out_dir)
    return report
