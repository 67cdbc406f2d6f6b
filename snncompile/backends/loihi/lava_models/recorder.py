"""A spike recorder that packs spikes into words, so reading them back is cheap.

Lava reads a Var back one element at a time (each one an IPC message), so a plain sink of
(neurons, steps) values costs ~0.1 ms per value. ``SpikeRecorder`` stores each step's values
(integers in [low, high]: binary spikes, signed spikes, group-neuron counts) as b-bit fields,
b = bit length of high − low, packed ``48 // b`` to an integer of 48 bits (held exactly in the
float64 that Lava transfers), in C order of the process shape.
"""

from __future__ import annotations

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.ports.ports import InPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.process.variable import Var
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

WORD_BITS = 48


def field_bits(low: int, high: int) -> int:
    return max(1, int(high - low).bit_length())


class SpikeRecorder(AbstractProcess):
    """Records s_in (integers in [low, high]) at steps 1..``steps``, packed (``bits`` Var)."""

    def __init__(self, *, shape: tuple[int, ...], steps: int, low: int = 0, high: int = 1,
                 name: str | None = None) -> None:
        per_word = WORD_BITS // field_bits(low, high)
        words = -(-int(np.prod(shape)) // per_word)
        super().__init__(shape=shape, steps=steps, words=words, low=int(low), high=int(high),
                         name=name)
        self.s_in = InPort(shape=shape)
        self.bits = Var(shape=(steps, words), init=0)


class _RecorderMixin:
    def run_spk(self) -> None:
        p = self.proc_params
        s = np.rint(np.asarray(self.s_in.recv(), np.float64).ravel()).astype(np.int64)
        t = self.time_step - 1
        if t < p["steps"]:
            b = field_bits(p["low"], p["high"])
            per_word = WORD_BITS // b
            words = p["words"]
            padded = np.zeros(words * per_word, dtype=np.int64)
            padded[:s.size] = np.clip(s, p["low"], p["high"]) - p["low"]
            shifts = np.arange(per_word, dtype=np.int64) * b
            self.bits[t] = np.left_shift(padded.reshape(words, per_word), shifts).sum(1)


@implements(proc=SpikeRecorder, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PySpikeRecorderFloat(_RecorderMixin, PyLoihiProcessModel):
    s_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    bits: np.ndarray = LavaPyType(np.ndarray, np.float64)


@implements(proc=SpikeRecorder, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PySpikeRecorderFixed(_RecorderMixin, PyLoihiProcessModel):
    s_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    bits: np.ndarray = LavaPyType(np.ndarray, np.float64)


def unpack(bits: np.ndarray, shape: tuple[int, ...], low: int = 0, high: int = 1) -> np.ndarray:
    """(steps, words) packed words -> (*shape, steps) values (int8, or int32 for wide
    graded payloads)."""
    words = np.asarray(bits, np.float64).astype(np.int64)
    b = field_bits(low, high)
    n = int(np.prod(shape))
    shifts = np.arange(WORD_BITS // b, dtype=np.int64) * b
    vals = (words[:, :, None] >> shifts) & ((1 << b) - 1)
    s = (vals.reshape(words.shape[0], -1)[:, :n] + low).astype(
        np.int8 if -128 <= low and high <= 127 else np.int32)
    return np.moveaxis(s.reshape(words.shape[0], *shape), 0, -1)
