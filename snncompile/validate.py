"""One validation layer for the CLI and the Python API (numpy only): types, ranges, sizes, data.

Every check raises a one-line ``CompileError`` (CLI: exit 2, nothing written) *before* the work
that the bad value would break or make slow: counts are integers (never ``bool``, never 2.7),
sample counts are >= 1 (a negative count is not a Python slice), data are finite numbers of
the model's input shape, labels lie in the model's classes ``0..K-1``, and what a run will
allocate is estimated first (``snncompile.memory``) and compared with the memory the machine
has free (``memory.available_bytes``: ``MemAvailable`` in ``/proc/meminfo``), so
``--timesteps 1000000000`` or an ``.npz`` that declares a 2 TiB array is refused instead of
reaching ``MemoryError`` or the OOM killer.
An ``.npz`` is a zip of ``.npy`` members; their headers (NEP 1: magic, version, a dict with
``descr``, ``fortran_order``, ``shape``) are read and checked before any array is loaded.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from snncompile import memory
from snncompile.ir.diagnostics import CompileError, Diagnostic
from snncompile.ir.verify import layout_hint

#: refuse a run whose estimate exceeds this fraction of the free memory
MEMORY_FRACTION = 0.8


def _err(headline: str, msg: str, hint: str | None = None) -> CompileError:
    return CompileError(headline, [Diagnostic(msg, hint=hint)])


# ------------------------------------------------------------------------------ scalars
def integer(value: Any, name: str, *, minimum: int | None = 1, maximum: int | None = None,
            headline: str = "bad option") -> int:
    """``value`` as an int: an int or numpy integer (not a bool, not a float, not a string)
    in [minimum, maximum]."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral,)):
        raise _err(headline, f"{name}={value!r} ({type(value).__name__}); must be an integer")
    v = int(value)
    if minimum is not None and v < minimum:
        raise _err(headline, f"{name}={v}; must be >= {minimum}")
    if maximum is not None and v > maximum:
        raise _err(headline, f"{name}={v}; must be <= {maximum}")
    return v


