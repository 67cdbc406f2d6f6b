"""The ``--finetune`` flags of ``snn-compile`` and what the CLI runs for them.

``add_arguments(parser)`` adds the option group; ``run_finetune(args, opts, snn, ev, out_tmp,
out_final)`` trains the converted IR after the pass pipeline and returns (tuned IR, the
report's ``finetune`` entry). Data: the whole calibration set (``--calibration`` file or the
digits training split; ``--finetune-samples`` caps it), not only the ``--calibration-samples``
used for threshold balancing. Checkpoints go to ``OUT/finetune/`` with the rest of the output
(the CLI writes into a temporary directory and moves it into ``--out`` only on success); a
later run with the same ``--out`` and arguments resumes from them, so ``--finetune-epochs 10``
after a 5-epoch run trains 5 more epochs. The report entry also has the gpu simulator's
accuracy by timestep on the evaluation data before and after fine-tuning.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from snncompile.ir.diagnostics import CompileError, Diagnostic
from snncompile.ir.graph import Graph
from snncompile.ir.verify import reads_channels_last


def add_arguments(p: argparse.ArgumentParser) -> None:
    from snncompile.finetune import METHODS

    g = p.add_argument_group("fine-tuning (post-conversion training, issue 6)")
    g.add_argument("--finetune", default=None, metavar="METHOD",
                   help=f"train the converted SNN with the ANN as teacher ({', '.join(METHODS)}); "
                        "chain with +, e.g. distill+temporal-consistency; options as "
                        "distill{layer_loss=rate}")
    g.add_argument("--finetune-epochs", type=int, default=5, help="epochs per method (default 5)")
    g.add_argument("--finetune-lr", type=float, default=1e-3, help="Adam learning rate")
    g.add_argument("--finetune-timesteps", type=int, default=None,
                   help="the T trained for (default: --timesteps)")
    g.add_argument("--finetune-batch-size", type=int, default=64)
    g.add_argument("--finetune-samples", type=int, default=None,
                   help="use at most this many calibration samples (default: all)")
    g.add_argument("--finetune-holdout", type=float, default=0.1, metavar="FRACTION",
                   help="part of the fine-tuning samples held out to check that fine-tuning "
                        "helped; the better network is kept (default 0.1; 0: no check)")
    g.add_argument("--finetune-surrogate", choices=("triangle", "rectangle", "sigmoid"),
                   default="triangle", help="surrogate gradient of the spike")


def _training_data(a: argparse.Namespace, seed: int, input_shape: Any = None,
                   channels_last: bool = False) -> Any:
    from snncompile import data

    if a.dataset == "digits":
        ds = data.digits("train", seed=seed)
    elif a.calibration is not None:  # a streamed set is read into memory (--finetune-samples)
        pre = data.preprocess_from(getattr(a, "preprocess", "none"), color=a.color,
                                   resize=a.resize, crop=a.crop, mean=a.mean, std=a.std,
                                   input_shape=input_shape)
        from snncompile import events
        from snncompile.finetune import parse_method

        # event recordings: temporal-consistency alone trains on the T frames of each
        # recording (frame t at step t), anything else on the summed frames (the ANN's view)
        on_frames = {m for m, _ in parse_method(a.finetune)} == {"temporal-consistency"}
        steps = a.timesteps if a.finetune_timesteps is None else a.finetune_timesteps
        binning = None if input_shape is None else events.EventBinning(
            tuple(input_shape), steps if on_frames else None, a.event_binning)
        src = data.open_data(a.calibration, preprocess=pre, workers=a.workers,
                             events=binning).spread(a.finetune_samples)
        return data.channels_first(src, input_shape, channels_last).materialize()
    elif a.eval is not None:
        raise CompileError("no fine-tuning data", [Diagnostic(
            "--finetune trains on the calibration data; it never trains on --eval",
            hint="give --calibration DATA")])
    else:
        raise CompileError("no fine-tuning data", [Diagnostic(
            "--finetune needs --calibration C.npz or --dataset digits")])
    return ds.take(a.finetune_samples)


def _accuracy(graph: Graph, ev: Any, opts: Any, steps: int) -> dict[str, float]:
    """Accuracy by timestep on the (streamed, rank-sharded) evaluation data."""
    from snncompile.backends.common import run_stream
    from snncompile.backends.gpu import compile as gpu_compile

    res, labels, _ = run_stream(gpu_compile(graph, opts), ev, opts, steps, progress=False)
    return {str(t + 1): float(a) for t, a in enumerate(res.accuracy_by_timestep(labels))}


def run_finetune(a: argparse.Namespace, opts: Any, snn: Graph, ev: Any, out_tmp: Path,
                 out_final: Path, ann: Graph | None = None) -> tuple[Graph, dict[str, Any]]:
    """Fine-tune ``snn`` as the flags say, ``ann`` (the frontend's graph) teaching;
    checkpoints under ``out_tmp/finetune``. The network returned is the better of ``snn`` and
    the fine-tuned one on held-out calibration samples (``finetune.heldout``), and the printed
    line and the report's entry say which."""
    from snncompile import distributed
    from snncompile.finetune import FinetuneConfig, parse_method, train

    parse_method(a.finetune)  # bad names fail before any data is read
    from snncompile import validate

    steps = opts.timesteps if a.finetune_timesteps is None else \
        validate.integer(a.finetune_timesteps, "finetune_timesteps")
    validate.sample_count(a.finetune_samples, "finetune_samples")
    ds = _training_data(a, opts.seed, snn.shape(snn.input_name),
                        reads_channels_last(snn))
    main = distributed.is_main()  # under torchrun: rank 0 checkpoints, the others follow it
    ck = out_tmp / "finetune"
    prev = out_final / "finetune"
    if prev.is_dir() and main:  # resume: start from the previous run's checkpoints
        shutil.copytree(prev, ck, dirs_exist_ok=True)
    cfg = FinetuneConfig(epochs=a.finetune_epochs, lr=a.finetune_lr, timesteps=steps,
                         seed=opts.seed, batch_size=a.finetune_batch_size,
                         surrogate=a.finetune_surrogate, encoding=opts.encoding,
                         device=opts.device, out_dir=ck if main else None,
                         progress=sys.stderr.isatty() and main, teacher=ann,
                         holdout=a.finetune_holdout)
    t0 = time.perf_counter()
    results = train(snn, ds, a.finetune, config=cfg)
    tuned = results[-1].graph
    check = results[-1].check
    for r in results:  # name the checkpoint where it will be, not the temporary directory
        if r.resumed_from is not None:
            r.resumed_from = r.resumed_from.replace(str(out_tmp), str(out_final))
    info: dict[str, Any] = {
        "method": a.finetune, "epochs": a.finetune_epochs, "lr": a.finetune_lr,
        "timesteps": steps, "samples": len(ds), "labels": ds.y is not None,
        "seconds": time.perf_counter() - t0, "teacher": results[-1].teacher,
        "kept": "fine-tuned" if check is None else check.kept,  # converted | fine-tuned | ..
        "held_out": None if check is None else check.report(),
        "steps": [r.summary() for r in results]}
    if main and check is not None and not cfg.progress:  # train printed it with progress
        print(check.summary())
    if ev is not None and getattr(ev, "labelled", getattr(ev, "y", None) is not None):
        before = _accuracy(snn, ev, opts, max(steps, opts.timesteps))
        after = _accuracy(tuned, ev, opts, max(steps, opts.timesteps))
        info["accuracy_before"], info["accuracy_after"] = before, after
        t = str(steps)
        if main:
            kept = " (the converted network, kept)" if info["kept"] == "converted" else ""
            print(f"fine-tuning ({a.finetune}, {a.finetune_epochs} epochs at T={steps}, "
                  f"{len(ds)} samples, {info['seconds']:.1f} s): accuracy at T={steps} "
                  f"{before[t]:.4f} -> {after[t]:.4f} ({after[t] - before[t]:+.4f}){kept}")
    return tuned, info

