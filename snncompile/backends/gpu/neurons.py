"""The gpu simulator's implementation of each neuron model, registered against its name in
``snncompile.neurons`` (where the models and their equations are declared).

Every model is a *scan*: given a layer's synaptic current for all steps, ``I`` of shape
(T, B, ...), the per-channel threshold ``theta`` (broadcastable to I[0]) and α, it runs the
membrane recurrence as a Python loop over T that is vectorised over everything else, and returns
``s`` (T, B, ...) in units of θ (the layer emits θ·s). Representation choices of this simulator:
gn returns the member-spike count s ∈ {0..M}; signed-if s ∈ {-1, 0, 1}; sigma-delta returns
s = S/θ (the layer emits S, the sigma-decoded activation the next layer sees; its current W·S + b
is sigma + bias of lava.proc.sdn.SigmaDelta).

The spike nonlinearity is ``spike(v - θ)`` with ``spike = heaviside`` (x ≥ 0 → 1); surrogate-
gradient training passes a differentiable replacement. Under ``torch.no_grad`` the scans update
in place (no per-step allocations); with autograd they build an out-of-place graph.

Time chunks. With ``state`` (a dict, empty on the first chunk) a scan starts from the state a
previous call left there and leaves its own final state there (v; signed-if's spike count n;
bistable's buffer u and step index; sigma-delta's sent value S), so running T steps as chunks
T₁ + T₂ + … gives the spikes of one T-step run bit for bit (each step is element-wise). A model
whose scan takes no ``state`` runs the whole T at once (``SpikingNetwork`` checks).

``events(s)`` gives the messages each unit sends per step (what spikes and SOPs count): |s|
(a GN step with s = 3 counts 3 member spikes, a negative spike counts 1), and for sigma-delta
one graded message per nonzero delta. A new model: ``register_implementation(name, "gpu",
NeuronModel(name, scan, summary))`` (docs/adding-a-neuron.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from snncompile.neurons import SIGNED_EPS, implementation, implemented, register_implementation

Tensor = torch.Tensor
TARGET = "gpu"
SpikeFn = Callable[[Tensor], Tensor]
#: a scan's carried state: tensors by name (v, ...) and the global index "t" of its next step
State = dict[str, Any]


def heaviside(x: Tensor) -> Tensor:
    """s = 1 where x ≥ 0 else 0 (in x's dtype). Surrogate-gradient training replaces this."""
    return (x >= 0).to(x.dtype)


def _init(state: State | None, key: str, make: Callable[[], Tensor]) -> Tensor:
    """The carried ``state[key]`` (updated in place by the no-grad scans), else ``make()``."""
    if state is not None and key in state:
        return state[key]
    return make()


def _keep(state: State | None, out: Tensor, steps: int, **final: Tensor) -> Tensor:
    """Leave a scan's final state (and the next global step index) in ``state``; return out."""
    if state is not None:
        state.update(final)
        state["t"] = int(state.get("t", 0)) + steps
    return out


def scan_if(current: Tensor, theta: Tensor, alpha: float, members: int = 1,
            spike: SpikeFn = heaviside, state: State | None = None) -> Tensor:
    """IF neuron, reset by subtraction: v += I; s = [v ≥ θ]; v -= s·θ; v(0) = α·θ."""
    steps = current.shape[0]
    v = _init(state, "v", lambda: (alpha * theta).expand_as(current[0]).clone())
    if not torch.is_grad_enabled() and spike is heaviside:
        out = torch.empty_like(current)
        for t in range(steps):
            v.add_(current[t])
            torch.ge(v, theta, out=out[t])  # 1.0 / 0.0 straight into s(t): no bool temporary
            v.addcmul_(out[t], theta, value=-1.0)
        return _keep(state, out, steps, v=v)
    spikes = []
    for t in range(steps):
        v = v + current[t]
        s = spike(v - theta)
        v = v - s * theta
        spikes.append(s)
    return _keep(state, torch.stack(spikes), steps, v=v)


def scan_if_hard(current: Tensor, theta: Tensor, alpha: float, members: int = 1,
                 spike: SpikeFn = heaviside, state: State | None = None) -> Tensor:
    """IF neuron, reset to zero: v += I; s = [v ≥ θ]; v = 0 where s; v(0) = α·θ."""
    steps = current.shape[0]
    v = _init(state, "v", lambda: (alpha * theta).expand_as(current[0]).clone())
    spikes = []
    for t in range(steps):
        v = v + current[t]
        s = spike(v - theta)
        v = v * (1.0 - s)
        spikes.append(s)
    return _keep(state, torch.stack(spikes), steps, v=v)




def scan_signed_if(current: Tensor, theta: Tensor, alpha: float, members: int = 1,
                   spike: SpikeFn = heaviside, state: State | None = None) -> Tensor:
    """Signed IF (Fast-SNN): positive spike at v ≥ θ; a negative spike (v += θ) when v ≤ −ε·θ
    and the net spike count so far is positive. s ∈ {-1, 0, 1}."""
    v = _init(state, "v", lambda: (alpha * theta).expand_as(current[0]).clone())
    n = _init(state, "n", lambda: torch.zeros_like(v))
    steps = current.shape[0]
    if not torch.is_grad_enabled() and spike is heaviside:  # in place, no per-step allocation
        # comparisons straight into float 1.0 / 0.0 (a bool -> float copy costs 7x a compare
        # on CPU); products of 0/1 values are exact, so this is the logical and
        out = torch.empty_like(current)
        pos = torch.empty_like(v)
        neg = torch.empty_like(v)
        low = -SIGNED_EPS * theta
        for t in range(current.shape[0]):
            s = out[t]
            v.add_(current[t])
            torch.ge(v, theta, out=s)
            v.addcmul_(s, theta, value=-1.0)
            n.add_(s)
            torch.le(v, low, out=neg)
            torch.gt(n, 0, out=pos)
            neg.mul_(pos)
            v.addcmul_(neg, theta)
            n.sub_(neg)
            s.sub_(neg)
        return _keep(state, out, steps, v=v, n=n)
    spikes = []
    for t in range(current.shape[0]):
        v = v + current[t]
        p = spike(v - theta)
        v = v - p * theta
        n = n + p
        q = spike(-SIGNED_EPS * theta - v) * (n > 0).to(v.dtype)
        v = v + q * theta
        n = n - q
        spikes.append(p - q)
    return _keep(state, torch.stack(spikes), steps, v=v, n=n)


def scan_gn(current: Tensor, theta: Tensor, alpha: float, members: int = 1,
            spike: SpikeFn = heaviside, state: State | None = None) -> Tensor:
    """Group Neuron (M members, shared membrane, θ = member threshold): v += I;
    s = Σ_{k=1..M} [v ≥ k·θ]; v -= s·θ; v(0) = α·θ. s ∈ {0..M}."""
    v = _init(state, "v", lambda: (alpha * theta).expand_as(current[0]).clone())
    steps = current.shape[0]
    if not torch.is_grad_enabled() and spike is heaviside:  # in place, no per-step allocation
        out = torch.empty_like(current)
        fired = torch.empty_like(v)  # float 1.0 / 0.0: no bool -> float copy (scan_signed_if)
        levels = [k * theta for k in range(1, members + 1)]
        for t in range(current.shape[0]):
            s = out[t]
            v.add_(current[t])
            torch.ge(v, levels[0], out=s)
            for lv in levels[1:]:
                torch.ge(v, lv, out=fired)
                s.add_(fired)
            v.addcmul_(s, theta, value=-1.0)
        return _keep(state, out, steps, v=v)
    spikes = []
    for t in range(current.shape[0]):
        v = v + current[t]
        s = spike(v - theta)
        for k in range(2, members + 1):
            s = s + spike(v - k * theta)
        v = v - s * theta
        spikes.append(s)
    return _keep(state, torch.stack(spikes), steps, v=v)


def scan_bistable(current: Tensor, theta: Tensor, alpha: float, members: int = 1,
                  spike: SpikeFn = heaviside, state: State | None = None) -> Tensor:
    """Bistable IF (BSNN reading, docs/neurons.md): windows of ρ = ``members`` steps. Every step
    fires from v (s = [v ≥ θ]; v -= s·θ) and buffers its input (u += I); at the end of a window
    v += u, u = 0. So a window's spikes encode the whole previous window's net input."""
    period = max(int(members), 1)
    v = _init(state, "v", lambda: (alpha * theta).expand_as(current[0]).clone())
    u = _init(state, "u", lambda: torch.zeros_like(v))
    t0 = int(state.get("t", 0)) if state is not None else 0
    steps = current.shape[0]
    spikes = []
    for t in range(steps):
        s = spike(v - theta)
        v = v - s * theta
        u = u + current[t]
        if (t0 + t + 1) % period == 0:
            v = v + u
            u = torch.zeros_like(u)
        spikes.append(s)
    return _keep(state, torch.stack(spikes), steps, v=v, u=u)


def scan_sigma_delta(current: Tensor, theta: Tensor, alpha: float, members: int = 1,
                     spike: SpikeFn = heaviside, state: State | None = None) -> Tensor:
    """Sigma-delta (lava.proc.sdn): act = ReLU(I); δ = act − S; send δ when |δ| ≥ θ (S += δ).
    Returns s = S/θ: the layer emits θ·s = S, the reconstructed activation."""
    sent = _init(state, "sent", lambda: torch.zeros_like(current[0]))
    steps = current.shape[0]
    if not torch.is_grad_enabled():  # in place, no per-step allocation
        res = torch.empty_like(current)
        delta = torch.empty_like(sent)
        fire = torch.empty(sent.shape, dtype=torch.bool, device=sent.device)
        for t in range(current.shape[0]):
            torch.clamp(current[t], min=0.0, out=delta)
            delta.sub_(sent)
            torch.ge(delta.abs(), theta, out=fire)
            sent.add_(delta.mul_(fire))
            torch.div(sent, theta, out=res[t])
        return _keep(state, res, steps, sent=sent)
    out = []
    for t in range(current.shape[0]):
        delta = torch.relu(current[t]) - sent
        fire = (delta.abs() >= theta).to(delta.dtype)
        sent = sent + fire * delta
        out.append(sent / theta)
    return _keep(state, torch.stack(out), steps, sent=sent)


def delta_events(s: Tensor) -> Tensor:
    """One graded message per unit and step where s changed (s(0) = 0)."""
    prev = torch.cat([torch.zeros_like(s[:1]), s[:-1]])
    return (s != prev).to(s.dtype)


@dataclass(frozen=True)
class NeuronModel:
    """A neuron model of the simulator: its name, its scan and a one-line summary.

    ``events(s)`` maps the scan's output (T, B, ...) to the messages sent per unit and step
    (counted as spikes, and times fan-out as synaptic operations); ``integer`` says whether s
    is integer-valued (recorded spike trains are int8 then, float32 otherwise); ``binary``
    that s ∈ {0, 1} with the Heaviside spike (a max-pool gate behind the layer then compares
    spike counts, ``common.maxpool_gate``).
    """

    name: str
    scan: Callable[..., Tensor]
    summary: str
    events: Callable[[Tensor], Tensor] = torch.abs
    integer: bool = True
    binary: bool = False


for _m in (
    NeuronModel("if", scan_if, "integrate-and-fire, reset by subtraction", binary=True),
    NeuronModel("if-hard", scan_if_hard, "integrate-and-fire, reset to zero", binary=True),
    NeuronModel("signed-if", scan_signed_if, "IF with negative spikes (Fast-SNN)"),
    NeuronModel("gn", scan_gn, "group neuron: M IF members, staggered thresholds (GN)"),
    NeuronModel("bistable", scan_bistable, "bistable IF: integrate one window, fire the next",
                binary=True),
    NeuronModel("sigma-delta", scan_sigma_delta, "ReLU activation sent as graded deltas",
                events=delta_events, integer=False),
):
    register_implementation(_m.name, TARGET, _m)


class _Table(Mapping[str, NeuronModel]):
    """Read-only view: model name -> the gpu implementation (``snncompile.neurons``)."""

    def __getitem__(self, name: str) -> NeuronModel:
        if name not in implemented(TARGET):
            raise KeyError(name)
        return implementation(name, TARGET)

    def __iter__(self) -> Iterator[str]:
        return iter(implemented(TARGET))

    def __len__(self) -> int:
        return len(implemented(TARGET))


NEURON_MODELS: Mapping[str, NeuronModel] = _Table()


def get_model(name: str, *, node: str | None = None, origin: str | None = None) -> NeuronModel:
    """The gpu implementation of model ``name``; a CompileError naming model and layer if none."""
    return implementation(name, TARGET, node=node, origin=origin)
