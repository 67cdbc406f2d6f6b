"""Post-conversion fine-tuning (issue 6): differentiable simulator, distill, temporal-consistency,
write-back into the IR, checkpoints, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import snncompile
from snncompile.backends.gpu import compile as gpu_compile
from snncompile.backends.gpu.compile import SpikingNetwork
from snncompile.backends.loihi import compile_reference as loihi_reference
from snncompile.data import save_npz
from snncompile.finetune import METHODS, parse_method, train
from snncompile.finetune.differentiable import DifferentiableSNN
from snncompile.ir import CompileError, load, save
from snncompile.tools.cli import main

import build

T = 4


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These models are tiny: one torch thread is as fast, and on a shared, oversubscribed
    machine two threads spin-wait each other (10-50x slower training steps measured)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits_snn(digits_cnn_onnx, digits_train):
    # fixed settings (one threshold per layer): the tests below check that tuning keeps them
    snn, _, _ = snncompile.convert(digits_cnn_onnx, calibration=digits_train.take(512),
                                   no_tune=True)
    return snn


def _acc(graph, ds, steps=T):
    net = gpu_compile(graph, snncompile.CompileOptions(timesteps=steps, device="cpu"))
    return net.run(ds.x, steps, progress=False).accuracy_by_timestep(ds.y)


def _arrays(graph):
    return {f"{n}.{k}": v.copy() for n, op in graph.topo() for k, v in op.arrays().items()} | {
        f"{n}.theta": op.neuron.threshold.copy() for n, op in graph.topo()
        if getattr(op, "neuron", None) is not None}


def test_differentiable_matches_simulator_and_has_gradients(rng, digits_train):
    """At initialisation the differentiable network computes the simulator's potentials; the
    gradient reaches every weight, bias and threshold, through MaxPool gates and Add joins."""
    for graph in (build.cnn(rng), build.residual(rng)):
        snn, _, _ = snncompile.convert(graph, calibration=digits_train.x[:128])
        x = torch.from_numpy(digits_train.x[:16])
        d, s = DifferentiableSNN(snn), SpikingNetwork(snn)
        with torch.no_grad():
            np.testing.assert_allclose(d(x, 6).numpy(), s(x, 6).numpy(), rtol=1e-5, atol=1e-5)
        pot, spikes = d.simulate(x, 6)
        (pot[-1].logsumexp(-1).sum() + sum(v.sum() for v in spikes.values())).backward()
        for name, p in d.named_trainables():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
            assert p.grad.abs().sum() > 0, name


def test_loss_falls_on_small_model(digits_snn, digits_train):
    """temporal-consistency on the small digits CNN (13.7k weights): the training loss falls."""
    res = train(digits_snn, digits_train.take(192), "temporal-consistency", epochs=3, lr=1e-2,
                timesteps=T, progress=False)[-1]
    losses = [h["loss"] for h in res.history]
    assert len(losses) == 3 and losses[-1] < 0.8 * losses[0], losses


def test_distill_not_below_converted_at_t4(digits_snn, digits_train, digits_test):
    """LaSNN distillation (attention matching, then KD without labels) on the bundled digits CNN:
    the accuracy at T=4 does not drop, and the input IR is unchanged."""
    before_arrays = _arrays(digits_snn)
    before = _acc(digits_snn, digits_test)[T - 1]
    unlabelled = (digits_train.x[:256], None)
    res = train(digits_snn, unlabelled, "distill", epochs=1, timesteps=T, progress=False)[-1]
    stages = [h["stage"] for h in res.history]
    assert stages == ["layer 0_Conv", "layer 4_Conv", "layer 9_Gemm", "output"]
    after = _acc(res.graph, digits_test)[T - 1]
    assert after >= before, (before, after)
    for k, v in _arrays(digits_snn).items():
        np.testing.assert_array_equal(v, before_arrays[k], err_msg=k)
    # what training produced (res.graph is it unless the held-out check kept the converted IR)
    changed = [k for k, v in _arrays(res.trained).items()
               if not np.array_equal(v, before_arrays[k])]
    assert any(k.endswith(".weight") for k in changed)
    assert any(k.endswith(".theta") for k in changed)


def test_tuned_ir_round_trips_and_runs_on_gpu(digits_snn, digits_train, digits_test, tmp_path):
    tuned = snncompile.finetune_snn(digits_snn, digits_train.take(128), "temporal-consistency",
                                epochs=1, timesteps=T, progress=False)
    save(tuned, tmp_path)
    back = load(tmp_path)
    for k, v in _arrays(tuned).items():
        np.testing.assert_array_equal(_arrays(back)[k], v, err_msg=k)
    a = gpu_compile(tuned, snncompile.CompileOptions(device="cpu")).run(digits_test.x[:64], T,
                                                                      progress=False)
    b = gpu_compile(back, snncompile.CompileOptions(device="cpu")).run(digits_test.x[:64], T,
                                                                     progress=False)
    np.testing.assert_array_equal(a.predictions, b.predictions)
    # per-layer thresholds stay per layer (one value), as converted
    for _, op in tuned.topo():
        if getattr(op, "neuron", None) is not None:
            assert np.unique(op.neuron.threshold).size == 1


def test_quantized_weights_stay_on_their_grid(digits_cnn_onnx, digits_train):
    snn, _, _ = snncompile.convert(digits_cnn_onnx, calibration=digits_train.take(256),
                                   weight_bits=6)
    tuned = train(snn, digits_train.take(64), "distill{layer_epochs=0}", epochs=1, lr=1e-1,
                  timesteps=2, progress=False)[-1].trained  # trained, kept or not
    moved = 0
    for name, op in tuned.topo():
        if getattr(op, "quant", None) is None:
            continue
        scale = op.quant.scale.astype(np.float64).reshape(-1, *[1] * (op.weight.ndim - 1))
        q = op.weight.astype(np.float64) / scale
        np.testing.assert_allclose(q, np.rint(q), atol=1e-4, err_msg=name)
        assert np.abs(np.rint(q)).max() <= 2 ** 5 - 1
        moved += int(not np.array_equal(op.weight, snn.op(name).weight))
    assert moved > 0


def test_checkpoint_resume_equals_uninterrupted_run(digits_snn, digits_train, tmp_path):
    data = digits_train.take(64)
    kw = dict(timesteps=2, lr=2e-3, progress=False)
    straight = train(digits_snn, data, "temporal-consistency", epochs=2, **kw)[-1]
    first = train(digits_snn, data, "temporal-consistency", epochs=1, out_dir=tmp_path, **kw)[-1]
    assert first.resumed_from is None
    assert (tmp_path / "0-temporal-consistency" / "checkpoint.pt").is_file()
    resumed = train(digits_snn, data, "temporal-consistency", epochs=2, out_dir=tmp_path, **kw)[-1]
    assert resumed.resumed_from is not None and len(resumed.history) == 2
    for k, v in _arrays(straight.trained).items():  # what training produced, kept or not
        np.testing.assert_allclose(_arrays(resumed.trained)[k], v, rtol=1e-6, atol=1e-7,
                                   err_msg=k)
    # a different learning rate is a different run: the checkpoint is not used
    other = train(digits_snn, data, "temporal-consistency", epochs=1, out_dir=tmp_path,
                  **{**kw, "lr": 1e-3})[-1]
    assert other.resumed_from is None


def test_chunks_bound_memory_not_the_result(digits_snn, digits_train):
    """A batch run in chunks of 16 takes the same step as in one piece, with less memory."""
    from snncompile.finetune import FinetuneConfig

    data = digits_train.take(64)
    runs = [train(digits_snn, data, "temporal-consistency", config=FinetuneConfig(
        epochs=1, timesteps=2, batch_size=64, chunk_size=c, progress=False))[-1]
        for c in (64, 16)]
    for k, v in _arrays(runs[0].trained).items():
        np.testing.assert_allclose(_arrays(runs[1].trained)[k], v, rtol=1e-4, atol=1e-5,
                                   err_msg=k)
    assert runs[1].peak_memory_bytes < 0.5 * runs[0].peak_memory_bytes


def test_user_errors(digits_snn, digits_train):
    with pytest.raises(CompileError, match="temporal-consistency fine-tuning needs labels"):
        snncompile.finetune(digits_snn, digits_train.x[:32], "temporal-consistency",
                            progress=False)
    with pytest.raises(CompileError, match="unknown fine-tuning method: 'bogus'"):
        parse_method("distill+bogus")
    with pytest.raises(CompileError, match="method 'distill' has no option 'nope'"):
        snncompile.finetune_snn(digits_snn, digits_train.x[:32], "distill{nope=1}", progress=False)
    with pytest.raises(CompileError, match="distill.layer_loss='x'"):
        snncompile.finetune_snn(digits_snn, digits_train.x[:32], "distill{layer_loss=x}",
                            progress=False)
    assert parse_method("distill{layer_loss=rate,tau=2}+temporal_consistency") == [
        ("distill", {"layer_loss": "rate", "tau": "2"}), ("temporal-consistency", {})]
    assert set(METHODS) >= {"distill", "temporal-consistency"} and isinstance(METHODS, dict)


def test_cli_finetune(digits_cnn_onnx, digits_train, digits_test, tmp_path, capsys):
    calib, ev = tmp_path / "c.npz", tmp_path / "e.npz"
    save_npz(calib, digits_train.x[:128], digits_train.y[:128])
    save_npz(ev, digits_test.x[:100], digits_test.y[:100])
    out = tmp_path / "out"
    argv = [str(digits_cnn_onnx), "--target", "gpu", "--calibration", str(calib), "--eval",
            str(ev), "--timesteps", "2", "--out", str(out), "--finetune",
            "distill{layer_epochs=0}+temporal-consistency", "--finetune-epochs", "1"]
    assert main(argv) == 0
    rep = json.loads((out / "report.json").read_text())
    ft = rep["finetune"]
    assert [s["method"] for s in ft["steps"]] == ["distill", "temporal-consistency"]
    assert set(ft["accuracy_before"]) == {"1", "2"}
    assert ft["accuracy_after"]["2"] == pytest.approx(rep["accuracy_by_timestep"]["2"])
    assert (out / "finetune" / "1-temporal-consistency" / "checkpoint.pt").is_file()
    assert not list(tmp_path.glob(".out.tmp-*"))
    # labels missing: one line, exit 2, nothing written
    save_npz(calib, digits_train.x[:64])
    argv2 = [*argv[:-6], "--out", str(tmp_path / "out2"), "--finetune", "temporal-consistency"]
    assert main(argv2) == 2
    assert "needs labels" in capsys.readouterr().err
    assert not (tmp_path / "out2").exists() and not list(tmp_path.glob(".out2.tmp-*"))


@pytest.mark.lava
@pytest.mark.timeout(240)
def test_tuned_ir_runs_on_lava_spike_exact(digits_cnn_onnx, digits_train, digits_test):
    """A tuned IR compiles for --target loihi (the fixed-point plan re-quantizes the tuned
    weights) and Lava's fixed_pt run matches the GPU loihi mode spike for spike."""
    from snncompile.backends.loihi import compile as lava_compile

    snn, _, _ = snncompile.convert(digits_cnn_onnx, target="loihi",
                                   calibration=digits_train.take(256))
    tuned = snncompile.finetune_snn(snn, digits_train.take(64), "distill{layer_epochs=0}", epochs=1,
                                timesteps=T, progress=False)
    x, steps = digits_test.x[:2], 16
    net = lava_compile(tuned, snncompile.CompileOptions(lava_mode="fixed"))
    lava = net.run(x, steps, record=True, progress=False)
    ref = loihi_reference(tuned, snncompile.CompileOptions()).run(
        x, steps, record=True, progress=False)
    for name in net.plan.spiking():
        np.testing.assert_array_equal(lava.spike_trains[name], ref.spike_trains[name],
                                      err_msg=name)
    np.testing.assert_array_equal(lava.predictions, ref.predictions)


