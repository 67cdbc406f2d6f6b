"""The training loop shared by every fine-tuning method: stages, chunked backprop, checkpoints.

A method builds a ``DifferentiableSNN`` and a list of ``Stage``s (a name, a number of epochs, the
parameters it trains, and a loss over a ``StepOutputs``); ``run_stages`` trains them in order:

- every epoch visits the data in a seeded random order (the order depends only on the seed,
  the stage and the epoch, so a resumed run sees the same batches as an uninterrupted one);
- a batch of ``batch_size`` samples runs in chunks of at most ``chunk_size`` samples, each
  forward + backward through all T steps on its own, the gradients summed (each chunk's mean
  loss weighted by its share of the batch), then one Adam step: peak memory is that of one
  chunk, whatever the batch size;
- thresholds are projected back to θ > 0 after every step;
- under ``torchrun`` (``snncompile.distributed``) the simulator runs inside
  ``DistributedDataParallel``: the same global batch is split into one contiguous part per rank,
  each rank runs its part's chunks (each chunk's loss weighted by its share of the *global*
  batch, times the world size because DDP averages), DDP all-reduces the gradients in the
  backward of each rank's last chunk (``no_sync`` before), and every rank takes the same Adam
  step: the single-process algorithm up to float summation order. Rank 0 reads and writes the
  checkpoint and broadcasts what it resumed;
- after every epoch the trainable tensors, the optimiser state and the loss history go to
  ``out_dir/checkpoint.pt`` (written to a temporary file, then renamed). A later call with the
  same method, options, hyper-parameters, IR and data (the *fingerprint*; the epoch count is not
  part of it) resumes after the last finished epoch, so asking for more epochs continues a run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import sys
import time
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from snncompile.interp import check_input, run_ann_torch
from snncompile.ir.diagnostics import CompileError, Diagnostic
from snncompile.ir.graph import Graph

Tensor = torch.Tensor
log = logging.getLogger("snncompile.finetune")


# ------------------------------------------------------------------------------ inputs
@dataclass(frozen=True)
class TrainData:
    """Training samples: ``x`` (N, *input shape) float32, ``y`` (N,) int64 or None."""

    x: np.ndarray
    y: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.x)


def as_data(data: Any) -> TrainData:
    """``TrainData`` from a ``tools.data.Dataset``, an ``(x, y)`` pair, an ``x`` array or a path to
    an .npz file (x, optional y)."""
    if isinstance(data, TrainData):
        return data
    if isinstance(data, (str, Path)):
        from snncompile.data import load_npz

        data = load_npz(data)
    if hasattr(data, "x") and hasattr(data, "y"):
        x, y = data.x, data.y
    elif isinstance(data, tuple) and len(data) == 2:
        x, y = data
    else:
        x, y = data, None
    x = np.ascontiguousarray(np.asarray(x, np.float32))
    if y is not None:
        y = np.asarray(y).astype(np.int64)
        if y.shape != (len(x),):
            raise CompileError("bad fine-tuning data", [Diagnostic(
                f"labels have shape {y.shape}, expected ({len(x)},)")])
    if len(x) == 0:
        raise CompileError("bad fine-tuning data", [Diagnostic("no samples")])
    return TrainData(x, y)


@dataclass(frozen=True, kw_only=True)
class FinetuneConfig:
    """Hyper-parameters common to all methods; ``options`` holds the method's own options
    (strings from the command line or typed values from Python; each method parses them)."""

    epochs: int = 5
    lr: float = 2e-3  # relative to each tensor's RMS (``step_scales``)
    timesteps: int = 4  # the T trained for
    seed: int = 0
    batch_size: int = 64
    chunk_size: int = 128  # at most this many samples per forward/backward (memory bound)
    surrogate: str = "triangle"
    encoding: str = "direct"  # direct | poisson (as the simulator's --encoding)
    device: str = "auto"
    out_dir: Path | None = None  # checkpoints; None: no checkpoints
    progress: bool = True
    teacher: Graph | None = None  # the ANN (``finetune.teacher``); None: the IR's ANN mode
    options: Mapping[str, Any] = field(default_factory=dict)
    #: part of the samples held out to check that fine-tuning helped (``finetune.heldout``);
    #: 0: no check (the trained network is returned whatever it scores)
    holdout: float = 0.1

    def __post_init__(self) -> None:
        bad = []
        for name in ("epochs", "timesteps", "batch_size", "chunk_size"):
            v = getattr(self, name)
            lo = 0 if name == "epochs" else 1
            if not isinstance(v, int) or v < lo:
                bad.append(Diagnostic(f"finetune {name}={v!r}; must be an integer >= {lo}"))
        if not (isinstance(self.holdout, (int, float)) and 0 <= self.holdout < 1):
            bad.append(Diagnostic(f"finetune holdout={self.holdout!r}; must be in [0, 1)"))
        if not (self.lr > 0 and np.isfinite(self.lr)):
            bad.append(Diagnostic(f"finetune lr={self.lr!r}; must be > 0"))
        if self.encoding not in ("direct", "poisson"):
            bad.append(Diagnostic(f"finetune encoding={self.encoding!r}; direct | poisson"))
        if bad:
            raise CompileError("bad fine-tuning option", bad)


def parse_options(cls: type, options: Mapping[str, Any], method: str) -> Any:
    """Build the method's option dataclass ``cls`` from ``options`` (strings are converted to
    the field's type; unknown keys are an error naming the method's options)."""
    from snncompile.passes.registry import convert_option

    known = {f.name for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for k, v in options.items():
        key = k.replace("-", "_")
        if key not in known:
            raise CompileError("bad fine-tuning option", [Diagnostic(
                f"method '{method}' has no option {k!r}",
                hint=f"options: {', '.join(sorted(known))}")])
        kwargs[key] = convert_option(v, hints[key], f"{method}.{key}") if isinstance(v, str) else v
    return cls(**kwargs)


# ------------------------------------------------------------------------------ stages
@dataclass
class StepOutputs:
    """What a loss sees for one chunk: the input, labels, readout potentials (T, B, K), spikes
    per spiking layer (T, B, ...), the network (for θ) and the teacher's ANN-mode values by op
    name (None when no stage asked for a teacher)."""

    x: Tensor
    y: Tensor | None
    potentials: Tensor
    spikes: dict[str, Tensor]
    net: Any
    teacher: dict[str, Tensor] | None

    def rate(self, name: str) -> Tensor:
        """Layer ``name``'s time-averaged output θ·mean_t s(t), shape (B, ...)."""
        return self.spikes[name].mean(0) * self.net.theta(name)

    @property
    def mean_output(self) -> Tensor:
        """The readout's mean output per step, potential(T)/T, (B, K): ANN logit units."""
        return self.potentials[-1].flatten(1) / self.potentials.shape[0]

    @property
    def step_outputs(self) -> Tensor:
        """The readout's output per step, o(t) = potential(t) − potential(t−1): (T, B, K)."""
        pot = self.potentials.flatten(2)
        return torch.cat([pot[:1], pot[1:] - pot[:-1]], 0)


