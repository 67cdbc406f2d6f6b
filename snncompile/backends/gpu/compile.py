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

import json
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
    resolve_device,
    run_steps,
)
from snncompile.backends.gpu.lowerings import fanout, lower
from snncompile.backends.gpu.neurons import SpikeFn, get_model, heaviside
from snncompile.ir.diagnostics import CompileError, Diagnostic
from snncompile.ir.graph import Graph
from snncompile.ir.nodes import Input, Layer, Output
from snncompile.options import CompileOptions

Tensor = torch.Tensor
#: CPU: the largest (T·b, ...) value one simulated piece of a batch holds (GpuNetwork._chunks)
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

    def theta(self, name: str) -> Tensor:
        return getattr(self, f"theta_{self.keys[name]}")

    def simulate(self, x: Tensor, steps: int, *,
                 on_spikes: Callable[[str, Tensor], None] | None = None,
                 ) -> tuple[Tensor, dict[str, Tensor]]:
        """Returns (readout potentials (T, B, K), {spiking layer: s (T, B, *shape)}).

        With ``on_spikes``, each layer's s is handed to ``on_spikes(name, s)`` as soon as it is
        computed and not kept (the dict comes back empty; without autograd s is then scaled to
        θ·s in place): memory holds the live layers only, not every spike train at once.
        """
        n_in = len(self.graph.shape(self.input_name)) + 1
        static = x.dim() == n_in
        batch = x.shape[0] if static else x.shape[1]
        # value per op: (tensor, static?) — static (B, ...), dynamic (T·B, ...)
        vals: dict[str, tuple[Tensor, bool]] = {
            self.input_name: (x, True) if static else (x.flatten(0, 1), False)}
        spikes: dict[str, Tensor] = {}
        for k, name in enumerate(self.order):
            if name == self.input_name:
                continue
            ins = [vals[i] for i in self.inputs[name]]
            all_static = all(s for _, s in ins)
            xs = [v if s == all_static else _expand(v, steps) for v, s in ins]
            cur = self.ops[self.keys[name]](xs, None if all_static else steps)
            if name in self.neurons:
                model, alpha, members = self.neurons[name]
                cur_t = (cur.unsqueeze(0).expand(steps, *cur.shape) if all_static
                         else cur.reshape(steps, batch, *cur.shape[1:]))
                theta = self.theta(name)
                with _serial_on_cpu(cur_t):
                    s = model.scan(cur_t, theta, alpha, members, self.spike)
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
        out, st = vals[self.readout]
        if st:
            t = torch.arange(1, steps + 1, dtype=out.dtype, device=out.device)
            pot = t.reshape(-1, *([1] * out.dim())) * out.unsqueeze(0)
        else:
            pot = torch.cumsum(out.reshape(steps, batch, *out.shape[1:]), 0)
        return pot, spikes

    def forward(self, x: Tensor, steps: int) -> Tensor:
        return self.simulate(x, steps)[0]


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
        self.fanouts = {n: fanout(self.graph, n) for n in self.module.neurons}
        # units of the widest value, for the CPU chunk size
        self.widest = max(int(np.prod(self.graph.shape(n))) for n, _ in self.graph.topo())

    @torch.no_grad()
    def run(self, x: np.ndarray, timesteps: int | None = None, *, record: bool = False,
            progress: bool = True) -> SimResult:
        """Simulate ``x`` (N, *input shape) for ``timesteps`` (default options.timesteps)."""
        steps = run_steps(self.graph, x, timesteps, self.options.timesteps)
        gen = torch.Generator(device=self.device).manual_seed(self.options.seed)
        rec = Recorder(steps, {n: int(np.prod(self.graph.shape(n))) for n in self.module.neurons},
                       self.fanouts, record)
        for sl in batches(len(x), self.options.batch_size, desc="simulate", progress=progress):
            xb = torch.from_numpy(np.ascontiguousarray(x[sl])).to(self.device, self.dtype)
            if self.options.encoding == "poisson":
                p = xb.clamp(0.0, 1.0).unsqueeze(0).expand(steps, *xb.shape)
                xb = (torch.rand(p.shape, generator=gen, device=self.device, dtype=self.dtype)
                      < p).to(self.dtype)
            for xc in self._chunks(xb, steps):
                per_unit: dict[str, tuple[Tensor, Tensor | None]] = {}

                def consume(name: str, s: Tensor) -> None:
                    model = self.module.neurons[name][0]
                    # (B, *shape) messages per unit: |s| (GN member spikes, signed spikes), or
                    # one per nonzero graded delta (sigma-delta); SOPs = messages × fan-out.
                    # The sums are small integers, exact in s's dtype (float32: up to 2^24).
                    # |s| = s needs no (T, B, ...) temporary when no spike is negative
                    nonneg = model.events is torch.abs and bool(s.min() >= 0)
                    ev = s if nonneg else model.events(s)
                    train = (s.to(torch.int8 if model.integer else torch.float32).cpu()
                             if record else None)
                    per_unit[name] = (ev.sum(0).to(torch.float64), train)

                pot, _ = self.module.simulate(xc, steps, on_spikes=consume)
                rec.potentials(pot)
                for name, (pu, train) in per_unit.items():
                    rec.events(name, pu, train)
        return rec.result(str(self.device))

    def _chunks(self, xb: Tensor, steps: int) -> list[Tensor]:
        """Split a batch (direct: (B, ...); spike train: (T, B, ...)) into the pieces simulated
        at once. CUDA: the whole batch. CPU: pieces whose widest (T·b, ...) value stays within
        ``CPU_CHUNK_BYTES``, so that the allocator reuses freed memory instead of mapping fresh
        pages for every op (page faults cost more than the arithmetic) and the scans work in
        cache. Samples are independent, so the results do not depend on the split."""
        axis = 0 if xb.dim() == len(self.graph.shape(self.graph.input_name)) + 1 else 1
        if self.device.type != "cpu":
            return [xb]
        per_sample = steps * self.widest * torch.finfo(self.dtype).bits // 8
        size = max(1, CPU_CHUNK_BYTES // max(per_sample, 1))
        return list(torch.split(xb, size, dim=axis))

    def save(self, directory: str | Path) -> None:
        """Write the spiking IR (ir.json + ir.npz) and gpu.json (how to rebuild this network);
        with ``options.export == "nir"`` also ``network.nir``."""
        from snncompile.ir.serialize import save

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
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