class _Plant:
    """A pickle payload: unpickling it calls ``Path(flag).touch()`` (runs code)."""

    def __init__(self, flag):
        self.flag = flag

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.flag),))


def test_planted_checkpoint_never_runs_code(digits_snn, digits_train, tmp_path):
    """A malicious checkpoint where a resume looks (a cloned repository, a shared results
    folder) is not unpickled: weights_only=True refuses it and the run starts fresh."""
    flag = tmp_path / "pwned"
    ck = tmp_path / "ft" / "0-temporal-consistency" / "checkpoint.pt"
    ck.parent.mkdir(parents=True)
    torch.save({"fingerprint": "x", "params": {}, "payload": _Plant(str(flag))}, ck)
    # the payload is real: a full unpickle runs it
    torch.load(ck, weights_only=False)
    assert flag.exists()
    flag.unlink()
    res = train(digits_snn, digits_train.take(32), "temporal-consistency", epochs=1,
                out_dir=tmp_path / "ft", timesteps=2, progress=False)[-1]
    assert not flag.exists()
    assert res.resumed_from is None


def test_checkpoint_with_the_fingerprint_but_wrong_shapes_is_ignored(digits_snn, digits_train,
                                                                     tmp_path):
    data = digits_train.take(32)
    kw = {"timesteps": 2, "progress": False, "out_dir": tmp_path}
    train(digits_snn, data, "temporal-consistency", epochs=1, **kw)
    ck = tmp_path / "0-temporal-consistency" / "checkpoint.pt"
    state = torch.load(ck, weights_only=True)
    k = next(iter(state["params"]))
    state["params"][k] = torch.zeros(3)  # same fingerprint, a parameter of another shape
    torch.save(state, ck)
    res = train(digits_snn, data, "temporal-consistency", epochs=2, **kw)[-1]
    assert res.resumed_from is None


