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
   models of ``benchmarks/vs_spikingjelly.py`` × T ∈ {4, .., 64}: with this loss, 3. and 5., the
   mean accuracy over the 20 cells on 1285 digits that neither tuning nor thresholds saw went
   from 98.06 % (the earlier score: held-out accuracy − 0.3·nmse, a 2-sample margin, full
   search) to 98.28 %, with tuner seed 1 from 98.04 % to 98.18 %.)
3. Acceptance: during the search a candidate replaces the incumbent when its mean loss on the
   same samples is lower. The final choice is a paired test: the more specific setting B
   replaces the simpler A only when the mean of ``d_i = loss_A,i − loss_B,i`` over the
   confirmation samples (5.) exceeds ``Z_CONFIRM`` = 1 standard error of the d_i, so a change
   that the held-out data cannot tell from noise is not taken.
4. Search, each candidate simulated on the first ``FEW`` = 128 held-out samples: every global
   setting (each statistic × granularity, α = 0.5), then global α ∈ {0, 0.25, 0.75}, then the
   neuron model (``neurons``: plain IF, or Fast-SNN's signed IF, whose negative spikes take
   back the spikes a neuron sent too early — measured on the benchmark ResNets it adds up to
   2.6 points at T = 4 and 0.6 at T = 8, while it costs the MaxPool net 1 point at T = 8: a
   choice per network and T), then the bias calibration of Li et al. (``bias-calibration``)
   on top; then coordinate-wise, one layer at a time in topological order, each alternative
   statistic, then each α.
5. Confirm on the held-out samples the search did not use (all held-out samples when fewer
   than ``MIN_FRESH`` = 64 are left): the fixed default, the best global setting and the
   coordinate-wise result, with the paired test in the order default < global < per-layer.
   Fresh samples make the test unbiased: the search's winners are selected on the first
   ``FEW`` and would look better there than they are.
6. The winner is written as a plain, replayable pass pipeline (``balance-thresholds{layers=..}``,
   ``initial-potential{layers=..}``, ``threshold-search{layers=..}``, ``bias-calibration``), run
   by the caller on the full calibration set: ``--pipeline <spec>`` reproduces a tuned run
   without tuning.

Budget (deterministic): ``budget`` counts *simulated samples*, each simulated for T steps — the
unit of an evaluation, so a budget of N costs about as much as evaluating N samples at the same
T. A candidate simulated on n samples costs n, a ``bias-calibration`` build costs the 2·128
samples its own layer-by-layer simulation runs. The bias-calibration try and the confirmation
are reserved up front; the search stops before the first candidate that would overrun the
rest, and the result says so (``cut_by_budget``); a budget smaller than one confirmation still
confirms the default once. Nothing depends on the clock: the same model, calibration data, T,
seed and budget give the same pipeline on any machine and under any load (``fit_cap`` bounds
the fit samples' recordings by a fixed 2 GiB, or by an explicit ``--memory-budget``; only a
machine with less than 4 GiB free shrinks it further; MNIST-sized models never come near it).
The default,
``DEFAULT_BUDGET`` = 8192 samples, costs less than evaluating an MNIST-sized test set (10,000
samples) at the same T. Simulation uses the GPU simulator (``snncompile.backends.gpu``) in float
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
DEFAULT_BUDGET = 8192  # simulated samples (each T steps): less than a 10,000-sample evaluation
FEW = 128  # held-out samples per search candidate
MIN_FRESH = 64  # held-out samples the search did not see, needed to confirm on them alone
BC_COST = 2 * 128  # samples a bias-calibration build simulates (each calibrated layer twice)
Z_SEARCH = 0.0  # a search step must lower the mean loss (on the FEW search samples)
Z_CONFIRM = 1.0  # the final, more specific setting by > Z_CONFIRM paired standard errors
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
    ``budget`` / ``spent``: simulated samples (each T steps) allowed / used.
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
                "cut_by_budget": self.cut_by_budget, "candidates": len(self.scores),
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
    return tuple(n for n in ("if", SIGNED) if n in neurons.implemented(target))


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

    def build(self, cfg: Config) -> Graph:
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
            g = BiasCalibration(timesteps=self.steps).run(
                g, PassContext(calibration=self.x_fit, seed=self.seed))
        if NEURON in cfg:
            g = SelectNeurons(model=cfg[NEURON][0]).run(g, PassContext())
        if self.rest:
            ctx = PassContext(calibration=self.x_fit, seed=self.seed)
            g = PassManager.from_specs(self.rest, verify=False).run(g, ctx)
        return g

    @torch.no_grad()
    def score(self, cfg: Config, n: int, start: int = 0) -> tuple[np.ndarray, float]:
        """Per-sample losses log(1 + KL) and the accuracy on the first ``n`` held-out
        samples."""
        from snncompile.backends.gpu.compile import SpikingNetwork

        net = SpikingNetwork(self.build(cfg)).to(self.device)
        outs = []
        end = start + n
        for i in range(start, end, 128):
            xb = torch.from_numpy(np.ascontiguousarray(self.x_val[i:min(end, i + 128)]))
            outs.append(net(xb.to(self.device), self.steps)[-1].flatten(1).cpu().numpy())
        v = np.concatenate(outs) / self.steps
        acc = float(np.mean(v.argmax(1) == self.target[start:end]))
        return np.log1p(kl_to_ann(v, self.logits[start:end])), acc


