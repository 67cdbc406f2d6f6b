"""ONNX model -> IR (ANN form). The only module that imports ``onnx``.

Steps: read (every failure a one-line ``CompileError``), ``onnx.checker``, shape inference,
then one walk over the nodes in their (topological) order:

1. A node whose inputs are all constants is evaluated now, exactly, with ONNX's reference
   evaluator; ``Shape`` of an activation yields the IR shape with the batch axis prepended. Every
   constant is evaluated in two worlds that differ only in the batch size, so a value derived
   from the batch size (``Shape -> Gather -> Unsqueeze -> Concat`` before ``Reshape``) is told
   apart from a true constant.
2. Any other node goes through its converter in ``op_table``. Unsupported ops (and supported ops
   used in unsupported ways) are collected, not raised one at a time; nodes downstream of one are
   skipped.

The IR shapes are cross-checked against ONNX shape inference, and the result is verified.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import numpy_helper

from snncompile.frontend.layout_ops import (
    fold_channel_permutations,
    fold_channel_selections,
    fold_feature_permutations,
    fold_spatial_maps,
)
from snncompile.frontend.op_table import (
    CONVERTERS,
    OUTPUT_ONLY,
    TWO_ACTIVATIONS,
    Builder,
    OnnxNode,
    Unsupported,
    sanitize,
    supported_ops,
)
from snncompile.frontend.quant_patterns import fold_quantized_activations
from snncompile.frontend.selections import Selection
from snncompile.ir.diagnostics import CompileError, Diagnostic
from snncompile.ir.graph import Graph
from snncompile.ir.nodes import Input, Output
from snncompile.ir.verify import verify

MIN_OPSET = 7


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    return lines[0] if lines else str(text)


def read_model_path(src: str | Path) -> Path:
    """The model file's path after the checks ``read_model`` makes before reading it."""
    p = Path(src)
    if not p.exists():
        raise CompileError("model file not found", [Diagnostic(str(p))])
    if not p.is_file():
        raise CompileError("not an ONNX file", [Diagnostic(f"{p} is not a regular file")])
    return p


