"""ONNX frontend: the IR's ANN mode matches onnxruntime; bad inputs give one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from snncompile.frontend import load_onnx, run_onnxruntime
from snncompile.interp import run_ann
from snncompile.ir import (
    Add,
    AvgPool2d,
    CompileError,
    Concat,
    Conv2d,
    Dense,
    Flatten,
    Identity,
    MaxPool2d,
    Output,
    OutputActivation,
    ReLU,
    load,
    save,
)
from snncompile.ir.nodes import OUTPUT_FUNCTIONS

import models


def rel_err(ours: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(ours - ref).max() / max(float(np.abs(ref).max()), 1e-12))


def assert_matches_ort(path: Path, n: int = 16) -> None:
    x = np.random.default_rng(1).random((n, *models.IN_SHAPE), dtype=np.float32)
    graph = load_onnx(path)
    ref = run_onnxruntime(path, x)
    ours = run_ann(graph, x)
    assert ours.shape == ref.shape == (n, 10)
    assert rel_err(ours, ref) <= 1e-4


@pytest.mark.parametrize("name", sorted(models.BUILDERS))
def test_ann_mode_matches_onnxruntime(name: str, tmp_path: Path) -> None:
    path = models.export(models.BUILDERS[name](), tmp_path / f"{name}.onnx")
    assert_matches_ort(path)


@pytest.mark.parametrize("fold", [True, False])
@pytest.mark.parametrize("opset", [9, 11, 13, 20])
@pytest.mark.parametrize("name", ["cnn_bn_avgpool", "resnet_block", "matmul_mlp"])
def test_opsets(name: str, opset: int, fold: bool, tmp_path: Path) -> None:
    """Opsets below 13 (torch's default was 9, then 11) go through onnx's version converter:
    their attribute forms (Unsqueeze axes of x.view(N, -1), the Pad of nothing torch's opset 9
    puts before an AvgPool, ...) become opset 13's."""
    path = models.export(models.BUILDERS[name](), tmp_path / "m.onnx", opset=opset, fold=fold)
    assert onnx.load(str(path)).opset_import[0].version == opset
    assert_matches_ort(path)


@pytest.mark.parametrize("name", ["cnn_bn_avgpool", "resnet_block"])
def test_dynamo_exporter(name: str, tmp_path: Path) -> None:
    path = models.export(models.BUILDERS[name](), tmp_path / "m.onnx", opset=18, dynamo=True)
    assert_matches_ort(path)


def test_bundled_model(digits_cnn_onnx: Path, digits_test) -> None:
    graph = load_onnx(digits_cnn_onnx)
    ours = run_ann(graph, digits_test.x)
    ref = run_onnxruntime(digits_cnn_onnx, digits_test.x)
    assert rel_err(ours, ref) <= 1e-4
    assert np.mean(ours.argmax(1) == digits_test.y) == pytest.approx(0.9907, abs=1e-3)


def _types(graph) -> list[str]:
    return [type(op).__name__ for _, op in graph.topo()]


def test_structure_and_origins(tmp_path: Path) -> None:
    graph = load_onnx(models.export(models.resnet_block(), tmp_path / "r.onnx", fold=False))
    types = _types(graph)
    assert types.count("Add") == 2 and types.count("BatchNorm") == 6
    assert isinstance(graph.op(graph.output_name), Output)
    # every op but Input/Output names its ONNX node "name (OpType)"
    for name, op in graph.topo():
        assert op.origin, name
        if type(op).__name__ not in ("Input", "Output"):
            assert op.origin.endswith(")") and " (" in op.origin
    pools = [op for _, op in graph.topo() if isinstance(op, AvgPool2d)]
    assert pools[-1].kernel == (4, 4)  # GlobalAveragePool over 4x4
    assert graph.shape(graph.input_name) == (1, 8, 8)


def test_depthwise_and_clip(tmp_path: Path) -> None:
    g = load_onnx(models.export(models.depthwise_cnn(), tmp_path / "d.onnx"))
    convs = [op for _, op in g.topo() if isinstance(op, Conv2d)]
    assert [c.groups for c in convs] == [1, 8, 1] and convs[1].stride == (2, 2)
    g = load_onnx(models.export(models.clip_cnn(), tmp_path / "c.onnx"))
    his = [op.act.hi for _, op in g.topo() if isinstance(op, ReLU)]
    assert his == [6.0, 2.0]


def test_concat_and_maxpool(tmp_path: Path) -> None:
    g = load_onnx(models.export(models.concat_branch(), tmp_path / "c.onnx"))
    (cat,) = [n for n, op in g.topo() if isinstance(op, Concat)]
    assert g.op(cat).axis == 0 and g.shape(cat) == (12, 8, 8)
    g = load_onnx(models.export(models.vgg_maxpool(), tmp_path / "v.onnx"))
    assert _types(g).count("MaxPool2d") == 2
    assert all(op.kernel == (2, 2) for _, op in g.topo() if isinstance(op, MaxPool2d))


def test_view_and_matmul_become_flatten_and_dense(tmp_path: Path) -> None:
    path = models.export(models.matmul_mlp(), tmp_path / "m.onnx")
    kinds = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"Shape", "Gather", "Concat", "Reshape", "MatMul", "Add"} <= kinds
    g = load_onnx(path)
    assert _types(g) == ["Input", "Flatten", "Dense", "ReLU", "Dense", "Output"]
    assert all(op.bias is not None for _, op in g.topo() if isinstance(op, Dense))
    assert_matches_ort(path)


