"""Low-latency conversion (issue 5), IR + GPU simulator side: quantized-ANN import, the neuron
models signed-if / gn / bistable / sigma-delta, select-neurons and sync-shortcuts.

Spike trains are checked against hand-computed ones (float64 simulation, exact decimals)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import snncompile
from snncompile.backends.gpu import NEURON_MODELS
from snncompile.backends.gpu import compile as gpu_compile
from snncompile.interp import run_ann
from snncompile.ir import Neuron, verify
from snncompile.options import CompileOptions
from snncompile.passes import PassContext, PassManager, get_pass
from snncompile.tools.cli import main

import build

ROOT = Path(__file__).resolve().parents[2]
Q4 = ROOT / "examples" / "digits_cnn_q4.onnx"


def _train(graph, current: list[float], **neuron_changes) -> np.ndarray:
    """Spike train s(t) of the single unit of ``build.if_layer``-style ``graph`` driven by the
    per-step current ``current`` (an input spike train through identity synapses)."""
    net = gpu_compile(graph, CompileOptions(device="cpu"), dtype=torch.float64)
    x = torch.tensor(current, dtype=torch.float64).reshape(-1, 1, 1)
    _, spikes = net.module.simulate(x, len(current))
    return spikes["if"][:, 0, 0].numpy()


def _one_unit(model: str, threshold: float, *, members: int = 1, alpha: float = 0.5):
    g = build.if_layer(threshold, 1, alpha)
    op = g.op("if")
    g.replace("if", neuron=Neuron(model=model, threshold=op.neuron.threshold, alpha=alpha,
                                  members=members))
    return g


# ------------------------------------------------------------------ quantized ANNs (QCFS)
class _QLayer(nn.Module):
    def __init__(self, levels: int) -> None:
        super().__init__()
        from snncompile.qat import QuantReLU

        torch.manual_seed(levels)
        self.fc = nn.Linear(64, 24)
        self.act = QuantReLU(levels, init_bound=0.5)
        self.out = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.act(self.fc(x.flatten(1))))


@pytest.mark.parametrize("levels", [2, 4, 8])
def test_quantized_layer_is_exact_at_t_equals_levels(levels: int, tmp_path: Path) -> None:
    """One QuantReLU layer exported to ONNX: at T = L, spike count · θ / T equals the ANN's
    clip-floor-shift output for every unit (θ = λ from the ONNX graph, v(0) = θ/2)."""
    model = _QLayer(levels).eval()
    path = tmp_path / "q.onnx"
    torch.onnx.export(model, (torch.zeros(2, 1, 8, 8),), str(path), input_names=["input"],
                      output_names=["logits"], opset_version=17, dynamo=False,
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    rng = np.random.default_rng(levels)
    x = (rng.random((64, 1, 8, 8)) * 3 - 1).astype(np.float32)
    # no calibration data: a quantized layer's threshold must come from λ alone
    snn, _, _ = snncompile.convert(path, target="gpu", timesteps=levels)
    (layer,) = [n for n, op in snn.topo() if getattr(op, "neuron", None) is not None]
    lam = float(model.act.bound.detach()[0])
    np.testing.assert_allclose(snn.op(layer).neuron.threshold, lam, rtol=1e-6)
    assert snn.op(layer).neuron.alpha == 0.5
    net = gpu_compile(snn, CompileOptions(device="cpu"), dtype=torch.float64)
    res = net.run(x, levels, record=True, progress=False)
    rate = res.spike_trains[layer].sum(0).astype(np.float64) * lam / levels
    with torch.no_grad():
        want = model.act(model.fc(torch.from_numpy(x).flatten(1))).double().numpy()
    np.testing.assert_allclose(rate, want, atol=1e-5)
    assert len(np.unique(np.round(want / lam * levels))) == levels + 1  # every level occurs


def test_quantized_example_converts_near_its_ann(digits_test) -> None:
    """The shipped q4 digits CNN: thresholds from λ, SNN accuracy close to the quantized ANN."""
    snn, _, _ = snncompile.convert(Q4, target="gpu")
    ann = snncompile.load_onnx(Q4)
    ann_acc = float(np.mean(run_ann(ann, digits_test.x).argmax(1) == digits_test.y))
    res = gpu_compile(snn, CompileOptions(device="cpu")).run(digits_test.x, 8, progress=False)
    acc = res.accuracy_by_timestep(digits_test.y)
    assert ann_acc > 0.97
    assert acc[3] >= ann_acc - 0.02  # T = 4 = L
    assert acc[7] >= ann_acc - 0.01  # T = 8


# ------------------------------------------------------------------ neuron models
def test_signed_if_takes_back_excess_spikes() -> None:
    cur = [1.0, -1.0, 0.0, 0.6, -1.2, -1.0]
    # t1 v=1.5 fires (v=.5, n=1); t2 v=-.5 < 0 with n=1: negative spike (v=.5, n=0); t3 nothing;
    # t4 v=1.1 fires (v=.1); t5 v=-1.1: negative (v=-.1, n=0); t6 v=-1.1 but n=0: nothing
    np.testing.assert_array_equal(_train(_one_unit("signed-if", 1.0), cur), [1, -1, 0, 1, -1, 0])
    # plain IF keeps the excess: v = -.5 after t2, so t4 (v = .1) does not fire
    np.testing.assert_array_equal(_train(_one_unit("if", 1.0), cur), [1, 0, 0, 0, 0, 0])


def test_group_neuron_member_spikes_and_counts() -> None:
    g = build.if_layer(3.0, 1)
    g = get_pass("select-neurons{model=gn,members=3}").run(g, PassContext())
    n = g.op("if").neuron
    assert (n.model, n.members, float(n.threshold[0])) == ("gn", 3, 1.0)  # θ/M per member
    # v0 = .5: t1 3.2 -> 3 members (v=.2); t2 .4 -> 0; t3 5.4 -> 3 (max M, v=2.4); t4 2.4 -> 2
    np.testing.assert_array_equal(_train(g, [2.7, 0.2, 5.0, 0.0, 0.4]), [3, 0, 3, 2, 0])
    # constant input 1.3: v = 1.8, 2.1, 1.4, 1.7 -> 1, 2, 1, 1 member spikes = 5, each counted
    res = gpu_compile(g, CompileOptions(device="cpu"), dtype=torch.float64).run(
        np.array([[1.3]], np.float32), 4, record=True, progress=False)
    np.testing.assert_array_equal(res.spike_trains["if"][:, 0, 0], [1, 2, 1, 1])
    assert res.layer_spikes["if"][0] == 5 and res.synops[0] == 5  # fan-out 1
    np.testing.assert_allclose(res.output[0, 0], 5.0)  # emitted Σ θ_m·s


def test_bistable_integrates_a_window_then_fires() -> None:
    g = _one_unit("bistable", 1.0, members=2)
    # window 1 integrates 1.6 -> v = 2.1; window 2 fires twice (v = .1) while integrating -.2
    np.testing.assert_array_equal(_train(g, [0.8, 0.8, -0.4, 0.2, 0.0, 0.0]), [0, 0, 1, 1, 0, 0])
    # phase lead: +1 arrives before -1. IF fires once (a spike of an inactive neuron); the
    # bistable neuron sees each window's net input 0 and stays silent
    lead = [1.0, -1.0] * 3
    np.testing.assert_array_equal(_train(_one_unit("if", 1.0), lead), [1, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(_train(g, lead), [0] * 6)


def test_sigma_delta_sends_graded_deltas() -> None:
    g = build.if_layer(8.0, 1)
    g = get_pass("select-neurons{model=sigma-delta,delta=0.0625}").run(g, PassContext())
    assert float(g.op("if").neuron.threshold[0]) == 0.5
    cur = [2.0, 2.2, 2.6, -1.0, 0.3]
    # sent S: 2 (δ=2), 2 (δ=.2 < .5), 2.6 (δ=.6), 0 (δ=-2.6), 0 (δ=.3): s = S/θ
    np.testing.assert_allclose(_train(g, cur), [4.0, 4.0, 5.2, 0.0, 0.0])
    net = gpu_compile(g, CompileOptions(device="cpu"), dtype=torch.float64)
    x = torch.tensor(cur, dtype=torch.float64).reshape(-1, 1, 1)
    _, spikes = net.module.simulate(x, len(cur))
    events = NEURON_MODELS["sigma-delta"].events(spikes["if"])
    np.testing.assert_array_equal(events[:, 0, 0].numpy(), [1, 0, 1, 1, 0])
    # static input: one message at t=1, then nothing; the readout sees the activation each step
    res = net.run(np.array([[3.0]], np.float32), 6, progress=False)
    assert res.layer_spikes["if"][0] == 1
    np.testing.assert_allclose(res.output[0, 0], 18.0)


@pytest.mark.parametrize("model", ["if", "signed-if", "gn", "bistable", "sigma-delta"])
def test_fast_and_autograd_scans_agree(model: str) -> None:
    """Each scan's in-place no-grad path gives the spikes of its differentiable path."""
    gen = torch.Generator().manual_seed(1)
    cur = torch.randn(16, 3, 4, 5, 5, generator=gen, dtype=torch.float64) * 0.8
    theta = torch.tensor([0.5, 1.0, 1.5, 0.7], dtype=torch.float64).reshape(4, 1, 1)
    scan = NEURON_MODELS[model].scan
    with torch.no_grad():
        fast = scan(cur, theta, 0.5, 3)
    slow = scan(cur, theta, 0.5, 3)  # grad mode on: the out-of-place path
    assert NEURON_MODELS[model].events(fast).sum() > 0
    torch.testing.assert_close(fast, slow, rtol=0, atol=1e-12)


