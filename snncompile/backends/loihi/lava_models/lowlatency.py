"""Processes for the low-latency neuron models of issue 5: sigma-delta and bistable (BSNN).

Both reset per sample like ``IFReset`` (``time_step % reset_interval == reset_offset``) and
count their messages in ``count`` over ``count_window``.

``SigmaDeltaReset`` (lava.proc.sdn's ``SigmaDelta`` with ReLU, plus the per-sample reset that
Lava's own process lacks), per neuron, fixed_pt in state units (×64)::

    sigma = clip(sigma + (a_in << 6), ±SD_MAX)          (sigma decoding of incoming deltas)
    act   = min(max(sigma + bias, 0), SD_MAX)           (ReLU)
    act   = (act >> shift) << shift                     (floor to the payload unit)
    d     = act − S;   d = 0 where |d| < vth << 6;   S += d
    send  d >> shift                                    (graded delta, exact: d is a multiple
                                                         of 2^shift; one message per nonzero d)

and floating_pt the same without shifts, sending d / vth (the plan's weights carry θ).
``SD_MAX = 2^23 − 64`` keeps every state value a multiple of 64 inside the 24-bit state.

``BistableReset`` (our reading of BSNN's bistable neuron, docs/neurons.md), window ρ::

    s = v >= vth;  v -= s·vth                           (fire from the previous window)
    u = clip(u + (a_in << 6) + bias)                    (integrate this window)
    at the last step of a window (τ + 1) % ρ == 0:  v = clip(v + u);  u = 0

where τ is the step within the sample (0 at the reset step), v starts at ``v_init``.
"""

from __future__ import annotations

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.process.variable import Var
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from snncompile.backends.loihi.lava_models.processes import ACT_SHIFT, V_MAX, VTH_SHIFT, _ResetMixin

SD_MAX = 2 ** 23 - 64


class SigmaDeltaReset(AbstractProcess):
    """Sigma-delta ReLU neurons (graded deltas out) with a per-sample reset of sigma and S."""

    def __init__(self, *, shape: tuple[int, ...], vth: np.ndarray, bias_mant: np.ndarray,
                 bias_exp: np.ndarray, reset_interval: int, reset_offset: int,
                 shift: int = ACT_SHIFT, count_window: tuple[int, int] = (0, 2 ** 62),
                 name: str | None = None) -> None:
        super().__init__(shape=shape, reset_interval=reset_interval, reset_offset=reset_offset,
                         shift=int(shift), count_window=tuple(count_window), name=name)
        self.a_in = InPort(shape=shape)
        self.s_out = OutPort(shape=shape)
        self.sigma = Var(shape=shape, init=0)
        self.sent = Var(shape=shape, init=0)  # S: the total sent so far in the sample
        self.vth = Var(shape=shape, init=vth)
        self.bias_mant = Var(shape=shape, init=bias_mant)
        self.bias_exp = Var(shape=shape, init=bias_exp)
        self.count = Var(shape=shape, init=0)  # nonzero deltas per neuron in the count window


@implements(proc=SigmaDeltaReset, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PySigmaDeltaResetFloat(_ResetMixin, PyLoihiProcessModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    sigma: np.ndarray = LavaPyType(np.ndarray, float)
    sent: np.ndarray = LavaPyType(np.ndarray, float)
    vth: np.ndarray = LavaPyType(np.ndarray, float)
    bias_mant: np.ndarray = LavaPyType(np.ndarray, float)
    bias_exp: np.ndarray = LavaPyType(np.ndarray, float)
    count: np.ndarray = LavaPyType(np.ndarray, float)

    def run_spk(self) -> None:
        a = self.a_in.recv()
        if self._reset_due():
            self.sigma[:] = 0.0
            self.sent[:] = 0.0
        self.sigma[:] += a
        d = np.maximum(self.sigma + self.bias_mant, 0.0) - self.sent
        d = np.where(np.abs(d) >= self.vth, d, 0.0)
        self.sent[:] += d
        if self._counting():
            self.count[:] += d != 0
        self.s_out.send(d / self.vth)


@implements(proc=SigmaDeltaReset, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PySigmaDeltaResetFixed(_ResetMixin, PyLoihiProcessModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    sigma: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    sent: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    vth: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=17)
    bias_mant: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=13)
    bias_exp: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=3)
    count: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)

    def run_spk(self) -> None:
        a = self.a_in.recv().astype(np.int64)
        if self._reset_due():
            self.sigma[:] = 0
            self.sent[:] = 0
        sigma = np.clip(self.sigma.astype(np.int64) + np.left_shift(a, ACT_SHIFT),
                        -SD_MAX, SD_MAX)
        bias = np.left_shift(self.bias_mant.astype(np.int64), self.bias_exp.astype(np.int64))
        shift = self.proc_params["shift"]
        act = np.left_shift(np.right_shift(np.clip(sigma + bias, 0, SD_MAX), shift), shift)
        d = act - self.sent.astype(np.int64)
        vth = np.left_shift(self.vth.astype(np.int64), VTH_SHIFT)
        d = np.where(np.abs(d) >= vth, d, 0)
        self.sigma[:] = sigma.astype(np.int32)
        self.sent[:] = (self.sent.astype(np.int64) + d).astype(np.int32)
        if self._counting():
            self.count[:] += (d != 0).astype(np.int32)
        self.s_out.send(np.right_shift(d, shift).astype(np.int32))


