"""Evaluation: run a compiled network on labelled data and write the report (report.json,
tables, plots). One evaluator per target, in an ordinary registry.

``evaluate(target, net, ann, data, options, out_dir, **info) -> dict`` (report.json's dict):
``net`` is the target's ``CompiledNetwork`` (``snncompile.driver.build``; a spiking IR
``Graph`` is compiled first, as before).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from snncompile.evaluate.gpu import ann_accuracy, evaluate_gpu
from snncompile.evaluate.loihi import evaluate_loihi
from snncompile.ir.diagnostics import CompileError, Diagnostic
from snncompile.ir.graph import Graph
from snncompile.options import CompileOptions

#: target -> evaluator(net, ann, data, options, out_dir, *, model, pipeline, ctx) -> report dict
EVALUATORS: dict[str, Callable[..., dict[str, Any]]] = {
    "gpu": evaluate_gpu,
    "loihi": evaluate_loihi,
}


def evaluate(target: str, net: Any, ann: Graph | None, data: Any, options: CompileOptions,
             out_dir: Path, **info: Any) -> dict[str, Any]:
    """Run the compiled ``net`` on ``data`` for ``target``; returns report.json's dict."""
    if target not in EVALUATORS:
        raise CompileError("unknown target", [Diagnostic(repr(target),
                                                         hint=f"targets: {', '.join(EVALUATORS)}")])
    if isinstance(net, Graph):  # a spiking IR: the target's network first
        net = importlib.import_module(f"snncompile.backends.{target}").compile(net, options)
    return EVALUATORS[target](net, ann, data, options, out_dir, **info)


__all__ = ["EVALUATORS", "ann_accuracy", "evaluate", "evaluate_gpu", "evaluate_loihi"]
