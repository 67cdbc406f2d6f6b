"""Conversion that tunes itself for the requested T: ``tune(ann, x, y, T) -> TuneResult``.

Which threshold statistic (max or a percentile), which granularity (one θ per layer or per
channel), whether to take the θ that minimises the rate-coding error at T (``threshold-search``)
and which initial potential α suit a network depends on the network and on T (the issue's table:
the best flag differs per model and per T). Rather than ask the user, ``tune`` measures: it
simulates candidate conversions on a held-out part of the *calibration* data (never the
evaluation set) and keeps what scores best there.

Method:

1. Split the calibration samples (seeded): half (at most 1024) is held out for scoring, the
   rest ("fit") gives the activation statistics of every candidate.
2. Loss of a candidate on held-out sample i: ``log(1 + KL_i)``, KL_i the Kullback–Leibler
   divergence of the SNN's readout from the ANN's, ``KL(softmax(z_i) ‖ softmax(V_i(T)/T))``
   (z = the ANN's logits, V(T)/T = the readout's average potential, in the same units). It
   measures what conversion should preserve — the ANN's decision and its confidence —
   continuously, so candidates that all classify the held-out samples alike (every candidate at
   T ≥ 32 on an easy task) are still told apart, and it needs no labels (Hinton et al. 2015
   match a student to a teacher with the same divergence; here the student is the converted
   SNN). The log damps the few samples whose KL would dominate the mean. Accuracy on the
   held-out labels (or on the ANN's argmax without labels) is reported, not optimised: on a few
   hundred samples it moves in steps of 0.4 points and ties at high T. (Measured on the 4
   models of ``benchmarks/vs_spikingjelly.py`` × T ∈ {4, .., 64}: with this loss, 3. and 6., the
   mean accuracy over the 20 cells on 1285 digits that neither tuning nor thresholds saw went
   from 98.06 % (the earlier score: held-out accuracy − 0.3·nmse, a 2-sample margin, full
   search) to 98.28 %, with tuner seed 1 from 98.04 % to 98.18 %.)
3. Acceptance: during the search a candidate replaces the incumbent when its mean loss on the
   same samples is lower. The final choice is a paired test: the more specific setting B
   replaces the simpler A only when the mean of ``d_i = loss_A,i − loss_B,i`` over the
   confirmation samples (6.) exceeds ``Z_CONFIRM`` = 1 standard error of the d_i, so a change
   that the held-out data cannot tell from noise is not taken.
4. Nothing to gain, no search: when the fixed default's mean loss on the search samples is
   at most ``LOSS_FLOOR`` = 10⁻³ (its readout already within a KL of about 0.001 nats of the
   ANN's, which no candidate can lower by more than the default's own loss), the tuner keeps
   the default and stops there, having simulated the ``few`` search samples once. Measured
   (the 4 digits models of ``benchmarks/vs_spikingjelly.py`` × T ∈ {4, .., 64} and the MNIST
   CNN of ``benchmarks/whole_job.py`` at T = 32, 21 cells, accuracy on test images the tuning
   never saw): in the 7 cells below the floor (losses 8·10⁻⁵ .. 9·10⁻⁴, all at T ≥ 32) the
   full search changed the test accuracy by 0, 0, 0, 0, 0, −0.12 and −0.37 points while
   taking 2–10 s each (6.6 s on the MNIST CNN); the two cells just above it (1.1·10⁻³,
   1.3·10⁻³) gained 0.55 and 0.18 (``benchmarks/tuner_floor.py``).
5. Search, each candidate simulated on the first ``few`` held-out samples (``FEW`` = 128, or
   budget/16 down to ``MIN_FEW`` = 32 where the budget is small), most promising stage first,
   so that a small budget cuts the least useful stages: the neuron model (``neurons``: plain
   IF; Fast-SNN's signed IF, whose negative spikes take back the spikes a neuron sent too
   early — on the digits ResNets up to 2.6 points at T = 4, 0.6 at T = 8, while it costs the
   MaxPool net 1 point at T = 8; group neurons of ``gn_members`` members up to T =
   ``GN_MAX_T`` = 16, see "Neurons" below), then every global threshold setting (each
   statistic × granularity, α = 0.5) and global α ∈ {0, 0.25, 0.75}, then the bias
   calibration of Li et al. (``bias-calibration``) on top; then coordinate-wise, one layer at
   a time in topological order, each alternative statistic, then each α. Racing: a candidate
   is first simulated on half of the search samples and dropped there when it is worse than
   the incumbent by more than ``Z_RACE`` = 2 paired standard errors (the incumbent's recorded
   per-sample losses are reused, not simulated again), so a clearly bad candidate costs half.
6. Confirm on the held-out samples the search did not use (all held-out samples when fewer
   than ``MIN_FRESH`` = 64 are left): the fixed default, the best global setting and the
   coordinate-wise result, with the paired test in the order default < global < per-layer.
   Fresh samples make the test unbiased: the search's winners are selected on the first
   ``FEW`` and would look better there than they are.
7. The winner is written as a plain, replayable pass pipeline (``balance-thresholds{layers=..}``,
   ``initial-potential{layers=..}``, ``threshold-search{layers=..}``, ``bias-calibration``), run
   by the caller on the full calibration set: ``--pipeline <spec>`` reproduces a tuned run
   without tuning.

Budget (deterministic): ``budget`` counts *simulated samples*, each simulated for T steps — the
unit of an evaluation, so a budget of N costs about as much as evaluating N samples at the same
T. A candidate simulated on n samples costs n, a ``bias-calibration`` build the 2·``few``
samples (at most 2·128) its own layer-by-layer simulation runs. Without an explicit budget the
default (``default_budget``) scales with what a candidate costs: at most 30 % of the
evaluation's samples (``EVAL_SHARE``: tuning is then under a quarter of the whole job), at most
``COMPUTE_BUDGET`` = 1.3·10¹² multiply-accumulates (samples × T × the network's MACs per step:
8192 samples of an MNIST-sized CNN at T = 32, about 1,000 of a CIFAR ResNet-20), at most
``DEFAULT_BUDGET`` = 8192 and at least ``MIN_BUDGET`` = 256 samples; each confirmation uses at
most an eighth of the budget. The bias-calibration try and the confirmation are reserved up
front; the search stops before the first candidate that would overrun the rest, and the result
says so (``cut_by_budget``); a budget smaller than one confirmation still confirms the default
once. Nothing depends on the clock: the same model, calibration data, T, seed, evaluation size
and budget give the same pipeline on any machine and under any load (``fit_cap`` bounds the fit
samples' recordings by a fixed 2 GiB, or by an explicit ``--memory-budget``; only a machine
with less than 4 GiB free shrinks it further).

Neurons: group neurons (``gn``, M = ``gn_members`` = 4 members, each firing at θ/M, up to M
spikes a step) carry M times the resolution per step, which is what conversion lacks at low T;
they cost about M times the spikes of IF at the same T (the spikes of IF at M·T) and M
neurons per unit on Loihi. They are a candidate up to ``GN_MAX_T`` = 16: measured on the CIFAR
benchmark (``benchmarks/cifar.py``), above it IF or signed IF are within a point of the ANN
and group neurons would multiply the spikes for a fraction of a point.
Simulation uses the GPU simulator (``snncompile.backends.gpu``) in float
mode on ``base_options.device``. Sources of the passes it chooses from: their docstrings
(Rueckauer et al. 2017; Li et al., ICML 2021; Fast-SNN, Hu et al., TPAMI 2023).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from snncompile.interp import record_activations, run_ann
from snncompile.ir.graph import Graph
from snncompile.ir.nodes import Layer, MaxPool2d, Neuron
from snncompile.options import CompileOptions
from snncompile.passes import PassContext, PassManager, pass_spec
from snncompile.passes.balance_thresholds import DEAD_THRESHOLD, PERCENTILES, layer_thresholds
from snncompile.passes.bias_calibration import BiasCalibration
from snncompile.passes.pipelines import FRONT as FRONT_PASSES
from snncompile.passes.pipelines import conversion_passes as _conversion_passes
from snncompile.passes.pipelines import pool_passes
from snncompile.passes.select_neurons import SelectNeurons
from snncompile.passes.threshold_search import mse_thresholds

#: threshold choices per layer: "statistic/granularity"; "mse" is threshold-search at T
THRESHOLD_CHOICES = ("p99.9/layer", "p99.9/channel", "p99.99/channel", "max/channel",
                     "p99/channel", "mse/channel", "mse/layer", "max/layer")
ALPHA_CHOICES = (0.5, 0.25, 0.75, 0.0)
DEFAULT_BUDGET = 8192  # simulated samples (each T steps): the most any tuning spends
#: the default budget is at most this share of the evaluation's simulated samples, so tuning is
#: under a quarter of tuning + evaluation + conversion (the issue: ≤ 25 % of the job)
EVAL_SHARE = 0.3
#: without an evaluation set: at most this many multiply-accumulates, summed over the
#: simulated samples × T × the network's MACs per step (8192 samples of an MNIST-sized CNN of
#: 5 M MACs at T = 32; about 1,000 samples of a CIFAR ResNet-20 at T = 32)
COMPUTE_BUDGET = 1.3e12
MIN_BUDGET = 256  # the fewest samples a default budget allows: default, a few tries, confirm
FEW = 128  # held-out samples per search candidate (fewer where the budget is small)
MIN_FEW = 32
MIN_FRESH = 64  # held-out samples the search did not see, needed to confirm on them alone
BC_SAMPLES = 128  # samples a bias-calibration build simulates, each calibrated layer twice
GN_MAX_T = 16  # group neurons are a candidate up to this T (module docstring, "Neurons")
Z_SEARCH = 0.0  # a search step must lower the mean loss (on the FEW search samples)
Z_RACE = 2.0  # a candidate this many paired standard errors worse on half the samples stops
Z_CONFIRM = 1.0  # the final, more specific setting by > Z_CONFIRM paired standard errors
#: the default's mean loss log(1 + KL) on the search samples at or below which the search is
#: skipped (module docstring, 4.): the SNN already matches the ANN
LOSS_FLOOR = 1e-3
#: the front-end passes as spec strings
FRONT = tuple(pass_spec(p) for p in FRONT_PASSES)
HOLDOUT = 0.5


def conversion_passes(opts: CompileOptions) -> list[str]:
    """The fixed default conversion passes (``passes.pipelines``) as spec strings."""
    return [pass_spec(p) for p in _conversion_passes(opts)]


def front_passes(opts: CompileOptions) -> list[str]:
    """The front passes and the max-pool rewrite of ``--maxpool`` (``pipelines.pool_passes``)
    as spec strings: what runs before the tuned conversion passes."""
    return [*FRONT, *(pass_spec(p) for p in pool_passes(opts))]


def step_macs(graph: Graph) -> int:
    """Multiply-accumulates of one sample's forward pass (Conv2d and Dense weights × output
    positions, one per element for the other ops): what one simulated step costs."""
    from snncompile.ir.nodes import Conv2d, Dense

    total = 0
    for name, op in graph.topo():
        out = int(np.prod(graph.shape(name)))
        if isinstance(op, Conv2d):
            total += out * int(np.prod(op.weight.shape[1:]))
        elif isinstance(op, Dense):
            total += int(op.weight.size)
        else:
            total += out
    return total


def default_budget(graph: Graph, timesteps: int, eval_samples: int | None) -> int:
    """Simulated samples the tuning may spend when the user gave no ``tune_budget``: at most
    ``EVAL_SHARE`` of the evaluation's samples (when known), at most ``COMPUTE_BUDGET``
    multiply-accumulates (samples × T × ``step_macs``), at most ``DEFAULT_BUDGET``, at least
    ``MIN_BUDGET``. The cost of tuning therefore grows with what a candidate costs and stays
    a fixed share of the evaluation; it depends on the model, T and the data sizes only, never
    on the clock."""
    cap = COMPUTE_BUDGET / max(1, timesteps * step_macs(graph))
    if eval_samples:
        cap = min(cap, EVAL_SHARE * eval_samples)
    return int(max(MIN_BUDGET, min(DEFAULT_BUDGET, cap)))


def kl_to_ann(v: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """Per sample KL(softmax(logits) ‖ softmax(v)) in nats (float64, stable log-softmax)."""
    z = logits.astype(np.float64)
    q = v.astype(np.float64)
    log_p = z - z.max(1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
    log_q = q - q.max(1, keepdims=True)
    log_q -= np.log(np.exp(log_q).sum(1, keepdims=True))
    return np.sum(np.exp(log_p) * (log_p - log_q), axis=1)


def better(incumbent: np.ndarray, candidate: np.ndarray, z: float) -> bool:
    """Paired test: does ``candidate`` (per-sample losses) beat ``incumbent`` by more than
    ``z`` standard errors of the per-sample differences (and by more than nothing)?"""
    d = incumbent - candidate
    mean = float(d.mean())
    se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0
    return mean > 0.0 and mean > z * se


#: calibration samples the CLI reads into memory for the tuner: 1024 held out + 1024 to fit at
#: most (a 10,000-image folder calibration would otherwise be held whole: 6 GB at 224×224)
MAX_SAMPLES = 2048


@dataclass
class TuneResult:
    """What ``tune`` chose and measured.

    ``passes``: the conversion pass specs (replace ``conversion_passes(options)``);
    ``pipeline``: the whole pipeline (front + conversion) as one replayable string;
    ``chosen``: layer -> {"threshold": "stat/granularity", "alpha": α};
    ``scores``: every simulated candidate (stage, what changed, samples, loss, accuracy);
    ``default_score`` / ``tuned_score``: held-out accuracy of the fixed default and of the
    winner on all held-out samples (labels, else the ANN's argmax); ``default_loss`` /
    ``tuned_loss``: their mean loss log(1 + KL) to the ANN (what the choice minimises);
    ``budget`` / ``spent``: simulated samples (each T steps) allowed / used; ``stopped``: why
    the search ended before its first candidate (module docstring, 4.: then the scores and
    ``held_out`` are those of the search samples).
    """

    passes: list[str]
    pipeline: str
    chosen: dict[str, dict[str, Any]]
    scores: list[dict[str, Any]] = field(default_factory=list)
    default_score: float | None = None
    tuned_score: float | None = None
    default_loss: float | None = None
    tuned_loss: float | None = None
    winner: str = "default"
    seconds: float = 0.0
    budget: int = DEFAULT_BUDGET
    spent: int = 0
    held_out: int = 0
    fit: int = 0
    cut_by_budget: bool = False
    stopped: str = ""  # why the search stopped before its first candidate (4.), if it did
    timesteps: int = 0
    front_specs: list[str] = field(default_factory=lambda: list(FRONT))

    @property
    def front(self) -> list[str]:
        """The front-end passes (and the max-pool rewrite) that precede ``passes`` in
        ``pipeline``."""
        return list(self.front_specs)

    def summary(self) -> str:
        if self.tuned_score is None:
            return f"tuning: skipped ({self.winner}); {self.seconds:.1f} s"
        if self.stopped:
            return (f"tuning for T={self.timesteps}: the fixed default, {self.stopped}; held-out "
                    f"top-1 {self.tuned_score:.4f} on {self.held_out} calibration samples, "
                    f"{self.spent} of {self.budget} simulated samples, {self.seconds:.1f} s")
        cut = ", cut by the budget" if self.cut_by_budget else ""
        # the budget may have run out before the default was confirmed on every held-out sample
        default = ("not confirmed" if self.default_score is None
                   else f"{self.default_score:.4f}")
        loss = "" if self.tuned_loss is None else f", loss {self.tuned_loss:.4g}" + (
            "" if self.default_loss is None else f" (default {self.default_loss:.4g})")
        return (f"tuning for T={self.timesteps}: {self.winner} setting, held-out top-1 "
                f"{self.tuned_score:.4f} (fixed default {default}){loss} on "
                f"{self.held_out} calibration samples, {len(self.scores)} candidates, "
                f"{self.spent} of {self.budget} simulated samples, {self.seconds:.1f} s{cut}")

    def report(self) -> dict[str, Any]:
        return {"timesteps": self.timesteps, "winner": self.winner, "pipeline": self.pipeline,
                "passes": self.passes, "chosen": self.chosen, "score": self.tuned_score,
                "default_score": self.default_score, "loss": self.tuned_loss,
                "default_loss": self.default_loss, "seconds": self.seconds,
                "budget_samples": self.budget, "spent_samples": self.spent,
                "held_out": self.held_out, "fit": self.fit,
                "cut_by_budget": self.cut_by_budget, "stopped": self.stopped,
                "candidates": len(self.scores),
                "scores": self.scores,
                "loss_is": "mean over held-out samples of log(1 + KL(softmax(ANN logits) || "
                           "softmax(V(T)/T)))"}


Config = dict[str, tuple[str, float]]  # layer -> (threshold choice, alpha); BC: bias-calibration
BC = "*bias-calibration*"
NEURON = "*neuron*"  # -> (model, 0.0): a neuron model other than plain IF
SIGNED = "signed-if"


def layers_of(cfg: Config) -> Config:
    return {k: v for k, v in cfg.items() if k not in (BC, NEURON)}


def neuron_choices(opts: CompileOptions, target: str, explicit: bool = False) -> tuple[str, ...]:
    """The neuron models ``tune`` may choose between for ``target``: plain IF and signed IF
    when the user chose no model (``explicit``: ``--neuron`` given, even ``--neuron if``), asked
    for no exchange file (NIR and netx carry neither choice) and the target implements both;
    else only ``opts.neuron``."""
    if explicit or opts.neuron != "if" or opts.export is not None:
        return (opts.neuron,)
    import importlib

    from snncompile import neurons

    try:  # the target's implementations register themselves on import
        importlib.import_module(f"snncompile.backends.{target}.neurons")
    except ImportError:
        return (opts.neuron,)
    return tuple(n for n in ("if", SIGNED, "gn") if n in neurons.implemented(target))


FIT_BYTES = 2 << 30  # the fit samples' recorded activations without --memory-budget


def fit_cap(graph: Graph, n: int, opts: CompileOptions) -> int:
    """How many of the ``n`` fit samples the tuner keeps: their activations, every op's output
    (``record_activations``, float32), held in memory at once, take at most half of what an
    explicit ``opts.memory_budget`` leaves free, else at most ``FIT_BYTES`` (2 GiB) — a fixed
    amount, so that the tuner's choice does not depend on the machine's free memory — or half
    the free memory where that is less; at least 8 samples. The fit samples are a seeded random
    part of the calibration set, so the first ``fit_cap`` of them are a random subsample: an
    image-folder calibration of 10,000 ImageNet images no longer records ~60 MB per image."""
    from snncompile.backends.memory import room_bytes

    per = 4 * sum(int(np.prod(graph.shape(m))) for m, _ in graph.topo())
    limit = room_bytes(opts.memory_budget, torch.device("cpu")) // 2
    if opts.memory_budget is None:
        limit = min(limit, FIT_BYTES)
    return int(min(n, max(8, limit // max(per, 1))))


class _Tuner:
    def __init__(self, ann: Graph, x: np.ndarray, y: np.ndarray | None, steps: int,
                 opts: CompileOptions, seed: int) -> None:
        self.steps, self.opts, self.seed = steps, opts, seed
        self.graph = PassManager.from_specs(front_passes(opts)).run(ann, PassContext())
        rng = np.random.default_rng(seed)
        perm = rng.permutation(len(x))
        n_val = int(min(max(int(len(x) * HOLDOUT), 1), 1024))
        self.val_idx, self.fit_idx = perm[:n_val], perm[n_val:]
        self.fit_idx = self.fit_idx[:fit_cap(self.graph, len(self.fit_idx), opts)]
        self.x_fit, self.x_val = x[self.fit_idx], x[self.val_idx]
        logits = run_ann(self.graph, self.x_val).reshape(n_val, -1)
        self.logits = logits
        self.target = (np.asarray(y)[self.val_idx] if y is not None else logits.argmax(1))
        self.acts = record_activations(self.graph, self.x_fit)
        readout = self.graph.readout_name
        self.spiking = [n for n, op in self.graph.topo()
                        if isinstance(op, Layer) and op.act is not None and n != readout]
        # every layer but a quantized one (QCFS: θ = λ makes the conversion exact)
        self.tunable = [n for n in self.spiking
                        if self.graph.op(n).act.levels is None]  # type: ignore[union-attr]
        self.rest = conversion_passes(opts)[2:]
        self._theta: dict[tuple[str, str, float], np.ndarray] = {}
        from snncompile.backends.common import resolve_device

        self.device = resolve_device(opts.device)

    # -------------------------------------------------------------- candidates
    def theta(self, name: str, choice: str, alpha: float) -> np.ndarray:
        stat, gran = choice.split("/")
        key = (name, choice, alpha if stat == "mse" else -1.0)
        if key not in self._theta:
            a = self.acts[name]
            if stat == "mse":
                th = mse_thresholds(a, alpha, self.steps, gran == "channel", seed=self.seed)
            else:
                th = layer_thresholds(a, PERCENTILES[stat], gran == "channel")
            hi = self.graph.op(name).act.hi  # type: ignore[union-attr]
            if hi is None:
                th = np.where(th > 0, th, DEAD_THRESHOLD)
            else:  # a Clip layer: θ = min(bound, statistic), as balance-thresholds does
                th = np.where(~(th > 0) | (th >= hi * (1 - 1e-6)), hi, np.minimum(th, hi))
            self._theta[key] = th.astype(np.float32)
        return self._theta[key]

    def build(self, cfg: Config, bc_samples: int = BC_SAMPLES) -> Graph:
        g = self.graph.copy()
        for name in self.spiking:
            op = g.op(name)
            assert isinstance(op, Layer) and op.act is not None
            c = g.shape(name)[0]
            if name in cfg:
                choice, alpha = cfg[name]
                th = self.theta(name, choice, alpha)
            else:  # a quantized layer: θ = λ, α = its shift, as the passes do
                th = np.full(c, op.act.hi, np.float32)
                alpha = float(op.act.shift) if op.act.levels is not None else cfg_alpha(cfg)
            g.replace(name, neuron=Neuron(model="if", threshold=th, alpha=float(alpha)))
        if BC in cfg:  # it simulates IF neurons: before the neuron model changes
            g = BiasCalibration(timesteps=self.steps, samples=bc_samples).run(
                g, PassContext(calibration=self.x_fit, seed=self.seed))
        if NEURON in cfg:
            g = neuron_pass(cfg).run(g, PassContext())
        if self.rest:
            ctx = PassContext(calibration=self.x_fit, seed=self.seed)
            g = PassManager.from_specs(self.rest, verify=False).run(g, ctx)
        return g

    @torch.no_grad()
    def score(self, cfg: Config, n: int, start: int = 0,
              bc_samples: int = BC_SAMPLES) -> tuple[np.ndarray, float]:
        """Per-sample losses log(1 + KL) and the accuracy on the ``n`` held-out samples from
        ``start``."""
        from snncompile.backends.gpu.compile import SpikingNetwork

        net = SpikingNetwork(self.build(cfg, bc_samples)).to(self.device)
        end = start + n
        # in the evaluation's pieces (a few samples at a time on the CPU: in cache), not all n
        # at once (2x slower per sample on the MNIST CNN of benchmarks/whole_job.py)
        xb = torch.from_numpy(np.ascontiguousarray(self.x_val[start:end])).to(self.device)
        pot = net.final_potential(xb, self.steps, self.opts.memory_bytes)
        v = pot.flatten(1).cpu().numpy() / self.steps
        acc = float(np.mean(v.argmax(1) == self.target[start:end]))
        return np.log1p(kl_to_ann(v, self.logits[start:end])), acc


def cfg_alpha(cfg: Config) -> float:
    alphas = [a for _, a in layers_of(cfg).values()]
    return Counter(alphas).most_common(1)[0][0] if alphas else 0.5


def neuron_pass(cfg: Config) -> SelectNeurons:
    """The select-neurons pass of a configuration's neuron model (gn: with its members)."""
    model, members = cfg[NEURON]
    return SelectNeurons(model=model, members=int(members)) if model == "gn" else \
        SelectNeurons(model=model)


def to_specs(cfg: Config, steps: int, opts: CompileOptions, rest: list[str],
             bc_samples: int = BC_SAMPLES) -> list[str]:
    """A configuration -> replayable conversion pass specs."""
    default = conversion_passes(opts)
    bc = BC in cfg
    neuron = neuron_pass(cfg) if NEURON in cfg else None
    cfg = layers_of(cfg)
    if not cfg:  # no tunable layer (quantized activations): only the neuron model, BC
        extra = [pass_spec(BiasCalibration(timesteps=steps, samples=bc_samples))] if bc else []
        return [*default[:2], *extra, *([pass_spec(neuron)] if neuron else []), *rest]
    pct = [c for c, _ in cfg.values() if not c.startswith("mse")]
    base = Counter(pct).most_common(1)[0][0] if pct else f"{opts.norm}/" + (
        "channel" if opts.channelwise else "layer")
    norm, gran = base.split("/")
    over = {n: c for n, (c, _) in cfg.items() if not c.startswith("mse") and c != base}
    bt = f"balance-thresholds{{norm={norm},channelwise={str(gran == 'channel').lower()}"
    if over:
        bt += ",layers=" + ";".join(f"{n}:{c.replace('/', ':')}" for n, c in over.items())
    specs = [bt + "}"]
    alpha = cfg_alpha(cfg)
    a_over = {n: a for n, (_, a) in cfg.items() if a != alpha}
    ip = f"initial-potential{{alpha={alpha}"
    if a_over:
        ip += ",layers=" + ";".join(f"{n}:{a}" for n, a in a_over.items())
    specs.append(ip + "}")
    mse = {n: c.split("/")[1] for n, (c, _) in cfg.items() if c.startswith("mse")}
    if mse:
        specs.append(f"threshold-search{{timesteps={steps},layers="
                     + ";".join(f"{n}:{g}" for n, g in mse.items()) + "}")
    if bc:
        specs.append(pass_spec(BiasCalibration(timesteps=steps, samples=bc_samples)))
    if neuron is not None:
        specs.append(pass_spec(neuron))
    return [*specs, *rest]


class _Search:
    """The budgeted search of ``tune`` (module docstring, 3.-6.), one method per stage.

    ``run`` simulates one candidate and books its cost; ``consider`` races a candidate against
    the incumbent: it is simulated on the first half of the search samples and dropped there
    when it is clearly worse (its mean loss above the incumbent's by more than
    ``Z_RACE`` paired standard errors, the incumbent's per-sample losses reused from its own
    run), else on the second half too and compared on all of them."""

    def __init__(self, tu: _Tuner, budget: int, opts: CompileOptions) -> None:
        self.tu, self.budget, self.opts = tu, budget, opts
        n_val = len(tu.val_idx)
        self.few = min(n_val, max(MIN_FEW, min(FEW, budget // 16)))
        # the confirmation uses held-out samples the search did not see (unbiased), when
        # there are enough of them
        self.c0 = self.few if n_val - self.few >= MIN_FRESH else 0
        self.n_conf = min(n_val - self.c0, max(MIN_FEW, budget // 8))
        self.bc_samples = min(BC_SAMPLES, self.few)
        self.bc_cost = 2 * self.bc_samples
        self.scores: list[dict[str, Any]] = []
        self.spent = 0
        self.cut = False
        # reserved up front: the bias-calibration try and the confirmation of the default and
        # the global setting; the per-layer stage and a chosen bias calibration reserve their
        # own confirmation cost when they start (``afford``)
        self.reserve = {"bc": self.few + self.bc_cost, "confirm": 2 * self.n_conf}
        self.best_cfg: Config = {}
        self.best: np.ndarray | None = None

    def afford(self, extra: int) -> bool:
        """Reserve ``extra`` samples for the confirmation if the budget still allows it."""
        if self.spent + extra + sum(self.reserve.values()) > self.budget:
            return False
        self.reserve["confirm"] += extra
        return True

    def run(self, cfg: Config, n: int, stage: str, what: str, reserved: bool = False,
            start: int = 0, more: bool = False) -> np.ndarray | None:
        """Simulate ``cfg`` on ``n`` held-out samples from ``start`` and book its cost (None:
        the budget does not allow it). ``more``: the samples continue the last scored
        candidate's, whose entry in ``scores`` then covers both."""
        cost = n + (self.bc_cost if BC in cfg else 0)
        if reserved:
            self.reserve["bc"] = 0
        ahead = self.reserve["bc"] + (self.reserve["confirm"] if stage != "confirm" else 0)
        if self.spent + cost + ahead > self.budget:
            if stage != "confirm" or self.scores:  # never return without one simulation
                self.cut = True
                return None
        self.spent += cost
        loss, acc = self.tu.score(cfg, n, start, self.bc_samples)
        if more:
            last = self.scores[-1]
            m = last["samples"]
            last.update(samples=m + n, loss=(last["loss"] * m + float(loss.sum())) / (m + n),
                        accuracy=(last["accuracy"] * m + acc * n) / (m + n))
            last.pop("raced_out", None)
        else:
            self.scores.append({"stage": stage, "candidate": what, "samples": n,
                                "loss": float(loss.mean()), "accuracy": acc})
        return loss

    def consider(self, cfg: Config, stage: str, what: str) -> None:
        if self.cut or cfg == self.best_cfg:
            return
        half = self.few // 2
        if self.best is None or half < MIN_FEW // 2:
            loss = self.run(cfg, self.few, stage, what)
        else:
            first = self.run(cfg, half, stage, what)
            if first is None:
                return
            if worse(self.best[:half], first, Z_RACE):
                self.scores[-1]["raced_out"] = True
                return
            rest = self.run(cfg, self.few - half, stage, what, start=half, more=True)
            loss = None if rest is None else np.concatenate([first, rest])
        if loss is not None and (self.best is None or better(self.best, loss, Z_SEARCH)):
            self.best_cfg, self.best = cfg, loss

    def neurons(self, models: tuple[str, ...], steps: int, gate: bool) -> None:
        """Another neuron model for the whole network: Fast-SNN's signed IF, and group neurons
        up to ``GN_MAX_T``; not where a spiking max-pool gate stays (it ranks units by spike
        counts, which a negative spike would lower)."""
        if self.opts.neuron != "if" or gate:
            return
        base = dict(self.best_cfg)
        for model in models:
            if model == "gn" and steps <= GN_MAX_T:
                members = float(self.opts.gn_members)
                self.consider({**base, NEURON: (model, members)}, "global",
                              f"neuron {model}, {int(members)} members")
            elif model not in ("if", "gn"):
                self.consider({**base, NEURON: (model, 0.0)}, "global", f"neuron {model}")

    def thresholds(self, choices: list[str]) -> None:
        """Every global threshold statistic × granularity, then the global α (nothing where
        every layer's threshold is fixed by its quantized activation)."""
        if not self.tu.tunable:
            return
        extra = {k: v for k, v in self.best_cfg.items() if k == NEURON}
        for choice in choices:
            self.consider({**{n: (choice, 0.5) for n in self.tu.tunable}, **extra}, "global",
                          f"{choice}, alpha=0.5")
        choice = next(iter(layers_of(self.best_cfg).values()))[0]
        extra = {k: v for k, v in self.best_cfg.items() if k == NEURON}
        for alpha in ALPHA_CHOICES[1:]:
            self.consider({**{n: (choice, alpha) for n in self.tu.tunable}, **extra}, "global",
                          f"{choice}, alpha={alpha}")

    def bias_calibration(self, global_loss: np.ndarray | None) -> bool:
        """Li et al.'s bias calibration on top of the global setting (its cost was reserved:
        it is tried before the per-layer search uses up the budget)."""
        loss = self.run({**self.best_cfg, BC: ("on", 0.0)}, self.few, "global",
                        "bias-calibration", reserved=True)
        return loss is not None and global_loss is not None and better(global_loss, loss,
                                                                        Z_SEARCH)

    def layers(self, choices: list[str]) -> None:
        """Coordinate-wise, one layer at a time in topological order: each alternative
        statistic, then each α (without the bias calibration: cheaper); only where the budget
        leaves room for the confirmation of its result as well."""
        if not self.tu.tunable or not self.afford(self.n_conf):
            return
        for name in self.tu.tunable:
            for choice in choices:
                if choice != self.best_cfg[name][0]:
                    self.consider({**self.best_cfg, name: (choice, self.best_cfg[name][1])},
                                  "layer", f"{name}: {choice}")
        for name in self.tu.tunable:
            for alpha in ALPHA_CHOICES:
                if alpha != self.best_cfg[name][1]:
                    self.consider({**self.best_cfg, name: (self.best_cfg[name][0], alpha)},
                                  "layer", f"{name}: alpha={alpha}")

    def confirm(self, finals: dict[str, Config]) -> tuple[str, dict[str, np.ndarray],
                                                          dict[str, float]]:
        """Each final candidate on the confirmation samples; a more specific setting replaces
        a simpler one only when the paired test says so (``Z_CONFIRM``)."""
        confirmed: dict[str, np.ndarray] = {}
        accuracy: dict[str, float] = {}
        seen: list[Config] = []
        for label, cfg in finals.items():
            if cfg in seen:
                continue
            seen.append(cfg)
            loss = self.run(cfg, self.n_conf, "confirm", label, start=self.c0)
            if loss is not None:
                confirmed[label], accuracy[label] = loss, self.scores[-1]["accuracy"]
        winner = "default" if "default" in confirmed else next(iter(confirmed), "default")
        for label in ("global", "per-layer"):
            if label in confirmed and winner in confirmed and better(
                    confirmed[winner], confirmed[label], Z_CONFIRM):
                winner = label
        return winner, confirmed, accuracy


def worse(incumbent: np.ndarray, candidate: np.ndarray, z: float) -> bool:
    """Paired test: is ``candidate`` worse than ``incumbent`` by more than ``z`` standard
    errors of the per-sample differences?"""
    return better(candidate, incumbent, z)


def tune(ann_graph: Graph, calibration_x: np.ndarray, calibration_y: np.ndarray | None,
         timesteps: int, *, budget: int | None = None, seed: int = 0,
         base_options: CompileOptions | None = None, per_channel: bool = True,
         neurons: tuple[str, ...] = ("if",), eval_samples: int | None = None) -> TuneResult:
    """Choose the conversion passes for ``timesteps`` (see the module docstring).

    ``budget``: simulated samples (each ``timesteps`` steps), default ``default_budget`` (a
    share of ``eval_samples``, the size of the evaluation that follows, and of a fixed
    compute allowance). ``per_channel=False`` keeps one threshold per layer (``--target
    loihi``: Loihi's LIF process and the netx export take one threshold per population).
    ``neurons``: the neuron models to choose between (``neuron_choices``); the default keeps
    ``base_options.neuron``."""
    t0 = time.perf_counter()
    opts = base_options or CompileOptions(timesteps=timesteps)
    default_specs = conversion_passes(opts)
    front = front_passes(opts)
    x = np.asarray(calibration_x, np.float32)

    def skipped(why: str, budget: int) -> TuneResult:
        return TuneResult(passes=default_specs, pipeline=",".join([*front, *default_specs]),
                          chosen={}, winner=f"default ({why})", budget=budget,
                          seconds=time.perf_counter() - t0, timesteps=timesteps,
                          front_specs=front)

    if len(x) < 24:
        return skipped("fewer than 24 calibration samples", budget or DEFAULT_BUDGET)
    tu = _Tuner(ann_graph, x, calibration_y, timesteps, opts, seed)
    if budget is None:
        budget = default_budget(tu.graph, timesteps, eval_samples)
    budget = int(budget)
    gate = any(isinstance(op, MaxPool2d) for _, op in tu.graph.topo())
    if not tu.tunable and (gate or opts.neuron != "if" or set(neurons) <= {"if"}):
        return skipped("no layer to tune: thresholds fixed by Clip or quantized activations",
                       budget)
    se = _Search(tu, budget, opts)
    default_cfg: Config = {n: (f"{opts.norm}/" + ("channel" if opts.channelwise else "layer"),
                               float(opts.alpha)) for n in tu.tunable}
    se.best_cfg, se.best = default_cfg, se.run(default_cfg, se.few, "global", "default")
    if se.best is not None and float(se.best.mean()) <= LOSS_FLOOR:
        first = se.scores[0]
        return TuneResult(
            passes=default_specs, pipeline=",".join([*front, *default_specs]), chosen={},
            scores=se.scores, default_score=first["accuracy"], tuned_score=first["accuracy"],
            default_loss=first["loss"], tuned_loss=first["loss"],
            winner="default", stopped=f"its loss {first['loss']:.2g} <= {LOSS_FLOOR:g} to the "
                                      "ANN: nothing to search",
            seconds=time.perf_counter() - t0, budget=budget, spent=se.spent,
            held_out=se.few, fit=len(tu.fit_idx), timesteps=timesteps, front_specs=front)
    se.neurons(neurons, timesteps, gate)
    choices = [c for c in THRESHOLD_CHOICES if per_channel or c.endswith("/layer")]
    se.thresholds(choices)
    global_cfg, global_loss = dict(se.best_cfg), se.best
    use_bc = se.bias_calibration(global_loss) and se.afford(2 * se.bc_cost)
    se.layers(choices)
    best_cfg = se.best_cfg
    if use_bc:
        global_cfg, best_cfg = {**global_cfg, BC: ("on", 0.0)}, {**best_cfg, BC: ("on", 0.0)}
    finals = {"default": default_cfg, "global": global_cfg, "per-layer": best_cfg}
    winner, confirmed, accuracy = se.confirm(finals)
    cfg = finals[winner]
    passes = default_specs if winner == "default" else to_specs(
        cfg, timesteps, opts, tu.rest, se.bc_samples)
    return TuneResult(
        passes=passes, pipeline=",".join([*front, *passes]),
        chosen={**{n: {"threshold": c, "alpha": a} for n, (c, a) in layers_of(cfg).items()},
                **({"bias-calibration": {"timesteps": timesteps}} if BC in cfg else {}),
                **({"neuron": cfg[NEURON][0]} if NEURON in cfg else {})},
        scores=se.scores, default_score=accuracy.get("default"),
        tuned_score=accuracy.get(winner),
        default_loss=float(confirmed["default"].mean()) if "default" in confirmed else None,
        tuned_loss=float(confirmed[winner].mean()) if winner in confirmed else None,
        winner=winner, seconds=time.perf_counter() - t0, budget=budget, spent=se.spent,
        held_out=len(tu.val_idx), fit=len(tu.fit_idx), cut_by_budget=se.cut,
        timesteps=timesteps, front_specs=front)