class BistableReset(AbstractProcess):
    """Bistable IF neurons (window ρ = ``period``): fire from v, integrate into u, and move u
    into v at the end of every window."""

    def __init__(self, *, shape: tuple[int, ...], vth: np.ndarray, bias_mant: np.ndarray,
                 bias_exp: np.ndarray, v_init: np.ndarray, period: int, reset_interval: int,
                 reset_offset: int, count_window: tuple[int, int] = (0, 2 ** 62),
                 name: str | None = None) -> None:
        super().__init__(shape=shape, period=int(period), reset_interval=reset_interval,
                         reset_offset=reset_offset, count_window=tuple(count_window), name=name)
        self.a_in = InPort(shape=shape)
        self.s_out = OutPort(shape=shape)
        self.v = Var(shape=shape, init=v_init)
        self.u = Var(shape=shape, init=0)
        self.v_init = Var(shape=shape, init=v_init)
        self.vth = Var(shape=shape, init=vth)
        self.bias_mant = Var(shape=shape, init=bias_mant)
        self.bias_exp = Var(shape=shape, init=bias_exp)
        self.count = Var(shape=shape, init=0)


class _BistableMixin(_ResetMixin):
    def _window_end(self) -> bool:
        p = self.proc_params
        tau = (self.time_step - p["reset_offset"]) % p["reset_interval"]
        return (tau + 1) % p["period"] == 0


@implements(proc=BistableReset, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyBistableResetFloat(_BistableMixin, PyLoihiProcessModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    v: np.ndarray = LavaPyType(np.ndarray, float)
    u: np.ndarray = LavaPyType(np.ndarray, float)
    v_init: np.ndarray = LavaPyType(np.ndarray, float)
    vth: np.ndarray = LavaPyType(np.ndarray, float)
    bias_mant: np.ndarray = LavaPyType(np.ndarray, float)
    bias_exp: np.ndarray = LavaPyType(np.ndarray, float)
    count: np.ndarray = LavaPyType(np.ndarray, float)

    def run_spk(self) -> None:
        a = self.a_in.recv()
        if self._reset_due():
            self.v[:] = self.v_init
            self.u[:] = 0.0
        s = (self.v >= self.vth).astype(float)
        self.v[:] -= s * self.vth
        self.u[:] += a + self.bias_mant
        if self._window_end():
            self.v[:] += self.u
            self.u[:] = 0.0
        if self._counting():
            self.count[:] += s
        self.s_out.send(s)


@implements(proc=BistableReset, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyBistableResetFixed(_BistableMixin, PyLoihiProcessModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=1)
    v: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    u: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    v_init: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    vth: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=17)
    bias_mant: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=13)
    bias_exp: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=3)
    count: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)

    def run_spk(self) -> None:
        a = self.a_in.recv().astype(np.int64)
        if self._reset_due():
            self.v[:] = self.v_init
            self.u[:] = 0
        v = self.v.astype(np.int64)
        vth = np.left_shift(self.vth.astype(np.int64), VTH_SHIFT)
        s = (v >= vth).astype(np.int64)
        v -= s * vth
        bias = np.left_shift(self.bias_mant.astype(np.int64), self.bias_exp.astype(np.int64))
        u = np.clip(self.u.astype(np.int64) + np.left_shift(a, ACT_SHIFT) + bias, -V_MAX, V_MAX)
        if self._window_end():
            v = np.clip(v + u, -V_MAX, V_MAX)
            u = np.zeros_like(u)
        self.v[:] = v.astype(np.int32)
        self.u[:] = u.astype(np.int32)
        if self._counting():
            self.count[:] += s.astype(np.int32)
        self.s_out.send(s.astype(np.int32))
