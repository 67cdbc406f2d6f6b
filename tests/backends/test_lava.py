"""Loihi target: fixed-point plan, Lava process graph vs the GPU simulator (issue 4).

Lava runs are small (a few samples, T=32) and marked ``lava``; each starts the Lava runtime
once for all its samples.
"""

from __future__ import annotations

import numpy as np
import pytest

import snncompile
from snncompile.backends.gpu import compile as gpu_compile
from snncompile.backends.loihi import compile_reference as loihi_reference
from snncompile.backends.loihi.fixed import BIAS_MANT_MAX, VTH_MANT_MAX, WEIGHT_MAX
from snncompile.backends.loihi.plan import build_plan
from snncompile.ir import CompileError

import build

T = 32


@pytest.fixture(scope="module")
def digits_snn(digits_cnn_onnx):
    graph, _, _ = snncompile.convert(digits_cnn_onnx, target="loihi", dataset="digits")
    return graph


@pytest.fixture(scope="module")
def maxpool_snn():
    graph = build.cnn(np.random.default_rng(0))  # conv, avgpool, conv, MAXPOOL, dense, dense
    snn, _, _ = snncompile.convert(graph, target="loihi", dataset="digits",
                                   calibration_samples=128, maxpool="gate")
    return snn


@pytest.fixture(scope="module")
def residual_snn():
    graph = build.residual(np.random.default_rng(0))
    snn, _, _ = snncompile.convert(graph, target="loihi", dataset="digits",
                                   calibration_samples=128)
    return snn


def _lava(graph, mode, x, neuron="if", conv_as_dense_limit=None):
    from snncompile.backends.loihi import compile as lava_compile

    net = lava_compile(graph, snncompile.CompileOptions(lava_mode=mode, neuron=neuron))
    if conv_as_dense_limit is not None:
        net.conv_as_dense_limit = conv_as_dense_limit
    return net, net.run(x, T, record=True, progress=False)


# ------------------------------------------------------------------------------ no Lava
def test_plan_fixed_point_ranges(digits_snn):
    plan = build_plan(digits_snn)
    assert [p.kind for p in plan.pops.values()] == ["input", "if", "if", "if", "readout"]
    assert [p.depth for p in plan.pops.values()] == [0, 1, 2, 3, 4]
    notes = [s.note for s in plan.syns]
    assert notes == ["conv", "avgpool+conv", "linearized", "linearized"]
    for s in plan.syns:
        q = s.weight_int
        assert np.all(q % 2 == 0) and np.abs(q).max() <= WEIGHT_MAX
        assert np.abs(q).max() > WEIGHT_MAX // 4  # the exponent uses the 8-bit range
    for name in plan.spiking():
        p = plan.pops[name]
        assert 1 <= p.vth_mant.min() and p.vth_mant.max() <= VTH_MANT_MAX
        assert np.abs(p.bias_mant).max() <= BIAS_MANT_MAX and p.bias_exp.max() <= 7
        alpha = digits_snn.op(name).neuron.alpha  # v(0) = α·θ (α as the tuner chose it)
        assert np.array_equal(p.v_init, np.rint(alpha * p.vth_mant * 64))
        c = plan.counts[name]
        assert c["weights_clipped"] == 0 and c["biases_clipped"] == 0
        assert c["weights_rounded"] > 0  # float weights are never exactly on the grid
    # the input current is an integer on the first layer's scale
    xq, clipped = plan.input_int(np.array([[0.5, 1.0]]))
    assert clipped == 0 and xq.tolist() == [[2 ** (plan.input_frac_bits - 1),
                                             2 ** plan.input_frac_bits]]


