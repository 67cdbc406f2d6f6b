"""``--target gpu``: the torch simulator (CUDA when available, CPU otherwise).

``compile(graph, options, *, dtype=torch.float32) -> GpuNetwork`` (a ``CompiledNetwork``) with
``.run(x, timesteps, *, record=False, progress=True) -> SimResult`` and ``.save(dir)``.
"""

from __future__ import annotations

from snncompile.backends.common import SimResult, maxpool_gate
from snncompile.backends.gpu.compile import GpuNetwork, SpikingNetwork, compile
from snncompile.backends.gpu.lowerings import LOWERINGS, fanout
from snncompile.backends.gpu.neurons import NEURON_MODELS, get_model, heaviside

__all__ = ["LOWERINGS", "NEURON_MODELS", "GpuNetwork", "SimResult", "SpikingNetwork", "compile",
           "fanout", "get_model", "heaviside", "maxpool_gate"]