LossFn = Callable[[StepOutputs], Tensor]


@dataclass
class Stage:
    name: str
    epochs: int
    params: Sequence[nn.Parameter]
    loss: LossFn
    needs_teacher: bool = False


@dataclass
class FinetuneResult:
    """The tuned IR and how training went (``history``: one entry per epoch)."""

    graph: Graph
    method: str
    history: list[dict[str, Any]]
    seconds: float
    peak_memory_bytes: int = 0
    resumed_from: str | None = None
    #: the last step of a run: the held-out check (``finetune.heldout.HeldOutCheck``) that
    #: chose ``graph``, and ``trained``, what training produced (``graph`` unless it was not kept)
    check: Any = None
    trained: Graph | None = None
    teacher: str = ""  # which network taught (``finetune.teacher.teacher_for``'s note)

    def summary(self) -> dict[str, Any]:
        out = {"method": self.method, "seconds": self.seconds,
               "peak_memory_bytes": self.peak_memory_bytes, "resumed_from": self.resumed_from,
               "teacher": self.teacher,
               "epochs": [{k: v for k, v in h.items() if k != "batch_losses"}
                          for h in self.history]}
        if self.check is not None:
            out["held_out"] = self.check.report()
        return out


# ------------------------------------------------------------------------------ helpers
def resolve_device(name: str) -> torch.device:
    from snncompile.backends.common import resolve_device as _resolve

    return _resolve(name)


def fingerprint(method: str, cfg: FinetuneConfig, graph: Graph, data: TrainData) -> str:
    """Hash of what determines a run (the epoch count excluded, so that a run can be extended)."""
    from snncompile.ir.serialize import to_dicts

    h = hashlib.sha1()
    graphs = [graph] + ([cfg.teacher] if cfg.teacher is not None and cfg.teacher is not graph
                        else [])
    for g in graphs:
        doc, arrays = to_dicts(g)
        h.update(json.dumps(doc, sort_keys=True, default=str).encode())
        for k in sorted(arrays):
            h.update(k.encode())
            h.update(np.ascontiguousarray(arrays[k]).tobytes())
    keys = {"method": method, "lr": cfg.lr, "timesteps": cfg.timesteps, "seed": cfg.seed,
            "batch_size": cfg.batch_size, "surrogate": cfg.surrogate, "encoding": cfg.encoding,
            "options": {k: str(v) for k, v in sorted(cfg.options.items())},
            "teacher": cfg.teacher is not None}
    h.update(json.dumps(keys, sort_keys=True).encode())
    h.update(data.x.tobytes())
    if data.y is not None:
        h.update(data.y.tobytes())
    return h.hexdigest()


