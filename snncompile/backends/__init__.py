"""Backends: one package per target (gpu, loihi), each with ``compile(graph, options)``. They never
import each other; what they share (the ``SimResult`` type) lives in ``result``."""