def test_pool_folded_into_conv_is_exact(digits_snn):
    """AvgPool(2)→Conv(3, pad 1) == Conv(6, stride 2, pad 2) with the upsampled kernel."""
    import torch
    import torch.nn.functional as F

    plan = build_plan(digits_snn)
    syn = plan.syns[1]
    op = digits_snn.op("4_Conv")
    x = torch.rand(2, 16, 8, 8, dtype=torch.float64)
    ref = F.conv2d(F.avg_pool2d(x, 2), torch.from_numpy(op.weight.astype(np.float64)),
                   padding=1)
    theta = digits_snn.op("0_Conv").neuron.threshold.astype(np.float64)
    w = torch.from_numpy(syn.weight / theta.reshape(1, -1, 1, 1))
    got = F.conv2d(x, w, stride=syn.stride, padding=syn.padding)
    torch.testing.assert_close(got, ref)


def test_loihi_mode_close_to_float(digits_snn, digits_test):
    x, y = digits_test.x[:128], digits_test.y[:128]
    opts = snncompile.CompileOptions()
    ref = gpu_compile(digits_snn, opts).run(x, T, progress=False)
    fix = loihi_reference(digits_snn, opts).run(x, T, progress=False)
    assert np.mean(fix.predictions[-1] == ref.predictions[-1]) >= 0.97
    assert abs(fix.spikes_per_sample() / ref.spikes_per_sample() - 1) < 0.02
    assert fix.accuracy_by_timestep(y)[-1] >= 0.95


def test_maxpool_not_after_a_spiking_layer_is_a_compile_error():
    rng = np.random.default_rng(0)
    graph = build.chain((1, 8, 8), ("pool", build.MaxPool2d(kernel=(2, 2), stride=(2, 2))),
                        ("conv", build.conv(rng, 1, 4)), ("flat", build.Flatten()),
                        ("fc", build.dense(rng, 64, 10, act=None)))
    snn, _, _ = snncompile.convert(graph, target="loihi", dataset="digits",
                                   calibration_samples=64)
    with pytest.raises(CompileError, match="cannot compile for the loihi target") as e:
        build_plan(snn)
    assert [d.node for d in e.value.diagnostics] == ["pool"]
    assert "AvgPool" in e.value.diagnostics[0].hint


def _normalised(c: int, size: int, c_out: int) -> snncompile.Graph:
    """(x − mean) / std written in the model (a BatchNorm after the Input: its shift cannot
    fold into the padded conv after it), then conv, pool, dense."""
    from snncompile.ir import BatchNorm

    rng = np.random.default_rng(0)
    shift = BatchNorm(scale=np.linspace(2.0, 4.0, c).astype(np.float32),
                      bias=np.full(c, -1.5, np.float32), mean=np.zeros(c, np.float32),
                      var=np.ones(c, np.float32), eps=0.0)
    k = size // 2
    return build.chain((c, size, size), ("norm", shift), ("conv", build.conv(rng, c, c_out)),
                       ("pool", build.AvgPool2d(kernel=(k, k), stride=(k, k))),
                       ("flat", build.Flatten()), ("fc", build.dense(rng, c_out * 4, 10, act=None)))


def test_input_normalisation_runs_on_the_host():
    """A CIFAR-sized input normalisation: the host sends a·x + c and the first layer keeps a
    conv synapse (x -> conv as a dense matrix would be 3072 × 12288 weights)."""
    x = np.random.default_rng(1).random((8, 3, 32, 32), dtype=np.float32)
    snn, _, _ = snncompile.convert(_normalised(3, 32, 12), target="loihi", calibration=x,
                                   no_tune=True)
    plan = build_plan(snn)
    (first,) = [s for s in plan.syns if s.src == plan.input_name]
    assert first.kind == "conv" and plan.input_affine is not None
    a, c = plan.input_affine
    np.testing.assert_allclose(plan.input_value(x)[:, 1], a[1] * x[:, 1] + c[1], atol=1e-6)
    from snncompile.backends.loihi.netx import export_netx

    with pytest.raises(CompileError, match="a netx file has no place for it"):
        export_netx(plan, "never-written.h5", 4, check_only=True)


