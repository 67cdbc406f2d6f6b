"""``--target loihi``: compile a spiking IR for Lava's Loihi 2 simulation and run it.

``compile(graph, options) -> LavaNetwork``: the plan (``plan.py``, ``fixed.py``) is checked
against Loihi 2 limits (``resources.py``) and, with ``--export netx``, against what netx can
express, before anything runs. ``LavaNetwork.run`` builds the process graph for all samples
(``build.py``), runs it once in Lava (``lava_runtime.py``) and decodes the sink buffers into a
``SimResult`` in effective time (step τ of every layer of a sample), so results compare one to
one with the bit-exact torch reference (``compile_reference``, ``torch_sim.py``).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from snncompile.backends.common import Recorder, SimResult, is_frames, run_steps
from snncompile.backends.loihi.build import CONV_AS_DENSE_LIMIT, LavaBuilder
from snncompile.backends.loihi.fixed import NETX_GRID_EXP
from snncompile.backends.loihi.lava_runtime import TAGS, LavaRun, run_lava
from snncompile.backends.loihi.layout import trailing_to_torch
from snncompile.backends.loihi.plan import LoihiPlan, build_plan, fanout, input_int
from snncompile.backends.loihi.torch_sim import LoihiNetwork, compile_reference
from snncompile.ir.diagnostics import CompileError, Diagnostic
from snncompile.ir.graph import Graph
from snncompile.options import CompileOptions

__all__ = ["LavaNetwork", "LavaRun", "LoihiNetwork", "compile", "compile_reference"]


@dataclass
class LavaNetwork:
    """The compiled network of ``--target loihi``: ``run(x, timesteps)`` and ``save(dir)``.

    ``mode`` is "fixed" (Lava ``fixed_pt``, bit-accurate Loihi arithmetic) or "float"
    (``floating_pt``). ``run`` returns a ``SimResult`` (``snncompile.backends.common``; without
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
            if p.spiking and p.neuron.one_threshold and len(np.unique(
                    p.vth_mant if self.mode == "fixed" else p.threshold)) > 1:
                problems.append(Diagnostic(
                    f"the Lava process of {p.kind!r} has one threshold per population; this "
                    "layer has one per channel", node=n, origin=p.origin or None,
                    hint=f"drop --channelwise with --neuron {p.kind}"))
        if problems:
            raise CompileError("cannot compile for the loihi target", problems)
        from snncompile.backends.loihi.resources import check

        # Loihi 2 limits, before anything runs; estimated ones warn unless --strict-limits
        self.resources = check(self.plan, strict=self.options.strict_limits)
        for w in self.resources["warnings"]:
            logging.getLogger("snncompile").warning("Loihi 2 limits (estimate): %s", w)
        if self.options.export == "netx":
            from snncompile.backends.loihi.netx import export_netx

            export_netx(self.plan, "unused", self.options.timesteps, check_only=True)

    def run(self, x: np.ndarray, timesteps: int | None = None, *, record: bool = False,
            progress: bool = True, chunk_samples: int = 10,
            stall_seconds: float | None = None) -> SimResult:
        """Run ``x`` (N, *input shape) through one Lava network for ``timesteps`` each.

        Supervised: a Lava worker that dies, or no progress within ``stall_seconds``
        (default ``supervise.STALL_SECONDS``), raises ``RuntimeFault`` (``run_lava``).

        Returns a ``SimResult`` (predictions at every step, readout potentials, spikes per
        layer; with ``record`` the spike trains (T, N, *shape) of every spiking layer)."""
        steps = run_steps(self.graph, x, timesteps, self.options.timesteps)
        n = len(x)
        t0 = time.perf_counter()
        builder = self.builder
        data = builder.payload(x, steps)
        self.input_clipped = builder.input_clipped
        lava = builder.build(data, steps, n, record)
        out = run_lava(lava, self.plan, self.mode, total=data.shape[-1], steps=steps,
                       samples=n, progress=progress, chunk_samples=chunk_samples, t0=t0,
                       stall_seconds=stall_seconds)
        self.last_run = out.timing
        return self._result(out.potentials, out.trains, out.counts, n, steps,
                            out.timing.seconds, record, x=self._sent(x))

    def _sent(self, x: np.ndarray) -> np.ndarray:
        """What the Input sends, (N, *in) or frames (N, T, *in) (fixed_pt: the integers)."""
        frames = is_frames(self.graph, x)
        if self.mode == "fixed":
            return input_int(self.plan, x, frames)[0]
        if frames:
            return self.plan.input_value(x.reshape(-1, *x.shape[2:])).reshape(x.shape)
        return self.plan.input_value(x)

    @property
    def builder(self) -> LavaBuilder:
        """What builds this network's Lava processes (synapse layouts, message widths)."""
        return LavaBuilder(self.plan, self.mode, self.conv_as_dense_limit)

    def _window(self, buf: np.ndarray, depth: int, n: int, steps: int) -> np.ndarray:
        """Sink buffer (*lava shape, total) -> (T, N, *lava shape) in effective time."""
        sl = buf[..., depth:depth + n * steps]
        sl = sl.reshape(*buf.shape[:-1], n, steps)
        return np.moveaxis(np.moveaxis(sl, -1, 0), -1, 1)

    def _result(self, pot_buf: np.ndarray, trains: dict[str, np.ndarray],
                counts: dict[str, np.ndarray], n: int, steps: int, seconds: float,
                record: bool, x: np.ndarray | None = None) -> SimResult:
        plan = self.plan
        spiking = plan.spiking()
        rec = Recorder(steps, {k: plan.pops[k].size for k in spiking}, self.fanouts(), record,
                       input_fanout=fanout(plan, plan.input_name))
        ro = plan.pops[plan.readout_name]
        pot = trailing_to_torch(self._window(pot_buf, ro.depth, n, steps), ro.shape)
        rec.potentials(pot.reshape(steps, n, -1), keep=True)
        if x is not None:
            frames = rec.frames = is_frames(self.graph, x)
            rec.inputs(np.moveaxis(x, 1, 0) if frames else x, static=not frames)
        for name in spiking:
            p = plan.pops[name]
            if name in trains:
                w = trailing_to_torch(self._window(trains[name], p.depth, n, steps), p.shape)
                events = np.abs(w.reshape(steps, n, -1)).astype(np.float64)  # messages |s|
                if plan.delta_coded:  # one graded message per nonzero delta
                    events = (events != 0).astype(np.float64)
                rec.events(name, events.sum(0),
                           w.astype(np.int32 if plan.delta_coded else np.int8),
                           per_step=events.sum(1))
            else:  # the process counted messages per neuron over the run: the mean per sample
                rec.totals(name, counts[name].ravel().astype(np.float64), n)
        return rec.result(f"lava {TAGS[self.mode]} (CPU)", seconds)

    def fanouts(self) -> dict[str, np.ndarray]:
        """Synapses leaving each unit of every spiking population (torch-flattened order)."""
        return {name: fanout(self.plan, name) for name in self.plan.spiking()}

    # ------------------------------------------------------------------ saving
    def save(self, directory: str | Path) -> None:
        """Write the spiking IR and lava.json (populations, synapses, fixed-point counts);
        with ``options.export == "netx"`` also ``network.net`` (lava-dl netx HDF5), with
        ``"nir"`` ``network.nir`` (``snncompile.backends.nir_export``)."""
        from snncompile.ir.serialize import prepare_dir, save

        # never overwrites a file it did not write (``prepare_dir``)
        d = prepare_dir(directory, ("ir.json", "ir.npz", "lava.json", "network.net", "network.nir"))
        save(self.graph, d)
        info = {"target": "loihi", "lava_mode": self.mode, "lava_tag": TAGS[self.mode],
                "timesteps": self.options.timesteps,
                "input_frac_bits": self.plan.input_frac_bits, "depth": self.plan.depth,
                "populations": self.plan.summary(), "fixed_point": self.plan.counts}
        (d / "lava.json").write_text(json.dumps(info, indent=1) + "\n")
        if self.options.export == "netx":
            from snncompile.backends.loihi.netx import export_netx

            export_netx(self.plan, d / "network.net", self.options.timesteps)
        if self.options.export == "nir":
            from snncompile.backends.nir_export import export_nir

            export_nir(self.graph, d / "network.nir")


def compile(graph: Graph, options: CompileOptions | None = None) -> LavaNetwork:
    """Spiking IR -> ``LavaNetwork`` (Lava processes are built per ``run``, for all samples).
    Planning, the Loihi 2 limits and the exports need no Lava; ``run`` does."""
    options = options or CompileOptions()
    if options.export == "nir":  # refuse before anything runs
        from snncompile.backends.nir_export import refuse_unexportable

        refuse_unexportable(graph)
    return LavaNetwork(graph, options)
