"""``layerwise``: Fast-SNN's layer-wise fine-tuning (Hu et al.; ``snn_ft.py`` of
yangfan-hu/Fast-SNN, read for the procedure; our own code).

The converted SNN's error accumulates with depth: layer l sees the *spiking* rates of layer
l−1, not the ANN's activations, and so drifts further from the ANN at every layer. Fast-SNN
tunes the layers one at a time, from the input side, so that each layer's SNN output rate
matches the ANN activation given the SNN input it really receives:

    for each weighted spiking layer l (Conv2d / Dense with a neuron), in topological order:
        r_in  = mean_t of the current input of l in the SNN (time-averaged, T steps)
        r_out = θ_l · mean_t s_l(t)                       (the SNN's output rate)
        y     = clip(W_l ⋆ r_in + b_l, 0, θ_l)            (the layer's ANN function on r_in)
        ŷ     = y + (r_out − y).detach()                  (value: the SNN's rate; gradient: y's)
        loss  = mean (ŷ − a_l)²,  a_l = the ANN activation of l on the same images
        update W_l, b_l (Adam); write them into the simulator; next batch runs the new weights
    keep the layer's new weights only if its rate error on the data went down.

A Conv/Dense whose neuron moved behind a current max-pool (``--maxpool current``) is tuned on
the pool's output: ŷ_l = min(ReLU(maxpool(W_l r_{l−1} + b_l)), θ), the pool's ANN activation as
the target. Thresholds stay fixed (Fast-SNN does not tune its scale factor). Quantized layers are
re-quantized on their own grid. The per-layer rate error (MSE between the SNN rate and the ANN
activation, on the data, at T) before and after is in the result's history (``error_tuned``:
what tuning reached; ``error_after``: the final one, = before when reverted). Options:
``layerwise{epochs_per_layer=2}``; ``epochs`` of the config is used when not given.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from snncompile.finetune.training import (
    FinetuneConfig,
    FinetuneResult,
    TrainData,
    parse_options,
    resolve_device,
)
from snncompile.interp import maxpool, pad2d, record_activations
from snncompile.ir.diagnostics import CompileError, Diagnostic
from snncompile.ir.graph import Graph
from snncompile.ir.nodes import Conv2d, CurrentMaxPool2d, Dense, QuantSpec

Tensor = torch.Tensor


@dataclass(frozen=True)
class LayerwiseOptions:
    """Options of ``layerwise``."""

    epochs_per_layer: int = 0  # 0: the config's ``epochs``


def _requantize(w: np.ndarray, q: QuantSpec) -> np.ndarray:
    scale = np.asarray(q.scale, np.float64).reshape((-1,) + (1,) * (w.ndim - 1))
    lim = 2 ** (q.bits - 1) - 1
    return np.clip(np.rint(w / scale), -lim, lim) * scale


class _Probe:
    """Captures the input value of one lowered op during ``SpikingNetwork.simulate``."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.value: Tensor | None = None
        self.handle = module.register_forward_pre_hook(self._hook)

    def _hook(self, mod: torch.nn.Module, args: tuple[Any, ...]) -> None:
        self.value = args[0][0]


def _rates(net: Any, name: str, x: Tensor, steps: int,
           spk: str | None = None) -> tuple[Tensor, Tensor]:
    """(time-averaged input of layer ``name``, the time-averaged output θ·s of ``spk``, by
    default ``name`` itself) on batch x."""
    spk = spk or name
    mod = net.module.ops[net.module.keys[name]]
    probe = _Probe(mod)
    try:
        _, spikes = net.module.simulate(x, steps)
    finally:
        probe.handle.remove()
    v = probe.value
    assert v is not None
    if v.shape[0] != x.shape[0]:  # dynamic (T·B, ...): average over T
        v = v.reshape(steps, x.shape[0], *v.shape[1:]).mean(0)
    theta = net.module.theta(spk)
    out = spikes[spk].mean(0) * theta
    return v, out


def _spiking_output(ir: Graph, name: str) -> str | None:
    """The layer whose neurons fire for Conv/Dense ``name``: itself, or the current max-pool
    it alone feeds (``--maxpool current`` moved its neuron behind the pool); else None."""
    op = ir.op(name)
    if not isinstance(op, (Conv2d, Dense)):
        return None
    if op.neuron is not None:
        return name
    users = ir.users(name)
    pool = ir.op(users[0]) if len(users) == 1 else None
    if isinstance(pool, CurrentMaxPool2d) and pool.neuron is not None:
        return users[0]
    return None


def _ann_fn(op: Conv2d | Dense, w: Tensor, b: Tensor | None, r_in: Tensor) -> Tensor:
    if isinstance(op, Conv2d):
        return F.conv2d(pad2d(r_in, op.padding), w, b, op.stride, 0, op.dilation, op.groups)
    return F.linear(r_in, w, b)