class _Simulate(nn.Module):
    """``net.simulate`` as a module's ``forward`` (what DistributedDataParallel wraps)."""

    def __init__(self, net: Any) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor, steps: int) -> tuple[Tensor, dict[str, Tensor]]:
        return self.net.simulate(x, steps)


class _SavedBytes:
    """Bytes of the tensors autograd saves for backward during one chunk (the memory that
    backprop through T steps costs; parameters excluded)."""

    def __init__(self) -> None:
        self.current = 0
        self.peak = 0

    def pack(self, t: Tensor) -> Tensor:
        if not isinstance(t, nn.Parameter):
            self.current += t.numel() * t.element_size()
            self.peak = max(self.peak, self.current)
        return t

    @staticmethod
    def unpack(t: Tensor) -> Tensor:
        return t


def _encode(x: Tensor, steps: int, encoding: str, gen: torch.Generator) -> Tensor:
    if encoding == "direct":
        return x
    p = x.clamp(0.0, 1.0).unsqueeze(0).expand(steps, *x.shape)
    return (torch.rand(p.shape, generator=gen, device=x.device, dtype=x.dtype) < p).to(x.dtype)


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _load_checkpoint(path: Path, device: torch.device, fp: str,
                     trainables: dict[str, Tensor]) -> dict[str, Any] | None:
    """The checkpoint at ``path`` if it is ours for this run, else None (a fresh start).

    ``torch.load(weights_only=True)``: only tensors, numbers, strings and containers are
    unpickled, never code (a planted checkpoint cannot execute anything). It is used only when
    its fingerprint matches ``fp`` and its parameters have the names and shapes of
    ``trainables``; anything else is ignored with a warning."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # noqa: BLE001 - UnpicklingError, RuntimeError, EOFError, ...
        log.warning("ignoring checkpoint %s: not a plain-data checkpoint (%s)", path,
                    str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__)
        return None
    try:
        ok = (isinstance(state, dict) and state.get("fingerprint") == fp
              and isinstance(state.get("params"), dict)
              and set(state["params"]) == set(trainables)
              and all(isinstance(v, Tensor) and v.shape == trainables[k].shape
                      for k, v in state["params"].items())
              and isinstance(state.get("stage"), int) and isinstance(state.get("epoch"), int)
              and isinstance(state.get("history"), list))
    except Exception:  # noqa: BLE001 - any malformed content: not ours
        ok = False
    if not ok:
        if isinstance(state, dict) and state.get("fingerprint") != fp:
            log.info("checkpoint %s is for another run (fingerprint differs): starting fresh", path)
        else:
            log.warning("ignoring checkpoint %s: its contents do not match this run", path)
        return None
    return state


# ------------------------------------------------------------------------------ the loop
def run_stages(net: Any, stages: Sequence[Stage], data: TrainData, cfg: FinetuneConfig,
               teacher: Graph, method: str, fp: str
               ) -> tuple[list[dict[str, Any]], int, str | None]:
    """Train ``net`` through ``stages``. Returns (history, peak saved-tensor bytes, the
    checkpoint resumed from or None). Steps: resume from ``cfg.out_dir``'s checkpoint
    (``_resume``), then per stage an Adam over its parameters and its epochs
    (``_Loop.epoch``), each followed by a checkpoint."""
    frames = data.x.ndim == len(teacher.shape(teacher.input_name)) + 2  # (N, T, *in) events
    if frames and data.x.shape[1] != cfg.timesteps:
        raise CompileError("frames do not fit the fine-tuning run", [Diagnostic(
            f"fine-tuning data has {data.x.shape[1]} frames per sample for T={cfg.timesteps}",
            hint="--finetune-timesteps equal to --timesteps with event data")])
    check_input(teacher, data.x[:1].mean(1) if frames else data.x, "fine-tuning data")
    device = resolve_device(cfg.device)
    net.to(device)
    trainables = dict(net.named_trainables())
    scale = step_scales(trainables.values())  # of the converted network: before a resume
    ckpt_path = cfg.out_dir / "checkpoint.pt" if cfg.out_dir is not None else None
    history, start_stage, start_epoch, opt_state, resumed = _resume(
        ckpt_path, device, fp, trainables)
    loop = _Loop(net, _simulator(net, device), data, cfg, teacher, method, device)
    for si, stage in enumerate(stages):
        if si < start_stage or not stage.params:
            continue
        params = list({id(p): p for p in stage.params}.values())  # no duplicates
        opt = torch.optim.Adam([{"params": [p], "lr": cfg.lr * scale[id(p)]} for p in params])
        first = start_epoch if si == start_stage else 0
        if si == start_stage and opt_state is not None and first > 0:
            try:
                opt.load_state_dict(opt_state)
            except ValueError:
                pass  # a different parameter set (the stage changed): fresh Adam moments
        for epoch in range(first, stage.epochs):
            history.append(loop.epoch(stage, si, epoch, opt))
            if cfg.progress:
                print(f"{method} {stage.name} epoch {epoch + 1}/{stage.epochs}: loss "
                      f"{history[-1]['loss']:.4f} ({history[-1]['seconds']:.1f} s)",
                      file=sys.stderr)
            if ckpt_path is not None:
                _save_checkpoint(ckpt_path, {
                    "fingerprint": fp, "method": method, "stage": si, "epoch": epoch + 1,
                    "params": {k: v.detach().cpu() for k, v in trainables.items()},
                    "optimizer": opt.state_dict(), "history": history})
        start_epoch, opt_state = 0, None
    return history, loop.meter.peak, resumed


def step_scales(params: typing.Iterable[torch.Tensor]) -> dict[int, float]:
    """Each trainable tensor's step scale: its root mean square in the converted network (1 for
    an all-zero tensor, e.g. a bias that is 0 everywhere). Adam moves every element by about its
    learning rate per step whatever the element's size, so an absolute rate that suits the
    8×8 digits nets (weights of RMS 0.15-0.9) moves the CIFAR ResNet-20's (RMS 0.02-0.08, after
    the BatchNorm fold) by 2-5 % of their size per step: its distillation at lr 1e-3 fell
    from 71 % to 19 % on held-out samples. ``lr`` is therefore relative: each tensor's Adam
    learning rate is ``lr`` × its scale, one relative step for every layer of every network."""
    out = {}
    for p in params:
        rms = float(p.detach().float().pow(2).mean().sqrt()) if p.numel() else 0.0
        out[id(p)] = rms if rms > 0 and np.isfinite(rms) else 1.0
    return out


def _resume(ckpt_path: Path | None, device: torch.device, fp: str,
            trainables: dict[str, Tensor]) -> tuple[list[dict[str, Any]], int, int, Any,
                                                    str | None]:
    """(history, stage, epoch, optimizer state, checkpoint path) to resume from, with the
    checkpoint's parameters copied into ``trainables``; under torchrun every rank resumes (or
    not) exactly as rank 0 did. Nothing to resume: ([], 0, 0, None, None)."""
    from snncompile import distributed

    history: list[dict[str, Any]] = []
    start_stage, start_epoch, opt_state, resumed = 0, 0, None, None
    state = _load_checkpoint(ckpt_path, device, fp, trainables) if ckpt_path else None
    if state is not None:
        with torch.no_grad():
            for k, v in state["params"].items():
                trainables[k].copy_(v)
        history = list(state["history"])
        start_stage, start_epoch = state["stage"], state["epoch"]
        opt_state = state["optimizer"]
        resumed = str(ckpt_path)
    if distributed.active():
        box = distributed.broadcast(
            None if resumed is None else ({k: v.cpu() for k, v in trainables.items()}, history,
                                          start_stage, start_epoch, opt_state, resumed))
        if box is not None:
            params0, history, start_stage, start_epoch, opt_state, resumed = box
            with torch.no_grad():
                for k, v in params0.items():
                    trainables[k].copy_(v.to(device))
    return history, start_stage, start_epoch, opt_state, resumed


def _simulator(net: Any, device: torch.device) -> Any:
    """``net.simulate``, or under torchrun a DistributedDataParallel around it: DDP broadcasts
    rank 0's parameters at construction and all-reduces (averages) the gradients in the
    backward of each rank's last chunk; stages train subsets of the parameters, hence
    find_unused_parameters."""
    from snncompile import distributed

    if not distributed.active():
        return net.simulate
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(
        _Simulate(net), device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=True, broadcast_buffers=False)


@dataclass
class _Loop:
    """What every epoch of ``run_stages`` uses: the network and its (DDP-wrapped) simulate,
    the data, the configuration, the ANN teacher, and the saved-tensor meter."""

    net: Any
    simulate: Any
    data: TrainData
    cfg: FinetuneConfig
    teacher: Graph
    method: str
    device: torch.device
    meter: Any = field(default_factory=lambda: _SavedBytes())

    def epoch(self, stage: Stage, si: int, epoch: int, opt: Any) -> dict[str, Any]:
        """One epoch of ``stage`` in seeded random order; returns its history entry."""
        from tqdm import tqdm

        cfg, n = self.cfg, len(self.data)
        t0 = time.perf_counter()
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + si * 1009 + epoch)
        order = torch.randperm(n, generator=gen).numpy()
        dgen = torch.Generator(device=self.device).manual_seed(
            cfg.seed + 7919 * (si * 1009 + epoch))
        batches = [order[i:i + cfg.batch_size] for i in range(0, n, cfg.batch_size)]
        bar = tqdm(batches, desc=f"{self.method} {stage.name} {epoch + 1}/{stage.epochs}",
                   unit="batch", leave=False, disable=not cfg.progress, file=sys.stderr)
        losses: list[float] = []
        for idx in bar:
            opt.zero_grad(set_to_none=True)
            total = self.batch(stage, epoch, idx, dgen)
            opt.step()
            self.net.clamp_thresholds()
            losses.append(total)
            bar.set_postfix(loss=f"{total:.4f}")
        bar.close()
        return {"stage": stage.name, "epoch": epoch + 1, "loss": float(np.mean(losses)),
                "seconds": time.perf_counter() - t0, "samples": n, "batch_losses": losses}

    def batch(self, stage: Stage, epoch: int, idx: np.ndarray, dgen: torch.Generator) -> float:
        """The gradients of one global batch ``idx`` (this rank's share, in chunks of
        ``chunk_size``); returns the batch's loss (summed over ranks)."""
        from snncompile import distributed

        cfg, data, device, world = self.cfg, self.data, self.device, distributed.world()
        total = 0.0
        mine = np.array_split(idx, world)[distributed.rank()]
        # a rank without samples (a last batch smaller than the world) still joins
        # DDP's all-reduce: one sample with weight 0
        weight = 1.0 if len(mine) else 0.0
        mine = mine if len(mine) else idx[:1]
        starts = list(range(0, len(mine), cfg.chunk_size))
        for ci in starts:
            sub = np.sort(mine[ci:ci + cfg.chunk_size])
            xb = torch.from_numpy(data.x[sub]).to(device)
            yb = torch.from_numpy(data.y[sub]).to(device) if data.y is not None else None
            # event frames (b, T, *in): frame t at step t; the ANN reads their mean
            frames = xb.dim() == len(self.teacher.shape(self.teacher.input_name)) + 2
            x_ann = xb.mean(1) if frames else xb
            tch = self.teacher_values(x_ann) if stage.needs_teacher else None
            xin = (xb.transpose(0, 1) if frames
                   else _encode(xb, cfg.timesteps, cfg.encoding, dgen))
            self.meter.current = 0
            sync = (contextlib.nullcontext() if world == 1 or ci == starts[-1]
                    else self.simulate.no_sync())  # DDP all-reduces after the last chunk
            with sync, torch.autograd.graph.saved_tensors_hooks(self.meter.pack,
                                                                self.meter.unpack):
                pot, spikes = self.simulate(xin, cfg.timesteps)
                loss = stage.loss(StepOutputs(x_ann, yb, pot, spikes, self.net, tch))
                if not torch.isfinite(loss):
                    raise CompileError("fine-tuning diverged", [Diagnostic(
                        f"{self.method}, stage {stage.name}, epoch {epoch + 1}: "
                        f"loss is {loss.item()}", hint="lower --finetune-lr")])
                # the backward inside no_sync too; DDP averages over ranks: × world
                # turns that into the sum of the ranks' shares of the global batch
                (loss * (weight * len(sub) / len(idx) * world)).backward()
            total += weight * loss.item() * len(sub) / len(idx)
        if world > 1:
            total = float(distributed.all_reduce(np.array([total]), "sum")[0])
        return total

    def teacher_values(self, xb: Tensor) -> dict[str, Tensor]:
        """Every value of the ANN teacher on ``xb`` (ANN mode runs on the CPU: its kernels
        build CPU weight tensors)."""
        with torch.no_grad():
            _, rec = run_ann_torch(self.teacher, xb.cpu().to(torch.float32), record=True)
        return {k: v.to(self.device, xb.dtype) for k, v in rec.items()}
