"""The ``--finetune`` flags of ``snn-compile`` and what the CLI runs for them.

``add_arguments(parser)`` adds the option group, ``settings_from_args`` reads it;
``run_finetune(settings, opts, steps, snn, ds, ev, out_tmp, out_final)`` trains the converted
IR after the pass pipeline and returns (tuned IR, the report's ``finetune`` entry); the driver
(``snncompile.driver.finetune``) calls it. Data (``driver.training_data``): the whole
calibration set (``--calibration`` file or the digits training split; ``--finetune-samples``
caps it), not only the ``--calibration-samples`` used for threshold balancing. Checkpoints
go to ``OUT/finetune/`` with the rest of the output (the CLI writes into a temporary directory
and moves it into ``--out`` only on success); a later run with the same ``--out`` and
arguments resumes from them, so ``--finetune-epochs 10`` after a 5-epoch run trains 5 more
epochs. The report entry also has the gpu simulator's
accuracy by timestep on the evaluation data before and after fine-tuning.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from snncompile.ir.graph import Graph


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
    g.add_argument("--finetune-surrogate", choices=("triangle", "rectangle", "sigmoid"),
                   default="triangle", help="surrogate gradient of the spike")


@dataclass(frozen=True)
class FinetuneSettings:
    """The ``--finetune*`` flags: ``method`` (``finetune.parse_method``'s spelling), epochs per
    method, Adam's learning rate, the T trained for (None: ``--timesteps``), the batch size,
    at most this many calibration samples (None: all), the spike's surrogate gradient."""

    method: str
    epochs: int = 5
    lr: float = 1e-3
    timesteps: int | None = None
    batch_size: int = 64
    samples: int | None = None
    surrogate: str = "triangle"


def settings_from_args(a: argparse.Namespace) -> FinetuneSettings | None:
    """The settings of ``add_arguments``' flags (None without ``--finetune``)."""
    if not a.finetune:
        return None
    return FinetuneSettings(a.finetune, a.finetune_epochs, a.finetune_lr, a.finetune_timesteps,
                            a.finetune_batch_size, a.finetune_samples, a.finetune_surrogate)


def check_settings(s: FinetuneSettings, opts: Any) -> int:
    """Refuse bad settings before any data is read; returns the T trained for."""
    from snncompile import validate
    from snncompile.finetune import parse_method

    parse_method(s.method)
    steps = opts.timesteps if s.timesteps is None else \
        validate.integer(s.timesteps, "finetune_timesteps")
    validate.sample_count(s.samples, "finetune_samples")
    return steps


def _accuracy(graph: Graph, ev: Any, opts: Any, steps: int) -> dict[str, float]:
    """Accuracy by timestep on the (streamed, rank-sharded) evaluation data."""
    from snncompile.backends.common import run_stream
    from snncompile.backends.gpu import compile as gpu_compile

    res, labels, _ = run_stream(gpu_compile(graph, opts), ev, opts, steps, progress=False)
    return {str(t + 1): float(a) for t, a in enumerate(res.accuracy_by_timestep(labels))}


def run_finetune(s: FinetuneSettings, opts: Any, steps: int, snn: Graph, ds: Any, ev: Any,
                 out_tmp: Path, out_final: Path) -> tuple[Graph, dict[str, Any]]:
    """Fine-tune ``snn`` on ``ds`` (in memory) as ``s`` says, for ``steps`` (``check_settings``);
    checkpoints under ``out_tmp/finetune``, resumed from ``out_final/finetune``."""
    from snncompile import distributed
    from snncompile.finetune import FinetuneConfig, train

    main = distributed.is_main()  # under torchrun: rank 0 checkpoints, the others follow it
    ck = out_tmp / "finetune"
    prev = out_final / "finetune"
    if prev.is_dir() and main:  # resume: start from the previous run's checkpoints
        shutil.copytree(prev, ck, dirs_exist_ok=True)
    cfg = FinetuneConfig(epochs=s.epochs, lr=s.lr, timesteps=steps,
                         seed=opts.seed, batch_size=s.batch_size,
                         surrogate=s.surrogate, encoding=opts.encoding,
                         device=opts.device, out_dir=ck if main else None,
                         progress=sys.stderr.isatty() and main)
    t0 = time.perf_counter()
    results = train(snn, ds, s.method, config=cfg)
    tuned = results[-1].graph
    for r in results:  # name the checkpoint where it will be, not the temporary directory
        if r.resumed_from is not None:
            r.resumed_from = r.resumed_from.replace(str(out_tmp), str(out_final))
    info: dict[str, Any] = {
        "method": s.method, "epochs": s.epochs, "lr": s.lr,
        "timesteps": steps, "samples": len(ds), "labels": ds.y is not None,
        "seconds": time.perf_counter() - t0, "steps": [r.summary() for r in results]}
    if ev is not None and getattr(ev, "labelled", getattr(ev, "y", None) is not None):
        before = _accuracy(snn, ev, opts, max(steps, opts.timesteps))
        after = _accuracy(tuned, ev, opts, max(steps, opts.timesteps))
        info["accuracy_before"], info["accuracy_after"] = before, after
        t = str(steps)
        if main:
            print(f"fine-tuning ({s.method}, {s.epochs} epochs at T={steps}, "
                  f"{len(ds)} samples, {info['seconds']:.1f} s): accuracy at T={steps} "
                  f"{before[t]:.4f} -> {after[t]:.4f} ({after[t] - before[t]:+.4f})")
    return tuned, info

