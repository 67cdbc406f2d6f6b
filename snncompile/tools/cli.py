"""`snn-compile`: ONNX model in, spiking network + report out.

Exit codes (DESIGN.md): 0 ok; 1 internal error (traceback) or a failed ``--check``; 2 bad usage or
bad input (one line on stderr, no traceback, nothing half-written in ``--out``).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from snncompile import distributed, driver, validate
from snncompile.ir.diagnostics import CompileError, Diagnostic, RuntimeFault
from snncompile.ir.verify import reads_channels_last
from snncompile.options import (
    DATA_OPTIONS,
    FINETUNE_OPTIONS,
    OPTIONS,
    TARGETS,
    CompileOptions,
    DataOptions,
    FinetuneOptions,
    choices_of,
)
from snncompile.tools.output import (
    OutputDir,
    Terminated,
    check_out,
    check_report,
    sigterm_unwinds,
    write_report,
)
from snncompile.tools.usage import OneLineParser, exit_code

log = logging.getLogger("snncompile")


_TYPES = {"int": int, "float": float, "str": str}


def _add_option(group: argparse._ArgumentGroup, f: dataclasses.Field) -> None:
    """One CLI flag from an option declaration (``snncompile.options``)."""
    flag = "--" + f.name.replace("_", "-")
    md = f.metadata
    if str(f.type) == "bool":
        group.add_argument(flag, *md.get("flags", ()), dest=f.name, action="store_true",
                           help=md.get("help"))
        return
    typ = md.get("parse") or _TYPES[str(f.type).split("|")[0].strip()]
    shown = f.default is not None and md.get("show_default", True)
    default = f" (default {f.default})" if shown else ""
    group.add_argument(flag, *md.get("flags", ()), dest=f.name, type=typ, default=f.default,
                       choices=choices_of(f), metavar=md.get("metavar"),
                       help=(md.get("help") or "") + default)


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="snn-compile",
        description="Convert a trained ANN (ONNX) into a spiking network for Lava/Loihi 2 or a "
                    "fast PyTorch simulator, and measure accuracy at every timestep.")
    p.add_argument("model", nargs="?",
                   help="the ONNX model, or a NIR graph (.nir: a spiking network, no conversion)")
    p.add_argument("--target", choices=TARGETS, default="gpu",
                   help="ir: write the IR only; gpu: torch simulator; loihi: Lava (default gpu)")
    p.add_argument("--out", type=str, default=None, help="output directory (default: out/<model>)")
    groups = {"main": p, "data": p.add_argument_group("data"),
              "conversion": p.add_argument_group("conversion"),
              "simulation": p.add_argument_group("simulation")}
    for f in (*DATA_OPTIONS, *OPTIONS):  # every option, from its declaration
        _add_option(groups[f.metadata.get("group", "conversion")], f)
    pm = p.add_argument_group("passes")
    pm.add_argument("--pass", dest="extra_passes", action="append", default=[], metavar="SPEC",
                    help="append a pass: name, name{k=v}, or my_module:my_pass (repeatable)")
    pm.add_argument("--pipeline", default=None, help="replace the whole pipeline (comma list)")
    pm.add_argument("--print-pipeline", action="store_true", help="print the pipeline and exit")
    pm.add_argument("--list-passes", action="store_true", help="list registered passes and exit")
    pm.add_argument("--dump-ir-after", action="append", default=[], metavar="PASS",
                    help="write the IR after PASS (or 'all') under OUT/ir-after/")
    ft = p.add_argument_group("fine-tuning (post-conversion training, issue 6)")
    for f in FINETUNE_OPTIONS:
        _add_option(ft, f)
    p.add_argument("--check", action="store_true",
                   help="compare the IR's ANN mode with onnxruntime and exit (1 if it fails)")
    p.add_argument("--data", type=Path, default=None, help="input .npz for --check")
    p.add_argument("--report", type=str, default=None, help="also write report.json here")
    p.add_argument("-v", "--verbose", action="count", default=0)
    return p


def given_options(argv: list[str] | None) -> set[str]:
    """The destinations the command line set explicitly (``--neuron if`` too, and abbreviated
    flags): the same parser with every default suppressed."""
    p = build_parser()
    for action in p._actions:
        action.default = argparse.SUPPRESS
    return set(vars(p.parse_args(argv)))


def options_from_args(a: argparse.Namespace) -> CompileOptions:
    return CompileOptions(**{f.name: getattr(a, f.name) for f in OPTIONS})


def compilation_from_args(a: argparse.Namespace) -> driver.Compilation:
    """The flags as a ``driver.Compilation`` (``a.given``: the flags set explicitly); every
    option group is checked against its declarations here."""
    d = DataOptions(**{f.name: getattr(a, f.name) for f in DATA_OPTIONS})
    spec = driver.DataSpec(dataset=d.dataset, calibration=d.calibration, evaluation=d.eval,
                           preprocess=d.preprocess, color=d.color, resize=d.resize, crop=d.crop,
                           mean=d.mean, std=d.std, workers=d.workers)
    ft = FinetuneOptions(**{f.name: getattr(a, f.name) for f in FINETUNE_OPTIONS}) \
        if a.finetune else None
    return driver.Compilation(
        model=Path(a.model) if a.model else "", target=a.target, options=options_from_args(a),
        given=frozenset(getattr(a, "given", ())), pipeline=a.pipeline,
        extra_passes=tuple(a.extra_passes), data=spec, finetune=ft,
        dump_ir_after=tuple(a.dump_ir_after), echo=True,
        nir_reset=None if d.nir_reset == "file" else d.nir_reset)


class _Scratch:
    """What a torchrun rank other than 0 writes into: a private folder in the system's
    temporary directory, never committed, removed at the end (only rank 0 writes ``--out``)."""

    def __init__(self, final: Path) -> None:
        self.final = final
        self.tmp = Path(tempfile.mkdtemp(prefix="snncompile-rank-"))

    def discard(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def _list_passes() -> int:
    from snncompile import passes

    for name, obj in passes.registered().items():
        print(f"{name:<24} {passes.doc_line(obj)}")
    return 0


def _print_pipeline(c: driver.Compilation) -> int:
    from snncompile import passes

    pm = driver.fixed_pipeline(c)
    print(pm.spec())
    for p in pm.passes:
        print(f"  {p.name:<24} {passes.doc_line(p)}")
    return 0


def _check_args(a: argparse.Namespace) -> Path:
    """The refusals of flag combinations, before any work; returns the model's path."""
    if not a.model:
        raise CompileError("bad usage", [Diagnostic("no model given",
                                                    hint="snn-compile MODEL.onnx ...")])
    model = validate.model_file(a.model)
    for flag, given in (("--calibration", a.calibration), ("--eval", a.eval)):
        if given is not None and not given.strip():  # an unset shell variable: not "no data"
            raise CompileError("bad usage", [Diagnostic(f"{flag} is empty")])
    if a.check and model.suffix.lower() == ".nir":
        raise CompileError("bad usage", [Diagnostic(
            "--check compares the IR with onnxruntime; a .nir model has no ONNX graph")])
    a.report = check_report(a.report, out=a.out if a.out is not None else Path("out") / model.stem,
                            inputs=[model, a.calibration, a.eval, a.data])
    if a.export == "netx" and a.target != "loihi":
        raise CompileError("bad usage", [Diagnostic(f"--export {a.export} needs --target loihi")])
    if a.export is not None and a.target == "ir":
        raise CompileError("bad usage", [Diagnostic(
            f"--export {a.export} writes a spiking network: use --target gpu or loihi")])
    return model


