"""The loihi target's bit-exact torch reference: Lava's ``fixed_pt`` arithmetic, in torch.

It runs the same ``LoihiPlan`` (``plan.py``, ``fixed.py``) that the Lava run builds, with integer
values held in float64 tensors (exact below 2^53), on CPU or CUDA. Per population B, per step,
the synaptic input is a = Σ_syn q · p_src(t) (conv: wrapped to 24 bits as Lava's Conv does; a
current max-pool population takes I(t) = M(t) − M(t−1) of the window max of its candidates'
cumulative integer a, ``snncompile.pooling``, exact); the
neuron dynamics are each model's ``simulate`` in ``neurons.py`` (the table of the loihi target);
the readout integrates v = clip(v + (a << 6) + bias) (prediction = argmax v); a graded
(sigma-delta) network decodes σ = clip(σ + (a << 6)) and reads v = clip(σ + bias) (as lava-dl
SDNN's Sigma readout). ``evaluate`` checks every Lava run against this, spike for spike.

Timing. Lava delays every synapse by one step and the plan aligns residual branches with delay
lines, so population B sees sample step τ at Lava step τ + depth(B). This simulator runs in
*effective* time (step τ of every population together); ``SimResult.spike_trains[name][τ-1]``
equals Lava's spikes at step k·T + τ + depth(name) for sample k (``LoihiNetwork.depths``).
``saturations`` counts the steps × neurons where the 24-bit state or current was clipped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from snncompile.backends.common import (
    Recorder,
    SimResult,
    batches,
    float32_math,
    is_frames,
    maxpool_gate,
    resolve_device,
    run_steps,
)
from snncompile.backends.loihi.fixed import ACT_SHIFT, NETX_GRID_EXP, STATE_MAX
from snncompile.backends.loihi.neurons import chan, wrap24
from snncompile.backends.loihi.plan import (
    LoihiPlan,
    build_plan,
    fanout,
    input_int,
    refuse_delta_frames,
)
from snncompile.ir.diagnostics import CompileError, Diagnostic
from snncompile.ir.graph import Graph
from snncompile.options import CompileOptions
from snncompile.pooling import cummax_current, window_max

Tensor = torch.Tensor


@dataclass
class LoihiNetwork:
    """Fixed-point Loihi simulator: ``run(x, timesteps)`` -> ``SimResult``; ``save(dir)``."""

    graph: Graph
    options: CompileOptions
    plan: LoihiPlan = field(init=False)
    device: torch.device = field(init=False)
    numeric: str = "loihi"

    def __post_init__(self) -> None:
        if self.options.encoding != "direct":
            raise CompileError("the loihi numeric mode needs direct input coding", [Diagnostic(
                f"encoding={self.options.encoding!r}", hint="use --encoding direct")])
        self.plan = build_plan(self.graph, grid_exp=NETX_GRID_EXP  # netx: delta >> 6
                               if self.options.export == "netx" else None)
        self.device = resolve_device(self.options.device)
        dev = self.device
        self._w = [torch.as_tensor(s.weight_int.astype(np.float64), device=dev)
                   for s in self.plan.syns]
        self.saturations: dict[str, int] = {}
        # largest |partial sum| of a synapse fed by spikes: Σ |q| over one output's fan-in
        self._bound = {id(s): float(np.abs(s.weight_int).reshape(s.weight_int.shape[0], -1)
                                    .sum(1).max()) * max(map(abs, self.plan.payload_range(s.src)))
                       if s.weight_int.size else 0.0 for s in self.plan.syns}

    @property
    def depths(self) -> dict[str, int]:
        return {n: p.depth for n, p in self.plan.pops.items()}

    def _current(self, vals: dict[str, Tensor], name: str) -> Tensor:
        """a (T·B or B, *shape) = Σ over synapses into ``name``."""
        total = None
        for s, w in zip(self.plan.syns, self._w):
            if s.dst != name:
                continue
            x = vals[s.src]
            # float32 is exact while every partial sum stays below 2^24 (binary spikes)
            if s.src != self.plan.input_name and self._bound[id(s)] < 2 ** 24:  # × payload
                x, w = x.to(torch.float32), w.to(torch.float32)
            if s.kind == "conv":
                a = wrap24(F.conv2d(x, w, None, s.stride, s.padding, s.dilation,
                                    s.groups).to(torch.float64))
            else:
                a = F.linear(x.flatten(1), w).to(torch.float64).reshape(
                    x.shape[0], *self.plan.pops[name].in_shape)
            total = a if total is None else total + a
        return total

    def _simulate(self, x_int: Tensor, steps: int) -> tuple[Tensor, dict[str, Tensor]]:
        plan, dev = self.plan, self.device
        batch = x_int.shape[0]
        vals: dict[str, Tensor] = {}
        static: dict[str, bool] = {}
        spikes: dict[str, Tensor] = {}
        pot = None
        frames = x_int.dim() == len(plan.pops[plan.input_name].shape) + 2
        if frames:  # (b, T, *in): frame t at step t
            batch = x_int.shape[0]
            x_int = x_int.transpose(0, 1).flatten(0, 1)
        for name, p in plan.pops.items():
            if p.kind == "input":
                vals[name], static[name] = x_int, not frames
                continue
            if p.kind == "maxpool":  # the gate of the float simulator, on this sample's spikes
                s = spikes[p.gate_src]
                vals[name] = maxpool_gate(p.gate, s).flatten(0, 1)
                static[name] = False
                continue
            srcs = {s.src for s in plan.synapses_into(name)}
            all_static = all(static[s] for s in srcs) and not plan.delta_coded
            ins = {s: (vals[s] if static[s] == all_static else _delta_code(vals[s], steps)
                       if plan.delta_coded else
                       vals[s].unsqueeze(0).expand(steps, *vals[s].shape).flatten(0, 1))
                   for s in srcs}
            a = self._current(ins, name)
            if p.pool is not None and all_static:  # M(t) = t·max a: I(t) = max a
                a = window_max(p.pool, a)
            a = (a.unsqueeze(0).expand(steps, *a.shape) if all_static
                 else a.reshape(steps, batch, *a.shape[1:]))
            if p.pool is not None and not all_static:  # integer sums in float64: exact
                a = cummax_current(p.pool, a)
            bias = chan(p.bias_state(), dev)
            if p.kind == "readout":
                sat = torch.zeros((), dtype=torch.float64, device=dev)
                v = torch.zeros((batch, *p.shape), dtype=torch.float64, device=dev)
                out = torch.empty((steps, batch, *p.shape), dtype=torch.float64, device=dev)
                sig = torch.zeros_like(v) if plan.delta_coded else None
                for t in range(steps):
                    if sig is not None:  # decode the deltas; the output is sigma + bias
                        sig.add_(a[t], alpha=2 ** ACT_SHIFT).clamp_(-STATE_MAX, STATE_MAX)
                        v.copy_(sig).add_(bias)
                    else:
                        v.add_(a[t], alpha=2 ** ACT_SHIFT).add_(bias)
                    sat += (v.abs() > STATE_MAX).sum()
                    v.clamp_(-STATE_MAX, STATE_MAX)
                    out[t] = v
                pot, n_sat = out, int(sat.item())
            else:
                s_all, n_sat = p.neuron.simulate(p, a, bias, batch, dev)
                spikes[name] = s_all
                vals[name], static[name] = s_all.flatten(0, 1), False
            self.saturations[name] = self.saturations.get(name, 0) + n_sat
        return pot, spikes

    @torch.no_grad()
    @float32_math()  # IEEE float32 on CUDA: the integer sums stay exact
    def run(self, x: np.ndarray, timesteps: int | None = None, *, record: bool = False,
            progress: bool = True) -> SimResult:
        """Simulate ``x`` (N, *input shape) for ``timesteps`` steps in Loihi fixed point."""
        steps = run_steps(self.graph, x, timesteps, self.options.timesteps)
        frames = is_frames(self.graph, x)
        refuse_delta_frames(self.plan, frames)
        x_int, clipped = input_int(self.plan, x, frames)
        self.input_clipped = clipped
        self.saturations = {}
        spiking = self.plan.spiking()
        rec = Recorder(steps, {n: self.plan.pops[n].size for n in spiking},
                       {n: fanout(self.plan, n) for n in spiking}, record,
                       input_fanout=fanout(self.plan, self.plan.input_name))
        rec.frames = frames
        graded = self.plan.delta_coded
        for sl in batches(len(x), self._batch(steps, record), desc="loihi reference",
                          progress=progress):
            xb = torch.as_tensor(x_int[sl].astype(np.float64), device=self.device)
            pot, spikes = self._simulate(xb, steps)
            rec.potentials(pot)
            rec.inputs(xb.transpose(0, 1) if frames else xb, static=not frames)
            for name, s in spikes.items():
                # messages: |s| (signed spikes, gn member spikes); graded: nonzero deltas
                ev = (s != 0).to(s.dtype) if graded else s.abs()
                rec.events(name, ev.sum(0), s.to(torch.int32 if graded else torch.int8),
                           per_step=ev.flatten(2).sum(1))
        return rec.result(str(self.device))

    def _batch(self, steps: int, record: bool) -> int:
        """Samples per batch within ``options.memory_budget`` (``snncompile.memory``). This
        reference is not chunked in time: a sample holds every population's (T, ...) float64
        values (about three live at once), plus its int8 spike trains when recording, so the
        bound is per sample and grows with T."""
        from snncompile.memory import room_bytes

        units = sum(p.size for p in self.plan.pops.values())
        per_sample = steps * units * (3 * 8 + (1 if record else 0))
        room = room_bytes(self.options.memory_bytes, self.device)
        return max(1, min(self.options.batch_size, room // max(per_sample, 1)))

    def save(self, directory: str | Path) -> None:
        """Write the spiking IR and loihi_mode.json (the plan's summary and fixed-point counts)."""
        from snncompile.ir.serialize import prepare_dir, save

        # never overwrites a file it did not write (``prepare_dir``)
        d = prepare_dir(directory, ("ir.json", "ir.npz", "loihi_mode.json"))
        save(self.graph, d)
        info = {"target": "loihi-reference", "numeric": "fixed_pt",
                "timesteps": self.options.timesteps,
                "input_frac_bits": self.plan.input_frac_bits,
                "populations": self.plan.summary(), "fixed_point": self.plan.counts}
        (d / "loihi_mode.json").write_text(json.dumps(info, indent=1) + "\n")


def _delta_code(x: Tensor, steps: int) -> Tensor:
    """A static value (B, ...) as deltas over ``steps``: x at the first step, then 0
    (T·B, ...)."""
    out = torch.zeros((steps, *x.shape), dtype=x.dtype, device=x.device)
    out[0] = x
    return out.flatten(0, 1)


def compile_reference(graph: Graph, options: CompileOptions | None = None) -> LoihiNetwork:
    """Spiking IR -> the bit-exact torch reference of its Lava ``fixed_pt`` run."""
    return LoihiNetwork(graph, options or CompileOptions())
