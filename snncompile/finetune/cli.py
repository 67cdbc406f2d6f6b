"""The ``--finetune`` flags of ``snn-compile`` and what the CLI runs for them.

The flags are declared in ``snncompile.options.FinetuneOptions`` (the CLI builds them from the
declarations); ``run_finetune(settings, opts, steps, snn, ds, ev, out_tmp, out_final)`` trains
the converted IR after the pass pipeline and returns (tuned IR, the report's ``finetune``
entry); the driver (``snncompile.driver.finetune``) calls it. Data (``driver.training_data``):
the whole calibration set (``--calibration`` file or the digits training split;
``--finetune-samples`` caps it), not only the ``--calibration-samples`` used for threshold
balancing. Checkpoints go to ``OUT/finetune/`` with the rest of the output (the CLI writes into
a temporary directory and moves it into ``--out`` only on success); a later run with the same
``--out`` and arguments resumes from them, so ``--finetune-epochs 10`` after a 5-epoch run
trains 5 more epochs. The report entry also has the gpu simulator's
accuracy by timestep on the evaluation data before and after fine-tuning.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Any

from snncompile.ir.graph import Graph
from snncompile.options import FinetuneOptions

#: the settings of ``--finetune*`` (declared in ``snncompile.options``)
FinetuneSettings = FinetuneOptions


def check_settings(s: FinetuneOptions, opts: Any) -> int:
    """Refuse a bad method before any data is read (the counts were checked against their
    declarations); returns the T trained for."""
    from snncompile.finetune import parse_method

    parse_method(s.finetune)
    return opts.timesteps if s.finetune_timesteps is None else s.finetune_timesteps


def _accuracy(graph: Graph, ev: Any, opts: Any, steps: int) -> dict[str, float]:
    """Accuracy by timestep on the (streamed, rank-sharded) evaluation data."""
    from snncompile.backends.common import run_stream
    from snncompile.backends.gpu import compile as gpu_compile

    res, labels, _ = run_stream(gpu_compile(graph, opts), ev, opts, steps, progress=False)
    return {str(t + 1): float(a) for t, a in enumerate(res.accuracy_by_timestep(labels))}


def run_finetune(s: FinetuneOptions, opts: Any, steps: int, snn: Graph, ds: Any, ev: Any,
                 out_tmp: Path, out_final: Path,
                 ann: Graph | None = None) -> tuple[Graph, dict[str, Any]]:
    """Fine-tune ``snn`` on ``ds`` (in memory) as ``s`` says, for ``steps`` (``check_settings``),
    ``ann`` (the frontend's graph) teaching; checkpoints under ``out_tmp/finetune``, resumed
    from ``out_final/finetune``. The network returned is the better of ``snn`` and the
    fine-tuned one on held-out calibration samples (``finetune.heldout``), and the printed line
    and the report's entry say which."""
    from snncompile import distributed
    from snncompile.finetune import FinetuneConfig, train

    main = distributed.is_main()  # under torchrun: rank 0 checkpoints, the others follow it
    ck = out_tmp / "finetune"
    prev = out_final / "finetune"
    if prev.is_dir() and main:  # resume: start from the previous run's checkpoints
        shutil.copytree(prev, ck, dirs_exist_ok=True)
    cfg = FinetuneConfig(epochs=s.finetune_epochs, lr=s.finetune_lr, timesteps=steps,
                         seed=opts.seed, batch_size=s.finetune_batch_size,
                         surrogate=s.finetune_surrogate, encoding=opts.encoding,
                         device=opts.device, out_dir=ck if main else None,
                         progress=sys.stderr.isatty() and main, teacher=ann,
                         holdout=s.finetune_holdout)
    t0 = time.perf_counter()
    results = train(snn, ds, s.finetune, config=cfg)
    tuned = results[-1].graph
    check = results[-1].check
    for r in results:  # name the checkpoint where it will be, not the temporary directory
        if r.resumed_from is not None:
            r.resumed_from = r.resumed_from.replace(str(out_tmp), str(out_final))
    info: dict[str, Any] = {
        "method": s.finetune, "epochs": s.finetune_epochs,
        "lr": s.finetune_lr,
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
            print(f"fine-tuning ({s.finetune}, {s.finetune_epochs} epochs at T={steps}, "
                  f"{len(ds)} samples, {info['seconds']:.1f} s): accuracy at T={steps} "
                  f"{before[t]:.4f} -> {after[t]:.4f} ({after[t] - before[t]:+.4f}){kept}")
    return tuned, info

