"""Compile options: declared once, here; the CLI flags, defaults, choices, help and validation are
derived from these declarations (``snncompile.tools.cli`` builds argparse from ``OPTIONS``).

Each field of ``CompileOptions`` carries its metadata through ``option(...)``: ``help``, the
argparse ``group``, ``choices`` (a tuple, or a callable for registries such as the neuron
models), an inclusive ``range`` (lo, hi), and the short ``flags`` (``-T``). The default pipeline
built from these options lives in ``snncompile.passes.pipelines``; backends receive
``RunOptions``-style subsets through ``CompileOptions`` attributes they read.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from snncompile import neurons
from snncompile.ir.diagnostics import CompileError, Diagnostic
from snncompile.memory import parse_bytes

TARGETS = ("ir", "gpu", "loihi")
NORMS = ("max", "p99", "p99.9", "p99.99")


def option(default: Any, help: str, *, group: str = "conversion",
           choices: tuple[Any, ...] | Callable[[], tuple[Any, ...]] | None = None,
           range: tuple[float | None, float | None] | None = None,  # noqa: A002
           flags: tuple[str, ...] = (), lo_open: bool = False) -> Any:
    """A ``dataclasses.field`` whose metadata drives the CLI and the validation."""
    return dataclasses.field(default=default, metadata={
        "help": help, "group": group, "choices": choices, "range": range, "flags": flags,
        "lo_open": lo_open})


def choices_of(f: dataclasses.Field) -> tuple[Any, ...] | None:
    c = f.metadata.get("choices")
    return c() if callable(c) else c


@dataclass(frozen=True, kw_only=True)
class CompileOptions:
    """Every user-settable knob. CLI flags map one to one (``--weight-bits`` -> weight_bits)."""

    timesteps: int = option(32, "simulation timesteps T", group="main", range=(1, None),
                            flags=("-T",))
    no_tune: bool = option(False, "fixed conversion settings instead of tuning them for T on "
                           "held-out calibration data (a non-default --norm, --channelwise or "
                           "--alpha, or --pipeline, also turns tuning off)")
    tune_budget: int | None = option(None, "samples the tuning may simulate, each for T steps "
                                     "(about the cost of evaluating as many; default 8192); "
                                     "deterministic, independent of machine and load",
                                     range=(1, None))
    norm: str = option("p99.9", "threshold balancing: max or a percentile of the calibration "
                       "activations", choices=NORMS)
    channelwise: bool = option(False, "one threshold per output channel")
    calibration_samples: int = option(512, "calibration samples to use (spread evenly over "
                                      "a file or folder)", group="data", range=(1, None))
    alpha: float = option(0.5, "initial potential v(0) = α·θ", range=(0.0, 1.0))
    neuron: str = option("if", "neuron model (snncompile.neurons); without this flag the tuner "
                         "may choose signed-if where it measures better, --neuron if pins IF",
                         choices=neurons.names)
    gn_members: int = option(4, "members per group neuron", range=(1, None))
    bistable_period: int = option(2, "bistable neurons: steps integrating, then as many firing",
                                  range=(1, None))
    sd_delta: float = option(0.0625, "sigma-delta: send a change once it exceeds this fraction "
                             "of θ", range=(0.0, 1.0), lo_open=True)
    weight_bits: int | None = option(None, "quantize weights to B bits (2..16)", range=(2, 16))
    weight_granularity: str = option("layer", "weight quantization scale per layer or channel",
                                     choices=("layer", "channel"))
    fold_thresholds: bool = option(False, "weight normalisation: fold thresholds into weights")
    sync_shortcuts: bool = option(False, "BSNN synchronous neurons on residual shortcuts")
    maxpool: str = option("current", "spiking MaxPool: current (one neuron per window, driven by "
                          "the max of its inputs' cumulative currents; pass maxpool-current) "
                          "or gate (pass the spikes of the unit with the most so far)",
                          choices=("current", "gate"))
    device: str = option("auto", "torch device", group="simulation",
                         choices=("auto", "cpu", "cuda"))
    tf32: bool = option(False, "gpu target on CUDA: float32 convolutions and matrix products "
                        "on TF32 tensor cores (faster on Ampere and later GPUs; currents rounded "
                        "to 11 significant bits, so spikes near threshold differ from a CPU run)",
                        group="simulation")
    batch_size: int = option(256, "samples simulated at once", group="simulation",
                             range=(1, None))
    encoding: str = option("direct", "input coding", group="simulation",
                           choices=("direct", "poisson"))
    seed: int = option(0, "seed (data split, Poisson input)", group="simulation")
    lava_mode: str = option("fixed", "Lava floating_pt or bit-accurate fixed_pt models",
                            group="simulation", choices=("float", "fixed"))
    eval_samples: int | None = option(None, "evaluation samples to use, spread evenly over "
                                      "the set (default all)",
                                      group="data", range=(1, None))
    memory_budget: str | None = option(
        None, "peak memory of a simulation run, bytes with a K/M/G suffix (e.g. 4G); picks the "
        "samples simulated at once and the time chunk (default: half of the available RAM, or "
        "of the free CUDA memory)", group="simulation")
    export: str | None = option(None, "also write an exchange file: netx (loihi target, "
                                "network.net) or nir (both targets, network.nir)",
                                group="simulation", choices=("netx", "nir"))
    strict_limits: bool = option(False, "loihi: fail on estimated Loihi 2 limits (per-core "
                                 "figures that are not public), not only on certain ones",
                                 group="simulation")

    def __post_init__(self) -> None:
        from snncompile.validate import option_problems

        bad: list[Diagnostic] = option_problems(self)  # types, counts, bounds (validate.py)
        if bad:
            raise CompileError("bad option", bad)
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v is None:
                continue
            choices = choices_of(f)
            if choices is not None and v not in choices:
                bad.append(Diagnostic(f"{f.name}={v!r}; choose from "
                                      f"{', '.join(map(str, choices))}"))
            rng = f.metadata.get("range")
            if rng is not None:
                lo, hi = rng
                low_bad = lo is not None and (v <= lo if f.metadata.get("lo_open") else v < lo)
                if low_bad or (hi is not None and v > hi):
                    bad.append(Diagnostic(f"{f.name}={v}; must be {_range_text(f)}"))
        if self.memory_budget is not None:
            try:
                self.__dict__["memory_bytes"] = parse_bytes(self.memory_budget)  # parsed once
            except ValueError as e:
                bad.append(Diagnostic(f"memory_budget={self.memory_budget!r}; {e}"))
        if bad:
            raise CompileError("bad option", bad)

    @functools.cached_property
    def memory_bytes(self) -> int | None:
        """``memory_budget`` in bytes (parsed once; None: the default budget of
        ``snncompile.memory.budget_bytes``)."""
        return None if self.memory_budget is None else parse_bytes(self.memory_budget)

    @classmethod
    def from_kwargs(cls, options: dict[str, Any]) -> CompileOptions:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise CompileError("unknown option", [Diagnostic(
                ", ".join(unknown), hint=f"options: {', '.join(sorted(known))}")])
        return cls(**options)


def _range_text(f: dataclasses.Field) -> str:
    lo, hi = f.metadata["range"]
    if hi is None:
        return f"{'>' if f.metadata.get('lo_open') else '>='} {lo}"
    if isinstance(lo, int) and isinstance(hi, int):
        return f"in {lo}..{hi}"
    return f"in {'(' if f.metadata.get('lo_open') else '['}{lo}, {hi}]"


__all__ = ["NORMS", "OPTIONS", "TARGETS", "CompileOptions", "choices_of", "option", "parse_bytes"]

#: the option declarations, in order (the CLI's source of truth)
OPTIONS: tuple[dataclasses.Field, ...] = dataclasses.fields(CompileOptions)