@pytest.mark.lava
@pytest.mark.timeout(120)
def test_lava_input_normalisation_is_spike_exact(digits_test):
    x = digits_test.x[:2]
    snn, _, _ = snncompile.convert(_normalised(1, 8, 4), target="loihi", dataset="digits",
                                   calibration_samples=64, no_tune=True)
    net, lava = _lava(snn, "fixed", x)
    assert net.plan.input_affine is not None
    ref = loihi_reference(snn, snncompile.CompileOptions()).run(x, T, record=True,
                                                                progress=False)
    _assert_spike_exact(lava, ref, net.plan.spiking())
    assert sum(t.sum() for t in lava.spike_trains.values()) > 50


def test_wide_dense_layer_is_split_across_cores(rng):
    """A neuron with more inputs than a core's (estimated) axons: its synapse is split into
    blocks of source units, each on its own core(s); the blocks add up to the whole matrix."""
    from snncompile.backends.loihi import compile as lava_compile
    from snncompile.backends.loihi.resources import LIMITS

    n_in = 2 * LIMITS["axons_per_core"] + 100
    graph = build.chain((n_in,), ("wide", build.dense(rng, n_in, 8)),
                        ("out", build.dense(rng, 8, 2, act=None)))
    x = rng.random((64, n_in)).astype(np.float32)
    snn, _, _ = snncompile.convert(graph, target="loihi", calibration=x)
    plan = build_plan(snn)
    parts = [s for s in plan.syns if s.dst == "wide"]
    assert [s.note for s in parts] == [f"linearized part {i}/3" for i in (1, 2, 3)]
    assert all((s.weight_int != 0).sum(1).max() <= LIMITS["axons_per_core"] for s in parts)
    assert plan.splits[0]["parts"] == 3 and plan.splits[0]["fan_in"] > LIMITS["axons_per_core"]
    whole = sum(s.weight_int for s in parts)
    assert np.array_equal(np.count_nonzero(np.stack([s.weight_int for s in parts]), 0) <= 1,
                          np.ones_like(whole, bool))  # disjoint blocks
    res = lava_compile(snn, snncompile.CompileOptions()).resources  # fits: no error
    wide = res["layers"][0]
    assert wide["cores"] == 3 and wide["cores_bound_by"] in ("axons", "split_parts")
    assert res["neurons"] == 10 and res["warnings"] == [] and res["splits"] == plan.splits


def test_estimated_limits_warn_and_strict_limits_refuse(rng):
    """A convolution whose neurons have more inputs than a core's axons cannot be split by
    source blocks here: a warning (the axon count is an estimate), an error with strict."""
    from snncompile.backends.loihi import compile as lava_compile

    graph = build.chain((520, 3, 3), ("wide", build.conv(rng, 520, 2)), ("f", build.Flatten()),
                        ("out", build.dense(rng, 18, 2, act=None)))
    x = rng.random((16, 520, 3, 3)).astype(np.float32)
    snn, _, _ = snncompile.convert(graph, target="loihi", calibration=x)
    res = lava_compile(snn, snncompile.CompileOptions()).resources
    assert len(res["warnings"]) == 1 and "through one convolution" in res["warnings"][0]
    assert "estimate" in res["warnings"][0] and res["warnings"][0].startswith("wide")
    with pytest.raises(CompileError, match="does not fit Loihi 2 limits") as e:
        lava_compile(snn, snncompile.CompileOptions(strict_limits=True))
    assert e.value.diagnostics[0].node == "wide"


# ------------------------------------------------------------------------------ Lava
def _assert_spike_exact(lava, ref, layers):
    assert set(lava.spike_trains) == set(layers)
    for name in layers:
        a, b = lava.spike_trains[name], ref.spike_trains[name]
        assert a.shape == b.shape, name
        mismatch = int((a != b).sum())
        assert mismatch == 0, f"{name}: {mismatch} of {a.size} spikes differ"
        np.testing.assert_array_equal(lava.layer_spikes[name], ref.layer_spikes[name])
    np.testing.assert_allclose(lava.synops, ref.synops)
    np.testing.assert_array_equal(lava.potentials, ref.potentials)
    np.testing.assert_array_equal(lava.predictions, ref.predictions)


