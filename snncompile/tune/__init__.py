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
2. Score of a candidate = accuracy at T on the held-out samples (against their labels, or against
   the ANN's own predictions when there are none) − 0.3·min(nmse, 1), nmse = the mean squared
   error between the readout's average potential V(T)/T and the ANN's logits, over the logits'
   variance: a continuous tie-break that tells apart candidates the few samples cannot.
3. Search, on the first ``few`` held-out samples (128; 4096/T at T > 32): every global setting
   (each statistic × granularity, α = 0.5), then global α ∈ {0, 0.25, 0.75}; then
   coordinate-wise, one layer at a time in topological order, each alternative statistic, then
   each α, keeping a change only when the score improves; finally the bias calibration of Li
   et al. (``bias-calibration``) on top, kept if it improves the score. Every candidate is one
   simulation of ``few`` samples at T.
4. Confirm on all held-out samples: the fixed default, the best global setting and the
   coordinate-wise result. The more specific setting wins only when it beats the simpler one by
   more than ``MARGIN`` = 2 held-out samples (default < global < per-layer: per-layer choices
   fitted on few samples overfit them), so the tuned setting never scores below today's fixed
   default on the held-out data.
5. The winner is written as a plain, replayable pass pipeline (``balance-thresholds{layers=..}``,
   ``initial-potential{layers=..}``, ``threshold-search{layers=..}``, ``bias-calibration``), run
   by the caller on the full calibration set: ``--pipeline <spec>`` reproduces a tuned run
   without tuning.

Time: each stage stops when the next simulation would overrun ``budget_s`` (the confirmation
is reserved up front); the result says whether the budget cut the search short. Simulation
uses the GPU simulator (``snncompile.backends.gpu``) in float mode on ``base_options.device``.
Sources of the passes it chooses from: their docstrings (Rueckauer et al. 2017; Li et al.,
ICML 2021).
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
from snncompile.ir.nodes import Layer, Neuron
from snncompile.options import CompileOptions
from snncompile.passes import PassContext, PassManager, pass_spec
from snncompile.passes.balance_thresholds import DEAD_THRESHOLD, PERCENTILES, layer_thresholds
from snncompile.passes.bias_calibration import BiasCalibration
from snncompile.passes.pipelines import FRONT as FRONT_PASSES
from snncompile.passes.pipelines import conversion_passes as _conversion_passes
from snncompile.passes.pipelines import pool_passes
from snncompile.passes.threshold_search import mse_thresholds

#: threshold choices per layer: "statistic/granularity"; "mse" is threshold-search at T
THRESHOLD_CHOICES = ("p99.9/layer", "p99.9/channel", "p99.99/channel", "max/channel",
                     "p99/channel", "mse/channel", "mse/layer", "max/layer")
ALPHA_CHOICES = (0.5, 0.25, 0.75, 0.0)
DEFAULT_BUDGET_S = 20.0
FEW = 128
FEW_STEPS = 4096  # the few-sample stage simulates at most FEW_STEPS/T samples (≥ 32)
NMSE_WEIGHT = 0.3
#: the front-end passes as spec strings
FRONT = tuple(pass_spec(p) for p in FRONT_PASSES)


def conversion_passes(opts: CompileOptions) -> list[str]:
    """The fixed default conversion passes (``passes.pipelines``) as spec strings."""
    return [pass_spec(p) for p in _conversion_passes(opts)]


def front_passes(opts: CompileOptions) -> list[str]:
    """The front passes and the max-pool rewrite of ``--maxpool`` (``pipelines.pool_passes``)
    as spec strings: what runs before the tuned conversion passes."""
    return [*FRONT, *(pass_spec(p) for p in pool_passes(opts))]
USE_LABELS = True
MARGIN = 2.0  # held-out samples a more specific setting must win by
HOLDOUT = 0.5
#: calibration samples the CLI reads into memory for the tuner: 1024 held out + 1024 to fit at
#: most (a 10,000-image folder calibration would otherwise be held whole: 6 GB at 224×224)
MAX_SAMPLES = 2048


@dataclass
class TuneResult:
    """What ``tune`` chose and measured.

    ``passes``: the conversion pass specs (replace ``conversion_passes(options)``);
    ``pipeline``: the whole pipeline (front + conversion) as one replayable string;
    ``chosen``: layer -> {"threshold": "stat/granularity", "alpha": α};
    ``scores``: every simulated candidate (stage, what changed, samples, score, accuracy, nmse);
    ``default_score`` / ``tuned_score``: the fixed default and the winner on all held-out samples.
    """

    passes: list[str]
    pipeline: str
    chosen: dict[str, dict[str, Any]]
    scores: list[dict[str, Any]] = field(default_factory=list)
    default_score: float | None = None
    tuned_score: float | None = None
    winner: str = "default"
    seconds: float = 0.0
    budget_s: float = DEFAULT_BUDGET_S
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
        return (f"tuning for T={self.timesteps}: {self.winner} setting, held-out score "
                f"{self.tuned_score:.4f} (fixed default {default}) on "
                f"{self.held_out} calibration samples, {len(self.scores)} candidates, "
                f"{self.seconds:.1f} s of {self.budget_s:.0f} s{cut}")

    def report(self) -> dict[str, Any]:
        return {"timesteps": self.timesteps, "winner": self.winner, "pipeline": self.pipeline,
                "passes": self.passes, "chosen": self.chosen, "score": self.tuned_score,
                "default_score": self.default_score, "seconds": self.seconds,
                "budget_s": self.budget_s, "held_out": self.held_out, "fit": self.fit,
                "cut_by_budget": self.cut_by_budget, "candidates": len(self.scores),
                "scores": self.scores}


Config = dict[str, tuple[str, float]]  # layer -> (threshold choice, alpha); BC: bias-calibration
BC = "*bias-calibration*"


def layers_of(cfg: Config) -> Config:
    return {k: v for k, v in cfg.items() if k != BC}


def fit_cap(graph: Graph, n: int, opts: CompileOptions) -> int:
    """How many of the ``n`` fit samples the tuner keeps: their activations, every op's output
    (``record_activations``, float32), held in memory at once, take at most half of what
    ``opts.memory_budget`` leaves free (at least 8 samples). The fit samples are a seeded random
    part of the calibration set, so the first ``fit_cap`` of them are a random subsample: an
    image-folder calibration of 10,000 ImageNet images no longer records ~60 MB per image."""
    from snncompile.backends.memory import room_bytes

    per = 4 * sum(int(np.prod(graph.shape(m))) for m, _ in graph.topo())
    room = room_bytes(opts.memory_budget, torch.device("cpu"))
    return int(min(n, max(8, room // max(2 * per, 1))))


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
        self.target = (np.asarray(y)[self.val_idx] if y is not None and USE_LABELS
                       else logits.argmax(1))
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
        if BC in cfg:
            g = BiasCalibration(timesteps=self.steps).run(
                g, PassContext(calibration=self.x_fit, seed=self.seed))
        if self.rest:
            ctx = PassContext(calibration=self.x_fit, seed=self.seed)
            g = PassManager.from_specs(self.rest, verify=False).run(g, ctx)
        return g

    @torch.no_grad()
    def score(self, cfg: Config, n: int) -> dict[str, float]:
        from snncompile.backends.gpu.compile import SpikingNetwork

        net = SpikingNetwork(self.build(cfg)).to(self.device)
        outs = []
        for i in range(0, n, 128):
            xb = torch.from_numpy(np.ascontiguousarray(self.x_val[i:min(n, i + 128)]))
            outs.append(net(xb.to(self.device), self.steps)[-1].flatten(1).cpu().numpy())
        v = np.concatenate(outs) / self.steps
        ref = self.logits[:n]
        acc = float(np.mean(v.argmax(1) == self.target[:n]))
        nmse = float(np.mean((v - ref) ** 2) / max(float(np.var(ref)), 1e-12))
        return {"score": acc - NMSE_WEIGHT * min(nmse, 1.0), "accuracy": acc, "nmse": nmse}


def cfg_alpha(cfg: Config) -> float:
    alphas = [a for _, a in layers_of(cfg).values()]
    return Counter(alphas).most_common(1)[0][0] if alphas else 0.5


def to_specs(cfg: Config, steps: int, opts: CompileOptions, rest: list[str]) -> list[str]:
    """A configuration -> replayable conversion pass specs."""
    default = conversion_passes(opts)
    bc = BC in cfg
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
    return [*specs, *rest]


def tune(ann_graph: Graph, calibration_x: np.ndarray, calibration_y: np.ndarray | None,
         timesteps: int, *, budget_s: float | None = None, seed: int = 0,
         base_options: CompileOptions | None = None, per_channel: bool = True) -> TuneResult:
    """Choose the conversion passes for ``timesteps`` (see the module docstring).

    ``per_channel=False`` keeps one threshold per layer (``--target loihi``: Loihi's LIF
    process and the netx export take one threshold per population)."""
    t0 = time.perf_counter()
    opts = base_options or CompileOptions(timesteps=timesteps)
    budget = DEFAULT_BUDGET_S if budget_s is None else float(budget_s)
    default_specs = conversion_passes(opts)
    front = front_passes(opts)
    x = np.asarray(calibration_x, np.float32)
    if len(x) < 24:
        return TuneResult(passes=default_specs, pipeline=",".join([*front, *default_specs]),
                          chosen={}, winner="default (fewer than 24 calibration samples)",
                          seconds=time.perf_counter() - t0, budget_s=budget, timesteps=timesteps,
                          front_specs=front)
    tu = _Tuner(ann_graph, x, calibration_y, timesteps, opts, seed)
    if not tu.tunable:
        return TuneResult(passes=default_specs, pipeline=",".join([*front, *default_specs]),
                          chosen={}, winner="default (no layer to tune: thresholds fixed by "
                          "Clip or quantized activations)", seconds=time.perf_counter() - t0,
                          budget_s=budget, timesteps=timesteps, front_specs=front)
    n_val = len(tu.val_idx)
    few = min(FEW, max(32, FEW_STEPS // timesteps), n_val)
    scores: list[dict[str, Any]] = []
    cut = False
    cost_few = [0.0]

    def run(cfg: Config, n: int, stage: str, what: str) -> float | None:
        nonlocal cut
        elapsed = time.perf_counter() - t0
        reserve = 3 * cost_few[0] * n_val / few if stage != "confirm" else 0.0
        if scores and elapsed + cost_few[0] * n / few + reserve > budget:
            cut = True
            return None
        t1 = time.perf_counter()
        s = tu.score(cfg, n)
        if n == few:
            cost_few[0] = max(cost_few[0], time.perf_counter() - t1)
        scores.append({"stage": stage, "candidate": what, "samples": n, **s})
        return s["score"]

    default_choice = f"{opts.norm}/" + ("channel" if opts.channelwise else "layer")
    default_alpha = float(opts.alpha)
    default_cfg = {n: (default_choice, default_alpha) for n in tu.tunable}
    first = run(default_cfg, few, "global", "default")
    best_cfg, best = default_cfg, (-np.inf if first is None else first)
    choices = [c for c in THRESHOLD_CHOICES if per_channel or c.endswith("/layer")]
    for choice in choices:
        cfg = {n: (choice, 0.5) for n in tu.tunable}
        if cfg == default_cfg:
            continue
        s = run(cfg, few, "global", f"{choice}, alpha=0.5")
        if s is not None and s > best:
            best_cfg, best = cfg, s
    for alpha in ALPHA_CHOICES[1:]:
        choice = next(iter(best_cfg.values()))[0] if best_cfg else default_choice
        cfg = {n: (choice, alpha) for n in tu.tunable}
        s = run(cfg, few, "global", f"{choice}, alpha={alpha}")
        if s is not None and s > best:
            best_cfg, best = cfg, s
    global_cfg = dict(best_cfg)
    for name in tu.tunable:
        for choice in choices:
            if cut or choice == best_cfg[name][0]:
                continue
            cfg = {**best_cfg, name: (choice, best_cfg[name][1])}
            s = run(cfg, few, "layer", f"{name}: {choice}")
            if s is not None and s > best:
                best_cfg, best = cfg, s
    for name in tu.tunable:
        for alpha in ALPHA_CHOICES:
            if cut or alpha == best_cfg[name][1]:
                continue
            cfg = {**best_cfg, name: (best_cfg[name][0], alpha)}
            s = run(cfg, few, "layer", f"{name}: alpha={alpha}")
            if s is not None and s > best:
                best_cfg, best = cfg, s
    # confirm on every held-out sample
    if not cut:  # the bias calibration of Li et al. on top of the best setting
        cfg = {**best_cfg, BC: ("on", 0.0)}
        s = run(cfg, few, "layer", "bias-calibration")
        if s is not None and s > best:
            best_cfg, best = cfg, s
    finals = {"default": default_cfg, "global": global_cfg, "per-layer": best_cfg}
    confirmed: dict[str, float] = {}
    seen: list[Config] = []
    for label, cfg in finals.items():
        if cfg in seen:
            continue
        seen.append(cfg)
        s = run(cfg, n_val, "confirm", label)
        if s is not None:
            confirmed[label] = s
    if confirmed:
        # a more specific setting must beat the simpler one by more than MARGIN held-out samples
        # (per-layer choices fitted on few samples overfit them; the global ones less so)
        margin = MARGIN / n_val
        winner = "default" if "default" in confirmed else next(iter(confirmed))
        for label in ("global", "per-layer"):
            if label in confirmed and confirmed[label] > confirmed[winner] + margin:
                winner = label
    else:  # the budget left no time to confirm: the best on the few samples
        winner = "per-layer" if best_cfg != default_cfg else "default"
        if np.isfinite(best):
            confirmed[winner] = best
    cfg = finals[winner]
    passes = default_specs if winner == "default" else to_specs(cfg, timesteps, opts, tu.rest)
    return TuneResult(
        passes=passes, pipeline=",".join([*front, *passes]),
        chosen={**{n: {"threshold": c, "alpha": a} for n, (c, a) in layers_of(cfg).items()},
                **({"bias-calibration": {"timesteps": timesteps}} if BC in cfg else {})},
        scores=scores, default_score=confirmed.get("default"),
        tuned_score=confirmed.get(winner), winner=winner,
        seconds=time.perf_counter() - t0, budget_s=budget, held_out=n_val,
        fit=len(tu.fit_idx), cut_by_budget=cut, timesteps=timesteps,
        front_specs=front)