def real(value: Any, name: str, *, headline: str = "bad option") -> float:
    """``value`` as a finite float (ints accepted, bools and strings not)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise _err(headline, f"{name}={value!r} ({type(value).__name__}); must be a number")
    v = float(value)
    if not math.isfinite(v):
        raise _err(headline, f"{name}={v}; must be finite")
    return v


def sample_count(value: Any, name: str) -> int | None:
    """A number of samples to use: None (all) or an integer >= 1."""
    return None if value is None else integer(value, name, minimum=1)


def option_problems(o: Any) -> list[Diagnostic]:
    """Problems of an options dataclass (``CompileOptions``), read from its declarations
    (``snncompile.options.option``): each field's type from its annotation (``int``: an
    integer, never a bool or 2.7; ``float``: a finite number; ``| None``: None allowed), its
    ``choices`` and its ``range`` (the relations between fields are the dataclass's own)."""
    return [d for f in dataclasses.fields(o)
            if (d := field_problem(f, getattr(o, f.name))) is not None]


def field_problem(f: dataclasses.Field, v: Any) -> Diagnostic | None:
    """What is wrong with value ``v`` of the declared option ``f`` (None: nothing)."""
    kinds = [t.strip() for t in str(f.type).split("|")]
    if v is None and "None" in kinds:
        return None
    if kinds[0] == "int" and (isinstance(v, (bool, np.bool_))
                              or not isinstance(v, numbers.Integral)):
        return Diagnostic(f"{f.name}={v!r} ({type(v).__name__}); must be an integer")
    if kinds[0] == "float" and (isinstance(v, (bool, np.bool_)) or not isinstance(
            v, numbers.Real) or not math.isfinite(v)):
        return Diagnostic(f"{f.name}={v!r}; must be a finite number")
    choices = f.metadata.get("choices")
    choices = choices() if callable(choices) else choices
    if choices is not None and v not in choices:
        return Diagnostic(f"{f.name}={v!r}; choose from {', '.join(map(str, choices))}")
    rng = f.metadata.get("range")
    if rng is not None:
        lo, hi = rng
        low_bad = lo is not None and (v <= lo if f.metadata.get("lo_open") else v < lo)
        if low_bad or (hi is not None and v > hi):
            return Diagnostic(f"{f.name}={v}; must be {range_text(f)}",
                              hint=f.metadata.get("hint"))
    return None


def range_text(f: dataclasses.Field) -> str:
    """An option's ``range`` in words: ">= 1", "in 2..16", "in (0.0, 1.0]"."""
    lo, hi = f.metadata["range"]
    if hi is None:
        return f"{'>' if f.metadata.get('lo_open') else '>='} {lo}"
    if isinstance(lo, int) and isinstance(hi, int):
        return f"in {lo}..{hi}"
    return f"in {'(' if f.metadata.get('lo_open') else '['}{lo}, {hi}]"


# ------------------------------------------------------------------------------ memory
def _gib(b: float) -> str:
    return f"{b / 2**30:.3g} GiB"


def check_memory(need: float, what: str, hint: str | None = None) -> None:
    """Refuse when ``need`` bytes (an estimate of ``snncompile.memory``) exceed MEMORY_FRACTION
    of the free memory (``memory.available_bytes``)."""
    have = memory.available_bytes()
    if need > MEMORY_FRACTION * have:
        raise _err("too large", f"{what} needs about {_gib(need)}; {_gib(have)} is free",
                   hint=hint)


# ------------------------------------------------------------------------------ arrays
def samples(x: Any, name: str = "x", *, shape: Sequence[int] | None = None,
            channels_last: bool = False) -> np.ndarray:
    """``x`` as a finite float32 array (N, *shape) with N >= 1. Lists, strings, objects,
    booleans and complex numbers are refused (not silently converted). ``channels_last``: the
    model's ONNX input is (N, H, W, C) (the refusal of such data says how to transpose it)."""
    if not isinstance(x, np.ndarray) and type(x).__module__.split(".")[0] == "torch" \
            and hasattr(x, "detach"):
        x = x.detach().cpu().numpy()  # a torch tensor (duck-typed: this module is numpy-only)
    if not isinstance(x, np.ndarray):
        raise _err("bad data", f"{name} is a {type(x).__name__}; expected a numpy array (N, ...)",
                   hint="np.asarray(x, np.float32)")
    if x.dtype.kind not in "fiu":
        raise _err("bad data", f"{name} has dtype {x.dtype}; expected float32 (or int)")
    if x.ndim < 1 or len(x) == 0:
        raise _err("bad data", f"{name} has shape {tuple(x.shape)}: no samples")
    if shape is not None and tuple(x.shape[1:]) != tuple(shape):
        raise _err("data does not fit the model", f"{name} has shape {tuple(x.shape)}, the "
                   f"model expects (N, {', '.join(map(str, shape))})",
                   hint=layout_hint(x.shape, tuple(shape), channels_last))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no overflow warning before the error line
        x32 = x.astype(np.float32, copy=False)
        finite = bool(np.isfinite(x32).all())
    if not finite:
        raise _err("bad data", f"{name} contains NaN or Inf (or values beyond float32)")
    return x32


def labels(y: Any, n: int, classes: int | None, name: str = "y") -> np.ndarray:
    """``y`` as int64 (n,) with every label in 0..classes-1."""
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n or y.dtype.kind not in "iu":
        raise _err("bad labels", f"{name} has dtype {y.dtype} and shape {y.shape}; "
                   f"expected ({n},) int")
    y = y.astype(np.int64)
    if classes is not None and len(y) and (y.min() < 0 or y.max() >= classes):
        bad = int(y[(y < 0) | (y >= classes)][0])
        raise _err("bad labels", f"{name} holds label {bad}; the model has {classes} classes "
                   f"(labels 0..{classes - 1})")
    return y


def classes(graph: Any) -> int | None:
    """The number of classes K of a graph whose output is (K,) (else None)."""
    try:
        shape = graph.shape(graph.output_name)
    except Exception:  # noqa: BLE001 - any graph we cannot read: no class check
        return None
    if shape is None:
        return None
    return int(np.prod(shape)) if len(shape) >= 1 else None


def graph_units(graph: Any) -> int:
    """The number of values one sample produces over all ops of ``graph`` (an upper bound on
    its neurons)."""
    total = 0
    for name in graph.nx.nodes:
        shape = graph.nx.nodes[name].get("shape")
        if shape:
            total += int(np.prod([int(d) for d in shape]))
    return total


def spiking_ready(graph: Any, target: str) -> None:
    """A graph for a spiking target has no ANN activation left: every layer with an
    activation carries a neuron. A pipeline without the conversion passes (``--pipeline``
    with only the ANN passes) would otherwise run as a network without spikes."""
    left = [n for n, d in graph.nx.nodes(data=True)
            if getattr(d["op"], "act", None) is not None and getattr(d["op"], "neuron", 1) is None]
    if left:
        raise _err("the IR is not spiking", f"{len(left)} activation(s) were not converted "
                   f"(first: {min(left)}); target {target!r} needs a spiking IR",
                   hint="keep balance-thresholds in the pipeline (see --print-pipeline)")


# ------------------------------------------------------------------------------ files
def data_file(path: str | Path) -> Path:
    """Check that ``path`` is an ``.npz`` file (zip) whose members' declared arrays fit in
    memory, reading only the headers. Returns the path."""
    p = Path(path)
    if p.is_dir():
        raise _err("bad data file", f"{p} is a folder; expected an .npz file")
    if not p.exists():
        raise _err("data file not found", str(p))
    if not p.is_file():
        raise _err("bad data file", f"{p} is not a regular file")
    try:
        with open(p, "rb") as f:
            head = f.read(6)
    except OSError as e:
        raise _err("cannot read data file", f"{p}: {e.strerror}") from None
    if head.startswith(b"\x93NUMPY"):
        raise _err("bad data file", f"{p} is a .npy file (one array); expected an .npz with "
                   "arrays x and y", hint="np.savez(path, x=x, y=y)")
    if not head.startswith(b"PK"):
        raise _err("bad data file", f"{p} is not an .npz (zip) file",
                   hint="np.savez(path, x=x, y=y)")
    total = 0.0
    try:
        with zipfile.ZipFile(p) as z:
            for info in z.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with z.open(info) as m:
                    shape, dtype = _npy_header(m, f"{p}:{info.filename}")
                nbytes = float(np.prod([float(d) for d in shape])) * dtype.itemsize
                if info.compress_type == zipfile.ZIP_STORED and nbytes > info.file_size:
                    raise _err("bad data file", f"{p}: {info.filename} declares {shape} "
                               f"{dtype} ({_gib(nbytes)}) but holds {info.file_size} bytes")
                total += nbytes
    except CompileError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError, NotImplementedError,
            RuntimeError) as e:
        raise _err("cannot read data file", f"{p}: {one_line(e)}") from None
    check_memory(2 * total, f"{p} (its arrays as float32)")
    return p


