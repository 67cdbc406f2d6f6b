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
                             passes=[*snncompile.pipeline_for("gpu", snncompile.CompileOptions()),
                                     "scale-first-layer"])

``import snncompile`` is light (numpy and networkx): the frontend, torch and the backends load
when first used.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from snncompile._version import __version__ as __version__
from snncompile.ir import CompileError, Diagnostic, Graph, PassError, load, save, verify
from snncompile.ir.verify import reads_channels_last
from snncompile.neurons import NeuronSpec, register_neuron
from snncompile.options import CompileOptions
from snncompile.passes import PassContext, PassManager, get_pass, register_pass, registered

if TYPE_CHECKING:
    import numpy as np

    from snncompile.backends.common import CompiledNetwork


__all__ = [
    "CompileError", "CompileOptions", "CompiledNetwork", "DEFAULT_FRONT", "Diagnostic", "Graph",
    "NeuronSpec", "PassContext", "PassError", "PassManager", "compile", "convert",
    "evaluate_target", "export_nir", "finetune_snn", "get_pass", "load", "load_nir", "load_onnx",
    "pipeline_for", "register_neuron", "register_pass", "registered", "save", "verify",
]

#: target -> the backend package whose ``compile(graph, options)`` builds its CompiledNetwork
BACKENDS = {"gpu": "snncompile.backends.gpu", "loihi": "snncompile.backends.loihi"}


def __getattr__(name: str) -> Any:
    # lazy names: keep ``import snncompile`` free of torch and onnx
    if name == "DEFAULT_FRONT":
        from snncompile.passes.pipelines import FRONT

        return FRONT
    if name == "CompiledNetwork":
        from snncompile.backends.common import CompiledNetwork

        return CompiledNetwork
    if name == "finetune":
        # deprecated: ``snncompile.finetune(...)`` is ``snncompile.finetune_snn(...)``; importing
        # the subpackage makes ``snncompile.finetune`` the package (still callable, deprecated)
        import snncompile.finetune as ft

        return ft
    raise AttributeError(f"module 'snncompile' has no attribute {name!r}")


#: options that are conversion choices: giving one turns tuning off (as on the command line)
EXPLICIT_CONVERSION = frozenset({"norm", "channelwise", "alpha"})


def load_onnx(path: str | Path) -> Graph:
    """ONNX file -> IR (ANN form)."""
    from snncompile.frontend import load_onnx as _load

    return _load(path)


def load_nir(path: str | Path, *, reset: str | None = None) -> Graph:
    """NIR file -> spiking IR (no conversion passes); see ``snncompile.frontend.nir_import``."""
    from snncompile.frontend.nir_import import load_nir as _load

    return _load(path, reset=reset)


def export_nir(graph: Graph, path: str | Path, *, readout: str = "integrator") -> Path:
    """Spiking IR -> NIR file; see ``snncompile.backends.nir_export`` for the mapping."""
    from snncompile.backends.nir_export import export_nir as _export

    return _export(graph, path, readout=readout)


def pipeline_for(target: str, opts: CompileOptions, pipeline: str | Sequence[Any] | None = None,
                 extra: Sequence[Any] = ()) -> list[Any]:
    """The passes for ``target``: ``pipeline`` (a spec string or list) replaces the default
    (``snncompile.passes.pipelines``); ``extra`` appends. Items are pass objects or specs."""
    from snncompile.passes import split_pipeline
    from snncompile.passes.pipelines import default_pipeline

    if pipeline is None:
        specs: list[Any] = default_pipeline(target, opts)
    elif isinstance(pipeline, str):
        specs = split_pipeline(pipeline)
    else:
        specs = list(pipeline)
    return [*specs, *extra]


def _calibration(options: dict[str, Any], calibration: Any) -> tuple[np.ndarray | None,
                                                                     np.ndarray | None]:
    from snncompile import data

    dataset = options.pop("dataset", None)
    if calibration is None and dataset == "digits":
        calibration = data.digits("train").take(options.get("calibration_samples", 512))
    if calibration is None:
        return None, None
    if isinstance(calibration, (str, Path)):  # .npz, image folder or module:callable
        calibration = data.open_data(calibration)
    if isinstance(calibration, data.Source):  # in memory: arrays; else streamed by the passes
        if calibration.arrays is None:
            return calibration, None  # type: ignore[return-value]
        calibration = calibration.arrays.take(len(calibration), calibration.start)
    if isinstance(calibration, data.Dataset):
        return calibration.x, calibration.y
    from snncompile import validate

    return validate.samples(calibration, "calibration"), None


