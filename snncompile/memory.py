"""Memory, in one place: what is free, what a run may hold (``memory_budget``, parsed once to
bytes by ``CompileOptions.memory_bytes``), and what a run will allocate.

- ``available_bytes(device)``: the one reading of the free memory (CUDA: free device memory;
  else ``MemAvailable`` of /proc/meminfo, else physical memory); ``current_bytes``: what the
  process holds; ``budget_bytes`` / ``room_bytes``: the budget and what is left of it;
- the estimate: ``footprint`` (per row and per sample, from the op order), ``plan_pieces``
  (the b samples × Tc steps that fit the budget), ``run_bytes`` (a gpu run's pieces before it
  is compiled) and ``run_memory`` (a whole run: predictions, readout, and the pieces' state),
  which ``validate.check_memory`` compares with ``available_bytes``.

This module imports numpy and the IR only; torch is imported where a CUDA device is asked
about, so the numpy-only ``validate`` can use it.

A simulation run holds (``gpu.compile.SpikingNetwork.simulate``):

- per *row* (one sample × one step of a time chunk): the dynamic values alive at the widest
  point of the layer order (the currents and spikes of the live layers, the MaxPool gate's
  temporaries), ``row_bytes``;
- per *sample*, whatever the chunk: the carried state (each neuron's v and its model's extra
  state, the gate's float64 scores, the readout potential), the static values kept across chunks
  (a direct-coded input's constant current), the event counters, ``sample_bytes``;
- once: the process itself (interpreter, torch, weights, the input data), measured as the
  resident set size when the run starts.

``plan_pieces`` picks b samples × Tc steps so that rss + b·sample_bytes + b·Tc·row_bytes stays
within the budget (and, on CPU, b·Tc·widest within ``cache_bytes`` unless that leaves fewer than
``MIN_ROWS`` rows: small models then work in cache and the allocator reuses freed blocks instead
of mapping fresh pages for every op, while large ones keep batched ops efficient). Samples are
independent and chunks carry all state, so the choice never changes a spike. The default budget
is a fraction of the memory available now (``MemAvailable`` of /proc/meminfo; on CUDA the free
device memory).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from snncompile.ir.diagnostics import CompileError, Diagnostic
from snncompile.ir.graph import Graph
from snncompile.ir.nodes import Conv2d, CurrentMaxPool2d, Layer, MaxPool2d, ReLU

#: the walk's estimate times this: temporaries it does not model (padding, the gate's indices,
#: the scan's comparisons) and allocator slack (measured, resnet18 at 224 in 5-row chunks: the
#: run's peak 238 MB, 1.5× the walk's 155 MB; benchmarks/scale.py)
SLACK = 2.0
#: the share of the available memory a run takes when no budget is given
DEFAULT_FRACTION = 0.5
#: CPU: rows (samples × steps) per op the cache bound never goes below, when the budget allows
#: (measured, resnet18 at 224, T=32, 2 images, 1 thread, loaded machine: 4 rows 5.3 s, 8 rows
#: 5.8 s, 16 rows 7.5 s, 64 rows 5.2 s vs 3.9 s for 8 in another run: fewer rows, in cache, are
#: no slower; below 4 rows the ops' fixed costs grow)
MIN_ROWS = 4


_UNITS = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_bytes(text: str | int) -> int:
    """``"512M"`` -> 536870912: a positive byte count with an optional K/M/G/T suffix (powers of
    1024; ``KB``/``KiB`` spellings too). A ValueError says what is wrong."""
    if isinstance(text, int):
        value, unit = float(text), ""
    else:
        t = text.strip().upper().removesuffix("IB").removesuffix("B")
        num = t.rstrip("KMGT")
        unit = t[len(num):]
        try:
            value = float(num)
        except ValueError:
            raise ValueError("give bytes with an optional K/M/G/T suffix, e.g. 4G") from None
        if unit not in _UNITS:
            raise ValueError("give bytes with an optional K/M/G/T suffix, e.g. 4G")
    n = int(value * _UNITS[unit])
    if n <= 0:
        raise ValueError("must be > 0")
    return n


def _is_cuda(device: Any) -> bool:
    return device is not None and str(getattr(device, "type", device)).startswith("cuda")


def available_bytes(device: Any = None) -> int:
    """Memory free for this run now: on a CUDA device its free memory, else MemAvailable
    (Linux /proc/meminfo), else physical memory."""
    if _is_cuda(device):
        import torch

        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError):
        return 2**63


def current_bytes(device: Any = None) -> int:
    """What the process holds already: CUDA memory allocated by torch, else the resident set
    size (/proc/self/statm)."""
    if _is_cuda(device):
        import torch

        return int(torch.cuda.memory_allocated(device))
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def budget_bytes(budget: str | int | None, device: Any = None) -> int:
    """The budget in bytes: ``budget`` (bytes, as ``CompileOptions.memory_bytes`` holds it; a
    ``"4G"`` string is parsed), else the default: the memory held now plus
    ``DEFAULT_FRACTION`` of the memory available."""
    if budget is None:
        return current_bytes(device) + int(DEFAULT_FRACTION * available_bytes(device))
    return budget if isinstance(budget, int) else parse_bytes(budget)


def room_bytes(budget: str | int | None, device: Any = None) -> int:
    """What a run may still allocate: the budget minus what the process holds now."""
    return max(budget_bytes(budget, device) - current_bytes(device), 0)


@dataclass(frozen=True)
class Footprint:
    """Estimated bytes of a simulation per row (sample·step) and per sample (module docstring);
    ``widest``: units of the widest value (per sample and step)."""

    row_bytes: int
    sample_bytes: int
    widest: int


def footprint(graph: Graph, order: list[str], inputs: dict[str, list[str]],
              neurons: dict[str, int], itemsize: int, *, record: bool = False,
              steps: int = 1) -> Footprint:
    """Walk the op order: at each op the dynamic values alive (produced, not yet read for the
    last time) plus what the op allocates — its output, a spiking layer's spike tensor, a
    padded copy of a conv input, the gate's float64 scores, padded copies and int64 indices.
    ``neurons``: spiking layer -> number of state tensors its model carries."""
    units = {n: int(np.prod(graph.shape(n))) for n in order}
    last = {i: k for k, n in enumerate(order) for i in inputs[n]}
    live: dict[str, int] = {order[0]: units[order[0]]}
    peak = 0
    for k, name in enumerate(order[1:], start=1):
        op = graph.op(name)
        out = units[name]
        extra = out + (out if name in neurons else 0)
        ins = sum(units[i] for i in inputs[name])
        if isinstance(op, Conv2d) and op.padding[0] != op.padding[2]:
            extra += ins
        if isinstance(op, MaxPool2d):  # float64 scores and their cat, score, pads, int64 idx
            extra += 6 * ins + 2 * out
        if isinstance(op, CurrentMaxPool2d):  # float64 sums, their cat and pad; M and its diff
            extra += 6 * ins + 4 * out
        peak = max(peak, sum(live.values()) + extra)
        live[name] = out
        for i in inputs[name]:
            if last.get(i) == k:
                live.pop(i, None)
    state = sum(units[n] * (c + 2) for n, c in neurons.items())  # + float64 event counter
    gates = sum(2 * sum(units[i] for i in inputs[n]) for n in order
                if isinstance(graph.op(n), MaxPool2d))
    gates += sum(2 * (sum(units[i] for i in inputs[n]) + units[n]) for n in order
                 if isinstance(graph.op(n), CurrentMaxPool2d))  # carried float64 C and M
    static = units[order[0]] + max((units[n] for n in order[1:]), default=0)
    trains = steps * sum(units[n] for n in neurons) // itemsize if record else 0
    return Footprint(row_bytes=int(SLACK * peak * itemsize),
                     sample_bytes=int(SLACK * (state + gates + static + trains) * itemsize),
                     widest=max(units.values()))


@dataclass(frozen=True)
class Pieces:
    """b samples simulated at once, in time chunks of ``chunk`` steps."""

    batch: int
    chunk: int


def plan_pieces(fp: Footprint, steps: int, batch: int, *, budget: int, held: int,
                itemsize: int, cache_bytes: int | None = None) -> Pieces:
    """The largest b·Tc (b ≤ batch, Tc ≤ T) that fits ``budget`` − ``held`` (module docstring).
    Whole T per sample when a sample fits, else one sample in chunks of Tc < T steps; at least
    one sample × one step, even over the budget (the caller reports that)."""
    room = max(budget - held, 0)
    rows = room // max(fp.row_bytes, 1)
    if cache_bytes is not None:
        rows = min(rows, max(cache_bytes // max(fp.widest * itemsize, 1), MIN_ROWS))
    rows = max(int(rows), 1)
    if rows >= steps:
        b = max(1, min(batch, rows // steps,
                       room // max(fp.sample_bytes + steps * fp.row_bytes, 1)))
        return Pieces(b, steps)
    rows = min(rows, max(1, (room - fp.sample_bytes) // max(fp.row_bytes, 1)))
    return Pieces(1, max(1, int(rows)))


def piece_bytes(fp: Footprint, pieces: Pieces) -> int:
    """What the simulator allocates for one piece: b samples' carried state and b·Tc rows."""
    return pieces.batch * (fp.sample_bytes + pieces.chunk * fp.row_bytes)