# ------------------------------------------------------------------------------ issue 22
FRONT = "fold-batchnorm,remove-identity,fuse-activations"
BIAS_CALIBRATED = FRONT + ",balance-thresholds,initial-potential,bias-calibration{timesteps=4}"


def test_teacher_is_the_ann_not_the_bias_calibrated_ir(digits_cnn_onnx, digits_train, tmp_path):
    """The cause of issue 22's regression: fine-tuning distilled towards the converted IR run
    as an ANN, whose biases bias-calibration had shifted (ANN(b + e), not the ANN), so
    distillation undid the calibration. The output stage's first loss (one batch, measured
    before any step) must be KD + CE against the ANN's logits, not the IR's ANN mode."""
    from snncompile.finetune.distill import kd_loss
    from snncompile.interp import run_ann

    x, y = digits_train.x[:24], digits_train.y[:24]  # too few to hold any out: all train
    calib, ev = tmp_path / "c.npz", tmp_path / "e.npz"
    save_npz(calib, x, y)
    save_npz(ev, digits_train.x[-16:], digits_train.y[-16:])
    out = tmp_path / "out"
    assert main([str(digits_cnn_onnx), "--calibration", str(calib), "--eval", str(ev),
                 "--timesteps", str(T),
                 "--pipeline", BIAS_CALIBRATED, "--finetune", "distill{layer_epochs=0}",
                 "--finetune-epochs", "1", "--out", str(out)]) == 0
    ft = json.loads((out / "report.json").read_text())["finetune"]
    loss = ft["steps"][0]["epochs"][0]["loss"]
    snn, _, _ = snncompile.convert(digits_cnn_onnx, calibration=x,
                                   passes=BIAS_CALIBRATED.split(","))
    ann, _, _ = snncompile.convert(digits_cnn_onnx, passes=FRONT.split(","))
    with torch.no_grad():
        v = SpikingNetwork(snn)(torch.from_numpy(x), T)[-1].flatten(1) / T
    ce = torch.nn.functional.cross_entropy(v, torch.from_numpy(y).long()).item()
    to_ann = kd_loss(v, torch.from_numpy(run_ann(ann, x)), 4.0).item() + ce
    to_ir = kd_loss(v, torch.from_numpy(run_ann(snn, x)), 4.0).item() + ce
    assert abs(to_ann - to_ir) > 0.05 * to_ann  # the two teachers differ: the test can fail
    assert loss == pytest.approx(to_ann, rel=1e-4), (loss, to_ann, to_ir)
    assert ft["teacher"] == "the ANN"


