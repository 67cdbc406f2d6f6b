"""Current max-pool: a host Process between the synapses of a ``CurrentMaxPool2d`` population
and its neurons (``--maxpool current``).

Per step it receives the synaptic currents a_i(t) of the pooled candidates (shape ``in_shape``),
adds them to their cumulative sums C_i(t) = Σ_{τ≤t} a_i(τ), takes each window's maximum
M(t) = max_i C_i(t) (padding −∞) and sends I(t) = M(t) − M(t−1) (shape ``out_shape``) to the
neurons' ``a_in``, so the neurons integrate exactly M(t). C and M restart at 0 at every step
with ``time_step % reset_interval == reset_offset`` (a new sample reaches the population).
It receives and sends in the same step, so it adds no delay. Fixed point: integer sums held in
int64 (|I(t)| ≤ max_i |a_i(t)| < 2^23, so what it sends fits the 24-bit input); floating
point: float64. Not a Loihi neuron model: on the chip it would need dendritic max circuitry;
here it runs on the host, like ``MaxPoolGate``.
"""

from __future__ import annotations

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.variable import Var
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from snncompile.backends.loihi.lava_models.gate import WindowProcess, is_reset_step, padded_planes


class CurrentMaxPool(WindowProcess):
    """Sends each window's I(t) = M(t) − M(t−1) (module docstring); geometry as
    ``WindowProcess``."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.a_in = InPort(shape=kwargs["in_shape"])
        self.a_out = OutPort(shape=kwargs["out_shape"])
        self.csum = Var(shape=kwargs["in_shape"], init=0)
        self.mprev = Var(shape=kwargs["out_shape"], init=0)


class _PoolMixin:
    def run_spk(self) -> None:
        p = self.proc_params
        a = np.asarray(self.a_in.recv())
        if is_reset_step(self):
            self.csum[:] = 0
            self.mprev[:] = 0
        self.csum[:] += a.astype(self.csum.dtype)
        integer = np.issubdtype(self.csum.dtype, np.integer)  # fixed_pt: exact integers
        fill = np.iinfo(np.int64).min if integer else -np.inf
        flat = padded_planes(self.csum, p["padding"], fill, np.int64 if integer else np.float64)
        m = flat[:, p["index"]].max(-1)  # (C, H'·W')
        w_out, h_out, _ = p["out_shape"]
        m = np.swapaxes(m.reshape(flat.shape[0], h_out, w_out), 0, 2)
        out = m - self.mprev
        self.mprev[:] = m
        self.a_out.send(out.astype(np.int32 if integer else np.float64))


@implements(proc=CurrentMaxPool, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyCurrentMaxPoolFloat(_PoolMixin, PyLoihiProcessModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    a_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    csum: np.ndarray = LavaPyType(np.ndarray, float)
    mprev: np.ndarray = LavaPyType(np.ndarray, float)


@implements(proc=CurrentMaxPool, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyCurrentMaxPoolFixed(_PoolMixin, PyLoihiProcessModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    a_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    csum: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=64)
    mprev: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=64)
