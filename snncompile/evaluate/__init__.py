"""Evaluation: run a compiled network on labelled data and write the report (report.json,
tables, plots). One evaluator per target, in an ordinary registry.

``evaluate(target, snn, ann, data, options, out_dir, **info) -> dict`` (report.json's dict).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from snncompile.evaluate.gpu import ann_accuracy, evaluate_gpu
from snncompile.evaluate.loihi import evaluate_loihi
from snncompile.ir.diagnostics import CompileError, Diagnostic
from snncompile.ir.graph import Graph
from snncompile.options import CompileOptions

#: target -> evaluator(snn, ann, data, options, out_dir, *, model, pipeline, ctx) -> report dict
EVALUATORS: dict[str, Callable[..., dict[str, Any]]] = {
    "gpu": evaluate_gpu,
    "loihi": evaluate_loihi,
}


def evaluate(target: str, snn: Graph, ann: Graph, data: Any, options: CompileOptions,
             out_dir: Path, **info: Any) -> dict[str, Any]:
    """Run the compiled ``snn`` on ``data`` for ``target``; returns report.json's dict."""
    if target not in EVALUATORS:
        raise CompileError("unknown target", [Diagnostic(repr(target),
                                                         hint=f"targets: {', '.join(EVALUATORS)}")])
    return EVALUATORS[target](snn, ann, data, options, out_dir, **info)


__all__ = ["EVALUATORS", "ann_accuracy", "evaluate", "evaluate_gpu", "evaluate_loihi"]
