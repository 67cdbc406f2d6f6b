"""Memory-bounded simulation (issue 12): time chunks carry every state, so a run in chunks of any
size gives the spikes of one T-step run bit for bit; ``--memory-budget`` picks batch pieces and
chunks; the ANN interpreter drops values after their last reader."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import snncompile
from snncompile.backends.gpu import compile as gpu_compile
from snncompile.interp import batch_for, run_ann
from snncompile.ir.diagnostics import CompileError
from snncompile.memory import (
    Footprint,
    Pieces,
    plan_pieces,
)
from snncompile.options import CompileOptions, parse_bytes
from snncompile.tools.cli import main

import build

MODELS = ("if", "if-hard", "signed-if", "gn", "bistable", "sigma-delta")
T = 6


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return np.random.default_rng(0).random((5, 1, 8, 8), dtype=np.float32)


def _snn(kind: str, model: str, x: np.ndarray):
    # "cnn": its MaxPool becomes a current max-pool (the default); "cnn-gate": the spike gate
    g = getattr(build, kind.removesuffix("-gate"))(np.random.default_rng(1))
    ir, _, _ = snncompile.convert(g, calibration=x, neuron=model, bistable_period=2,
                                  gn_members=3,
                                  maxpool="gate" if kind.endswith("-gate") else "current")
    return ir


def _run(ir, x, pieces: Pieces, **opts):
    net = gpu_compile(ir, CompileOptions(device="cpu", timesteps=T, **opts))
    net.plan = lambda steps, batch, record=False: pieces  # the schedule under test
    return net.run(x, record=True, progress=False)


def _same(a, b) -> None:
    assert a.spike_trains.keys() == b.spike_trains.keys()
    for k in a.spike_trains:
        np.testing.assert_array_equal(a.spike_trains[k], b.spike_trains[k], err_msg=k)
        np.testing.assert_array_equal(a.layer_spikes[k], b.layer_spikes[k], err_msg=k)
    np.testing.assert_array_equal(a.potentials, b.potentials)
    np.testing.assert_array_equal(a.predictions, b.predictions)
    np.testing.assert_array_equal(a.synops, b.synops)


@pytest.mark.parametrize("kind", ["cnn", "cnn-gate", "residual"])  # cnn has a MaxPool
@pytest.mark.parametrize("model", MODELS)
def test_time_chunks_are_bit_exact(kind, model, x):
    ir = _snn(kind, model, x)
    ref = _run(ir, x, Pieces(len(x), T))  # today's schedule: the whole batch, all T at once
    assert sum(v.sum() for v in ref.layer_spikes.values()) > 0
    for pieces in (Pieces(1, 1), Pieces(2, 4), Pieces(5, 5)):
        _same(ref, _run(ir, x, pieces))


def test_time_chunks_poisson_input(x):
    ir = _snn("cnn", "if", x)
    ref = _run(ir, x, Pieces(len(x), T), encoding="poisson", seed=3)
    _same(ref, _run(ir, x, Pieces(2, 2), encoding="poisson", seed=3))


def test_chunks_keep_the_constant_input_current(x, monkeypatch):
    """Direct coding: the first layer's current is computed once per piece, not per chunk."""
    ir = _snn("residual", "if", x)
    net = gpu_compile(ir, CompileOptions(device="cpu", timesteps=T))
    first = net.module.ops[net.module.keys["stem"]]
    calls: list[int] = []
    orig = first.forward
    monkeypatch.setattr(first, "forward", lambda xs, steps: calls.append(1) or orig(xs, steps))
    net.plan = lambda steps, batch, record=False: Pieces(len(x), 2)
    net.run(x, progress=False)
    assert len(calls) == 1


def test_chunked_simulate_under_autograd(x):
    """The training path: chunks give the same potentials and gradients."""
    from snncompile.finetune.differentiable import DifferentiableSNN

    ir = _snn("residual", "if", x)
    xt = torch.from_numpy(x)
    outs, grads = [], []
    for chunk in (None, 4):
        d = DifferentiableSNN(ir)
        pot, _ = d.simulate(xt, T, chunk=chunk)
        pot.sum().backward()
        outs.append(pot.detach())
        grads.append(next(iter(d.weights.values()))["weight"].grad.clone())
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-6)


def test_budget_picks_chunks_and_keeps_the_spikes(x, caplog):
    ir = _snn("cnn", "gn", x)
    ref = _run(ir, x, Pieces(len(x), T))
    # a budget below what the process holds: one sample × one step at a time, and a warning
    net = gpu_compile(ir, CompileOptions(device="cpu", timesteps=T, memory_budget="1K"))
    with caplog.at_level("WARNING", logger="snncompile"):
        res = net.run(x, record=True, progress=False)
    assert net.pieces == Pieces(1, 1) and "memory budget" in caplog.text
    _same(ref, res)
    big = gpu_compile(ir, CompileOptions(device="cpu", timesteps=T, memory_budget="8G"))
    big.run(x, progress=False)
    assert big.pieces == Pieces(len(x), T)