def test_teacher_keeps_the_irs_units_after_fold_thresholds(digits_cnn_onnx, digits_train):
    """fold-thresholds divides every layer by its θ: the ANN is in other units than the IR, so
    the IR's own ANN mode (exact for that reparametrisation) stays the teacher."""
    from snncompile.finetune.teacher import teacher_for

    snn, _, _ = snncompile.convert(digits_cnn_onnx, calibration=digits_train.take(128),
                                   no_tune=True, fold_thresholds=True)
    ann = snncompile.load_onnx(digits_cnn_onnx)
    teacher, note = teacher_for(ann, snn, digits_train.x[:16])
    assert teacher is snn and "other units" in note
    plain, _, _ = snncompile.convert(digits_cnn_onnx, calibration=digits_train.take(128),
                                     no_tune=True)
    teacher, note = teacher_for(ann, plain, digits_train.x[:16])
    assert teacher is not plain and note == "the ANN"


def _held_out_accuracy(graph, held, steps):
    net = gpu_compile(graph, snncompile.CompileOptions(timesteps=steps, device="cpu"))
    return float(net.run(held.x, steps, progress=False).accuracy_by_timestep(held.y)[-1])


def test_finetuning_never_returns_a_worse_network(digits_snn, digits_train):
    """A learning rate of 3 (Adam) wrecks the network; the held-out check sees it on samples
    training never saw and returns the converted network, saying so. A sane run is kept."""
    from snncompile.finetune import FinetuneConfig, heldout
    from snncompile.finetune.training import as_data

    data = digits_train.take(320)
    cfg = FinetuneConfig(epochs=1, lr=3.0, timesteps=T, progress=False)
    res = train(digits_snn, data, "distill{layer_epochs=0}", config=cfg)[-1]
    fit, held, disjoint = heldout.split(as_data(data), cfg.holdout, cfg.seed)
    assert disjoint and len(held) == 32 and len(fit) == 288
    assert not set(map(bytes, held.x)) & set(map(bytes, fit.x))
    before = _held_out_accuracy(digits_snn, held, T)
    wrecked = _held_out_accuracy(res.trained, held, T)
    assert wrecked < before - 0.1, (before, wrecked)  # training really made it worse
    assert res.graph is digits_snn and res.check.kept == "converted"
    assert res.check.scores["converted"]["accuracy"] == pytest.approx(before)
    assert res.check.scores["fine-tuned"]["accuracy"] == pytest.approx(wrecked)
    assert "kept the converted network" in res.check.summary()
    assert res.summary()["held_out"]["kept"] == "converted"
    good = train(digits_snn, data, "distill{layer_epochs=0}", config=FinetuneConfig(
        epochs=1, lr=1e-3, timesteps=T, progress=False))[-1]
    sc = good.check.scores
    assert (sc["fine-tuned"]["accuracy"], -sc["fine-tuned"]["loss"]) >= (
        sc["converted"]["accuracy"], -sc["converted"]["loss"])
    assert good.graph is good.trained and good.check.kept == "fine-tuned"