class _Head(nn.Module):
    def __init__(self, tail: nn.Module) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
        self.tail = tail

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail(self.body(x))


@pytest.mark.parametrize("tail", [nn.Softmax(dim=1), nn.LogSoftmax(dim=-1), nn.Dropout(0.5)])
def test_final_softmax_and_dropout_are_identity(tail: nn.Module, tmp_path: Path) -> None:
    torch.manual_seed(0)
    path = models.export(_Head(tail).eval(), tmp_path / "h.onnx")
    g = load_onnx(path)
    # Dropout is y = x (Identity); a Softmax is computed in ANN mode, under its own name
    kind = Identity if isinstance(tail, nn.Dropout) else OutputActivation
    assert isinstance(g.op(g.readout_name), (kind, Dense))
    assert not any(isinstance(op, Identity) and op.onnx_op in OUTPUT_FUNCTIONS
                   for _, op in g.topo())
    assert_matches_ort(path)


def test_an_ir_file_saved_with_a_softmax_as_identity_loads_as_output_activation(
        tmp_path: Path) -> None:
    """ir.json files written before OutputActivation had a name: ``Identity`` with
    ``onnx_op`` Softmax (which ANN mode computed) loads as the op it was, with equal outputs."""
    torch.manual_seed(0)
    path = models.export(_Head(nn.Softmax(dim=1)).eval(), tmp_path / "h.onnx")
    g = load_onnx(path)
    save(g, tmp_path / "ir")
    doc = json.loads((tmp_path / "ir" / "ir.json").read_text())
    (node,) = [n for n in doc["nodes"] if n["op"] == "OutputActivation"]
    node["op"] = "Identity"  # as the earlier save wrote it
    (tmp_path / "ir" / "ir.json").write_text(json.dumps(doc))
    old = load(tmp_path / "ir")
    assert isinstance(old.op(node["name"]), OutputActivation)
    x = np.random.default_rng(0).random((4, *models.IN_SHAPE), dtype=np.float32)
    ref = run_onnxruntime(path, x)
    np.testing.assert_allclose(run_ann(old, x), ref, rtol=1e-5, atol=1e-6)
    assert np.allclose(ref.sum(1), 1.0)  # the softmax is computed, not dropped


def _error(path: Path | str) -> str:
    with pytest.raises(CompileError) as info:
        load_onnx(path)
    line = info.value.one_line()
    assert "\n" not in line
    return line


def test_unsupported_ops_are_all_named(tmp_path: Path) -> None:
    line = _error(models.export(models.sigmoid_cnn(), tmp_path / "s.onnx"))
    assert line.startswith("unsupported ops: Sigmoid not at the graph output ×1 (first at node "
                           "/1/Sigmoid), "
                           "Tanh ×1 (first at node /3/Tanh); supported: "), line
    assert "Conv" in line and "Gemm" in line and "more" not in line


@pytest.mark.parametrize("module, why", [
    (nn.Hardtanh(-1.0, 1.0), r"Clip at node .*min=-1\.0"),
    (nn.Unflatten(1, (4, 16)), r"Reshape at node .*only flattening"),
])
def test_unsupported_uses_say_why(module: nn.Module, why: str, tmp_path: Path) -> None:
    m = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), module).eval()
    line = _error(models.export(m, tmp_path / "m.onnx"))
    assert line.startswith("unsupported ONNX model: ")
    assert pytest.importorskip("re").search(why, line), line


def test_softmax_inside_the_network(tmp_path: Path) -> None:
    m = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Softmax(1), nn.Linear(32, 10)).eval()
    line = _error(models.export(m, tmp_path / "m.onnx"))
    assert line.startswith("unsupported ops: Softmax not at the graph output ×1 (first at node")


def test_missing_file(tmp_path: Path) -> None:
    assert _error(tmp_path / "nope.onnx") == f"model file not found: {tmp_path / 'nope.onnx'}"


def test_text_file(tmp_path: Path) -> None:
    p = tmp_path / "model.onnx"
    p.write_text("this is not a model\n")
    assert _error(p).startswith("not an ONNX file")