def convert(model: str | Path | Graph, *, target: str = "gpu",
            passes: Sequence[Any] | None = None, calibration: Any = None,
            **options: Any) -> tuple[Graph, PassManager, PassContext]:
    """Frontend + pass pipeline. Returns the spiking IR, the pass manager (``.spec()`` replays
    the run) and the pass context (``.notes`` holds per-pass results).

    Without ``passes``, with calibration data and tuning on (the default), the conversion
    passes are chosen for ``timesteps`` by ``snncompile.tune`` on held-out calibration samples;
    ``ctx.notes["tuning"]`` says what was chosen; ``no_tune=True`` (or an explicit ``norm``,
    ``channelwise`` or ``alpha``) gives the fixed pipeline."""
    from snncompile import validate

    if not isinstance(model, (str, Path, Graph)):
        raise CompileError("bad model", [Diagnostic(
            f"model is a {type(model).__name__}; expected a path to an .onnx file or a Graph")])
    if isinstance(model, (str, Path)) and Path(model).suffix.lower() == ".nir":
        options.pop("dataset", None)  # a NIR graph is already spiking: no calibration, no passes
        CompileOptions.from_kwargs(options)
        return load_nir(model), PassManager([]), PassContext()
    x, y = _calibration(options, calibration)
    if "no_tune" not in options and EXPLICIT_CONVERSION & options.keys():
        options = {**options, "no_tune": True}  # an explicit choice is not second-guessed
    opts = CompileOptions.from_kwargs(options)
    graph = model if isinstance(model, Graph) else load_onnx(validate.model_file(model))
    if x is not None:
        validate.samples(x, "calibration", shape=graph.shape(graph.input_name),
                         channels_last=reads_channels_last(graph))
        if y is not None:
            y = validate.labels(y, len(x), validate.classes(graph), "calibration labels")
    tuning = None
    if passes is None and not opts.no_tune and target != "ir" and x is not None:
        from snncompile.tune import neuron_choices, tune

        tuning = tune(graph, x, y, opts.timesteps, budget=opts.tune_budget, seed=opts.seed,
                      base_options=opts, per_channel=target != "loihi",
                      neurons=neuron_choices(opts, target, explicit="neuron" in options))
        passes = [*tuning.front, *tuning.passes]
    specs = list(passes) if passes is not None else pipeline_for(target, opts)
    pm = PassManager.from_specs(specs)
    ctx = PassContext(calibration=x, labels=y, seed=opts.seed)
    if tuning is not None:
        ctx.notes["tuning"] = tuning.report()
    return pm.run(graph, ctx), pm, ctx


def _backend(target: str) -> Any:
    import importlib

    if target not in BACKENDS:
        raise CompileError("unknown target", [Diagnostic(
            repr(target), hint=f"targets: ir, {', '.join(BACKENDS)}")])
    return importlib.import_module(BACKENDS[target])


def compile(model: str | Path | Graph, target: str = "gpu", passes: Sequence[Any] | None = None,
            calibration: Any = None, **options: Any) -> Graph | CompiledNetwork:
    """Convert ``model`` and compile it for ``target``.

    ``target="ir"`` returns the IR; "gpu" and "loihi" return the backend's ``CompiledNetwork``
    (``.run(x, timesteps) -> SimResult``, ``.save(dir)``; with ``export="nir"`` ``.save`` also
    writes ``network.nir``). A ``.nir`` model is read as a spiking network (no passes).
    ``options`` are CompileOptions fields, plus ``dataset="digits"`` as a calibration source.
    ``passes`` replaces the default pipeline.
    """
    opts_dict = dict(options)
    backend = None if target == "ir" else _backend(target)
    graph, _, _ = convert(model, target=target, passes=passes, calibration=calibration, **opts_dict)
    if backend is None:
        return graph
    opts_dict.pop("dataset", None)
    from snncompile import validate

    validate.spiking_ready(graph, target)
    return backend.compile(graph, CompileOptions.from_kwargs(opts_dict))


def evaluate_target(target: str, snn: Graph, ann: Graph, ev: Any, opts: CompileOptions,
                    out_dir: Path, **info: Any) -> dict[str, Any]:
    """Run the compiled network on the evaluation data; returns report.json's dict
    (``snncompile.evaluate.evaluate``)."""
    from snncompile.evaluate import evaluate

    return evaluate(target, snn, ann, ev, opts, out_dir, **info)


def finetune_snn(ir: Graph, data: Any, method: str = "distill", **kwargs: Any) -> Graph:
    """Train the converted SNN ``ir`` on ``data`` (``snncompile.finetune.finetune``)."""
    from snncompile.finetune import finetune

    return finetune(ir, data, method, **kwargs)