def test_learning_rate_is_relative_to_each_tensors_scale(digits_snn, digits_train,
                                                         monkeypatch):
    """The bug: Adam's absolute step (lr per weight per step) suited the digits nets and wrecked
    the CIFAR ResNet-20, whose weights are 5-10x smaller. Scaling the first layer's weights,
    bias and threshold by c and the next conv's weights by 1/c gives the same SNN (c a power of
    two: exactly); with the relative lr its fine-tuning is the same up to that scale too.
    With an absolute lr (every scale 1) it is not."""
    import dataclasses

    from snncompile.finetune import FinetuneConfig
    from snncompile.finetune import training as training_mod

    c = 0.125
    g = digits_snn.copy()
    a, b = g.op("0_Conv"), g.op("4_Conv")
    g.replace("0_Conv", weight=a.weight * c, bias=a.bias * c, neuron=dataclasses.replace(
        a.neuron, threshold=a.neuron.threshold * c))
    g.replace("4_Conv", weight=b.weight / c)
    data = digits_train.take(128)
    cfg = FinetuneConfig(epochs=1, timesteps=2, progress=False, holdout=0, batch_size=32)

    def trained(graph):
        return train(graph, data, "distill{layer_epochs=0}", config=cfg)[-1].trained

    def gaps(r1, r2):
        return [float(np.abs(r2.op("0_Conv").weight - c * r1.op("0_Conv").weight).max()
                      / np.abs(c * r1.op("0_Conv").weight).max()),
                float(np.abs(r2.op("4_Conv").weight - r1.op("4_Conv").weight / c).max()
                      / np.abs(r1.op("4_Conv").weight / c).max()),
                float(np.abs(r2.op("0_Conv").neuron.threshold
                             - c * r1.op("0_Conv").neuron.threshold).max())]

    r1 = trained(digits_snn)
    moved = np.abs(r1.op("0_Conv").weight - digits_snn.op("0_Conv").weight).max()
    assert moved > 1e-4  # training changed the weights
    assert max(gaps(r1, trained(g))) < 1e-5
    monkeypatch.setattr(training_mod, "step_scales", lambda ps: {id(p): 1.0 for p in ps})
    assert max(gaps(trained(digits_snn), trained(g))) > 3e-3  # absolute: not scale-free


def test_cli_says_when_it_kept_the_converted_network(digits_cnn_onnx, digits_train,
                                                     digits_test, tmp_path, capsys):
    calib, ev = tmp_path / "c.npz", tmp_path / "e.npz"
    save_npz(calib, digits_train.x[:320], digits_train.y[:320])
    save_npz(ev, digits_test.x[:100], digits_test.y[:100])
    out = tmp_path / "out"
    assert main([str(digits_cnn_onnx), "--calibration", str(calib), "--eval", str(ev),
                 "--timesteps", str(T), "--no-tune", "--out", str(out), "--finetune",
                 "distill{layer_epochs=0}", "--finetune-epochs", "1",
                 "--finetune-lr", "3"]) == 0
    text = capsys.readouterr().out
    assert "kept the converted network" in text and "(the converted network, kept)" in text
    ft = json.loads((out / "report.json").read_text())["finetune"]
    assert ft["kept"] == "converted" and ft["held_out"]["samples"] == 32
    assert ft["held_out"]["disjoint_from_training"] is True
    assert ft["accuracy_after"] == ft["accuracy_before"]
