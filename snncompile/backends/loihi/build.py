"""Build the Lava process graph of a ``LoihiPlan`` (one process per population and synapse).

    Input      ``RingBuffer`` source: x every step (floating_pt: floats; fixed_pt: round(x·2^k),
               integers on the first layer's scale), sent as a graded message
    synapses   Lava ``Conv`` (``layout.conv_weight``) or ``Dense`` (rows and columns permuted
               from torch (C, H, W) order to Lava's (W, H, C) order); a ``DelayLine`` in front
               when a residual branch must be aligned
    neurons    each model's ``build`` (``neurons.py``: ours for reset by subtraction, signed,
               group, bistable and sigma-delta neurons; Lava's ``LIFReset`` for if-hard)
    readout    ``Integrator`` (ours), its potential recorded every step by a ``RingBuffer`` sink
    gates      ``MaxPoolGate`` (ours, a host process) for a spiking max-pool
    pools      ``CurrentMaxPool`` (ours, a host process) between the synapses of a current
               max-pool population and its neurons (``lava_models/cummax.py``)

Many samples, one network: sample k occupies source steps k·T+1 … k·T+T, followed by
``depth`` empty steps that drain the pipeline; population B (depth d) resets its state at
every step with time_step % T == (1 + d) % T, the step at which a new sample reaches it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from snncompile.backends.loihi.lava_runtime import import_lava
from snncompile.backends.loihi.layout import (
    conv_matrix,
    conv_weight,
    dense_weight,
    lava_shape,
    to_lava,
)
from snncompile.backends.loihi.plan import (
    LoihiPlan,
    Population,
    Synapse,
    gate_indices,
    refuse_delta_frames,
)

#: a conv synapse fed by spikes runs as a Lava ``Dense`` of the equivalent matrix when that
#: matrix has at most this many entries: Lava's CPU ``Conv`` model loops over channel pairs in
#: scipy (23 ms per step for the digits CNN's 6×6×16→32 kernel vs 0.8 ms as a 512×1024 Dense).
#: Same integers, same sums; Conv's 24-bit wrap cannot occur (checked per synapse).
CONV_AS_DENSE_LIMIT = 2 ** 20
INPUT_MESSAGE_BITS = 16  # the analog input is a graded message (fixed_pt: |x_int| < 2^15)


@dataclass
class LavaGraph:
    """The processes of one build: the readout (``run`` is called on it), every process by
    population name, the potential sink, the spike recorders and the process count."""

    readout: Any
    procs: dict[str, Any]
    sink: Any
    spike_sinks: dict[str, Any]
    processes: int


@dataclass
class LavaBuilder:
    """Lava processes for ``plan`` in ``mode`` "fixed" (fixed_pt) or "float" (floating_pt)."""

    plan: LoihiPlan
    mode: str
    conv_as_dense_limit: int = CONV_AS_DENSE_LIMIT
    input_clipped: int = field(default=0, init=False)

    def neuron(self, p: Population, steps: int, n_samples: int) -> Any:
        """The Lava process of population ``p`` (the readout, or the model's ``build``)."""
        import_lava()
        from snncompile.backends.loihi.lava_models.processes import Integrator

        fixed = self.mode == "fixed"
        shape = lava_shape(p.shape)
        offset = 1 + p.depth
        if fixed:
            bias_mant, bias_exp = to_lava(p.bias_mant, p.shape), to_lava(p.bias_exp, p.shape)
        else:
            bias_mant, bias_exp = to_lava(p.bias, p.shape), np.zeros(shape)
        if p.kind == "readout":
            return Integrator(shape=shape, bias_mant=bias_mant, bias_exp=bias_exp,
                              reset_interval=steps, reset_offset=offset,
                              accumulate=self.plan.delta_coded, name=p.name)
        kw = {"shape": shape, "bias_mant": bias_mant, "bias_exp": bias_exp,
              "reset_interval": steps, "reset_offset": offset,
              "count_window": (offset, offset + n_samples * steps), "name": p.name}
        return p.neuron.build(p, fixed, kw)

    def gate(self, p: Population, steps: int) -> Any:
        from snncompile.backends.loihi.lava_models.gate import MaxPoolGate

        src = self.plan.pops[p.gate_src].shape
        return MaxPoolGate(in_shape=lava_shape(src), out_shape=lava_shape(p.shape),
                           index=gate_indices(p, src), padding=p.gate.padding,
                           reset_interval=steps, reset_offset=1 + p.depth, name=p.name)

    def pool(self, p: Population, steps: int) -> Any:
        from snncompile.backends.loihi.lava_models.cummax import CurrentMaxPool

        return CurrentMaxPool(in_shape=lava_shape(p.in_shape), out_shape=lava_shape(p.shape),
                              index=gate_indices(p, p.in_shape, p.pool),
                              padding=p.pool.padding, reset_interval=steps,
                              reset_offset=1 + p.depth, name=f"{p.name}/pool")

    def synapse(self, s: Synapse) -> Any:
        from lava.proc.conv.process import Conv
        from lava.proc.dense.process import Dense

        fixed = self.mode == "fixed"
        w = s.weight_int.astype(np.int32) if fixed else s.weight
        bits = self.message_bits(s.src)
        src = self.plan.pops[s.src].shape
        if self.conv_as_dense(s):
            m = conv_matrix(s, src, w)
            return Dense(weights=dense_weight(m, src, self.plan.pops[s.dst].in_shape),
                         num_message_bits=bits, name=f"{s.src}->{s.dst}")
        if s.kind == "conv":
            return Conv(weight=conv_weight(w), input_shape=lava_shape(src),
                        padding=s.padding[::-1], stride=s.stride[::-1],
                        dilation=s.dilation[::-1], groups=s.groups, num_message_bits=bits,
                        name=f"{s.src}->{s.dst}")
        return Dense(weights=dense_weight(w, src, self.plan.pops[s.dst].in_shape),
                     num_message_bits=bits, name=f"{s.src}->{s.dst}")

    def message_bits(self, src: str) -> int:
        """Lava synapse ``num_message_bits`` for what ``src`` sends: 0 (binary spikes, cast to
        bool by Lava), else a graded message wide enough for the payload (signed: two's
        complement): the Input, group neurons (0..M) and signed spikes (-1..1)."""
        if src == self.plan.input_name:
            return INPUT_MESSAGE_BITS
        lo, hi = self.plan.payload_range(src)
        if (lo, hi) == (0, 1):
            return 0
        return int(max(hi, -lo)).bit_length() + 1

    def conv_as_dense(self, s: Synapse) -> bool:
        """Whether conv synapse ``s`` runs as an equivalent Lava Dense (see CONV_AS_DENSE_LIMIT)."""
        if s.kind != "conv" or s.src == self.plan.input_name:
            return False
        n = self.plan.pops[s.src].size * int(np.prod(self.plan.pops[s.dst].in_shape))
        fan_in_sum = np.abs(s.weight_int).reshape(s.weight_int.shape[0], -1).sum(1).max()
        payload = max(map(abs, self.plan.payload_range(s.src)))
        return n <= self.conv_as_dense_limit and fan_in_sum * payload < 2 ** 23

    def build(self, payload: np.ndarray, steps: int, n_samples: int,
               record: bool) -> LavaGraph:
        import_lava()
        from lava.proc.io.sink import RingBuffer as Sink
        from lava.proc.io.source import RingBuffer as Source

        from snncompile.backends.loihi.lava_models.processes import DelayLine
        from snncompile.backends.loihi.lava_models.recorder import SpikeRecorder

        total = payload.shape[-1]
        procs: dict[str, Any] = {}
        pools: dict[str, Any] = {}  # current max-pool host processes, by population
        n_proc = 0
        for n, p in self.plan.pops.items():
            if p.kind == "input":
                procs[n] = Source(data=payload)
            elif p.kind == "maxpool":
                procs[n] = self.gate(p, steps)
                procs[p.gate_src].s_out.connect(procs[n].s_in)
            else:
                procs[n] = self.neuron(p, steps, n_samples)
            if p.pool is not None:
                pools[n] = self.pool(p, steps)
                pools[n].a_out.connect(procs[n].a_in)
                n_proc += 1
            n_proc += 1
        for s in self.plan.syns:
            syn = self.synapse(s)
            n_proc += 1
            src_p, dst_p = self.plan.pops[s.src], self.plan.pops[s.dst]
            out = procs[s.src].s_out
            if s.delay:
                line = DelayLine(shape=lava_shape(src_p.shape), delay=s.delay)
                out.connect(line.s_in)
                out = line.s_out
                n_proc += 1
            dense = s.kind == "dense" or self.conv_as_dense(s)
            if dense and len(src_p.shape) > 1:
                out = out.flatten()
            out.connect(syn.s_in)
            a_out = syn.a_out
            if dense and len(dst_p.in_shape) > 1:
                a_out = a_out.reshape(lava_shape(dst_p.in_shape))
            a_out.connect(pools[s.dst].a_in if s.dst in pools else procs[s.dst].a_in)
        readout = procs[self.plan.readout_name]
        sink = Sink(shape=lava_shape(self.plan.pops[self.plan.readout_name].shape), buffer=total)
        readout.v_out.connect(sink.a_in)
        n_proc += 1
        spike_sinks: dict[str, Any] = {}
        for n in self.plan.spiking():
            if record or not self.plan.pops[n].neuron.counts_in_process:
                lo, hi = self.plan.payload_range(n)
                spike_sinks[n] = SpikeRecorder(shape=lava_shape(self.plan.pops[n].shape),
                                               steps=total, low=lo, high=hi)
                procs[n].s_out.connect(spike_sinks[n].s_in)
                n_proc += 1
        return LavaGraph(readout, procs, sink, spike_sinks, n_proc)

    def payload(self, x: np.ndarray, steps: int) -> np.ndarray:
        """Source data (Lava input shape, N·T + depth steps); sample k fills k·T … k·T+T-1:
        x (N, *in) at each of its steps, or frame τ of x (N, T, *in) at step k·T + τ."""
        shape = self.plan.pops[self.plan.input_name].shape
        frames = x.ndim == len(shape) + 2
        refuse_delta_frames(self.plan, frames)
        if frames:  # (N, T, *in) -> (N·T, *in): sample k's frames at k·T … k·T+T-1
            x = x.reshape(-1, *x.shape[2:])
        if self.mode == "fixed":
            xq, self.input_clipped = self.plan.input_int(x)
            xs = xq.astype(np.int32)
        else:
            xs = self.plan.input_value(x)
        n = len(xs) // steps if frames else len(xs)
        total = n * steps + self.plan.depth
        data = np.zeros((*lava_shape(shape), total), dtype=xs.dtype)
        per_sample = to_lava(np.moveaxis(xs, 0, -1), shape)  # (*Lava shape, N or N·T)
        if frames:
            data[..., :n * steps] = per_sample
        elif self.plan.delta_coded:  # sigma-delta: x as a delta at each sample's first step
            data[..., :n * steps:steps] = per_sample
        else:
            data[..., :n * steps] = np.repeat(per_sample, steps, axis=-1)
        return data
