"""Conversion tuned for T (snncompile.pipeline_search) and the passes it chooses from."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import snncompile
from snncompile.interp import record_activations
from snncompile.ir import CompileError
from snncompile.ir.verify import verify
from snncompile.passes import PassContext, PassManager, get_pass, pass_spec, split_pipeline
from snncompile.passes.threshold_search import mse_thresholds, rate_quantize
from snncompile.pipeline_search import FRONT, tune

ROOT = Path(__file__).resolve().parents[2]


def _front(path: Path):
    return PassManager.from_specs(list(FRONT)).run(snncompile.load_onnx(path), PassContext())


def _accuracy(graph, specs, calib, x, y, steps: int) -> float:
    net = snncompile.compile(graph, target="gpu", passes=specs, calibration=calib, device="cpu",
                             timesteps=steps)
    return float(net.run(x, steps, progress=False).accuracy_by_timestep(y)[-1])


def test_tuner_beats_the_fixed_default_on_unseen_samples(digits_cnn_onnx: Path,
                                                          digits_train) -> None:
    """At T = 4 the fixed default (p99.9 per layer, α = 0.5) loses ~7 points on the digits CNN;
    the tuned setting, chosen on held-out calibration samples, must do better on training
    samples that neither the tuning nor the thresholds saw, and replay as a plain pipeline."""
    ann = snncompile.load_onnx(digits_cnn_onnx)
    calib = digits_train.take(256)
    unseen = digits_train.x[600:900], digits_train.y[600:900]
    r = tune(ann, calib.x, calib.y, 4, seed=0)
    assert r.winner != "default" and r.tuned_score > r.default_score
    assert r.tuned_loss < r.default_loss and 0 < r.spent <= r.budget
    assert r.held_out == 128 and r.fit == 128 and r.timesteps == 4
    assert r.chosen and all({"threshold", "alpha"} <= set(v) for k, v in r.chosen.items()
                              if k != "bias-calibration")
    tuned = _accuracy(ann, split_pipeline(r.pipeline), calib.x, *unseen, 4)
    fixed = _accuracy(ann, [*FRONT, "balance-thresholds", "initial-potential"],
                      calib.x, *unseen, 4)
    assert tuned > fixed + 0.02, (tuned, fixed)
    assert "T=4" in r.summary() and r.report()["pipeline"] == r.pipeline


def test_tuning_never_reads_the_evaluation_data(digits_cnn_onnx: Path, digits_train,
                                                digits_test, tmp_path: Path) -> None:
    """Same calibration file, two different evaluation files: the same tuned pipeline."""
    np.savez(tmp_path / "c.npz", x=digits_train.x[:128], y=digits_train.y[:128])
    np.savez(tmp_path / "e1.npz", x=digits_test.x[:40], y=digits_test.y[:40])
    rev = digits_test.x[200:240][:, :, ::-1].copy()
    np.savez(tmp_path / "e2.npz", x=rev, y=digits_test.y[200:240])
    pipes = []
    for ev in ("e1", "e2"):
        out = subprocess.run(
            [sys.executable, "-m", "snncompile.tools.cli", str(digits_cnn_onnx), "--target",
             "gpu", "-T", "4", "--calibration", str(tmp_path / "c.npz"), "--eval",
             str(tmp_path / f"{ev}.npz"), "--out", str(tmp_path / ev), "--device", "cpu",
             "--tune-budget", "3000"],
            capture_output=True, text=True, cwd=ROOT, timeout=300, check=False,
            env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
        assert out.returncode == 0, out.stderr
        line = next(ln for ln in out.stdout.splitlines() if "--pipeline" in ln)
        assert "tuning for T=4" in out.stdout
        pipes.append(line)
    assert pipes[0] == pipes[1]


def test_no_tuning_on_the_evaluation_set(digits_cnn_onnx: Path, digits_test,
                                         tmp_path: Path, capsys) -> None:
    """Without --calibration the thresholds come from --eval (as before), but the tuner does
    not select settings on the evaluation set: it stays off, says so, and the run is the fixed
    pipeline's."""
    from snncompile.tools.cli import main

    np.savez(tmp_path / "e.npz", x=digits_test.x[:60], y=digits_test.y[:60])
    reports = []
    for extra in ([], ["--no-tune"]):
        out = tmp_path / f"o{len(reports)}"
        assert main([str(digits_cnn_onnx), "--target", "gpu", "-T", "4", "--eval",
                     str(tmp_path / "e.npz"), "--out", str(out), "--device", "cpu",
                     *extra]) == 0
        reports.append(json.loads((out / "report.json").read_text()))
    err = capsys.readouterr().err
    assert "tuning is off" in err and err.count("tuning is off") == 1
    assert not reports[0].get("tuning")
    assert reports[0]["accuracy_by_timestep"] == reports[1]["accuracy_by_timestep"]