@pytest.mark.parametrize("model", ["if", "signed-if"])
def test_final_potential_in_pieces_is_the_whole_batch_run(model, x):
    # the tuner scores candidates with final_potential: pieces of the evaluation's plan
    ir = _snn("residual", model, x)
    module = gpu_compile(ir, CompileOptions(device="cpu", timesteps=T)).module
    xb = torch.from_numpy(x)
    whole = module.simulate(xb, T)[0][-1]
    assert module.plan(T, len(x), "1K") == Pieces(1, 1)  # one sample, one step at a time
    torch.testing.assert_close(module.final_potential(xb, T, "1K"), whole, rtol=0, atol=0)
    torch.testing.assert_close(module.final_potential(xb, T), whole, rtol=0, atol=0)


def test_plan_pieces():
    fp = Footprint(row_bytes=1000, sample_bytes=500, widest=10)
    assert plan_pieces(fp, 32, 8, budget=10**9, held=0, itemsize=4) == Pieces(8, 32)
    assert plan_pieces(fp, 32, 8, budget=70_000, held=0, itemsize=4) == Pieces(2, 32)
    assert plan_pieces(fp, 32, 8, budget=10_600, held=100, itemsize=4) == Pieces(1, 10)
    assert plan_pieces(fp, 32, 8, budget=10, held=100, itemsize=4) == Pieces(1, 1)  # over


def test_parse_bytes_and_bad_budget():
    assert parse_bytes("4G") == 4 * 2**30 and parse_bytes("512m") == 512 * 2**20
    assert parse_bytes("1.5K") == 1536 and parse_bytes("3MiB") == 3 * 2**20
    assert parse_bytes("100") == 100
    for bad in ("x", "4Q", "0", "-1G"):
        with pytest.raises(CompileError, match="memory_budget"):
            CompileOptions(memory_budget=bad)


def test_one_memory_module():
    """Issue 20: one reading of the free memory (``snncompile.memory.available_bytes``), the
    run estimate beside it, and ``memory_budget`` parsed once, to bytes."""
    from pathlib import Path

    from snncompile import memory, validate

    root = Path(memory.__file__).parent
    readers = sorted(str(p.relative_to(root)) for p in root.rglob("*.py")
                     if "/proc/meminfo\")" in p.read_text() or "mem_get_info(" in p.read_text())
    assert readers == ["memory.py"], readers
    assert not hasattr(validate, "available_bytes") and not hasattr(validate, "run_memory")
    o = CompileOptions(memory_budget="1.5K")
    assert o.memory_bytes == 1536 and "memory_bytes" in vars(o)  # parsed in __post_init__
    assert CompileOptions().memory_bytes is None
    assert memory.budget_bytes(o.memory_bytes) == 1536 == memory.budget_bytes("1.5K")
    assert memory.available_bytes() > 0 and memory.available_bytes(torch.device("cpu")) > 0


def test_cli_bad_budget(capsys):
    assert main(["--dataset", "digits", "--target", "gpu", "--memory-budget", "12Q",
                 "examples/digits_cnn.onnx"]) == 2
    assert "memory_budget" in capsys.readouterr().err


def test_run_ann_bounded_batches(x):
    g = build.residual(np.random.default_rng(1))
    g2 = build.residual(np.random.default_rng(1))
    ref = run_ann(g, x)
    assert batch_for(g2, 1, 1024) == 1
    # one sample at a time (float32 kernels round by batch size: equal to the last bits)
    np.testing.assert_allclose(run_ann(g2, x, max_bytes=1), ref, rtol=1e-5, atol=1e-6)


def test_loihi_reference_batches_within_the_budget(x):
    """The bit-exact Loihi reference (not chunked in time) bounds its batch by the budget."""
    from snncompile.backends.loihi import compile_reference

    g = build.cnn(np.random.default_rng(1))
    ir, _, _ = snncompile.convert(g, target="loihi", calibration=x)
    ref = compile_reference(ir, CompileOptions(timesteps=T)).run(x, record=True, progress=False)
    net = compile_reference(ir, CompileOptions(timesteps=T, memory_budget="1K"))
    assert net._batch(T, True) == 1
    res = net.run(x, record=True, progress=False)
    for k in ref.spike_trains:
        np.testing.assert_array_equal(ref.spike_trains[k], res.spike_trains[k], err_msg=k)
    np.testing.assert_array_equal(ref.potentials, res.potentials)