def test_counts_when_compiled_under_no_grad() -> None:
    """Fan-outs are computed as a gradient: compiling inside torch.no_grad must not zero them."""
    g = build.if_layer(1.0, 1)
    with torch.no_grad():
        net = gpu_compile(g, CompileOptions(device="cpu"))
    res = net.run(np.array([[0.5]], np.float32), 4, progress=False)
    assert res.layer_spikes["if"][0] == 2 and res.synops[0] == 2


def test_select_neurons_rejects_bad_options() -> None:
    g = build.if_layer(1.0)
    with pytest.raises(snncompile.CompileError, match="unknown neuron model"):
        get_pass("select-neurons{model=lif}").run(g, PassContext())
    with pytest.raises(snncompile.CompileError, match="bad pass option"):
        get_pass("select-neurons{model=sigma-delta,delta=0}").run(g, PassContext())


# ------------------------------------------------------------------ synchronous neurons
def _residual_snn(rng, model: str = "if"):
    g = build.residual(rng)
    x = rng.random((32, 1, 8, 8)).astype(np.float32)
    specs = ["balance-thresholds{norm=max}", "initial-potential"]
    if model != "if":
        specs.append(f"select-neurons{{model={model}}}")
    return PassManager([get_pass(s) for s in specs]).run(g, PassContext(calibration=x)), x


