"""The compilation driver: one path from a model to a report, for the CLI and the Python API.

A ``Compilation`` holds what was asked (model, target, options, data, passes) and what each
stage produced. The stages are plain functions over it (the named steps of xDSL's driver),
run in this order:

1. ``load``: the ONNX model (or a NIR graph: already spiking, no passes) -> IR;
2. ``data``: the calibration and evaluation sets, in the model's layout and checked against
   it, and what simulating the evaluation set will allocate checked against the free memory
   (before anything is simulated: the tuner simulates at the same T);
3. ``choose_pipeline``: the pass pipeline, tuned for T or fixed (``tuning_on``: the one rule,
   the same for the command line and Python);
4. ``convert``: the pipeline on the frontend graph -> spiking IR;
5. ``finetune``: optional training of the spiking IR (``snncompile.finetune``);
6. ``build``: the target's ``CompiledNetwork``;
7. ``evaluate``: the compiled network on the evaluation data -> report.json's dict;
8. ``write``: report.json (``write_ir``, between 5 and 6, writes ir.json).

``snncompile.convert`` runs 1-4, ``snncompile.compile`` 1-4 and 6, ``snn-compile`` all of them
(``tools/cli.py`` maps its flags to a ``Compilation`` and owns the output folder and the exit
codes); ``run`` is 3-8.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from snncompile import data as data_mod
from snncompile import distributed, memory, validate
from snncompile.ir.diagnostics import CompileError, Diagnostic
from snncompile.ir.graph import Graph
from snncompile.ir.verify import check_input, reads_channels_last
from snncompile.options import CompileOptions
from snncompile.passes import PassContext, PassManager, registered

#: target -> the backend package whose ``compile(graph, options)`` builds its CompiledNetwork
BACKENDS = {"gpu": "snncompile.backends.gpu", "loihi": "snncompile.backends.loihi"}
#: options that are conversion choices: giving one (any value, ``--norm p99.9`` too) turns
#: tuning off, on the command line and in Python alike
EXPLICIT_CONVERSION = frozenset({"norm", "channelwise", "alpha"})


@dataclass(frozen=True)
class DataSpec:
    """Where the data come from. ``dataset="digits"``: the bundled set (train split for
    calibration, test split for evaluation); ``calibration`` / ``evaluation``: a path (``.npz``,
    an image folder, ``module:callable``: spread over ``calibration_samples`` /
    ``eval_samples`` and read in the model's layout) or, from Python, samples in memory (an
    array, a ``data.Dataset`` or a ``data.Source``: used as given, (N, C, H, W)). The image
    fields are ``data.preprocess_from``'s."""

    dataset: str | None = None
    calibration: Any = None
    evaluation: Any = None
    preprocess: str = "none"
    color: str | None = None
    resize: int | None = None
    crop: tuple[int, ...] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    workers: int = 2
    evaluate: bool = True  # False: no evaluation set (the Python API's convert and compile)

    def preprocessing(self, input_shape: Any = None) -> data_mod.Preprocess:
        return data_mod.preprocess_from(self.preprocess, color=self.color, resize=self.resize,
                                        crop=self.crop, mean=self.mean, std=self.std,
                                        input_shape=input_shape)


@dataclass
class Compilation:
    """One compilation: the request (first block) and what the stages produced (second).

    ``given``: the option names the user set explicitly (the CLI flags given, the keyword
    arguments of a Python call): ``tuning_on`` and the tuner's neuron choice read it.
    ``pipeline`` replaces the default pipeline (and turns tuning off); ``extra_passes`` are
    appended to whatever pipeline runs. ``echo``: print what the command line prints (the
    tuning summary, notes)."""

    model: str | Path | Graph
    target: str = "gpu"
    options: CompileOptions = field(default_factory=CompileOptions)
    given: frozenset[str] = frozenset()
    pipeline: str | Sequence[Any] | None = None
    extra_passes: Sequence[Any] = ()
    data: DataSpec = field(default_factory=DataSpec)
    finetune: Any = None  # snncompile.options.FinetuneOptions, or None
    dump_ir_after: Sequence[str] = ()
    nir_reset: str | None = None
    echo: bool = False

    graph: Graph | None = None  # the frontend's graph (ANN; spiking for a .nir model)
    calibration: data_mod.Source | None = None
    evaluation: data_mod.Source | None = None
    calibration_is_eval: bool = False
    passes: PassManager | None = None
    context: PassContext | None = None
    tuning: Any = None  # snncompile.pipeline_search.TuneResult when the pipeline was tuned
    snn: Graph | None = None
    finetune_info: dict[str, Any] | None = None
    t0: float = field(default_factory=time.perf_counter)

    @property
    def is_nir(self) -> bool:
        return not isinstance(self.model, Graph) and Path(self.model).suffix.lower() == ".nir"


