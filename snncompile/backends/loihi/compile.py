"""Compile a spiking IR into a Lava process graph and run it in Lava's Loihi 2 simulation.

The graph comes from the shared ``LoihiPlan`` (``snncompile.ir.fixed_point``): one Lava
process per population and per synapse, connected as on the chip.

    Input      ``RingBuffer`` source: x every step (floating_pt: floats; fixed_pt: round(x·2^k),
               integers on the first layer's scale), sent as a graded message
    synapses   Lava ``Conv`` (weights converted to Lava's (C_out, kW, kH, C_in) layout and
               flipped: Lava convolves, torch cross-correlates) or ``Dense`` (rows and columns
               permuted from torch (C, H, W) order to Lava's (W, H, C) order); a ``DelayLine``
               in front when a residual branch must be aligned
    neurons    ``IFReset`` (ours: reset by subtraction, ``>=``) for ``--neuron if``; Lava's own
               ``LIFReset`` (du = full, dv = 0: hard reset, ``>``) for ``--neuron if-hard``
               ``BistableReset`` (ours) for ``--neuron bistable``; ``SigmaDeltaReset`` (ours:
               lava.proc.sdn's SigmaDelta with a per-sample reset) for ``--neuron sigma-delta``,
               whose synapses carry graded deltas (the Input sends x at a sample's first step)
    readout    ``Integrator`` (ours), its potential recorded every step by a ``RingBuffer`` sink

Many samples, one network: sample k occupies source steps k·T+1 … k·T+T, followed by
``depth`` empty steps that drain the pipeline; population B (depth d) resets its state at
every step with time_step % T == (1 + d) % T, the step at which a new sample reaches it.
Lava runs once for all N·T + depth steps (in chunks, for the progress bar); the runtime is
always stopped, also on errors and Ctrl-C.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from snncompile.backends.loihi.supervise import STOP_SECONDS, Supervisor
from snncompile.backends.result import SimResult, run_steps
from snncompile.ir.diagnostics import CompileError, Diagnostic
from snncompile.ir.fixed_point import (
    NETX_GRID_EXP,
    SIGNED_EPS,
    LoihiPlan,
    Population,
    Synapse,
    build_plan,
    fanout,
    gate_indices,
)
from snncompile.ir.graph import Graph
from snncompile.options import CompileOptions

TAGS = {"float": "floating_pt", "fixed": "fixed_pt"}
#: a conv synapse fed by spikes runs as a Lava ``Dense`` of the equivalent matrix when that
#: matrix has at most this many entries: Lava's CPU ``Conv`` model loops over channel pairs in
#: scipy (23 ms per step for the digits CNN's 6×6×16→32 kernel vs 0.8 ms as a 512×1024 Dense).
#: Same integers, same sums; Conv's 24-bit wrap cannot occur (checked per synapse).
CONV_AS_DENSE_LIMIT = 2 ** 20
INPUT_MESSAGE_BITS = 16  # the analog input is a graded message (fixed_pt: |x_int| < 2^15)


def import_lava() -> None:
    """Import Lava's runtime once, safely.

    Lava calls ``multiprocessing.set_start_method("fork")`` when its runtime module is first
    imported, which raises "context has already been set" if anything in this process fixed
    the start method before (e.g. a library that created a process pool). When that start
    method is already ``fork`` nothing changes, so the import is let through; another start
    method is a clear error instead of a traceback from inside Lava.
    """
    import multiprocessing as mp
    import sys as _sys

    name = "lava.magma.runtime.message_infrastructure.multiprocessing"
    if name in _sys.modules:
        return
    ctx = mp.context._default_context  # type: ignore[attr-defined]
    current = ctx._actual_context  # type: ignore[attr-defined]
    if current is not None and current.get_start_method() != "fork":
        raise CompileError("Lava needs the 'fork' multiprocessing start method", [Diagnostic(
            f"this process already uses {current.get_start_method()!r}",
            hint="import snncompile.backends.loihi before setting a start method")])
    ctx._actual_context = None  # type: ignore[attr-defined]
    try:
        __import__(name)
    finally:
        if ctx._actual_context is None:  # type: ignore[attr-defined]
            ctx._actual_context = current  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------ layout (one place)
def lava_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """torch (C, H, W) -> Lava (W, H, C); vectors unchanged."""
    return tuple(reversed(shape)) if len(shape) == 3 else tuple(shape)


def to_lava(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Array whose leading axes are ``shape`` in torch order -> Lava order (others kept)."""
    a = np.broadcast_to(a, shape) if np.ndim(a) < len(shape) else np.asarray(a)
    return np.ascontiguousarray(np.swapaxes(a, 0, 2) if len(shape) == 3 else a)


