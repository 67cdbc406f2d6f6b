"""The pass manager and user passes: decorator, ``module:object`` specs, entry points."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

import snncompile
from snncompile.interp import run_ann
from snncompile.ir import CompileError, Conv2d, PassError
from snncompile.passes import PassContext, PassManager, get_pass, registry

from build import cnn


@pytest.fixture
def scale_pass():
    """A user pass that doubles the first conv's weights and bias, registered for one test."""

    @snncompile.register_pass("test-double-first-conv")
    def double_first_conv(graph, ctx):
        """Double the first Conv2d's weights and bias."""
        g = graph.copy()
        name = next(n for n, op in g.topo() if isinstance(op, Conv2d))
        op = g.op(name)
        g.replace(name, weight=op.weight * 2, bias=op.bias * 2)
        ctx.notes["test-double-first-conv"] = name
        return g

    yield double_first_conv
    registry.unregister_pass("test-double-first-conv")


def test_custom_pass_end_to_end(scale_pass, digits_cnn_onnx: Path, digits_test) -> None:
    """Doubling the first layer's weights and bias doubles its activations (ReLU is positively
    homogeneous): balance-thresholds must find a first-layer threshold twice as large, and the
    compiled SNN must follow the modified ANN (whose accuracy differs from the original's)."""
    x = digits_test.x[:64]
    base = snncompile.convert(digits_cnn_onnx, calibration=x, norm="max")[0]
    specs = [*snncompile.DEFAULT_FRONT, "test-double-first-conv",
             "balance-thresholds{norm=max}", "initial-potential"]
    tuned, pm, ctx = snncompile.convert(digits_cnn_onnx, passes=specs, calibration=x)
    assert "test-double-first-conv" in pm.spec()
    first = ctx.notes["test-double-first-conv"]
    t0, t1 = base.op(first).neuron.threshold, tuned.op(first).neuron.threshold
    np.testing.assert_allclose(t1, 2 * t0, rtol=1e-5)

    ann = snncompile.convert(digits_cnn_onnx, passes=specs[:4])[0]
    ann_pred = run_ann(ann, digits_test.x).argmax(1)
    orig_pred = run_ann(snncompile.load_onnx(digits_cnn_onnx), digits_test.x).argmax(1)
    assert np.mean(ann_pred != orig_pred) > 0.01  # the pass really changed the network
    net = snncompile.compile(digits_cnn_onnx, target="gpu", passes=specs, calibration=x,
                             timesteps=64, device="cpu")
    snn_pred = net.run(digits_test.x, 64, progress=False).predictions[-1]
    assert np.mean(snn_pred == ann_pred) > 0.95


def test_duplicate_name_is_an_error(scale_pass) -> None:
    with pytest.raises(CompileError, match="duplicate pass name"):
        snncompile.register_pass("test-double-first-conv")(lambda g, c: g)


def test_module_object_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rng) -> None:
    (tmp_path / "user_passes.py").write_text(textwrap.dedent('''
        def negate_readout(graph, ctx):
            """Negate the readout layer's weights."""
            g = graph.copy()
            op = g.op(g.readout_name)
            g.replace(g.readout_name, weight=-op.weight, bias=-op.bias)
            return g
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    p = get_pass("user_passes:negate_readout")
    assert p.name == "negate-readout"
    g = cnn(rng)
    x = rng.random((4, 1, 8, 8), dtype=np.float32)
    out = PassManager([p]).run(g, PassContext())
    np.testing.assert_allclose(run_ann(out, x), -run_ann(g, x), rtol=1e-6, atol=1e-6)
    with pytest.raises(CompileError, match="cannot import pass"):
        get_pass("user_passes:missing")


def test_entry_point_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An installed distribution advertising a pass in the ``snncompile.passes`` group."""
    (tmp_path / "ep_plugin.py").write_text(textwrap.dedent('''
        def zero_bias(graph, ctx):
            """Set every bias to zero."""
            g = graph.copy()
            for name, op in graph.topo():
                if getattr(op, "bias", None) is not None:
                    g.replace(name, bias=op.bias * 0)
            return g
    '''))
    dist = tmp_path / "ep_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[snncompile.passes]\nzero-bias = ep_plugin:zero_bias\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_PLUGINS_LOADED", False)
    try:
        assert "zero-bias" in snncompile.registered()
        g = cnn(np.random.default_rng(0))
        out = PassManager.from_specs("zero-bias").run(g, PassContext())
        biases = [op.bias for _, op in out.topo() if getattr(op, "bias", None) is not None]
        assert biases and all(not b.any() for b in biases)
    finally:
        registry.unregister_pass("zero-bias")


def test_pass_options_and_spec_round_trip() -> None:
    pm = PassManager.from_specs("fold-batchnorm,balance-thresholds{norm=max,channelwise=true},"
                                "initial-potential{alpha=0.25}")
    assert pm.spec() == ("fold-batchnorm,balance-thresholds{norm=max,channelwise=true},"
                         "initial-potential{alpha=0.25}")
    assert PassManager.from_specs(pm.spec()).spec() == pm.spec()
    with pytest.raises(CompileError, match="has no option"):
        get_pass("initial-potential{beta=1}")
    with pytest.raises(CompileError, match="unknown pass"):
        get_pass("no-such-pass")


def test_a_broken_pass_is_named(rng) -> None:
    def breaks(graph, ctx):
        g = graph.copy()
        conv = next(n for n, op in g.topo() if isinstance(op, Conv2d))
        g.replace(conv, bias=np.full_like(g.op(conv).bias, np.nan))
        return g

    def raises(graph, ctx):
        raise ZeroDivisionError("boom")

    from snncompile.passes import FunctionPass

    with pytest.raises(CompileError) as e:
        PassManager([FunctionPass("first", lambda g, c: g), FunctionPass("breaks", breaks)]).run(
            cnn(rng), PassContext())
    assert "after 'breaks'" in e.value.one_line() and "ran: first" in e.value.one_line()
    with pytest.raises(PassError, match="raises"):
        PassManager([FunctionPass("raises", raises)]).run(cnn(rng), PassContext())


def test_dump_ir_after(tmp_path: Path, rng) -> None:
    pm = PassManager.from_specs("fold-batchnorm,remove-identity,fuse-activations",
                                dump_dir=tmp_path, dump_after={"remove-identity"})
    pm.run(cnn(rng), PassContext())
    assert [p.name for p in tmp_path.iterdir()] == ["02-remove-identity"]
    assert (tmp_path / "02-remove-identity" / "ir.json").exists()
    assert set(pm.timings) == {"fold-batchnorm", "remove-identity", "fuse-activations"}