def for_python(model: Any, target: str, passes: Sequence[Any] | None, calibration: Any,
               options: dict[str, Any], **request: Any) -> Compilation:
    """The Compilation of ``snncompile.convert(model, target=, passes=, calibration=,
    **options)``: ``options`` are CompileOptions fields plus ``dataset``; the keys given are
    ``Compilation.given``."""
    if not isinstance(model, (str, Path, Graph)):
        raise CompileError("bad model", [Diagnostic(
            f"model is a {type(model).__name__}; expected a path to an .onnx file or a Graph")])
    options = dict(options)
    dataset = options.pop("dataset", None)
    return Compilation(model=model, target=target,
                       options=CompileOptions.from_kwargs(options), given=frozenset(options),
                       pipeline=None if passes is None else list(passes),
                       data=DataSpec(dataset=dataset, calibration=calibration, evaluate=False),
                       **request)


# ------------------------------------------------------------------------------ 1. load
def check_request(c: Compilation) -> None:
    """What can be refused before any work: pass specs that do not parse, ``dump_ir_after``
    names that no pipeline holds (a
    typo; the pipeline actually chosen is checked again in ``choose_pipeline``) and a missing
    Lava for the loihi target."""
    fixed = [p.name for p in fixed_pipeline(c).passes]  # bad pass specs fail here
    if c.dump_ir_after:
        validate.names(c.dump_ir_after, [*fixed, *registered()], "--dump-ir-after",
                       extra=["all"])
    if c.target == "loihi":
        from snncompile.backends.loihi.lava_runtime import require_lava

        require_lava()  # one line and exit 2 before anything runs


def load(c: Compilation) -> Graph:
    """The model as IR: a Graph as given, an ONNX file through the frontend, a NIR graph as a
    spiking IR (``nir_reset``: how its IF neurons reset; None: as the file says)."""
    if isinstance(c.model, Graph):
        c.graph = c.model
    elif c.is_nir:
        from snncompile.frontend.nir_import import load_nir

        c.graph = load_nir(validate.model_file(c.model), reset=c.nir_reset)
    else:
        from snncompile.frontend import load_onnx

        c.graph = load_onnx(validate.model_file(c.model))
    return c.graph


# ------------------------------------------------------------------------------ 2. data
def data(c: Compilation) -> None:
    """The calibration and evaluation ``Source``s (``DataSpec``), checked against the model
    (shape, finite values, labels in its classes), and the evaluation run's memory estimate.
    Without calibration data the evaluation set calibrates (``calibration_is_eval``: tuning is
    then off, it never selects settings on the evaluation set)."""
    d, o = c.data, c.options
    if d.dataset and (d.calibration is not None or d.evaluation is not None):
        raise CompileError("bad usage",
                           [Diagnostic("give --dataset or --calibration/--eval, not both")])
    if d.dataset == "digits":
        c.calibration = data_mod.Source.of(data_mod.digits("train", seed=o.seed)).take(
            o.calibration_samples)
        c.evaluation = (data_mod.Source.of(data_mod.digits("test", seed=o.seed))
                        if d.evaluate else None)
    else:
        c.calibration = _open(c, d.calibration, "calibration")
        c.evaluation = _open(c, d.evaluation, "evaluation")
        if c.calibration is None and c.evaluation is not None:
            c.calibration = c.evaluation.spread(o.calibration_samples)
            c.calibration_is_eval = True
            # event recordings: thresholds from the ANN's view (summed) of the --eval data
            from snncompile import events

            c.calibration = events.summed_source(c.calibration)
    if c.evaluation is not None and o.eval_samples is not None:
        c.evaluation = c.evaluation.spread(o.eval_samples)
    for ds, what in ((c.calibration, "calibration data"), (c.evaluation, "evaluation data")):
        if ds is not None:
            _check_source(c.graph, ds, what)
    check_memory(c)