def run(a: argparse.Namespace) -> int:
    """The command line as one ``driver`` run: refusals first (exit 2, nothing written), then
    the stages into a temporary folder that only a successful run moves into ``--out``."""
    if a.list_passes:
        return _list_passes()
    if os.getcwd() not in sys.path:  # `--pass my_module:my_pass` finds my_module.py in the cwd
        sys.path.append(os.getcwd())
    c = compilation_from_args(a)
    if a.print_pipeline:
        return _print_pipeline(c)
    model = _check_args(a)
    if a.check:
        return _check(model, a, c.options)
    out_path = check_out(a.out if a.out is not None else Path("out") / model.stem)
    driver.prepare(c)
    main = distributed.is_main()  # under torchrun only rank 0 writes
    out: Any = OutputDir(out_path) if main else _Scratch(out_path)
    try:
        text = driver.run(c, out.tmp, out.final)
        if main:
            out.commit()
        else:
            out.discard()
    except BaseException:
        out.discard()
        raise
    if main:
        if text is not None and a.report:
            write_report(a.report, text)  # only on success
        print(f"wrote {out.final}/")
    return 0


def _check(model: Path, a: argparse.Namespace, opts: CompileOptions) -> int:
    """IR ANN mode vs onnxruntime on ``--data`` (or seeded random input in [0, 1])."""
    from snncompile import data
    from snncompile.frontend import load_onnx, run_onnxruntime
    from snncompile.interp import check_input, run_ann

    graph = load_onnx(model)
    if a.data is not None:
        x = data.load_npz(a.data).x[:256]
    elif a.dataset == "digits":
        x = data.digits("test").x[:256]
    else:
        shape = graph.shape(graph.input_name)
        x = np.random.default_rng(a.seed).random((16, *shape), dtype=np.float32)
    last = reads_channels_last(graph)
    x = data.channels_first_array(x, graph.shape(graph.input_name), last)
    check_input(graph, x)
    from snncompile import validate
    from snncompile.interp import sample_bytes

    # one sample must fit the free memory (a hostile Pad or a huge layer: not a torch traceback)
    validate.check_memory(sample_bytes(graph), "the ANN forward pass of one sample",
                          hint="a smaller model")
    from snncompile.memory import room_bytes

    ours = run_ann(graph, x, max_bytes=room_bytes(opts.memory_bytes))
    try:  # onnxruntime reads the model's own layout
        ref = run_onnxruntime(model, x.transpose(0, 2, 3, 1) if last else x)
    except Exception as e:  # onnxruntime's own error types (Fail, InvalidGraph, ...)
        if isinstance(e, (CompileError, MemoryError)):
            raise
        import re

        first = " ".join(str(e).split()) or type(e).__name__
        first = re.sub(r"/onnxruntime_src/\S+ .*\) ", "", first)  # drop the C++ location
        raise CompileError("--check: onnxruntime cannot run the model", [Diagnostic(
            f"{model}: {first[:300]}", hint="--check needs a model onnxruntime accepts")]) from None
    err = np.abs(ours - ref).max() / max(float(np.abs(ref).max()), 1e-12)
    agree = float(np.mean(ours.reshape(len(x), -1).argmax(1) == ref.reshape(len(x), -1).argmax(1)))
    ok = err <= 1e-4
    print(f"check {model.name}: {len(x)} samples, max relative error {err:.3g} "
          f"(limit 1e-4), argmax agreement {agree:.4f}: {'OK' if ok else 'FAILED'}")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        a = parser.parse_args(argv)
    except SystemExit as e:  # --help, or a usage error (one line, OneLineParser)
        return exit_code(e)
    a.given = given_options(argv)
    logging.basicConfig(level=logging.WARNING - 10 * min(a.verbose, 2),
                        format="%(levelname)s %(name)s: %(message)s")
    distributed = None
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # under torchrun (torch only then)
        from snncompile import distributed

        distributed.init()
    # Python warnings (numpy overflow, ...) are shown after a successful run, never before the
    # one error line of a failed one
    with warnings.catch_warnings(record=True) as caught, sigterm_unwinds():
        warnings.simplefilter("default")
        # but not a dependency's note on its own optional imports (networkx, imported by Lava:
        # "pandas not found"): Python hides ImportWarning by default, and so do we
        warnings.simplefilter("ignore", ImportWarning)
        try:
            rc = run(a)
        except CompileError as e:
            print(f"snn-compile: error: {e.one_line()}", file=sys.stderr)
            for d in e.diagnostics[1:] if a.verbose else ():
                print(f"  {d}", file=sys.stderr)
            return 2
        except RuntimeFault as e:
            print(f"snn-compile: error: {e}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("snn-compile: interrupted", file=sys.stderr)
            return 130
        except Terminated:
            print("snn-compile: terminated", file=sys.stderr)
            return 143
        finally:
            if distributed is not None:
                distributed.shutdown()
    for w in caught:
        print(warnings.formatwarning(w.message, w.category, w.filename, w.lineno).rstrip(),
              file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
