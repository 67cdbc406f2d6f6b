"""``temporal-consistency``: per-timestep output loss plus a consistency term between the
timesteps' output distributions (Zhao, Shen, Dong, Li, Zeng 2023, "Improving stability and
performance of spiking neural networks through enhancing temporal consistency").

The readout integrates; its output at step t is o(t) = potential(t) − potential(t−1) (logit
units; the prediction at t is argmax Σ_{τ≤t} o(τ)). With labels y, temperature τ, weight λ:

    p_t   = softmax(o(t) / τ)                         the output distribution at step t
    p̄     = (1/T) Σ_t p_t                              their mean (held fixed: a target)
    L     = (1/T) Σ_t CE(o(t), y)  +  λ · τ² · (1/T) Σ_t KL(p̄ || p_t)

The first term asks every step, not only the average, to be right; the second pulls every
step's distribution towards the common one, so that the outputs agree across time and even the
first steps (T = 1) classify. Training runs at T = ``config.timesteps`` over all parameters for
``config.epochs`` epochs. Labels are required.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from snncompile.finetune.differentiable import DifferentiableSNN, write_back
from snncompile.finetune.training import (
    FinetuneConfig,
    FinetuneResult,
    Stage,
    StepOutputs,
    TrainData,
    fingerprint,
    parse_options,
    run_stages,
)
from snncompile.ir.diagnostics import CompileError, Diagnostic
from snncompile.ir.graph import Graph

Tensor = torch.Tensor


@dataclass(frozen=True, kw_only=True)
class TemporalOptions:
    """Options of ``temporal-consistency`` (``'temporal-consistency{lam=0.5}'``)."""

    lam: float = 1.0  # λ, weight of the consistency term
    tau: float = 1.0  # temperature of the distributions

    def __post_init__(self) -> None:
        if self.lam < 0 or self.tau <= 0:
            raise CompileError("bad fine-tuning option", [Diagnostic(
                f"temporal-consistency lam={self.lam}, tau={self.tau}; need lam >= 0, tau > 0")])


def consistency_loss(outputs: Tensor, tau: float = 1.0) -> Tensor:
    """(1/T) Σ_t KL(p̄ || p_t) · τ² for outputs (T, B, K), p̄ detached."""
    logp = F.log_softmax(outputs / tau, dim=-1)  # (T, B, K)
    mean_p = logp.exp().mean(0).detach()  # (B, K)
    log_mean = mean_p.clamp_min(1e-12).log()
    kl = (mean_p.unsqueeze(0) * (log_mean.unsqueeze(0) - logp)).sum(-1)  # (T, B)
    return kl.mean() * tau * tau


def temporal_loss(outputs: Tensor, y: Tensor, lam: float, tau: float) -> Tensor:
    steps = outputs.shape[0]
    ce = F.cross_entropy(outputs.flatten(0, 1), y.repeat(steps))
    return ce + lam * consistency_loss(outputs, tau)


def temporal_consistency(ir: Graph, data: TrainData, cfg: FinetuneConfig) -> FinetuneResult:
    """Per-step CE + temporal consistency (module docstring)."""
    t0 = time.perf_counter()
    if data.y is None:
        raise CompileError("temporal-consistency fine-tuning needs labels", [Diagnostic(
            "the fine-tuning data has no 'y'",
            hint="give a calibration .npz with x and y, or use --finetune distill")])
    opts: TemporalOptions = parse_options(TemporalOptions, cfg.options, "temporal-consistency")
    net = DifferentiableSNN(ir, surrogate=cfg.surrogate)

    def loss(o: StepOutputs) -> Tensor:
        assert o.y is not None
        return temporal_loss(o.step_outputs, o.y, opts.lam, opts.tau)

    stages = [Stage("output", cfg.epochs, list(dict(net.named_trainables()).values()), loss)]
    fp = fingerprint("temporal-consistency",
                     dataclasses.replace(cfg, options=dataclasses.asdict(opts)), ir, data)
    teacher = cfg.teacher if cfg.teacher is not None else ir
    history, peak, resumed = run_stages(net, stages, data, cfg, teacher, "temporal-consistency", fp)
    net.cpu()
    return FinetuneResult(write_back(ir, net), "temporal-consistency", history,
                          time.perf_counter() - t0, peak, resumed)