def _open(c: Compilation, spec: Any, what: str) -> data_mod.Source | None:
    """A ``Source`` for ``spec``: a path is opened (and spread, in the model's layout), samples
    in memory are checked and used as given."""
    g = c.graph
    shape = g.shape(g.input_name)
    if spec is None:
        return None
    if isinstance(spec, (str, Path)):
        from snncompile import events

        if not str(spec).strip():  # an unset shell variable: not "no data"
            raise CompileError("bad usage", [Diagnostic(f"the {what} data path is empty")])
        # event recordings: the calibration set is read as summed frames (the ANN's view),
        # the evaluation set as T frames per sample (snncompile.events)
        binning = events.binning_for(c.options, shape, frames=what == "evaluation")
        src = data_mod.open_data(spec, need_labels=what == "evaluation",
                                 preprocess=c.data.preprocessing(shape), workers=c.data.workers,
                                 events=binning)
        if what == "calibration":
            src = src.spread(c.options.calibration_samples)
        return data_mod.channels_first(src, shape, reads_channels_last(g))
    if isinstance(spec, data_mod.Source) and spec.arrays is None:
        return spec  # streamed: checked by what reads it
    if isinstance(spec, data_mod.Source):
        ds = spec.arrays.take(len(spec), spec.start)
    elif isinstance(spec, data_mod.Dataset):
        ds = spec
    else:
        ds = data_mod.Dataset(validate.samples(spec, what), None, what)
    validate.samples(ds.x, what, shape=shape, channels_last=reads_channels_last(g))
    y = None if ds.y is None else validate.labels(ds.y, len(ds.x), validate.classes(g),
                                                  f"{what} labels")
    return data_mod.Source.of(data_mod.Dataset(ds.x, y, ds.source))


def _check_source(graph: Graph, ds: data_mod.Source, what: str) -> None:
    """All of an in-memory set, the first sample of a streamed one, fits the model."""
    from snncompile.backends.common import ann_input

    x, y = (ds.arrays.x, ds.arrays.y) if ds.arrays is not None else ds.first(1)
    check_input(graph, ann_input(graph, x), f"{what} ({ds.source})")  # frames: summed
    if y is not None:
        validate.labels(y, len(y), validate.classes(graph), f"{what} ({ds.source}) y")


def check_memory(c: Compilation) -> None:
    """Simulating the evaluation set for T must fit the free memory (``memory.run_memory``; on
    gpu with the pieces its budget picks, ``memory.run_bytes``)."""
    ev, o, g = c.evaluation, c.options, c.graph
    if ev is None or c.target == "ir":
        return
    pieces = None
    if c.target == "gpu":  # the chunked simulator holds the pieces its budget picks
        from snncompile.backends.common import resolve_device

        pieces = memory.run_bytes(g, o.timesteps, min(len(ev), o.batch_size),
                                  budget=o.memory_bytes, device=resolve_device(o.device))
    validate.check_memory(memory.run_memory(
        len(ev), o.timesteps, validate.graph_units(g), o.batch_size,
        validate.classes(g) or 1, pieces=pieces),
        f"simulating {len(ev)} samples for T={o.timesteps}",
        hint="fewer --eval-samples, a smaller --timesteps or --memory-budget")


# ------------------------------------------------------------------------------ 3. pipeline
def fixed_pipeline(c: Compilation) -> PassManager:
    """The untuned pipeline: ``pipeline`` or the target's default, then ``extra_passes`` (a
    NIR model: none)."""
    if c.is_nir:
        return PassManager([])
    return PassManager.from_specs(pipeline_specs(c.target, c.options, c.pipeline,
                                                 c.extra_passes))


def pipeline_specs(target: str, opts: CompileOptions, pipeline: str | Sequence[Any] | None = None,
                   extra: Sequence[Any] = ()) -> list[Any]:
    """``snncompile.pipeline_for``: ``pipeline`` (a spec string or list) or the default of
    ``target`` (``passes.pipelines``), then ``extra``; pass objects or specs."""
    from snncompile.passes import split_pipeline
    from snncompile.passes.pipelines import default_pipeline

    if pipeline is None:
        specs: list[Any] = default_pipeline(target, opts)
    elif isinstance(pipeline, str):
        specs = split_pipeline(pipeline)
    else:
        specs = list(pipeline)
    return [*specs, *extra]


def tuning_on(c: Compilation) -> bool:
    """The one rule. Tuning is the default; it is off for the ir target, a NIR model, a given
    pipeline (``--pipeline``, ``passes=``), ``no_tune``, and an explicit conversion choice
    (``EXPLICIT_CONVERSION`` given, whatever its value); an explicitly given ``no_tune=False``
    keeps it on even then."""
    if c.target == "ir" or c.is_nir or c.pipeline is not None:
        return False
    if "no_tune" in c.given:
        return not c.options.no_tune
    return not (c.options.no_tune or EXPLICIT_CONVERSION & c.given)


