"""Compile options shared by the CLI and the Python API, and the default pass pipelines."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from snncompile.ir.diagnostics import CompileError, Diagnostic

TARGETS = ("ir", "gpu", "loihi")
NORMS = ("max", "p99", "p99.9", "p99.99")
NEURONS = ("if", "if-hard", "signed-if", "gn", "bistable", "sigma-delta")


@dataclass(frozen=True, kw_only=True)
class CompileOptions:
    """Every user-settable knob. CLI flags map one to one (``--weight-bits`` -> weight_bits)."""

    timesteps: int = 32
    norm: str = "p99.9"  # threshold balancing: max | p99 | p99.9 | p99.99
    channelwise: bool = False  # one threshold per output channel
    calibration_samples: int = 512
    alpha: float = 0.5  # v(0) = α·θ
    neuron: str = "if"
    gn_members: int = 4
    bistable_period: int = 2  # bistable: window ρ (steps integrating, then as many firing)
    sd_delta: float = 0.0625  # sigma-delta: delta threshold as a fraction of θ
    weight_bits: int | None = None  # None: float weights
    weight_granularity: str = "layer"  # layer | channel
    fold_thresholds: bool = False  # weight normalisation: θ folded into the weights (θ = 1)
    sync_shortcuts: bool = False  # BSNN synchronous neurons on residual shortcuts
    device: str = "auto"  # auto | cpu | cuda
    batch_size: int = 256
    encoding: str = "direct"  # direct | poisson
    seed: int = 0
    lava_mode: str = "fixed"  # float | fixed
    eval_samples: int | None = None
    export: str | None = None  # netx
    tune: bool = True  # choose thresholds / α per layer for `timesteps` (snncompile.tune)
    tune_budget: float | None = None  # seconds; None: snncompile.tune.DEFAULT_BUDGET_S

    def __post_init__(self) -> None:
        bad: list[Diagnostic] = []
        if self.timesteps < 1:
            bad.append(Diagnostic(f"timesteps={self.timesteps}; must be >= 1"))
        if self.norm not in NORMS:
            bad.append(Diagnostic(f"norm={self.norm!r}; choose from {', '.join(NORMS)}"))
        if self.neuron not in NEURONS:
            bad.append(Diagnostic(f"neuron={self.neuron!r}; choose from {', '.join(NEURONS)}"))
        if self.weight_bits is not None and not 2 <= self.weight_bits <= 16:
            bad.append(Diagnostic(f"weight_bits={self.weight_bits}; must be in 2..16"))
        if self.weight_granularity not in ("layer", "channel"):
            bad.append(Diagnostic(f"weight_granularity={self.weight_granularity!r}; layer | channel"))
        if not 0.0 <= self.alpha <= 1.0:
            bad.append(Diagnostic(f"alpha={self.alpha}; must be in [0, 1]"))
        if self.device not in ("auto", "cpu", "cuda"):
            bad.append(Diagnostic(f"device={self.device!r}; auto | cpu | cuda"))
        if self.encoding not in ("direct", "poisson"):
            bad.append(Diagnostic(f"encoding={self.encoding!r}; direct | poisson"))
        if self.lava_mode not in ("float", "fixed"):
            bad.append(Diagnostic(f"lava_mode={self.lava_mode!r}; float | fixed"))
        if self.batch_size < 1:
            bad.append(Diagnostic(f"batch_size={self.batch_size}; must be >= 1"))
        if self.gn_members < 1:
            bad.append(Diagnostic(f"gn_members={self.gn_members}; must be >= 1"))
        if self.bistable_period < 1:
            bad.append(Diagnostic(f"bistable_period={self.bistable_period}; must be >= 1"))
        if not 0.0 < self.sd_delta <= 1.0:
            bad.append(Diagnostic(f"sd_delta={self.sd_delta}; must be in (0, 1]"))
        if self.tune_budget is not None and not self.tune_budget > 0:
            bad.append(Diagnostic(f"tune_budget={self.tune_budget}; must be > 0 seconds"))
        if bad:
            raise CompileError("bad option", bad)

    @classmethod
    def from_kwargs(cls, options: dict[str, Any]) -> CompileOptions:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise CompileError("unknown option", [Diagnostic(
                ", ".join(unknown), hint=f"options: {', '.join(sorted(known))}")])
        return cls(**options)


FRONT = ("fold-batchnorm", "remove-identity", "fuse-activations")


def conversion_passes(o: CompileOptions) -> list[str]:
    """The ANN -> SNN passes for the options (each a replayable spec string)."""
    specs = [f"balance-thresholds{{norm={o.norm},channelwise={str(o.channelwise).lower()}}}",
             f"initial-potential{{alpha={o.alpha}}}"]
    if o.weight_bits is not None:
        specs.append(f"quantize-weights{{bits={o.weight_bits},granularity={o.weight_granularity}}}")
    if o.fold_thresholds:
        specs.append("fold-thresholds")
    if o.neuron != "if":
        extra = {"gn": f",members={o.gn_members}", "bistable": f",period={o.bistable_period}",
                 "sigma-delta": f",delta={o.sd_delta}"}.get(o.neuron, "")
        specs.append(f"select-neurons{{model={o.neuron}{extra}}}")
    if o.sync_shortcuts:
        specs.append("sync-shortcuts")
    return specs


def default_pipeline(target: str, o: CompileOptions) -> list[str]:
    if target == "ir":
        return list(FRONT)
    return [*FRONT, *conversion_passes(o)]
