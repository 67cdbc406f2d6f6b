"""Compile a spiking IR into a torch simulator and run it (``--target gpu``).

Semantics (DESIGN.md): ops run in topological order; each op's synaptic current is computed for
all T steps in one batched op on (T·B, ...) tensors (``lowerings``), then a spiking layer runs its
neuron model's scan over T (``neurons``) and emits θ·s(t). Direct coding feeds x every step, so
the first layer's current is computed once and broadcast over T ("static" values); Poisson coding
feeds Bernoulli(clip(x, 0, 1)) spikes, seeded by ``options.seed``. The readout (the op feeding
Output) integrates: potential(t) = Σ_{τ≤t} I(τ); the prediction at t is argmax potential(t), so
one run gives the accuracy at every t ≤ T.

Counts per spiking layer: spikes per sample, firing rate = spikes / (neurons·T), and synaptic
operations per sample = Σ_units spikes(unit) · fan-out(unit) (``lowerings.fanout``, exact
synapse counts through pools and flatten).

``SpikingNetwork`` is a ``torch.nn.Module``: ``forward(x, steps)`` returns the readout potentials
(T, B, K) and runs under autograd when asked (weights are buffers; ``spike`` is the neuron
nonlinearity, replaceable by a surrogate for training). ``GpuNetwork`` wraps it with batching,
device placement, counting and numpy results (``SimResult``).
"""

from __future__ import annotations

import inspect
import json
import logging
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from snncompile.backends.common import (
    Recorder,
    SimResult,
    batches,
    float32_math,
    is_frames,
    resolve_device,
    run_steps,
)
from snncompile.backends.gpu.lowerings import fanout, lower
from snncompile.backends.gpu.neurons import SpikeFn, get_model, heaviside
from snncompile.interp import standard_layout
from snncompile.ir.diagnostics import CompileError, Diagnostic
from snncompile.ir.graph import Graph
from snncompile.ir.nodes import Input, Layer, Output
from snncompile.memory import (
    Footprint,
    Pieces,
    budget_bytes,
    current_bytes,
    footprint,
    piece_bytes,
    plan_pieces,
)
from snncompile.options import CompileOptions

Tensor = torch.Tensor
log = logging.getLogger("snncompile")
#: state tensors each built-in model carries across time chunks (for the memory estimate)
_STATE_TENSORS = {"if": 1, "if-hard": 1, "signed-if": 2, "gn": 1, "bistable": 2,
                  "sigma-delta": 1}
#: CPU: the largest (T·b, ...) value one simulated piece of a batch holds (GpuNetwork.plan)
CPU_CHUNK_BYTES = 16 * 2**20


# ------------------------------------------------------------------------------ torch module
def _key(i: int, name: str) -> str:
    return f"{i:03d}_" + re.sub(r"[^A-Za-z0-9_]", "_", name)


