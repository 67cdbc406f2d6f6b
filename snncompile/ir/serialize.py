"""Save/load the IR: ``ir.json`` (structure, human-readable) + ``ir.npz`` (tensors). Exact.

Every dataclass field is written: scalars and tuples inline in JSON, numpy arrays as npz
entries referenced by key (``{"$array": "conv1.weight"}``), nested dataclasses (Activation,
Neuron, QuantSpec) as objects with a ``$type``.
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Sequence
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

import numpy as np

from snncompile.ir.diagnostics import CompileError, Diagnostic
from snncompile.ir.graph import Graph
from snncompile.ir.nodes import (
    OP_TYPES,
    OUTPUT_FUNCTIONS,
    Activation,
    Identity,
    Layer,
    Neuron,
    OutputActivation,
    QuantSpec,
)
from snncompile.ir.typecheck import conforms, expected, field_hints
from snncompile.ir.verify import verify

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


def to_dicts(graph: Graph) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    arrays: dict[str, np.ndarray] = {}
    nodes = []
    for name, op in graph.topo():
        attrs = {f.name: _encode(getattr(op, f.name), f"{name}.{f.name}", arrays)
                 for f in fields(op)}
        nodes.append({"name": name, "op": type(op).__name__, "inputs": graph.inputs(name),
                      "shape": list(graph.shape(name) or ()), "attrs": attrs})
    return {"format": FORMAT, "version": VERSION, "nodes": nodes}, arrays


def _is_saved_ir(d: Path) -> bool:
    """``d`` holds an earlier save: an ``ir.json`` (a regular file) of this format."""
    j = d / "ir.json"
    try:
        if j.is_symlink() or not j.is_file() or j.stat().st_size > 2**30:
            return False
        doc = json.loads(j.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and doc.get("format") == FORMAT


def prepare_dir(directory: str | Path, names: Sequence[str]) -> Path:
    """The folder a save writes the files ``names`` into, created if absent. It never
    overwrites what it did not write: ``directory`` must be a folder (or absent), and each of
    ``names`` already there must be a regular file of an earlier save (the folder holds an
    ``ir.json`` of this format). Anything else is a CompileError, before anything is written."""
    if str(directory).strip() == "":
        raise CompileError("cannot save", [Diagnostic("the folder name is empty")])
    d = Path(directory)
    if d.exists() or d.is_symlink():
        if not d.is_dir():
            raise CompileError("cannot save", [Diagnostic(
                f"{d} is a file, not a folder", hint="save writes a folder; give a new name")])
        ours = _is_saved_ir(d)
        for n in names:
            q = d / n
            if (q.exists() or q.is_symlink()) and not (ours and q.is_file()
                                                       and not q.is_symlink()):
                raise CompileError("cannot save", [Diagnostic(
                    f"{q} exists and is not from an earlier save",
                    hint="save never overwrites other files; give a new or empty folder")])
        return d
    try:
        d.mkdir(parents=True)
    except OSError as e:
        raise CompileError("cannot save", [Diagnostic(f"{d}: {e.strerror or e}")]) from None
    return d


def save(graph: Graph, directory: str | Path) -> None:
    """Write ``ir.json`` and ``ir.npz`` into ``directory`` (``prepare_dir``: a new folder,
    or one holding an earlier save)."""
    d = prepare_dir(directory, ("ir.json", "ir.npz"))
    doc, arrays = to_dicts(graph)
    text = json.dumps(doc, indent=1, ensure_ascii=False)
    # keep short lists of numbers and names on one line: shapes, strides, inputs
    text = _SHORT_LIST.sub(
        lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text)
    (d / "ir.json").write_text(text + "\n")
    np.savez(d / "ir.npz", **arrays)


def load(directory: str | Path) -> Graph:
    """Read a saved IR back. Every field is checked against its op's declared type
    (``typecheck``), every array reference against ``ir.npz``, the graph with the verifier,
    and each node's shape against the one saved: a bad file is one CompileError naming the
    node and the field, never a traceback."""
    d = Path(directory)
    try:
        doc = json.loads((d / "ir.json").read_text())
        arrays = np.load(d / "ir.npz", allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise CompileError("cannot read IR", [Diagnostic(f"{d}: {' '.join(str(e).split())}")]
                           ) from None
    src = d / "ir.json"
    with arrays:
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise CompileError("not an snncompile IR", [Diagnostic(f"{src}")])
        if doc.get("version") != VERSION:
            raise _bad(src, None, f"version {doc.get('version')!r}; this snncompile reads "
                       f"version {VERSION}")
        nodes = doc.get("nodes")
        if not isinstance(nodes, list):
            raise _bad(src, None, f"'nodes' is {type(nodes).__name__}; expected a list")
        g = Graph()
        saved: dict[str, Any] = {}
        for i, n in enumerate(nodes):
            name, cls, inputs = _header(n, i, src)
            g.add(name, _build(cls, n["attrs"], arrays, src, name, ""), inputs)
            saved[name] = n.get("shape")
    verify(g, stage=f"loading {d}")
    for name, shape in saved.items():
        if shape is not None and (not isinstance(shape, list)
                                  or tuple(shape) != tuple(g.shape(name) or ())):
            raise _bad(src, name, f"shape {shape} saved, but its op and inputs give "
                       f"{list(g.shape(name) or ())}")
    return g


def _bad(src: Path, node: str | None, msg: str) -> CompileError:
    return CompileError(f"bad IR file {src}", [Diagnostic(msg, node=node)])


def _header(n: Any, i: int, src: Path) -> tuple[str, type, list[str]]:
    """(name, op class, inputs) of node entry ``n`` (the ``i``-th), checked."""
    if not isinstance(n, dict):
        raise _bad(src, None, f"nodes[{i}] is {type(n).__name__}; expected an object")
    name = n.get("name")
    if not isinstance(name, str) or not name:
        raise _bad(src, None, f"nodes[{i}] has no name (a non-empty string)")
    for key, typ in (("op", str), ("inputs", list), ("attrs", dict)):
        if not isinstance(n.get(key), typ):
            got = "missing" if key not in n else f"a {type(n[key]).__name__}"
            raise _bad(src, name, f"field '{key}' is {got}; expected a {typ.__name__}")
    cls = OP_TYPES.get(n["op"])
    if cls is None or cls is Layer:
        raise _bad(src, name, f"unknown op type {n['op']!r}")
    if cls is Identity and n["attrs"].get("onnx_op") in OUTPUT_FUNCTIONS:
        cls = OutputActivation  # saved before OutputActivation had a name of its own
    if not all(isinstance(x, str) for x in n["inputs"]):
        raise _bad(src, name, f"inputs {n['inputs']!r}; expected a list of node names")
    return name, cls, n["inputs"]


def _build(cls: type, attrs: Any, arrays: Any, src: Path, node: str, where: str) -> Any:
    """An instance of the dataclass ``cls`` (an op or a nested Activation, Neuron, QuantSpec)
    from its saved ``attrs``; ``where`` is its field path ("" for the op, "neuron", ...)."""
    if not isinstance(attrs, dict):
        raise _bad(src, node, f"field 'attrs' is {type(attrs).__name__}; expected an object")
    flds = {f.name: f for f in fields(cls) if f.init}
    hints = field_hints(cls)
    kw = {}
    for k, v in attrs.items():
        if k == "$type":
            continue
        path = f"{where}.{k}" if where else k
        if k not in flds:
            raise _bad(src, node, f"unknown field {path!r} of {cls.__name__}")
        kw[k] = val = _value(v, arrays, src, node, path)
        if k in hints and not conforms(val, hints[k]):
            raise _bad(src, node, f"field {path}={_short(v)}; {cls.__name__}.{k} is "
                       f"{expected(hints[k])}")
    for k, f in flds.items():
        if k not in kw and f.default is MISSING and f.default_factory is MISSING:
            raise _bad(src, node, f"missing field {(f'{where}.{k}' if where else k)!r} of "
                       f"{cls.__name__}")
    try:
        return cls(**kw)
    except CompileError:
        raise
    except Exception as e:  # noqa: BLE001 - an op's own __post_init__ refused the values
        raise _bad(src, node, f"{cls.__name__}: {' '.join(str(e).split())}") from None


def _value(v: Any, arrays: Any, src: Path, node: str, where: str) -> Any:
    """A saved field value: ``{"$array": key}`` -> the array of ``ir.npz`` (numbers only),
    ``{"$type": ...}`` -> a nested Activation/Neuron/QuantSpec, a list -> a tuple."""
    if isinstance(v, dict):
        if "$array" in v:
            return _array(v["$array"], arrays, src, node, where)
        if isinstance(v.get("$type"), str) and v["$type"] in _NESTED:
            return _build(_NESTED[v["$type"]], v, arrays, src, node, where)
        raise _bad(src, node, f"field {where} is an object that is neither an array reference "
                   f"nor one of {', '.join(_NESTED)}")
    if isinstance(v, list):
        return tuple(_value(x, arrays, src, node, f"{where}.{i}") for i, x in enumerate(v))
    return v


def _array(key: Any, arrays: Any, src: Path, node: str, where: str) -> np.ndarray:
    if not isinstance(key, str) or key not in arrays.files:
        raise _bad(src, node, f"field {where}: array {key!r} is not in ir.npz")
    try:
        a = np.array(arrays[key])
    except Exception as e:  # noqa: BLE001 - a truncated or corrupt member: zipfile, zlib, numpy
        raise _bad(src, node, f"field {where}: ir.npz member {key!r} is unreadable "
                   f"({' '.join(str(e).split())[:200]})") from None
    if a.dtype.kind not in "iuf":
        raise _bad(src, node, f"field {where}: array {key!r} has dtype {a.dtype}; expected numbers")
    return a


def _short(v: Any) -> str:
    r = json.dumps(v) if not isinstance(v, str) else repr(v)
    return r if len(r) <= 60 else r[:57] + "..."
