"""``--target loihi``: everything Loihi lives here.

``plan`` (the spiking IR as populations and synapses), ``fixed`` (Loihi 2 number formats),
``neurons`` (this target's implementation of each neuron model), ``torch_sim`` (the bit-exact
torch reference), ``build`` / ``layout`` / ``lava_runtime`` / ``lava_models`` (the Lava process
graph and its run), ``netx`` (lava-dl export) and ``resources`` (Loihi 2 limits).

``compile(graph, options) -> LavaNetwork`` and ``compile_reference(graph, options) ->
LoihiNetwork`` both return a ``CompiledNetwork`` (``run(x, T) -> SimResult``, ``save(dir)``).
Lava is imported only when a network is built or run, so importing this package is cheap.
"""

from __future__ import annotations

from snncompile.backends.loihi.compile import LavaNetwork, LoihiNetwork, compile, compile_reference

__all__ = ["LavaNetwork", "LoihiNetwork", "compile", "compile_reference"]
