"""Save/load the IR: ``ir.json`` (structure, human-readable) + ``ir.npz`` (tensors). Exact.

Every dataclass field is written: scalars and tuples inline in JSON, numpy arrays as npz
entries referenced by key (``{"$array": "conv1.weight"}``), nested dataclasses (Activation,
Neuron, QuantSpec) as objects with a ``$type``.
"""

from __future__ import annotations

import json
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from snncompile.ir.diagnostics import CompileError, Diagnostic
from snncompile.ir.graph import Graph
from snncompile.ir.nodes import OP_TYPES, Activation, Neuron, QuantSpec

FORMAT = "snncompile-ir"
VERSION = 1
_SHORT_LIST = re.compile(r"\[((?:\s*(?:-?[\d.e+-]+|\"[^\"\n]*\"|true|false|null)\s*,)*"
                         r"\s*(?:-?[\d.e+-]+|\"[^\"\n]*\"|true|false|null)\s*)\]")
_NESTED = {c.__name__: c for c in (Activation, Neuron, QuantSpec)}


def _encode(value: Any, key: str, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(value, np.ndarray):
        arrays[key] = value
        return {"$array": key}
    if type(value).__name__ in _NESTED and isinstance(value, tuple(_NESTED.values())):
        return {"$type": type(value).__name__,
                **{f.name: _encode(getattr(value, f.name), f"{key}.{f.name}", arrays)
                   for f in fields(value)}}
    if isinstance(value, tuple):  # no IR field is a list, so lists decode back to tuples
        return [_encode(v, f"{key}.{i}", arrays) for i, v in enumerate(value)]
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    return value


def _decode(value: Any, arrays: Any) -> Any:
    if isinstance(value, dict):
        if "$array" in value:
            return np.array(arrays[value["$array"]])
        if "$type" in value:
            cls = _NESTED[value["$type"]]
            return cls(**{k: _decode(v, arrays) for k, v in value.items() if k != "$type"})
    if isinstance(value, list):
        return tuple(_decode(v, arrays) for v in value)
    return value


def to_dicts(graph: Graph) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    arrays: dict[str, np.ndarray] = {}
    nodes = []
    for name, op in graph.topo():
        attrs = {f.name: _encode(getattr(op, f.name), f"{name}.{f.name}", arrays)
                 for f in fields(op)}
        nodes.append({"name": name, "op": type(op).__name__, "inputs": graph.inputs(name),
                      "shape": list(graph.shape(name) or ()), "attrs": attrs})
    return {"format": FORMAT, "version": VERSION, "nodes": nodes}, arrays


def save(graph: Graph, directory: str | Path) -> None:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    doc, arrays = to_dicts(graph)
    text = json.dumps(doc, indent=1, ensure_ascii=False)
    # keep short lists of numbers and names on one line: shapes, strides, inputs
    text = _SHORT_LIST.sub(
        lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text)
    (d / "ir.json").write_text(text + "\n")
    np.savez(d / "ir.npz", **arrays)


def load(directory: str | Path) -> Graph:
    d = Path(directory)
    try:
        doc = json.loads((d / "ir.json").read_text())
        arrays = np.load(d / "ir.npz")
    except (OSError, ValueError) as e:
        raise CompileError("cannot read IR", [Diagnostic(f"{d}: {e}")]) from None
    if doc.get("format") != FORMAT:
        raise CompileError("not an snncompile IR", [Diagnostic(f"{d / 'ir.json'}")])
    g = Graph()
    with arrays:
        for n in doc["nodes"]:
            cls = OP_TYPES.get(n["op"])
            if cls is None:
                raise CompileError("unknown IR op",
                                   [Diagnostic(f"op type {n['op']}", node=n["name"])])
            op = cls(**{k: _decode(v, arrays) for k, v in n["attrs"].items()})
            g.add(n["name"], op, n["inputs"])
    return g