def read_model(src: str | Path | onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    """Read an ONNX file; returns the model and a name for messages."""
    if isinstance(src, onnx.ModelProto):
        return src, src.graph.name or "<model>"
    p = read_model_path(src)
    data = p.read_bytes()
    try:
        model = onnx.load_model_from_string(data)
        if _external(model):
            model = onnx.load(str(p))  # again through the path: resolves external data
    except onnx.checker.ValidationError as e:  # e.g. external data outside the model's folder
        raise CompileError("invalid ONNX model", [Diagnostic(f"{p}: {_first_line(e)}")]) from None
    except (DecodeError, ValueError, RuntimeError, OSError) as e:
        raise CompileError(_what(data, p), [Diagnostic(f"{p}: {_first_line(e)}")]) from None
    if model.ir_version <= 0 or not model.graph.node or not model.graph.output:
        raise CompileError(_what(data, p), [Diagnostic(
            f"{p}: no ONNX graph in it (ir_version {model.ir_version}, "
            f"{len(model.graph.node)} nodes)")])
    del data  # one copy of the model in memory, not three (vgg11_bn: 0.5 GB each)
    return model, str(p)


def _copy_fields(dst: Any, src: Any, skip: str) -> None:
    """Copy every set field of protobuf message ``src`` into ``dst`` except ``skip``."""
    for field, value in src.ListFields():
        if field.name == skip:
            continue
        if hasattr(value, "extend"):  # a repeated field
            getattr(dst, field.name).extend(value)
        elif hasattr(value, "CopyFrom"):  # a message
            getattr(dst, field.name).CopyFrom(value)
        else:
            setattr(dst, field.name, value)


def _without_initializers(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` without its initializers (their data is the bulk of a model; a
    cleared field would keep its memory in the message's arena until the message dies)."""
    lean = onnx.ModelProto()
    _copy_fields(lean, model, "graph")
    _copy_fields(lean.graph, model.graph, "initializer")
    return lean


def _external(model: onnx.ModelProto) -> bool:
    """Whether a tensor of the model keeps its data in an external file."""
    ext = onnx.TensorProto.EXTERNAL
    if any(t.data_location == ext for t in model.graph.initializer):
        return True
    return any(a.t.data_location == ext for n in model.graph.node for a in n.attribute
               if a.HasField("t"))


def _what(data: bytes, p: Path) -> str:
    head = data[:4096]
    try:
        text = head.decode("utf-8")
        if text and all(c.isprintable() or c in "\r\n\t" for c in text):
            return "not an ONNX file (it is text)"
    except UnicodeDecodeError:
        pass
    return "corrupt ONNX file (cannot parse the protobuf)"


#: initializers above this size reach onnx's checker and shape inference as typed graph inputs
#: (both serialize and re-parse the model; they need these tensors' shapes only, and
#: ``numpy_helper.to_array`` checks their data): vgg11_bn's ``--check`` peaked 2 GB higher
LEAN_BYTES = 16 * 2**20


def _tensor_bytes(t: onnx.TensorProto) -> int:
    """A tensor's size from its dims and type (``ByteSize`` would serialize it)."""
    try:
        item = onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    except (KeyError, TypeError, ValueError):
        item = 8
    return int(np.prod([max(int(d), 0) for d in t.dims], dtype=np.float64)) * item


def _lean(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with its initializers above ``LEAN_BYTES`` as graph inputs (``_check``)."""
    big = [i for i in model.graph.initializer if _tensor_bytes(i) > LEAN_BYTES]
    if not big:
        return model
    names = {i.name for i in big}
    lean = _without_initializers(model)
    lean.graph.initializer.extend(i for i in model.graph.initializer if i.name not in names)
    listed = {i.name for i in model.graph.input}
    lean.graph.input.extend(onnx.helper.make_tensor_value_info(i.name, i.data_type, i.dims)
                            for i in big if i.name not in listed)
    return lean


def _check(model: onnx.ModelProto, where: str) -> onnx.ModelProto:
    """onnx's checker and strict shape inference; the returned model (with the inferred shapes)
    lacks the initializers above ``LEAN_BYTES`` (they are graph inputs there)."""
    model = _lean(model)
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError) as e:
        raise CompileError("invalid ONNX model (onnx.checker)",
                           [Diagnostic(f"{where}: {_first_line(e)}")]) from None
    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=True)
    except Exception as e:  # onnx raises InferenceError or a bare RuntimeError
        raise CompileError("ONNX shape inference failed",
                           [Diagnostic(f"{where}: {_first_line(e)}")]) from None


def _upgraded(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """``model`` at opset 13 by onnx's version converter (Squeeze/Unsqueeze/ReduceSum axes as
    inputs, Clip bounds as inputs, Softmax over the last axis, ...), with shapes inferred
    again; the model as it is where the converter cannot (its ops then say what is missing)."""
    from onnx import version_converter

    try:
        up = version_converter.convert_version(model, 13)
        return onnx.shape_inference.infer_shapes(up, strict_mode=True), 13
    except Exception:  # the converter raises RuntimeError/ValueError/its own errors
        return model, _opset(model)


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        elif isinstance(v, onnx.TensorProto):
            v = numpy_helper.to_array(v)
        out[a.name] = v
    return out


def _opset(model: onnx.ModelProto) -> int:
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            return int(o.version)
    return 1


def _dims(vi: onnx.ValueInfoProto) -> list[int | None] | None:
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]


def _io(model: onnx.ModelProto, where: str) -> tuple[onnx.ValueInfoProto, str]:
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    outputs = list(model.graph.output)
    bad = []
    if len(inputs) != 1:
        bad.append(Diagnostic(f"{where}: the model has {len(inputs)} inputs "
                              f"({', '.join(i.name for i in inputs)}); expected exactly one"))
    if len(outputs) != 1:
        bad.append(Diagnostic(f"{where}: the model has {len(outputs)} outputs "
                              f"({', '.join(o.name for o in outputs)}); expected exactly one",
                              hint="export the model so that it returns only the class scores"))
    if bad:
        raise CompileError("unsupported model signature", bad)
    inp = onnx.ValueInfoProto()
    inp.CopyFrom(inputs[0])  # a copy: a part of ``model`` would keep all of it in memory
    elem = inp.type.tensor_type.elem_type
    if elem != onnx.TensorProto.FLOAT:
        name = onnx.TensorProto.DataType.Name(elem) if elem else "not a tensor"
        raise CompileError("unsupported model input", [Diagnostic(
            f"{where}: input {inp.name!r} has element type {name}; expected FLOAT (float32)")])
    dims = _dims(inp)
    if dims is None or len(dims) < 2 or any(d is None or d <= 0 for d in dims[1:]):
        shown = "unknown rank" if dims is None else \
            "(" + ", ".join("?" if d is None else str(d) for d in dims) + ")"
        raise CompileError("unsupported model input", [Diagnostic(
            f"{where}: input {inp.name!r} has shape {shown}; expected (N, C, H, W) or (N, F) "
            "with every axis but the batch axis fixed")])
    return inp, outputs[0].name


class _Folder:
    """Evaluates constant nodes exactly with ONNX's reference implementation."""

    def __init__(self, opset: int) -> None:
        from onnx.reference import ReferenceEvaluator

        self._ref = ReferenceEvaluator
        self.opsets = {"": opset}

    def run(self, node: onnx.NodeProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        ev = self._ref(node, opsets=self.opsets)
        return [np.asarray(v) for v in ev.run(None, feeds)]


def _fold(node: onnx.NodeProto, b: Builder, folder: _Folder) -> None:
    ins = [i for i in node.input if i]
    if node.op_type == "Shape" and node.input[0] not in b.consts:
        s = b.shape(node.input[0])
        a = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        sl = slice(a.get("start", 0), a.get("end", None))
        vals = tuple(np.array((n, *s), dtype=np.int64)[sl] for n in b.batch_sizes)
    else:
        worlds = [{i: b.consts[i][w] for i in ins} for w in (0, 1)]
        same = all(b.consts[i][0] is b.consts[i][1] for i in ins)
        first = folder.run(node, worlds[0])
        second = first if same else folder.run(node, worlds[1])
        for k, out in enumerate(node.output):
            if out:
                b.consts[out] = (first[k], second[k])
        return
    b.consts[node.output[0]] = vals


def _unsupported_type(op_type: str, proto: onnx.NodeProto, b: Builder) -> str | None:
    """The name a node is counted under among the unsupported op types, or None: its op type,
    or e.g. "Mul of two activations" for an op supported only with a constant operand, or
    "Sigmoid not at the graph output"."""
    if op_type == "Shape":
        return None
    if op_type not in CONVERTERS:
        return op_type
    if op_type in TWO_ACTIVATIONS and not any(i in b.consts for i in proto.input if i):
        return TWO_ACTIVATIONS[op_type]
    if op_type in OUTPUT_ONLY and proto.output[0] not in b.graph_outputs:
        return f"{op_type} not at the graph output"
    return None


def unsupported_ops_diagnostic(bad: dict[str, list[str]]) -> Diagnostic:
    """One diagnostic naming every unsupported op type with its count and first node:
    ``HardSwish ×19 (first at node A), Mul ×9 (first at node B); supported: ...``."""
    parts = [f"{t} ×{len(nodes)} (first at node {nodes[0]})" for t, nodes in bad.items()]
    return Diagnostic(", ".join(parts), hint="supported: " + ", ".join(supported_ops()))


def load_onnx(src: str | Path | onnx.ModelProto) -> Graph:
    """Read, check and convert an ONNX model into a verified IR graph (ANN form).

    Steps: read and check the model, upgrade an old opset, decode the initializers and fold
    quantized activations (``_read``); a ``Builder`` holding the constants and the graph input
    (``_builder``); every node through its converter (``_convert_node``); every problem at
    once, then the folds that resolve layout views and the graph output (``_finish``).

    Raises:
        CompileError: unreadable or invalid file, unsupported signature, unsupported ops (all
            of them, one diagnostic each), or an IR that fails verification (e.g. NaN weights).
    """
    model, opset, arrays, inp, out_name, quant_notes = _read(src)
    b, model = _builder(model, arrays, inp, out_name, opset)
    onnx_shapes = {vi.name: _dims(vi) for vi in (*model.graph.value_info, *model.graph.output)}
    folder = _Folder(opset)
    diags: list[Diagnostic] = []
    bad_types: dict[str, list[str]] = {}  # unsupported op type -> its nodes, in graph order
    poisoned: set[str] = set()
    for idx, proto in enumerate(model.graph.node):
        _convert_node(proto, idx, b, folder, onnx_shapes, diags, bad_types, poisoned)
    return _finish(b, out_name, diags, bad_types, poisoned, quant_notes)


def _read(src: str | Path | onnx.ModelProto) -> tuple[Any, int, dict[str, np.ndarray], Any,
                                                      str, list[Diagnostic]]:
    """(checked model with inferred shapes and no large initializers, opset, every
    initializer as a numpy array, the graph input, the output name, why a Floor/Round/
    QuantizeLinear did not fold); opsets before 13 are upgraded."""
    raw, where = read_model(src)
    inp, out_name = _io(raw, where)
    model = _check(raw, where)  # a new ModelProto (inferred shapes, no large initializers)
    opset = _opset(model)
    if opset < MIN_OPSET:
        raise CompileError("unsupported ONNX opset", [Diagnostic(
            f"{where}: opset {opset}; re-export with opset_version >= 13")])
    if opset < 13:  # older exporters (torch's default was 9, then 11): the attribute forms
        model, opset = _upgraded(model)
    arrays: dict[str, np.ndarray] = {}
    for init in raw.graph.initializer:  # every initializer decodes (type matches bytes)
        try:
            arrays[init.name] = numpy_helper.to_array(init)
        except (ValueError, TypeError, RuntimeError, OSError) as e:
            raise CompileError("invalid ONNX model", [Diagnostic(
                f"{where}: initializer {init.name!r}: {_first_line(e)}")]) from None
    del raw  # (ours when read from a file: one copy of the weights less)
    for init in model.graph.initializer:  # small constants the version converter added
        if init.name not in arrays:
            arrays[init.name] = numpy_helper.to_array(init)
    # QCFS clip-floor-shift chains and Q/DQ pairs -> one ai.snncompile.QuantReLU node each
    quant_notes: list[Diagnostic] = []  # why a Floor/Round/QuantizeLinear did not fold
    model = fold_quantized_activations(model, quant_notes)
    return model, opset, arrays, inp, out_name, quant_notes


def _builder(model: Any, arrays: dict[str, np.ndarray], inp: Any, out_name: str,
             opset: int) -> tuple[Builder, Any]:
    """The ``Builder`` (tensor use counts, the constants, the graph input) and the model
    without its initializers: the weights live on as numpy arrays only (``arrays`` is emptied
    of the ones it does not keep)."""
    uses: dict[str, int] = {}
    for n in model.graph.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    for o in model.graph.output:
        uses[o.name] = uses.get(o.name, 0) + 1
    dims = _dims(inp)
    assert dims is not None  # checked by _io
    b = Builder(opset, {out_name}, uses, fixed_batch=dims[0])
    # the initializers the (folded) model keeps, the large ones among its inputs (``_check``)
    for name in [i.name for i in (*model.graph.initializer, *model.graph.input)]:
        if name in arrays:
            b.consts[name] = (arrays[name], arrays[name])
    arrays.clear()
    model = _without_initializers(model)  # the weights live on as numpy arrays only
    in_ir = b.graph.add(sanitize(inp.name) or "input",
                        Input(origin=f"{inp.name} (graph input)", shape=tuple(dims[1:])))
    b.tensors[inp.name] = in_ir
    return b, model


def _convert_node(proto: Any, idx: int, b: Builder, folder: Any,
                  onnx_shapes: dict[str, Any], diags: list[Diagnostic],
                  bad_types: dict[str, list[str]], poisoned: set[str]) -> None:
    """One ONNX node into ``b``: folded when its inputs are constants, else converted
    (``CONVERTERS``) and its shape checked against ONNX shape inference. A problem goes to
    ``diags`` (or ``bad_types``: an unsupported op type) and poisons the node's outputs, so
    that the nodes downstream are skipped, not misreported."""
    name = proto.name or f"{proto.op_type}_{idx}"
    op_type = proto.op_type if proto.domain in ("", "ai.onnx") else \
        f"{proto.domain}.{proto.op_type}"
    origin = f"{name} ({op_type})"
    if any(i in poisoned for i in proto.input if i):
        # downstream of a problem: nothing to convert (a shape or value it would need is
        # missing, so any error here would be a misleading echo), but every node of an
        # unsupported op type is still counted
        unsupported = _unsupported_type(op_type, proto, b)
        if unsupported:
            bad_types.setdefault(unsupported, []).append(name)
        poisoned.update(proto.output)
        return
    try:
        if op_type == "Shape" or all(i in b.consts for i in proto.input if i):
            _fold(proto, b, folder)
            return
        conv = CONVERTERS.get(op_type)
        unsupported = _unsupported_type(op_type, proto, b)
        if conv is None or unsupported:
            bad_types.setdefault(unsupported or op_type, []).append(name)
            poisoned.update(proto.output)
            return
        node = OnnxNode(name, op_type, tuple(proto.input), tuple(proto.output), _attrs(proto))
        b.tensors[proto.output[0]] = conv(node, b)
        if b.graph.shape(b.tensors[proto.output[0]]) is None:  # a converter bug, said here
            raise Unsupported("the IR cannot infer its output shape")
    except Unsupported as e:
        diags.append(Diagnostic(f"unsupported use of {op_type} at node {name}: {e}",
                                origin=origin))
        poisoned.update(proto.output)
        return
    except CompileError:
        raise
    except Exception as e:  # the reference evaluator rejecting a constant subgraph
        diags.append(Diagnostic(f"cannot evaluate {op_type} at node {name}: {_first_line(e)}",
                                origin=origin))
        poisoned.update(proto.output)
        return
    if proto.output[0] in b.views or proto.output[0] in b.unchecked:
        return  # a layout view (``frontend.views``), or flat in the IR on purpose
    # cross-check the IR's shape with ONNX shape inference (catches converter bugs)
    want = onnx_shapes.get(proto.output[0])
    got = b.graph.shape(b.tensors[proto.output[0]])
    if want and all(d is not None for d in want[1:]) and got is not None \
            and tuple(want[1:]) != tuple(got):
        diags.append(Diagnostic(f"IR shape {got} differs from the ONNX shape "
                                f"{tuple(want[1:])} at node {name}", origin=origin))


def _finish(b: Builder, out_name: str, diags: list[Diagnostic],
            bad_types: dict[str, list[str]], poisoned: set[str],
            quant_notes: list[Diagnostic]) -> Graph:
    """Every problem at once (unsupported op types first, with the quantized-activation notes
    that explain them); then the folds that resolve the layout views, the graph output and
    the verifier."""
    if out_name in b.consts and out_name not in poisoned:
        diags.append(Diagnostic(f"the graph output {out_name!r} is a constant"))
    if bad_types:
        diags.insert(0, unsupported_ops_diagnostic(bad_types))
        diags[1:1] = [d for d in quant_notes if d.origin and d.origin.endswith(
            tuple(f"({t})" for t in bad_types))]
    if not diags and isinstance(b.views.get(out_name), Selection):  # ends in a selection
        try:
            b.tensor(out_name)
        except Unsupported as e:
            diags.append(Diagnostic(f"unsupported graph output {out_name!r}: {e}"))
    if diags:
        headline = "unsupported ops" if bad_types else "unsupported ONNX model"
        raise CompileError(headline, diags)
    left = fold_feature_permutations(b)
    if left:
        raise CompileError("unsupported ONNX model", [Diagnostic(
            f"a channels-last flatten ({origin}) is read by something other than MatMul/Gemm "
            "(its feature order is not the IR's)") for origin in left])
    fold_channel_permutations(b)
    fold_channel_selections(b)
    fold_spatial_maps(b)
    src_ir = b.tensors[out_name]
    b.graph.add(b.graph.unique(sanitize(out_name) or "output"),
                Output(origin=f"{out_name} (graph output)"), [src_ir])
    verify(b.graph, stage="on the frontend output")
    b.consts.clear()  # the Builder is cyclic: its constants would wait for the collector
    return b.graph


def run_onnxruntime(src: str | Path | onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """Run the model with onnxruntime (CPU) on ``x``; the first output as float32.

    A model exported with a fixed batch size runs in chunks of that size.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.log_severity_level = 3
    if isinstance(src, onnx.ModelProto):
        model: Any = src.SerializeToString()
    else:  # onnxruntime reads the file itself: no ModelProto and no serialized copy here
        model = str(read_model_path(src))
    sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    del model
    inp = sess.get_inputs()[0]
    batch = inp.shape[0] if isinstance(inp.shape[0], int) and inp.shape[0] > 0 else len(x)
    x = np.ascontiguousarray(x, dtype=np.float32)
    batch = max(batch, 1)
    outs = []
    for i in range(0, len(x), batch):
        xb = x[i:i + batch]
        k = len(xb)
        if k < batch:  # a fixed batch size: pad the last chunk with zeros, keep k rows
            xb = np.concatenate([xb, np.zeros((batch - k, *xb.shape[1:]), xb.dtype)])
        outs.append(sess.run(None, {inp.name: xb})[0][:k])
    return np.concatenate(outs).astype(np.float32)
