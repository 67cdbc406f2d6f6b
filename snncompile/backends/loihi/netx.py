"""``--export netx``: the Loihi plan as a lava-dl netx HDF5 file (``network.net``).

netx (lava-dl 0.6.0, ``lava.lib.dl.netx.hdf5.Network``) reads sequential
input → conv/dense (→ flatten → dense) networks whose neurons are CUBA LIF: reset to zero,
spike when v > vth. So only what that format can express is written (layout: FORMATS.md):

- every population has one synapse, from the population before it (no residual Add, no delay
  lines), AvgPool already folded into the next conv or dense (the plan does that exactly);
- neurons are ``--neuron if-hard`` (stock LIF: iDecay = 4096 → du = 4095, vDecay = 0), with one
  threshold per layer (vThMant); the bias is an integer number of weight LSBs (netx uses
  bias_exp = 6);
- the readout becomes a dense CUBA layer with the largest threshold (131071), which does not
  fire in practice: its voltage is our Integrator's potential.

Anything else fails *before* the file is written, naming the layer and the reason. Weights are
the plan's integer mantissas (torch layout; netx flips and transposes conv kernels itself).
The file's attributes record how to drive it: ``input_frac_bits`` k (feed round(x·2^k)),
``input_message_bits`` (pass as ``Network(input_message_bits=...)``), ``reset_offset`` (pass
``reset_offset=1``, ``reset_interval=T``) and ``timesteps``.

Sigma-delta plans (``--neuron sigma-delta --export netx``) become netx SDNN layers, only when
the plan was built for netx (every payload unit is 64 weight LSBs, ``NETX_GRID_EXP``, because
netx's SigmaDelta sends ``delta >> 6``). Load with ``spike_exp=-6`` (then netx scales vth and
bias by 2^0: both are in weight LSBs, as in our plan) and no reset: netx's SDNN ignores
``reset_interval``, so run one sample per loaded Network and feed round(x·2^k) at the first
step only (attribute ``input_delta_coded``). The input layer has no neuron (the Network's input
port feeds the first synapse), the readout is netx's ``Sigma`` (``sigma_output``; no bias: our
potential is ``64·(sigma + readout_bias)``, ``readout_bias`` a top-level dataset).
What netx then computes is close to, not equal to, our sigma-delta (docs/neurons.md):
its layers integrate their bias from step 1, before the sample reaches them (ours reset each
layer when its sample arrives), and it truncates each delta instead of flooring the activation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from snncompile.backends.loihi.fixed import ACT_SHIFT, BIAS_MANT_MAX, NETX_GRID_EXP, VTH_MANT_MAX
from snncompile.backends.loihi.plan import LoihiPlan, Population
from snncompile.ir.diagnostics import CompileError, Diagnostic

INPUT_MESSAGE_BITS = 16
SPIKE_EXP = -ACT_SHIFT  # Network(spike_exp=-6): SDNN vth and bias in weight LSBs


def _problems(plan: LoihiPlan) -> list[Diagnostic]:
    bad: list[Diagnostic] = []
    if plan.input_affine is not None:  # a netx reader feeds round(x·2^k) as it is
        bad.append(Diagnostic(
            "the model transforms its input per channel ((x − mean) / std) before its first "
            "layer; a netx file has no place for it", node=plan.input_name,
            hint="normalise the data instead and export the model without it"))
    order = list(plan.pops)
    for i, name in enumerate(order[1:], 1):
        p = plan.pops[name]
        origin = p.origin or None
        syns = plan.synapses_into(name)
        if p.kind == "maxpool":
            bad.append(Diagnostic("a spiking MaxPool gate has no netx layer type", node=name,
                                  origin=origin, hint="use AvgPool"))
            continue
        if p.pool is not None:
            bad.append(Diagnostic("a current max-pool (CurrentMaxPool2d: a host process "
                                  "between synapses and neurons) has no netx layer type",
                                  node=name, origin=origin, hint="use AvgPool"))
            continue
        if len(syns) != 1 or syns[0].src != order[i - 1]:
            bad.append(Diagnostic(
                f"{len(syns)} incoming synapse groups from {sorted({s.src for s in syns})}: "
                "netx reads only sequential networks (no residual Add)", node=name,
                origin=origin))
            continue
        s = syns[0]
        if s.delay:
            bad.append(Diagnostic("needs a delay line (netx layers are sequential)", node=name,
                                  origin=origin))
        if p.graded and p.grid_exp != NETX_GRID_EXP:
            bad.append(Diagnostic(
                f"sigma-delta payload unit 2^(exp+{p.grid_exp}); netx sends delta >> 6 "
                f"(needs 2^(exp+{NETX_GRID_EXP}))", node=name, origin=origin,
                hint="build the plan for netx (--export netx does)"))
        if p.spiking and p.neuron.netx is None:
            what = p.neuron.netx_refusal or f"neuron model {p.kind!r}"
            bad.append(Diagnostic(
                f"{what} cannot be expressed: netx neurons are CUBA LIF "
                "(reset to zero, v > vth) or SDNN", node=name, origin=origin,
                hint="compile with --neuron if-hard to export netx"))
        elif p.spiking and len(np.unique(p.vth_mant)) > 1:
            bad.append(Diagnostic("one threshold per channel; netx has one vThMant per layer",
                                  node=name, origin=origin, hint="drop --channelwise"))
        if s.kind == "dense" and len(p.shape) != 1:
            bad.append(Diagnostic(f"a dense map into a {p.shape} layer (from {s.note}) has no "
                                  "netx layer type", node=name, origin=origin))
        mant = p.bias_mant * 2 ** (p.bias_exp - ACT_SHIFT)
        if np.abs(mant).max() > BIAS_MANT_MAX:
            bad.append(Diagnostic("bias exceeds netx's 13-bit mantissa at bias_exp 6",
                                  node=name, origin=origin))
        if len(p.shape) == 3 and not _per_channel(mant):
            bad.append(Diagnostic("bias differs within a channel (netx: per channel)",
                                  node=name, origin=origin))
    return bad


def _per_channel(b: np.ndarray) -> bool:
    return bool(np.all(b == b.reshape(b.shape[0], -1)[:, :1].reshape(-1, 1, 1)))


def export_netx(plan: LoihiPlan, path: str | Path, timesteps: int,
                check_only: bool = False) -> Path | None:
    """Write ``plan`` as a netx HDF5 file, or raise CompileError (before writing)."""
    bad = _problems(plan)
    if bad:
        raise CompileError("cannot export netx", bad)
    if check_only:
        return None
    import h5py

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    order = list(plan.pops)
    with h5py.File(path, "w") as f:
        f.attrs["writer"] = "snn-compile"
        f.attrs["input_frac_bits"] = plan.input_frac_bits
        f.attrs["input_message_bits"] = INPUT_MESSAGE_BITS
        f.attrs["timesteps"] = timesteps
        sdnn = plan.delta_coded
        if sdnn:  # no reset in netx's SDNN: one sample per loaded Network
            f.attrs["spike_exp"] = SPIKE_EXP
            f.attrs["input_delta_coded"] = True
            f.attrs["one_sample_per_network"] = True
        else:
            f.attrs["reset_offset"] = 1
        layers = f.create_group("layer")
        g = layers.create_group("0")
        g.create_dataset("type", data=np.bytes_("input"))
        g.create_dataset("shape", data=np.array(plan.pops[order[0]].shape))
        idx = 1
        for name in order[1:]:
            p = plan.pops[name]
            s = plan.synapses_into(name)[0]
            if s.kind == "dense" and len(plan.pops[s.src].shape) == 3:
                layers.create_group(str(idx)).create_dataset("type", data=np.bytes_("flatten"))
                idx += 1
            g = layers.create_group(str(idx))
            idx += 1
            g.create_dataset("type", data=np.bytes_(s.kind))
            g.create_dataset("shape", data=np.array(p.shape))
            g.create_dataset("weight", data=s.weight_int.astype(np.int64))
            mant = (p.bias_mant * 2 ** (p.bias_exp - ACT_SHIFT)).astype(np.int64)
            if sdnn and p.kind == "readout":
                f.create_dataset("readout_bias", data=mant)
            else:
                g.create_dataset("bias", data=mant[:, 0, 0] if len(p.shape) == 3 else mant)
            if s.kind == "conv":
                g.create_dataset("stride", data=np.array(s.stride))
                g.create_dataset("padding", data=np.array(s.padding))
                g.create_dataset("dilation", data=np.array(s.dilation))
                g.create_dataset("groups", data=s.groups)
            n = g.create_group("neuron")
            if sdnn:
                _sdnn_neuron(n, p)
                continue
            n.create_dataset("type", data=np.bytes_("CUBA"))
            n.create_dataset("iDecay", data=4096)
            n.create_dataset("vDecay", data=0)
            vth = VTH_MANT_MAX if p.kind == "readout" else int(p.vth_mant.flat[0])
            n.create_dataset("vThMant", data=vth)
            n.create_dataset("refDelay", data=1)
            n.create_dataset("gradedSpike", data=False)
    return path


def _sdnn_neuron(n: Any, p: Population) -> None:
    """netx SDNN neuron: ``Sigma`` for the readout, else ``SigmaDelta`` (ReLU) whose vThMant is
    vth rounded up to the payload unit (64): netx compares the unfloored delta, we the floored
    activation, and both fire a first delta at the same activations with that threshold."""
    n.create_dataset("type", data=np.bytes_("SDNN"))
    if p.kind == "readout":
        n.create_dataset("sigma_output", data=True)
        return
    unit = 2 ** ACT_SHIFT
    n.create_dataset("vThMant", data=-(-int(p.vth_mant.flat[0]) // unit) * unit)
