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
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from snncompile.ir.diagnostics import CompileError, Diagnostic
from snncompile.ir.fixed_point import ACT_SHIFT, BIAS_MANT_MAX, VTH_MANT_MAX, LoihiPlan

INPUT_MESSAGE_BITS = 16


def _problems(plan: LoihiPlan) -> list[Diagnostic]:
    bad: list[Diagnostic] = []
    order = list(plan.pops)
    for i, name in enumerate(order[1:], 1):
        p = plan.pops[name]
        origin = p.origin or None
        syns = plan.synapses_into(name)
        if p.kind == "maxpool":
            bad.append(Diagnostic("a spiking MaxPool gate has no netx layer type", node=name,
                                  origin=origin, hint="use AvgPool"))
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
        if p.kind in ("if", "signed-if", "gn", "bistable", "sigma-delta"):
            what = {"if": "reset by subtraction", "signed-if": "signed spikes",
                    "gn": "group neurons", "bistable": "bistable windows",
                    "sigma-delta": "sigma-delta (not yet exported)"}[p.kind]
            bad.append(Diagnostic(
                f"{what} cannot be expressed: netx neurons are CUBA LIF "
                "(reset to zero, v > vth)", node=name, origin=origin,
                hint="compile with --neuron if-hard to export netx"))
        if p.kind == "if-hard" and len(np.unique(p.vth_mant)) > 1:
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
        f.attrs["reset_offset"] = 1
        f.attrs["timesteps"] = timesteps
        layers = f.create_group("layer")
        g = layers.create_group("0")
        g.create_dataset("type", data=np.bytes_("input"))
        g.create_dataset("shape", data=np.array(plan.pops[order[0]].shape))
        idx = 1
        for i, name in enumerate(order[1:], 1):
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
            g.create_dataset("bias", data=mant[:, 0, 0] if len(p.shape) == 3 else mant)
            if s.kind == "conv":
                g.create_dataset("stride", data=np.array(s.stride))
                g.create_dataset("padding", data=np.array(s.padding))
                g.create_dataset("dilation", data=np.array(s.dilation))
                g.create_dataset("groups", data=s.groups)
            n = g.create_group("neuron")
            n.create_dataset("type", data=np.bytes_("CUBA"))
            n.create_dataset("iDecay", data=4096)
            n.create_dataset("vDecay", data=0)
            vth = VTH_MANT_MAX if p.kind == "readout" else int(p.vth_mant.flat[0])
            n.create_dataset("vThMant", data=vth)
            n.create_dataset("refDelay", data=1)
            n.create_dataset("gradedSpike", data=False)
    return path