def choose_pipeline(c: Compilation) -> PassManager:
    """``c.passes``: the tuned pipeline (``tune``) when ``tuning_on`` and calibration data
    other than the evaluation set exist, else the fixed one; ``dump_ir_after`` must name
    passes of it."""
    c.passes = fixed_pipeline(c)
    on = tuning_on(c) and c.calibration is not None
    if on and c.calibration_is_eval and c.echo and distributed.is_main():
        print("note: no --calibration: thresholds come from the --eval data and tuning is "
              "off (it never selects settings on the evaluation set); give --calibration "
              "to tune", file=sys.stderr)
    if on and not c.calibration_is_eval:
        c.tuning = _tune(c)
        c.passes.passes = PassManager.from_specs(
            [*c.tuning.front, *c.tuning.passes, *c.extra_passes]).passes
    if c.dump_ir_after:
        validate.names(c.dump_ir_after, [p.name for p in c.passes.passes], "--dump-ir-after",
                       extra=["all"])
    return c.passes


def _tune(c: Compilation) -> Any:
    """The one call of ``snncompile.pipeline_search``: rank 0 tunes on at most
    ``MAX_SAMPLES`` spread calibration samples (in memory) and broadcasts its choice to all
    ranks."""
    from snncompile.pipeline_search import MAX_SAMPLES, neuron_choices, tune

    o = c.options
    result = None
    if distributed.is_main():
        tx = c.calibration.spread(MAX_SAMPLES).materialize()
        result = tune(c.graph, tx.x, tx.y, o.timesteps, budget=o.tune_budget, seed=o.seed,
                      base_options=o, per_channel=c.target != "loihi",
                      neurons=neuron_choices(o, c.target, explicit="neuron" in c.given),
                      eval_samples=None if c.evaluation is None else len(c.evaluation))
        if c.echo:
            print(result.summary())
            print(f"  replay without tuning: --pipeline '{result.pipeline}'")
    return distributed.broadcast(result)


# ------------------------------------------------------------------------------ 4. convert
def convert(c: Compilation, work_dir: Path | None = None) -> Graph:
    """Run ``c.passes`` on the frontend graph: ``c.snn``. In-memory calibration reaches the
    passes as arrays, a streamed set as its ``Source``; with ``work_dir`` and
    ``dump_ir_after`` the IR after those passes goes to ``work_dir/ir-after``."""
    cal: Any = None
    labels = None
    if c.calibration is not None:
        src = c.calibration
        cal, labels = src.first(len(src)) if src.arrays is not None else (src, None)
    c.context = PassContext(calibration=cal, labels=labels, seed=c.options.seed)
    if c.dump_ir_after and work_dir is not None and distributed.is_main():
        c.passes.dump_dir = work_dir / "ir-after"
        c.passes.dump_after = {x.replace("_", "-") for x in c.dump_ir_after}
    c.snn = c.passes.run(c.graph, c.context)
    return c.snn


# ------------------------------------------------------------------------------ 5. finetune
def finetune(c: Compilation, work_dir: Path, final_dir: Path) -> Graph:
    """Train ``c.snn`` as ``c.finetune`` says (``snncompile.finetune.cli``), on the whole
    calibration set (``finetune_samples`` caps it); checkpoints under ``work_dir/finetune``,
    resumed from ``final_dir/finetune``."""
    if c.finetune is None:
        return c.snn
    from snncompile.finetune.cli import check_settings, run_finetune

    steps = check_settings(c.finetune, c.options)  # bad names fail before any data is read
    ds = training_data(c, c.finetune.finetune_samples)
    c.snn, c.finetune_info = run_finetune(c.finetune, c.options, steps, c.snn, ds,
                                          c.evaluation, work_dir, final_dir,
                                          ann=None if c.is_nir else c.graph)
    return c.snn


