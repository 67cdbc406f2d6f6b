"""Compile options: declared once, here; the CLI flags, defaults, choices, help and validation are
derived from these declarations (``snncompile.tools.cli`` builds argparse from ``OPTIONS``).

Each field of ``CompileOptions`` carries its metadata through ``option(...)``: ``help``, the
argparse ``group``, ``choices`` (a tuple, or a callable for registries such as the neuron
models), an inclusive ``range`` (lo, hi), and the short ``flags`` (``-T``). The default pipeline
built from these options lives in ``snncompile.passes.pipelines``; backends receive
``RunOptions``-style subsets through ``CompileOptions`` attributes they read.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from snncompile import neurons
from snncompile.ir.diagnostics import CompileError, Diagnostic
from snncompile.memory import parse_bytes

TARGETS = ("ir", "gpu", "loihi")
#: the largest count a run takes (a hang is worse than an error; torch indexes with int32)
MAX_INT32 = 2**31 - 1
NORMS = ("max", "p99", "p99.9", "p99.99")


def option(default: Any, help: str, *, group: str = "conversion",
           choices: tuple[Any, ...] | Callable[[], tuple[Any, ...]] | None = None,
           range: tuple[float | None, float | None] | None = None,  # noqa: A002
           flags: tuple[str, ...] = (), lo_open: bool = False, hint: str | None = None,
           metavar: str | None = None, parse: Callable[[str], Any] | None = None,
           show_default: bool = True) -> Any:
    """A ``dataclasses.field`` whose metadata drives the CLI and the validation
    (``validate.option_problems``: the type from the annotation, then ``choices`` and
    ``range``; ``hint`` goes with an out-of-range value's error). ``parse``: how the CLI reads
    the flag's text (default: the annotation's type); ``show_default``: append "(default X)"
    to the help."""
    return dataclasses.field(default=default, metadata={
        "help": help, "group": group, "choices": choices, "range": range, "flags": flags,
        "lo_open": lo_open, "hint": hint, "metavar": metavar, "parse": parse,
        "show_default": show_default})


def bounds(name: str) -> tuple[float | None, float | None]:
    """The declared ``range`` of the option ``name`` ((None, None) without one)."""
    f = next(f for f in OPTIONS if f.name == name)
    return f.metadata.get("range") or (None, None)


def choices_of(f: dataclasses.Field) -> tuple[Any, ...] | None:
    c = f.metadata.get("choices")
    return c() if callable(c) else c


@dataclass(frozen=True, kw_only=True)
class CompileOptions:
    """Every user-settable knob. CLI flags map one to one (``--weight-bits`` -> weight_bits)."""

    timesteps: int = option(32, "simulation timesteps T", group="main", range=(1, MAX_INT32),
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
    gn_members: int = option(4, "members per group neuron", range=(1, 256),
                             hint="group neurons use a few members (2..16)")
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
    seed: int = option(0, "seed (data split, Poisson input)", group="simulation",
                       range=(0, MAX_INT32))
    lava_mode: str = option("fixed", "Lava floating_pt or bit-accurate fixed_pt models",
                            group="simulation", choices=("float", "fixed"))
    eval_samples: int | None = option(None, "evaluation samples to use, spread evenly over "
                                      "the set (default all)",
                                      group="data", range=(1, None),
                                      hint="omit it for all samples")
    event_binning: str = option("time", "event recordings: split each into T frames of equal "
                                "duration (time) or equal event count (count); frame t is the "
                                "input current of step t", group="data",
                                choices=("time", "count"))
    memory_budget: str | None = option(
        None, "peak memory of a simulation run, bytes with a K/M/G suffix (e.g. 4G); picks the "
        "samples simulated at once and the time chunk (default: half of the available RAM, or "
        "of the free CUDA memory)", group="simulation")
    export: str | None = option(None, "also write an exchange file: netx (loihi target, "
                                "network.net) or nir (both targets, network.nir)",
                                group="simulation", choices=("netx", "nir"))
    step_time: float | None = option(None, "seconds per timestep for the latency estimate in "
                                     "report.json's energy block (default: estimated from "
                                     "Loihi's per-operation times, Davies et al. 2018)",
                                     group="simulation", range=(0.0, None), lo_open=True)
    strict_limits: bool = option(False, "loihi: fail on estimated Loihi 2 limits (per-core "
                                 "figures that are not public), not only on certain ones",
                                 group="simulation")

    def __post_init__(self) -> None:
        from snncompile.validate import option_problems

        bad: list[Diagnostic] = option_problems(self) or self._relations()
        if self.step_time is not None and (isinstance(self.step_time, bool) or not isinstance(
                self.step_time, (int, float)) or not math.isfinite(self.step_time)):
            bad.append(Diagnostic(f"step_time={self.step_time!r}; must be a finite number of "
                                  "seconds > 0"))
        if not bad and self.memory_budget is not None:
            try:
                self.__dict__["memory_bytes"] = parse_bytes(self.memory_budget)  # parsed once
            except ValueError as e:
                bad.append(Diagnostic(f"memory_budget={self.memory_budget!r}; {e}"))
        if bad:
            raise CompileError("bad option", bad)

    def _relations(self) -> list[Diagnostic]:
        """Constraints between options that are each valid on their own."""
        if self.neuron == "bistable" and self.bistable_period >= self.timesteps:
            return [Diagnostic(
                f"bistable_period={self.bistable_period} >= timesteps={self.timesteps}: no "
                "bistable neuron would fire within T", hint="a period well below T (default 2)")]
        return []

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


__all__ = ["DATA_OPTIONS", "FINETUNE_OPTIONS", "MAX_INT32", "NORMS", "OPTIONS", "TARGETS",
           "CompileOptions", "DataOptions", "FinetuneOptions", "bounds", "choices_of",
           "floats_arg", "ints_arg", "option", "parse_bytes"]

#: the option declarations, in order (the CLI's source of truth)
OPTIONS: tuple[dataclasses.Field, ...] = dataclasses.fields(CompileOptions)


def ints_arg(text: str) -> tuple[int, int]:
    """``"224"`` -> (224, 224), ``"224,256"`` -> (224, 256) (positive; ``--crop``)."""
    try:
        v = tuple(int(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or H,W, got {text!r}") from None
    if len(v) not in (1, 2) or min(v) < 1:
        raise argparse.ArgumentTypeError(f"expected N or H,W (positive), got {text!r}")
    return (v[0], v[1]) if len(v) == 2 else (v[0], v[0])


def floats_arg(text: str) -> tuple[float, ...]:
    """``"0.5,0.5,0.5"`` -> (0.5, 0.5, 0.5) (``--mean``, ``--std``)."""
    try:
        return tuple(float(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") \
            from None


def _checked(self: Any) -> None:
    from snncompile.validate import option_problems

    bad = option_problems(self)
    if bad:
        raise CompileError("bad option", bad)


@dataclass(frozen=True, kw_only=True)
class DataOptions:
    """Where the data come from and how images are read: the ``data`` flags of the command
    line (``driver.DataSpec`` takes the same fields, and samples in memory, from Python)."""

    dataset: str | None = option(None, "bundled dataset for calib + eval", group="data",
                                 choices=("digits",))
    calibration: str | None = option(
        None, "calibration data: F.npz (x, optional y), an image folder (ROOT/<class>/<image>) "
        "or module:callable returning a torch Dataset", group="data", metavar="DATA")
    eval: str | None = option(None, "evaluation data (labelled): as --calibration", group="data",
                              metavar="DATA")
    preprocess: str = option("none", "image-folder preset (imagenet: resize 256, crop 224, RGB, "
                             "ImageNet mean/std; default none: pixels/255); the flags below "
                             "override it", group="data",
                             choices=("none", "imagenet", "cifar10", "mnist"), show_default=False)
    resize: int | None = option(None, "images: shorter side to this many pixels (bilinear)",
                                group="data")
    crop: tuple[int, ...] | None = option(
        None, "images: center crop (default: the model's input size when neither --resize nor "
        "--crop is given)", group="data", metavar="S|H,W", parse=ints_arg)
    mean: tuple[float, ...] | None = option(
        None, "images: per-channel mean subtracted from pixel/255", group="data",
        metavar="M[,M,M]", parse=floats_arg)
    std: tuple[float, ...] | None = option(
        None, "images: per-channel std dividing (pixel/255 - mean)", group="data",
        metavar="S[,S,S]", parse=floats_arg)
    color: str | None = option(None, "images: colour mode (default: from the model's input "
                               "channels)", group="data", choices=("rgb", "gray"))
    workers: int = option(2, "DataLoader worker processes decoding images ahead of the "
                          "simulator (0: in the main process)", group="data", range=(0, None))
    nir_reset: str = option("file", ".nir model: how its IF neurons reset (file: each IF's "
                            "metadata, else NIR's reset to 0; sinabs files: subtract)",
                            group="data", choices=("file", "subtract", "zero"),
                            show_default=False)

    __post_init__ = _checked


@dataclass(frozen=True, kw_only=True)
class FinetuneOptions:
    """The ``--finetune*`` flags (``snncompile.finetune.cli``): the method (``+`` chains methods,
    ``name{k=v}`` sets a method's options), epochs per method, Adam's relative learning rate, the
    T trained for (None: ``timesteps``), the batch size, at most this many calibration samples
    (None: all), the spike's surrogate gradient."""

    finetune: str | None = option(
        None, "train the converted SNN with the ANN as teacher (snncompile.finetune.METHODS: "
        "distill, temporal-consistency, layerwise); chain with +, e.g. "
        "distill+temporal-consistency; options as distill{layer_loss=rate}", group="finetune",
        metavar="METHOD")
    finetune_epochs: int = option(5, "epochs per method", group="finetune", range=(0, None))
    finetune_lr: float = option(2e-3, "Adam learning rate relative to each trained tensor's "
                                "RMS (a step moves a weight by about lr x its tensor's size)",
                                group="finetune", range=(0, None), lo_open=True)
    finetune_timesteps: int | None = option(None, "the T trained for (default: --timesteps)",
                                            group="finetune", range=(1, None))
    finetune_batch_size: int = option(64, "samples per training batch", group="finetune",
                                      range=(1, None))
    finetune_samples: int | None = option(None, "use at most this many calibration samples "
                                          "(default: all)", group="finetune", range=(1, None))
    finetune_holdout: float = option(0.1, "part of the fine-tuning samples held out to check "
                                     "that fine-tuning helped; the better network is kept "
                                     "(0: no check)", group="finetune", range=(0.0, 0.99))
    finetune_surrogate: str = option("triangle", "surrogate gradient of the spike",
                                     group="finetune",
                                     choices=("triangle", "rectangle", "sigmoid"))

    __post_init__ = _checked


DATA_OPTIONS: tuple[dataclasses.Field, ...] = dataclasses.fields(DataOptions)
FINETUNE_OPTIONS: tuple[dataclasses.Field, ...] = dataclasses.fields(FinetuneOptions)
