"""GPU simulator, Loihi mode: Lava's ``fixed_pt`` arithmetic, bit for bit, in torch.

It runs the same ``LoihiPlan`` (``snncompile.ir.fixed_point``) that the Lava backend builds, with
integer values held in float64 tensors (exact below 2^53). Per population B, per step:

    a     = Σ_syn q · p_src(t)                 (conv: wrapped to 24 bits as Lava's Conv does)
    if        v = clip(v + (a << 6) + bias, ±(2^23−1));  s = v ≥ vth<<6;  v −= s·(vth<<6)
    gn        as if, with s = Σ_{k=1..M} [v ≥ k·vth<<6]
    signed-if as if, then n += s; q = [v ≤ −neg] ∧ [n > 0]; v += q·(vth<<6); n −= q; s −= q
    if-hard   u = wrap24(a << 6);  v = clip(v + u + bias);  s = v > vth<<6;  v = 0 where s
              (Lava's stock LIF with du = 4095, dv = 0)
    readout   v = clip(v + (a << 6) + bias)        (the Integrator; prediction = argmax v)
    bistable  s = v ≥ vth<<6;  v −= s·(vth<<6);  u = clip(u + (a << 6) + bias);
              at the end of each window of ρ steps: v = clip(v + u), u = 0
    sigma-delta (every layer; synapses carry deltas, the Input sends x at step 0 only)
              σ = clip(σ + (a << 6), ±SD_MAX);  act = min(max(σ + bias, 0), SD_MAX);
              act = floor to multiples of 2^(6+g);  d = act − S;  d = 0 where
              |d| < vth<<6;  S += d;  sends d >> (6+g)   (g = grid_exp: the payload unit);
              readout: σ = clip(σ + (a << 6));  v = clip(σ + bias)  (not integrated: the
              current decoded output, as lava-dl SDNN's Sigma readout)

with v = v_init at the first step of every sample and bias = bias_mant << bias_exp.

Timing. Lava delays every synapse by one step and the plan aligns residual branches with delay
lines, so population B sees sample step τ at Lava step τ + depth(B). This simulator runs in
*effective* time (step τ of every population together); ``SimResult.spike_trains[name][τ-1]``
equals Lava's spikes at step k·T + τ + depth(name) for sample k (``LoihiNetwork.depths``).
``saturations`` counts the steps × neurons where the 24-bit state or current was clipped.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from snncompile.backends.gpu.compile import SimResult, resolve_device
from snncompile.backends.result import run_steps
from snncompile.backends.gpu.lowerings import maxpool_gate
from snncompile.ir.diagnostics import CompileError, Diagnostic
from snncompile.ir.fixed_point import (
    ACT_SHIFT,
    NETX_GRID_EXP,
    SD_MAX,
    STATE_MAX,
    VTH_SHIFT,
    LoihiPlan,
    Population,
    build_plan,
    fanout,
)
from snncompile.ir.graph import Graph
from snncompile.options import CompileOptions

Tensor = torch.Tensor
WRAP = 2 ** 24


def wrap24(x: Tensor) -> Tensor:
    """Signed 24-bit wrap-around (Lava's Conv ``signed_clamp`` and LIF current)."""
    return torch.remainder(x + WRAP // 2, WRAP) - WRAP // 2


def _chan(a: np.ndarray, dev: torch.device) -> Tensor:
    return torch.as_tensor(np.asarray(a, np.float64), device=dev)


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
                    x.shape[0], *self.plan.pops[name].shape)
            total = a if total is None else total + a
        return total

    def _simulate(self, x_int: Tensor, steps: int) -> tuple[Tensor, dict[str, Tensor]]:
        plan, dev = self.plan, self.device
        batch = x_int.shape[0]
        vals: dict[str, Tensor] = {}
        static: dict[str, bool] = {}
        spikes: dict[str, Tensor] = {}
        pot = None
        for name, p in plan.pops.items():
            if p.kind == "input":
                vals[name], static[name] = x_int, True
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
            a = (a.unsqueeze(0).expand(steps, *a.shape) if all_static
                 else a.reshape(steps, batch, *a.shape[1:]))
            bias = _chan(p.bias_state(), dev)
            sat = torch.zeros((), dtype=torch.float64, device=dev)
            if p.kind == "readout":
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
                pot = out
            elif p.kind in ("sigma-delta", "bistable"):
                s_all = (self._sigma_delta if p.kind == "sigma-delta" else self._bistable)(
                    p, a, bias, batch)
                spikes[name] = s_all
                vals[name], static[name] = s_all.flatten(0, 1), False
            else:
                vth = _chan(p.vth_mant, dev) * 2 ** VTH_SHIFT
                v = _chan(p.v_init, dev).expand(batch, *p.shape).clone()
                s_all = torch.empty((steps, batch, *p.shape), dtype=torch.float64, device=dev)
                hi = torch.empty(v.shape, dtype=torch.bool, device=dev)
                hard = p.kind == "if-hard"
                if p.kind == "signed-if":
                    neg = -_chan(p.neg_level, dev)
                    net = torch.zeros_like(v)  # the sample's net spike count per neuron
                for t in range(steps):
                    if not hard:
                        v.add_(a[t], alpha=2 ** ACT_SHIFT).add_(bias)
                    else:  # stock LIF, du = 4095: u = wrap24(a << 6)
                        u = a[t] * 2 ** ACT_SHIFT
                        sat += (u.abs() >= WRAP // 2).sum()
                        v.add_(wrap24(u)).add_(bias)
                    torch.gt(v.abs(), STATE_MAX, out=hi)
                    sat += hi.sum()
                    v.clamp_(-STATE_MAX, STATE_MAX)
                    if hard:
                        torch.gt(v, vth, out=hi)
                        s_all[t].copy_(hi)
                        v.masked_fill_(hi, 0.0)
                        continue
                    torch.ge(v, vth, out=hi)
                    s_all[t].copy_(hi)
                    for k in range(2, p.members + 1):  # gn: s = Σ_k [v ≥ k·vth]
                        s_all[t].add_(v >= k * vth)
                    v.addcmul_(s_all[t], vth, value=-1.0)
                    if p.kind == "signed-if":
                        net.add_(s_all[t])
                        q = ((v <= neg) & (net > 0)).to(v.dtype)
                        v.addcmul_(q, vth)
                        net.sub_(q)
                        s_all[t].sub_(q)
                spikes[name] = s_all
                vals[name], static[name] = s_all.flatten(0, 1), False
            self.saturations[name] = self.saturations.get(name, 0) + int(sat.item())
        return pot, spikes

    def _sigma_delta(self, p: Population, a: Tensor, bias: Tensor, batch: int) -> Tensor:
        """Graded deltas d >> 6 (steps, batch, *shape) of a sigma-delta population."""
        dev = self.device
        vth = _chan(p.vth_mant, dev) * 2 ** VTH_SHIFT
        sig = torch.zeros((batch, *p.shape), dtype=torch.float64, device=dev)
        sent = torch.zeros_like(sig)
        out = torch.empty((a.shape[0], batch, *p.shape), dtype=torch.float64, device=dev)
        for t in range(a.shape[0]):
            sig.add_(a[t], alpha=2 ** ACT_SHIFT).clamp_(-SD_MAX, SD_MAX)
            unit = 2.0 ** (ACT_SHIFT + p.grid_exp)
            d = (sig + bias).clamp_(0, SD_MAX).div_(unit).floor_().mul_(unit).sub_(sent)
            d.mul_(d.abs() >= vth)
            sent.add_(d)
            out[t] = d / unit
        return out

    def _bistable(self, p: Population, a: Tensor, bias: Tensor, batch: int) -> Tensor:
        """Spikes (steps, batch, *shape) of a bistable population (window ρ = members)."""
        dev = self.device
        vth = _chan(p.vth_mant, dev) * 2 ** VTH_SHIFT
        v = _chan(p.v_init, dev).expand(batch, *p.shape).clone()
        u = torch.zeros_like(v)
        out = torch.empty((a.shape[0], batch, *p.shape), dtype=torch.float64, device=dev)
        for t in range(a.shape[0]):
            torch.ge(v, vth, out=out[t])
            v.addcmul_(out[t], vth, value=-1.0)
            u.add_(a[t], alpha=2 ** ACT_SHIFT).add_(bias).clamp_(-STATE_MAX, STATE_MAX)
            if (t + 1) % max(p.members, 1) == 0:
                v.add_(u).clamp_(-STATE_MAX, STATE_MAX)
                u.zero_()
        return out

    @torch.no_grad()
    def run(self, x: np.ndarray, timesteps: int | None = None, *, record: bool = False,
            progress: bool = True) -> SimResult:
        """Simulate ``x`` (N, *input shape) for ``timesteps`` steps in Loihi fixed point."""
        steps = run_steps(self.graph, x, timesteps, self.options.timesteps)
        from tqdm import tqdm

        t0 = time.perf_counter()
        x_int, clipped = self.plan.input_int(x)
        self.input_clipped = clipped
        self.saturations = {}
        bs = self.options.batch_size
        preds, outs, pots, syn = [], [], [], []
        counts: dict[str, list[np.ndarray]] = {n: [] for n in self.plan.spiking()}
        trains: dict[str, list[np.ndarray]] = {n: [] for n in self.plan.spiking()}
        fan = {n: torch.as_tensor(fanout(self.plan, n), device=self.device)
               for n in self.plan.spiking()}
        bar = tqdm(total=(len(x) + bs - 1) // bs, desc="loihi-mode", unit="batch", leave=False,
                   disable=not progress or not sys.stderr.isatty())
        for i in range(0, len(x), bs):
            xb = torch.as_tensor(x_int[i:i + bs].astype(np.float64), device=self.device)
            pot, spikes = self._simulate(xb, steps)
            pot = pot.flatten(2)
            preds.append(pot.argmax(-1).cpu().numpy())
            outs.append(pot[-1].cpu().numpy())
            if record:
                pots.append(pot.cpu().numpy())
            total = np.zeros(pot.shape[1])
            graded = self.plan.delta_coded
            for name, s in spikes.items():
                # messages |s| (signed spikes, gn member spikes); sigma-delta: nonzero deltas
                per_unit = (s != 0).to(s.dtype).sum(0) if graded else s.abs().sum(0)
                counts[name].append(per_unit.flatten(1).sum(1).cpu().numpy())
                total += (per_unit.flatten(1) * fan[name]).sum(1).cpu().numpy()
                if record:
                    trains[name].append(s.to(torch.int32 if graded else torch.int8)
                                        .cpu().numpy())
            syn.append(total)
            bar.update(1)
        bar.close()
        return SimResult(
            timesteps=steps, predictions=np.concatenate(preds, axis=1).astype(np.int64),
            output=np.concatenate(outs), synops=np.concatenate(syn),
            layer_spikes={n: np.concatenate(v) for n, v in counts.items()},
            layer_neurons={n: self.plan.pops[n].size for n in self.plan.spiking()},
            seconds=time.perf_counter() - t0, device=str(self.device),
            spike_trains={n: np.concatenate(v, axis=1) for n, v in trains.items()} if record
            else None,
            potentials=np.concatenate(pots, axis=1) if record else None)

    def save(self, directory: str | Path) -> None:
        """Write the spiking IR and loihi_mode.json (the plan's summary and fixed-point counts)."""
        from snncompile.ir.serialize import save

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        save(self.graph, d)
        info = {"target": "gpu", "numeric": "loihi", "timesteps": self.options.timesteps,
                "input_frac_bits": self.plan.input_frac_bits,
                "populations": self.plan.summary(), "fixed_point": self.plan.counts}
        (d / "loihi_mode.json").write_text(json.dumps(info, indent=1) + "\n")


def _delta_code(x: Tensor, steps: int) -> Tensor:
    """A static value (B, ...) as deltas over ``steps``: x at the first step, then 0
    (T·B, ...)."""
    out = torch.zeros((steps, *x.shape), dtype=x.dtype, device=x.device)
    out[0] = x
    return out.flatten(0, 1)


def compile_loihi(graph: Graph, options: CompileOptions | None = None) -> LoihiNetwork:
    """Spiking IR -> ``LoihiNetwork`` (Lava fixed_pt arithmetic in torch)."""
    return LoihiNetwork(graph, options or CompileOptions())
