"""Fine-tuning never returns a network worse than the one it started from (issue 22).

``train`` sets aside part of its training samples before any method sees them (``split``: a
seeded draw of ``fraction`` of them, at most ``MAX_HELD`` = 1024, at least ``MIN_HELD`` = 16),
trains on the rest, and then scores every network of the run on those held-out samples at the
trained T (``check``): the network it started from, and the result of each method of a chain.

Score of a network on held-out sample i, in the gpu simulator (direct or the run's coding):

    correct_i = [argmax_k V_k(T) = target_i]     (target: the label, else the ANN's argmax)
    loss_i    = log(1 + KL(softmax(z_i) ‖ softmax(V(T)/T)))

with V(T) the readout's accumulated potential (V(T)/T in logit units) and z_i the teacher ANN's
logits (the tuner's loss, ``snncompile.pipeline_search``). A network's score is (held-out
accuracy, −mean loss), compared lexicographically: the accuracy decides, the loss breaks ties.
The run returns the best-scoring network (later steps win exact ties), so fine-tuning that
would lower the held-out accuracy keeps the network it started from, and says so
(``HeldOutCheck.summary``, ``report``). With fewer than ``2·MIN_HELD`` samples nothing is held
out and the check scores the training samples themselves (it says so: the guarantee is then
only on what was trained).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from snncompile.finetune.training import TrainData
from snncompile.interp import run_ann
from snncompile.ir.graph import Graph

MAX_HELD = 1024
MIN_HELD = 16
CONVERTED = "converted"


def split(data: TrainData, fraction: float, seed: int) -> tuple[TrainData, TrainData, bool]:
    """(training part, held-out part, whether the two are disjoint). ``fraction`` = 0 or too
    few samples: everything trains and is also what the check scores."""
    n = len(data)
    held = min(MAX_HELD, math.floor(fraction * n))
    if fraction <= 0 or held < MIN_HELD or n - held < MIN_HELD:
        return data, data, False
    order = np.random.default_rng(seed + 4099).permutation(n)
    h, t = np.sort(order[:held]), np.sort(order[held:])
    pick = (lambda idx: None if data.y is None else data.y[idx])  # noqa: E731
    return TrainData(data.x[t], pick(t)), TrainData(data.x[h], pick(h)), True


def _readout(graph: Graph, x: np.ndarray, steps: int, encoding: str, seed: int,
             device: torch.device) -> np.ndarray:
    """V(T)/T of ``graph`` on ``x`` (N, K), in batches of 256, without autograd."""
    from snncompile.backends.gpu.compile import SpikingNetwork
    from snncompile.finetune.training import _encode

    net = SpikingNetwork(graph).to(device)
    gen = torch.Generator(device=device).manual_seed(seed + 15485863)
    outs = []
    with torch.no_grad():
        for i in range(0, len(x), 256):
            xb = torch.from_numpy(np.ascontiguousarray(x[i:i + 256])).to(device)
            frames = xb.dim() == len(graph.shape(graph.input_name)) + 2  # frame t at step t
            pot = net(xb.transpose(0, 1) if frames else _encode(xb, steps, encoding, gen), steps)
            outs.append(pot[-1].flatten(1).cpu().numpy() / steps)
    return np.concatenate(outs)


def _loss(v: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """Per-sample log(1 + KL(softmax(logits) ‖ softmax(v)))."""
    p = torch.from_numpy(logits.astype(np.float64)).log_softmax(1)
    q = torch.from_numpy(v.astype(np.float64)).log_softmax(1)
    kl = F.kl_div(q, p, log_target=True, reduction="none").sum(1)
    return np.log1p(kl.clamp_min(0.0).numpy())


@dataclass
class HeldOutCheck:
    """What the check measured and which network the run returns."""

    samples: int
    timesteps: int
    disjoint: bool  # held-out samples were not trained on
    labels: bool  # targets are labels (else the ANN's argmax)
    scores: dict[str, dict[str, float]] = field(default_factory=dict)  # name -> accuracy, loss
    kept: str = CONVERTED

    @property
    def improved(self) -> bool:
        return self.kept != CONVERTED

    def summary(self) -> str:
        where = (f"{self.samples} held-out calibration samples" if self.disjoint else
                 f"its {self.samples} training samples (too few to hold any out)")
        what = "accuracy" if self.labels else "agreement with the ANN"
        c = self.scores[CONVERTED]
        last = self.scores[list(self.scores)[-1]]
        txt = (f"held-out check on {where} at T={self.timesteps}: {what} converted "
               f"{c['accuracy']:.4f} (loss {c['loss']:.4f}), fine-tuned {last['accuracy']:.4f} "
               f"(loss {last['loss']:.4f})")
        if not self.improved:
            return txt + ": fine-tuning did not help there; kept the converted network"
        return txt + ("; kept the fine-tuned network" if self.kept == list(self.scores)[-1]
                      else f"; kept the network {self.kept}, which scored best")

    def report(self) -> dict[str, Any]:
        return {"samples": self.samples, "timesteps": self.timesteps,
                "disjoint_from_training": self.disjoint,
                "target": "labels" if self.labels else "ANN argmax",
                "scores": self.scores, "kept": self.kept,
                "loss_is": "mean over held-out samples of log(1 + KL(softmax(ANN logits) || "
                           "softmax(V(T)/T)))",
                "rule": "highest accuracy, then lowest loss; the converted network unless a "
                        "fine-tuned one is at least as good"}


def check(candidates: list[tuple[str, Graph]], held: TrainData, teacher: Graph, steps: int,
          *, disjoint: bool, encoding: str = "direct", seed: int = 0,
          device: torch.device | None = None) -> tuple[Graph, HeldOutCheck]:
    """Score ``candidates`` ((name, graph), the converted network first) on ``held``; return
    the best (module docstring) and the record of the check."""
    device = device or torch.device("cpu")
    frames = held.x.ndim == len(teacher.shape(teacher.input_name)) + 2  # event frames
    logits = run_ann(teacher, held.x.mean(1) if frames else held.x)  # the ANN's view: summed
    target = held.y if held.y is not None else logits.argmax(1)
    rec = HeldOutCheck(len(held), steps, disjoint, held.y is not None)
    best, key = candidates[0][1], (-1.0, 0.0)
    for name, graph in candidates:
        v = _readout(graph, held.x, steps, encoding, seed, device)
        acc, loss = float(np.mean(v.argmax(1) == target)), float(np.mean(_loss(v, logits)))
        rec.scores[name] = {"accuracy": acc, "loss": loss}
        if (acc, -loss) >= key:
            best, key, rec.kept = graph, (acc, -loss), name
    return best, rec