def layerwise(ir: Graph, data: TrainData, config: FinetuneConfig) -> FinetuneResult:
    """Fast-SNN layer-wise fine-tuning (see the module docstring)."""
    from snncompile.backends.gpu import compile as gpu_compile
    from snncompile.options import CompileOptions

    opts: LayerwiseOptions = parse_options(LayerwiseOptions, config.options, "layerwise")
    epochs = opts.epochs_per_layer or config.epochs
    t0 = time.perf_counter()
    device = resolve_device(config.device)
    steps = config.timesteps
    teacher = config.teacher if config.teacher is not None else ir
    # a Conv feeding a current max-pool is trained on the pool's output: max_i of its rates
    outputs = {n: o for n, _ in ir.topo() if (o := _spiking_output(ir, n)) is not None}
    layers = list(outputs)
    if not layers:
        raise CompileError("nothing to fine-tune", [Diagnostic(
            "layerwise: the IR has no spiking Conv2d/Dense layer", hint="convert it first")])
    missing = [n for n in [*layers, *outputs.values()] if n not in teacher]
    if missing:
        raise CompileError("the teacher does not match the IR", [Diagnostic(
            f"layerwise: layers {', '.join(missing)} are not in the teacher graph")])
    acts = record_activations(teacher, data.x)
    x_all = torch.from_numpy(np.ascontiguousarray(data.x)).float()
    gen = torch.Generator().manual_seed(config.seed)
    g = ir.copy()
    net = gpu_compile(g, CompileOptions(device=str(device.type), batch_size=config.batch_size))
    history: list[dict[str, Any]] = []
    run = _Layers(net, g, outputs, x_all, acts, gen, steps, config, device)
    for name in layers:
        history.append(run.tune(name, epochs))
        h = history[-1]
        if config.progress:
            print(f"layerwise {name}: rate error {h['error_before']:.4g} -> "
                  f"{h['error_tuned']:.4g} ({'kept' if h['kept'] else 'reverted'})")
    return FinetuneResult(graph=g, method="layerwise", history=history,
                          seconds=time.perf_counter() - t0)




@dataclass
class _Layers:
    """The state ``layerwise`` tunes layer after layer: the gpu network ``net`` of the IR copy
    ``g`` (its weights are updated in place), each layer's spiking output, the inputs, the
    teacher's activations and the seeded generator of the batch order."""

    net: Any
    g: Graph
    outputs: dict[str, str]
    x_all: Tensor
    acts: dict[str, np.ndarray]
    gen: torch.Generator
    steps: int
    config: FinetuneConfig
    device: torch.device

    def error(self, name: str) -> float:
        """Mean squared difference of the layer's output rates and the teacher's values."""
        total, n = 0.0, 0
        chunk, spk = self.config.chunk_size, self.outputs[name]
        with torch.no_grad():
            for i in range(0, len(self.x_all), chunk):
                xb = self.x_all[i:i + chunk].to(self.device)
                _, out = _rates(self.net, name, xb, self.steps, spk)
                a = torch.from_numpy(self.acts[spk][i:i + chunk]).to(out)
                total += float(((out - a) ** 2).sum())
                n += out.numel()
        return total / max(n, 1)

    def tune(self, name: str, epochs: int) -> dict[str, Any]:
        """Train layer ``name`` (``fit``); keep the new weights only when they lower its rate
        error (re-quantized when the layer was), else restore them. Its history entry."""
        g, op = self.g, self.g.op(name)
        assert isinstance(op, (Conv2d, Dense))
        mod = self.net.module.ops[self.net.module.keys[name]]
        before = self.error(name)
        saved = (mod.weight.detach().clone(),
                 None if mod.bias is None else mod.bias.detach().clone())
        w, b, losses = self.fit(name, op, mod, epochs)
        after = self.error(name)
        kept = after < before
        if kept:
            weight = w.detach().cpu().double().numpy()
            if op.quant is not None:
                weight = _requantize(weight, op.quant)
                with torch.no_grad():
                    mod.weight.copy_(torch.from_numpy(weight).to(mod.weight))
            changes: dict[str, Any] = {"weight": weight.astype(op.weight.dtype)}
            if b is not None:
                changes["bias"] = b.detach().cpu().double().numpy().astype(op.bias.dtype)
            g.replace(name, **changes)
            after = self.error(name) if op.quant is not None else after
        else:
            with torch.no_grad():
                mod.weight.copy_(saved[0])
                if saved[1] is not None:
                    mod.bias.copy_(saved[1])
        tuned = after
        if not kept:
            after = before
        return {"layer": name, "error_before": before, "error_tuned": tuned,
                "error_after": after, "kept": kept,
                "loss_first": losses[0] if losses else None,
                "loss_last": losses[-1] if losses else None, "batch_losses": losses}

    def fit(self, name: str, op: Conv2d | Dense, mod: Any, epochs: int
            ) -> tuple[Tensor, Tensor | None, list[float]]:
        """Adam on the layer's weight and bias: its ANN function of the input rates, clipped at
        θ, with the spiking rates' values in the forward pass (straight-through), against the
        teacher's activations; the network's layer follows every step."""
        config = self.config
        w = torch.nn.Parameter(mod.weight.detach().clone())
        b = torch.nn.Parameter(mod.bias.detach().clone()) if mod.bias is not None else None
        opt = torch.optim.Adam([w] + ([b] if b is not None else []), lr=config.lr)
        spk = self.outputs[name]
        pool = self.g.op(spk) if spk != name else None
        theta = self.net.module.theta(spk)
        losses: list[float] = []
        for _ in range(epochs):
            perm = torch.randperm(len(self.x_all), generator=self.gen)
            for i in range(0, len(self.x_all), config.batch_size):
                idx = perm[i:i + config.batch_size]
                xb = self.x_all[idx].to(self.device)
                with torch.no_grad():
                    r_in, r_out = _rates(self.net, name, xb, self.steps, spk)
                z = _ann_fn(op, w, b, r_in)
                if pool is not None:  # the pool's neuron integrates max_i of the currents
                    z = maxpool(pool, z)
                y = torch.minimum(torch.relu(z), theta)
                y_hat = y + (r_out - y).detach()
                a = torch.from_numpy(self.acts[spk][idx.numpy()]).to(y)
                loss = F.mse_loss(y_hat, a)
                opt.zero_grad()
                loss.backward()
                opt.step()
                with torch.no_grad():
                    mod.weight.copy_(w)
                    if b is not None:
                        mod.bias.copy_(b)
                losses.append(float(loss.detach()))
        return w, b, losses
