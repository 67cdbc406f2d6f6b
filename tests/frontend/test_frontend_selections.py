"""Selections (Slice, Split, Gather, a channel Pad), Cast and one-sided clips, as published
CIFAR models write them (issue 19): each exact against onnxruntime, each mapped on both
backends (He et al.'s option-A ResNet spike-exact between Lava and the torch reference)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

import snncompile
from snncompile import zoo
from snncompile.frontend import load_onnx, run_onnxruntime
from snncompile.interp import run_ann
from snncompile.ir import CompileError, Conv2d, ReLU

INT64_MAX = 2**63 - 1


def rel_err(ours: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(ours - ref).max() / max(float(np.abs(ref).max()), 1e-12))


def check(path: Path | onnx.ModelProto, in_shape: tuple[int, ...], n: int = 6) -> None:
    """The IR's float execution against onnxruntime (the CLI's ``--check``)."""
    x = np.random.default_rng(3).standard_normal((n, *in_shape)).astype(np.float32)
    ours, ref = run_ann(load_onnx(path), x), run_onnxruntime(path, x)
    assert ours.shape == ref.shape
    assert rel_err(ours, ref) <= 1e-5


def export(model: nn.Module, path: Path, in_shape: tuple[int, ...], *, opset: int = 17,
           dynamo: bool = False, batch1: bool = False) -> Path:
    """As a user exports: the legacy exporter with a dynamic batch axis (or a fixed batch of
    1), or the dynamo exporter."""
    model = model.eval()
    if dynamo:
        torch.onnx.export(model, (torch.zeros(2, *in_shape),), str(path), input_names=["x"],
                          opset_version=opset, dynamo=True, verbose=False,
                          dynamic_shapes=({0: torch.export.Dim("batch")},))
    else:
        torch.onnx.export(model, (torch.zeros(1 if batch1 else 2, *in_shape),), str(path),
                          input_names=["x"], opset_version=opset, dynamo=False,
                          dynamic_axes=None if batch1 else {"x": {0: "n"}})
    return path


SMALL = (3, 16, 16)


def _resnet(shortcut: str = "A", act: str = "relu") -> nn.Module:
    return zoo.cifar_resnet(8, shortcut, width=4, act=act, seed=0)


# ---------------------------------------------------------------------------- CIFAR models
@pytest.mark.parametrize("how", ["opset17", "opset13", "batch1", "dynamo"])
def test_option_a_resnet_as_exported(how: str, tmp_path: Path) -> None:
    """F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, p, p)): Slice (steps 2) on H and W, a Pad whose
    pads a constant subgraph computes (ConstantOfShape, Concat, a reversing Slice, Transpose,
    Cast: folded at import) -> one 1×1 stride-2 conv with a 0/1 matrix, no activation."""
    kw = {"opset17": {}, "opset13": {"opset": 13}, "batch1": {"batch1": True},
          "dynamo": {"opset": 18, "dynamo": True}}[how]
    path = export(_resnet("A"), tmp_path / "a.onnx", SMALL, **kw)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"Slice", "Pad"} <= ops
    g = load_onnx(path)
    shortcuts = [op for _, op in g.topo() if isinstance(op, Conv2d) and "selection" in op.origin]
    assert len(shortcuts) == 2
    for op in shortcuts:
        c_out, c_in = op.weight.shape[:2]
        assert op.weight.shape[2:] == (1, 1) and op.stride == (2, 2) and op.act is None
        assert c_out == 2 * c_in and op.weight.sum() == c_in  # one 1 per input channel
    check(path, SMALL, n=2 if how == "batch1" else 6)


@pytest.mark.parametrize("shortcut, act", [("A", "relu6"), ("A", "clip"), ("B", "relu"),
                                           ("B", "clip")])
def test_cifar_resnet_variants(shortcut: str, act: str, tmp_path: Path) -> None:
    """Option B (1×1 conv + BN) and the clipped activations: nn.ReLU6 (Clip(0, 6)) and
    torch.clamp(relu(x), max=m) (Relu, then Clip with no min) -> one clipped ReLU each."""
    path = export(_resnet(shortcut, act), tmp_path / "m.onnx", SMALL)
    g = load_onnx(path)
    relus = [op for _, op in g.topo() if isinstance(op, ReLU)]
    assert len(relus) == 7  # stem + 2 per block: no Clip left over as a ReLU of its own
    assert all(op.act.hi == (6.0 if act == "relu6" else 4.0 if act == "clip" else None)
               for op in relus)
    check(path, SMALL)


def test_cifar_vgg_with_maxpool(tmp_path: Path) -> None:
    path = export(zoo.cifar_vgg("vgg11", width=0.125, seed=0), tmp_path / "v.onnx", (3, 32, 32))
    check(path, (3, 32, 32), n=4)


# ---------------------------------------------------------------------------- selections
class _Selections(nn.Module):
    """shufflenet's channel split, channel slices and gathers, crops, a channel + H/W pad."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.c0 = nn.Conv2d(3, 8, 3, padding=1)
        self.c1 = nn.Conv2d(4, 4, 1)
        self.c2 = nn.Conv2d(8, 6, 3)
        self.fc = nn.Linear(6 * 6 * 6 + 7, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.c0(x))                                 # (8, 8, 8)
        a, b = y.split([4, 4], dim=1)                               # Split
        z = torch.cat([a, torch.relu(self.c1(b))], 1)
        z = z[:, [5, 0, 1, 7, 2, 3, 4, 6]]                         # Gather of channels
        w = nn.functional.pad(z[:, 1:7], (1, 1, 1, 1, 1, 1))[:, :, 1:-1, 1:-1]  # C/H/W pad, crop
        w = torch.relu(self.c2(w))                                  # (6, 6, 6)
        f = torch.cat([w.flatten(1), y[:, -7:, :1, -1:].flatten(1)], 1)  # negative start
        return self.fc(f)


