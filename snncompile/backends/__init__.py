"""Backends: one package per target (gpu, loihi), each with ``compile(graph, options)`` returning
a ``CompiledNetwork``. They never import each other; what they share (the contract, the result
type, the run loop, device choice, the max-pool gate) lives in ``common``."""
