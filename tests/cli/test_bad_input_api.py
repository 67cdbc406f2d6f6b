"""Issue 22, the Python API: what the CLI refuses in one line, the API refuses with one
``CompileError`` (or ``RuntimeFault``) that says what and where: labels given to the scoring
functions, pipeline entries, pass options, ``save`` over a user's file, ``load`` of a damaged
``ir.json`` (fuzzed with hypothesis: any damage is a CompileError, never another exception)."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import snncompile
from snncompile.evaluate import ann_accuracy
from snncompile.ir import CompileError, load, save
from snncompile.ir.diagnostics import RuntimeFault
from snncompile.passes.balance_thresholds import BalanceThresholds
from snncompile.passes.quantize_weights import QuantizeWeights

from build import cnn

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "examples" / "digits_cnn.onnx"


@pytest.fixture(scope="module")
def net(digits_train):
    return snncompile.compile(MODEL, calibration=digits_train.x[:64], no_tune=True,
                              timesteps=3, device="cpu")


# ------------------------------------------------------------------------------ scoring
def test_scoring_refuses_labels_that_would_only_give_a_wrong_number(net, digits_test):
    x, y = digits_test.x[:10], digits_test.y[:10]
    res = net.run(x, progress=False)
    good = res.accuracy_by_timestep(y)
    assert good.shape == (3,) and np.array_equal(good, res.accuracy_by_timestep(list(y)))
    for labels, word in ((y[:1], r"\(1,\)"), (y.astype(str), "<U"), (y + 0.5, "float"),
                         (np.full(10, 10), "label 10"), (np.full(10, -1), "label -1"),
                         (y.reshape(2, 5), r"\(2, 5\)")):
        with pytest.raises(CompileError, match=word):
            res.accuracy_by_timestep(labels)
    ann = snncompile.load_onnx(MODEL)
    assert 0.5 < ann_accuracy(ann, x, y) <= 1.0
    for labels, word in ((y[:3], r"\(3,\)"), (y.astype(str), "<U"), (y * 1.5, "float")):
        with pytest.raises(CompileError, match=word):
            ann_accuracy(ann, x, labels)


# ------------------------------------------------------------------------------ pipelines
@pytest.mark.parametrize("entry, words", [
    (123, ["passes[1]", "123", "int"]),
    (None, ["passes[1]", "None"]),
    (BalanceThresholds, ["passes[1]", "class BalanceThresholds"]),
    (lambda g, c: g, ["passes[1]", "function"]),
])
def test_compile_names_a_bad_pipeline_entry_and_its_index(entry, words, digits_train):
    with pytest.raises(CompileError) as e:
        snncompile.compile(MODEL, target="ir", passes=["fold-batchnorm", entry],
                           calibration=digits_train.x[:16])
    for w in words:
        assert w in e.value.one_line(), e.value.one_line()


@pytest.mark.parametrize("make, words", [
    (lambda: BalanceThresholds(norm=None), ["pass 'balance-thresholds'", "norm", "one of"]),
    (lambda: BalanceThresholds(norm=3), ["pass 'balance-thresholds'", "norm", "one of"]),
    (lambda: BalanceThresholds(channelwise="no"),
     ["pass 'balance-thresholds'", "channelwise='no'", "expected a bool"]),
    (lambda: QuantizeWeights(bits=4.5), ["pass 'quantize-weights'", "bits=4.5",
                                          "expected an int"]),
    (lambda: QuantizeWeights(bits=True), ["quantize-weights", "bits=True"]),
])
def test_pass_options_of_the_wrong_type_name_the_pass(make, words, digits_train):
    """``channelwise="no"`` was taken as true (a non-empty string), silently."""
    with pytest.raises(CompileError) as e:
        snncompile.compile(MODEL, target="ir", passes=["fuse-activations", make()],
                           calibration=digits_train.x[:16])
    for w in words:
        assert w in e.value.one_line(), e.value.one_line()


def test_a_pass_calling_sys_exit_is_a_runtime_fault_naming_it(digits_train):
    @snncompile.register_pass("exits-i22")
    def exits(graph, ctx):
        raise SystemExit(4)

    try:
        with pytest.raises(RuntimeFault, match=r"pass 'exits-i22' called sys.exit\(4\)"):
            snncompile.compile(MODEL, target="ir", passes=["fold-batchnorm", "exits-i22"],
                               calibration=digits_train.x[:16])
    finally:
        snncompile.passes.unregister_pass("exits-i22")


# ------------------------------------------------------------------------------ save / load
def test_save_never_overwrites_a_users_file(net, tmp_path):
    f = tmp_path / "precious.txt"
    f.write_text("mine")
    with pytest.raises(CompileError, match="is a file, not a folder"):
        net.save(f)
    user = tmp_path / "user"
    user.mkdir()
    (user / "ir.json").write_text("my notes")
    with pytest.raises(CompileError, match="not from an earlier save"):
        net.save(user)
    with pytest.raises(CompileError, match="not from an earlier save"):
        save(net.graph, user)
    assert f.read_text() == "mine" and (user / "ir.json").read_text() == "my notes"
    assert sorted(p.name for p in user.iterdir()) == ["ir.json"]
    out = tmp_path / "o"
    net.save(out)
    net.save(out)  # an earlier save is replaced
    assert load(out).names() == net.graph.names()


def _saved(tmp_path: Path) -> tuple[Path, dict]:
    rng = np.random.default_rng(0)
    pm = snncompile.PassManager.from_specs(snncompile.pipeline_for(
        "gpu", snncompile.CompileOptions()))
    g = pm.run(cnn(rng), snncompile.PassContext(
        calibration=rng.random((8, 1, 8, 8), dtype=np.float32)))
    d = tmp_path / "ir"
    save(g, d)
    return d, json.loads((d / "ir.json").read_text())


def _load_with(d: Path, doc: dict) -> str:
    (d / "ir.json").write_text(json.dumps(doc))
    with pytest.raises(CompileError) as e:
        load(d)
    return e.value.one_line()


def _node(doc: dict, name: str) -> dict:
    return next(n for n in doc["nodes"] if n["name"] == name)


@pytest.mark.parametrize("edit, words", [
    (lambda d: _node(d, "conv1").update(op="Conv3d"), ["conv1", "unknown op type 'Conv3d'"]),
    (lambda d: _node(d, "conv1").pop("attrs"), ["conv1", "'attrs' is missing"]),
    (lambda d: _node(d, "conv1")["attrs"].update(stride="x"), ["conv1", "stride", "2 ints"]),
    (lambda d: _node(d, "conv1")["attrs"].update(stride=[0, 0]), ["conv1", "stride (0, 0)"]),
    (lambda d: _node(d, "conv1")["attrs"].update(groups=True), ["conv1", "groups", "an int"]),
    (lambda d: _node(d, "conv1")["attrs"].update(bogus=1), ["conv1", "unknown field 'bogus'"]),
    (lambda d: _node(d, "conv1")["attrs"].pop("weight"), ["conv1", "missing field 'weight'"]),
    (lambda d: _node(d, "conv1")["attrs"].update(weight={"$array": "nope"}),
     ["conv1", "weight", "'nope' is not in ir.npz"]),
    (lambda d: _node(d, "conv1")["attrs"].update(weight={"$array": "conv1.bias"}),
     ["conv1", "weight must be 4-D"]),
    (lambda d: _node(d, "conv1")["attrs"]["neuron"].update(threshold=5),
     ["conv1", "neuron.threshold=5", "an array"]),
    (lambda d: _node(d, "conv1")["attrs"]["neuron"].update(alpha=float("nan")),
     ["conv1", "alpha=nan must be finite"]),
    (lambda d: _node(d, "conv1")["attrs"]["neuron"].update({"$type": "Synapse"}),
     ["conv1", "neuron"]),
    (lambda d: _node(d, "pool1")["attrs"].update(kernel=[9, 9]), ["pool1", "empty dimension"]),
    (lambda d: _node(d, "pool1").update(shape=[4, 3, 3]), ["pool1", "shape [4, 3, 3] saved"]),
    (lambda d: _node(d, "input")["attrs"].update(shape=[0, 8, 8]), ["input", "(0, 8, 8)"]),
    (lambda d: d.update(nodes=3), ["'nodes' is int"]),
    (lambda d: d.update(version=99), ["version 99"]),
    (lambda d: d["nodes"].insert(0, "conv1"), ["nodes[0] is str"]),
])
def test_load_names_the_bad_field_and_node(edit, words, tmp_path):
    d, doc = _saved(tmp_path)
    edit(doc)
    line = _load_with(d, doc)
    for w in words:
        assert w in line, line


_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-3, 2**40), st.floats(),
                  st.text(max_size=4), st.lists(st.integers(-2, 4), max_size=5),
                  st.sampled_from([{"$array": "conv1.weight"}, {"$array": "fc1.bias"},
                                   {"$array": 7}, {"$type": "Neuron"}, {"$type": ["Neuron"]},
                                   {"$type": "Activation", "hi": -1.0}]))
_VALUE = st.recursive(_LEAF, lambda c: st.one_of(
    st.lists(c, max_size=4),
    st.dictionaries(st.sampled_from(["$type", "$array", "hi", "model", "threshold", "x"]), c,
                    max_size=3)), max_leaves=6)


def _paths(o: object, p: tuple = ()) -> list[tuple]:
    out = [p]
    if isinstance(o, dict):
        for k, v in o.items():
            out += _paths(v, (*p, k))
    elif isinstance(o, list):
        for i, v in enumerate(o):
            out += _paths(v, (*p, i))
    return out


def test_fuzzed_ir_json_loads_or_is_one_compile_error(tmp_path_factory):
    """Any change to a saved ir.json (a value replaced by another JSON value, a key deleted)
    loads as a valid graph or is one CompileError; never another exception."""
    d, doc = _saved(tmp_path_factory.mktemp("fuzz"))
    paths = [p for p in _paths(doc) if p]

    @settings(max_examples=300, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(st.lists(st.tuples(st.sampled_from(paths), st.one_of(_VALUE, st.just(KeyError))),
                    min_size=1, max_size=3))
    def fuzz(edits):
        bad = copy.deepcopy(doc)
        for path, v in edits:
            o = bad
            try:
                for k in path[:-1]:
                    o = o[k]
                if v is KeyError:
                    del o[path[-1]]
                else:
                    o[path[-1]] = v
            except (KeyError, IndexError, TypeError):
                continue
        (d / "ir.json").write_text(json.dumps(bad))
        try:
            g = load(d)
        except CompileError as e:
            assert "\n" not in e.one_line()
        else:
            g.summary()
            snncompile.verify(g)

    try:
        fuzz()
    finally:
        shutil.rmtree(d)
