"""snn-compile: trained ANN (ONNX) -> spiking network for Lava/Loihi 2 and a PyTorch simulator.

Python API::

    import snncompile

    @snncompile.register_pass("scale-first-layer")
    def scale_first_layer(graph, ctx):
        \"\"\"Scale the first conv's weights by 2.\"\"\"
        g = graph.copy()
        ...
        return g

    net = snncompile.compile("model.onnx", target="gpu", dataset="digits", timesteps=32,
                             passes=[*snncompile.DEFAULT_FRONT, "scale-first-layer"])
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from snncompile.ir import CompileError, Diagnostic, Graph, PassError, load, save, verify
from snncompile.options import FRONT as DEFAULT_FRONT
from snncompile.options import CompileOptions, default_pipeline
from snncompile.passes import PassContext, PassManager, get_pass, register_pass, registered
from snncompile import finetune  # callable: snncompile.finetune(ir, data, method=...) -> IR

__version__ = "0.1.0"

__all__ = [
    "CompileError", "CompileOptions", "DEFAULT_FRONT", "Diagnostic", "Graph", "PassContext",
    "PassError", "PassManager", "compile", "convert", "evaluate_target", "finetune", "get_pass",
    "load",
    "load_onnx", "pipeline_for", "register_pass", "registered", "save", "verify",
]

#: target -> "module:function" that builds the compiled network from a spiking IR
BACKENDS = {"gpu": "snncompile.backends.gpu:compile", "loihi": "snncompile.backends.loihi:compile"}
#: target -> "module:function" that evaluates a spiking IR and returns report.json's dict
EVALUATORS = {"gpu": "snncompile.tools.evaluate:evaluate_gpu",
              "loihi": "snncompile.tools.evaluate_loihi:evaluate_loihi"}


#: options that are conversion choices: giving one turns tuning off (as on the command line)
EXPLICIT_CONVERSION = frozenset({"norm", "channelwise", "alpha"})


def load_onnx(path: str | Path) -> Graph:
    """ONNX file -> IR (ANN form)."""
    from snncompile.frontend import load_onnx as _load

    return _load(path)


def pipeline_for(target: str, opts: CompileOptions, pipeline: str | Sequence[str] | None = None,
                 extra: Sequence[str] = ()) -> list[str]:
    """The pass specs for ``target``: ``pipeline`` replaces the default; ``extra`` appends."""
    from snncompile.passes import split_pipeline

    if pipeline is None:
        specs = default_pipeline(target, opts)
    elif isinstance(pipeline, str):
        specs = split_pipeline(pipeline)
    else:
        specs = list(pipeline)
    return [*specs, *extra]


def _resolve(table: dict[str, str], target: str) -> Any:
    if target not in table:
        raise CompileError("unknown target", [Diagnostic(repr(target), hint=f"targets: ir, {', '.join(table)}")])
    mod_name, _, fn = table[target].partition(":")
    try:
        mod = importlib.import_module(mod_name)
        return getattr(mod, fn)
    except (ModuleNotFoundError, AttributeError) as e:
        if isinstance(e, ModuleNotFoundError) and e.name != mod_name:
            raise
        raise CompileError(f"target '{target}' is not built yet", [Diagnostic(
            f"{table[target]} is missing", hint="use --target ir")]) from None


def _calibration(options: dict[str, Any], calibration: Any) -> tuple[np.ndarray | None, np.ndarray | None]:
    from snncompile.tools import data

    dataset = options.pop("dataset", None)
    if calibration is None and dataset == "digits":
        calibration = data.digits("train").take(options.get("calibration_samples", 512))
    if calibration is None:
        return None, None
    if isinstance(calibration, (str, Path)):
        calibration = data.load_npz(calibration)
    if isinstance(calibration, data.Dataset):
        return calibration.x, calibration.y
    return np.asarray(calibration, np.float32), None


def convert(model: str | Path | Graph, *, target: str = "gpu",
            passes: Sequence[Any] | None = None, calibration: Any = None,
            **options: Any) -> tuple[Graph, PassManager, PassContext]:
    """Frontend + pass pipeline. Returns the spiking IR, the pass manager (``.spec()`` replays
    the run) and the pass context (``.notes`` holds per-pass results).

    Without ``passes``, with calibration data and ``tune`` on (the default), the conversion
    passes are chosen for ``timesteps`` by ``snncompile.tune`` on held-out calibration samples;
    ``ctx.notes["tuning"]`` says what was chosen; ``tune=False`` (or an explicit ``norm``,
    ``channelwise`` or ``alpha``) gives the fixed pipeline."""
    x, y = _calibration(options, calibration)
    if "tune" not in options and EXPLICIT_CONVERSION & options.keys():
        options = {**options, "tune": False}  # an explicit choice is not second-guessed
    opts = CompileOptions.from_kwargs(options)
    graph = model if isinstance(model, Graph) else load_onnx(model)
    tuning = None
    if passes is None and opts.tune and target != "ir" and x is not None:
        from snncompile.tune import tune

        tuning = tune(graph, x, y, opts.timesteps, budget_s=opts.tune_budget, seed=opts.seed,
                      base_options=opts)
        passes = [*DEFAULT_FRONT, *tuning.passes]
    specs = list(passes) if passes is not None else default_pipeline(target, opts)
    pm = PassManager([get_pass(s) if isinstance(s, str) else s for s in specs])
    ctx = PassContext(calibration=x, labels=y, seed=opts.seed)
    if tuning is not None:
        ctx.notes["tuning"] = tuning.report()
    return pm.run(graph, ctx), pm, ctx


def compile(model: str | Path | Graph, target: str = "gpu", passes: Sequence[Any] | None = None,
            calibration: Any = None, **options: Any) -> Any:
    """Convert ``model`` and compile it for ``target``.

    ``target="ir"`` returns the IR; "gpu" and "loihi" return the backend's CompiledNetwork
    (``.run(x, timesteps)``, ``.save(dir)``). ``options`` are CompileOptions fields, plus
    ``dataset="digits"`` as a calibration source. ``passes`` replaces the default pipeline.
    """
    opts_dict = dict(options)
    graph, _, _ = convert(model, target=target, passes=passes, calibration=calibration, **opts_dict)
    if target == "ir":
        return graph
    opts_dict.pop("dataset", None)
    return _resolve(BACKENDS, target)(graph, CompileOptions.from_kwargs(opts_dict))


def evaluate_target(target: str, snn: Graph, ann: Graph, ev: Any, opts: CompileOptions,
                    out_dir: Path, **info: Any) -> dict[str, Any]:
    """Run the compiled network on the evaluation data; returns report.json's dict."""
    return _resolve(EVALUATORS, target)(snn, ann, ev, opts, out_dir, **info)
