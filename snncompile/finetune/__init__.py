"""Post-conversion training of the converted SNN (issue 6): the ANN teaches its own SNN.

Python API::

    import snncompile
    from snncompile import data

    snn, _, _ = snncompile.convert("model.onnx", calibration=data.digits("train"))
    tuned = snncompile.finetune_snn(snn, data.digits("train"), method="distill", epochs=5,
                                    timesteps=4, teacher=snncompile.load_onnx("model.onnx"))
    # a new IR (or ``snn`` itself when fine-tuning did not help); ``snn`` is unchanged

(``snncompile.finetune.finetune`` is the same function. Calling the package itself,
``snncompile.finetune(...)``, still works but is deprecated and goes in the next release.)

Methods (``METHODS``, a plain dict: name -> callable ``(ir, TrainData, FinetuneConfig) ->
FinetuneResult``; other modules may add entries):

- ``distill``: LaSNN layer-wise ANN→SNN distillation (attention-map or rate matching per layer
  from the input side), then output KD (``finetune.distill``). Labels optional.
- ``temporal-consistency``: per-timestep CE + consistency of the timesteps' output
  distributions (``finetune.temporal``). Needs labels.

A method spec may carry options, ``distill{layer_loss=rate,tau=2}``, and methods chain with
``+``: ``distill+temporal-consistency`` runs distill, then temporal-consistency on its result
(each for ``epochs`` epochs, the original IR staying the teacher). Training happens in the
simulator's differentiable mode (``finetune.differentiable``: surrogate gradients, backprop
through T steps, weights, biases and thresholds trainable, the converted neuron model kept);
the result is written back into the IR (quantized layers re-quantized on their own grid).

The teacher is the ANN the IR was converted from (``teacher=``, the CLI passes the ONNX graph;
``finetune.teacher``), and ``holdout`` (10 %) of the samples are set aside: the network
returned is the best of the converted one and each step's result on them
(``finetune.heldout``), so fine-tuning never returns a network that is worse there.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import types
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from snncompile.finetune.training import (
    FinetuneConfig,
    FinetuneResult,
    TrainData,
    as_data,
)
from snncompile.ir.diagnostics import CompileError, Diagnostic
from snncompile.ir.graph import Graph

__all__ = ["METHODS", "DistillOptions", "FinetuneConfig", "FinetuneResult", "TemporalOptions",
           "TrainData", "finetune", "parse_method", "train"]

Method = Callable[[Graph, TrainData, FinetuneConfig], FinetuneResult]


def distill(ir: Graph, data: TrainData, config: FinetuneConfig) -> FinetuneResult:
    """LaSNN layer-wise distillation + output KD (``snncompile.finetune.distill``)."""
    from snncompile.finetune.distill import distill as run

    return run(ir, data, config)


def temporal_consistency(ir: Graph, data: TrainData, config: FinetuneConfig) -> FinetuneResult:
    """Per-timestep CE + temporal consistency (``snncompile.finetune.temporal``)."""
    from snncompile.finetune.temporal import temporal_consistency as run

    return run(ir, data, config)


#: method name -> ``fn(ir, data, config) -> FinetuneResult`` (a plain dict: register by assignment).
#: The methods import the simulator on first use, so that the CLI's flags cost nothing.
METHODS: dict[str, Method] = {
    "distill": distill,
    "temporal-consistency": temporal_consistency,
}


def _layerwise(ir: Graph, data: TrainData, config: FinetuneConfig) -> FinetuneResult:
    """Fast-SNN layer-wise fine-tuning (``snncompile.finetune.layerwise``)."""
    from snncompile.finetune.layerwise import layerwise as run

    return run(ir, data, config)


METHODS["layerwise"] = _layerwise


def __getattr__(name: str) -> Any:
    if name == "DistillOptions":
        from snncompile.finetune.distill import DistillOptions

        return DistillOptions
    if name == "TemporalOptions":
        from snncompile.finetune.temporal import TemporalOptions

        return TemporalOptions
    raise AttributeError(name)


_SPEC = re.compile(r"^\s*([A-Za-z0-9_\-]+)\s*(?:\{(.*)\})?\s*$")


def parse_method(spec: str) -> list[tuple[str, dict[str, str]]]:
    """``"distill{tau=2}+temporal-consistency"`` -> [("distill", {"tau": "2"}),
    ("temporal-consistency", {})]; unknown names are a CompileError listing the methods."""
    from snncompile.passes.registry import split_pipeline

    parts, depth, cur = [], 0, ""
    for ch in spec:
        depth += ch == "{"
        depth -= ch == "}"
        if ch == "+" and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    out = []
    for part in parts:
        m = _SPEC.match(part)
        if not m:
            raise CompileError("bad fine-tuning method", [Diagnostic(
                repr(part), hint="NAME, NAME{key=value,...} or A+B")])
        name = m.group(1).replace("_", "-")
        if name not in METHODS:
            raise CompileError("unknown fine-tuning method", [Diagnostic(
                repr(m.group(1)), hint=f"methods: {', '.join(METHODS)}")])
        opts: dict[str, str] = {}
        for item in split_pipeline(m.group(2) or ""):
            if "=" not in item:
                raise CompileError("bad fine-tuning option", [Diagnostic(
                    f"{name}{{{item}}}: expected key=value")])
            k, v = item.split("=", 1)
            opts[k.strip()] = v.strip()
        out.append((name, opts))
    return out


def train(ir: Graph, data: Any, method: str = "distill", *, epochs: int = 5, lr: float = 2e-3,
          timesteps: int = 4, seed: int = 0, out_dir: str | Path | None = None,
          progress: bool = True, options: Mapping[str, Any] | None = None,
          config: FinetuneConfig | None = None,
          teacher: Graph | None = None) -> list[FinetuneResult]:
    """Like ``finetune`` but returns every step's ``FinetuneResult`` (history, timings, memory);
    the last one's ``.graph`` is the tuned IR. ``options`` apply to a single method (a spec's
    ``{...}`` options are merged over them); ``config`` overrides the keyword hyper-parameters.

    ``teacher`` (or ``config.teacher``): the ANN ``ir`` was converted from (``load_onnx``'s
    graph); give it whenever you have it: without it the IR's own ANN mode teaches, which is not
    the ANN after ``bias-calibration`` (``finetune.teacher``).

    ``config.holdout`` (default 0.1) of the samples are held out from training; the run returns
    the best of the network it started from and each step's result on them
    (``finetune.heldout``): the last result's ``graph`` is that network, its ``trained`` what
    training produced, its ``check`` the scores and the choice."""
    steps = parse_method(method)
    if options and len(steps) > 1:
        raise CompileError("bad fine-tuning option", [Diagnostic(
            "options= applies to one method; put per-method options in the spec",
            hint="'distill{tau=2}+temporal-consistency{lam=0.5}'")])
    base = config or FinetuneConfig(epochs=epochs, lr=lr, timesteps=timesteps, seed=seed,
                                    out_dir=Path(out_dir) if out_dir is not None else None,
                                    progress=progress)
    from snncompile.finetune import heldout
    from snncompile.finetune.teacher import teacher_for

    td = as_data(data)
    # the ANN teaches every step (not the IR's ANN mode: bias-calibration shifted its biases)
    teach, note = teacher_for(teacher if teacher is not None else base.teacher, ir, td.x)
    base = dataclasses.replace(base, teacher=teach)
    fit, held, disjoint = heldout.split(td, base.holdout, base.seed)
    results: list[FinetuneResult] = []
    graph = ir
    for i, (name, opts) in enumerate(steps):
        merged = {**(options or {}), **opts}
        sub = base.out_dir / f"{i}-{name}" if base.out_dir is not None else None
        cfg = dataclasses.replace(base, options=merged, out_dir=sub)
        res = METHODS[name](graph, fit, cfg)
        res.teacher = note
        results.append(res)
        graph = res.graph
    results[-1].trained = results[-1].graph
    if base.holdout > 0:  # never worse than the start on the held-out samples
        from snncompile.finetune.training import resolve_device

        names = [heldout.CONVERTED] + [
            f"after step {i + 1} ({r.method})" if len(results) > 1 else "fine-tuned"
            for i, r in enumerate(results)]
        kept, check = heldout.check(
            list(zip(names, [ir] + [r.graph for r in results])), held, base.teacher,
            base.timesteps, disjoint=disjoint, encoding=base.encoding, seed=base.seed,
            device=resolve_device(base.device))
        results[-1].graph, results[-1].check = kept, check
        if base.progress:
            print(check.summary(), file=sys.stderr)
    return results


def finetune(ir: Graph, data: Any, method: str = "distill", *, epochs: int = 5, lr: float = 2e-3,
             timesteps: int = 4, seed: int = 0, out_dir: str | Path | None = None,
             progress: bool = True, options: Mapping[str, Any] | None = None,
             teacher: Graph | None = None) -> Graph:
    """Train the converted SNN ``ir`` on ``data`` with ``method``; returns a new IR, or ``ir``
    itself when fine-tuning did not help on the held-out samples (``train``).

    Args:
        ir: a spiking IR (after conversion); never modified.
        data: ``snncompile.data.Dataset``, ``(x, y)``, ``x`` or an .npz path; ``y`` optional for
            ``distill``, required for ``temporal-consistency``.
        method: a name from ``METHODS``, with ``{key=value}`` options, chained with ``+``.
        epochs: epochs of each method's main stage (distill adds ``layer_epochs`` per layer).
        lr: Adam learning rate relative to each trained tensor's RMS
            (``training.step_scales``).
        timesteps: the T trained for.
        seed: batch order (and Poisson input) seed; a run is reproducible.
        out_dir: where checkpoints go (``<out_dir>/<i>-<method>/checkpoint.pt``); a second call
            with the same arguments resumes there (and more epochs extend the run).
        progress: a tqdm bar with the running loss, and one line per epoch.
        options: the method's options as typed values (``DistillOptions``/``TemporalOptions``).
        teacher: the ANN ``ir`` was converted from (``snncompile.load_onnx(path)``); without
            it the IR's ANN mode teaches, which bias-calibration shifted.
    """
    return train(ir, data, method, epochs=epochs, lr=lr, timesteps=timesteps, seed=seed,
                 out_dir=out_dir, progress=progress, options=options,
                 teacher=teacher)[-1].graph


class _DeprecatedCallableModule(types.ModuleType):
    """Deprecated alias kept for one release: ``snncompile.finetune(...)`` (the README's old
    spelling) calls ``finetune`` with a DeprecationWarning; use ``snncompile.finetune_snn``."""

    def __call__(self, ir: Graph, data: Any, method: str = "distill", *, epochs: int = 5,
                 lr: float = 2e-3, timesteps: int = 4, seed: int = 0,
                 out_dir: str | Path | None = None, progress: bool = True,
                 options: Mapping[str, Any] | None = None, teacher: Graph | None = None) -> Graph:
        import warnings

        warnings.warn("snncompile.finetune(...) is deprecated; use snncompile.finetune_snn(...)",
                      DeprecationWarning, stacklevel=2)
        return finetune(ir, data, method, epochs=epochs, lr=lr, timesteps=timesteps, seed=seed,
                        out_dir=out_dir, progress=progress, options=options, teacher=teacher)


sys.modules[__name__].__class__ = _DeprecatedCallableModule