def training_data(c: Compilation, samples: int | None) -> data_mod.Dataset:
    """The fine-tuning set in memory: the digits training split or the calibration data
    (spread over ``samples``), never the evaluation set."""
    d, g = c.data, c.snn
    if d.dataset == "digits":
        return data_mod.digits("train", seed=c.options.seed).take(samples)
    if d.calibration is not None:  # a streamed set is read into memory
        if isinstance(d.calibration, (str, Path)):
            from snncompile import events
            from snncompile.finetune import parse_method

            shape = g.shape(g.input_name)
            # event recordings: temporal-consistency alone trains on the T frames of each
            # recording (frame t at step t), anything else on the summed frames (the ANN's view)
            ft = c.finetune
            on_frames = {m for m, _ in parse_method(ft.finetune)} == {"temporal-consistency"}
            steps = c.options.timesteps if ft.finetune_timesteps is None else \
                ft.finetune_timesteps
            binning = events.EventBinning(tuple(shape), steps if on_frames else None,
                                          c.options.event_binning)
            src = data_mod.open_data(d.calibration, preprocess=d.preprocessing(shape),
                                     workers=d.workers, events=binning).spread(samples)
            return data_mod.channels_first(src, shape, reads_channels_last(g)).materialize()
        return _open(c, d.calibration, "calibration").spread(samples).materialize()
    if d.evaluation is not None:
        raise CompileError("no fine-tuning data", [Diagnostic(
            "--finetune trains on the calibration data; it never trains on --eval",
            hint="give --calibration DATA")])
    raise CompileError("no fine-tuning data", [Diagnostic(
        "--finetune needs --calibration C.npz or --dataset digits")])


def write_ir(c: Compilation, out_dir: Path) -> None:
    """ir.json + ir.npz of the spiking IR (rank 0 only)."""
    from snncompile.ir import save

    if distributed.is_main():
        save(c.snn, out_dir)


# ------------------------------------------------------------------------------ 6. build
def backend(target: str) -> Any:
    """The backend package of ``target`` (``BACKENDS``)."""
    if target not in BACKENDS:
        raise CompileError("unknown target", [Diagnostic(
            repr(target), hint=f"targets: ir, {', '.join(BACKENDS)}")])
    return importlib.import_module(BACKENDS[target])


def build(c: Compilation) -> Any:
    """The target's ``CompiledNetwork`` of the spiking IR (which must have no ANN activation
    left: ``validate.spiking_ready``)."""
    b = backend(c.target)
    validate.spiking_ready(c.snn, c.target)
    return b.compile(c.snn, c.options)


# ------------------------------------------------------------------------------ 7. evaluate
def evaluate(c: Compilation, net: Any, out_dir: Path) -> dict[str, Any]:
    """``net`` on the evaluation set (``snncompile.evaluate``): report.json's dict, with the
    tuning and fine-tuning entries; tables and plots as the evaluator writes them."""
    from snncompile.evaluate import evaluate as run_evaluator

    report = run_evaluator(c.target, net, None if c.is_nir else c.graph, c.evaluation,
                           c.options, out_dir, model=str(c.model), pipeline=c.passes,
                           ctx=c.context)
    if c.finetune_info is not None:
        report["finetune"] = c.finetune_info
    if c.tuning is not None:
        report["tuning"] = c.tuning.report()
    report["seconds_total"] = time.perf_counter() - c.t0
    return report


# ------------------------------------------------------------------------------ 8. write
def write(report: dict[str, Any] | None, out_dir: Path) -> str | None:
    """report.json's text (None without a report), written into ``out_dir`` by rank 0."""
    if report is None:
        return None
    text = json.dumps(report, indent=1, default=_jsonable) + "\n"
    if distributed.is_main():
        (out_dir / "report.json").write_text(text)
    return text


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, Path):
        return str(v)
    raise TypeError(type(v).__name__)


def prepare(c: Compilation) -> Compilation:
    """Stages 1-2 with the checks before them: everything that can refuse a run before any
    output exists."""
    check_request(c)
    load(c)
    data(c)
    return c


def run(c: Compilation, work_dir: Path, final_dir: Path | None = None) -> str | None:
    """Stages 3-8 after ``prepare``: the whole compilation into ``work_dir`` (``final_dir``:
    where it will be moved, for fine-tuning's resume); returns report.json's text (None for the
    ir target, which prints the IR's summary instead)."""
    choose_pipeline(c)
    convert(c, work_dir)
    finetune(c, work_dir, final_dir if final_dir is not None else work_dir)
    write_ir(c, work_dir)
    if c.target == "ir":
        print(c.snn.summary())
        return None
    return write(evaluate(c, build(c), work_dir), work_dir)


__all__ = ["BACKENDS", "EXPLICIT_CONVERSION", "Compilation", "DataSpec", "build",
           "check_memory", "check_request", "choose_pipeline", "convert", "data", "evaluate",
           "finetune", "fixed_pipeline", "for_python", "load", "pipeline_specs", "prepare",
           "run", "training_data", "tuning_on", "write", "write_ir"]
