"""The compilation driver (``snncompile.driver``, issue 20): the command line and the Python API
run the same stages, so they give the same report; one tuning rule for both; ``--dump-ir-after``
is checked against the pipeline that actually runs (the tuned one when tuning is on)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import snncompile
from snncompile import data, driver
from snncompile.options import CompileOptions
from snncompile.tools.cli import main

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "examples" / "digits_cnn.onnx"
T = 16
#: the settings both runs use: small, so that the tuner's search stays short
SETTINGS = dict(timesteps=T, tune_budget=2048, calibration_samples=512, eval_samples=120)
FIGURES = ("ann_accuracy", "snn_accuracy", "accuracy_by_timestep", "spikes_per_sample",
           "synaptic_ops_per_sample", "layers", "samples", "pipeline", "timesteps", "target")


def _flags(settings: dict) -> list[str]:
    return [x for k, v in settings.items() for x in (f"--{k.replace('_', '-')}", str(v))]


@pytest.fixture(scope="module")
def api_run(tmp_path_factory):
    """The Python API: convert (tuned for T), then evaluate the compiled network."""
    snn, pm, ctx = snncompile.convert(MODEL, target="gpu", dataset="digits", **SETTINGS)
    opts = CompileOptions(**SETTINGS)
    ev = data.Source.of(data.digits("test", seed=0)).spread(SETTINGS["eval_samples"])
    out = tmp_path_factory.mktemp("api")
    report = snncompile.evaluate_target("gpu", snn, snncompile.load_onnx(MODEL), ev, opts, out,
                                        model=str(MODEL), pipeline=pm, ctx=ctx)
    return snn, pm, ctx, report


def test_cli_and_api_give_the_same_report(api_run, tmp_path):
    snn, pm, ctx, api = api_run
    tuned = [p.name for p in pm.passes]
    fixed = [p.name for p in driver.fixed_pipeline(driver.Compilation(
        MODEL, options=CompileOptions(**SETTINGS))).passes]
    only_tuned = [n for n in tuned if n not in fixed]
    assert only_tuned, f"the tuner chose the fixed pipeline {tuned}: pick settings it changes"
    # --dump-ir-after a pass that only the tuned pipeline has (was refused: checked against
    # the untuned pipeline)
    out = tmp_path / "o"
    rc = main([str(MODEL), "--target", "gpu", "--dataset", "digits", *_flags(SETTINGS),
               "--dump-ir-after", only_tuned[0], "--out", str(out)])
    assert rc == 0
    cli = json.loads((out / "report.json").read_text())
    for key in FIGURES:
        assert cli[key] == api[key], key
    assert cli["tuning"]["pipeline"] == ctx.notes["tuning"]["pipeline"]
    dumps = sorted(p.name for p in (out / "ir-after").iterdir())
    assert dumps == [f"{tuned.index(only_tuned[0]) + 1:02d}-{only_tuned[0]}"], dumps


def test_compile_builds_the_network_that_convert_gives(api_run):
    snn = api_run[0]
    net = snncompile.compile(MODEL, target="gpu", dataset="digits", **SETTINGS)
    assert isinstance(net, snncompile.CompiledNetwork)
    from snncompile.ir.serialize import to_dicts

    assert _same(to_dicts(net.graph), to_dicts(snn))


def _same(a, b) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def test_dump_ir_after_a_pass_the_run_does_not_have_is_refused(tmp_path, capsys):
    args = [str(MODEL), "--target", "gpu", "--dataset", "digits", "--no-tune", "--timesteps",
            "4", "--dump-ir-after", "threshold-search", "--out", str(tmp_path / "o")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--dump-ir-after 'threshold-search' is not in the pipeline" in err, err
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------ tuning rule
@pytest.mark.parametrize("given, kw, on", [
    ((), {}, True),
    (("norm",), {"norm": "p99.9"}, False),  # the default value, given: off
    (("norm",), {"norm": "max"}, False),
    (("alpha",), {"alpha": 0.5}, False),
    (("channelwise",), {"channelwise": True}, False),
    (("no_tune",), {"no_tune": True}, False),
    (("no_tune", "norm"), {"no_tune": False, "norm": "max"}, True),  # no_tune=False wins
    (("timesteps", "neuron"), {"timesteps": 4, "neuron": "if"}, True),
])
def test_one_tuning_rule(given, kw, on):
    c = driver.Compilation(MODEL, options=CompileOptions(**kw), given=frozenset(given))
    assert driver.tuning_on(c) is on
    assert driver.tuning_on(driver.Compilation(
        MODEL, target="ir", options=c.options, given=c.given)) is False
    assert driver.tuning_on(driver.Compilation(
        MODEL, options=c.options, given=c.given, pipeline="fold-batchnorm")) is False


def test_the_cli_reads_the_flags_given():
    from snncompile.tools.cli import build_parser, compilation_from_args, given_options

    for argv, on in ((["m.onnx"], True), (["m.onnx", "--norm", "p99.9"], False),
                     (["m.onnx", "--alpha", "0.5"], False), (["m.onnx", "-T", "4"], True)):
        a = build_parser().parse_args(argv)
        a.given = given_options(argv)
        assert driver.tuning_on(compilation_from_args(a)) is on, argv


@pytest.mark.parametrize("explicit", [False, True])
def test_norm_at_its_default_value_turns_tuning_off_in_both(explicit, tmp_path):
    """``--norm p99.9`` (the default value) turned tuning off in Python but not on the
    command line; now both read "given", not "different from the default"."""
    extra = {"norm": "p99.9"} if explicit else {}
    small = dict(timesteps=4, tune_budget=256, calibration_samples=128, eval_samples=40)
    out = tmp_path / "o"
    assert main([str(MODEL), "--dataset", "digits", *_flags({**small, **extra}),
                 "--out", str(out)]) == 0
    cli = json.loads((out / "report.json").read_text())
    _, _, ctx = snncompile.convert(MODEL, dataset="digits", **small, **extra)
    assert ("tuning" in cli) is (not explicit)
    assert ("tuning" in ctx.notes) is (not explicit)