def one_line(e: BaseException, limit: int = 200) -> str:
    """An exception's message on one line (whitespace runs collapsed), at most ``limit``
    characters; its type name when it has no message."""
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _npy_header(f: Any, where: str) -> tuple[tuple[int, ...], np.dtype]:
    from numpy.lib import format as npf

    try:
        version = npf.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = npf.read_array_header_1_0(f)
        elif version in ((2, 0), (3, 0)):
            shape, _, dtype = npf.read_array_header_2_0(f)
        else:
            raise ValueError(f"npy version {version}")
    except Exception as e:  # noqa: BLE001 - numpy parses the header dict with ast and
        # tokenize: a corrupt one raises ValueError, SyntaxError, tokenize.TokenError, ...
        raise _err("bad data file", f"{where}: unreadable .npy header ({one_line(e)})") from None
    if dtype.hasobject:
        raise _err("bad data file", f"{where}: holds Python objects (pickled data); "
                   "expected numbers")
    if dtype.kind in "SUVMm":
        raise _err("bad data file", f"{where}: holds {dtype} values; expected numbers")
    if any(int(d) < 0 for d in shape):
        raise _err("bad data file", f"{where}: negative dimension in {shape}")
    return tuple(int(d) for d in shape), dtype


def model_file(path: str | Path) -> Path:
    """The model path exists and is a file (not a folder)."""
    p = Path(path)
    if str(path).strip() == "":
        raise _err("bad model", "the model path is empty")
    if p.is_dir():
        raise _err("bad model", f"{p} is a folder; expected an .onnx file")
    return p


def names(given: Sequence[str], known: Sequence[str], what: str, extra: Sequence[str] = ()
          ) -> None:
    """Every name in ``given`` is one of ``known`` (or ``extra``); '_' and '-' are the same."""
    norm = {k.replace("_", "-") for k in (*known, *extra)}
    for g in given:
        if g.replace("_", "-") not in norm:
            raise _err("bad option", f"{what} {g!r} is not in the pipeline",
                       hint=f"choose from {', '.join(sorted(norm))}")
