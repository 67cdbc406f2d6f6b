"""bias-calibration: shift each layer's bias so that its mean SNN output matches the ANN's.

Conversion error accumulates: a layer fed by quantized, time-varying spike trains fires on
average a little more or less than its ANN activation, and the next layer inherits that offset.
Li, Deng, Dong, Gong and Gu ("A Free Lunch From ANN: Towards Efficient, Accurate Spiking Neural
Networks Calibration", ICML 2021, Sec. 4.2 "bias correction") remove the offset layer by layer,
in topological order, on calibration data:

    e_c = E[a_c^ANN] − E[θ_c·n_c(T)/T]        (mean over samples and positions of channel c)
    b_c ← b_c + e_c

where a^ANN is the ANN's post-activation output and n_c(T) the spike count of the SNN layer at
the target T *given the spiking outputs of the already-calibrated layers before it*. The
expected SNN output then matches the ANN's per channel. Here one sequential simulation does it
(each layer is calibrated, re-simulated with its corrected bias, and then feeds the next), with
direct coding, ``samples`` calibration inputs, IF neurons with reset by subtraction (the model
every network has at this point of the pipeline: ``select-neurons`` runs later) and the MaxPool
gate of the simulators (per window and step, the unit with the largest cumulative input so far
passes, ties to the first unit in row-major order), or for a ``CurrentMaxPool2d`` the max of
the cumulative input currents (``passes/maxpool_current.py``), whose correction goes into the
bias of the Conv/Dense feeding it (max_i(C_i + t·e) = max_i C_i + t·e). Layers
without a bias (a spiking residual Add, a standalone ReLU) are simulated but not corrected.
Run it after ``balance-thresholds`` / ``initial-potential`` / ``threshold-search``: it needs
the final θ and α.

This is a layer-local torch simulation inside the pass (passes never import a backend); it
uses the ANN kernels of ``snncompile.interp`` for the linear ops.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from snncompile.interp import KERNELS, pad2d, record_activations
from snncompile.ir.diagnostics import CompileError, Diagnostic
from snncompile.ir.graph import Graph
from snncompile.ir.nodes import Conv2d, CurrentMaxPool2d, Dense, Input, Layer, MaxPool2d
from snncompile.passes.registry import PassContext, register_pass
from snncompile.pooling import cummax_current

Tensor = torch.Tensor


def _gate(op: MaxPool2d, x: Tensor, steps: int) -> Tensor:
    """MaxPool gate on x (T·B, C, H, W): the unit with the largest cumulative input passes."""
    xt = x.reshape(steps, -1, *x.shape[1:])
    score = pad2d(torch.cumsum(xt, 0).flatten(0, 1), op.padding, float("-inf"))
    flat = pad2d(x, op.padding, 0.0)
    _, idx = F.max_pool2d(score, op.kernel, op.stride, 0, op.dilation, return_indices=True)
    return torch.gather(flat.flatten(2), 2, idx.flatten(2)).reshape(idx.shape)


def _if_scan(cur: Tensor, theta: Tensor, alpha: float, steps: int) -> Tensor:
    """θ·s for the IF neuron (reset by subtraction, v(0) = α·θ) on cur (T·B, C, ...)."""
    c = cur.reshape(steps, -1, *cur.shape[1:])
    th = theta.reshape((1, -1) + (1,) * (c.dim() - 3))
    v = (alpha * th).expand_as(c[0]).clone()
    out = torch.empty_like(c)
    for t in range(steps):
        v.add_(c[t])
        torch.ge(v, th, out=out[t])
        v.addcmul_(out[t], th, value=-1.0)
    return (out * th).flatten(0, 1)


def _channel_mean(a: Tensor) -> Tensor:
    return a.transpose(0, 1).reshape(a.shape[1], -1).mean(1)


@register_pass("bias-calibration")
@dataclass(frozen=True)
class BiasCalibration:
    """Match each layer's mean SNN output to the ANN's by a bias shift (Li et al., ICML 2021)."""

    timesteps: int = 32
    samples: int = 128

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        if self.timesteps < 1 or self.samples < 1:
            raise CompileError("bad pass option", [Diagnostic(
                f"bias-calibration: timesteps={self.timesteps}, samples={self.samples}; "
                "both must be >= 1")])
        x = ctx.need_calibration("bias-calibration")[: self.samples]
        models = {op.neuron.model for _, op in graph.topo()
                  if isinstance(op, Layer) and op.neuron is not None}
        if models - {"if"}:
            raise CompileError("bias-calibration simulates IF neurons", [Diagnostic(
                f"the graph has {', '.join(sorted(models - {'if'}))} neurons",
                hint="put bias-calibration before select-neurons")])
        ann = record_activations(graph, x)
        g = graph.copy()
        notes: dict[str, Any] = {}
        steps = self.timesteps
        readout = graph.readout_name
        vals: dict[str, Tensor] = {}
        with torch.no_grad():
            for name, op in graph.topo():
                if isinstance(op, Input):
                    xb = torch.from_numpy(np.ascontiguousarray(x)).float()
                    vals[name] = xb.unsqueeze(0).expand(steps, *xb.shape).flatten(0, 1)
                    continue
                if name == readout:
                    break
                xs = [vals[i] for i in graph.inputs(name)]
                if isinstance(op, MaxPool2d):
                    vals[name] = _gate(op, xs[0], steps)
                    continue
                cur = (cummax_current(op, xs[0].unflatten(0, (steps, -1))).flatten(0, 1)
                       if isinstance(op, CurrentMaxPool2d) else KERNELS[type(op)](op, xs))
                if not (isinstance(op, Layer) and op.neuron is not None):
                    vals[name] = cur
                    continue
                theta = torch.from_numpy(op.neuron.threshold.astype(np.float32))
                out = _if_scan(cur, theta, op.neuron.alpha, steps)
                want = _channel_mean(torch.from_numpy(ann[name]).float())
                err = want - _channel_mean(out)
                # a CurrentMaxPool2d's neuron is corrected through the Conv/Dense before it: a
                # bias shift e_c of every candidate shifts their cumulative max by t·e_c
                fix = (graph.inputs(name)[0] if isinstance(op, CurrentMaxPool2d) else name)
                fop = g.op(fix)
                if isinstance(fop, (Conv2d, Dense)) and (
                        fix == name or fop.neuron is None and len(graph.users(fix)) == 1):
                    bias = (np.zeros(len(theta), np.float32) if fop.bias is None
                            else fop.bias.astype(np.float32))
                    g.replace(fix, bias=(bias + err.numpy()).astype(np.float32))
                    shape = (1, -1) + (1,) * (cur.dim() - 2)
                    out = _if_scan(cur + err.reshape(shape), theta, op.neuron.alpha, steps)
                    after = want - _channel_mean(out)
                    notes[name] = {"mean_abs_error_before": float(err.abs().mean()),
                                   "mean_abs_error_after": float(after.abs().mean())}
                vals[name] = out
        ctx.notes["bias-calibration"] = notes
        return g
