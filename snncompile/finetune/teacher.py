"""The teacher of fine-tuning: the ANN the spiking IR was converted from, in the IR's op names.

Why not the IR's own ANN mode. The converted IR run as an ANN (``interp.run_ann_torch``: each
layer its activation, neurons ignored) is the ANN only while conversion changed nothing but
neurons. ``bias-calibration`` (Li et al. 2021, chosen by the tuner at small T) changes the biases
themselves, b_c ← b_c + e_c, so that the *SNN's* mean output matches the ANN's; run as an ANN
the calibrated IR computes ANN(b + e) ≠ ANN(b). Distilling towards it (the layer targets a_l
and the logits z of ``distill``) pulls the SNN from the ANN by that shift: fine-tuning undoes
the calibration and overshoots (issue 22: a MaxPool MNIST CNN at T = 4 fell from 98.70 % to
98.33 % on digits, 99.20 % → 97.75 % on MNIST). ``quantize-weights`` likewise makes the IR's
ANN mode the quantized ANN, not the ANN.

So the teacher is built from the ANN graph itself (``teacher_for``): the front passes the
pipelines start with (``passes.pipelines.FRONT``: fold-batchnorm, remove-identity,
fuse-activations, and ``maxpool-current`` where the IR has a current max-pool — exact in the
ANN, max∘f = f∘max) give the ops the IR's names. It is used when it matches the IR: every
spiking layer and the readout exist in it with the same op type and shape, and on a few
samples each of those values has the same scale as in the IR's ANN mode (L2 norms within a
factor ``UNITS`` = 2), which bias shifts and weight quantization keep and a change of units
does not (``fold-thresholds`` divides every layer by its θ: there the IR's own ANN mode, in the
folded units, stays the teacher, as it is exact for that reparametrisation). ``teacher_for`` returns
the graph and a one-line note of what it chose.
"""

from __future__ import annotations

import numpy as np
import torch

from snncompile.interp import run_ann_torch
from snncompile.ir.graph import Graph
from snncompile.ir.nodes import CurrentMaxPool2d, Layer

UNITS = 2.0  # the IR's ANN-mode values may be this many times larger or smaller than the ANN's


def _front(ann: Graph, ir: Graph) -> Graph:
    from snncompile.passes import PassManager
    from snncompile.passes.maxpool_current import maxpool_current
    from snncompile.passes.pipelines import FRONT

    pools = [maxpool_current] if any(isinstance(op, CurrentMaxPool2d)
                                     for _, op in ir.topo()) else []
    return PassManager([*FRONT, *pools]).run(ann)


def _needed(ir: Graph) -> list[str]:
    """The ops a distillation reads from its teacher: spiking layers and the readout."""
    out = [n for n, op in ir.topo() if isinstance(op, Layer) and op.neuron is not None]
    return out + [ir.readout_name]


def _mismatch(teacher: Graph, ir: Graph, x: np.ndarray) -> str | None:
    """Why ``teacher`` cannot teach ``ir`` (None: it can)."""
    names = set(teacher.nx.nodes)
    for n in _needed(ir):
        if n not in names:
            return f"the ANN has no op {n}"
        if type(teacher.op(n)) is not type(ir.op(n)) or teacher.shape(n) != ir.shape(n):
            return f"the ANN's {n} is not the IR's"
    x = np.asarray(x[:16], np.float32)
    if x.ndim == len(ir.shape(ir.input_name)) + 2:  # event frames (N, T, *in): the ANN's view
        x = x.mean(1)
    xb = torch.from_numpy(np.ascontiguousarray(x))
    with torch.no_grad():
        _, a = run_ann_torch(teacher, xb, record=True)
        _, b = run_ann_torch(ir, xb, record=True)
    for n in _needed(ir):
        ratio = float(b[n].norm() / a[n].norm().clamp_min(1e-12))
        if not 1 / UNITS <= ratio <= UNITS:
            return f"the IR's {n} is in other units than the ANN's (norm ratio {ratio:.2f})"
    return None


def teacher_for(ann: Graph | None, ir: Graph, x: np.ndarray) -> tuple[Graph, str]:
    """(teacher, note): the ANN ``ann`` (frontend output) in ``ir``'s op names, or ``ir`` itself
    (its ANN mode) when no ANN is given or it does not match (module docstring)."""
    if ann is None:
        return ir, "the IR's ANN mode (no ANN given)"
    has_neurons = any(isinstance(op, Layer) and op.neuron is not None for _, op in ann.topo())
    if has_neurons:
        return ann, "the given teacher"
    teacher = _front(ann, ir)
    why = _mismatch(teacher, ir, x)
    if why is not None:
        return ir, f"the IR's ANN mode ({why})"
    return teacher, "the ANN"