def test_no_search_where_the_default_already_matches_the_ann(digits_cnn_onnx: Path,
                                                            digits_train) -> None:
    """At T = 64 the fixed default is within a KL of 1e-4 of the ANN on the digits CNN: the
    tuner scores it once on the search samples and stops (nothing any candidate could gain);
    at T = 4 (loss ~0.09) it searches."""
    from snncompile.options import CompileOptions
    from snncompile.pipeline_search import LOSS_FLOOR, conversion_passes

    ann = snncompile.load_onnx(digits_cnn_onnx)
    calib = digits_train.take(256)
    r = tune(ann, calib.x, calib.y, 64)
    assert r.stopped and "nothing to search" in r.summary() and r.winner == "default"
    assert len(r.scores) == 1 and r.spent == r.scores[0]["samples"] == r.held_out
    assert r.tuned_loss <= LOSS_FLOOR and r.report()["stopped"] == r.stopped
    assert r.passes == conversion_passes(CompileOptions(timesteps=64))
    low = tune(ann, calib.x, calib.y, 4, budget=600)
    assert not low.stopped and len(low.scores) > 1 and low.scores[0]["loss"] > LOSS_FLOOR


def test_budget_is_honoured(digits_cnn_onnx: Path, digits_train) -> None:
    """The budget counts simulated samples: a small one cuts the search, is never exceeded,
    and still gives a replayable pipeline; the default one (8192) completes the search here."""
    ann = snncompile.load_onnx(digits_cnn_onnx)
    calib = digits_train.take(256)
    r = tune(ann, calib.x, calib.y, 8, budget=2000)
    assert r.cut_by_budget and r.spent <= 2000 and len(r.scores) >= 2
    assert sum(s["samples"] for s in r.scores) <= r.spent  # + 256 per bias-calibration build
    assert r.report()["budget_samples"] == 2000 and "of 2000 simulated samples" in r.summary()
    PassManager.from_specs(split_pipeline(r.pipeline)).run(
        ann, PassContext(calibration=calib.x))
    full = tune(ann, calib.x, calib.y, 4)
    assert not full.cut_by_budget and full.spent <= 8192 and len(full.scores) > len(r.scores)


