"""Loihi 2 number formats, and the fixed-point half of the plan (``plan.py`` builds the graph half).

Per population B with a per-layer exponent e_B (unit u_B = 2^e_B), what Lava's ``fixed_pt``
models and Loihi 2 compute:

    weights   q = 2·round(W_eff / (2·u_B)),  |q| ≤ 254   (8-bit mantissa m = q/2; Lava's
              mixed-sign Dense drops the LSB, so even values are exact in Dense and Conv)
    e_B       smallest integer with max|W_eff| / 2^e_B ≤ 254, max θ / 2^e_B ≤ VTH_TARGET and
              max|b| / 2^e_B ≤ 4095 (the bias fits its mantissa at exponent 6)
    vth       round(θ / u_B)  (17-bit mantissa; the neuron compares with vth << 6)
    bias      b·64/u_B as bias_mant << bias_exp (13-bit signed mantissa; exponent 6, or 7
              when it does not fit: an integer number of weight LSBs, as netx stores it)
    v_init    round(α · vth · 64)  (24-bit state; models that start at rest: 0)
    input     x_int = round(x · 2^k), k ≤ 8 fractional bits, chosen so that the first layer's
              threshold fits VTH_TARGET: the input current is an integer on the first layer's
              scale (u_first = 2^(e_w − k)).

``VTH_TARGET = 2^15`` keeps v ≤ (vth + a)·64 well inside the 24-bit state. Graded (sigma-delta)
populations send deltas of their ReLU activation in a payload unit 2^(e_B + g_B), 1/2..1/4 of
the delta threshold (``_choose_grid``); synapses from them carry W·2^(e_B + g_B) instead of
W·θ_B, and the delta threshold targets ``SD_VTH_TARGET`` so activations up to 2^7 delta
thresholds fit the 24-bit state. Every value that had to be rounded or clipped is counted in
``LoihiPlan.counts`` (per population).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from snncompile.neurons import SIGNED_EPS

if TYPE_CHECKING:
    from snncompile.backends.loihi.plan import LoihiPlan, Population, Synapse

ACT_SHIFT = 6  # Lava/Loihi: a_in << 6 (MSB alignment with the 24-bit state)
VTH_SHIFT = 6  # the threshold mantissa is compared as vth << 6
STATE_MAX = 2 ** 23 - 1  # 24-bit signed state (saturating)
WEIGHT_MAX = 254  # 8-bit mantissa m ∈ [-127, 127] stored as 2m
VTH_MANT_MAX = 2 ** 17 - 1
VTH_TARGET = 2 ** 15
BIAS_MANT_MAX = 4095  # 13-bit signed
BIAS_EXP_MAX = 7  # 3-bit
INPUT_FRAC_MAX = 8  # at most 8 fractional bits for the analog input
INPUT_MAX = 2 ** 15 - 1  # input payload: 16-bit signed graded message
DENSE_LIMIT = 2 ** 25  # entries of a dense synapse matrix built by linearization
SD_MAX = 2 ** 23 - 64  # sigma-delta state bound: a multiple of 64 (lava_models/lowlatency.py)
SD_VTH_TARGET = 2 ** 10  # sigma-delta: act up to 2^17 units = 2^7 delta thresholds (8θ at δ=1/16)
NETX_GRID_EXP = 6  # lava-dl netx SDNN sends delta >> 6: a payload unit of 64 weight LSBs


def _scale_in(w: np.ndarray, theta: np.ndarray | None, groups: int = 1) -> np.ndarray:
    """W_eff = W · θ_src per input channel (conv weight (Co, Ci/g, kh, kw))."""
    if theta is None:
        return w.astype(np.float64)
    co, cig = w.shape[:2]
    th = np.broadcast_to(theta, (cig * groups,)) if theta.size == 1 else theta
    out = w.astype(np.float64).copy()
    for o in range(co):
        g = o // (co // groups)
        out[o] *= th[g * cig:(g + 1) * cig].reshape(-1, 1, 1)
    return out


def _round_even(w: np.ndarray, unit: float) -> np.ndarray:
    return 2.0 * np.rint(w / (2.0 * unit))


def _bias_fixed(b_state: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, int]:
    """b (state units) -> (mant, exp, rounded count, clipped count), per element.

    The exponent is at least ACT_SHIFT: the bias is an integer number of synaptic-input units
    (one weight LSB), which is also how lava-dl netx stores it (bias_exp = 6)."""
    mag = np.abs(b_state)
    exp = np.full(b_state.shape, ACT_SHIFT, np.int64)
    exp = np.where(np.rint(mag / 2.0 ** ACT_SHIFT) > BIAS_MANT_MAX, BIAS_EXP_MAX, exp)
    raw = np.rint(b_state / 2.0 ** exp)
    clipped = int(np.count_nonzero(np.abs(raw) > BIAS_MANT_MAX))
    mant = np.clip(raw, -BIAS_MANT_MAX, BIAS_MANT_MAX).astype(np.int64)
    rounded = int(np.count_nonzero(mant * 2.0 ** exp != b_state))
    return mant, exp.astype(np.int64), rounded, clipped


def _ceil_log2(x: float) -> int:
    return int(math.ceil(math.log2(x))) if x > 0 else -30


def _min_unit(p: Population) -> float:
    """Smallest unit u for which the threshold fits VTH_TARGET and the bias fits its
    mantissa at exponent 6 (|b|/u ≤ 4095 weight LSBs, netx's bias format)."""
    u = float(np.abs(p.bias).max()) / BIAS_MANT_MAX
    if p.threshold is not None:
        target = p.neuron.vth_target
        u = max(u, float(p.threshold.max()) / target)
    return u


def _fixed_scale(plan: LoihiPlan, s: Synapse, k: int) -> np.ndarray:
    """The float weight the fixed-point payload of ``s.src`` needs: x·2^-k for the Input,
    W·2^(exp+g) of the source (= W_eff·2^(exp+g)/θ_src) for a sigma-delta source, W_eff
    otherwise."""
    if s.src == plan.input_name:
        return s.weight * 2.0 ** -k
    src = plan.pops[s.src]
    if not src.graded:
        return s.weight
    f = 2.0 ** (src.exp + src.grid_exp) / src.threshold  # per source unit (torch order)
    if s.kind == "dense":
        return s.weight * f.ravel()[None, :]
    return _scale_in(s.weight, f.reshape(f.shape[0], -1)[:, 0], s.groups)


def _choose_grid(plan: LoihiPlan, s: Synapse, k: int, e_min: int, coarsest: bool,
                 forced: int | None = None) -> None:
    """Payload unit 2^(exp+g) of sigma-delta population ``s.src``, chosen at its first
    consumer: the largest g ≥ 0 whose weights still fit 8 bits at the consumer's smallest
    unit 2^e_min (so they use the full mantissa), at most 1/2..1/4 of the delta threshold
    (``coarsest``, for the readout: that bound, keeping its potential in range).
    ``forced``: use this g instead (``NETX_GRID_EXP`` for a netx export)."""
    src = plan.pops[s.src]
    cap = max(0, int(src.vth_mant.min()).bit_length() - 2)
    src.grid_exp = 0
    base = float(np.abs(_fixed_scale(plan, s, k)).max())
    fit = int(math.floor(math.log2(WEIGHT_MAX * 2.0 ** e_min / base))) if base > 0 else cap
    src.grid_exp = cap if coarsest else min(cap, max(0, fit))
    if forced is not None:
        src.grid_exp = forced
    plan.counts.setdefault(s.src, {})["payload_unit_exp"] = src.exp + src.grid_exp


def fix(plan: LoihiPlan, grid_exp: int | None = None) -> None:
    """Fill the fixed-point fields of every population and synapse (module docstring);
    ``grid_exp`` forces every sigma-delta payload unit to 2^(exp+grid_exp)."""
    into = {n: plan.synapses_into(n) for n in plan.pops}
    # input fractional bits: the first layer's threshold must fit VTH_TARGET
    k = INPUT_FRAC_MAX
    for n, p in plan.pops.items():
        ins = [s for s in into[n] if s.src == plan.input_name]
        if ins and p.threshold is not None:
            e_w = _ceil_log2(max(float(np.abs(s.weight).max()) for s in ins) / WEIGHT_MAX)
            k = min(k, e_w - _ceil_log2(_min_unit(p)))
    plan.input_frac_bits = k
    graded: set[str] = set()
    for n, p in plan.pops.items():
        if p.kind in ("input", "maxpool"):
            continue
        syns = into[n]
        for s in syns:
            src = plan.pops[s.src]
            if src.graded and s.src not in graded:
                graded.add(s.src)
                _choose_grid(plan, s, k, _ceil_log2(_min_unit(p)), p.kind == "readout",
                             grid_exp)
        w_eff = [_fixed_scale(plan, s, k) for s in syns]
        wmax = max((float(np.abs(w).max()) for w in w_eff if w.size), default=0.0)
        e_w = _ceil_log2(wmax / WEIGHT_MAX) if wmax > 0 else 0
        e = max(e_w, _ceil_log2(_min_unit(p)))
        p.exp = e
        unit = 2.0 ** e
        c: dict[str, Any] = {"exp": e, "weights": 0, "weights_rounded": 0,
                             "weights_to_zero": 0, "weights_clipped": 0,
                             "weight_exp_raised_for_range": e - e_w}
        err2 = norm2 = 0.0
        for s, w in zip(syns, w_eff):
            q = _round_even(w, unit)
            c["weights_clipped"] += int(np.count_nonzero(np.abs(q) > WEIGHT_MAX))
            q = np.clip(q, -WEIGHT_MAX, WEIGHT_MAX)
            c["weights"] += int(np.count_nonzero(w))
            c["weights_rounded"] += int(np.count_nonzero(q * unit != w))
            c["weights_to_zero"] += int(np.count_nonzero((q == 0) & (w != 0)))
            err2 += float(((q * unit - w) ** 2).sum())
            norm2 += float((w ** 2).sum())
            s.weight_int = q.astype(np.int64)
        c["weight_relative_error"] = math.sqrt(err2 / norm2) if norm2 else 0.0
        c["weight_mantissa_max"] = int(max((np.abs(s.weight_int).max() for s in syns
                                            if s.weight_int.size), default=0)) // 2
        if p.threshold is not None:
            raw = np.rint(p.threshold / unit)
            c["vth_clipped"] = int(np.count_nonzero((raw < 1) | (raw > VTH_MANT_MAX)))
            p.vth_mant = np.clip(raw, 1, VTH_MANT_MAX).astype(np.int64)
            c["vth_rounded"] = int(np.count_nonzero(p.vth_mant * unit != p.threshold))
            c["vth_mant_range"] = [int(p.vth_mant.min()), int(p.vth_mant.max())]
            c["vth_max_relative_error"] = float(np.max(np.abs(p.vth_mant * unit - p.threshold)
                                                       / p.threshold))
            alpha = 0.0 if p.neuron.at_rest else p.alpha
            p.v_init = np.rint(alpha * p.vth_mant * 2 ** VTH_SHIFT).astype(np.int64)
            if p.signed and not p.graded:
                p.neg_level = np.rint(SIGNED_EPS * p.vth_mant * 2 ** VTH_SHIFT).astype(np.int64)
        mant, bexp, rounded, clipped = _bias_fixed(p.bias * 2 ** ACT_SHIFT / unit)
        p.bias_mant, p.bias_exp = mant, bexp
        c.update(biases=int(np.count_nonzero(p.bias)), biases_rounded=rounded,
                 biases_clipped=clipped)
        plan.counts[n] = {**c, **plan.counts.get(n, {})}