@pytest.mark.lava
@pytest.mark.timeout(120)
@pytest.mark.parametrize("model", ["digits_cnn", "residual"])
def test_lava_fixed_matches_gpu_loihi_mode(model, digits_snn, residual_snn, digits_test):
    """Spike for spike, every layer, every step: Lava fixed_pt == GPU loihi mode.

    digits_cnn runs its pool+conv synapse as the equivalent Lava Dense (the default, for
    speed); the residual model keeps every conv a Lava Conv (3×3, 1×1 identity, strided)."""
    graph = digits_snn if model == "digits_cnn" else residual_snn
    x = digits_test.x[:3]
    net, lava = _lava(graph, "fixed", x, conv_as_dense_limit=0 if model == "residual" else None)
    uses_conv = [net.builder.conv_as_dense(s) for s in net.plan.syns if s.kind == "conv"]
    assert any(uses_conv) == (model == "digits_cnn")
    ref = loihi_reference(graph, snncompile.CompileOptions()).run(
        x, T, record=True, progress=False)
    _assert_spike_exact(lava, ref, net.plan.spiking())
    assert sum(t.sum() for t in lava.spike_trains.values()) > 1000
    if model == "residual":  # the shortcuts were delayed to meet the conv branches
        assert any(s.delay > 0 for s in net.plan.syns)


@pytest.mark.lava
@pytest.mark.timeout(120)
def test_lava_maxpool_gate(maxpool_snn, digits_test):
    """A MaxPool after a spiking conv runs as our MaxPoolGate process: spike-exact against the
    GPU loihi mode (fixed_pt) and identical to the GPU float simulator's gate (floating_pt)."""
    x = digits_test.x[:2]
    net, lava = _lava(maxpool_snn, "fixed", x)
    assert [p.kind for p in net.plan.pops.values()].count("maxpool") == 1
    ref = loihi_reference(maxpool_snn, snncompile.CompileOptions()).run(
        x, T, record=True, progress=False)
    _assert_spike_exact(lava, ref, net.plan.spiking())
    _, lava_f = _lava(maxpool_snn, "float", x)
    ref_f = gpu_compile(maxpool_snn, snncompile.CompileOptions()).run(x, T, record=True,
                                                                      progress=False)
    for name in net.plan.spiking():
        np.testing.assert_array_equal(lava_f.spike_trains[name], ref_f.spike_trains[name])


@pytest.mark.lava
@pytest.mark.timeout(120)
@pytest.mark.parametrize("model", ["if-hard", "signed-if", "gn"])
def test_lava_neuron_models(model, digits_snn, digits_test):
    """if-hard runs on Lava's own LIFReset; signed-if (−1/0/1) and gn (0..M) on our IFReset
    with graded messages. Each matches the GPU loihi mode spike for spike."""
    spec = "select-neurons{model=gn,members=3}" if model == "gn" else \
        f"select-neurons{{model={model}}}"
    snn, _, _ = snncompile.convert(digits_snn, target="loihi", passes=[spec])
    x = digits_test.x[:2]
    net, lava = _lava(snn, "fixed", x, neuron=model)
    ref = loihi_reference(snn, snncompile.CompileOptions()).run(
        x, T, record=True, progress=False)
    _assert_spike_exact(lava, ref, net.plan.spiking())
    values = np.unique(np.concatenate([t.ravel() for t in lava.spike_trains.values()]))
    expected = {"if-hard": [0, 1], "signed-if": [-1, 0, 1], "gn": [0, 1, 2, 3]}[model]
    assert values.tolist() == expected


