"""The current max-pool (``--maxpool current``, issue 11 item 3): the ``maxpool-current``
rewrite, the cumulative-current pooling of the gpu simulator and of the loihi reference, the
Lava ``CurrentMaxPool`` process (spike-exact against the reference), time chunks, the accuracy
gain over the spike gate on a trained MaxPool net, and the refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import snncompile
from snncompile.backends.gpu import compile as gpu_compile
from snncompile.backends.loihi import compile_reference as loihi_reference
from snncompile.backends.loihi.plan import build_plan
from snncompile.interp import record_activations, run_ann
from snncompile.ir import Add, CompileError, Graph, Input, MaxPool2d, Output, ReLU
from snncompile.ir.nodes import CurrentMaxPool2d
from snncompile.memory import Pieces
from snncompile.options import CompileOptions
from snncompile.passes import PassContext
from snncompile.passes.maxpool_current import maxpool_current
from snncompile.pooling import cummax_current
from snncompile.tools.cli import main

import build
import models

T = 32
CPU = CompileOptions(device="cpu")


def _pools(rng: np.random.Generator) -> Graph:
    """Every pattern: Conv+ReLU → MaxPool(3, stride 2, pad 1); Add+ReLU → MaxPool(2);
    Conv → MaxPool(2) → ReLU; MaxPool on the input (keeps the gate... on static input);
    a Conv+ReLU read by a pool and by a shortcut (keeps the gate)."""
    g = Graph()
    g.add("input", Input(shape=(1, 8, 8)))
    g.add("c0", build.conv(rng, 1, 4), ["input"])
    g.add("p0", MaxPool2d(kernel=(3, 3), stride=(2, 2), padding=(1, 1, 1, 1)), ["c0"])
    g.add("c1", build.conv(rng, 4, 4), ["p0"])
    g.add("c2", build.conv(rng, 4, 4, act=None), ["c1"])
    g.add("add", Add(act=build.RELU), ["c2", "p0"])
    g.add("p1", MaxPool2d(kernel=(2, 2), stride=(2, 2)), ["add"])
    g.add("c3", build.conv(rng, 4, 6, act=None), ["p1"])
    g.add("p2", MaxPool2d(kernel=(2, 2), stride=(2, 2)), ["c3"])
    g.add("r2", ReLU(act=build.RELU), ["p2"])
    g.add("flat", build.Flatten(), ["r2"])
    g.add("fc", build.dense(rng, 6, 10, act=None), ["flat"])
    g.add("output", Output(), ["fc"])
    return g


def _two_readers(rng: np.random.Generator) -> Graph:
    g = Graph()
    g.add("input", Input(shape=(1, 8, 8)))
    g.add("c0", build.conv(rng, 1, 4), ["input"])
    g.add("p0", MaxPool2d(kernel=(2, 2), stride=(2, 2)), ["c0"])
    g.add("q0", build.AvgPool2d(kernel=(2, 2), stride=(2, 2)), ["c0"])
    g.add("add", Add(), ["p0", "q0"])
    g.add("flat", build.Flatten(), ["add"])
    g.add("fc", build.dense(rng, 64, 10, act=None), ["flat"])
    g.add("output", Output(), ["fc"])
    return g


# ------------------------------------------------------------------------------ the rewrite
def test_rewrite_is_exact_in_the_ann_and_covers_every_pattern(rng, digits_train):
    g = _pools(rng)
    ctx = PassContext()
    out = maxpool_current.run(g, ctx)
    notes = ctx.notes["maxpool-current"]
    assert notes["current"] == {"p0": "c0", "p1": "add", "p2": "c3"} and notes["gate"] == {}
    assert all(isinstance(out.op(p), CurrentMaxPool2d) for p in ("p0", "p1", "p2"))
    assert "r2" not in out  # Conv → MaxPool → ReLU: the ReLU moved into the pool
    assert out.op("c0").act is None and out.op("add").act is None
    x = digits_train.x[:64]
    np.testing.assert_allclose(run_ann(out, x), run_ann(g, x), rtol=1e-6, atol=1e-6)
    assert g.op("p0").__class__ is MaxPool2d  # the input graph is untouched


def test_rewrite_keeps_the_gate_where_it_cannot_apply(rng):
    ctx = PassContext()
    out = maxpool_current.run(_two_readers(rng), ctx)
    assert isinstance(out.op("p0"), MaxPool2d)
    assert "other readers" in ctx.notes["maxpool-current"]["gate"]["p0"]
    g = build.chain((1, 8, 8), ("p", MaxPool2d(kernel=(2, 2), stride=(2, 2))),
                    ("c", build.conv(rng, 1, 3)), ("f", build.Flatten()),
                    ("d", build.dense(rng, 48, 10, act=None)))
    ctx = PassContext()
    assert isinstance(maxpool_current.run(g, ctx).op("p"), MaxPool2d)
    assert "Input" in ctx.notes["maxpool-current"]["gate"]["p"]


def test_thresholds_come_from_the_pooled_activations(rng, digits_train):
    """The neuron sits behind the max: balance-thresholds sees max_i ReLU(z_i)."""
    g = build.cnn(rng)
    x = digits_train.x[:128]
    snn, _, _ = snncompile.convert(g, calibration=x, norm="max")
    assert snn.op("conv2").neuron is None and snn.op("conv2").act is None
    ann = snncompile.convert(g, target="ir")[0]
    pooled = record_activations(ann, x)["pool2"]
    np.testing.assert_allclose(snn.op("pool2").neuron.threshold, pooled.max(), rtol=1e-6)


def test_option_cli_flag_and_pipeline(vgg_onnx: Path, capsys):
    assert main([str(vgg_onnx), "--print-pipeline"]) == 0
    assert "maxpool-current" in capsys.readouterr().out
    assert main([str(vgg_onnx), "--print-pipeline", "--maxpool", "gate"]) == 0
    assert "maxpool-current" not in capsys.readouterr().out
    with pytest.raises(CompileError, match="maxpool"):
        CompileOptions(maxpool="avg")


# ------------------------------------------------------------------------------ simulation
def test_cumulative_current_is_the_max_of_cumulative_inputs():
    """Σ_τ≤t I(τ) = max_i Σ_τ≤t x_i(τ), with negative currents, padding and stride ≠ kernel;
    time chunks that carry C and M give the one-run values bit for bit."""
    op = CurrentMaxPool2d(kernel=(3, 3), stride=(2, 2), padding=(1, 1, 1, 1))
    x = torch.randn(20, 2, 3, 7, 7, generator=torch.Generator().manual_seed(0))
    i = cummax_current(op, x.double())
    want = torch.nn.functional.max_pool2d(torch.cumsum(x.double(), 0).flatten(0, 1), 3, 2, 1)
    torch.testing.assert_close(torch.cumsum(i, 0).flatten(0, 1), want, rtol=0, atol=1e-12)
    one = cummax_current(op, x)
    carry: dict[str, torch.Tensor] = {}
    parts = [cummax_current(op, x[a:a + n], carry) for a, n in ((0, 3), (3, 1), (4, 16))]
    assert torch.equal(torch.cat(parts), one)


def test_time_chunks_are_bit_exact_on_every_pattern(rng, digits_train):
    snn, _, _ = snncompile.convert(_pools(rng), calibration=digits_train.x[:64], no_tune=True)
    x = digits_train.x[:5]

    def run(pieces):
        net = gpu_compile(snn, CompileOptions(device="cpu", timesteps=12))
        net.plan = lambda steps, batch, record=False: pieces
        return net.run(x, record=True, progress=False)

    ref = run(Pieces(5, 12))
    assert set(ref.spike_trains) >= {"p0", "p1", "p2"}
    for pieces in (Pieces(1, 1), Pieces(2, 5)):
        got = run(pieces)
        for k, v in ref.spike_trains.items():
            np.testing.assert_array_equal(got.spike_trains[k], v, err_msg=k)
        np.testing.assert_array_equal(got.potentials, ref.potentials)


def test_loihi_reference_close_to_float(rng, digits_train):
    g = _pools(rng)
    snn, _, _ = snncompile.convert(g, target="loihi", calibration=digits_train.x[:128],
                                   no_tune=True)
    plan = build_plan(snn)
    pooled = [p for p in plan.pops.values() if p.pool is not None]
    assert [p.name for p in pooled] == ["p0", "p1", "p2"]
    assert pooled[0].in_shape == (4, 8, 8) and pooled[0].shape == (4, 4, 4)
    x = digits_train.x[:64]
    fix = loihi_reference(snn, CPU).run(x, T, progress=False)
    ref = gpu_compile(snn, CPU).run(x, T, progress=False)
    assert np.mean(fix.predictions[-1] == ref.predictions[-1]) >= 0.9
    assert abs(fix.spikes_per_sample() / ref.spikes_per_sample() - 1) < 0.05


@pytest.mark.lava
@pytest.mark.timeout(180)
def test_lava_current_maxpool_is_spike_exact(rng, digits_test):
    """fixed_pt Lava (our CurrentMaxPool host process between synapses and neurons) equals the
    bit-exact torch reference spike for spike: two pools, one with padding and stride 2 ≠ 3."""
    from snncompile.backends.loihi import compile as lava_compile

    g = build.chain((1, 8, 8), ("c0", build.conv(rng, 1, 4)),
                    ("p0", MaxPool2d(kernel=(3, 3), stride=(2, 2), padding=(1, 1, 1, 1))),
                    ("c1", build.conv(rng, 4, 6)), ("p1", MaxPool2d(kernel=(2, 2), stride=(2, 2))),
                    ("flat", build.Flatten()), ("fc1", build.dense(rng, 24, 12)),
                    ("fc2", build.dense(rng, 12, 10, act=None)))
    snn, _, _ = snncompile.convert(g, target="loihi", dataset="digits", calibration_samples=128)
    x = digits_test.x[:2]
    net = lava_compile(snn, CompileOptions(lava_mode="fixed"))
    assert [n for n, p in net.plan.pops.items() if p.pool is not None] == ["p0", "p1"]
    lava = net.run(x, T, record=True, progress=False)
    ref = loihi_reference(snn, CompileOptions()).run(x, T, record=True, progress=False)
    for name in net.plan.spiking():
        a, b = lava.spike_trains[name], ref.spike_trains[name]
        assert a.shape == b.shape and int((a != b).sum()) == 0, name
    assert sum(int(lava.spike_trains[n].sum()) for n in ("p0", "p1")) > 100
    np.testing.assert_array_equal(lava.potentials, ref.potentials)
    assert "p0" in net.resources["host_current_maxpools"]


# ------------------------------------------------------------------------------ accuracy
def test_current_beats_the_gate_on_a_trained_maxpool_net(vgg_onnx: Path, digits_train,
                                                         digits_test):
    """Measured (tests' vgg_maxpool, 540 test digits, fixed p99.9 / α = 0.5): ANN .9556; gate
    .9241/.9333/.9463/.9481 at T = 8/16/32/64; current .9389/.9537/.9519/.9556."""
    ann = float(np.mean(run_ann(snncompile.load_onnx(vgg_onnx), digits_test.x).argmax(1)
                        == digits_test.y))
    acc = {}
    for mp in ("gate", "current"):
        net = snncompile.compile(vgg_onnx, target="gpu", calibration=digits_train.x[:512],
                                 timesteps=64, device="cpu", no_tune=True, maxpool=mp)
        acc[mp] = net.run(digits_test.x, 64, progress=False).accuracy_by_timestep(digits_test.y)
    for t in (8, 16, 32, 64):
        assert acc["current"][t - 1] >= acc["gate"][t - 1], (t, acc)
    assert np.mean([acc["current"][t - 1] - acc["gate"][t - 1] for t in (8, 16, 32)]) > 0.005
    for t in (16, 32, 64):
        assert acc["current"][t - 1] >= ann - 0.005, (t, acc["current"][t - 1], ann)


def test_bias_calibration_corrects_through_the_conv(rng, digits_train):
    """bias-calibration simulates the current max-pool and shifts the conv before it."""
    g = build.cnn(rng)
    x = digits_train.x[:128]
    base, _, _ = snncompile.convert(g, calibration=x, no_tune=True)
    snn, _, ctx = snncompile.convert(base, calibration=x, passes=["bias-calibration{timesteps=8}"])
    note = ctx.notes["bias-calibration"]["pool2"]
    assert note["mean_abs_error_after"] < note["mean_abs_error_before"]
    assert not np.array_equal(snn.op("conv2").bias, base.op("conv2").bias)


def test_fold_thresholds_keeps_the_spikes(rng, digits_train):
    g = _pools(rng)
    x = digits_train.x[:32]
    plain, _, _ = snncompile.convert(g, calibration=x, no_tune=True)
    folded, _, _ = snncompile.convert(g, calibration=x, no_tune=True, fold_thresholds=True)
    assert all(np.all(folded.op(p).neuron.threshold == 1) for p in ("p0", "p1", "p2"))
    a = gpu_compile(plain, CPU, dtype=torch.float64).run(x, 16, record=True, progress=False)
    b = gpu_compile(folded, CPU, dtype=torch.float64).run(x, 16, record=True, progress=False)
    for k in a.spike_trains:
        assert np.mean(a.spike_trains[k] == b.spike_trains[k]) > 0.999, k


def test_tuner_runs_on_the_rewritten_graph(vgg_onnx: Path, digits_train):
    _, pm, ctx = snncompile.convert(vgg_onnx, calibration=digits_train.take(256), timesteps=8,
                                    tune_budget=3)
    info = ctx.notes["tuning"]
    assert info["pipeline"].split(",")[3] == "maxpool-current"
    assert "maxpool-current" in pm.spec()


# ------------------------------------------------------------------------------ refusals
def test_exports_refuse_the_current_maxpool_by_name(rng, digits_train, tmp_path: Path):
    snn, _, _ = snncompile.convert(build.cnn(rng), target="loihi",
                                   calibration=digits_train.x[:64], no_tune=True)
    with pytest.raises(CompileError, match="current max-pool") as e:
        snncompile.export_nir(snn, tmp_path / "x.nir")
    assert e.value.diagnostics[0].node == "pool2"
    from snncompile.backends.loihi.netx import export_netx

    with pytest.raises(CompileError) as e:
        export_netx(build_plan(snn), tmp_path / "x.net", T)
    assert any("current max-pool" in d.message and d.node == "pool2"
               for d in e.value.diagnostics)
    assert not (tmp_path / "x.nir").exists() and not (tmp_path / "x.net").exists()


def test_loihi_refuses_graded_current_pools(rng, digits_train):
    snn, _, _ = snncompile.convert(build.cnn(rng), target="loihi",
                                   calibration=digits_train.x[:64], neuron="sigma-delta",
                                   no_tune=True)
    with pytest.raises(CompileError, match="cannot compile for the loihi target") as e:
        build_plan(snn)
    assert any(d.node == "pool2" and "current max-pool" in d.message
               for d in e.value.diagnostics)


def test_models_of_the_class_convert(tmp_path: Path, digits_train, digits_test):
    """Untrained pool_mix (stride ≠ kernel, pool after Add, pool before ReLU): every MaxPool
    becomes a current max-pool and the SNN follows the ANN's logits."""
    path = models.export(models.pool_mix(), tmp_path / "mix.onnx")
    snn, _, ctx = snncompile.convert(path, calibration=digits_train.x[:128], no_tune=True)
    assert len(ctx.notes["maxpool-current"]["current"]) == 3
    assert ctx.notes["maxpool-current"]["gate"] == {}
    x = digits_test.x[:64]
    ann = run_ann(snncompile.load_onnx(path), x)
    res = gpu_compile(snn, CPU).run(x, 64, progress=False)
    assert np.mean(res.predictions[-1] == ann.argmax(1)) >= 0.8