def test_same_choice_on_a_slow_machine(digits_cnn_onnx: Path, digits_train,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The budget is not wall time: a clock that runs 1000 s per reading (a very slow or very
    loaded machine) changes nothing — same pipeline, same candidates, same scores — where the
    budget cuts the search short (where a time budget would have cut elsewhere)."""
    import snncompile.pipeline_search as tune_mod

    ann = snncompile.load_onnx(digits_cnn_onnx)
    calib = digits_train.take(256)
    fast = tune(ann, calib.x, calib.y, 8, budget=3000)
    clock = iter(range(0, 10**9, 1000))
    monkeypatch.setattr(tune_mod.time, "perf_counter", lambda: float(next(clock)))
    slow = tune(ann, calib.x, calib.y, 8, budget=3000)
    assert fast.cut_by_budget and slow.seconds >= 1000 and len(fast.scores) > 5
    assert fast.pipeline == slow.pipeline and fast.spent == slow.spent
    assert fast.scores == slow.scores


def test_confirmation_uses_samples_the_search_did_not_see(digits_cnn_onnx: Path,
                                                           digits_train) -> None:
    """With 400 calibration samples, 200 are held out; the search scores candidates on the
    first 128 of them and the final paired test on the other 72 (unbiased); the few-sample
    and the confirmation scores of the same setting therefore differ."""
    calib = digits_train.take(400)
    r = tune(snncompile.load_onnx(digits_cnn_onnx), calib.x, calib.y, 4, budget=3000)
    assert r.held_out == 200
    search = [s for s in r.scores if s["stage"] != "confirm"]
    confirm = [s for s in r.scores if s["stage"] == "confirm"]
    # a candidate raced out after the first half of the 128 search samples was simulated on 64
    assert search and all(s["samples"] == (64 if s.get("raced_out") else 128) for s in search)
    assert confirm and all(s["samples"] == 72 for s in confirm)
    assert confirm[0]["candidate"] == "default" and search[0]["candidate"] == "default"
    assert confirm[0]["loss"] != search[0]["loss"]


def test_tune_off_gives_the_fixed_pipeline(digits_cnn_onnx: Path, digits_train) -> None:
    calib = digits_train.x[:64]
    _, pm, ctx = snncompile.convert(digits_cnn_onnx, calibration=calib, no_tune=True)
    assert "tuning" not in ctx.notes
    assert pm.spec().endswith("balance-thresholds,initial-potential")
    _, pm, ctx = snncompile.convert(digits_cnn_onnx, calibration=calib, timesteps=4)
    assert ctx.notes["tuning"]["timesteps"] == 4


# ------------------------------------------------------------------ per-layer pass options
def test_per_layer_overrides_replay(digits_cnn_onnx: Path, digits_train) -> None:
    g = _front(digits_cnn_onnx)
    first, second = [n for n, op in g.topo() if getattr(op, "act", None) is not None][:2]
    spec = (f"balance-thresholds{{norm=p99.9,layers={first}:max:channel}},"
            f"initial-potential{{alpha=0.5,layers={second}:0.25}}")
    x = digits_train.x[:128]
    passes = [get_pass(s) for s in split_pipeline(spec)]
    assert ",".join(pass_spec(p) for p in passes) == spec.replace("norm=p99.9,", "").replace(
        "alpha=0.5,", "")
    out = PassManager(passes).run(g, PassContext(calibration=x))
    acts = record_activations(g, x)
    th1 = out.op(first).neuron.threshold
    per_ch = np.moveaxis(acts[first], 1, 0).reshape(len(th1), -1).max(1)
    np.testing.assert_allclose(th1, per_ch, rtol=1e-6)
    th2 = out.op(second).neuron.threshold
    assert np.all(th2 == th2[0])  # layer-wise: the global setting
    assert out.op(second).neuron.alpha == 0.25 and out.op(first).neuron.alpha == 0.5
    with pytest.raises(CompileError, match="no layer named"):
        get_pass("initial-potential{layers=nope:0.3}").run(g, PassContext(calibration=x))
    with pytest.raises(CompileError, match="layer | channel"):
        get_pass(f"balance-thresholds{{layers={first}:max:row}}").run(g, PassContext(x))


# ------------------------------------------------------------------ threshold-search
def test_threshold_search_lowers_the_rate_coding_error() -> None:
    """Synthetic heavy-tailed activations: at T = 4 the searched θ quantizes them with a lower
    error than the max or the 99.9th percentile; at large T it moves toward the max."""
    rng = np.random.default_rng(0)
    a = np.maximum(rng.standard_normal((400, 3, 6, 6)) * np.array([1, 3, 0.5])[None, :, None,
                                                                               None], 0)
    a[0, :, 0, 0] = 25.0  # one outlier per channel
    th = mse_thresholds(a, 0.5, 4, channelwise=True)
    per = np.moveaxis(a, 1, 0).reshape(3, -1)

    def err(theta: np.ndarray) -> float:
        return float(((per - rate_quantize(per, theta[:, None], 0.5, 4)) ** 2).mean())

    assert err(th) < err(per.max(1)) * 0.5
    assert err(th) < err(np.percentile(per, 99.9, axis=1))
    assert np.all(mse_thresholds(a, 0.5, 256, channelwise=True) > th)


def test_threshold_search_pass(digits_cnn_onnx: Path, digits_train) -> None:
    """Input unchanged, output verifies, and every layer's error at T is no larger."""
    g = PassManager.from_specs([*FRONT, "balance-thresholds", "initial-potential"]).run(
        snncompile.load_onnx(digits_cnn_onnx), PassContext(calibration=digits_train.x[:128]))
    before = {n: op.neuron.threshold.copy() for n, op in g.topo() if getattr(op, "neuron", None)}
    ctx = PassContext(calibration=digits_train.x[:128])
    out = get_pass("threshold-search{timesteps=4}").run(g, ctx)
    verify(out)
    acts = record_activations(g, digits_train.x[:128])
    for n, th in before.items():
        np.testing.assert_array_equal(g.op(n).neuron.threshold, th)  # input unchanged
        new = out.op(n).neuron.threshold
        per = np.moveaxis(acts[n], 1, 0).reshape(len(th), -1)
        e_old = ((per - rate_quantize(per, th[:, None], 0.5, 4)) ** 2).mean()
        e_new = ((per - rate_quantize(per, new[:, None], 0.5, 4)) ** 2).mean()
        assert e_new <= e_old + 1e-9, n
    assert set(ctx.notes["threshold-search"]) == set(before)




def test_layer_thresholds_only_for_loihi(digits_cnn_onnx: Path, digits_train) -> None:
    """``per_channel=False`` (what --target loihi asks: Loihi's LIF process and netx take one
    threshold per population) never picks a per-channel threshold."""
    calib = digits_train.take(128)
    r = tune(snncompile.load_onnx(digits_cnn_onnx), calib.x, calib.y, 4, per_channel=False)
    assert all(c["threshold"].endswith("/layer") for k, c in r.chosen.items()
               if k != "bias-calibration")
    assert "channelwise=true" not in r.pipeline and ":channel" not in r.pipeline


def test_bias_calibration_pass(digits_cnn_onnx: Path, digits_train) -> None:
    """Input unchanged, output verifies, and each calibrated layer's mean SNN output moves to
    the ANN's (the per-channel mean error the pass measured shrinks)."""
    x = digits_train.x[:96]
    g = PassManager.from_specs([*FRONT, "balance-thresholds", "initial-potential"]).run(
        snncompile.load_onnx(digits_cnn_onnx), PassContext(calibration=x))
    before = {n: np.array(op.bias) for n, op in g.topo() if getattr(op, "neuron", None)}
    ctx = PassContext(calibration=x)
    out = get_pass("bias-calibration{timesteps=4,samples=96}").run(g, ctx)
    verify(out)
    notes = ctx.notes["bias-calibration"]
    assert set(notes) == set(before)
    for n, b in before.items():
        np.testing.assert_array_equal(g.op(n).bias, b)  # input unchanged
        assert not np.array_equal(out.op(n).bias, b)
        assert notes[n]["mean_abs_error_after"] < notes[n]["mean_abs_error_before"], n
    with pytest.raises(CompileError, match="IF neurons"):
        gn = get_pass("select-neurons{model=gn}").run(g, PassContext())
        get_pass("bias-calibration").run(gn, PassContext(calibration=x))


def test_summary_when_the_budget_left_the_default_unconfirmed():
    """A budget cut can confirm the global setting but not the default (seen under load in
    ``make demo``): the summary says so instead of crashing."""
    from snncompile.pipeline_search import TuneResult

    res = TuneResult(passes=[], pipeline="", chosen={}, default_score=None, tuned_score=0.98,
                     winner="global", cut_by_budget=True, timesteps=64, held_out=256)
    line = res.summary()
    assert "fixed default not confirmed" in line and "cut by the budget" in line


# ------------------------------------------------------------------ the neuron model
def test_neuron_choices_respect_the_user_and_the_target() -> None:
    from snncompile.options import CompileOptions
    from snncompile.pipeline_search import neuron_choices

    assert neuron_choices(CompileOptions(), "gpu") == ("if", "signed-if", "gn")
    assert neuron_choices(CompileOptions(), "loihi") == ("if", "signed-if", "gn")
    assert neuron_choices(CompileOptions(), "gpu", explicit=True) == ("if",)  # --neuron if
    assert neuron_choices(CompileOptions(neuron="gn"), "gpu") == ("gn",)
    assert neuron_choices(CompileOptions(export="nir"), "gpu") == ("if",)  # NIR: plain IF


def test_tuner_may_choose_signed_if_and_the_pipeline_replays(resnet_onnx: Path,
                                                             digits_train) -> None:
    """On the ResNet at T = 4 signed IF (Fast-SNN) takes back the spikes the joins send too
    early: the tuner tries it as a global candidate and chooses it here; the replayable
    pipeline selects it after any bias calibration (which simulates IF neurons)."""
    ann = snncompile.load_onnx(resnet_onnx)
    calib = digits_train.take(256)
    r = tune(ann, calib.x, calib.y, 4, neurons=("if", "signed-if"))
    tried = [s for s in r.scores if s["candidate"] == "neuron signed-if"]
    assert len(tried) == 1
    only_if = tune(ann, calib.x, calib.y, 4)  # the default: the model of base_options only
    assert not any(s["candidate"].startswith("neuron") for s in only_if.scores)
    assert r.chosen.get("neuron") == "signed-if" and r.tuned_loss < r.default_loss
    specs = split_pipeline(r.pipeline)
    sel = [i for i, s in enumerate(specs) if s.startswith("select-neurons")]
    assert sel and specs[sel[0]] == "select-neurons{model=signed-if}"
    bc = [i for i, s in enumerate(specs) if s.startswith("bias-calibration")]
    assert all(i < sel[0] for i in bc)
    g = PassManager.from_specs(specs).run(ann, PassContext(calibration=calib.x))
    assert {op.neuron.model for _, op in g.topo()
            if getattr(op, "neuron", None) is not None} == {"signed-if"}


def test_cli_offers_signed_if_only_without_neuron(digits_cnn_onnx: Path, digits_train,
                                                  tmp_path: Path) -> None:
    """`--neuron if` on the command line pins the model (also abbreviated); without it the
    tuner also tries signed IF; report.json lists the candidates."""
    from snncompile.tools.cli import main

    np.savez(tmp_path / "c.npz", x=digits_train.x[:128], y=digits_train.y[:128])
    np.savez(tmp_path / "e.npz", x=digits_train.x[600:640], y=digits_train.y[600:640])
    tried = []
    for extra in ([], ["--neuron", "if"], ["--neur", "if"]):
        out = tmp_path / f"o{len(tried)}"
        assert main([str(digits_cnn_onnx), "--target", "gpu", "-T", "4", "--calibration",
                     str(tmp_path / "c.npz"), "--eval", str(tmp_path / "e.npz"), "--out",
                     str(out), "--device", "cpu", "--tune-budget", "2500", *extra]) == 0
        rep = json.loads((out / "report.json").read_text())
        tried.append(any(s["candidate"] == "neuron signed-if"
                         for s in rep["tuning"]["scores"]))
    assert tried == [True, False, False]


def test_no_signed_if_where_a_max_pool_gate_stays(vgg_onnx: Path, digits_train) -> None:
    """The gate ranks a window's units by spike counts; a negative spike would lower them, so
    with `--maxpool gate` the tuner does not try signed IF (with the current max-pool it does)."""
    from snncompile.options import CompileOptions

    ann = snncompile.load_onnx(vgg_onnx)
    calib = digits_train.take(256)
    tried = []
    for pool in ("gate", "current"):
        r = tune(ann, calib.x, calib.y, 8, neurons=("if", "signed-if"),
                 base_options=CompileOptions(timesteps=8, maxpool=pool))
        tried.append(any(s["candidate"] == "neuron signed-if" for s in r.scores))
    assert tried == [False, True]


# ------------------------------------------------------------------ cost and scale (issue 19)
def test_default_budget_scales_with_what_a_candidate_costs(digits_cnn_onnx: Path) -> None:
    """The default budget is a share of the evaluation and of a fixed compute allowance:
    a network with more MACs per step, or a larger T, gets fewer simulated samples."""
    from snncompile.ir.nodes import Conv2d
    from snncompile.pipeline_search import (
        COMPUTE_BUDGET,
        DEFAULT_BUDGET,
        EVAL_SHARE,
        MIN_BUDGET,
        default_budget,
        step_macs,
    )

    g = _front(digits_cnn_onnx)
    macs = step_macs(g)
    conv = next(op for _, op in g.topo() if isinstance(op, Conv2d))
    assert macs > conv.weight.size  # weights × output positions, plus the elementwise ops
    assert default_budget(g, 32, None) == min(DEFAULT_BUDGET, int(COMPUTE_BUDGET / (32 * macs)))
    assert default_budget(g, 32, 3000) == int(EVAL_SHARE * 3000)  # tuning ≤ 25 % of the job
    assert default_budget(g, 32, 10) == MIN_BUDGET
    big = 10**9 // macs  # a network 1e9 / macs times as costly per step
    assert default_budget(g, 64, None) >= default_budget(g, 32 * big, None) == MIN_BUDGET


def test_racing_drops_clearly_worse_candidates_after_half(digits_cnn_onnx: Path,
                                                          digits_train) -> None:
    """A candidate clearly worse than the incumbent on the first half of the search samples
    costs half a candidate; every other one is scored on all of them."""
    calib = digits_train.take(512)
    r = tune(snncompile.load_onnx(digits_cnn_onnx), calib.x, calib.y, 2)
    search = [s for s in r.scores if s["stage"] != "confirm"]
    raced = [s for s in search if s.get("raced_out")]
    assert raced and all(s["samples"] == 64 for s in raced)
    assert all(s["samples"] == 128 for s in search if not s.get("raced_out"))
    # what was simulated, plus 2 × 128 per bias-calibration build
    assert (r.spent - sum(s["samples"] for s in r.scores)) % 256 == 0 and r.spent <= r.budget


def test_quantized_network_still_gets_its_neuron_model_tuned() -> None:
    """QCFS activations fix every threshold (θ = λ), but the neuron model is still a choice:
    at T = 1 group neurons (4 members: 4 levels a step, as many as L = 4) reproduce the
    quantized ANN far better than IF, and the pipeline replays."""
    from snncompile.data import digits
    from snncompile.options import CompileOptions
    from snncompile.pipeline_search import neuron_choices

    q4 = Path(__file__).resolve().parents[2] / "examples" / "digits_cnn_q4.onnx"
    tr = digits("train")
    ann = snncompile.load_onnx(q4)
    r = tune(ann, tr.x[:512], tr.y[:512], 1, neurons=neuron_choices(CompileOptions(), "gpu"))
    assert r.chosen.get("neuron") == "gn" and r.tuned_loss < r.default_loss
    assert "select-neurons{model=gn,members=4}" in r.pipeline
    g = PassManager.from_specs(split_pipeline(r.pipeline)).run(
        ann, PassContext(calibration=tr.x[:512]))
    assert {op.neuron.model for _, op in g.topo()
            if getattr(op, "neuron", None) is not None} == {"gn"}
