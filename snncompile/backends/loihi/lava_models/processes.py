"""Processes of the Loihi backend: IF with reset by subtraction, the readout, a delay line.

Both take per-sample resets like Lava's ``LIFReset``: at every step with
``time_step % reset_interval == reset_offset`` the state goes back to its initial value before
the step's input is integrated, so many samples stream through one compiled network.

``IFReset`` (our default neuron, DESIGN.md), per neuron::

    floating_pt:  v += a_in + bias;            s = v >= vth;        v -= s·vth
    fixed_pt:     v = clip(v + (a_in << 6) + bias, ±(2^23 - 1));
                  s = v >= (vth << 6);         v -= s·(vth << 6)

Fixed point follows Loihi's conventions as Lava's LIF models them: the synaptic input is
MSB-aligned by 6 bits (act_shift), the threshold is a 17-bit mantissa shifted by 6 (vth_shift),
the bias is ``bias_mant << bias_exp`` (13-bit mantissa, 3-bit exponent) and the state is 24 bits
(saturating). Unlike stock LIF it fires on ``>=`` and resets by subtraction, and ``v_init``
(the α·θ initial potential, in state units) replaces the reset-to-zero between samples.

``Integrator`` is the non-spiking readout: ``v += a_in + bias`` (fixed: ``(a_in << 6) + bias``,
24-bit saturating), and it sends its potential ``v`` every step as a graded payload, so a sink
records the readout potential at every step of every sample.
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

ACT_SHIFT = 6
VTH_SHIFT = 6
V_MAX = 2 ** 23 - 1  # 24-bit signed state, saturating as Lava's LIF


class IFReset(AbstractProcess):
    """Integrate-and-fire neurons with reset by subtraction and a periodic state reset.

    Args:
        shape: neuron shape ((W, H, C) or (N,)).
        vth: threshold per neuron (float; fixed_pt: 17-bit mantissa, used as ``vth << 6``).
        bias_mant, bias_exp: bias per neuron (float: ``bias_mant`` is the bias and ``bias_exp``
            is ignored; fixed: ``bias_mant << bias_exp``, in state units).
        v_init: state after each reset (float: α·θ; fixed: in state units, i.e. ×64).
        reset_interval, reset_offset: reset when ``time_step % interval == offset``.
        members: group neuron (gn) size M: sends s = Σ_{k=1..M} [v ≥ k·vth] (0..M), v -= s·vth.
        neg: signed IF (Fast-SNN) when given: after the positive test, a neuron whose net spike
            count in the sample is positive and whose v ≤ -neg sends -1 and gets v += vth.

    ``count`` accumulates each neuron's spikes at the steps ``count_window[0] <= time_step <
    count_window[1]`` (the steps that carry samples), so spike totals come back with one
    ``get`` instead of a per-step sink.
    """

    def __init__(self, *, shape: tuple[int, ...], vth: np.ndarray, bias_mant: np.ndarray,
                 bias_exp: np.ndarray, v_init: np.ndarray, reset_interval: int,
                 reset_offset: int, count_window: tuple[int, int] = (0, 2 ** 62),
                 members: int = 1, neg: np.ndarray | None = None,
                 name: str | None = None) -> None:
        super().__init__(shape=shape, reset_interval=reset_interval,
                         reset_offset=reset_offset, count_window=tuple(count_window),
                         members=int(members), signed=neg is not None, name=name)
        self.a_in = InPort(shape=shape)
        self.s_out = OutPort(shape=shape)
        self.v = Var(shape=shape, init=v_init)
        self.v_init = Var(shape=shape, init=v_init)
        self.vth = Var(shape=shape, init=vth)
        self.bias_mant = Var(shape=shape, init=bias_mant)
        self.bias_exp = Var(shape=shape, init=bias_exp)
        self.count = Var(shape=shape, init=0)  # messages |s| per neuron in the count window
        self.neg = Var(shape=shape, init=0 if neg is None else neg)
        self.net = Var(shape=shape, init=0)  # signed: the sample's net spike count


class Integrator(AbstractProcess):
    """Non-spiking readout: integrates its input and sends its potential every step.

    With ``accumulate`` (sigma-delta networks, whose synapses carry deltas) it decodes its
    input, sigma += a_in (fixed: 24-bit saturating, state units), and sends v = sigma + bias,
    the network's current output (lava-dl SDNN's Sigma readout), instead of integrating."""

    def __init__(self, *, shape: tuple[int, ...], bias_mant: np.ndarray, bias_exp: np.ndarray,
                 reset_interval: int, reset_offset: int, accumulate: bool = False,
                 name: str | None = None) -> None:
        super().__init__(shape=shape, reset_interval=reset_interval,
                         reset_offset=reset_offset, accumulate=bool(accumulate), name=name)
        self.a_in = InPort(shape=shape)
        self.v_out = OutPort(shape=shape)
        self.v = Var(shape=shape, init=0)
        self.sigma = Var(shape=shape, init=0)  # accumulate: the sum of all inputs (sigma)
        self.bias_mant = Var(shape=shape, init=bias_mant)
        self.bias_exp = Var(shape=shape, init=bias_exp)


class _ResetMixin:
    def _reset_due(self) -> bool:
        p = self.proc_params
        return self.time_step % p["reset_interval"] == p["reset_offset"] % p["reset_interval"]

    def _counting(self) -> bool:
        lo, hi = self.proc_params["count_window"]
        return lo <= self.time_step < hi


def _fire(v: np.ndarray, vth: np.ndarray, members: int, neg: np.ndarray | None,
          net: np.ndarray) -> np.ndarray:
    """s = Σ_{k=1..M} [v ≥ k·vth]; v -= s·vth; signed (``neg`` given): n += s;
    q = [v ≤ -neg] ∧ [n > 0]; v += q·vth; n -= q; s -= q. Updates v and net in place."""
    s = (v >= vth).astype(v.dtype)
    for k in range(2, members + 1):
        s += v >= k * vth
    v -= s * vth
    if neg is not None:
        net += s
        q = ((v <= -neg) & (net > 0)).astype(v.dtype)
        v += q * vth
        net -= q
        s -= q
    return s


@implements(proc=IFReset, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyIFResetFloat(_ResetMixin, PyLoihiProcessModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    v: np.ndarray = LavaPyType(np.ndarray, float)
    v_init: np.ndarray = LavaPyType(np.ndarray, float)
    vth: np.ndarray = LavaPyType(np.ndarray, float)
    bias_mant: np.ndarray = LavaPyType(np.ndarray, float)
    bias_exp: np.ndarray = LavaPyType(np.ndarray, float)
    count: np.ndarray = LavaPyType(np.ndarray, float)
    neg: np.ndarray = LavaPyType(np.ndarray, float)
    net: np.ndarray = LavaPyType(np.ndarray, float)

    def run_spk(self) -> None:
        a = self.a_in.recv()
        if self._reset_due():
            self.v[:] = self.v_init
            self.net[:] = 0.0
        self.v[:] += a + self.bias_mant
        p = self.proc_params
        s = _fire(self.v, self.vth, p["members"], self.neg if p["signed"] else None, self.net)
        if self._counting():
            self.count[:] += np.abs(s)
        self.s_out.send(s)


@implements(proc=IFReset, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyIFResetFixed(_ResetMixin, PyLoihiProcessModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=1)
    v: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    v_init: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    vth: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=17)
    bias_mant: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=13)
    bias_exp: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=3)
    count: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    neg: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    net: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)

    def run_spk(self) -> None:
        a = self.a_in.recv().astype(np.int64)
        if self._reset_due():
            self.v[:] = self.v_init
            self.net[:] = 0
        bias = np.left_shift(self.bias_mant.astype(np.int64), self.bias_exp.astype(np.int64))
        v = self.v.astype(np.int64) + np.left_shift(a, ACT_SHIFT) + bias
        v = np.clip(v, -V_MAX, V_MAX)
        vth = np.left_shift(self.vth.astype(np.int64), VTH_SHIFT)
        net = self.net.astype(np.int64)
        p = self.proc_params
        neg = self.neg.astype(np.int64) if p["signed"] else None
        s = _fire(v, vth, p["members"], neg, net)
        self.v[:] = v.astype(np.int32)
        self.net[:] = net.astype(np.int32)
        if self._counting():
            self.count[:] += np.abs(s).astype(np.int32)
        self.s_out.send(s.astype(np.int32))


@implements(proc=Integrator, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyIntegratorFloat(_ResetMixin, PyLoihiProcessModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    v_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    v: np.ndarray = LavaPyType(np.ndarray, float)
    bias_mant: np.ndarray = LavaPyType(np.ndarray, float)
    bias_exp: np.ndarray = LavaPyType(np.ndarray, float)
    sigma: np.ndarray = LavaPyType(np.ndarray, float)

    def run_spk(self) -> None:
        a = self.a_in.recv()
        if self._reset_due():
            self.v[:] = 0.0
            self.sigma[:] = 0.0
        if self.proc_params["accumulate"]:
            self.sigma[:] += a
            self.v[:] = 0.0
            a = self.sigma
        self.v[:] += a + self.bias_mant
        self.v_out.send(self.v.copy())


@implements(proc=Integrator, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyIntegratorFixed(_ResetMixin, PyLoihiProcessModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    v_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    v: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    bias_mant: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=13)
    bias_exp: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=3)
    sigma: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)

    def run_spk(self) -> None:
        a = np.left_shift(self.a_in.recv().astype(np.int64), ACT_SHIFT)
        if self._reset_due():
            self.v[:] = 0
            self.sigma[:] = 0
        v = self.v.astype(np.int64)
        if self.proc_params["accumulate"]:
            a = np.clip(self.sigma.astype(np.int64) + a, -V_MAX, V_MAX)
            self.sigma[:] = a.astype(np.int32)
            v = np.zeros_like(v)
        bias = np.left_shift(self.bias_mant.astype(np.int64), self.bias_exp.astype(np.int64))
        v = np.clip(v + a + bias, -V_MAX, V_MAX)
        self.v[:] = v.astype(np.int32)
        self.v_out.send(self.v.copy())


class DelayLine(AbstractProcess):
    """Sends its input ``delay`` steps later (aligns the branches of a residual Add).

    out(t) = in(t - delay), zero for the first ``delay`` steps. It holds no per-sample state
    that needs a reset: after ``delay`` steps of a new sample it only carries that sample.
    """

    def __init__(self, *, shape: tuple[int, ...], delay: int, name: str | None = None) -> None:
        super().__init__(shape=shape, delay=delay, name=name)
        self.s_in = InPort(shape=shape)
        self.s_out = OutPort(shape=shape)
        self.buf = Var(shape=(delay, *shape), init=0)


class _DelayMixin:
    def run_spk(self) -> None:
        x = self.s_in.recv()
        out = self.buf[0].copy()
        self.buf[:-1] = self.buf[1:]
        self.buf[-1] = x
        self.s_out.send(out)


@implements(proc=DelayLine, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyDelayLineFloat(_DelayMixin, PyLoihiProcessModel):
    s_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    buf: np.ndarray = LavaPyType(np.ndarray, float)


@implements(proc=DelayLine, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyDelayLineFixed(_DelayMixin, PyLoihiProcessModel):
    s_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    buf: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
