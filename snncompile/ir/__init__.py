"""The graph IR: typed ops, the graph, the verifier, (de)serialisation and ANN-mode execution."""

from __future__ import annotations

from snncompile.ir.diagnostics import CompileError, Diagnostic, PassError
from snncompile.ir.graph import Graph
from snncompile.ir.nodes import (
    LAYER_TYPES,
    OP_TYPES,
    WEIGHTED_TYPES,
    Activation,
    Add,
    AvgPool2d,
    BatchNorm,
    Concat,
    Conv2d,
    CurrentMaxPool2d,
    Dense,
    Flatten,
    Identity,
    Input,
    Layer,
    MaxPool2d,
    Neuron,
    Node,
    Output,
    OutputActivation,
    QuantSpec,
    ReLU,
)
from snncompile.ir.serialize import load, save
from snncompile.ir.verify import verify

__all__ = [
    "LAYER_TYPES", "OP_TYPES", "WEIGHTED_TYPES", "Activation", "Add", "AvgPool2d", "BatchNorm",
    "CompileError", "Concat", "Conv2d", "CurrentMaxPool2d", "Dense", "Diagnostic", "Flatten",
    "Graph", "Identity", "Input", "Layer", "MaxPool2d", "Neuron", "Node", "Output",
    "OutputActivation", "PassError", "QuantSpec", "ReLU", "load", "save", "verify",
]
