"""The cumulative-current spiking max-pool (``CurrentMaxPool2d``), shared by the gpu simulator,
the loihi target's torch reference (backends never import each other) and the
``bias-calibration`` pass (passes never import a backend): one layer below both, beside
``options``.

For candidate currents x_i(t) of one pooling window (padding: −∞),

    C_i(t) = Σ_{τ≤t} x_i(τ),   M(t) = max_i C_i(t),   I(t) = M(t) − M(t−1),   M(0) = 0,

so Σ_{τ≤t} I(τ) = M(t): the window's neuron integrates the largest integrated input of its
candidates (``passes/maxpool_current.py`` has the why and the sources). With a constant input
(direct coding) M(t) = t·max_i x_i and I(t) = max_i x_i.

C and M are kept in float64. For integer currents (the loihi reference: synaptic sums of integer
weights, |C| < 2^53) every value is exact. For float currents the sums are sequential float64
additions, the same whether the T steps run at once or in time chunks that carry
``carry["sum"]`` (C after the last step) and ``carry["max"]`` (M after it), so a chunked run
equals one run bit for bit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from snncompile.interp import pad2d
from snncompile.ir.nodes import CurrentMaxPool2d, MaxPool2d

Tensor = torch.Tensor


def window_max(op: CurrentMaxPool2d, c: Tensor) -> Tensor:
    """max over each window of c (N, C, H, W), padding −∞."""
    return F.max_pool2d(pad2d(c, op.padding, float("-inf")), op.kernel, op.stride, 0,
                        op.dilation)


def cummax_current(op: CurrentMaxPool2d, x: Tensor,
                   carry: dict[str, Tensor] | None = None) -> Tensor:
    """I(t) (T, B, C, H', W') for candidate currents x (T, B, C, H, W), in x's dtype (module
    docstring). ``carry``: C and M of the steps before, updated in place (time chunks)."""
    steps, batch = x.shape[:2]
    if not (torch.is_grad_enabled() and x.requires_grad):
        return _cummax_current_nograd(op, x, carry)
    acc = x.to(torch.float64)  # differentiable (finetune's surrogate-gradient mode)
    if carry is not None and "sum" in carry:
        acc = torch.cumsum(torch.cat([carry["sum"].unsqueeze(0), acc]), 0)[1:]
    else:
        acc = torch.cumsum(acc, 0)
    m = window_max(op, acc.flatten(0, 1))
    m = m.reshape(steps, batch, *m.shape[1:])
    prev = (carry["max"].unsqueeze(0) if carry is not None and "max" in carry
            else torch.zeros_like(m[:1]))
    out = torch.diff(m, dim=0, prepend=prev)
    if carry is not None:
        carry["sum"] = acc[-1].detach().clone()
        carry["max"] = m[-1].detach().clone()
    return out.to(x.dtype)


def tiles(op: MaxPool2d | CurrentMaxPool2d) -> bool:
    """Windows that tile the plane (stride = kernel, no padding or dilation; VGG's 2×2/2)."""
    return (tuple(op.stride) == tuple(op.kernel) and not any(op.padding)
            and tuple(op.dilation) == (1, 1))


def tile_max(v: Tensor, kernel: tuple[int, int], rows: Tensor | None = None,
             out: Tensor | None = None) -> Tensor:
    """The max of each kh×kw tile of v (N, C, ho·kh, wo·kw) → (N, C, ho, wo): over the tile's
    rows, then its columns (a max is exact in any order), no indices. ``rows`` (N, C, ho,
    wo·kw) and ``out`` (N, C, ho, wo): buffers to reuse (a loop over steps)."""
    (kh, kw), (n, c, hc, wc) = kernel, v.shape
    by_row = v.unflatten(2, (hc // kh, kh))
    if rows is None:
        rows = torch.empty((n, c, hc // kh, wc), dtype=v.dtype, device=v.device)
    rows.copy_(by_row[:, :, :, 0])
    for i in range(1, kh):
        torch.maximum(rows, by_row[:, :, :, i], out=rows)
    by_col = rows.unflatten(3, (wc // kw, kw))
    if out is None:
        out = torch.empty((n, c, hc // kh, wc // kw), dtype=v.dtype, device=v.device)
    out.copy_(by_col[..., 0])
    for j in range(1, kw):
        torch.maximum(out, by_col[..., j], out=out)
    return out


def _cummax_current_nograd(op: CurrentMaxPool2d, x: Tensor,
                           carry: dict[str, Tensor] | None) -> Tensor:
    """``cummax_current`` without autograd, the same values with fewer passes and copies
    (issue 12: a third of a vgg11_bn run): the sequential float64 sums C(t) = C(t−1) + x(t) in
    place, the carried C added to the first step (x + c = c + x exactly), no concatenated
    copies; tiling windows take their max over the window's rows, then its columns (a max is
    exact in any order); I(t) = M(t) − M(t−1) subtracted in float64 and rounded once into x's
    dtype, as ``torch.diff`` then ``to`` did."""
    steps, batch = x.shape[:2]
    acc = x.to(torch.float64, copy=True)  # summed in place: never x itself
    if carry is not None and "sum" in carry:
        acc[0].add_(carry["sum"])
    for t in range(1, steps):
        acc[t].add_(acc[t - 1])
    if carry is not None:
        carry["sum"] = acc[-1].clone()
    if tiles(op):
        (kh, kw), (h, w) = op.kernel, x.shape[-2:]
        m = tile_max(acc.flatten(0, 1)[..., :h // kh * kh, :w // kw * kw], op.kernel)
    else:
        m = window_max(op, acc.flatten(0, 1))
    del acc
    m = m.reshape(steps, batch, *m.shape[1:])
    out = torch.empty(m.shape, dtype=x.dtype, device=x.device)
    if carry is not None and "max" in carry:
        torch.sub(m[0], carry["max"], out=out[0])
    else:
        out[0].copy_(m[0])  # M(1) − 0
    if steps > 1:
        torch.sub(m[1:], m[:-1], out=out[1:])
    if carry is not None:
        carry["max"] = m[-1].clone()
    return out