def test_sync_shortcuts_inserts_synchronous_neurons(rng) -> None:
    snn, x = _residual_snn(rng)
    ctx = PassContext()
    synced = get_pass("sync-shortcuts").run(snn, ctx)
    verify(synced)
    sns = ctx.notes["sync-shortcuts"]["synchronous_neurons"]
    assert sns == ["stem_sync", "add1_sync"]
    assert synced.inputs("add1") == ["b1c2", "stem_sync"]  # identity shortcut
    assert synced.inputs("proj") == ["add1_sync"]  # projection shortcut: before the 1×1 conv
    np.testing.assert_allclose(run_ann(synced, x), run_ann(snn, x), rtol=1e-6, atol=1e-6)
    # IF neurons in the zero-delay simulator: an SN re-emits its source's spikes exactly
    opts = CompileOptions(device="cpu")
    a = gpu_compile(snn, opts, dtype=torch.float64).run(x, 8, record=True, progress=False)
    b = gpu_compile(synced, opts, dtype=torch.float64).run(x, 8, record=True, progress=False)
    np.testing.assert_array_equal(b.spike_trains["stem_sync"], b.spike_trains["stem"])
    np.testing.assert_allclose(b.potentials, a.potentials, atol=1e-9)
    assert b.synops.mean() > a.synops.mean()  # the SNs' spikes are counted


def test_sync_shortcuts_delay_bistable_shortcuts_by_one_window(rng) -> None:
    snn, x = _residual_snn(rng, "bistable")
    synced = get_pass("sync-shortcuts").run(snn, PassContext())
    res = gpu_compile(synced, CompileOptions(device="cpu"), dtype=torch.float64).run(
        x, 12, record=True, progress=False)
    rho = synced.op("stem").neuron.members
    for sn, src in (("stem_sync", "stem"), ("add1_sync", "add1")):
        s, d = res.spike_trains[src], res.spike_trains[sn]
        assert s.sum() > 0
        np.testing.assert_array_equal(d[rho:], s[:-rho])