@pytest.mark.lava
@pytest.mark.timeout(150)
def test_lava_float_matches_gpu_float(digits_snn, digits_test):
    """floating_pt vs the GPU float simulator: ≥ 99% same predictions, spikes within 0.5%,
    at most 1 in 10^4 spike entries different, and the same readout potentials in every sample
    whose spikes all agree. Lava's float models compute in float64, the simulator in float32:
    a membrane within rounding of θ may fire a step earlier or later in one of them (the
    digits CNN with the fixed default: one spike of 4_Conv moved by two steps in one of 24
    samples, the layers after it followed), which changes that sample's potentials by a
    weight, not by rounding.

    Effective steps: Lava layer at depth d sees sample step τ at Lava step k·T + τ + d; the
    backend slices its recordings that way, so step τ compares with the GPU's step τ."""
    x = digits_test.x[:24]
    net, lava = _lava(digits_snn, "float", x)
    ref = gpu_compile(digits_snn, snncompile.CompileOptions()).run(x, T, record=True,
                                                                   progress=False)
    assert np.mean(lava.predictions[-1] == ref.predictions[-1]) >= 0.99
    total_l = sum(v.sum() for v in lava.layer_spikes.values())
    total_g = sum(v.sum() for v in ref.layer_spikes.values())
    assert abs(total_l / total_g - 1) <= 0.005
    differ = {k: lava.spike_trains[k] != ref.spike_trains[k] for k in ref.spike_trains}
    entries = sum(d.size for d in differ.values())
    assert sum(int(d.sum()) for d in differ.values()) <= 1e-4 * entries
    same = ~np.any([d.reshape(d.shape[0], d.shape[1], -1).any((0, 2))
                    for d in differ.values()], axis=0)  # samples whose spikes all agree
    assert same.mean() >= 0.9
    np.testing.assert_allclose(lava.potentials[:, same], ref.potentials[:, same], rtol=1e-3,
                               atol=1e-3)


@pytest.mark.lava
@pytest.mark.timeout(120)
def test_runtime_is_stopped_on_interrupt(digits_snn, digits_test, monkeypatch):
    """Ctrl-C (or any error) while reading results back still stops Lava's processes."""
    import multiprocessing

    from snncompile.backends.loihi import compile as lava_compile
    from snncompile.backends.loihi.lava_models import recorder

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(recorder, "unpack", interrupted)
    net = lava_compile(digits_snn, snncompile.CompileOptions())
    with pytest.raises(KeyboardInterrupt):
        net.run(digits_test.x[:1], 4, record=True, progress=False)
    assert not multiprocessing.active_children()


# ------------------------------------------------------------------------------ netx export
def test_netx_export_refuses_what_netx_cannot_express(digits_snn, residual_snn, tmp_path):
    from snncompile.backends.loihi.netx import export_netx

    path = tmp_path / "n.net"
    with pytest.raises(CompileError, match="cannot export netx") as e:
        export_netx(build_plan(digits_snn), path, T)  # default neuron: reset by subtraction
    assert {d.node for d in e.value.diagnostics} == {"0_Conv", "4_Conv", "9_Gemm"}
    assert "if-hard" in e.value.diagnostics[0].hint
    with pytest.raises(CompileError, match="sequential") as e:
        export_netx(build_plan(residual_snn), path, T)
    assert not path.exists()  # failed before writing


