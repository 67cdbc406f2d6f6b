"""ImageNet-sized runs inside the library (issue 12, part d): the max-pool gate on spike counts
(same spikes as the float64 scores), fan-out counts without a mask of a dense layer's weights,
the run memory check with the pieces the budget picks, and ``--check`` without extra model
copies. Speed and memory figures live in benchmarks/scale.py, not here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import snncompile
import snncompile.backends.common as common
from snncompile import memory as mem
from snncompile import validate
from snncompile.backends.common import column_nonzeros, maxpool_gate
from snncompile.backends.gpu import compile as gpu_compile
from snncompile.backends.gpu.lowerings import fanout
from snncompile.frontend import load_onnx
from snncompile.ir import MaxPool2d
from snncompile.ir.diagnostics import CompileError
from snncompile.memory import current_bytes, run_bytes
from snncompile.options import CompileOptions
from snncompile.tools.cli import main

import build

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "examples" / "digits_cnn.onnx"
#: (kernel, stride, padding, dilation): VGG's tiling 2×2/2 (odd plane: a row and a column in
#: no window), 3×3/3, non-square 2×3, ResNet's overlapping padded 3×3/2, a dilated one
GEOMETRIES = [((2, 2), (2, 2), 0, 1), ((3, 3), (3, 3), 0, 1), ((2, 3), (2, 3), 0, 1),
              ((3, 3), (2, 2), 1, 1), ((2, 2), (1, 1), 0, 2)]


def _reference(op: MaxPool2d, x: np.ndarray) -> np.ndarray:
    """Per window and step, x of the first unit (row-major) with the largest count so far."""
    counts = np.cumsum(x != 0, 0)
    (kh, kw), (sh, sw), (dh, dw) = op.kernel, op.stride, op.dilation
    p = op.padding[0]
    h, w = x.shape[-2:]
    ho = (h + 2 * p - dh * (kh - 1) - 1) // sh + 1
    wo = (w + 2 * p - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((*x.shape[:3], ho, wo), x.dtype)
    for i in range(ho):
        for j in range(wo):
            cells = [(i * sh - p + a * dh, j * sw - p + b * dw) for a in range(kh)
                     for b in range(kw)]
            cells = [(r, c) for r, c in cells if 0 <= r < h and 0 <= c < w]
            score = np.stack([counts[..., r, c] for r, c in cells])
            k = score.argmax(0)  # the first maximum
            vals = np.stack([x[..., r, c] for r, c in cells])
            out[..., i, j] = np.take_along_axis(vals, k[None], 0)[0]
    return out


@pytest.mark.parametrize("kernel, stride, pad, dil", GEOMETRIES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_binary_gate_on_counts_equals_float_scores(kernel, stride, pad, dil, dtype,
                                                   monkeypatch):
    """θ given: the gate compares spike counts (and, for tiling windows, keys) instead of the
    float64 scores round(θ·m); every chunking, ties included (rate 0.5, few steps), and a run
    that passes the count limit mid-way (then the float64 scores), pass the same values."""
    op = MaxPool2d(kernel=kernel, stride=stride, padding=(pad,) * 4, dilation=(dil, dil))
    g = torch.Generator().manual_seed(3)
    theta = (torch.rand(3, 1, 1, generator=g) * 5 + 1e-3).to(dtype)
    for rate in (0.1, 0.5, 0.95):
        s = (torch.rand(12, 2, 3, 9, 11, generator=g) < rate).to(dtype)
        x = s * theta
        want = maxpool_gate(op, x, None, counts=True)
        assert np.array_equal(want.numpy(), _reference(op, x.numpy()))
        for chunks, limit in (((12,), 2**21), ((5, 7), 2**21), ((1,) * 12, 2**21),
                              ((4, 4, 4), 6)):
            monkeypatch.setattr(common, "GATE_COUNT_STEPS", limit)
            carry: dict = {}
            parts, t0 = [], 0
            for n in chunks:
                parts.append(maxpool_gate(op, x[t0:t0 + n], carry, counts=True, theta=theta))
                t0 += n
            assert torch.equal(torch.cat(parts), want), (rate, chunks, limit)
            assert ("score" in carry) == (limit < 12)  # over the limit: float64 scores


def test_binary_gate_under_autograd_keeps_the_gradient():
    op = MaxPool2d(kernel=(2, 2), stride=(2, 2))
    theta = torch.full((2, 1, 1), 0.5)
    x = ((torch.rand(4, 1, 2, 4, 4) < 0.5).float() * theta).requires_grad_()
    out = maxpool_gate(op, x, counts=True, theta=theta)
    out.sum().backward()
    assert x.grad is not None and x.grad.sum() == out.numel()  # gathered: one unit per window


def test_simulator_gives_binary_gates_their_theta():
    """IF layers feed their gates θ; the spikes, potentials and counts equal a run on the float64
    scores (gates without θ), also in time chunks; signed-if keeps the float64 scores."""
    rng = np.random.default_rng(0)
    x = rng.random((6, 1, 8, 8), dtype=np.float32)
    ir, _, _ = snncompile.convert(build.cnn(np.random.default_rng(1)), calibration=x,
                                  maxpool="gate")
    net = gpu_compile(ir, CompileOptions(device="cpu", batch_size=6))
    assert net.module.gate_theta == {"pool2": "conv2"}
    counted = net.run(x, 20, record=True, progress=False)
    net.module.gate_theta = {}
    scored = net.run(x, 20, record=True, progress=False)
    for k in scored.spike_trains:
        assert np.array_equal(counted.spike_trains[k], scored.spike_trains[k])
    assert np.array_equal(counted.potentials, scored.potentials)
    assert np.array_equal(counted.synops, scored.synops)
    signed, _, _ = snncompile.convert(build.cnn(np.random.default_rng(1)), calibration=x,
                                      neuron="signed-if", maxpool="gate")
    assert gpu_compile(signed, CompileOptions(device="cpu")).module.gate_theta == {}


@pytest.mark.parametrize("kernel, stride, pad, dil", GEOMETRIES)
def test_current_maxpool_without_autograd_equals_the_differentiable_path(kernel, stride, pad,
                                                                         dil):
    """``cummax_current`` without autograd (in-place sums, strided window max) gives the values
    of its differentiable path bit for bit (signed zeros too), whole and in time chunks."""
    from snncompile.ir.nodes import CurrentMaxPool2d
    from snncompile.pooling import cummax_current

    op = CurrentMaxPool2d(kernel=kernel, stride=stride, padding=(pad,) * 4, dilation=(dil, dil))
    g = torch.Generator().manual_seed(4)
    for dtype in (torch.float32, torch.float64):
        x = torch.randn(10, 2, 3, 9, 11, generator=g).to(dtype)
        x[x.abs() < 0.4] = 0  # zeros and ties
        for chunks in ((10,), (4, 6), (1,) * 10):
            fast, slow, c1, c2, t0 = [], [], {}, {}, 0
            for n in chunks:
                fast.append(cummax_current(op, x[t0:t0 + n].clone(), c1))
                with torch.enable_grad():
                    part = x[t0:t0 + n].clone().requires_grad_()
                    slow.append(cummax_current(op, part, c2).detach())
                t0 += n
            a, b = torch.cat(fast), torch.cat(slow)
            assert torch.equal(a, b) and torch.equal(torch.signbit(a), torch.signbit(b))
            assert torch.equal(c1["sum"], c2["sum"]) and torch.equal(c1["max"], c2["max"])


def test_column_nonzeros_in_blocks():
    w = np.random.default_rng(0).normal(size=(37, 11)).astype(np.float32)
    w[w < 0.3] = 0
    want = np.count_nonzero(w, axis=0)
    for chunk in (1, 11 * 4, 11 * 7 + 3, 2**20):
        assert np.array_equal(column_nonzeros(w, chunk_bytes=chunk), want)


def test_fanout_through_pool_and_flatten_without_a_weight_mask():
    """conv (spiking) -> maxpool 2×2 -> flatten -> dense with zeros: each conv unit drives the
    nonzero weights of its pooled unit's dense column (counted by hand here)."""
    rng = np.random.default_rng(2)
    d = build.dense(rng, 96, 5)
    w = d.weight.copy()
    w[rng.random(w.shape) < 0.4] = 0
    g = build.chain((1, 8, 8), ("conv", build.conv(rng, 1, 6)),
                    ("pool", MaxPool2d(kernel=(2, 2), stride=(2, 2))), ("flat", build.Flatten()),
                    ("fc", build.Dense(weight=w, bias=d.bias, act=None)))
    ir, _, _ = snncompile.convert(g, calibration=rng.random((4, 1, 8, 8), dtype=np.float32),
                                  maxpool="gate")
    got = fanout(ir, "conv")
    # 8×8 conv -> 2×2 pool -> 4×4 per channel: unit (c, r, q) feeds pooled unit (c, r//2, q//2)
    cols = np.count_nonzero(w, axis=0).reshape(6, 4, 4)
    want = cols[:, np.arange(8) // 2][:, :, np.arange(8) // 2]
    assert got.shape == (6, 8, 8)
    assert np.array_equal(got, want)


# ------------------------------------------------------------------------------ run memory
def test_run_memory_counts_the_pieces_the_budget_picks(digits_test, monkeypatch):
    """A run the chunked simulator fits (its budget picks small pieces) is not refused for the
    256 samples' state it never holds; one whose smallest piece exceeds the free memory is."""
    x = digits_test.x[:40]
    net = snncompile.compile(MODEL, calibration=x, timesteps=4, device="cpu",
                             memory_budget=str(current_bytes(torch.device("cpu")) + 2**16))
    units, k = validate.graph_units(net.graph), validate.classes(net.graph)
    old = mem.run_memory(len(x), 4, units, 256, k)
    new = mem.run_memory(len(x), 4, units, 256, k, pieces=net.plan_bytes(4, 40))
    assert new < old / 4
    free = (old + new) / 2 / validate.MEMORY_FRACTION  # refused before, fits now
    monkeypatch.setattr(mem, "available_bytes", lambda device=None: int(free))
    with pytest.raises(CompileError, match="too large"):
        validate.check_memory(old, "the old estimate")
    assert net.run(x, 4, progress=False).predictions.shape == (4, 40)
    monkeypatch.setattr(mem, "available_bytes", lambda device=None: 1024)
    with pytest.raises(CompileError, match="too large"):
        net.run(x, 4, progress=False)


def test_cli_memory_check_with_pieces(tmp_path, capsys, monkeypatch):
    graph = load_onnx(MODEL)
    units, k = validate.graph_units(graph), validate.classes(graph)
    budget = str(current_bytes(torch.device("cpu")) + 2**16)
    old = mem.run_memory(50, 4, units, 256, k)
    new = mem.run_memory(50, 4, units, 256, k, pieces=run_bytes(
        graph, 4, 50, budget=budget, device=torch.device("cpu")))
    assert new < old / 4
    free = (old + new) / 2 / validate.MEMORY_FRACTION
    args = [str(MODEL), "--dataset", "digits", "--eval-samples", "50", "--timesteps", "4",
            "--calibration-samples", "64", "--no-tune", "--memory-budget", budget]
    monkeypatch.setattr(mem, "available_bytes", lambda device=None: int(free))
    assert main([*args, "--out", str(tmp_path / "fits")]) == 0
    assert (tmp_path / "fits").is_dir()
    capsys.readouterr()
    monkeypatch.setattr(mem, "available_bytes", lambda device=None: 1024)
    assert main([*args, "--out", str(tmp_path / "refused")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "too large" in err[0], err
    assert not (tmp_path / "refused").exists()


# ------------------------------------------------------------------------------ --check
def test_onnxruntime_from_the_file_and_one_model_copy(digits_test, monkeypatch):
    """``run_onnxruntime`` on a path hands onnxruntime the file (no serialized copy), equal to
    the run on the ModelProto; ``read_model`` parses the file once."""
    import onnx

    from snncompile.frontend import onnx_import, run_onnxruntime

    x = digits_test.x[:8]
    by_path = run_onnxruntime(MODEL, x)
    assert np.array_equal(by_path, run_onnxruntime(onnx.load(str(MODEL)), x))
    import onnxruntime

    given, loads = [], []
    session = onnxruntime.InferenceSession
    monkeypatch.setattr(onnxruntime, "InferenceSession",
                        lambda model, *a, **kw: given.append(model) or session(model, *a, **kw))
    assert np.array_equal(run_onnxruntime(MODEL, x), by_path)
    assert given == [str(MODEL)]
    real = onnx.load
    monkeypatch.setattr(onnx, "load", lambda *a, **kw: loads.append(a) or real(*a, **kw))
    model, _ = onnx_import.read_model(MODEL)
    assert loads == [] and len(model.graph.initializer) > 0  # parsed once, from the bytes


def test_checker_sees_large_initializers_as_inputs(monkeypatch):
    """Initializers above ``LEAN_BYTES`` reach onnx's checker and shape inference as typed graph
    inputs (no serialized copy of the weights): the IR is the same, weights bit for bit."""
    from snncompile.frontend import onnx_import

    full = load_onnx(MODEL)
    monkeypatch.setattr(onnx_import, "LEAN_BYTES", 0)
    lean = load_onnx(MODEL)
    a, b = list(full.topo()), list(lean.topo())
    assert [(n, type(op)) for n, op in a] == [(n, type(op)) for n, op in b]
    for (n, x), (_, y) in zip(a, b, strict=True):
        for field in ("weight", "bias"):
            u, v = getattr(x, field, None), getattr(y, field, None)
            assert (u is None) == (v is None) and (u is None or np.array_equal(u, v)), n
        assert full.shape(n) == lean.shape(n)
    raw, _ = onnx_import.read_model(MODEL)
    checked = onnx_import._check(raw, "m")
    assert len(checked.graph.initializer) == 0 and len(raw.graph.initializer) > 0


def test_tuner_fit_samples_bounded_by_memory(digits_train):
    """The tuner records every op's activations of its fit samples: it keeps as many as half
    the free memory under the budget holds (at least 8), a random part of them."""
    from snncompile.pipeline_search import fit_cap, tune

    graph = load_onnx(MODEL)
    x, y = digits_train.x[:64], digits_train.y[:64]
    tight = CompileOptions(memory_budget=str(current_bytes(torch.device("cpu")) + 1))
    assert fit_cap(graph, 32, tight) == 8
    assert fit_cap(graph, 32, CompileOptions()) == 32
    # without --memory-budget the cap is a fixed 2 GiB of recordings, whatever is free (≥ 4 GiB)
    import snncompile.backends.memory as memory

    per = 4 * sum(int(np.prod(graph.shape(m))) for m, _ in graph.topo())
    n = (4 << 30) // per
    caps = []
    for free in (8 << 30, 64 << 30):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(memory, "room_bytes", lambda budget, device, free=free: free)
            caps.append(fit_cap(graph, n, CompileOptions()))
    assert caps[0] == caps[1] == (2 << 30) // per
    res = tune(graph, x, y, 8, budget=500, base_options=tight)
    assert res.fit == 8 and res.held_out == 32


def test_cli_reads_at_most_max_samples_for_the_tuner(tmp_path, monkeypatch):
    """The CLI materializes at most ``tune.MAX_SAMPLES`` calibration samples for the tuner (a
    10,000-image folder would otherwise be read into memory whole)."""
    import json

    import snncompile.pipeline_search as tune_module

    monkeypatch.setattr(tune_module, "MAX_SAMPLES", 40)
    report = tmp_path / "r.json"
    assert main([str(MODEL), "--dataset", "digits", "--calibration-samples", "64",
                 "--eval-samples", "10", "--timesteps", "4", "--tune-budget", "200",
                 "--out", str(tmp_path / "o"), "--report", str(report)]) == 0
    tuning = json.loads(report.read_text())["tuning"]
    assert tuning["held_out"] + tuning["fit"] == 40
