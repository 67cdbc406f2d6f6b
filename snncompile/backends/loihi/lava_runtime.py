"""Lava's runtime: importing it safely, and running a built process graph with timings.

Lava runs every process in its own OS process (LAVA_NOTES §3); the runtime is always stopped,
also on errors and Ctrl-C.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from snncompile.backends.loihi.layout import lava_shape, trailing_to_torch
from snncompile.backends.loihi.supervise import STOP_SECONDS, Supervisor
from snncompile.ir.diagnostics import CompileError, Diagnostic

if TYPE_CHECKING:
    from snncompile.backends.loihi.build import LavaGraph
    from snncompile.backends.loihi.plan import LoihiPlan

TAGS = {"float": "floating_pt", "fixed": "fixed_pt"}
LAVA_HINT = ("pip install 'snncompile[loihi]' on Python 3.10 (lava-nc 0.10.0 installs on "
             "Python 3.10 only; the gpu target and NIR run on 3.10-3.13)")


def require_lava() -> None:
    """A one-line CompileError (CLI exit 2) when Lava is not installed."""
    import importlib.util

    if importlib.util.find_spec("lava") is None or importlib.util.find_spec("lava.magma") is None:
        raise CompileError("--target loihi needs Lava", [Diagnostic(
            f"lava-nc is not installed in this Python ({sys.version.split()[0]})",
            hint=LAVA_HINT)])


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
    require_lava()  # a one-line CompileError where Lava is not installed
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
    seconds: float = 0.0  # all of run()


@dataclass
class LavaOutput:
    """Raw buffers of one Lava run: the readout sink (*Lava shape, steps), unpacked spike
    recordings by population, per-neuron message counts (torch order) of the others."""

    potentials: np.ndarray
    trains: dict[str, np.ndarray]
    counts: dict[str, np.ndarray]
    timing: LavaRun


def run_lava(lava: LavaGraph, plan: LoihiPlan, mode: str, *, total: int, steps: int,
             samples: int, progress: bool = True, chunk_samples: int = 10,
             t0: float | None = None, stall_seconds: float | None = None) -> LavaOutput:
    """Run ``lava`` for ``total`` steps in ``Loihi2SimCfg`` (tag by ``mode``), read the sinks
    back, and always stop the runtime. The first call compiles the process graph and starts
    the runtime: it runs one step only, so the steady per-step cost is measured apart.

    Supervised (``supervise.Supervisor``): a Lava worker that dies, or no completed chunk of
    ``chunk_samples`` samples within ``stall_seconds`` (default ``supervise.STALL_SECONDS``),
    tears the runtime down and raises ``RuntimeFault``."""
    import_lava()
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from tqdm import tqdm

    from snncompile.backends.loihi.lava_models.recorder import unpack

    t0 = time.perf_counter() if t0 is None else t0
    cfg = Loihi2SimCfg(select_tag=TAGS[mode])
    bar = tqdm(total=samples, desc=f"lava {TAGS[mode]}", unit="sample", leave=False,
               disable=not progress or not sys.stderr.isatty())
    counts: dict[str, np.ndarray] = {}
    t_build = time.perf_counter() - t0
    t_compile = t_run = t_get = 0.0
    readout = lava.readout
    sup = Supervisor(readout, stall_seconds)  # a dead worker or a stall: RuntimeFault
    try:
        with sup:
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
                bar.update(min(samples, done // steps) - bar.n)
            t_run = time.perf_counter() - t0 - t_build - t_compile
            t_get = time.perf_counter()
            pot = np.asarray(lava.sink.data.get(), np.float64)
            trains = {name: unpack(s.bits.get(), lava_shape(plan.pops[name].shape),
                                   *plan.payload_range(name))
                      for name, s in lava.spike_sinks.items()}
            for name in plan.spiking():
                if name not in lava.spike_sinks:
                    counts[name] = trailing_to_torch(np.asarray(lava.procs[name].count.get()),
                                                     plan.pops[name].shape)
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
    timing = LavaRun(steps=total, build_seconds=t_build, compile_seconds=t_compile,
                     run_seconds=t_run, get_seconds=t_get, stop_seconds=t_stop,
                     samples_per_second=samples / seconds,
                     ms_per_step=1e3 * t_run / max(1, total - 1), processes=lava.processes,
                     seconds=seconds)
    return LavaOutput(pot, trains, counts, timing)