@pytest.mark.lava
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_netx_file_runs_in_lava_dl_like_our_graph(digits_snn, digits_test, tmp_path):
    """lava-dl's netx loads the exported file and gives our Lava graph's spikes and readout."""
    netx = pytest.importorskip("lava.lib.dl.netx", reason="needs lava-dl 0.6.0 (+cv2, torchvision)")
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.source import RingBuffer as Source
    from lava.proc.monitor.process import Monitor

    from snncompile.backends.loihi.compile import trailing_to_torch
    from snncompile.backends.loihi.lava_models.recorder import SpikeRecorder, unpack
    from snncompile.backends.loihi.netx import export_netx

    snn, _, _ = snncompile.convert(digits_snn, target="loihi",
                                   passes=["select-neurons{model=if-hard}"])
    x = digits_test.x[:2]
    net, ours = _lava(snn, "fixed", x, neuron="if-hard")
    path = export_netx(net.plan, tmp_path / "network.net", T)
    loaded = netx.hdf5.Network(net_config=str(path), reset_interval=T, reset_offset=1,
                               input_message_bits=16)
    payload = net.builder.payload(x, T)
    total = payload.shape[-1]
    src = Source(data=payload)
    src.s_out.connect(loaded.inp)
    recs = []
    for layer in loaded.layers[:-1]:
        recs.append(SpikeRecorder(shape=layer.out.shape, steps=total))
        layer.out.connect(recs[-1].s_in)
    mon = Monitor()
    mon.probe(loaded.layers[-1].neuron.v, total)
    try:
        loaded.run(condition=RunSteps(num_steps=total),
                   run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        trains = [unpack(r.bits.get(), r.s_in.shape) for r in recs]
        v = next(iter(next(iter(mon.get_data().values())).values()))
    finally:
        loaded.stop()
    names = net.plan.spiking()
    assert len(trains) == len(names)
    for name, tr in zip(names, trains):
        p = net.plan.pops[name]
        got = trailing_to_torch(net._window(tr, p.depth, len(x), T), p.shape)
        np.testing.assert_array_equal(got, ours.spike_trains[name], err_msg=name)
    pot = net._window(np.asarray(v).T, net.plan.depth, len(x), T).reshape(T, len(x), -1)
    np.testing.assert_array_equal(pot, ours.potentials)


# ------------------------------------------------------------------------------ CLI
@pytest.mark.lava
@pytest.mark.timeout(180)
def test_cli_loihi_target_report(digits_cnn_onnx, tmp_path, capsys):
    import json

    from snncompile.tools.cli import main

    out = tmp_path / "o"
    rc = main([str(digits_cnn_onnx), "--target", "loihi", "--dataset", "digits",
               "--timesteps", "16", "--eval-samples", "4", "--neuron", "if-hard",
               "--export", "netx", "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "agreement with gpu loihi fixed-point mode 1.0000, spikes ×1.0000" in text
    assert "spike-exact vs GPU loihi mode: yes" in text and "neuro-cores" in text
    report = json.loads((out / "report.json").read_text())
    assert report["target"] == "loihi" and report["lava_mode"] == "fixed"
    assert report["gpu_agreement"] == 1.0 and report["spike_exact"] is True
    assert report["gpu_spike_ratio"] == 1.0
    assert report["lava_samples_per_second"] > 0 and report["samples"] == 4
    res = report["resources"]
    assert res["neurons"] == 1024 + 512 + 64 + 10 and res["neuro_cores"] >= 4
    assert res["limits"]["neurons_per_core"] == 8192 and res["limit_sources"]
    assert set(report["fixed_point"]["layers"]) == {"0_Conv", "4_Conv", "9_Gemm", "11_Gemm"}
    assert (out / "network.net").exists() and (out / "lava.json").exists()


@pytest.mark.lava  # --target loihi on the command line needs Lava before anything else
def test_cli_netx_refusal_leaves_nothing(digits_cnn_onnx, tmp_path, capsys):
    from snncompile.tools.cli import main

    out = tmp_path / "o"
    rc = main([str(digits_cnn_onnx), "--target", "loihi", "--dataset", "digits",
               "--eval-samples", "2", "--export", "netx", "--out", str(out)])
    assert rc == 2 and not out.exists()
    err = capsys.readouterr().err
    assert "cannot export netx" in err and "0_Conv" in err and "--neuron if-hard" in err


def test_signed_if_tolerance_is_the_gpu_simulators():
    """One constant, declared with the model in the neuron registry, used by both backends."""
    from snncompile import neurons
    from snncompile.backends.gpu.neurons import SIGNED_EPS as GPU_EPS
    from snncompile.backends.loihi.fixed import SIGNED_EPS

    assert SIGNED_EPS is GPU_EPS is neurons.SIGNED_EPS
