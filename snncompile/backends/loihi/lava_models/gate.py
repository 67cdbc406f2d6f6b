"""Spiking max-pool gate: a host Process between a spiking layer and its next synapses.

Per pooling window and step, it passes the spike of the unit with the largest sum of spikes so
far in the current sample (this step included; graded or signed spikes count by value); ties
go to the first unit of the window in row-major order; the counts restart at every step with
``time_step % reset_interval == reset_offset``.
It receives and sends in the same step, so it adds no delay. This is not a Loihi neuron
model: on the chip it would need a lateral-inhibition circuit; here it runs on the host.
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


class MaxPoolGate(AbstractProcess):
    """Shapes in Lava order (W, H, C). ``index`` (H'·W', kH·kW): each output position's window
    as flat indices into the padded (H + pt + pb) × (W + pl + pr) plane, row-major;
    ``padding`` (top, left, bottom, right)."""

    def __init__(self, *, in_shape: tuple[int, int, int], out_shape: tuple[int, int, int],
                 index: np.ndarray, padding: tuple[int, int, int, int], reset_interval: int,
                 reset_offset: int, name: str | None = None) -> None:
        super().__init__(in_shape=in_shape, out_shape=out_shape, index=np.asarray(index),
                         padding=tuple(padding), reset_interval=reset_interval,
                         reset_offset=reset_offset, name=name)
        self.s_in = InPort(shape=in_shape)
        self.s_out = OutPort(shape=out_shape)
        self.counts = Var(shape=in_shape, init=0)


class _GateMixin:
    def run_spk(self) -> None:
        p = self.proc_params
        s = np.asarray(self.s_in.recv())
        if self.time_step % p["reset_interval"] == p["reset_offset"] % p["reset_interval"]:
            self.counts[:] = 0
        self.counts[:] += s  # Σ of what the source sent (spikes; counts for gn; ±1 signed)
        t, l, b, r = p["padding"]
        idx = p["index"]
        c = np.swapaxes(self.counts, 0, 2).astype(np.float64)  # (C, H, W)
        score = np.pad(c, ((0, 0), (t, b), (l, r)), constant_values=-np.inf)
        score = score.reshape(c.shape[0], -1)
        sp = np.pad(np.swapaxes(s, 0, 2), ((0, 0), (t, b), (l, r))).reshape(c.shape[0], -1)
        pick = np.take_along_axis(idx[None], score[:, idx].argmax(-1)[..., None], -1)[..., 0]
        w_out, h_out, _ = p["out_shape"]
        out = np.take_along_axis(sp, pick, 1).reshape(c.shape[0], h_out, w_out)
        self.s_out.send(np.swapaxes(out, 0, 2))


@implements(proc=MaxPoolGate, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyMaxPoolGateFloat(_GateMixin, PyLoihiProcessModel):
    s_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    counts: np.ndarray = LavaPyType(np.ndarray, float)


@implements(proc=MaxPoolGate, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyMaxPoolGateFixed(_GateMixin, PyLoihiProcessModel):
    s_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=1)
    counts: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