def run_bytes(graph: Graph, steps: int, batch: int, *, budget: str | int | None,
              device: Any = None, itemsize: int = 4, record: bool = False) -> int:
    """Bytes a gpu-simulator run of ``graph`` will allocate for its pieces (``plan_pieces``
    under ``budget``), before it is compiled: the pieces ``run_memory`` counts. An ANN graph
    counts every layer with an activation (and every ReLU) as a future spiking layer with 2
    state tensors; the budget is the only bound used (the
    CPU cache bound can only pick fewer rows)."""
    order = [n for n, _ in graph.topo()]
    inputs = {n: graph.inputs(n) for n in order}
    neurons = {n: 2 for n, op in graph.topo()
               if (isinstance(op, Layer) and (op.neuron is not None or op.act is not None))
               or isinstance(op, ReLU)}
    fp = footprint(graph, order, inputs, neurons, itemsize, record=record, steps=steps)
    pieces = plan_pieces(fp, steps, batch, budget=budget_bytes(budget, device),
                         held=current_bytes(device), itemsize=itemsize)
    return piece_bytes(fp, pieces)


def run_memory(samples: int, timesteps: int, neurons: int, batch: int, outputs: int,
               record: bool = False, *, pieces: float | None = None) -> float:
    """Bytes a simulation allocates, at least: predictions (T, N) int64, the readout (N, K),
    per-batch state (a few float32 copies of every neuron), recorded trains (T, N, neurons).

    ``pieces``: the bytes of the pieces a simulator that splits its batch and time steps to
    fit its memory budget will hold (``run_bytes``, ``GpuNetwork.plan_bytes``: b samples × Tc
    steps as its budget picks them), instead of ``batch`` samples' state; so an ImageNet run
    that the chunked gpu simulator fits is not refused for a batch it never holds at once."""
    state = 4.0 * 4 * min(batch, samples) * neurons if pieces is None else float(pieces)
    b = 8.0 * timesteps * samples + 8.0 * samples * outputs + state
    if record:
        b += 1.0 * timesteps * samples * neurons
    return b


def _is_out_of_memory(e: BaseException) -> bool:
    """A failed allocation: Python's MemoryError, torch's OutOfMemoryError (CUDA), or the
    RuntimeError torch's CPU allocator raises ("can't allocate memory")."""
    if isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError":
        return True
    return isinstance(e, RuntimeError) and ("can't allocate memory" in str(e)
                                            or "out of memory" in str(e).lower())


@contextmanager
def too_large_on_oom(what: str) -> Iterator[None]:
    """While inside, a failed allocation is one ``CompileError`` ("too large: ``what`` needs
    more memory than is free") instead of a torch traceback: the backstop behind the estimates
    (``validate.check_memory``) for a caller that did not estimate (the tuner, the Python
    API)."""
    try:
        yield
    except (MemoryError, RuntimeError) as e:
        if not _is_out_of_memory(e):
            raise
        import re

        asked = re.search(r"tried to allocate [^.(]*", str(e))
        first = asked.group(0).strip() if asked else (" ".join(str(e).split())[:160]
                                                       or type(e).__name__)
        raise CompileError("too large", [Diagnostic(
            f"{what} needs more memory than is free ({first})",
            hint="a smaller --timesteps or --batch-size, or --memory-budget")]) from None
