"""``distill``: layer-wise ANN→SNN knowledge distillation (LaSNN, Hong et al. 2023), applied to
the converted SNN with the ANN as teacher.

Teacher: ``config.teacher`` run as an ANN (``interp.run_ann_torch``): ``finetune.train`` sets it
to the ANN the IR was converted from, in the IR's op names (``finetune.teacher``), or to the IR
itself (its ANN mode) when no ANN was given — which is not the ANN after ``bias-calibration``
(issue 22). Student: the converted SNN in the simulator's differentiable mode at
T = ``config.timesteps``.

What is matched, for a spiking layer l with threshold θ_l, spikes s_l(t), T steps:

    r_l = θ_l · (1/T) Σ_t s_l(t)                the SNN's time-averaged output (what it sends)
    a_l = the ANN's activation of the same op (after its ReLU / clip)

*Attention matching* (LaSNN; attention transfer of Zagoruyko & Komodakis): a feature map F of
shape (C, H, W) is compressed over channels into the spatial map

    A(F) = Σ_c |F_c|^p   (p = 2),      Q(F) = A(F) / ||A(F)||_2   (flattened over H·W)
    L_att(l) = mean over samples of || Q(r_l) − Q(a_l) ||_2

which compares where the two networks put their activity, independent of the two layers'
scales (heterogeneous ANN activations vs spike rates). A vector layer (Dense) has no spatial
axes: its map is Q = |f|^p / || |f|^p ||_2 over the units.

*Rate matching* (the plain baseline, ``layer_loss=rate``): L_rate(l) = mean (r_l − a_l)² /
mean a_l² (a normalised MSE, so that layers of different scales weigh the same).

*Output KD*: z_S = potential(T)/T, the readout's mean output (logit units), z_A the ANN's logits,
τ the temperature (Hinton et al.):

    L_KD = τ² · KL( softmax(z_A/τ) || softmax(z_S/τ) )  [+ ce_weight · CE(z_S, y) with labels]

Schedule (layer-wise, from the input side): one stage per spiking layer in topological order,
``layer_epochs`` epochs each, minimising that layer's matching loss over the parameters that
shape it given the (already matched) layers below — its θ and the weights between it and the
previous spiking layers (with ``train_upstream=true``: every parameter upstream of it); then
``config.epochs`` epochs of the output stage over all parameters with L_KD (+ CE), plus
``layer_weight`` × the sum of the layer losses. Labels are optional (KD alone without them).
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
from snncompile.interp import run_ann_torch
from snncompile.ir.diagnostics import CompileError, Diagnostic
from snncompile.ir.graph import Graph

Tensor = torch.Tensor


@dataclass(frozen=True, kw_only=True)
class DistillOptions:
    """Options of ``distill`` (``--finetune 'distill{layer_loss=rate,tau=2}'``)."""

    layer_loss: str = "attention"  # attention | rate | none (output KD only)
    p: float = 2.0  # attention map exponent
    tau: float = 4.0  # KD temperature
    layer_epochs: int = 1  # epochs per layer stage
    ce_weight: float = 1.0  # weight of CE(z_S, y) in the output stage (when labels exist)
    layer_weight: float = 0.0  # weight of the layer losses in the output stage
    train_upstream: bool = False  # layer stage l also trains every parameter below l

    def __post_init__(self) -> None:
        bad = []
        if self.layer_loss not in ("attention", "rate", "none"):
            bad.append(Diagnostic(
                f"distill.layer_loss={self.layer_loss!r}; attention | rate | none"))
        if self.tau <= 0 or self.p <= 0:
            bad.append(Diagnostic(f"distill.tau={self.tau}, p={self.p}; both must be > 0"))
        if self.layer_epochs < 0:
            bad.append(Diagnostic(f"distill.layer_epochs={self.layer_epochs}; must be >= 0"))
        if bad:
            raise CompileError("bad fine-tuning option", bad)


def attention_map(f: Tensor, p: float = 2.0) -> Tensor:
    """Q(F): (B, C, H, W) -> (B, H·W) channel-pooled |F|^p, L2-normalised; (B, N) -> (B, N)."""
    a = f.abs().pow(p)
    if a.dim() > 2:
        a = a.sum(1).flatten(1)
    return F.normalize(a, dim=1)


def attention_loss(student: Tensor, teacher: Tensor, p: float = 2.0) -> Tensor:
    return (attention_map(student, p) - attention_map(teacher, p)).norm(dim=1).mean()


def rate_loss(student: Tensor, teacher: Tensor) -> Tensor:
    return F.mse_loss(student, teacher) / teacher.pow(2).mean().clamp_min(1e-12)


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, tau: float) -> Tensor:
    return F.kl_div(F.log_softmax(student_logits / tau, dim=1),
                    F.log_softmax(teacher_logits / tau, dim=1), log_target=True,
                    reduction="batchmean") * tau * tau


def _layer_loss(kind: str, p: float, name: str):  # noqa: ANN202 (a closure)
    def loss(o: StepOutputs) -> Tensor:
        assert o.teacher is not None
        r, a = o.rate(name), o.teacher[name]
        return attention_loss(r, a, p) if kind == "attention" else rate_loss(r, a)

    return loss


def distill(ir: Graph, data: TrainData, cfg: FinetuneConfig) -> FinetuneResult:
    """LaSNN layer-wise distillation, then output KD (module docstring)."""
    t0 = time.perf_counter()
    opts: DistillOptions = parse_options(DistillOptions, cfg.options, "distill")
    teacher = cfg.teacher if cfg.teacher is not None else ir
    net = DifferentiableSNN(ir, surrogate=cfg.surrogate)
    # which spiking layers the teacher has a value for (by op name), and its output op
    with torch.no_grad():
        _, rec = run_ann_torch(teacher, torch.from_numpy(data.x[:1]), record=True)
    readout_t = teacher.readout_name
    layers = [n for n in net.spiking_layers()
              if n in rec and tuple(rec[n].shape[1:]) == tuple(ir.shape(n))]
    stages: list[Stage] = []
    if opts.layer_loss != "none" and opts.layer_epochs > 0:
        for name in layers:
            if opts.train_upstream:
                params = [p for n in net.order[:net.order.index(name) + 1]
                          for p in net.segment_params(n)]
            else:
                params = net.segment_params(name)
            stages.append(Stage(f"layer {name}", opts.layer_epochs, params,
                                _layer_loss(opts.layer_loss, opts.p, name), needs_teacher=True))
    layer_terms = [_layer_loss(opts.layer_loss, opts.p, n) for n in layers] \
        if opts.layer_loss != "none" and opts.layer_weight > 0 else []

    def output_loss(o: StepOutputs) -> Tensor:
        assert o.teacher is not None
        z = o.mean_output
        loss = kd_loss(z, o.teacher[readout_t].flatten(1), opts.tau)
        if o.y is not None and opts.ce_weight > 0:
            loss = loss + opts.ce_weight * F.cross_entropy(z, o.y)
        for term in layer_terms:
            loss = loss + opts.layer_weight * term(o)
        return loss

    stages.append(Stage("output", cfg.epochs, list(dict(net.named_trainables()).values()),
                        output_loss, needs_teacher=True))
    fp = fingerprint("distill", dataclasses.replace(cfg, options=dataclasses.asdict(opts)), ir,
                     data)
    history, peak, resumed = run_stages(net, stages, data, cfg, teacher, "distill", fp)
    net.cpu()
    return FinetuneResult(write_back(ir, net), "distill", history, time.perf_counter() - t0,
                          peak, resumed)
