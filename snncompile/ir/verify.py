"""The IR verifier: runs after the frontend and after every pass; collects every problem."""

from __future__ import annotations

from collections.abc import Iterator

import networkx as nx
import numpy as np

from snncompile.ir.diagnostics import CompileError, Diagnostic
from snncompile.ir.graph import Graph
from snncompile.ir.nodes import (
    Add,
    AvgPool2d,
    Concat,
    Conv2d,
    CurrentMaxPool2d,
    Dense,
    Input,
    Layer,
    MaxPool2d,
    Output,
)


def problems(graph: Graph) -> list[Diagnostic]:
    """Every problem in ``graph``: structure, shapes, parameters."""
    out: list[Diagnostic] = []
    g = graph.nx
    inputs = [n for n, d in g.nodes(data=True) if isinstance(d["op"], Input)]
    outputs = [n for n, d in g.nodes(data=True) if isinstance(d["op"], Output)]
    if len(inputs) != 1:
        out.append(Diagnostic(f"the graph has {len(inputs)} Input ops, expected exactly one"))
    if len(outputs) != 1:
        out.append(Diagnostic(f"the graph has {len(outputs)} Output ops, expected exactly one"))
    if not nx.is_directed_acyclic_graph(g):
        cycle = nx.find_cycle(g)
        out.append(Diagnostic(f"the graph has a cycle: {' -> '.join(a for a, _ in cycle)}"))
        return out
    if len(outputs) == 1:
        reach = nx.ancestors(g, outputs[0]) | {outputs[0]}
        for n in g.nodes:
            if n not in reach:
                out.append(Diagnostic("does not reach the output", node=n,
                                      origin=graph.op(n).origin))
    if len(inputs) == 1:
        reach = nx.descendants(g, inputs[0]) | {inputs[0]}
        for n in g.nodes:
            if n not in reach:
                out.append(Diagnostic("is not reachable from the input", node=n,
                                      origin=graph.op(n).origin))

    for name in nx.topological_sort(g):
        op = graph.op(name)
        d = _where(graph, name)
        for msg in op.check():
            out.append(Diagnostic(msg, **d))
        ins = graph.inputs(name)
        lo, hi = op.arity
        if len(ins) < lo or (hi is not None and len(ins) > hi):
            want = f"{lo}" if lo == hi else f"{lo}..{hi if hi is not None else 'n'}"
            out.append(Diagnostic(f"has {len(ins)} inputs, {type(op).__name__} takes {want}", **d))
            continue
        in_shapes = [graph.shape(p) for p in ins]
        if any(s is None for s in in_shapes):
            continue  # reported at the producer
        out.extend(Diagnostic(m, **d) for m in _shape_problems(op, in_shapes))
        if graph.shape(name) is None and not any(True for _ in _shape_problems(op, in_shapes)):
            out.append(Diagnostic(f"cannot infer output shape from inputs {in_shapes}", **d))
        elif graph.shape(name) is not None and any(s < 1 for s in graph.shape(name)):
            out.append(Diagnostic(f"output shape {graph.shape(name)} has an empty dimension "
                                  f"(inputs {in_shapes})", **d))
        if isinstance(op, Layer) and op.neuron is not None:
            c = graph.shape(name)[0] if graph.shape(name) else None
            if c is not None and op.neuron.threshold.shape not in ((c,), (1,)):
                out.append(Diagnostic(f"threshold shape {op.neuron.threshold.shape} does not match "
                                      f"{c} channels", **d))

    if len(outputs) == 1 and list(g.predecessors(outputs[0])):
        ro = graph.readout_name
        op = graph.op(ro)
        if isinstance(op, Layer) and op.neuron is not None:
            out.append(Diagnostic("the readout layer feeding the Output must integrate, not spike",
                                  **_where(graph, ro)))
    return out


def _where(graph: Graph, name: str) -> dict[str, str]:
    return {"node": name, "origin": graph.op(name).origin or None}


def _shape_problems(op: object, in_shapes: list[tuple[int, ...]]) -> Iterator[str]:
    if not in_shapes:
        return
    s0 = in_shapes[0]
    if isinstance(op, Conv2d):
        if len(s0) != 3:
            yield f"expects a (C, H, W) input, got {s0}"
        elif op.weight.ndim == 4 and op.weight.shape[1] * op.groups != s0[0]:
            yield (f"weight expects {op.weight.shape[1] * op.groups} input channels, "
                   f"input has {s0[0]}")
    elif isinstance(op, Dense):
        if len(s0) != 1:
            yield f"expects a flat input, got {s0}"
        elif op.weight.ndim == 2 and op.weight.shape[1] != s0[0]:
            yield f"weight expects {op.weight.shape[1]} inputs, input has {s0[0]}"
    elif isinstance(op, (AvgPool2d, MaxPool2d, CurrentMaxPool2d)):
        if len(s0) != 3:
            yield f"expects a (C, H, W) input, got {s0}"
    elif isinstance(op, Add):
        if any(s != s0 for s in in_shapes):
            yield f"operand shapes {' and '.join(map(str, in_shapes))} differ"
    elif isinstance(op, Concat):
        ax = op.axis
        rest = [tuple(d for i, d in enumerate(s) if i != ax) for s in in_shapes]
        if any(len(s) != len(s0) for s in in_shapes) or any(r != rest[0] for r in rest):
            yield f"operand shapes {in_shapes} differ outside axis {ax}"


def verify(graph: Graph, stage: str = "") -> None:
    """Raise one CompileError listing every problem found (``stage`` says where we are)."""
    found = problems(graph)
    if found:
        where = f" {stage}" if stage else ""
        raise CompileError(f"IR verification failed{where}", found)


def check_input(graph: Graph, x: np.ndarray, what: str = "data") -> None:
    """One clear error when ``x`` does not fit the model's input."""
    want = graph.shape(graph.input_name)
    if x.ndim != len(want) + 1 or tuple(x.shape[1:]) != tuple(want):
        raise CompileError("data does not fit the model", [Diagnostic(
            f"{what} has shape {tuple(x.shape)}, "
            f"the model expects (N, {', '.join(map(str, want))})",
            hint=layout_hint(x.shape, want, reads_channels_last(graph)))])


def reads_channels_last(graph: Graph) -> bool:
    """Whether the ONNX model behind ``graph`` reads (N, H, W, C) (``Input.channels_last``)."""
    return bool(getattr(graph.op(graph.input_name), "channels_last", False))


def layout_hint(got: tuple[int, ...], want: tuple[int, ...], channels_last: bool) -> str | None:
    """What to do when channels-last data meets a model whose IR takes (N, C, H, W)."""
    if channels_last and len(want) == 3 and tuple(got[1:]) == (want[1], want[2], want[0]):
        return ("the ONNX model reads channels-last (N, H, W, C) input; snn-compile takes "
                "(N, C, H, W): x.transpose(0, 3, 1, 2)")
    return None
