"""The homes of the architecture, checked: one neuron registry a user can extend from outside the
package, a light ``import snncompile``, every registered pass conforming to the pass contract,
one CompiledNetwork contract on every target, and golden IR dumps of the example models."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import snncompile
from snncompile import neurons
from snncompile.backends.common import CompiledNetwork, SimResult
from snncompile.ir import Graph
from snncompile.ir.printer import format_graph
from snncompile.ir.serialize import to_dicts
from snncompile.ir.verify import verify
from snncompile.passes import PassContext, get_pass, registered
from snncompile.passes.pipelines import default_pipeline

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).resolve().parents[1] / "golden"


# ------------------------------------------------------------------------ a user's neuron model
def _scan_leaky(current: torch.Tensor, theta: torch.Tensor, alpha: float, members: int = 1,
                spike=None) -> torch.Tensor:
    """Leaky IF with subtractive reset: v = 0.9·v + I; s = [v ≥ θ]; v -= s·θ."""
    v = (alpha * theta).expand_as(current[0]).clone()
    out = []
    for t in range(current.shape[0]):
        v = 0.9 * v + current[t]
        s = (v >= theta).to(v.dtype)
        v = v - s * theta
        out.append(s)
    return torch.stack(out)


@pytest.fixture
def leaky_model():
    from snncompile.backends.gpu.neurons import NeuronModel

    spec = snncompile.register_neuron(snncompile.NeuronSpec(
        "leaky-if", "leaky IF (test)", equations="v = 0.9·v + I; s = [v ≥ θ]; v -= s·θ"))
    neurons.register_implementation("leaky-if", "gpu",
                                    NeuronModel("leaky-if", _scan_leaky, "leaky IF (test)"))
    yield spec
    neurons.unregister_neuron("leaky-if")


def test_a_neuron_model_declared_outside_the_package_runs_on_gpu(leaky_model, digits_cnn_onnx,
                                                                 digits_test):
    net = snncompile.compile(digits_cnn_onnx, target="gpu", dataset="digits", timesteps=16,
                             neuron="leaky-if")
    res = net.run(digits_test.x[:64], 16, progress=False)
    assert {op.neuron.model for _, op in net.graph.topo()
            if getattr(op, "neuron", None) is not None} == {"leaky-if"}
    assert res.spikes_per_sample() > 0
    assert res.accuracy_by_timestep(digits_test.y[:64])[-1] > 0.5  # leaky, but it classifies
    # the CLI's choices come from the registry too
    from snncompile.tools.cli import build_parser

    assert build_parser().parse_args(["m.onnx", "--neuron", "leaky-if"]).neuron == "leaky-if"


def test_a_model_without_a_loihi_implementation_fails_in_one_line(leaky_model, digits_cnn_onnx):
    with pytest.raises(snncompile.CompileError) as e:
        snncompile.compile(digits_cnn_onnx, target="loihi", dataset="digits", neuron="leaky-if")
    line = e.value.one_line()
    assert "leaky-if" in line and "loihi" in line and "\n" not in line


def test_unknown_neuron_model_lists_the_registry():
    with pytest.raises(snncompile.CompileError, match="choose from if, if-hard"):
        snncompile.CompileOptions(neuron="nope")


# ------------------------------------------------------------------------ light import, layering
def test_import_snncompile_is_light():
    code = ("import sys, snncompile, snncompile.ir, snncompile.options, snncompile.passes;"
            "bad = [m for m in ('torch', 'onnx', 'onnxruntime', 'lava') if m in sys.modules];"
            "print(bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stdout + res.stderr


def test_nothing_in_the_package_imports_the_cli():
    for path in (ROOT / "snncompile").rglob("*.py"):
        rel = path.relative_to(ROOT / "snncompile")
        if rel.parts[0] == "tools" or rel.name == "__main__.py":
            continue
        text = path.read_text()
        assert "import snncompile.tools" not in text and "from snncompile.tools" not in text, rel


# ------------------------------------------------------------------------ CompiledNetwork contract
@pytest.mark.parametrize("target", ["gpu", "loihi"])
def test_compile_returns_a_compiled_network(target, digits_cnn_onnx):
    net = snncompile.compile(digits_cnn_onnx, target=target, dataset="digits",
                             calibration_samples=64)
    assert isinstance(net, CompiledNetwork)


def test_the_loihi_reference_is_a_compiled_network(digits_cnn_onnx, digits_test, tmp_path):
    from snncompile.backends.loihi import compile_reference

    snn, _, _ = snncompile.convert(digits_cnn_onnx, target="loihi", dataset="digits",
                                   calibration_samples=64)
    ref = compile_reference(snn)
    assert isinstance(ref, CompiledNetwork)
    res = ref.run(digits_test.x[:8], 8, progress=False)
    assert isinstance(res, SimResult) and res.predictions.shape == (8, 8)
    ref.save(tmp_path)
    assert (tmp_path / "ir.json").exists()


# ------------------------------------------------------------------------ pass conformance
@pytest.fixture(scope="module")
def graphs(digits_cnn_onnx, digits_train):
    """Inputs for every pass: the frontend IR, the cleaned ANN IR and the spiking IR."""
    ann = snncompile.load_onnx(digits_cnn_onnx)
    opts = snncompile.CompileOptions()
    front, _, _ = snncompile.convert(ann, target="ir")
    snn, _, _ = snncompile.convert(ann, target="gpu", calibration=digits_train.take(64))
    assert [p.name for p in default_pipeline("ir", opts)][:1] == ["fold-batchnorm"]
    return {"frontend": ann, "ann": front, "snn": snn}


def _snapshot(g: Graph) -> tuple[str, dict[str, bytes]]:
    doc, arrays = to_dicts(g)
    return repr(doc), {k: np.asarray(v).tobytes() for k, v in arrays.items()}


@pytest.mark.parametrize("name", sorted(registered()))
def test_every_registered_pass_conforms(name, graphs, digits_train):
    """Kebab-case name, a docstring, never mutates its input, output verifies (on at least one
    of the graph forms it accepts)."""
    import re

    obj = registered()[name]
    assert re.fullmatch(r"[a-z][a-z0-9]*(-[a-z0-9]+)*", name)
    doc = (getattr(obj, "fn", None) or obj).__doc__
    assert doc and doc.strip(), f"pass {name} has no docstring"
    ran = 0
    for form, g in graphs.items():
        before = _snapshot(g)
        ctx = PassContext(calibration=digits_train.x[:64], labels=digits_train.y[:64])
        try:
            out = get_pass(name).run(g, ctx)
        except snncompile.CompileError:
            continue  # the pass does not take this form of graph (e.g. needs a spiking IR)
        assert _snapshot(g) == before, f"{name} changed its input ({form})"
        assert out is not g, f"{name} returned its input object ({form})"
        verify(out, stage=f"after {name}")
        ran += 1
    assert ran, f"{name} accepted none of the graph forms"


# ------------------------------------------------------------------------ golden IR dumps
@pytest.mark.parametrize("model", ["digits_cnn", "digits_cnn_q4"])
def test_golden_ir_dump(model, request):
    """``--target ir`` text of the example models, compared with tests/golden/<model>.ir
    (refresh with ``pytest --update-golden``)."""
    graph, _, _ = snncompile.convert(ROOT / "examples" / f"{model}.onnx", target="ir")
    text = format_graph(graph) + "\n"
    path = GOLDEN / f"{model}.ir"
    if request.config.getoption("--update-golden"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert text == path.read_text()


# ------------------------------------------------------------------------ declared once (issue 20)
def test_option_bounds_are_declared_once():
    """Types, choices and bounds of every option come from ``snncompile.options``' declarations:
    ``validate.py`` keeps no list of options (no ``"name": bound`` and no ``o.name``), and no
    bound is written out elsewhere."""
    from snncompile.finetune import METHODS
    from snncompile.options import DATA_OPTIONS, FINETUNE_OPTIONS, OPTIONS

    text = (ROOT / "snncompile" / "validate.py").read_text()
    for f in (*OPTIONS, *DATA_OPTIONS, *FINETUNE_OPTIONS):
        assert f'"{f.name}":' not in text and f"o.{f.name}" not in text, f.name
    for path in (ROOT / "snncompile").rglob("*.py"):
        if path.name != "options.py":
            src = path.read_text()
            assert "2**31" not in src and "MAX_SEED" not in src and "MAX_GN" not in src, path
    help_ = next(f for f in FINETUNE_OPTIONS if f.name == "finetune").metadata["help"]
    assert all(m in help_ for m in METHODS), help_


def test_no_function_over_80_lines():
    """Functions stay small (STYLE.md): at most 80 lines each in snncompile/ (docstring
    included); ruff's C901 bounds their complexity (pyproject.toml). No file is exempt."""
    import ast

    long = []
    for path in sorted((ROOT / "snncompile").rglob("*.py")):
        rel = path.relative_to(ROOT / "snncompile").as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > 80:
                    long.append(f"{rel}:{node.lineno} {node.name} ({n} lines)")
    assert not long, long