class _Crop(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.kind = kind
        self.c0 = nn.Conv2d(3, 6, 3, padding=1)
        self.c1 = nn.Conv2d(6, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.c0(x))
        if self.kind == "split_hw":
            top, bottom = y.split([3, 5], dim=2)
            y = bottom[:, :, ::2] + top
        elif self.kind == "strided_crop":
            y = torch.cat([y[:, ::2], y[:, 1::2]], 1)[:, :, 1::3, -5:]
        elif self.kind == "pad_c_hw":
            y = nn.functional.pad(y[:, 2:, ::2, ::2], (1, 1, 2, 2, 1, 1))
        elif self.kind == "pad_then_slice":  # an H/W Pad read by a Slice: one selection
            y = nn.functional.pad(y, (1, 1, 1, 1))[:, :, ::2, 1::2]
        elif self.kind == "clamp_max":
            y = torch.clamp(nn.functional.max_pool2d(y, 2), max=0.5)
        return self.c1(y).flatten(1)


def test_channel_split_gather_and_crops(tmp_path: Path) -> None:
    model = _Selections()
    path = export(model, tmp_path / "s.onnx", (3, 8, 8))
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"Split", "Gather", "Slice", "Pad"} <= ops
    check(path, (3, 8, 8))


@pytest.mark.parametrize("kind", ["split_hw", "strided_crop", "pad_c_hw", "pad_then_slice",
                                  "clamp_max"])
@pytest.mark.parametrize("dynamo", [False, True])
def test_spatial_selections(kind: str, dynamo: bool, tmp_path: Path) -> None:
    path = export(_Crop(kind), tmp_path / "c.onnx", (3, 8, 8), dynamo=dynamo,
                  opset=18 if dynamo else 17)
    check(path, (3, 8, 8))


def _graph(nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto],
           out_rank: int = 4) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 6, 6])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "c", "h", "w"][:out_rank])
    g = helper.make_graph(nodes, "g", [x], [y], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _ints(name: str, v: list[int]) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(v, np.int64), name)


def _conv(x: str, y: str, c_in: int, c_out: int = 3) -> tuple[onnx.NodeProto, onnx.TensorProto]:
    w = np.random.default_rng(0).standard_normal((c_out, c_in, 1, 1)).astype(np.float32)
    return (helper.make_node("Conv", [x, "w"], [y]), numpy_helper.from_array(w, "w"))


@pytest.mark.parametrize("starts, ends, axes, steps, c", [
    ([-3], [INT64_MAX], [1], [1], 3),                  # negative start, INT_MAX end
    ([0, 1, -5], [INT64_MAX, -1, 6], [1, 2, -1], [2, 2, 2], 2),  # several axes, negative axis
    ([0, -100], [INT64_MAX, 100], [0, 3], [1, 1], 4),  # the batch axis whole, clamped ends
    ([1], [3], [1], [1], 2)])
def test_slice_forms_as_exporters_write_them(starts: list[int], ends: list[int],
                                             axes: list[int], steps: list[int],
                                             c: int) -> None:
    conv, w = _conv("s", "y", c)
    m = _graph([helper.make_node("Slice", ["x", "st", "en", "ax", "sp"], ["s"]), conv],
               [_ints("st", starts), _ints("en", ends), _ints("ax", axes), _ints("sp", steps), w])
    check(m, (4, 6, 6))


def test_cast_to_float_and_clip_after_relu() -> None:
    """Cast to float is the identity; Relu -> Clip(max) is one clipped ReLU; Clip(min < 0,
    max) of a non-negative value (a gather of it) is the same clip."""
    conv, w = _conv("k", "y", 4)
    m = _graph([helper.make_node("Relu", ["x"], ["r"]),
                helper.make_node("Gather", ["r", "i"], ["g"], axis=1),
                helper.make_node("Cast", ["g"], ["cg"], to=TensorProto.FLOAT),
                helper.make_node("Clip", ["cg", "lo", "hi"], ["k"]), conv],
               [_ints("i", [3, 2, 1, 0]), numpy_helper.from_array(np.float32(-1.0), "lo"),
                numpy_helper.from_array(np.float32(0.7), "hi"), w])
    check(m, (4, 6, 6))
    conv, w = _conv("k", "y", 4)
    m = _graph([helper.make_node("Relu", ["x"], ["r"]),
                helper.make_node("Clip", ["r", "", "hi"], ["k"]), conv],
               [numpy_helper.from_array(np.float32(0.7), "hi"), w])
    (relu,) = [op for _, op in load_onnx(m).topo() if isinstance(op, ReLU)]
    assert relu.act.hi == pytest.approx(0.7)
    check(m, (4, 6, 6))


