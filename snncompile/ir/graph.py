"""The IR graph: a thin typed wrapper over ``networkx.DiGraph``.

Node key: a unique name. Node attributes: ``op`` (a frozen op from ``nodes``) and ``shape``
(its output shape without the batch axis, kept up to date by ``add``/``replace``/``bypass``).
Edge attribute ``port`` orders the operands of multi-input ops (Add, Concat).
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

import networkx as nx

from snncompile.ir.diagnostics import CompileError, Diagnostic
from snncompile.ir.nodes import Input, Node, Output, Shape

#: how often shapes were inferred (one node) and topological orders computed (whole graph):
#: tests assert that edits stay incremental (no timed unit tests)
COUNTERS = {"infer": 0, "topo": 0}


class Graph:
    def __init__(self, g: nx.DiGraph | None = None) -> None:
        self.nx: nx.DiGraph = g if g is not None else nx.DiGraph()

    # ------------------------------------------------------------------ building
    def add(self, name: str, op: Node, inputs: Sequence[str] = ()) -> str:
        if name in self.nx:
            raise CompileError("duplicate IR node name", [Diagnostic("already exists", node=name)])
        for src in inputs:
            if src not in self.nx:
                raise CompileError("unknown IR input", [Diagnostic(
                    f"input {src!r} is not in the graph", node=name, origin=op.origin)])
        self.nx.add_node(name, op=op, shape=None)
        for port, src in enumerate(inputs):
            self.nx.add_edge(src, name, port=port)
        self.nx.nodes[name]["shape"] = self._infer(name)
        return name

    def unique(self, base: str) -> str:
        """A node name not in the graph yet, derived from ``base``."""
        if base not in self.nx:
            return base
        i = 1
        while f"{base}_{i}" in self.nx:
            i += 1
        return f"{base}_{i}"

    # ------------------------------------------------------------------ queries
    def op(self, name: str) -> Node:
        return self.nx.nodes[name]["op"]

    def shape(self, name: str) -> Shape:
        return self.nx.nodes[name]["shape"]

    def inputs(self, name: str) -> list[str]:
        preds = [(self.nx.edges[p, name]["port"], p) for p in self.nx.predecessors(name)]
        return [p for _, p in sorted(preds)]

    def users(self, name: str) -> list[str]:
        return list(self.nx.successors(name))

    def topo(self) -> Iterator[tuple[str, Node]]:
        COUNTERS["topo"] += 1
        for name in nx.lexicographical_topological_sort(self.nx, key=self._order_key):
            yield name, self.op(name)

    def names(self) -> list[str]:
        return [n for n, _ in self.topo()]

    def __contains__(self, name: str) -> bool:
        return name in self.nx

    def __len__(self) -> int:
        return self.nx.number_of_nodes()

    @property
    def input_name(self) -> str:
        found = [n for n, d in self.nx.nodes(data=True) if isinstance(d["op"], Input)]
        if len(found) != 1:
            raise CompileError("the IR must have exactly one Input",
                               [Diagnostic(f"found {len(found)}")])
        return found[0]

    @property
    def output_name(self) -> str:
        found = [n for n, d in self.nx.nodes(data=True) if isinstance(d["op"], Output)]
        if len(found) != 1:
            raise CompileError("the IR must have exactly one Output",
                               [Diagnostic(f"found {len(found)}")])
        return found[0]

    @property
    def readout_name(self) -> str:
        """The op feeding the Output: the integrating (non-spiking) readout layer."""
        return self.inputs(self.output_name)[0]

    # ------------------------------------------------------------------ editing
    def replace(self, name: str, **changes: Any) -> None:
        """``dataclasses.replace`` on the op; shapes downstream are re-inferred."""
        self.set_op(name, dataclasses.replace(self.op(name), **changes))

    def set_op(self, name: str, op: Node) -> None:
        self.nx.nodes[name]["op"] = op
        self.reinfer(name)

    def bypass(self, name: str) -> None:
        """Users of ``name`` read its (single) input instead; ``name`` is removed."""
        (src,) = self.inputs(name)
        for user in self.users(name):
            port = self.nx.edges[name, user]["port"]
            self.nx.add_edge(src, user, port=port)
        self.nx.remove_node(name)
        for user in self.users(src):
            self.reinfer(user)

    def insert_after(self, name: str, new: str, op: Node) -> str:
        """Insert ``op`` between ``name`` and all of its users."""
        users = [(u, self.nx.edges[name, u]["port"]) for u in self.users(name)]
        for u, _ in users:
            self.nx.remove_edge(name, u)
        self.add(new, op, [name])
        for u, port in users:
            self.nx.add_edge(new, u, port=port)
            self.reinfer(u)
        return new

    def remove(self, name: str) -> None:
        self.nx.remove_node(name)

    def copy(self) -> Graph:
        """Shallow copy: frozen ops are shared, the structure is not."""
        return Graph(self.nx.copy())

    def reinfer(self, start: str) -> None:
        """Re-infer the output shape of ``start`` and, incrementally, downstream of it.

        A node's shape depends only on its op and its inputs' shapes, so propagation stops at
        every node whose shape did not change: bypassing an Identity re-infers one node, not
        the rest of the graph (O(changed) instead of O(n) per edit; a chain of n Identity
        nodes is removed in O(n), not O(n²)). A node reached again after another of its
        inputs changed is simply re-inferred again; the last visit sees every final input."""
        todo = deque([start])
        while todo:
            n = todo.popleft()
            new = self._infer(n)
            if n != start and new == self.nx.nodes[n]["shape"]:
                continue
            self.nx.nodes[n]["shape"] = new
            todo.extend(self.nx.successors(n))

    # ------------------------------------------------------------------ internals
    def _order_key(self, name: str) -> str:
        return name

    def _infer(self, name: str) -> Shape | None:
        COUNTERS["infer"] += 1
        op = self.op(name)
        in_shapes = [self.nx.nodes[p]["shape"] for p in self.inputs(name)]
        if any(s is None for s in in_shapes):
            return None
        lo, hi = op.arity
        if len(in_shapes) < lo or (hi is not None and len(in_shapes) > hi):
            return None  # the verifier reports arity
        try:
            return tuple(int(d) for d in op.out_shape(in_shapes))
        except (ValueError, IndexError, TypeError, ZeroDivisionError):
            return None  # the verifier reports the inconsistency

    def summary(self) -> str:
        from snncompile.ir.printer import format_graph

        return format_graph(self)
