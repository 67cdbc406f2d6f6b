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


class WindowProcess(AbstractProcess):
    """A host process over max-pool windows (``MaxPoolGate``, ``CurrentMaxPool``). Shapes in
    Lava order (W, H, C). ``index`` (H'·W', kH·kW): each output position's window as flat
    indices into the padded (H + pt + pb) × (W + pl + pr) plane, row-major; ``padding`` (top,
    left, bottom, right); the state restarts at every step with ``time_step % reset_interval
    == reset_offset`` (a new sample reaches the population)."""

    def __init__(self, *, in_shape: tuple[int, int, int], out_shape: tuple[int, int, int],
                 index: np.ndarray, padding: tuple[int, int, int, int], reset_interval: int,
                 reset_offset: int, name: str | None = None) -> None:
        super().__init__(in_shape=in_shape, out_shape=out_shape, index=np.asarray(index),
                         padding=tuple(padding), reset_interval=reset_interval,
                         reset_offset=reset_offset, name=name)


def padded_planes(v: np.ndarray, padding: tuple[int, int, int, int], fill: float | int,
                  dtype: type) -> np.ndarray:
    """(W, H, C) in Lava order → (C, (H + pt + pb)·(W + pl + pr)) as ``dtype``, padded with
    ``fill``: the planes that ``WindowProcess.index`` points into."""
    t, l, b, r = padding
    c = np.swapaxes(v, 0, 2).astype(dtype)
    return np.pad(c, ((0, 0), (t, b), (l, r)), constant_values=fill).reshape(c.shape[0], -1)


def is_reset_step(model: PyLoihiProcessModel) -> bool:
    p = model.proc_params
    return model.time_step % p["reset_interval"] == p["reset_offset"] % p["reset_interval"]


class MaxPoolGate(WindowProcess):
    """Passes, per window and step, the spike of the unit with the highest count so far."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.s_in = InPort(shape=kwargs["in_shape"])
        self.s_out = OutPort(shape=kwargs["out_shape"])
        self.counts = Var(shape=kwargs["in_shape"], init=0)


class _GateMixin:
    def run_spk(self) -> None:
        p = self.proc_params
        s = np.asarray(self.s_in.recv())
        if is_reset_step(self):
            self.counts[:] = 0
        self.counts[:] += s  # Σ of what the source sent (spikes; counts for gn; ±1 signed)
        idx = p["index"]
        score = padded_planes(self.counts, p["padding"], -np.inf, np.float64)
        sp = padded_planes(s, p["padding"], 0, s.dtype)
        pick = np.take_along_axis(idx[None], score[:, idx].argmax(-1)[..., None], -1)[..., 0]
        w_out, h_out, _ = p["out_shape"]
        out = np.take_along_axis(sp, pick, 1).reshape(score.shape[0], h_out, w_out)
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