@pytest.mark.parametrize("node, inits, word", [
    (helper.make_node("Slice", ["x", "st", "en", "ax", "sp"], ["s"]),
     [_ints("st", [-1]), _ints("en", [-INT64_MAX]), _ints("ax", [1]), _ints("sp", [-1])],
     "steps=-1 on axis 1: a negative step"),
    (helper.make_node("Slice", ["x", "st", "en", "ax"], ["s"]),
     [_ints("st", [1]), _ints("en", [INT64_MAX]), _ints("ax", [0])], "slices the batch axis"),
    (helper.make_node("Gather", ["x", "i"], ["s"], axis=1),
     [numpy_helper.from_array(np.array(1, np.int64), "i")], "a scalar index drops the axis"),
    (helper.make_node("Gather", ["x", "i"], ["s"], axis=2),
     [_ints("i", [0, 2, 3])], "not evenly spaced"),
    (helper.make_node("Clip", ["x", "", "hi"], ["s"]),
     [numpy_helper.from_array(np.float32(1.0), "hi")], "min=None"),
    (helper.make_node("Cast", ["x"], ["s"], to=TensorProto.INT64), [], "to=7"),
])
def test_selection_refusals_name_the_node(node: onnx.NodeProto, inits: list, word: str) -> None:
    node.name = "the_node"
    after = helper.make_node("Cast" if node.op_type == "Cast" else "Relu", ["s"], ["y"],
                             **({"to": TensorProto.FLOAT} if node.op_type == "Cast" else {}))
    m = _graph([node, after], inits, out_rank=3 if "scalar" in word else 4)
    with pytest.raises(CompileError) as e:
        load_onnx(m)
    line = e.value.one_line()
    assert "the_node" in line and word in line, line


# ---------------------------------------------------------------------------- backends
@pytest.fixture(scope="module")
def option_a(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    d = tmp_path_factory.mktemp("a")
    x = np.random.default_rng(0).random((40, *SMALL), dtype=np.float32)
    return export(_resnet("A"), d / "a.onnx", SMALL), x


def test_option_a_converts_on_gpu(option_a: tuple[Path, np.ndarray]) -> None:
    """The shortcut adds no neurons and is no layer to balance: the spiking layers are the
    stem, each block's first conv and each block's Add."""
    from snncompile.backends.gpu import compile as gpu_compile

    path, x = option_a
    snn, _, _ = snncompile.convert(path, target="gpu", calibration=x, no_tune=True)
    spiking = [n for n, op in snn.topo() if getattr(op, "neuron", None) is not None]
    assert len(spiking) == 7 and not any("shortcut" in n for n in spiking)
    run = gpu_compile(snn, snncompile.CompileOptions()).run(x[:4], 8, progress=False)
    assert run.predictions.shape[-1] == 4


@pytest.mark.lava
@pytest.mark.timeout(240)
def test_option_a_resnet_lava_spike_exact(option_a: tuple[Path, np.ndarray]) -> None:
    """Spike for spike, every layer, every step: Lava fixed_pt == the torch Loihi reference;
    each shortcut is a 1×1 stride-2 conv synapse (a Lava Conv), not a dense matrix."""
    from snncompile.backends.loihi import compile as lava_compile
    from snncompile.backends.loihi import compile_reference as loihi_reference

    path, x = option_a
    snn, _, _ = snncompile.convert(path, target="loihi", calibration=x, no_tune=True)
    opts = snncompile.CompileOptions(lava_mode="fixed")
    net = lava_compile(snn, opts)
    net.conv_as_dense_limit = 0  # every conv synapse a Lava Conv
    shortcuts = [s for s in net.plan.syns if "shortcut" in s.note or s.stride == (2, 2)
                 and s.weight.shape[2:] == (1, 1)]
    assert len(shortcuts) == 2 and all(s.kind == "conv" for s in shortcuts)
    assert all(s.kind == "conv" for s in net.plan.syns if s.dst != net.plan.readout_name)
    lava = net.run(x[:2], 8, record=True, progress=False)
    ref = loihi_reference(snn, snncompile.CompileOptions()).run(x[:2], 8, record=True,
                                                                progress=False)
    layers = net.plan.spiking()
    assert set(lava.spike_trains) == set(layers)
    for name in layers:
        np.testing.assert_array_equal(lava.spike_trains[name], ref.spike_trains[name], name)
    np.testing.assert_array_equal(lava.potentials, ref.potentials)
    assert sum(t.sum() for t in lava.spike_trains.values()) > 100
