"""What every backend shares, in one neutral module (backends never import each other).

- ``CompiledNetwork``: the contract every ``compile`` returns (``run(x, timesteps) -> SimResult``,
  ``save(dir)``);
- ``SimResult``: what a run returns, which ``snncompile.evaluate`` reads;
- ``Recorder`` and ``batches``: the one run loop — batching with a progress bar, per-layer event
  counts, synaptic operations (events × fan-out), predictions at every step, optional spike
  trains — used by the gpu simulator, the torch Loihi reference and the Lava run;
- ``run_stream``: a compiled network (and optionally the ANN) over a streamed data source,
  batch by batch, merged with ``SimResult.concat`` and all-gathered over torchrun ranks;
- ``run_steps`` (the checks every ``run`` starts with), ``resolve_device``, the spiking
  max-pool gate both simulators apply and ``column_nonzeros`` (synapse counts of a dense layer).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

from snncompile.interp import pad2d
from snncompile.ir.diagnostics import CompileError, Diagnostic
from snncompile.ir.graph import Graph
from snncompile.ir.nodes import MaxPool2d
from snncompile.ir.verify import reads_channels_last
from snncompile.pooling import tile_max, tiles

Tensor = torch.Tensor


@dataclass
class SimResult:
    """What one run returns: the GPU simulator (float and loihi mode) and the Lava backend.

    Attributes:
        timesteps: T.
        predictions: (T, N) int64, argmax of the readout potential after each step t = 1..T
            (row t-1 is the prediction at t).
        output: (N, K) float, the readout potential after T steps.
        layer_spikes: spiking layer name -> (N,) float64, spikes per sample (all steps, all units;
            every GN member spike and every negative spike counts 1, a graded delta counts 1).
        layer_neurons: spiking layer name -> number of neurons (units of its output).
        synops: (N,) float64, synaptic operations per sample (spikes × fan-out, all layers).
        seconds: wall time of the run.
        device: the torch device it ran on.
        spike_trains: with ``record``: layer name -> (T, N, *shape) int8 spikes s(t) (not θ·s);
            float32 for graded models (sigma-delta).
        potentials: with ``record``: (T, N, K) readout potentials.
        layer_synops: spiking layer name -> (N,) float64, its synaptic operations per sample
            (its messages × their fan-out; ``synops`` is their sum).
        input_ops: (N,) float64, the operations of the synapses the Input drives: Σ_t Σ_units
            [x(t) ≠ 0] · fan-out (graded messages, one per nonzero input value and step), or
            None where the backend did not count them.
        step_synops: (T,) float64, ``synops`` of every step summed over the samples (None where
            a backend counted whole runs only); ``step_input_ops`` likewise for ``input_ops``.
    """

    timesteps: int
    predictions: np.ndarray
    output: np.ndarray
    layer_spikes: dict[str, np.ndarray]
    layer_neurons: dict[str, int]
    synops: np.ndarray
    seconds: float = 0.0
    device: str = "cpu"
    spike_trains: dict[str, np.ndarray] | None = None
    potentials: np.ndarray | None = None
    layer_synops: dict[str, np.ndarray] = field(default_factory=dict)
    input_ops: np.ndarray | None = None
    step_synops: np.ndarray | None = None
    step_input_ops: np.ndarray | None = None
    input_frames: bool = False  # x was frames (N, T, *in), frame t at step t

    @property
    def samples(self) -> int:
        return int(self.predictions.shape[1])

    def accuracy_by_timestep(self, labels: Any) -> np.ndarray:
        """(T,) accuracy after each step t = 1..T: acc(t) = mean_n [prediction_t(n) = y_n].
        ``labels``: one integer class 0..K-1 per sample (a CompileError otherwise: a short,
        string or float label array would only give a wrong number)."""
        from snncompile import validate

        k = int(np.prod(self.output.shape[1:])) if self.output.ndim >= 2 else None
        y = validate.labels(labels, self.samples, k, "labels")
        return (self.predictions == y.reshape(1, -1)).mean(axis=1)

    def firing_rates(self) -> dict[str, float]:
        """Spikes per neuron per step, per layer (averaged over samples)."""
        return {k: float(v.mean()) / (self.layer_neurons[k] * self.timesteps)
                for k, v in self.layer_spikes.items()}

    def spikes_per_sample(self) -> float:
        return float(sum(v.mean() for v in self.layer_spikes.values()))

    @classmethod
    def concat(cls, parts: list[SimResult]) -> SimResult:
        """One result for the samples of ``parts`` in order (batches of one run, or the ranks'
        shards): every per-sample array is concatenated, so the merged result equals a single
        run on the concatenated input; ``seconds`` is the longest part's (parts run side by
        side under torchrun; a caller timing sequential batches sets it itself)."""
        parts = [p for p in parts if p is not None]
        if not parts:
            raise ValueError("SimResult.concat of nothing")
        if len(parts) == 1:
            return parts[0]
        first = parts[0]
        if any(p.timesteps != first.timesteps for p in parts):
            raise ValueError("SimResult.concat: parts with different T")
        trains = None
        if all(p.spike_trains is not None for p in parts):
            trains = {k: np.concatenate([p.spike_trains[k] for p in parts], axis=1)
                      for k in first.spike_trains}
        pots = None
        if all(p.potentials is not None for p in parts):
            pots = np.concatenate([p.potentials for p in parts], axis=1)
        def cat(name: str) -> np.ndarray | None:
            vals = [getattr(p, name) for p in parts]
            return None if any(v is None for v in vals) else np.concatenate(vals)

        def add(name: str) -> np.ndarray | None:
            vals = [getattr(p, name) for p in parts]
            return None if any(v is None for v in vals) else np.sum(vals, axis=0)

        return cls(
            timesteps=first.timesteps,
            predictions=np.concatenate([p.predictions for p in parts], axis=1),
            output=np.concatenate([p.output for p in parts]),
            layer_spikes={k: np.concatenate([p.layer_spikes[k] for p in parts])
                          for k in first.layer_spikes},
            layer_neurons=dict(first.layer_neurons),
            synops=np.concatenate([p.synops for p in parts]),
            seconds=max(p.seconds for p in parts), device=first.device,
            spike_trains=trains, potentials=pots,
            layer_synops={k: np.concatenate([p.layer_synops[k] for p in parts])
                          for k in first.layer_synops if all(k in p.layer_synops for p in parts)},
            input_ops=cat("input_ops"), step_synops=add("step_synops"),
            step_input_ops=add("step_input_ops"), input_frames=first.input_frames)


@runtime_checkable
class CompiledNetwork(Protocol):
    """What ``snncompile.compile`` returns on every target (gpu, loihi, the torch Loihi reference).

    ``run`` simulates x (N, *input shape) for ``timesteps`` (default: the compile options') and
    returns a ``SimResult`` (accuracy at every t ≤ T from one run); ``save`` writes the spiking IR
    and the backend's artefacts into a folder.
    """

    graph: Graph

    def run(self, x: np.ndarray, timesteps: int | None = None, *, record: bool = False,
            progress: bool = True) -> SimResult: ...

    def save(self, directory: str | Path) -> None: ...


def _np(a: Any) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


@dataclass
class Recorder:
    """The run loop's bookkeeping, shared by every backend.

    A backend feeds it, per piece of the batch it simulated: the readout potentials
    (``potentials``: (T, b, K)) and, per spiking layer, the messages each unit sent in the piece
    (``events``: (b, *shape), summed over steps; the neuron model's event rule — |s|, or one per
    nonzero graded delta — is the backend's) plus, with ``record``, the spike train itself.
    ``result`` assembles the ``SimResult``: spikes per sample and layer, synaptic operations per
    sample = Σ_layers Σ_units events · fan-out (per layer too, and per step where the backend
    hands ``per_step`` events); ``inputs`` counts the Input's graded messages × fan-out
    (``input_fanout``).
    """

    steps: int
    neurons: dict[str, int]  # spiking layer -> number of neurons
    fanouts: dict[str, np.ndarray]  # spiking layer -> synapses leaving each unit (flattened)
    record: bool = False
    t0: float = field(default_factory=time.perf_counter)
    _preds: list[np.ndarray] = field(default_factory=list)
    _outs: list[np.ndarray] = field(default_factory=list)
    _pots: list[np.ndarray] = field(default_factory=list)
    _counts: dict[str, list[np.ndarray]] = field(default_factory=dict)
    _synops: list[np.ndarray] = field(default_factory=list)
    _trains: dict[str, list[np.ndarray]] = field(default_factory=dict)
    _pending: np.ndarray | None = None
    _fan_t: dict[tuple[str, str], Tensor] = field(default_factory=dict)
    input_fanout: np.ndarray | None = None
    _layer_ops: dict[str, list[np.ndarray]] = field(default_factory=dict)
    _inputs: list[np.ndarray] = field(default_factory=list)
    _step_ops: np.ndarray | None = None
    _step_in: np.ndarray | None = None
    _per_step: bool = True
    frames: bool = False  # the input was frames, one per step (``SimResult.input_frames``)

    def potentials(self, pot: Any, keep: bool | None = None) -> None:
        """Readout potentials (T, b, ...) of the next ``b`` samples; ``keep`` (default
        ``record``) keeps them for ``SimResult.potentials``."""
        if isinstance(pot, torch.Tensor):
            pot = pot.flatten(2)
            self._preds.append(_np(pot.argmax(-1)))
            self._outs.append(_np(pot[-1]))
            if self.record if keep is None else keep:
                self._pots.append(_np(pot))
        else:
            pot = np.asarray(pot).reshape(*np.shape(pot)[:2], -1)
            self._preds.append(pot.argmax(-1))
            self._outs.append(pot[-1])
            if self.record if keep is None else keep:
                self._pots.append(pot)
        self._flush()
        self._pending = np.zeros(self._preds[-1].shape[1])

    def _fan(self, name: str, fan: np.ndarray, like: Any) -> Any:
        """Fan-out (1, units) float64, as a tensor on ``like``'s device (one copy per device)."""
        if not isinstance(like, torch.Tensor):
            return np.asarray(fan, np.float64).reshape(1, -1)
        key = (name, str(like.device))
        if key not in self._fan_t:
            self._fan_t[key] = torch.as_tensor(np.asarray(fan, np.float64),
                                               device=like.device).reshape(1, -1)
        return self._fan_t[key]

    def events(self, name: str, per_unit: Any, train: Any = None, *,
               per_step: Any = None) -> None:
        """Messages per unit (b, *shape) of layer ``name`` for the samples of the last
        ``potentials`` call; ``train`` (T, b, *shape) is kept when recording. ``per_step``
        (T, units): the messages of every step summed over the b samples (for the ops per
        step; without it the result has no ``step_synops``)."""
        if self._pending is None:
            raise RuntimeError("Recorder.events before Recorder.potentials")
        if isinstance(per_unit, torch.Tensor):
            pu = per_unit.to(torch.float64).flatten(1)
        else:
            pu = np.asarray(per_unit, np.float64).reshape(len(per_unit), -1)
        fan = self._fan(name, self.fanouts[name], pu)
        self._counts.setdefault(name, []).append(_np(pu.sum(1)))
        ops = _np((pu * fan).sum(1))
        self._pending += ops
        self._layer_ops.setdefault(name, []).append(ops)
        self._add_steps("_step_ops", name, per_step)
        if self.record and train is not None:
            self._trains.setdefault(name, []).append(_np(train))

    def _add_steps(self, attr: str, name: str, per_step: Any) -> None:
        if per_step is None:
            self._per_step = False
            return
        fan = self._fan(name, self.fanouts[name] if attr == "_step_ops" else self.input_fanout,
                        per_step)
        if isinstance(per_step, torch.Tensor):
            per_step = per_step.to(torch.float64).flatten(1)
        else:
            per_step = np.asarray(per_step, np.float64).reshape(len(per_step), -1)
        ops = _np((per_step * fan).sum(1))
        if len(ops) == 1 and self.steps > 1:  # a static input: the same every step
            ops = np.repeat(ops, self.steps)
        old = getattr(self, attr)
        setattr(self, attr, ops if old is None else old + ops)

    def inputs(self, x: Any, static: bool) -> None:
        """The Input's graded messages for the samples of the last ``potentials`` call: ``x``
        (b, *in) sent at every step (``static``) or (T, b, *in), one frame per step; input
        ops per sample = Σ_t Σ_units [x(t) ≠ 0] · fan-out (``input_fanout``)."""
        if self.input_fanout is None:
            return
        nz = x != 0  # bool: no float copy of a (T, b, *in) train
        b = nz.shape[0 if static else 1]
        per_unit = nz.reshape(b, -1) if static else nz.reshape(nz.shape[0], b, -1).sum(0)
        steps = nz.reshape(1 if static else nz.shape[0], b, -1).sum(1)  # (1 or T, units)
        if isinstance(nz, torch.Tensor):
            per_unit = per_unit.to(torch.float64)
        else:
            per_unit = per_unit.astype(np.float64)
        fan = self._fan("/input", self.input_fanout, per_unit)
        ops = _np((per_unit * fan).sum(1))
        self._inputs.append(ops * (self.steps if static else 1))
        self._add_steps("_step_in", "/input", steps)

    def totals(self, name: str, per_unit_total: np.ndarray, n: int) -> None:
        """Messages per unit of layer ``name`` summed over all ``n`` samples of the last
        ``potentials`` call (a counter that cannot tell samples apart): each sample gets the
        mean."""
        if self._pending is None:
            raise RuntimeError("Recorder.totals before Recorder.potentials")
        total = np.asarray(per_unit_total, np.float64).ravel()
        self._counts.setdefault(name, []).append(np.full(n, total.sum() / n))
        ops = float((total * self.fanouts[name].ravel()).sum()) / n
        self._pending += ops
        self._layer_ops.setdefault(name, []).append(np.full(n, ops))
        self._per_step = False

    def _flush(self) -> None:
        if self._pending is not None:
            self._synops.append(self._pending)
            self._pending = None

    def result(self, device: str, seconds: float | None = None) -> SimResult:
        self._flush()
        return SimResult(
            timesteps=self.steps,
            predictions=np.concatenate(self._preds, axis=1).astype(np.int64),
            output=np.concatenate(self._outs), synops=np.concatenate(self._synops),
            layer_spikes={n: np.concatenate(self._counts.get(n, [np.zeros(0)]))
                          for n in self.neurons},
            layer_neurons=dict(self.neurons),
            seconds=time.perf_counter() - self.t0 if seconds is None else seconds,
            device=device,
            spike_trains={n: np.concatenate(v, axis=1) for n, v in self._trains.items()}
            if self.record else None,
            potentials=np.concatenate(self._pots, axis=1) if self._pots else None,
            layer_synops={n: np.concatenate(v) for n, v in self._layer_ops.items()},
            input_ops=np.concatenate(self._inputs) if self._inputs else None,
            step_synops=self._step_ops if self._per_step and self._step_ops is not None
            else None,
            step_input_ops=self._step_in if self._inputs else None, input_frames=self.frames)


def batches(n: int, batch_size: int, *, desc: str, progress: bool = True,
            unit: str = "batch") -> Iterator[slice]:
    """Slices of ``range(n)`` of at most ``batch_size``, with a progress bar on a terminal."""
    from tqdm import tqdm

    bar = tqdm(total=(n + batch_size - 1) // batch_size, desc=desc, unit=unit, leave=False,
               disable=not progress or not sys.stderr.isatty())
    try:
        for i in range(0, n, batch_size):
            yield slice(i, min(n, i + batch_size))
            bar.update(1)
    finally:
        bar.close()


def as_source(ev: Any) -> Any:
    """A ``data.Source`` for ``ev`` (a Source already, or an in-memory ``data.Dataset``)."""
    from snncompile.data import Dataset, Source

    return Source.of(ev) if isinstance(ev, Dataset) else ev


def run_stream(net: Any, ev: Any, opts: Any, steps: int, *, ann: Graph | None = None,
               progress: bool = True) -> tuple[Any, np.ndarray, np.ndarray | None]:
    """Run ``net`` (a gpu ``CompiledNetwork``) and the ANN on every batch of ``ev`` (this rank's
    share under torchrun), gather the batches from all ranks in order. Returns the merged
    ``SimResult``, the labels and the ANN's predictions (None without ``ann``)."""
    import dataclasses

    from tqdm import tqdm

    from snncompile import distributed
    from snncompile.interp import run_ann

    src = as_source(ev)
    t0 = time.perf_counter()
    parts = []
    nb = (len(src) + opts.batch_size - 1) // opts.batch_size
    bar = tqdm(total=len(distributed.shard(nb)), desc="simulate", unit="batch", leave=False,
               disable=not progress or not distributed.is_main() or not sys.stderr.isatty())
    for b, x, y in src.batches(opts.batch_size):
        if opts.encoding == "poisson":
            net.options = dataclasses.replace(opts, seed=opts.seed + 7919 * b)
        r = net.run(x, steps, progress=False)
        ann_pred = (run_ann(ann, ann_input(net.graph, x), batch_size=opts.batch_size).reshape(
            len(x), -1).argmax(1) if ann is not None else None)
        parts.append((b, r, y, ann_pred))
        bar.update(1)
    bar.close()
    net.options = opts
    seconds = time.perf_counter() - t0
    gathered = sorted((p for rank_parts in distributed.all_gather(parts) for p in rank_parts),
                      key=lambda p: p[0])
    result = SimResult.concat([p[1] for p in gathered])
    result.seconds = max(distributed.all_gather(seconds))
    labels = np.concatenate([p[2] for p in gathered]) if all(
        p[2] is not None for p in gathered) else None
    preds = np.concatenate([p[3] for p in gathered]) if ann is not None else None
    return result, labels, preds


def run_steps(graph: Graph, x: np.ndarray, timesteps: int | None, default: int, *,
              pieces: Callable[[int], float] | None = None, record: bool = False) -> int:
    """The number of steps a ``run`` simulates (``timesteps``, else ``default``), after checking
    it and that ``x`` fits the graph's input (a finite numeric array; ``snncompile.validate``)
    and the run's memory estimate; every problem is a one-line CompileError. ``timesteps=0``
    is an error (not "the default"), and so are 2.7, ``True`` and a list for ``x``.
    ``pieces(steps)``: the bytes of the pieces a simulator that fits its memory budget will
    hold (``memory.run_memory``); else 256 samples' state."""
    from snncompile import memory, validate
    from snncompile.options import bounds

    lo, hi = bounds("timesteps")  # the option's declaration
    steps = validate.integer(default if timesteps is None else timesteps, "timesteps",
                             minimum=lo, maximum=hi)
    if is_frames(graph, x):  # (N, T, *in): frame t at step t (event data)
        if x.shape[1] != steps:
            raise CompileError("frames do not fit the run", [Diagnostic(
                f"x has {x.shape[1]} frames per sample (N, T, ...) for a run of {steps} steps",
                hint="bin the events into as many frames as --timesteps")])
        x = x.reshape(-1, *x.shape[2:])
    validate.samples(x, "x", shape=graph.shape(graph.input_name),
                     channels_last=reads_channels_last(graph))
    need = memory.run_memory(len(x), steps, validate.graph_units(graph), 256,
                               validate.classes(graph) or 1, record,
                               pieces=None if pieces is None else pieces(steps))
    validate.check_memory(need,
                          f"running {len(x)} samples for {steps} steps",
                          hint="fewer samples or steps per call")
    return steps


def is_frames(graph: Graph, x: Any) -> bool:
    """Whether ``x`` is a batch of frame sequences (N, T, *input shape), one frame per step
    (binned event data, ``snncompile.events``), rather than samples (N, *input shape)."""
    return isinstance(x, np.ndarray) and x.ndim == len(graph.shape(graph.input_name)) + 2


def ann_input(graph: Graph, x: np.ndarray) -> np.ndarray:
    """What the ANN reads for ``x``: the mean of frame sequences (N, T, *in) over T (the summed
    event frame, ``snncompile.events``), else ``x``."""
    if not is_frames(graph, x):
        return x
    from snncompile.events import summed

    return summed(x)


def column_nonzeros(w: np.ndarray, chunk_bytes: int = 16 * 2**20) -> np.ndarray:
    """Nonzero weights in each column of a dense weight matrix w (out, in): the synapses each
    input unit drives (int64, (in,)). Counted a block of rows at a time, so that no mask the
    size of w exists (vgg11_bn's first dense layer, 25088 × 4096, held a 0.8 GB float64 mask)."""
    counts = np.zeros(w.shape[1], np.int64)
    rows = max(1, chunk_bytes // max(w.shape[1], 1))
    for i in range(0, w.shape[0], rows):
        counts += np.count_nonzero(w[i:i + rows], axis=0)
    return counts


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when torch sees a GPU, else CPU; ``cuda`` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise CompileError("no CUDA device", [Diagnostic("--device cuda, but torch sees no GPU",
                                                         hint="use --device auto or cpu")])
    return torch.device(device)


@contextmanager
def float32_math(tf32: bool = False) -> Iterator[None]:
    """Float32 convolutions and matrix products in IEEE float32 (``tf32=False``) or TF32 while
    the block runs; the caller's settings come back after it.

    On Ampere and later GPUs torch runs cuDNN's float32 convolutions on TF32 tensor cores by
    default: inputs rounded to 11 significant bits. A spiking simulation thresholds its currents,
    so such rounding flips the spikes of neurons near θ and a CUDA run then differs from the CPU's
    (measured on an H200: the digits CNN, T=16, one test image of 540 and 1e-4 of the spikes),
    and the bit-exact Loihi reference, whose float32 products of integer weights and graded
    payloads are exact below 2^24 only in IEEE float32, stops being exact. CPU kernels ignore
    these settings."""
    conv = getattr(getattr(torch.backends.cudnn, "conv", None), "fp32_precision", None)
    if conv is None:  # torch < 2.9: the legacy flags
        old = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = tf32
        try:
            yield
        finally:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old
        return
    mm = torch.backends.cuda.matmul.fp32_precision
    want = "tf32" if tf32 else "ieee"
    torch.backends.cudnn.conv.fp32_precision = torch.backends.cuda.matmul.fp32_precision = want
    try:
        yield
    finally:
        torch.backends.cudnn.conv.fp32_precision = conv
        torch.backends.cuda.matmul.fp32_precision = mm


#: the binary gate compares spike counts m instead of the scores round(θ·m): the same order
#: while m < 2^21 (θ·m and θ·(m+1) then round to different floats, float32 or float64); a longer
#: run goes on with the float64 scores (``maxpool_gate``)
GATE_COUNT_STEPS = 2**21


def maxpool_gate(op: MaxPool2d, x: Tensor, carry: dict[str, Tensor] | None = None, *,
                 counts: bool = False, theta: Tensor | None = None) -> Tensor:
    """Spiking max-pool gate on x (T, B, C, H, W) -> (T, B, C, H', W'): per window and step t,
    pass x(t) of the unit whose cumulative input Σ_{τ≤t} x(τ) is largest (ties: the first unit
    of the window).

    The cumulative sums are accumulated in float64 and rounded to x's dtype (what torch's CPU
    cumsum does for float32 internally), so that a run in time chunks, which carries the float64
    sums of the steps before in ``carry["score"]``, compares exactly the same scores as one run
    over all T steps. ``counts``: x is an integer multiple of one positive θ per channel (a
    spiking layer's θ·s); every float64 partial sum is then exact (|m|·θ < 2^53), so the carry
    is added after the chunk's own sums (no concatenated copy).

    ``theta`` (θ > 0 per channel, shape (C, 1, 1) or (1, 1, 1)): x = θ·s with binary spikes
    s ∈ {0, 1} (if, if-hard, bistable). A window's units share θ, and for spike counts
    m < 2^21 the score round(θ·m) is strictly increasing in m (θ·(m+1) − θ·m = θ is more than
    twice the float32 spacing at θ·m, at most 2^-23·θ·m < θ/4), so comparing the counts m picks the
    same unit, ties included; the gate then needs no float64 and carries ``carry["count"]``
    (float32, exact below 2^24) and ``carry["t"]`` (steps so far). Windows that tile the plane
    (stride = kernel, no padding or dilation; VGG's 2×2/2) compare one float32 key per unit
    and step, 2K·m + 2(K−1−k) + s(t) for the unit at row-major position k of its K-unit
    window: the window's largest key is the unit with the largest count, the first on ties,
    and its parity is that unit's spike, so the output is θ·(key mod 2) (keys < 2^24: exact).
    Other windows max-pool the counts and gather x. Without autograd only (with it, x's
    gradient flows through the gather of the general path)."""
    if theta is not None and carry is not None and "score" in carry:
        theta = None  # a long run already went over to the float64 scores
    if theta is not None and not (torch.is_grad_enabled()
                                  and (x.requires_grad or theta.requires_grad)):
        out = _binary_gate(op, x, carry, theta)
        if out is not None:
            return out
    if carry is not None and "count" in carry:  # from counts to the float64 scores Σ θ·s
        assert theta is not None
        carry["score"] = carry.pop("count").to(torch.float64) * theta.to(torch.float64)
        carry.pop("t", None)
    steps, batch = x.shape[:2]
    flat = x.flatten(0, 1)
    if carry is not None and "score" in carry and counts:
        acc = torch.cumsum(x.detach(), 0, dtype=torch.float64).add_(carry["score"])
    elif carry is not None and "score" in carry:
        acc = torch.cat([carry["score"].unsqueeze(0), x.detach().to(torch.float64)])
        acc = torch.cumsum(acc, 0)[1:]
    else:
        acc = torch.cumsum(x.detach(), 0, dtype=torch.float64)
    if carry is not None:
        carry["score"] = acc[-1].clone()
    score = acc.to(x.dtype).flatten(0, 1)
    del acc
    score = pad2d(score, op.padding, float("-inf"))
    flat = pad2d(flat, op.padding, 0.0)
    # max_pool2d keeps the first maximum of a window (strict > while scanning), i.e. ties go to
    # the first unit in row-major order; its indices point into the (padded) H·W plane
    _, idx = F.max_pool2d(score, op.kernel, op.stride, 0, op.dilation, return_indices=True)
    out = torch.gather(flat.flatten(2), 2, idx.flatten(2)).reshape(idx.shape)
    return out.reshape(steps, batch, *idx.shape[1:])


def _binary_gate(op: MaxPool2d, x: Tensor, carry: dict[str, Tensor] | None,
                 theta: Tensor) -> Tensor | None:
    """``maxpool_gate`` on binary spikes by their counts; None where the counts could reach
    ``GATE_COUNT_STEPS`` or θ is not one positive normal float per channel."""
    steps, batch, c, h, w = x.shape
    done = int(carry.get("t", 0)) if carry is not None else 0
    info = torch.finfo(x.dtype)
    if (done + steps >= GATE_COUNT_STEPS or theta.dim() > 3 or theta.shape[-2:] != (1, 1)
            or not info.tiny <= float(theta.min()) <= float(theta.max())
            < info.max / GATE_COUNT_STEPS):
        return None
    if carry is not None and "count" in carry:
        m = carry["count"]
    else:
        m = torch.zeros((batch, c, h, w), dtype=torch.float32, device=x.device)
    k = op.kernel[0] * op.kernel[1]
    keys_exact = 2 * k * (done + steps + 1) <= 2**24
    theta = theta.to(x.dtype)
    out = (_tile_gate(op, x, m, theta) if tiles(op) and keys_exact else _count_gate(op, x, m))
    if carry is not None:
        carry["count"] = m
        carry["t"] = done + steps
    return out


def _tile_gate(op: MaxPool2d, x: Tensor, m: Tensor, theta: Tensor) -> Tensor:
    """Tiling windows: the float32 keys of ``maxpool_gate``, step by step into reused buffers
    (the plane's rows and columns beyond the last whole window are in no window). Updates the
    counts m in place."""
    steps, batch, c, h, w = x.shape
    (kh, kw), k = op.kernel, op.kernel[0] * op.kernel[1]
    ho, wo = h // kh, w // kw
    hc, wc = ho * kh, wo * kw
    prio = (2 * (k - 1) - 2 * torch.arange(k, dtype=torch.float32, device=x.device)).reshape(
        kh, 1, kw).repeat(ho, 1, wo).reshape(hc, wc)
    z = m[..., :hc, :wc] * (2 * k) + prio  # 2K·m + 2(K−1−k): even, distinct within a window
    bit = torch.empty_like(z)
    key = torch.empty_like(z)
    rows = torch.empty((batch, c, ho, wc), dtype=torch.float32, device=x.device)
    best = torch.empty((batch, c, ho, wo), dtype=torch.float32, device=x.device)
    spike = torch.empty((batch, c, ho, wo), dtype=torch.int32, device=x.device)
    out = torch.empty((steps, batch, c, ho, wo), dtype=x.dtype, device=x.device)
    for t in range(steps):
        torch.ne(x[t, :, :, :hc, :wc], 0, out=bit)
        z.add_(bit, alpha=2 * k)
        torch.add(z, bit, out=key)
        tile_max(key, op.kernel, rows, best)
        spike.copy_(best).bitwise_and_(1)  # the winner's s(t): the key's parity
        torch.mul(spike, theta, out=out[t])
    m[..., :hc, :wc] = z.sub_(prio).div_(2 * k)
    return out


def _count_gate(op: MaxPool2d, x: Tensor, m: Tensor) -> Tensor:
    """Any windows: max-pool the float32 counts (first maximum on ties), gather x. Updates the
    counts m in place."""
    steps, batch = x.shape[:2]
    acc = torch.empty(x.shape, dtype=torch.float32, device=x.device)
    torch.ne(x, 0, out=acc)
    acc[0].add_(m)
    for t in range(1, steps):
        acc[t].add_(acc[t - 1])
    m.copy_(acc[-1])
    score = pad2d(acc.flatten(0, 1), op.padding, float("-inf"))
    del acc
    flat = pad2d(x.flatten(0, 1), op.padding, 0.0)
    _, idx = F.max_pool2d(score, op.kernel, op.stride, 0, op.dilation, return_indices=True)
    out = torch.gather(flat.flatten(2), 2, idx.flatten(2)).reshape(idx.shape)
    return out.reshape(steps, batch, *idx.shape[1:])