def cfg_alpha(cfg: Config) -> float:
    alphas = [a for _, a in layers_of(cfg).values()]
    return Counter(alphas).most_common(1)[0][0] if alphas else 0.5


def to_specs(cfg: Config, steps: int, opts: CompileOptions, rest: list[str]) -> list[str]:
    """A configuration -> replayable conversion pass specs."""
    default = conversion_passes(opts)
    bc = BC in cfg
    model = cfg[NEURON][0] if NEURON in cfg else None
    cfg = layers_of(cfg)
    if not cfg:
        return default
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
        specs.append(f"bias-calibration{{timesteps={steps}}}")
    if model is not None:
        specs.append(pass_spec(SelectNeurons(model=model)))
    return [*specs, *rest]


def tune(ann_graph: Graph, calibration_x: np.ndarray, calibration_y: np.ndarray | None,
         timesteps: int, *, budget: int | None = None, seed: int = 0,
         base_options: CompileOptions | None = None, per_channel: bool = True,
         neurons: tuple[str, ...] = ("if",)) -> TuneResult:
    """Choose the conversion passes for ``timesteps`` (see the module docstring).

    ``budget``: simulated samples (each ``timesteps`` steps), default ``DEFAULT_BUDGET``.
    ``per_channel=False`` keeps one threshold per layer (``--target loihi``: Loihi's LIF
    process and the netx export take one threshold per population). ``neurons``: the neuron
    models to choose between (``neuron_choices``); the default keeps ``base_options.neuron``."""
    t0 = time.perf_counter()
    opts = base_options or CompileOptions(timesteps=timesteps)
    budget = DEFAULT_BUDGET if budget is None else int(budget)
    default_specs = conversion_passes(opts)
    front = front_passes(opts)
    x = np.asarray(calibration_x, np.float32)

    def skipped(why: str) -> TuneResult:
        return TuneResult(passes=default_specs, pipeline=",".join([*front, *default_specs]),
                          chosen={}, winner=f"default ({why})", budget=budget,
                          seconds=time.perf_counter() - t0, timesteps=timesteps,
                          front_specs=front)

    if len(x) < 24:
        return skipped("fewer than 24 calibration samples")
    tu = _Tuner(ann_graph, x, calibration_y, timesteps, opts, seed)
    if not tu.tunable:
        return skipped("no layer to tune: thresholds fixed by Clip or quantized activations")
    n_val = len(tu.val_idx)
    few = min(FEW, n_val)
    # the confirmation uses the held-out samples the search did not see (unbiased), when
    # there are enough of them
    c0 = few if n_val - few >= MIN_FRESH else 0
    n_conf = n_val - c0
    scores: list[dict[str, Any]] = []
    spent = 0
    cut = False
    # reserved up front: the bias-calibration try and the confirmation (default, global,
    # per-layer on the confirmation samples, the last two possibly with a bias calibration)
    reserve = {"bc": few + BC_COST, "confirm": 3 * n_conf + 2 * BC_COST}

    def run(cfg: Config, n: int, stage: str, what: str, reserved: bool = False,
            start: int = 0) -> np.ndarray | None:
        nonlocal cut, spent
        cost = n + (BC_COST if BC in cfg else 0)
        if reserved:
            reserve["bc"] = 0
        ahead = reserve["bc"] + (reserve["confirm"] if stage != "confirm" else 0)
        if spent + cost + ahead > budget:
            if stage != "confirm" or scores:  # never return without one simulation
                cut = True
                return None
        spent += cost
        loss, acc = tu.score(cfg, n, start)
        scores.append({"stage": stage, "candidate": what, "samples": n,
                       "loss": float(loss.mean()), "accuracy": acc})
        return loss

    default_choice = f"{opts.norm}/" + ("channel" if opts.channelwise else "layer")
    default_alpha = float(opts.alpha)
    default_cfg: Config = {n: (default_choice, default_alpha) for n in tu.tunable}
    best_cfg, best = default_cfg, run(default_cfg, few, "global", "default")

    def consider(cfg: Config, stage: str, what: str) -> None:
        nonlocal best_cfg, best
        if cut or cfg == best_cfg:
            return
        loss = run(cfg, few, stage, what)
        if loss is not None and (best is None or better(best, loss, Z_SEARCH)):
            best_cfg, best = cfg, loss

    choices = [c for c in THRESHOLD_CHOICES if per_channel or c.endswith("/layer")]
    for choice in choices:
        consider({n: (choice, 0.5) for n in tu.tunable}, "global", f"{choice}, alpha=0.5")
    choice = next(iter(best_cfg.values()))[0]
    for alpha in ALPHA_CHOICES[1:]:
        consider({n: (choice, alpha) for n in tu.tunable}, "global", f"{choice}, alpha={alpha}")
    # another neuron model for the whole network; not where a spiking max-pool gate stays
    # (it ranks units by spike counts, which a negative spike would lower)
    gate = any(isinstance(op, MaxPool2d) for _, op in tu.graph.topo())
    if opts.neuron == "if" and not gate:
        base_cfg = dict(best_cfg)
        for model in neurons:
            if model != "if":
                consider({**base_cfg, NEURON: (model, 0.0)}, "global", f"neuron {model}")
    global_cfg, global_loss = dict(best_cfg), best
    # the bias calibration of Li et al. on top of the best global setting (its cost is reserved:
    # it is tried before the per-layer search uses up the budget)
    bc_cfg = {**global_cfg, BC: ("on", 0.0)}
    loss = run(bc_cfg, few, "global", "bias-calibration", reserved=True)
    use_bc = (loss is not None and global_loss is not None
              and better(global_loss, loss, Z_SEARCH))
    for name in tu.tunable:  # coordinate-wise, without the bias calibration (cheaper)
        for choice in choices:
            if choice != best_cfg[name][0]:
                consider({**best_cfg, name: (choice, best_cfg[name][1])}, "layer",
                         f"{name}: {choice}")
    for name in tu.tunable:
        for alpha in ALPHA_CHOICES:
            if alpha != best_cfg[name][1]:
                consider({**best_cfg, name: (best_cfg[name][0], alpha)}, "layer",
                         f"{name}: alpha={alpha}")
    if use_bc:
        global_cfg, best_cfg = bc_cfg, {**best_cfg, BC: ("on", 0.0)}
    # confirm on the held-out samples the search did not see; a more specific setting must
    # pass the paired test
    finals = {"default": default_cfg, "global": global_cfg, "per-layer": best_cfg}
    confirmed: dict[str, np.ndarray] = {}
    accuracy: dict[str, float] = {}
    seen: list[Config] = []
    for label, cfg in finals.items():
        if cfg in seen:
            continue
        seen.append(cfg)
        loss = run(cfg, n_conf, "confirm", label, start=c0)
        if loss is not None:
            confirmed[label], accuracy[label] = loss, scores[-1]["accuracy"]
    winner = "default" if "default" in confirmed else next(iter(confirmed), "default")
    for label in ("global", "per-layer"):
        if label in confirmed and winner in confirmed and better(
                confirmed[winner], confirmed[label], Z_CONFIRM):
            winner = label
    cfg = finals[winner]
    passes = default_specs if winner == "default" else to_specs(cfg, timesteps, opts, tu.rest)
    return TuneResult(
        passes=passes, pipeline=",".join([*front, *passes]),
        chosen={**{n: {"threshold": c, "alpha": a} for n, (c, a) in layers_of(cfg).items()},
                **({"bias-calibration": {"timesteps": timesteps}} if BC in cfg else {}),
                **({"neuron": cfg[NEURON][0]} if NEURON in cfg else {})},
        scores=scores, default_score=accuracy.get("default"),
        tuned_score=accuracy.get(winner),
        default_loss=float(confirmed["default"].mean()) if "default" in confirmed else None,
        tuned_loss=float(confirmed[winner].mean()) if winner in confirmed else None,
        winner=winner, seconds=time.perf_counter() - t0, budget=budget, spent=spent,
        held_out=n_val, fit=len(tu.fit_idx), cut_by_budget=cut, timesteps=timesteps,
        front_specs=front)
