"""Property-based bad-input campaign (issue 13): mutate ONNX models, data files and option values
and hold the CLI to its contract (README, "Command line"):

* exit 0 with a complete output folder (it holds the snn-compile marker), or
* exit 2 with exactly one line on stderr, no traceback, and nothing written;
* never another exit code, and no file outside the output folder changes.

Seeded (``derandomize=True``) and bounded (small ``max_examples``, no deadline), so the file
runs in about a minute on two shared cores. The CLI runs in-process (``main([...])``).
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from snncompile.tools.cli import main
from snncompile.tools.output import MARKER

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "examples" / "digits_cnn.onnx"


def SETTINGS(n: int) -> settings:
    """``n`` examples (times $SNNCOMPILE_FUZZ_SCALE for a longer hunt), seeded."""
    return settings(max_examples=n * int(os.environ.get("SNNCOMPILE_FUZZ_SCALE", "1")),
                    derandomize=True, deadline=None, database=None,
                    print_blob=True, suppress_health_check=[HealthCheck.too_slow,
                                                            HealthCheck.function_scoped_fixture])


def snapshot(folder: Path, skip: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.lstat().st_size, p.lstat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))
            if p != skip and skip not in p.parents}


def run_contract(argv: list[str], root: Path, out: Path) -> tuple[int, str]:
    """Run the CLI; assert the contract; return (exit code, stderr)."""
    before = snapshot(root, out)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main([str(a) for a in argv])
    text = err.getvalue()
    assert "Traceback" not in text, text
    assert rc in (0, 2), (rc, text)
    if rc == 2:
        lines = text.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("snn-compile: error: "), text
        assert not out.exists(), "output written on a failed run"
    else:
        assert (out / MARKER).is_file() and (out / "ir.json").is_file()
    assert snapshot(root, out) == before, "a file outside the output folder changed"
    leftovers = [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]
    assert leftovers == [], leftovers
    return rc, text


# ------------------------------------------------------------------------------ ONNX
ATTRS = st.sampled_from(["kernel_shape", "pads", "strides", "group", "dilations", "axis",
                         "transB", "alpha", "ceil_mode"])
INTS = st.integers(min_value=-3, max_value=40)


@st.composite
def onnx_mutation(draw: st.DrawFn) -> tuple[str, onnx.ModelProto]:
    m = onnx.load(str(MODEL))
    kind = draw(st.sampled_from(["attr", "dims", "dtype", "input", "drop", "optype", "bytes",
                                 "value", "opset"]))
    nodes = m.graph.node
    if kind == "attr":
        n = nodes[draw(st.integers(0, len(nodes) - 1))]
        name = draw(ATTRS)
        vals = draw(st.lists(INTS, min_size=1, max_size=4))
        for a in list(n.attribute):
            if a.name == name:
                n.attribute.remove(a)
        if name in ("group", "axis", "transB", "ceil_mode"):
            n.attribute.append(helper.make_attribute(name, vals[0]))
        elif name == "alpha":
            n.attribute.append(helper.make_attribute(name, draw(st.floats(allow_nan=True))))
        else:
            n.attribute.append(helper.make_attribute(name, vals))
        what = f"{n.name}.{name}={vals}"
    elif kind == "dims":
        init = m.graph.initializer[draw(st.integers(0, len(m.graph.initializer) - 1))]
        arr = numpy_helper.to_array(init).reshape(-1)
        k = draw(st.integers(0, len(arr)))
        init.CopyFrom(numpy_helper.from_array(arr[:k].reshape(-1), init.name))
        what = f"{init.name} flattened to {k}"
    elif kind == "dtype":
        init = m.graph.initializer[draw(st.integers(0, len(m.graph.initializer) - 1))]
        init.data_type = draw(st.sampled_from([TensorProto.DOUBLE, TensorProto.INT8,
                                               TensorProto.INT64, TensorProto.FLOAT16,
                                               TensorProto.BOOL, TensorProto.STRING]))
        what = f"{init.name} dtype {init.data_type}"
    elif kind == "input":
        dims = m.graph.input[0].type.tensor_type.shape.dim
        i = draw(st.integers(0, len(dims) - 1))
        dims[i].dim_value = draw(st.integers(-2, 70000))
        what = f"input dim {i}={dims[i].dim_value}"
    elif kind == "drop":
        i = draw(st.integers(0, len(nodes) - 1))
        what = f"drop node {nodes[i].name}"
        del nodes[i]
    elif kind == "optype":
        n = nodes[draw(st.integers(0, len(nodes) - 1))]
        n.op_type = draw(st.sampled_from(["Relu", "Sigmoid", "MaxPool", "Flatten", "Gemm",
                                          "Conv", "Add", "Identity", "Softmax", "Clip"]))
        what = f"{n.name} -> {n.op_type}"
    elif kind == "value":
        init = m.graph.initializer[draw(st.integers(0, len(m.graph.initializer) - 1))]
        arr = numpy_helper.to_array(init).copy()
        idx = draw(st.integers(0, arr.size - 1))
        arr.reshape(-1)[idx] = draw(st.sampled_from([np.nan, np.inf, -np.inf, 3e38, 0.0,
                                                     -1e30]))
        init.CopyFrom(numpy_helper.from_array(arr.astype(np.float32), init.name))
        what = f"{init.name}[{idx}]"
    elif kind == "opset":
        m.opset_import[0].version = draw(st.integers(1, 30))
        what = f"opset {m.opset_import[0].version}"
    else:  # raw bytes: truncate or flip, at the protobuf level
        raw = bytearray(m.SerializeToString())
        pos = draw(st.integers(0, len(raw) - 1))
        if draw(st.booleans()):
            raw = raw[:pos]
            what = f"truncated at {pos}"
        else:
            raw[pos] ^= draw(st.integers(1, 255))
            what = f"byte {pos} flipped"
        return what, bytes(raw)  # type: ignore[return-value]
    return f"{kind}: {what}", m


@SETTINGS(40)
@given(onnx_mutation())
def test_mutated_onnx_models(mut) -> None:
    _, m = mut
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        path = root / "m.onnx"
        if isinstance(m, bytes):
            path.write_bytes(m)
        else:
            path.write_bytes(m.SerializeToString())
        run_contract([path, "--target", "ir", "--out", root / "o"], root, root / "o")


@SETTINGS(12)
@given(onnx_mutation())
def test_mutated_onnx_models_through_the_gpu_target(mut) -> None:
    """Mutations that survive the frontend must also survive conversion and simulation."""
    _, m = mut
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        path = root / "m.onnx"
        path.write_bytes(m if isinstance(m, bytes) else m.SerializeToString())
        run_contract([path, "--dataset", "digits", "--eval-samples", "8",
                      "--calibration-samples", "16", "--timesteps", "2", "--device", "cpu",
                      "--out", root / "o"], root, root / "o")


# ------------------------------------------------------------------------------ data files
@st.composite
def data_file(draw: st.DrawFn) -> dict[str, np.ndarray]:
    n = draw(st.integers(0, 6))
    shape = draw(st.sampled_from([(1, 8, 8), (1, 8, 8), (1, 8, 8), (8, 8), (1, 8, 9), (64,)]))
    dtype = draw(st.sampled_from([np.float32, np.float64, np.int32, np.uint8, np.bool_,
                                  np.complex64, np.float16]))
    fill = draw(st.sampled_from([0.5, np.nan, np.inf, 1e300, -3.0, 255]))
    with np.errstate(all="ignore"):
        x = np.full((n, *shape), fill).astype(dtype) if dtype is not np.bool_ else \
            np.ones((n, *shape), bool)
    arrays = {draw(st.sampled_from(["x", "x", "x", "X"])): x}
    if draw(st.booleans()):
        ylen = draw(st.sampled_from([n, n, max(n - 1, 0), n + 1]))
        label = draw(st.sampled_from([0, 3, 9, 10, -1, 1000]))
        ydt = draw(st.sampled_from([np.int64, np.int8, np.float32]))
        arrays["y"] = np.full((ylen,), label).astype(ydt)
    return arrays


@SETTINGS(25)
@given(data_file(), st.sampled_from(["--eval", "--calibration"]))
def test_mutated_data_files(arrays, flag) -> None:
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        f = root / "d.npz"
        np.savez(f, **arrays)
        run_contract([MODEL, flag, f, "--timesteps", "2", "--device", "cpu", "--out",
                      root / "o", "--target", "gpu" if flag == "--eval" else "ir"],
                     root, root / "o")


# ------------------------------------------------------------------------------ options
GOOD = {"--timesteps": ["1", "3", "5"], "--calibration-samples": ["1", "7", "100000"],
        "--eval-samples": ["1", "5", "100000"], "--alpha": ["0", "1", "0.25"],
        "--gn-members": ["1", "2", "256"], "--bistable-period": ["1", "2"],
        "--sd-delta": ["0.5", "1", "1e-6"], "--weight-bits": ["2", "8", "16"],
        "--batch-size": ["1", "5", "100000"], "--seed": ["0", "7", "2147483647"],
        "--neuron": ["if", "if-hard", "signed-if", "gn", "bistable", "sigma-delta"],
        "--norm": ["max", "p99"], "--dump-ir-after": ["all", "balance-thresholds"],
        "--pass": ["remove-identity", "fold-thresholds", "sync-shortcuts"],
        "--pipeline": ["fold-batchnorm,balance-thresholds", "remove-identity"],
        "--export": ["netx"], "--encoding": ["direct", "poisson"],
        "--weight-granularity": ["layer", "channel"]}
BAD = ["-1", "0", "2.5", "1e9", "nan", "inf", "-inf", "", "abc", "4294967296",
       "99999999999999999999", "x:y", "balance-thresholds{norm=p1}", "gn"]


@st.composite
def option(draw: st.DrawFn) -> tuple[str, str]:
    flag = draw(st.sampled_from(sorted(GOOD)))
    return flag, draw(st.sampled_from(GOOD[flag]) | st.sampled_from(BAD))


@SETTINGS(30)
@given(st.lists(option(), min_size=1, max_size=3))
def test_mutated_options(opts) -> None:
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        argv: list = [MODEL, "--dataset", "digits", "--eval-samples", "12",
                      "--calibration-samples", "32", "--timesteps", "2", "--device", "cpu",
                      "--out", root / "o"]
        for flag, value in opts:
            argv += [flag, value]
        run_contract(argv, root, root / "o")


@pytest.mark.parametrize("value", ["", ".", "..", "/", "a/../b", "~"])
def test_odd_out_values(value, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "keep.txt").write_text("x")
    out = tmp_path / value if value not in ("", "/") else Path("/nonexistent-i13")
    before = snapshot(tmp_path, tmp_path / "___")
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main([str(MODEL), "--target", "ir", "--out", value])
    assert rc in (0, 2), err.getvalue()
    if rc == 2:
        assert len(err.getvalue().strip().splitlines()) == 1
        assert snapshot(tmp_path, tmp_path / "___") == before
    else:
        assert (out / MARKER).is_file() or (Path(value).expanduser() / MARKER).is_file() \
            or (tmp_path / value / MARKER).is_file()