def trailing_to_torch(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Array whose trailing axes are ``shape`` in Lava order (W, H, C) -> torch (C, H, W)."""
    return np.swapaxes(a, -1, -3) if len(shape) == 3 else a


def conv_weight(w: np.ndarray) -> np.ndarray:
    """torch (C_out, C_in, kH, kW) -> Lava (C_out, kW, kH, C_in), spatially flipped."""
    return np.ascontiguousarray(w.transpose(0, 3, 2, 1)[:, ::-1, ::-1, :])


def lava_order(shape: tuple[int, ...]) -> np.ndarray:
    """perm with lava_flat[j] = torch_flat[perm[j]] (C-order flattening of each layout)."""
    n = int(np.prod(shape))
    if len(shape) != 3:
        return np.arange(n)
    return np.arange(n).reshape(shape).transpose(2, 1, 0).ravel()


def dense_weight(w: np.ndarray, src: tuple[int, ...], dst: tuple[int, ...]) -> np.ndarray:
    """Dense matrix over torch-flattened units -> over Lava-flattened units."""
    return np.ascontiguousarray(w[lava_order(dst)][:, lava_order(src)])


# ------------------------------------------------------------------------------ results
# ------------------------------------------------------------------------------ network
@dataclass
class LavaRun:
    """What ``LavaNetwork.run`` measured, besides the ``SimResult``."""

    steps: int
    build_seconds: float  # creating the Process objects and the source data
    compile_seconds: float  # Lava compile + runtime start + the first step
    run_seconds: float  # all other steps
    get_seconds: float  # reading the sinks and counters back
    stop_seconds: float
    samples_per_second: float  # samples / total wall time of run()
    ms_per_step: float  # steady state: run_seconds / (steps - 1)
    processes: int


@dataclass
class LavaNetwork:
    """The compiled network of ``--target loihi``: ``run(x, timesteps)`` and ``save(dir)``.

    ``mode`` is "fixed" (Lava ``fixed_pt``, bit-accurate Loihi arithmetic) or "float"
    (``floating_pt``). ``run`` returns a ``SimResult`` (``snncompile.backends.result``; without
    ``record``, layer_spikes are the run's mean per sample), indexed in effective time (step τ of
    every layer of a sample), so results compare one to one.
    """

    graph: Graph
    options: CompileOptions
    conv_as_dense_limit: int = CONV_AS_DENSE_LIMIT
    plan: LoihiPlan = field(init=False)
    mode: str = field(init=False)
    resources: dict[str, Any] = field(init=False)
    last_run: LavaRun | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.options.encoding != "direct":
            raise CompileError("the loihi target needs direct input coding", [Diagnostic(
                f"encoding={self.options.encoding!r}", hint="use --encoding direct")])
        self.mode = self.options.lava_mode
        self.plan = build_plan(self.graph, grid_exp=NETX_GRID_EXP  # netx: delta >> 6
                               if self.options.export == "netx" else None)
        problems = []
        for n, p in self.plan.pops.items():
            if p.kind == "if-hard" and len(np.unique(p.vth_mant if self.mode == "fixed"
                                                     else p.threshold)) > 1:
                problems.append(Diagnostic(
                    "Lava's LIF has one threshold per population; this layer has one per channel",
                    node=n, origin=p.origin or None,
                    hint="drop --channelwise with --neuron if-hard"))
        if problems:
            raise CompileError("cannot compile for the loihi target", problems)
        from snncompile.backends.loihi.resources import check

        self.resources = check(self.plan)  # Loihi 2 limits, before anything runs
        if self.options.export == "netx":
            from snncompile.backends.loihi.netx import export_netx

            export_netx(self.plan, "unused", self.options.timesteps, check_only=True)

    # ------------------------------------------------------------------ building
    def _neuron(self, p: Population, steps: int, n_samples: int) -> Any:
        import_lava()
        from lava.proc.lif.process import LIFReset

        from snncompile.backends.loihi.lava_models.neurons import IFReset, Integrator

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
        if p.kind in ("sigma-delta", "bistable"):
            from snncompile.backends.loihi.lava_models.lowlatency import (
                BistableReset,
                SigmaDeltaReset,
            )

            vth = to_lava(p.vth_mant if fixed else p.threshold, p.shape)
            window = (offset, offset + n_samples * steps)
            if p.kind == "sigma-delta":
                return SigmaDeltaReset(shape=shape, vth=vth, bias_mant=bias_mant,
                                       bias_exp=bias_exp, reset_interval=steps,
                                       reset_offset=offset, shift=6 + p.grid_exp,
                                       count_window=window, name=p.name)
            v_init = to_lava(p.v_init, p.shape) if fixed else p.alpha * vth
            return BistableReset(shape=shape, vth=vth, bias_mant=bias_mant, bias_exp=bias_exp,
                                 v_init=v_init, period=p.members, reset_interval=steps,
                                 reset_offset=offset, count_window=window, name=p.name)
        if p.kind in ("if", "signed-if", "gn"):
            vth = to_lava(p.vth_mant if fixed else p.threshold, p.shape)
            v_init = to_lava(p.v_init, p.shape) if fixed else p.alpha * vth
            neg = None
            if p.kind == "signed-if":
                neg = to_lava(p.neg_level, p.shape) if fixed else SIGNED_EPS * vth
            return IFReset(shape=shape, vth=vth, bias_mant=bias_mant, bias_exp=bias_exp,
                           v_init=v_init, reset_interval=steps, reset_offset=offset,
                           count_window=(offset, offset + n_samples * steps),
                           members=p.members, neg=neg, name=p.name)
        vth = float(p.threshold.flat[0]) if not fixed else int(p.vth_mant.flat[0])
        return LIFReset(shape=shape, vth=vth, du=4095 if fixed else 1.0, dv=0,
                        bias_mant=bias_mant, bias_exp=bias_exp, reset_interval=steps,
                        reset_offset=offset, name=p.name)

    def _gate(self, p: Population, steps: int) -> Any:
        from snncompile.backends.loihi.lava_models.gate import MaxPoolGate

        src = self.plan.pops[p.gate_src].shape
        return MaxPoolGate(in_shape=lava_shape(src), out_shape=lava_shape(p.shape),
                           index=gate_indices(p, src), padding=p.gate.padding,
                           reset_interval=steps, reset_offset=1 + p.depth, name=p.name)

    def _synapse(self, s: Synapse) -> Any:
        from lava.proc.conv.process import Conv
        from lava.proc.dense.process import Dense

        fixed = self.mode == "fixed"
        w = s.weight_int.astype(np.int32) if fixed else s.weight
        bits = self.message_bits(s.src)
        src = self.plan.pops[s.src].shape
        if self.conv_as_dense(s):
            m = conv_matrix(s, src, w)
            return Dense(weights=dense_weight(m, src, self.plan.pops[s.dst].shape),
                         num_message_bits=bits, name=f"{s.src}->{s.dst}")
        if s.kind == "conv":
            return Conv(weight=conv_weight(w), input_shape=lava_shape(src),
                        padding=s.padding[::-1], stride=s.stride[::-1],
                        dilation=s.dilation[::-1], groups=s.groups, num_message_bits=bits,
                        name=f"{s.src}->{s.dst}")
        return Dense(weights=dense_weight(w, src, self.plan.pops[s.dst].shape),
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
        n = self.plan.pops[s.src].size * self.plan.pops[s.dst].size
        fan_in_sum = np.abs(s.weight_int).reshape(s.weight_int.shape[0], -1).sum(1).max()
        payload = max(map(abs, self.plan.payload_range(s.src)))
        return n <= self.conv_as_dense_limit and fan_in_sum * payload < 2 ** 23

    def _build(self, payload: np.ndarray, steps: int, n_samples: int,
               record: bool) -> tuple[Any, dict[str, Any], Any, dict[str, Any], int]:
        import_lava()
        from lava.proc.io.sink import RingBuffer as Sink
        from lava.proc.io.source import RingBuffer as Source

        from snncompile.backends.loihi.lava_models.neurons import DelayLine
        from snncompile.backends.loihi.lava_models.recorder import SpikeRecorder

        total = payload.shape[-1]
        procs: dict[str, Any] = {}
        n_proc = 0
        for n, p in self.plan.pops.items():
            if p.kind == "input":
                procs[n] = Source(data=payload)
            elif p.kind == "maxpool":
                procs[n] = self._gate(p, steps)
                procs[p.gate_src].s_out.connect(procs[n].s_in)
            else:
                procs[n] = self._neuron(p, steps, n_samples)
            n_proc += 1
        for s in self.plan.syns:
            syn = self._synapse(s)
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
            if dense and len(dst_p.shape) > 1:
                a_out = a_out.reshape(lava_shape(dst_p.shape))
            a_out.connect(procs[s.dst].a_in)
        readout = procs[self.plan.readout_name]
        sink = Sink(shape=lava_shape(self.plan.pops[self.plan.readout_name].shape), buffer=total)
        readout.v_out.connect(sink.a_in)
        n_proc += 1
        spike_sinks: dict[str, Any] = {}
        for n in self.plan.spiking():
            if record or self.plan.pops[n].kind == "if-hard":
                lo, hi = self.plan.payload_range(n)
                spike_sinks[n] = SpikeRecorder(shape=lava_shape(self.plan.pops[n].shape),
                                               steps=total, low=lo, high=hi)
                procs[n].s_out.connect(spike_sinks[n].s_in)
                n_proc += 1
        return readout, procs, sink, spike_sinks, n_proc

    # ------------------------------------------------------------------ running
    def payload(self, x: np.ndarray, steps: int) -> np.ndarray:
        """Source data (Lava input shape, N·T + depth steps); sample k fills k·T … k·T+T-1."""
        shape = self.plan.pops[self.plan.input_name].shape
        if self.mode == "fixed":
            xq, clipped = self.plan.input_int(x)
            self.input_clipped = clipped
            xs = xq.astype(np.int32)
        else:
            xs = np.asarray(x, np.float64)
        n = len(xs)
        total = n * steps + self.plan.depth
        data = np.zeros((*lava_shape(shape), total), dtype=xs.dtype)
        per_sample = to_lava(np.moveaxis(xs, 0, -1), shape)  # (*Lava shape, N)
        if self.plan.delta_coded:  # sigma-delta: x as a delta at each sample's first step
            data[..., :n * steps:steps] = per_sample
        else:
            data[..., :n * steps] = np.repeat(per_sample, steps, axis=-1)
        return data

    def run(self, x: np.ndarray, timesteps: int | None = None, *, record: bool = False,
            progress: bool = True, chunk_samples: int = 10,
            stall_seconds: float | None = None) -> SimResult:
        """Run ``x`` (N, *input shape) through one Lava network for ``timesteps`` each.

        Supervised (``supervise.Supervisor``): a Lava worker that dies, or no completed chunk
        of ``chunk_samples`` samples within ``stall_seconds`` (default
        ``supervise.STALL_SECONDS``), stops the runtime and raises ``RuntimeFault``.

        Returns a ``SimResult`` (predictions at every step, readout potentials, spikes per
        layer; with ``record`` the spike trains (T, N, *shape) of every spiking layer)."""
        import_lava()
        from lava.magma.core.run_conditions import RunSteps
        from lava.magma.core.run_configs import Loihi2SimCfg
        from tqdm import tqdm

        from snncompile.backends.loihi.lava_models.recorder import unpack

        steps = run_steps(self.graph, x, timesteps, self.options.timesteps)
        n = len(x)
        t0 = time.perf_counter()
        data = self.payload(x, steps)
        total = data.shape[-1]
        readout, procs, sink, spike_sinks, n_proc = self._build(data, steps, n, record)
        cfg = Loihi2SimCfg(select_tag=TAGS[self.mode])
        bar = tqdm(total=n, desc=f"lava {TAGS[self.mode]}", unit="sample", leave=False,
                   disable=not progress or not sys.stderr.isatty())
        counts: dict[str, np.ndarray] = {}
        t_build = time.perf_counter() - t0
        t_compile = t_run = 0.0
        sup = Supervisor(readout, stall_seconds)  # a dead worker or a stall: RuntimeFault
        try:
            with sup:
                # the first call compiles the process graph and starts the runtime: one step
                # only, so the steady per-step cost is measured apart from it
                readout.run(condition=RunSteps(num_steps=1), run_cfg=cfg)
                sup.beat()
                t_compile = time.perf_counter() - t0 - t_build
                done = 1
                chunk = max(1, chunk_samples) * steps
                while done < total:
                    k = min(chunk, total - done)
                    readout.run(condition=RunSteps(num_steps=k), run_cfg=cfg)
                    sup.beat()
                    done += k
                    bar.update(min(n, done // steps) - bar.n)
                t_run = time.perf_counter() - t0 - t_build - t_compile
                t_get = time.perf_counter()
                pot = np.asarray(sink.data.get(), np.float64)
                trains = {name: unpack(s.bits.get(), lava_shape(self.plan.pops[name].shape),
                                       *self.plan.payload_range(name))
                          for name, s in spike_sinks.items()}
                for name in self.plan.spiking():
                    if name not in spike_sinks:
                        counts[name] = trailing_to_torch(np.asarray(procs[name].count.get()),
                                                         self.plan.pops[name].shape)
                t_get = time.perf_counter() - t_get
        finally:
            bar.close()
            t_stop = time.perf_counter()
            if not sup.failed:  # after a failure the supervisor has torn the runtime down
                # stop() waits for every worker's answer: supervised too (a worker may have died
                # just before a Ctrl-C or SIGTERM brought us here)
                with Supervisor(readout, min(sup.stall, STOP_SECONDS), stopping=True):
                    readout.stop()
            t_stop = time.perf_counter() - t_stop
        seconds = time.perf_counter() - t0
        self.last_run = LavaRun(steps=total, build_seconds=t_build, compile_seconds=t_compile,
                                run_seconds=t_run, get_seconds=t_get, stop_seconds=t_stop,
                                samples_per_second=n / seconds,
                                ms_per_step=1e3 * t_run / max(1, total - 1), processes=n_proc)
        return self._result(pot, trains, counts, n, steps, seconds, record)

    def _window(self, buf: np.ndarray, depth: int, n: int, steps: int) -> np.ndarray:
        """Sink buffer (*lava shape, total) -> (T, N, *lava shape) in effective time."""
        sl = buf[..., depth:depth + n * steps]
        sl = sl.reshape(*buf.shape[:-1], n, steps)
        return np.moveaxis(np.moveaxis(sl, -1, 0), -1, 1)

    def _result(self, pot_buf: np.ndarray, trains: dict[str, np.ndarray],
                counts: dict[str, np.ndarray], n: int, steps: int, seconds: float,
                record: bool) -> SimResult:
        plan = self.plan
        ro = plan.pops[plan.readout_name]
        pot = trailing_to_torch(self._window(pot_buf, ro.depth, n, steps), ro.shape)
        pot = pot.reshape(steps, n, -1)
        spike_trains: dict[str, np.ndarray] = {}
        per_sample: dict[str, np.ndarray] = {}
        per_unit: dict[str, np.ndarray] = {}
        for name, buf in trains.items():
            p = plan.pops[name]
            w = trailing_to_torch(self._window(buf, p.depth, n, steps), p.shape)
            spike_trains[name] = w.astype(np.int32 if plan.delta_coded else np.int8)
            events = np.abs(w.reshape(steps, n, -1)).astype(np.float64)  # messages |s|
            if plan.delta_coded:  # one graded message per nonzero delta
                events = (events != 0).astype(np.float64)
            per_sample[name] = events.sum((0, 2))
            per_unit[name] = events.sum((0, 1))
        for name, c in counts.items():
            # the process counts messages |s| per neuron: each sample gets the mean
            per_sample[name] = np.full(n, c.sum() / n)
            per_unit[name] = c.ravel().astype(np.float64)
        fan = self.fanouts()
        if len(spike_trains) == len(plan.spiking()):
            ev = {k: np.abs(t.reshape(steps, n, -1)) for k, t in spike_trains.items()}
            if plan.delta_coded:
                ev = {k: (e != 0) for k, e in ev.items()}
            synops = sum((ev[k].sum(0, dtype=np.int64) * fan[k]).sum(1) for k in ev)
        else:
            synops = np.full(n, sum(float((per_unit[k] * fan[k]).sum()) for k in per_unit) / n)
        return SimResult(
            timesteps=steps, predictions=pot.argmax(-1).astype(np.int64), output=pot[-1],
            layer_spikes={k: np.asarray(per_sample[k], np.float64) for k in plan.spiking()},
            layer_neurons={k: plan.pops[k].size for k in plan.spiking()},
            synops=np.asarray(synops, np.float64), seconds=seconds,
            device=f"lava {TAGS[self.mode]} (CPU)",
            spike_trains=spike_trains if record else None, potentials=pot)

    def fanouts(self) -> dict[str, np.ndarray]:
        """Synapses leaving each unit of every spiking population (torch-flattened order)."""
        return {name: fanout(self.plan, name) for name in self.plan.spiking()}

    # ------------------------------------------------------------------ saving
    def save(self, directory: str | Path) -> None:
        """Write the spiking IR and lava.json (populations, synapses, fixed-point counts);
        with ``options.export == "netx"`` also ``network.net`` (lava-dl netx HDF5)."""
        from snncompile.ir.serialize import save

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        save(self.graph, d)
        info = {"target": "loihi", "lava_mode": self.mode, "lava_tag": TAGS[self.mode],
                "timesteps": self.options.timesteps,
                "input_frac_bits": self.plan.input_frac_bits, "depth": self.plan.depth,
                "populations": self.plan.summary(), "fixed_point": self.plan.counts}
        (d / "lava.json").write_text(json.dumps(info, indent=1) + "\n")
        if self.options.export == "netx":
            from snncompile.backends.loihi.netx import export_netx

            export_netx(self.plan, d / "network.net", self.options.timesteps)


def conv_matrix(s: Synapse, src: tuple[int, ...], w: np.ndarray) -> np.ndarray:
    """The dense (dst units, src units) matrix of conv synapse ``s`` with weights ``w``
    (torch-flattened order on both sides)."""
    import torch

    n = int(np.prod(src))
    wt = torch.from_numpy(np.asarray(w, np.float64))
    cols = []
    for i in range(0, n, 256):  # unit vectors in blocks: memory 256 · n, not n²
        eye = torch.zeros((min(256, n - i), n), dtype=torch.float64)
        eye[torch.arange(eye.shape[0]), torch.arange(i, i + eye.shape[0])] = 1.0
        y = torch.nn.functional.conv2d(eye.reshape(-1, *src), wt, None, s.stride, s.padding,
                                       s.dilation, s.groups)
        cols.append(y.reshape(eye.shape[0], -1))
    m = torch.cat(cols).T.numpy()
    return m.astype(w.dtype) if np.issubdtype(w.dtype, np.integer) else m


def compile(graph: Graph, options: CompileOptions | None = None) -> LavaNetwork:
    """Spiking IR -> ``LavaNetwork`` (Lava processes are built per ``run``, for all samples)."""
    return LavaNetwork(graph, options or CompileOptions())
