"""The loihi target's implementation of each neuron model, registered in ``snncompile.neurons``.

One ``LoihiNeuron`` entry per model says everything the Loihi backend needs: what the
population sends (payload range), how its fixed-point state starts, the bit-exact torch
reference of one population's dynamics (``simulate``, used by ``torch_sim``), the Lava process
that runs it (``build``, used by ``build``), and how (or whether) lava-dl netx can express it.
The models' equations are declared in ``snncompile.neurons``; the integer forms are:

    if        v = clip(v + (a << 6) + bias, ±(2^23−1));  s = v ≥ vth<<6;  v −= s·(vth<<6)
    gn        as if, with s = Σ_{k=1..M} [v ≥ k·vth<<6]
    signed-if as if, then n += s; q = [v ≤ −neg] ∧ [n > 0]; v += q·(vth<<6); n −= q; s −= q
    if-hard   u = wrap24(a << 6);  v = clip(v + u + bias);  s = v > vth<<6;  v = 0 where s
              (Lava's stock LIF with du = 4095, dv = 0; starts at v = 0)
    bistable  s = v ≥ vth<<6;  v −= s·(vth<<6);  u = clip(u + (a << 6) + bias);
              at the end of each window of ρ steps: v = clip(v + u), u = 0
    sigma-delta (every layer; synapses carry deltas, the Input sends x at step 0 only)
              σ = clip(σ + (a << 6), ±SD_MAX);  act = min(max(σ + bias, 0), SD_MAX);
              act = floor to multiples of 2^(6+g);  d = act − S;  d = 0 where
              |d| < vth<<6;  S += d;  sends d >> (6+g)   (g = grid_exp: the payload unit)

with v = v_init at the first step of every sample and bias = bias_mant << bias_exp. A model not
in this table fails on ``--target loihi`` with one line naming it (``snncompile.neurons``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from snncompile.backends.loihi.fixed import (
    ACT_SHIFT,
    SD_MAX,
    SD_VTH_TARGET,
    STATE_MAX,
    VTH_SHIFT,
    VTH_TARGET,
)
from snncompile.neurons import SIGNED_EPS, implementation, register_implementation

if TYPE_CHECKING:
    from snncompile.backends.loihi.plan import Population

TARGET = "loihi"
Tensor = torch.Tensor
WRAP = 2 ** 24


def wrap24(x: Tensor) -> Tensor:
    """Signed 24-bit wrap-around (Lava's Conv ``signed_clamp`` and LIF current)."""
    return torch.remainder(x + WRAP // 2, WRAP) - WRAP // 2


def chan(a: np.ndarray, dev: torch.device) -> Tensor:
    return torch.as_tensor(np.asarray(a, np.float64), device=dev)


#: simulate(p, a (T, B, *shape) synaptic input, bias (state units), batch, device)
#:   -> (messages (T, B, *shape) float64, number of state/current values clipped)
Simulate = Callable[["Population", Tensor, Tensor, int, torch.device], tuple[Tensor, int]]
#: build(p, lava_mode_fixed, lava kwargs common to every neuron process) -> a Lava process
Build = Callable[["Population", bool, dict[str, Any]], Any]


@dataclass(frozen=True)
class LoihiNeuron:
    """How the loihi target runs one neuron model.

    Attributes:
        name: the model (``snncompile.neurons``).
        simulate: the fixed-point torch reference of a population (bit-exact with Lava).
        build: the Lava process of a population.
        payload: (lo, hi) of what a neuron sends per step, given the population.
        at_rest: the state starts at 0 regardless of α (stock LIF, sigma-delta).
        vth_target: the threshold mantissa the fixed-point plan aims for.
        one_threshold: Lava's process has one threshold per population (stock LIF).
        counts_in_process: the process counts its own messages (else a recorder is attached).
        netx: the lava-dl netx neuron type ("CUBA", "SDNN"), or None.
        netx_refusal: why netx cannot express this model (when ``netx`` is None).
    """

    name: str
    simulate: Simulate
    build: Build
    payload: Callable[[Population], tuple[int, int]] = lambda p: (0, 1)
    at_rest: bool = False
    vth_target: int = VTH_TARGET
    one_threshold: bool = False
    counts_in_process: bool = True
    netx: str | None = None
    netx_refusal: str = ""


def get(name: str, *, node: str | None = None, origin: str | None = None) -> LoihiNeuron:
    """The loihi implementation of ``name``; a one-line CompileError naming the model if none."""
    return implementation(name, TARGET, node=node, origin=origin)


def _register(n: LoihiNeuron) -> None:
    register_implementation(n.name, TARGET, n)


# ------------------------------------------------------------------------------ torch reference
def _if_family(p: Population, a: Tensor, bias: Tensor, batch: int, dev: torch.device, *,
               hard: bool = False, signed: bool = False) -> tuple[Tensor, int]:
    steps = a.shape[0]
    vth = chan(p.vth_mant, dev) * 2 ** VTH_SHIFT
    v = chan(p.v_init, dev).expand(batch, *p.shape).clone()
    s_all = torch.empty((steps, batch, *p.shape), dtype=torch.float64, device=dev)
    hi = torch.empty(v.shape, dtype=torch.bool, device=dev)
    sat = torch.zeros((), dtype=torch.float64, device=dev)
    if signed:
        neg = -chan(p.neg_level, dev)
        net = torch.zeros_like(v)  # the sample's net spike count per neuron
    for t in range(steps):
        if not hard:
            v.add_(a[t], alpha=2 ** ACT_SHIFT).add_(bias)
        else:  # stock LIF, du = 4095: u = wrap24(a << 6)
            u = a[t] * 2 ** ACT_SHIFT
            sat += (u.abs() >= WRAP // 2).sum()
            v.add_(wrap24(u)).add_(bias)
        torch.gt(v.abs(), STATE_MAX, out=hi)
        sat += hi.sum()
        v.clamp_(-STATE_MAX, STATE_MAX)
        if hard:
            torch.gt(v, vth, out=hi)
            s_all[t].copy_(hi)
            v.masked_fill_(hi, 0.0)
            continue
        torch.ge(v, vth, out=hi)
        s_all[t].copy_(hi)
        for k in range(2, p.members + 1):  # gn: s = Σ_k [v ≥ k·vth]
            s_all[t].add_(v >= k * vth)
        v.addcmul_(s_all[t], vth, value=-1.0)
        if signed:
            net.add_(s_all[t])
            q = ((v <= neg) & (net > 0)).to(v.dtype)
            v.addcmul_(q, vth)
            net.sub_(q)
            s_all[t].sub_(q)
    return s_all, int(sat.item())


def _sim_sigma_delta(p: Population, a: Tensor, bias: Tensor, batch: int,
                     dev: torch.device) -> tuple[Tensor, int]:
    """Graded deltas d >> (6+g) (steps, batch, *shape) of a sigma-delta population."""
    vth = chan(p.vth_mant, dev) * 2 ** VTH_SHIFT
    sig = torch.zeros((batch, *p.shape), dtype=torch.float64, device=dev)
    sent = torch.zeros_like(sig)
    out = torch.empty((a.shape[0], batch, *p.shape), dtype=torch.float64, device=dev)
    for t in range(a.shape[0]):
        sig.add_(a[t], alpha=2 ** ACT_SHIFT).clamp_(-SD_MAX, SD_MAX)
        unit = 2.0 ** (ACT_SHIFT + p.grid_exp)
        d = (sig + bias).clamp_(0, SD_MAX).div_(unit).floor_().mul_(unit).sub_(sent)
        d.mul_(d.abs() >= vth)
        sent.add_(d)
        out[t] = d / unit
    return out, 0


def _sim_bistable(p: Population, a: Tensor, bias: Tensor, batch: int,
                  dev: torch.device) -> tuple[Tensor, int]:
    """Spikes (steps, batch, *shape) of a bistable population (window ρ = members)."""
    vth = chan(p.vth_mant, dev) * 2 ** VTH_SHIFT
    v = chan(p.v_init, dev).expand(batch, *p.shape).clone()
    u = torch.zeros_like(v)
    out = torch.empty((a.shape[0], batch, *p.shape), dtype=torch.float64, device=dev)
    for t in range(a.shape[0]):
        torch.ge(v, vth, out=out[t])
        v.addcmul_(out[t], vth, value=-1.0)
        u.add_(a[t], alpha=2 ** ACT_SHIFT).add_(bias).clamp_(-STATE_MAX, STATE_MAX)
        if (t + 1) % max(p.members, 1) == 0:
            v.add_(u).clamp_(-STATE_MAX, STATE_MAX)
            u.zero_()
    return out, 0


# ------------------------------------------------------------------------------ Lava processes
def _vth(p: Population, fixed: bool) -> np.ndarray:
    from snncompile.backends.loihi.layout import to_lava

    return to_lava(p.vth_mant if fixed else p.threshold, p.shape)


def _v_init(p: Population, fixed: bool, vth: np.ndarray) -> np.ndarray:
    from snncompile.backends.loihi.layout import to_lava

    return to_lava(p.v_init, p.shape) if fixed else p.alpha * vth


def _build_if(p: Population, fixed: bool, kw: dict[str, Any]) -> Any:
    from snncompile.backends.loihi.lava_models.processes import IFReset
    from snncompile.backends.loihi.layout import to_lava

    vth = _vth(p, fixed)
    neg = None
    if get(p.kind).payload(p)[0] < 0:  # signed spikes
        neg = to_lava(p.neg_level, p.shape) if fixed else SIGNED_EPS * vth
    return IFReset(vth=vth, v_init=_v_init(p, fixed, vth), members=p.members, neg=neg, **kw)


def _build_lif(p: Population, fixed: bool, kw: dict[str, Any]) -> Any:
    from lava.proc.lif.process import LIFReset

    vth = float(p.threshold.flat[0]) if not fixed else int(p.vth_mant.flat[0])
    kw = {k: v for k, v in kw.items() if k != "count_window"}
    return LIFReset(vth=vth, du=4095 if fixed else 1.0, dv=0, **kw)


def _build_sigma_delta(p: Population, fixed: bool, kw: dict[str, Any]) -> Any:
    from snncompile.backends.loihi.lava_models.lowlatency import SigmaDeltaReset

    return SigmaDeltaReset(vth=_vth(p, fixed), shift=6 + p.grid_exp, **kw)


def _build_bistable(p: Population, fixed: bool, kw: dict[str, Any]) -> Any:
    from snncompile.backends.loihi.lava_models.lowlatency import BistableReset

    vth = _vth(p, fixed)
    return BistableReset(vth=vth, v_init=_v_init(p, fixed, vth), period=p.members, **kw)


def _sd_payload(p: Population) -> tuple[int, int]:
    hi = SD_MAX >> (ACT_SHIFT + p.grid_exp)  # |d| ≤ SD_MAX, sent in units of 2^(6+g)
    return -hi, hi


_register(LoihiNeuron("if", _if_family, _build_if,
                      netx_refusal="reset by subtraction"))
_register(LoihiNeuron("signed-if", lambda p, a, b, n, d: _if_family(p, a, b, n, d, signed=True),
                      _build_if, payload=lambda p: (-1, 1), netx_refusal="signed spikes"))
_register(LoihiNeuron("gn", _if_family, _build_if, payload=lambda p: (0, p.members),
                      netx_refusal="group neurons"))
_register(LoihiNeuron("if-hard", lambda p, a, b, n, d: _if_family(p, a, b, n, d, hard=True),
                      _build_lif, at_rest=True, one_threshold=True, counts_in_process=False,
                      netx="CUBA"))
_register(LoihiNeuron("bistable", _sim_bistable, _build_bistable,
                      netx_refusal="bistable windows"))
_register(LoihiNeuron("sigma-delta", _sim_sigma_delta, _build_sigma_delta, payload=_sd_payload,
                      at_rest=True, vth_target=SD_VTH_TARGET, netx="SDNN"))