# ------------------------------------------------------------------ CLI, every option
@pytest.mark.parametrize("args", [["--neuron", "signed-if"],
                                  ["--neuron", "gn", "--gn-members", "2"],
                                  ["--neuron", "bistable"], ["--neuron", "sigma-delta"],
                                  ["--sync-shortcuts"]])
def test_cli_neuron_options(args: list[str], digits_cnn_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main([str(digits_cnn_onnx), "--target", "gpu", "--dataset", "digits", "-T", "4",
                 "--eval-samples", "100", "--device", "cpu", "--out", str(out), *args]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["spikes_per_sample"] > 0 and rep["synaptic_ops_per_sample"] > 0
    if args[0] == "--neuron":
        assert f"model={args[1]}" in rep["pipeline"]
        gpu = json.loads((out / "gpu.json").read_text())
        assert set(gpu["neurons"].values()) == {args[1]}
    else:
        assert "sync-shortcuts" in rep["pipeline"]
        assert rep["notes"]["sync-shortcuts"]["synchronous_neurons"] == []  # no residuals
    assert rep["accuracy_by_timestep"]
    if args[-1] in ("2", "sigma-delta"):
        assert rep["snn_accuracy"] > 0.9  # low-latency models are accurate at T = 4


# ------------------------------------------------------------------ Fast-SNN layer-wise tuning
def test_layerwise_finetune_reduces_layer_errors(rng) -> None:
    from snncompile.finetune import train

    g = build.cnn(rng)
    x = rng.random((48, 1, 8, 8)).astype(np.float32)
    snn, _, _ = snncompile.convert(g, calibration=x)
    before = {n: np.array(op.weight) for n, op in snn.topo() if hasattr(op, "weight")}
    (res,) = train(snn, x, "layerwise", epochs=2, lr=3e-3, timesteps=4, progress=False)
    layers = [h["layer"] for h in res.history]
    assert layers == ["conv1", "conv2", "fc1"]  # spiking Conv2d/Dense, input side first
    for h in res.history:
        assert h["error_after"] <= h["error_before"]
        trained = res.trained if res.trained is not None else res.graph  # before the check
        changed = not np.array_equal(np.array(trained.op(h["layer"]).weight), before[h["layer"]])
        assert changed == h["kept"]
    assert any(h["kept"] for h in res.history)
    for n, w in before.items():  # the input IR is untouched
        np.testing.assert_array_equal(np.array(snn.op(n).weight), w)
    verify(res.graph)


# ------------------------------------------------------------------ quantized patterns in ONNX
def _onnx_mlp(mid: list, extra_inits: list, tmp_path: Path, name: str) -> Path:
    """input (N, 8) -> Gemm(8->6) -> <mid nodes: 'h' -> 'a'> -> Gemm(6->3) -> logits."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    r = np.random.default_rng(3)
    inits = [numpy_helper.from_array(r.normal(0, 0.6, (6, 8)).astype(np.float32), "w1"),
             numpy_helper.from_array(r.normal(0, 0.1, 6).astype(np.float32), "b1"),
             numpy_helper.from_array(r.normal(0, 0.5, (3, 6)).astype(np.float32), "w2"),
             *extra_inits]
    nodes = [helper.make_node("Gemm", ["input", "w1", "b1"], ["h"], transB=1), *mid,
             helper.make_node("Gemm", ["a", "w2"], ["logits"], transB=1)]
    graph = helper.make_graph(
        nodes, name, [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, str(path))
    return path


def _scalar(v: float, name: str, dtype=np.float32):
    from onnx import numpy_helper

    return numpy_helper.from_array(np.array(v, dtype=dtype), name)


def test_qdq_around_relu_becomes_a_quantized_activation(tmp_path: Path) -> None:
    from onnx import helper

    from snncompile.frontend import run_onnxruntime

    mid = [helper.make_node("Relu", ["h"], ["r"]),
           helper.make_node("QuantizeLinear", ["r", "s", "z"], ["q"]),
           helper.make_node("DequantizeLinear", ["q", "s", "z"], ["a"])]
    path = _onnx_mlp(mid, [_scalar(0.125, "s"), _scalar(0, "z", np.uint8)], tmp_path, "qdq")
    g = snncompile.load_onnx(path)
    acts = [op.act for _, op in g.topo() if getattr(op, "act", None) is not None]
    assert [(a.levels, a.hi, a.shift) for a in acts] == [(255, 0.125 * 255, 0.5)]
    x = np.random.default_rng(4).normal(0, 1, (64, 8)).astype(np.float32)
    np.testing.assert_allclose(run_ann(g, x), run_onnxruntime(path, x), rtol=1e-5, atol=1e-5)
    snn, _, _ = snncompile.convert(path, target="gpu")
    (th,) = [op.neuron.threshold for _, op in snn.topo() if getattr(op, "neuron", None)]
    np.testing.assert_allclose(th, 0.125 * 255)


def test_round_clip_chain_folds_and_a_bare_floor_is_reported(tmp_path: Path) -> None:
    from onnx import helper

    from snncompile.frontend import run_onnxruntime

    # y = (λ/L)·clip(round(x·L/λ), 0, L) with L = 3, λ = 1.5: Round reads as floor(u + 0.5)
    mid = [helper.make_node("Mul", ["h", "k"], ["u"]), helper.make_node("Round", ["u"], ["r"]),
           helper.make_node("Clip", ["r", "lo", "hi"], ["c"]),
           helper.make_node("Mul", ["c", "step"], ["a"])]
    inits = [_scalar(2.0, "k"), _scalar(0.0, "lo"), _scalar(3.0, "hi"), _scalar(0.5, "step")]
    path = _onnx_mlp(mid, inits, tmp_path, "round")
    g = snncompile.load_onnx(path)
    acts = [op.act for _, op in g.topo() if getattr(op, "act", None) is not None]
    assert [(a.levels, a.hi, a.shift) for a in acts] == [(3, 1.5, 0.5)]
    x = np.random.default_rng(5).normal(0, 1, (64, 8)).astype(np.float32)
    np.testing.assert_allclose(run_ann(g, x), run_onnxruntime(path, x), rtol=1e-5, atol=1e-5)
    # without the clip there is no bounded quantizer: Floor stays and is unsupported
    bare = _onnx_mlp([helper.make_node("Floor", ["h"], ["a"])], [], tmp_path, "floor")
    with pytest.raises(snncompile.CompileError, match=r"Floor ×1 \(first at node"):
        snncompile.load_onnx(bare)


@pytest.mark.parametrize("name,members", [("scan_if", 1), ("scan_signed_if", 1), ("scan_gn", 4)])
def test_in_place_scans_equal_the_autograd_form(name: str, members: int) -> None:
    """The no-grad in-place loops (float compares, no bool temporaries) give the spikes and the
    final state of the autograd form bit for bit, negative spikes and several members too."""
    from snncompile.backends.gpu import neurons as gpu_neurons

    scan = getattr(gpu_neurons, name)
    g = torch.Generator().manual_seed(1)
    cur = torch.randn(24, 5, 3, 4, 4, generator=g) * 0.8  # (T, B, C, H, W), some negative
    theta = torch.rand(1, 3, 1, 1, generator=g) + 0.3
    outs = []
    for grad in (False, True):
        state: dict = {}
        with torch.set_grad_enabled(grad):
            s = scan(cur.clone().requires_grad_(grad), theta, 0.5, members, state=state)
        outs.append((s.detach(), {k: v.detach() if torch.is_tensor(v) else v
                                  for k, v in state.items()}))
    (s0, st0), (s1, st1) = outs
    assert torch.equal(s0, s1) and s0.abs().sum() > 0
    assert st0.keys() == st1.keys()
    # v -= s·θ: the in-place loop's addcmul_ may fuse the multiply-add (one rounding), which
    # differs from v - s·θ in the last bit when s·θ is inexact (a GN's s = 3); with s ∈ {0, ±1}
    # it is exact
    for k in st0:
        if not torch.is_tensor(st0[k]):
            assert st0[k] == st1[k]
        elif members == 1:
            assert torch.equal(st0[k], st1[k]), k
        else:
            torch.testing.assert_close(st0[k], st1[k], rtol=0, atol=1e-6)
    if name == "scan_signed_if":
        assert (s0 < 0).any()
