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
from snncompile.neurons import NeuronSpec, register_neuron
from snncompile.options import CompileOptions
from snncompile.passes import PassContext, PassManager, get_pass, register_pass, registered

if TYPE_CHECKING:
    from snncompile.backends.common import CompiledNetwork


__all__ = [
    "CompileError", "CompileOptions", "CompiledNetwork", "DEFAULT_FRONT", "Diagnostic", "Graph",
    "NeuronSpec", "PassContext", "PassError", "PassManager", "compile", "convert",
    "evaluate_target", "export_nir", "finetune_snn", "get_pass", "load", "load_nir", "load_onnx",
    "pipeline_for", "register_neuron", "register_pass", "registered", "save", "verify",
]

#: target -> the backend package whose ``compile(graph, options)`` builds its CompiledNetwork
#: (the same table as ``snncompile.driver.BACKENDS``, kept here without importing the driver)
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


#: options that are conversion choices: giving one turns tuning off, as on the command line
#: (``snncompile.driver.tuning_on``)
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
    from snncompile.driver import pipeline_specs

    return pipeline_specs(target, opts, pipeline, extra)


def convert(model: str | Path | Graph, *, target: str = "gpu",
            passes: Sequence[Any] | None = None, calibration: Any = None,
            **options: Any) -> tuple[Graph, PassManager, PassContext]:
    """Frontend + pass pipeline (``snncompile.driver``, stages load to convert). Returns the
    spiking IR, the pass manager (``.spec()`` replays the run) and the pass context (``.notes``
    holds per-pass results).

    Without ``passes``, with calibration data and tuning on (the default), the conversion
    passes are chosen for ``timesteps`` by ``snncompile.pipeline_search`` on held-out
    calibration samples;
    ``ctx.notes["tuning"]`` says what was chosen; ``no_tune=True`` (or an explicit ``norm``,
    ``channelwise`` or ``alpha``, as on the command line: ``driver.tuning_on``) gives the
    fixed pipeline. Samples in memory are used as given; a path is read as the command line
    reads ``--calibration`` (spread over ``calibration_samples``)."""
    from snncompile import driver

    c = driver.for_python(model, target, passes, calibration, options)
    snn = _convert(c)
    return snn, c.passes, c.context


def _convert(c: Any) -> Graph:
    from snncompile import driver

    driver.load(c)
    driver.data(c)
    driver.choose_pipeline(c)
    snn = driver.convert(c)
    if c.tuning is not None:
        c.context.notes["tuning"] = c.tuning.report()
    return snn


def compile(model: str | Path | Graph, target: str = "gpu", passes: Sequence[Any] | None = None,
            calibration: Any = None, **options: Any) -> Graph | CompiledNetwork:
    """Convert ``model`` and compile it for ``target``.

    ``target="ir"`` returns the IR; "gpu" and "loihi" return the backend's ``CompiledNetwork``
    (``.run(x, timesteps) -> SimResult``, ``.save(dir)``; with ``export="nir"`` ``.save`` also
    writes ``network.nir``). A ``.nir`` model is read as a spiking network (no passes).
    ``options`` are CompileOptions fields, plus ``dataset="digits"`` as a calibration source.
    ``passes`` replaces the default pipeline.
    """
    from snncompile import driver

    if target != "ir":
        driver.backend(target)  # an unknown target fails before any work
    c = driver.for_python(model, target, passes, calibration, options)
    graph = _convert(c)
    return graph if target == "ir" else driver.build(c)


def evaluate_target(target: str, snn: Graph | CompiledNetwork, ann: Graph | None, ev: Any,
                    opts: CompileOptions, out_dir: Path, **info: Any) -> dict[str, Any]:
    """Run the compiled network (or a spiking IR, compiled first) on the evaluation data;
    returns report.json's dict (``snncompile.evaluate.evaluate``)."""
    from snncompile.evaluate import evaluate

    return evaluate(target, snn, ann, ev, opts, out_dir, **info)


def finetune_snn(ir: Graph, data: Any, method: str = "distill", **kwargs: Any) -> Graph:
    """Train the converted SNN ``ir`` on ``data`` (``snncompile.finetune.finetune``)."""
    from snncompile.finetune import finetune

    return finetune(ir, data, method, **kwargs)