class SpikingNetwork(nn.Module):
    """The spiking IR as a torch module (see the module docstring for the semantics).

    ``forward(x, steps)`` takes x (B, *in) (direct coding, static) or (T, B, *in) (an input
    spike train) and returns the readout potentials (T, B, K). ``simulate`` also returns the
    spike tensors s (T, B, *shape) of every spiking layer.
    """

    def __init__(self, graph: Graph, dtype: torch.dtype = torch.float32,
                 spike: SpikeFn = heaviside) -> None:
        super().__init__()
        self.graph = graph
        self.spike = spike
        self.dtype = dtype
        self.tf32 = False  # IEEE float32 on CUDA (``float32_math``); GpuNetwork: options.tf32
        self.order: list[str] = []
        self.inputs: dict[str, list[str]] = {}
        self.keys: dict[str, str] = {}
        self.ops = nn.ModuleDict()
        self.neurons: dict[str, Any] = {}  # name -> (NeuronModel, alpha, members)
        self.input_name = graph.input_name
        self.readout = graph.readout_name
        problems: list[Diagnostic] = []
        for i, (name, op) in enumerate(graph.topo()):
            self.order.append(name)
            self.inputs[name] = graph.inputs(name)
            if isinstance(op, Input):
                continue
            key = _key(i, name)
            self.keys[name] = key
            try:
                self.ops[key] = lower(name, op, dtype)
            except CompileError as e:
                problems.extend(e.diagnostics)
                continue
            if isinstance(op, Layer) and op.neuron is not None:
                try:
                    model = get_model(op.neuron.model, node=name, origin=op.origin or None)
                except CompileError as e:
                    problems.extend(e.diagnostics)
                    continue
                shape = graph.shape(name)
                theta = torch.as_tensor(op.neuron.threshold.astype(np.float64)).to(dtype)
                theta = theta.reshape((-1,) + (1,) * (len(shape) - 1))
                self.register_buffer(f"theta_{key}", theta)
                self.neurons[name] = (model, float(op.neuron.alpha), int(op.neuron.members))
        if problems:
            raise CompileError("cannot compile for the gpu target", problems)
        # index in ``order`` of each value's last reader: ``simulate`` drops a value after it
        self.last_use = {i: k for k, n in enumerate(self.order) for i in self.inputs[n]}
        #: gate -> the binary spiking layer feeding it: the gate gets its θ (``maxpool_gate``)
        self.gate_theta: dict[str, str] = {}
        for name in self.order:  # gates fed by integer spikes θ·s, θ > 0: exact float64 sums
            mod = self.ops[self.keys[name]] if name in self.keys else None
            src = self.inputs[name][0] if self.inputs[name] else None
            if getattr(mod, "stateful", False) and src in self.neurons:
                model = self.neurons[src][0]
                theta = getattr(self, f"theta_{self.keys[src]}")  # the buffer: θ at build
                mod.counts = model.integer and bool((theta > 0).all())
                if mod.counts and model.binary and spike is heaviside:
                    self.gate_theta[name] = src
        self.readers: dict[str, list[str]] = {}
        for n in self.order:
            for i in self.inputs[n]:
                self.readers.setdefault(i, []).append(n)

    @property
    def chunkable(self) -> bool:
        """Time chunks need every neuron scan to carry its state (``simulate``)."""
        return all("state" in inspect.signature(m.scan).parameters
                   for m, _, _ in self.neurons.values())

    def theta(self, name: str) -> Tensor:
        return getattr(self, f"theta_{self.keys[name]}")

    def simulate(self, x: Tensor, steps: int, *,
                 on_spikes: Callable[[str, Tensor], None] | None = None,
                 chunk: int | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """Returns (readout potentials (T, B, K), {spiking layer: s (T, B, *shape)}).

        With ``on_spikes``, each layer's s is handed to ``on_spikes(name, s)`` as soon as it is
        computed and not kept (the dict comes back empty; without autograd s is then scaled to
        θ·s in place): memory holds the live layers only, not every spike train at once.

        ``chunk``: simulate the T steps in time chunks of at most this many steps (default: all
        T at once). Every layer runs a chunk, then the next chunk starts from the state the
        previous one left: each neuron's v (and its model's extra state), each MaxPool gate's
        cumulative scores, the readout's potential; static values (the constant current of a
        direct-coded input) are computed once and kept. Peak memory then grows with the chunk,
        not with T, and the spikes equal those of one T-step run bit for bit. ``on_spikes``
        then receives each layer's s chunk by chunk, in time order. A network with a neuron
        model whose scan carries no state (``chunkable`` False) runs all T at once.
        """
        from snncompile.backends.memory import too_large_on_oom

        what = f"simulating {x.shape[-len(self.graph.shape(self.input_name)) - 1]} samples " \
               f"for T={steps}"
        with float32_math(self.tf32), too_large_on_oom(what):
            return self._simulate(x, steps, on_spikes, chunk)

    def _simulate(self, x: Tensor, steps: int,
                  on_spikes: Callable[[str, Tensor], None] | None,
                  chunk: int | None) -> tuple[Tensor, dict[str, Tensor]]:
        n_in = len(self.graph.shape(self.input_name)) + 1
        static = x.dim() == n_in
        x = standard_layout(x)  # the first convolution's kernel must not depend on strides
        if chunk is None or not self.chunkable:
            chunk = steps
        chunk = max(1, min(int(chunk), steps))
        state: dict[str, dict[str, Any]] = {}
        kept: dict[str, Tensor] = {}  # static currents, computed on the first chunk
        pots: list[Tensor] = []
        parts: dict[str, list[Tensor]] = {}
        for t0 in range(0, steps, chunk):
            n = min(chunk, steps - t0)
            xin = x if static else x[t0:t0 + n]
            if xin.dtype == torch.bool:  # a Poisson spike train: 0/1 in the network's dtype
                xin = xin.to(self.dtype)
            pot, spikes = self._chunk(xin, static, t0, n,
                                      state, kept, on_spikes, last=t0 + n >= steps)
            if t0 == 0:  # keep the static values a later chunk reads again
                for name in [m for m in kept if m not in self.neurons and m != self.readout]:
                    if all(r in kept for r in self.readers.get(name, [])):
                        del kept[name]
            pots.append(pot)
            for k, v in spikes.items():
                parts.setdefault(k, []).append(v)
        if len(pots) == 1:
            return pots[0], {k: v[0] for k, v in parts.items()}
        return torch.cat(pots), {k: torch.cat(v) for k, v in parts.items()}

    def _chunk(self, x: Tensor, static: bool, t0: int, steps: int,
               state: dict[str, dict[str, Any]], kept: dict[str, Tensor],
               on_spikes: Callable[[str, Tensor], None] | None,
               last: bool) -> tuple[Tensor, dict[str, Tensor]]:
        """Steps t0 .. t0+steps-1 of every layer (``simulate``)."""
        batch = x.shape[0] if static else x.shape[1]
        first = t0 == 0
        # value per op: (tensor, static?) — static (B, ...), dynamic (steps·B, ...)
        vals: dict[str, tuple[Tensor, bool]] = {
            self.input_name: (x, True) if static else (x.flatten(0, 1), False)}
        spikes: dict[str, Tensor] = {}
        for k, name in enumerate(self.order):
            if name == self.input_name:
                continue
            if name in kept:  # a static value of an earlier chunk
                cur, all_static = kept[name], True
            else:
                ins = [vals[i] for i in self.inputs[name]]
                all_static = all(s for _, s in ins)
                xs = [v if s == all_static else _expand(v, steps) for v, s in ins]
                mod = self.ops[self.keys[name]]
                if getattr(mod, "stateful", False) and not all_static:
                    st = state.setdefault(name, {})
                    src = self.gate_theta.get(name)
                    cur = (mod(xs, steps, st) if src is None else
                           mod(xs, steps, st, theta=self.theta(src)))
                else:
                    cur = mod(xs, None if all_static else steps)
                if all_static and first and not last:
                    kept[name] = cur
            if name in self.neurons:
                model, alpha, members = self.neurons[name]
                cur_t = (cur.unsqueeze(0).expand(steps, *cur.shape) if all_static
                         else cur.reshape(steps, batch, *cur.shape[1:]))
                theta = self.theta(name)
                st = state.setdefault(name, {}) if self.chunkable else None
                with _serial_on_cpu(cur_t):
                    s = (model.scan(cur_t, theta, alpha, members, self.spike, state=st)
                         if st is not None else
                         model.scan(cur_t, theta, alpha, members, self.spike))
                del cur, cur_t
                if on_spikes is None:
                    spikes[name] = s
                    emitted = s * theta
                else:
                    on_spikes(name, s)
                    emitted = s * theta if torch.is_grad_enabled() else s.mul_(theta)
                vals[name] = (emitted.flatten(0, 1), False)
            else:
                vals[name] = (cur, all_static)
            for i in self.inputs[name]:  # free what no later op reads
                if self.last_use.get(i) == k and i != self.readout:
                    vals.pop(i, None)
        out, st_out = vals[self.readout]
        if st_out:
            t = torch.arange(t0 + 1, t0 + steps + 1, dtype=out.dtype, device=out.device)
            pot = t.reshape(-1, *([1] * out.dim())) * out.unsqueeze(0)
        else:
            # Σ_{τ≤t} I(τ), accumulated in float64 and carried across chunks (torch's CPU
            # cumsum of float32 accumulates in float64 too: one chunk or many, the same values)
            acc = out.reshape(steps, batch, *out.shape[1:]).to(torch.float64)
            rd = state.setdefault(self.readout + "/readout", {})
            if "pot" in rd:
                acc = torch.cumsum(torch.cat([rd["pot"].unsqueeze(0), acc]), 0)[1:]
            else:
                acc = torch.cumsum(acc, 0)
            if not last:
                rd["pot"] = acc[-1]
            pot = acc.to(out.dtype)
        return pot, spikes

    def forward(self, x: Tensor, steps: int) -> Tensor:
        return self.simulate(x, steps)[0]

    @torch.no_grad()
    def final_potential(self, x: Tensor, steps: int,
                        memory_bytes: int | str | None = None) -> Tensor:
        """The readout's potential after ``steps`` steps, V(T) (B, K), of a static batch x (B,
        *in), simulated in the pieces ``GpuNetwork.run`` uses (``plan``): on the CPU a few
        samples at a time, so that the widest value stays in cache. The same V(T) as
        ``forward(x, steps)[-1]`` (each sample is simulated alone either way)."""
        pieces = self.plan(steps, len(x), memory_bytes)
        outs = [self.simulate(xc, steps, chunk=pieces.chunk)[0][-1]
                for xc in torch.split(x, pieces.batch)]
        return torch.cat(outs)

    def footprint(self, steps: int, record: bool = False) -> Footprint:
        """Bytes per sample and per (sample, step) row of a simulation (``memory.footprint``)."""
        itemsize = torch.finfo(self.dtype).bits // 8
        states = {n: _STATE_TENSORS.get(m[0].name, 2) for n, m in self.neurons.items()}
        return footprint(self.graph, self.order, self.inputs, states, itemsize,
                         record=record, steps=steps)

    def plan(self, steps: int, batch: int, memory_bytes: int | str | None = None,
             record: bool = False, device: torch.device | None = None) -> Pieces:
        """Samples simulated at once and the time chunk, from ``memory_bytes`` (a budget,
        ``snncompile.memory``). CPU: also at most ``CPU_CHUNK_BYTES`` in the widest value, so
        that the allocator reuses freed memory instead of mapping fresh pages for every op
        (page faults cost more than the arithmetic) and the scans work in cache."""
        itemsize = torch.finfo(self.dtype).bits // 8
        if device is None:  # where the module lives (a network without neurons: the CPU)
            device = next((b.device for b in self.buffers()), torch.device("cpu"))
        fp = self.footprint(steps, record)
        budget = budget_bytes(memory_bytes, device)
        held = current_bytes(device)
        cache = CPU_CHUNK_BYTES if device.type == "cpu" else None
        pieces = plan_pieces(fp, steps, batch, budget=budget, held=held, itemsize=itemsize,
                             cache_bytes=cache)
        if not self.chunkable and pieces.chunk < steps:
            pieces = Pieces(pieces.batch, steps)
        need = held + pieces.batch * (fp.sample_bytes + pieces.chunk * fp.row_bytes)
        if need > budget:
            log.warning("memory budget %.3g GB is below the estimated %.3g GB of one sample "
                        "and one step (the process holds %.3g GB)", budget / 1e9, need / 1e9,
                        held / 1e9)
        return pieces


@contextmanager
def _serial_on_cpu(x: Tensor) -> Iterator[None]:
    """Run a neuron scan on one CPU thread. A scan is T small element-wise steps per layer; each
    step in parallel costs an OpenMP barrier, and when other processes share the cores a barrier
    costs milliseconds (measured: a 2-thread VGG run 5x slower than a 1-thread one). Results do
    not depend on the thread count (element-wise ops)."""
    n = torch.get_num_threads()
    if x.device.type != "cpu" or n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _expand(v: Tensor, steps: int) -> Tensor:
    return v.unsqueeze(0).expand(steps, *v.shape).flatten(0, 1)


# ------------------------------------------------------------------------------ compiled network
@dataclass
class GpuNetwork:
    """The compiled network of ``--target gpu``: ``run(x, timesteps)`` and ``save(dir)``."""

    graph: Graph
    options: CompileOptions
    dtype: torch.dtype = torch.float32
    module: SpikingNetwork = field(init=False)
    device: torch.device = field(init=False)
    fanouts: dict[str, Tensor] = field(init=False)

    def __post_init__(self) -> None:
        self.device = resolve_device(self.options.device)
        self.module = SpikingNetwork(self.graph, self.dtype).to(self.device)
        self.module.tf32 = self.options.tf32
        self.fanouts = {n: fanout(self.graph, n) for n in self.module.neurons}
        with float32_math(self.options.tf32):  # the conv precision of the run, here too
            self.input_fanout = fanout(self.graph, self.graph.input_name)
        self.pieces = Pieces(self.options.batch_size, self.options.timesteps)  # of the last run

    @torch.no_grad()
    def run(self, x: np.ndarray, timesteps: int | None = None, *, record: bool = False,
            progress: bool = True) -> SimResult:
        """Simulate ``x`` (N, *input shape) for ``timesteps`` (default options.timesteps), in
        pieces of b samples × time chunks of Tc steps that fit ``options.memory_budget``
        (``plan``; the spikes do not depend on the pieces)."""
        steps = run_steps(self.graph, x, timesteps, self.options.timesteps, record=record,
                          pieces=lambda t: self.plan_bytes(
                              t, min(len(x), self.options.batch_size), record=record))
        batch = min(len(x), self.options.batch_size)
        gen = torch.Generator(device=self.device).manual_seed(self.options.seed)
        rec = Recorder(steps, {n: int(np.prod(self.graph.shape(n))) for n in self.module.neurons},
                       self.fanouts, record, input_fanout=self.input_fanout)
        pieces = self.plan(steps, batch, record=record)
        self.pieces = pieces
        frames = rec.frames = is_frames(self.graph, x)  # (N, T, *in): one frame per step
        poisson = self.options.encoding == "poisson"
        if frames and poisson:
            raise CompileError("event frames are the input current", [Diagnostic(
                "--encoding poisson draws spikes from a static image; frames are sent as they "
                "are", hint="use --encoding direct with event data")])
        for sl in batches(len(x), self.options.batch_size, desc="simulate", progress=progress):
            xb = torch.from_numpy(np.ascontiguousarray(x[sl])).to(self.device, self.dtype)
            if frames:
                xb = xb.transpose(0, 1)  # (T, b, *in), as simulate reads a train
            if poisson:  # drawn for the whole batch at once, in the order of an unsplit run
                p = xb.clamp(0.0, 1.0).unsqueeze(0).expand(steps, *xb.shape)
                # kept as bool (1 byte per input unit and step); simulate converts each chunk
                xb = torch.rand(p.shape, generator=gen, device=self.device, dtype=self.dtype) < p
            for xc in torch.split(xb, pieces.batch, dim=1 if poisson or frames else 0):
                self._piece(xc, steps, pieces.chunk, rec, record)
        return rec.result(str(self.device))

    def _piece(self, xc: Tensor, steps: int, chunk: int, rec: Recorder, record: bool) -> None:
        """Simulate one piece of a batch and feed the Recorder (counts summed over chunks)."""
        per_unit: dict[str, Tensor] = {}
        per_step: dict[str, list[Tensor]] = {}
        trains: dict[str, list[Tensor]] = {}
        prev: dict[str, Tensor] = {}

        def consume(name: str, s: Tensor) -> None:
            model = self.module.neurons[name][0]
            # (b, *shape) messages per unit: |s| (GN member spikes, signed spikes), or one per
            # nonzero graded delta (sigma-delta); SOPs = messages × fan-out. The sums are
            # small integers, exact in s's dtype (float32: up to 2^24).
            if model.events is torch.abs:
                # |s| = s needs no (T, b, ...) temporary when no spike is negative
                ev = s if bool(s.min() >= 0) else s.abs()
            elif name in prev:  # an event rule may compare with the step before the chunk
                ev = model.events(torch.cat([prev[name], s]))[1:]
            else:
                ev = model.events(s)
            if model.events is not torch.abs and chunk < steps:
                prev[name] = s[-1:].clone()
            # per chunk in s's dtype (counts ≤ chunk·M: exact), accumulated in float64
            total = ev.sum(0).to(torch.float64)
            per_unit[name] = total if name not in per_unit else per_unit[name].add_(total)
            # messages of every step summed over the piece (counts ≤ b·M: exact in float32)
            per_step.setdefault(name, []).append(ev.flatten(2).sum(1).to(torch.float64))
            if record:  # a copy: s becomes θ·s in place after this
                trains.setdefault(name, []).append(
                    s.to(torch.int8 if model.integer else torch.float32, copy=True).cpu())

        pot, _ = self.module.simulate(xc, steps, on_spikes=consume, chunk=chunk)
        rec.potentials(pot)
        rec.inputs(xc, static=xc.dim() == len(self.graph.shape(self.graph.input_name)) + 1)
        for name, pu in per_unit.items():
            rec.events(name, pu, torch.cat(trains[name]) if record else None,
                       per_step=torch.cat(per_step[name]))

    def plan_bytes(self, steps: int, batch: int, *, record: bool = False) -> int:
        """Bytes the pieces ``plan`` picks will allocate (``memory.piece_bytes``)."""
        return piece_bytes(self.module.footprint(steps, record),
                           self.plan(steps, batch, record=record))

    def plan(self, steps: int, batch: int, *, record: bool = False) -> Pieces:
        """The pieces of a run under ``options.memory_budget`` (``SpikingNetwork.plan``)."""
        return self.module.plan(steps, batch, self.options.memory_bytes, record, self.device)

    def save(self, directory: str | Path) -> None:
        """Write the spiking IR (ir.json + ir.npz) and gpu.json (how to rebuild this network);
        with ``options.export == "nir"`` also ``network.nir``."""
        from snncompile.ir.serialize import prepare_dir, save

        # never overwrites a file it did not write (``prepare_dir``)
        d = prepare_dir(directory, ("ir.json", "ir.npz", "gpu.json", "network.nir"))
        save(self.graph, d)
        info = {"target": "gpu", "dtype": str(self.dtype),
                "device": str(self.device), "timesteps": self.options.timesteps,
                "encoding": self.options.encoding, "seed": self.options.seed,
                "neurons": {n: m[0].name for n, m in self.module.neurons.items()}}
        (d / "gpu.json").write_text(json.dumps(info, indent=1) + "\n")
        if self.options.export == "nir":
            from snncompile.backends.nir_export import export_nir

            export_nir(self.graph, d / "network.nir")


def compile(graph: Graph, options: CompileOptions | None = None, *,
            dtype: torch.dtype = torch.float32) -> GpuNetwork:
    """Spiking IR -> ``GpuNetwork`` (a ``CompiledNetwork``). The bit-exact Loihi arithmetic is
    the loihi target's own torch reference (``snncompile.backends.loihi.compile_reference``)."""
    options = options or CompileOptions()
    if options.export == "nir":  # refuse before anything runs
        from snncompile.backends.nir_export import refuse_unexportable

        refuse_unexportable(graph)
    if graph.readout_name is None or isinstance(graph.op(graph.readout_name), Output):
        raise CompileError("the graph has no readout", [Diagnostic("Output has no input")])
    return GpuNetwork(graph, options, dtype=dtype)
