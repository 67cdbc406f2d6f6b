"""The neuron-model registry: every model is declared once, here or by a user.

A ``NeuronSpec`` says *what* a model is: its name (``Neuron.model`` in the IR is a key into this
registry), its parameters, its equations (the docstring of record; backends link here instead of
restating them), whether it sends graded or signed messages, and how ``select-neurons`` derives
the IR neuron's two model parameters from the pass options. Backends say *how*: each registers an
implementation against the name in its own table (``implement(name, target)``); a model without an
implementation on a target is one ``CompileError`` naming model and target. CLI choices, option
validation and ``select-neurons`` are derived from ``names()``.

Equations (layer l, step t, threshold θ, input current I(t); a spiking layer emits θ·s(t)):

    if           v(0) = α·θ;  v += I;  s = [v ≥ θ];  v -= s·θ              (reset by subtraction)
    if-hard      v(0) = α·θ;  v += I;  s = [v ≥ θ];  v = 0 where s          (stock Loihi LIF)
    signed-if    if, plus n += s; q = [v ≤ −ε·θ ∧ n > 0]; v += q·θ; n −= q; s −= q
                 (Fast-SNN: a negative spike takes back an earlier excess spike; ε = 1e-3)
    gn           θ = θ_group/M; v += I; s = Σ_{k=1..M} [v ≥ k·θ] ∈ {0..M}; v -= s·θ (Group Neurons)
    bistable     window ρ: each step s = [v ≥ θ], v -= s·θ, u += I; at a window's end v += u, u = 0
                 (BSNN reading, docs/neurons.md)
    sigma-delta  θ = δ·θ_layer; act = ReLU(I); d = act − S; S += d·[|d| ≥ θ]; emits S (graded,
                 lava.proc.sdn semantics)

``implement``'s tables are plain dicts per target; nothing here imports torch or a backend.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from snncompile.ir.diagnostics import CompileError, Diagnostic

T = TypeVar("T")


def _no_params(members: int, period: int, delta: float) -> tuple[int, float]:
    return 1, 1.0


@dataclass(frozen=True)
class NeuronSpec:
    """One neuron model.

    Attributes:
        name: the key (kebab-case), ``--neuron NAME`` and ``Neuron.model``.
        summary: one line for ``--help`` and listings.
        equations: the update equations (see the module docstring for the built-in ones).
        graded: messages are graded values (not 0/1 spikes); one message per nonzero value.
        signed: messages can be negative.
        params: select-neurons (members, period, delta) -> (IR ``members``, threshold scale):
            ``members`` is what the backends read (group size, window), and the layer's θ is
            multiplied by the scale (gn: 1/M, sigma-delta: δ).
        options: the select-neurons options this model reads (for help and validation).
    """

    name: str
    summary: str
    equations: str = ""
    graded: bool = False
    signed: bool = False
    params: Callable[[int, int, float], tuple[int, float]] = _no_params
    options: tuple[str, ...] = ()


_SPECS: dict[str, NeuronSpec] = {}
_IMPLS: dict[str, dict[str, Any]] = {}  # target -> model name -> implementation


def register_neuron(spec: NeuronSpec, *, replace: bool = False) -> NeuronSpec:
    """Declare a neuron model (a second declaration of a name is an error unless ``replace``)."""
    if spec.name in _SPECS and not replace:
        raise CompileError("neuron model declared twice", [Diagnostic(repr(spec.name))])
    _SPECS[spec.name] = spec
    return spec


def unregister_neuron(name: str) -> None:
    """Remove a model and its implementations (tests and plugins)."""
    _SPECS.pop(name, None)
    for table in _IMPLS.values():
        table.pop(name, None)


def names() -> tuple[str, ...]:
    return tuple(_SPECS)


def get_spec(name: str, *, node: str | None = None, origin: str | None = None) -> NeuronSpec:
    if name not in _SPECS:
        raise CompileError("unknown neuron model", [Diagnostic(
            repr(name), node=node, origin=origin, hint=f"models: {', '.join(_SPECS)}")])
    return _SPECS[name]


def implement(name: str, target: str) -> Callable[[T], T]:
    """Decorator: register ``obj`` as the implementation of model ``name`` on ``target``."""

    def deco(obj: T) -> T:
        _IMPLS.setdefault(target, {})[name] = obj
        return obj

    return deco


def register_implementation(name: str, target: str, impl: Any) -> None:
    _IMPLS.setdefault(target, {})[name] = impl


def implementation(name: str, target: str, *, node: str | None = None,
                   origin: str | None = None) -> Any:
    """The implementation of model ``name`` on ``target``; a CompileError naming both if none."""
    get_spec(name, node=node, origin=origin)
    table = _IMPLS.get(target, {})
    if name not in table:
        raise CompileError(f"neuron model '{name}' has no implementation on the {target} target",
                           [Diagnostic(f"model {name!r}", node=node, origin=origin,
                                       hint=f"{target} implements: {', '.join(table)}")])
    return table[name]


def implemented(target: str) -> tuple[str, ...]:
    return tuple(_IMPLS.get(target, {}))


# ------------------------------------------------------------------------------ built-in models
SIGNED_EPS = 1e-3  # signed-if: a negative spike needs v <= -SIGNED_EPS·θ (Fast-SNN's -1e-3)
register_neuron(NeuronSpec("if", "integrate-and-fire, reset by subtraction"))
register_neuron(NeuronSpec("if-hard", "integrate-and-fire, reset to zero (stock Loihi LIF)"))
register_neuron(NeuronSpec("signed-if", "IF with negative spikes that take back excess spikes "
                           "(Fast-SNN)", signed=True))
register_neuron(NeuronSpec("gn", "group neuron: M IF members, staggered thresholds (GN)",
                           params=lambda m, p, d: (int(m), 1.0 / int(m)), options=("members",)))
register_neuron(NeuronSpec("bistable", "bistable IF: integrate one window, fire the next (BSNN)",
                           params=lambda m, p, d: (int(p), 1.0), options=("period",)))
register_neuron(NeuronSpec("sigma-delta", "ReLU activation sent as graded deltas (Lava SDN)",
                           graded=True, signed=True, params=lambda m, p, d: (1, float(d)),
                           options=("delta",)))