@pytest.mark.parametrize("cut", ["random", "truncated", "empty"])
def test_corrupt_protobuf(cut: str, tmp_path: Path, digits_cnn_onnx: Path) -> None:
    p = tmp_path / "bad.onnx"
    data = digits_cnn_onnx.read_bytes()
    p.write_bytes({"random": np.random.default_rng(0).bytes(3000),
                   "truncated": data[:len(data) // 3], "empty": b""}[cut])
    line = _error(p)
    assert str(p) in line


def test_nan_weights(tmp_path: Path) -> None:
    m = models.mlp()
    with torch.no_grad():
        m[1].weight[0, :3] = float("nan")
        m[3].bias[1] = float("inf")
    line = _error(models.export(m, tmp_path / "nan.onnx"))
    assert line.startswith("IR verification failed on the frontend output: ")
    assert "[from /1/Gemm (Gemm)]: weight has 3 NaN and 0 Inf values" in line
    assert "(and 1 more problem)" in line


def _tiny(inputs: list, outputs: list, nodes: list, inits: list, opset: int = 17):
    g = helper.make_graph(nodes, "tiny", inputs, outputs, inits)
    # IR version 10: what onnxruntime 1.23 reads
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)


def test_signature_errors(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    x2 = helper.make_tensor_value_info("x2", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    two_in = _tiny([x, x2], [y], [helper.make_node("Add", ["x", "x2"], ["y"], name="add")], [])
    with pytest.raises(CompileError, match="the model has 2 inputs"):
        load_onnx(two_in)
    xi = helper.make_tensor_value_info("x", TensorProto.INT64, ["N", 4])
    yi = helper.make_tensor_value_info("y", TensorProto.INT64, ["N", 4])
    ints = _tiny([xi], [yi], [helper.make_node("Relu", ["x"], ["y"], name="r")], [])
    with pytest.raises(CompileError, match="element type INT64; expected FLOAT"):
        load_onnx(ints)
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 4])
    two_out = _tiny([x], [y, z], [helper.make_node("Relu", ["x"], ["y"], name="r"),
                                  helper.make_node("Relu", ["x"], ["z"], name="r2")], [])
    with pytest.raises(CompileError, match="the model has 2 outputs"):
        load_onnx(two_out)


def test_checker_failure(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    # Relu reads a tensor nobody produces
    bad = _tiny([x], [y], [helper.make_node("Relu", ["ghost"], ["y"], name="r")], [])
    p = tmp_path / "bad.onnx"
    onnx.save(bad, str(p))
    line = _error(p)
    assert line.startswith("invalid ONNX model (onnx.checker): ") and str(p) in line


def test_hand_built_gemm_alpha_beta_and_asymmetric_pads(tmp_path: Path) -> None:
    """Gemm with transB=0, alpha/beta, a Conv with asymmetric pads and an auto_pad=SAME_UPPER
    conv, and ceil_mode=1 pooling that adds no partial window: all exact vs onnxruntime."""
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((4, 1, 3, 3)).astype(np.float32)
    w2 = rng.standard_normal((4, 4, 2, 2)).astype(np.float32)
    wg = rng.standard_normal((4 * 5 * 4, 10)).astype(np.float32)
    c = rng.standard_normal((1, 10)).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (w2, "w2"), (wg, "wg"),
                                                        (c, "c"))]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], name="conv_asym", pads=[1, 0, 2, 1]),
        helper.make_node("Conv", ["a", "w2"], ["b"], name="conv_same", auto_pad="SAME_UPPER"),
        helper.make_node("MaxPool", ["b"], ["p"], name="pool", kernel_shape=[2, 2],
                         strides=[2, 2], ceil_mode=1, pads=[0, 0, 1, 1]),
        helper.make_node("Flatten", ["p"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "wg", "c"], ["y"], name="fc", alpha=0.5, beta=2.0),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])
    p = tmp_path / "h.onnx"
    onnx.save(_tiny([x], [y], nodes, inits), str(p))
    g = load_onnx(p)
    assert g.op("conv_asym").padding == (1, 0, 2, 1)
    assert g.shape("conv_asym") == (4, 9, 7) and g.shape("conv_same") == (4, 9, 7)
    assert g.shape("pool") == (4, 5, 4)
    assert_matches_ort(p)
    # the same pooling without the extra bottom pad: ceil_mode adds a partial window, which
    # becomes −∞ padding (exact); an AveragePool doing the same is refused
    nodes[2] = helper.make_node("MaxPool", ["b"], ["p"], name="pool", kernel_shape=[2, 2],
                                strides=[2, 2], ceil_mode=1)
    onnx.save(_tiny([x], [y], nodes, inits), str(p))
    assert load_onnx(p).op("pool").padding == (0, 0, 1, 1)
    assert_matches_ort(p)
    nodes[2] = helper.make_node("AveragePool", ["b"], ["p"], name="pool", kernel_shape=[2, 2],
                                strides=[2, 2], ceil_mode=1)
    onnx.save(_tiny([x], [y], nodes, inits), str(p))
    with pytest.raises(CompileError, match="ceil_mode=1 adds a partial window"):
        load_onnx(p)


def test_model_proto_and_types(tmp_path: Path) -> None:
    path = models.export(models.cnn_bn_avgpool(), tmp_path / "c.onnx", fold=False)
    g = load_onnx(onnx.load(str(path)))
    assert _types(g) == ["Input", "Conv2d", "BatchNorm", "ReLU", "AvgPool2d", "Conv2d",
                         "BatchNorm", "ReLU", "AvgPool2d", "Flatten", "Dense", "Output"]
    assert not any(isinstance(op, (Add, Flatten)) and op.origin == "" for _, op in g.topo())
