"""The IR: graph edits, the verifier's diagnostics, exact save/load, BatchNorm folding."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from snncompile.frontend import load_onnx, run_onnxruntime
from snncompile.interp import run_ann
from snncompile.ir import (
    BatchNorm,
    CompileError,
    Dense,
    Flatten,
    Graph,
    Input,
    Output,
    load,
    save,
    verify,
)
from snncompile.passes import PassContext, PassManager, get_pass

import models
from build import chain, cnn, conv, dense, residual


def test_graph_shapes_and_order(rng: np.random.Generator) -> None:
    g = residual(rng)
    verify(g)
    assert g.shape("stem") == (4, 8, 8)
    assert g.shape("add2") == (6, 4, 4)
    assert g.shape("fc") == (10,)
    order = [n for n, _ in g.topo()]
    assert order.index("add1") > max(order.index("b1c2"), order.index("stem"))
    assert g.inputs("add2") == ["b2c2", "proj"]  # by port, not by name
    assert g.readout_name == "fc"


def test_verifier_names_the_node_and_collects_every_problem(rng: np.random.Generator) -> None:
    g = chain((1, 8, 8), ("conv1", conv(rng, 1, 4)), ("flat", Flatten()),
              ("fc", dense(rng, 200, 10, act=None)))
    bad_w = g.op("conv1").weight.copy()
    bad_w[0, 0, 0, 0] = np.nan
    g.replace("conv1", weight=bad_w)
    with pytest.raises(CompileError) as e:
        verify(g, stage="after 'my-pass'")
    text = str(e.value) + " " + " ".join(str(d) for d in e.value.diagnostics)
    assert "after 'my-pass'" in text
    assert "conv1" in text and "fc" in text  # NaN and the 256 vs 200 shape mismatch, together
    assert len(e.value.diagnostics) >= 2
    assert "\n" not in e.value.one_line()


def test_verifier_structure() -> None:
    g = Graph()
    g.add("input", Input(shape=(4,)))
    g.add("a", Dense(weight=np.eye(4, dtype=np.float32)), ["input"])
    g.add("dangling", Dense(weight=np.eye(4, dtype=np.float32)), ["input"])
    g.add("output", Output(), ["a"])
    with pytest.raises(CompileError, match="verification failed") as e:
        verify(g)
    assert any(d.node == "dangling" and "reach the output" in str(d) for d in e.value.diagnostics)


def assert_same(a: object, b: object, where: str) -> None:
    """Field by field, arrays bit for bit (the IR's dataclasses compare by identity)."""
    assert type(a) is type(b), where
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b), where
    elif dataclasses.is_dataclass(a):
        for f in dataclasses.fields(a):
            assert_same(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
    else:
        assert a == b, where


def test_save_load_round_trip_is_exact(rng: np.random.Generator, tmp_path: Path) -> None:
    g = residual(rng)
    save(g, tmp_path / "ir")
    h = load(tmp_path / "ir")
    assert [n for n, _ in h.topo()] == [n for n, _ in g.topo()]
    for name, op in g.topo():
        other = h.op(name)
        assert type(other) is type(op)
        assert_same(op, other, name)
        assert h.inputs(name) == g.inputs(name)
    x = rng.random((5, 1, 8, 8), dtype=np.float32)
    assert np.array_equal(run_ann(g, x), run_ann(h, x))


@pytest.mark.parametrize("name", sorted(models.BUILDERS))
def test_round_trip_of_every_test_model(name: str, tmp_path: Path) -> None:
    path = models.export(models.BUILDERS[name](), tmp_path / "m.onnx", fold=False)
    g = load_onnx(path)
    save(g, tmp_path / "ir")
    h = load(tmp_path / "ir")
    x = np.random.default_rng(1).random((4, *g.shape(g.input_name)), dtype=np.float32)
    assert np.array_equal(run_ann(g, x), run_ann(h, x))
    assert (tmp_path / "ir" / "ir.json").read_text().startswith("{")


@pytest.mark.parametrize("name", ["cnn_bn_avgpool", "resnet_block"])
def test_batchnorm_folding_is_exact(name: str, tmp_path: Path) -> None:
    model = models.BUILDERS[name]()  # builders give BatchNorm non-trivial statistics
    path = models.export(model, tmp_path / "m.onnx", fold=False)
    g = load_onnx(path)
    n_bn = sum(isinstance(op, BatchNorm) for _, op in g.topo())
    assert n_bn > 0, "the exporter kept no BatchNormalization node"
    folded = PassManager([get_pass("fold-batchnorm")]).run(g, PassContext())
    assert not any(isinstance(op, BatchNorm) for _, op in folded.topo())
    x = np.random.default_rng(2).random((32, *g.shape(g.input_name)), dtype=np.float32)
    ref = run_onnxruntime(path, x)
    for graph in (g, folded):
        out = run_ann(graph, x)
        assert np.abs(out - ref).max() <= 1e-4 * np.abs(ref).max()


def test_hand_built_cnn_runs_in_ann_mode(rng: np.random.Generator) -> None:
    g = cnn(rng)
    out = run_ann(g, rng.random((3, 1, 8, 8), dtype=np.float32))
    assert out.shape == (3, 10) and np.isfinite(out).all()


def test_data_that_does_not_fit(rng: np.random.Generator) -> None:
    g = cnn(rng)
    with pytest.raises(CompileError, match="does not fit"):
        run_ann(g, rng.random((3, 1, 9, 9), dtype=np.float32))


class _AffineBefore(nn.Module):
    """A per-channel affine map (BatchNorm2d, or `(x − m) / s` written out) before a layer."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.kind = kind
        self.c0 = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.conv = nn.Conv2d(4, 4, 3, padding=0 if kind == "conv_nopad" else 1,
                              groups=2 if kind.startswith("conv") else 1)
        self.fc = nn.Linear(4 * (36 if kind == "conv_nopad" else 16 if kind == "pool" else 64),
                            10)
        models._Randomize.bn(self, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(torch.relu(self.c0(x)))  # after a ReLU: not foldable into c0
        if self.kind == "scale":  # scale only: exact through the conv's zero padding
            y = torch.relu(self.c0(x)) * torch.tensor([0.5, 2.0, 1.0, 3.0]).reshape(1, 4, 1, 1)
        if self.kind.startswith("conv") or self.kind == "scale":
            y = torch.relu(self.conv(y))
        if self.kind == "pool":
            y = nn.functional.avg_pool2d(y, 2)
        return self.fc(y.flatten(1))


@pytest.mark.parametrize("kind, folds", [("flat", True), ("pool", True), ("conv_nopad", True),
                                         ("conv_pad", False), ("scale", True)])
def test_batchnorm_folds_into_the_layer_after_it(kind: str, folds: bool, tmp_path: Path) -> None:
    path = models.export(_AffineBefore(kind), tmp_path / "m.onnx", fold=False)
    g = load_onnx(path)
    folded = PassManager([get_pass("fold-batchnorm")]).run(g, PassContext())
    left = sum(isinstance(op, BatchNorm) for _, op in folded.topo())
    assert left == (0 if folds else 1)  # a shift before a padded conv stays
    x = np.random.default_rng(2).random((32, *g.shape(g.input_name)), dtype=np.float32)
    ref = run_onnxruntime(path, x)
    out = run_ann(folded, x)
    assert np.abs(out - ref).max() <= 1e-5 * np.abs(ref).max()
