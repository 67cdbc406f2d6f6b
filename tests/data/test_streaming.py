"""Streaming data and statistics (issue 12): exact streamed percentiles against np.percentile,
image folders and ``module:callable`` datasets from the CLI, per-batch evaluation merged with
``SimResult.concat``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import snncompile
from snncompile import data
from snncompile.backends.common import SimResult
from snncompile.passes.statistics import (
    CHANNELWISE_BITS,
    LAYERWISE_BITS,
    TopTail,
    exact_percentile,
    percentile,
)
from snncompile.tools.cli import main

ROOT = Path(__file__).resolve().parents[2]
NUMPY1 = int(np.__version__.split(".")[0]) < 2


# ------------------------------------------------------------------------------ statistics
def _samples(rng: np.random.Generator, kind: int, n: int) -> np.ndarray:
    if kind == 0:
        return np.maximum(rng.normal(size=n), 0).astype(np.float32)  # ReLU: many exact zeros
    if kind == 1:
        return (rng.integers(0, 4, n) * 0.5).astype(np.float32)  # heavy ties
    if kind == 2:
        return (rng.normal(size=n) * 10.0 ** rng.uniform(-4, 4)).astype(np.float32)  # signed
    return rng.random(n).astype(np.float32)


@pytest.mark.parametrize("bits", [LAYERWISE_BITS, CHANNELWISE_BITS])
def test_streamed_percentile_equals_np_percentile(rng: np.random.Generator, bits) -> None:
    """Error 0: the radix-select estimator returns the in-memory ``exact_percentile`` bit for
    bit (and numpy 1.x's np.percentile; numpy 2's within float32 rounding), for any split of the
    stream into batches (order-independent counts)."""
    for trial in range(12):
        n = int(rng.integers(1, 4000))
        a = _samples(rng, trial % 4, n)
        for q in (99.0, 99.9, 99.99, 50.0, 0.0, 100.0):
            ref = float(a.max()) if q == 100.0 else float(np.percentile(a, q))
            cuts = np.sort(rng.integers(0, n + 1, 3))
            parts = np.split(rng.permutation(a), cuts)  # any order, any batch sizes
            got = percentile(lambda: [p.reshape(1, -1) for p in parts], q, bits=bits)[0]
            assert got == exact_percentile(a, q), (trial, q)  # the in-memory path, any numpy
            if NUMPY1:  # numpy 2 rounds its virtual index and interpolation differently
                assert got == ref, (trial, q, got, ref)
            else:
                assert got == pytest.approx(ref, rel=1e-6, abs=1e-30), (trial, q, got, ref)


def test_top_tail_percentile_equals_exact_percentile(rng: np.random.Generator) -> None:
    """The one-pass top-k estimator (known sample count) gives ``exact_percentile`` bit for bit
    per group, for any batch split, ties, signed values and every percentile."""
    for trial in range(16):
        n = int(rng.integers(1, 3000))
        a = np.stack([_samples(rng, (trial + g) % 4, n) for g in range(3)])
        for q in (99.0, 99.9, 99.99, 90.0, 50.0, 0.0):
            est = TopTail(3, q, n)
            cuts = np.sort(rng.integers(0, n + 1, 3))
            for part in np.split(a[:, rng.permutation(n)], cuts, axis=1):
                est.add(0, torch.from_numpy(np.ascontiguousarray(part)))
            est.finish(0)
            assert est.result().tolist() == [exact_percentile(a[g], q) for g in range(3)], \
                (trial, q)


def test_top_tail_refuses_a_short_stream() -> None:
    est = TopTail(1, 99.9, 10)
    est.add(0, torch.zeros(1, 9))
    with pytest.raises(ValueError, match="expected 10 values"):
        est.finish(0)


def test_streamed_percentile_per_channel(rng: np.random.Generator) -> None:
    acts = np.maximum(rng.normal(size=(50, 6, 5, 5)), 0).astype(np.float32)
    per = np.moveaxis(acts, 1, 0).reshape(6, -1)
    batches = [np.moveaxis(acts[i:i + 7], 1, 0).reshape(6, -1) for i in range(0, 50, 7)]
    got = percentile(lambda: batches, 99.9, groups=6, bits=CHANNELWISE_BITS)
    assert got.tolist() == [exact_percentile(per[c], 99.9) for c in range(6)]
    ref = [float(np.percentile(per[c], 99.9)) for c in range(6)]
    assert got.tolist() == ref if NUMPY1 else got.tolist() == pytest.approx(ref, rel=1e-6)


def test_balance_thresholds_stream_equals_in_memory(digits_cnn_onnx: Path,
                                                    digits_train: data.Dataset) -> None:
    """Thresholds from a streamed source equal the in-memory np.percentile of all activations."""
    import snncompile
    from snncompile.frontend import load_onnx
    from snncompile.interp import record_activations
    from snncompile.passes.balance_thresholds import BalanceThresholds, layer_thresholds
    from snncompile.passes.registry import PassContext

    calib = digits_train.take(300)
    graph = snncompile.convert(load_onnx(digits_cnn_onnx), target="ir", calibration=calib,
                               passes=["fold-batchnorm", "remove-identity",
                                       "fuse-activations"])[0]
    acts = record_activations(graph, calib.x)
    for norm, cw in (("p99.9", False), ("p99", True), ("max", False)):
        p = BalanceThresholds(norm=norm, channelwise=cw)
        out = p.run(graph, PassContext(calibration=data.Source.of(calib)))
        q = {"max": 100.0, "p99": 99.0, "p99.9": 99.9}[norm]
        for name, op in out.topo():
            if getattr(op, "neuron", None) is not None:
                ref = layer_thresholds(acts[name], q, cw)
                ref = np.where(ref > 0, ref, 1.0).astype(np.float32)  # dead channels: θ = 1
                assert np.array_equal(op.neuron.threshold, ref), (norm, name)


# ------------------------------------------------------------------------------ SimResult.concat
def test_batches_merged_equal_one_run(digits_cnn_onnx: Path, digits_test: data.Dataset) -> None:
    import snncompile
    from snncompile.backends.common import run_stream
    from snncompile.backends.gpu import compile as gpu_compile

    snn, _, _ = snncompile.convert(digits_cnn_onnx, dataset="digits", calibration_samples=200)
    opts = snncompile.CompileOptions(batch_size=37, timesteps=6, device="cpu")
    net = gpu_compile(snn, opts)
    x = digits_test.x[:100]
    whole = net.run(x, 6, progress=False)
    parts = [net.run(x[i:i + 37], 6, progress=False) for i in range(0, 100, 37)]
    merged = SimResult.concat(parts)
    streamed, labels, _ = run_stream(net, digits_test.take(100), opts, 6)
    for r in (merged, streamed):
        assert np.array_equal(r.predictions, whole.predictions)
        assert np.array_equal(r.output, whole.output)
        assert np.array_equal(r.synops, whole.synops)
        for k in whole.layer_spikes:
            assert np.array_equal(r.layer_spikes[k], whole.layer_spikes[k])
    assert np.array_equal(labels, digits_test.y[:100])


# ------------------------------------------------------------------------------ image folders
def _png_folder(root: Path, ds: data.Dataset) -> np.ndarray:
    """Write ds as 8-bit grayscale PNGs under root/<label>/<i>.png (sorted order = ds order
    within a class); returns x quantized to what the PNGs hold, in ImageFolder order."""
    from PIL import Image

    order = np.argsort(ds.y, kind="stable")
    q = np.round(ds.x[:, 0] * 255).astype(np.uint8)
    for rank, i in enumerate(order):
        d = root / f"class{ds.y[i]}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(q[i], mode="L").save(d / f"{rank:05d}.png")
    return (q[order].astype(np.float32) / 255.0)[:, None], ds.y[order]


def test_image_folder_from_the_cli(digits_cnn_onnx: Path, digits_test: data.Dataset,
                                   tmp_path: Path) -> None:
    """An image folder (workers decoding ahead) gives the same report as the same pixels in an
    .npz file."""
    x, y = _png_folder(tmp_path / "imgs", digits_test.take(120))
    data.save_npz(tmp_path / "same.npz", x, y)
    reports = []
    for src, extra in ((str(tmp_path / "imgs"), ["--workers", "1", "--preprocess", "none"]),
                       (str(tmp_path / "same.npz"), [])):
        out = tmp_path / f"o{len(reports)}"
        assert main([str(digits_cnn_onnx), "--target", "gpu", "--calibration", src, "--eval", src,
                     "--timesteps", "6", "--batch-size", "50", "--device", "cpu",
                     "--no-tune",
                     "--out", str(out), *extra]) == 0
        reports.append(json.loads((out / "report.json").read_text()))
    a, b = reports
    assert a["samples"] == 120
    for k in ("accuracy_by_timestep", "spikes_per_sample", "ann_accuracy", "layers"):
        assert a[k] == b[k], k
    assert a["snn_accuracy"] > 0.8


def test_preprocess_imagenet_preset(tmp_path: Path) -> None:
    """Resize the shorter side, center-crop, RGB, (x/255 − mean)/std, checked by hand."""
    from PIL import Image

    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    p = data.preprocess_from("imagenet")
    x = p(str(tmp_path / "a.png"))
    assert x.shape == (3, 224, 224) and x.dtype == np.float32
    im = Image.fromarray(rgb).resize((341, 256), Image.Resampling.BILINEAR)
    ref = np.asarray(im, np.float32)[16:240, 58:282] / 255.0
    mean, std = np.array(p.mean, np.float32), np.array(p.std, np.float32)
    assert np.allclose(x, np.moveaxis((ref - mean) / std, -1, 0), atol=1e-6)
    g = data.preprocess_from("none", color="gray", crop=(10, 12), mean=(0.5,), std=(0.25,))
    assert g(str(tmp_path / "a.png")).shape == (1, 10, 12)


def test_empty_image_folder_is_one_line(digits_cnn_onnx: Path, tmp_path: Path) -> None:
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    exe = Path(sys.executable).with_name("snn-compile")
    res = subprocess.run([str(exe), str(digits_cnn_onnx), "--target", "gpu", "--eval",
                          str(tmp_path / "empty"), "--out", str(tmp_path / "o")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "empty image folder" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------ module:callable
DATA_MODULE = '''
import numpy as np
import torch
from snncompile import data


class Digits(torch.utils.data.Dataset):
    def __init__(self, split, n=None):
        d = data.digits(split)
        self.x, self.y = d.x[:n], d.y[:n]

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return torch.from_numpy(self.x[i]), int(self.y[i])


def train():
    return Digits("train", 512)  # what --dataset digits calibrates on


def test():
    return Digits("test")
'''


def test_module_callable_from_the_cli(digits_cnn_onnx: Path, tmp_path: Path) -> None:
    """``--calibration my_data:train --eval my_data:test`` (my_data.py in the cwd) reproduces
    ``--dataset digits`` exactly (all of both splits: a subset of user data is spread over
    it, the bundled digits split is shuffled already and taken from its start)."""
    (tmp_path / "my_data.py").write_text(DATA_MODULE)
    exe = Path(sys.executable).with_name("snn-compile")
    common = [str(digits_cnn_onnx), "--target", "gpu", "--timesteps", "5",
              "--device", "cpu", "--no-tune", "--batch-size", "64"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(ROOT)}
    res = subprocess.run([str(exe), *common, "--calibration", "my_data:train", "--eval",
                          "my_data:test", "--workers", "1", "--out", str(tmp_path / "m")],
                         capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    assert main([*common, "--dataset", "digits", "--out", str(tmp_path / "d")]) == 0
    a = json.loads((tmp_path / "m" / "report.json").read_text())
    b = json.loads((tmp_path / "d" / "report.json").read_text())
    for k in ("accuracy_by_timestep", "spikes_per_sample", "ann_accuracy", "layers", "samples"):
        assert a[k] == b[k], k
    bad = subprocess.run([str(exe), *common, "--eval", "my_data:nothing",
                          "--out", str(tmp_path / "x")],
                         capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert bad.returncode == 2 and "cannot import dataset" in bad.stderr


def test_source_take_and_shapes(digits_test: data.Dataset) -> None:
    src = data.Source.of(digits_test).take(50, offset=10)
    assert len(src) == 50 and src.sample_shape == (1, 8, 8)
    got = np.concatenate([x for _, x, _ in src.batches(16)])
    assert np.array_equal(got, digits_test.x[10:60])
    assert torch.equal(torch.from_numpy(src.materialize().x), torch.from_numpy(got))


def test_a_subset_of_a_class_sorted_folder_spans_every_class(digits_test: data.Dataset,
                                                             tmp_path: Path) -> None:
    """An image folder lists its files class by class: --calibration-samples / --eval-samples
    take samples spread over the whole folder (every class), not its first classes; the order
    and content are deterministic, and an in-memory source still takes its first n."""
    _, y = _png_folder(tmp_path / "imgs", digits_test.take(200))
    src = data.open_data(str(tmp_path / "imgs"), preprocess=data.preprocess_from("none"),
                         workers=0)
    assert len(np.unique(src.take(20).materialize().y)) <= 2  # the problem
    sub = src.spread(20)
    got = sub.materialize()
    assert len(sub) == 20 and set(got.y) == set(y)
    assert np.array_equal(got.y, y[(np.arange(20) * 200) // 20])
    assert np.array_equal(sub.materialize().x, got.x)
    assert src.spread(500) is not None and len(src.spread(500)) == 200
    mem = data.Source.of(data.Dataset(*_png_folder(tmp_path / "again", digits_test.take(200)),
                                      "sorted"))
    assert np.array_equal(mem.spread(20).materialize().y, y[(np.arange(20) * 200) // 20])
    assert np.allclose(mem.spread(20).materialize().x, got.x, atol=1e-6)


def test_inputs_run_in_row_major_layout_whatever_their_strides(digits_cnn_onnx: Path) -> None:
    """A (N, 1, H, W) array made by a transpose has channels-last strides, which torch calls
    contiguous; its convolutions then took a channels-last kernel that rounds differently on
    some CPUs (AMD EPYC: thresholds one float32 ulp apart between the in-memory digits and the
    same images streamed from a module). The ANN and the simulator now run it row-major."""
    from snncompile.backends import gpu
    from snncompile.interp import run_ann_torch, standard_layout
    from snncompile.passes.pipelines import FRONT

    x = data.digits("train").x[:64]
    nhwc = torch.as_tensor(np.ascontiguousarray(x.transpose(0, 2, 3, 1))).permute(0, 3, 1, 2)
    row = torch.as_tensor(np.array(x, order="C"))
    assert torch.equal(nhwc, row) and nhwc.stride() != row.stride()
    assert standard_layout(nhwc).stride() == (64, 64, 8, 1)
    assert row.stride() == (64, 64, 8, 1) and standard_layout(row) is row
    g = snncompile.load_onnx(digits_cnn_onnx)
    for p in FRONT:
        g = p.run(g, snncompile.PassContext())
    a, b = run_ann_torch(g, nhwc)[0], run_ann_torch(g, row)[0]
    assert torch.equal(a, b)
    snn, _, _ = snncompile.convert(digits_cnn_onnx, target="gpu", calibration=x, no_tune=True)
    net = gpu.compile(snn, snncompile.CompileOptions(device="cpu"))
    s1 = net.module.simulate(nhwc, 4)[0]
    s2 = net.module.simulate(row, 4)[0]
    assert torch.equal(s1, s2)
