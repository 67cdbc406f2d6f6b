"""Selections of an activation: ONNX Slice, Split, Gather (constant indices) and zero Pad.

A selection of an (N, C, H, W) activation x (or an (N, F) one) is separable: output element
(c, h, w) is x[c_idx[c], h_idx[h], w_idx[w]], or 0 where an index is −1 (a zero pad). Any
chain of these ops composes into one such triple (a slice or a gather indexes the index
vector, a pad inserts −1s), so the frontend keeps the chain as a view and lowers it once, when
something else reads it, to a fixed linear op that both backends already run (no neurons):

- channels only (H, W untouched): a 1×1 Conv2d with W[o, c_idx[o]] = 1 (zero rows for padded
  channels), folded into the full convolutions that read it where there are only those
  (W'·x = W·S·x, ``fold_channel_selections``);
- H or W changed: one strided Conv2d per axis window: output h reads input h·s + o − p (a kernel
  of size k with a single 1 at offset o, symmetric zero padding p, stride s; ``window``),
  depthwise (groups = C) when the channels are untouched, else with the channel 0/1 matrix;
- an (N, F) selection: a Dense with a 0/1 matrix.

Each is exact: every output is one input value times 1, or 0.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from snncompile.ir.nodes import Conv2d, Dense, Node


@dataclass(frozen=True)
class Selection:
    """x[idx[0]][:, idx[1]][:, :, idx[2]] of IR op ``src`` (−1: a zero), built by ``nodes``."""

    src: str
    in_shape: tuple[int, ...]
    idx: tuple[np.ndarray, ...]
    nodes: tuple[str, ...] = ()  # ONNX origins ("name (Slice)") of the ops composing it

    @classmethod
    def identity(cls, src: str, shape: tuple[int, ...]) -> Selection:
        return cls(src, tuple(shape), tuple(np.arange(n) for n in shape))

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(i) for i in self.idx)

    def take(self, axis: int, positions: np.ndarray, origin: str) -> Selection:
        """The selection followed by taking ``positions`` along IR axis ``axis``."""
        idx = list(self.idx)
        idx[axis] = idx[axis][np.asarray(positions, dtype=np.int64)]
        return replace(self, idx=tuple(idx), nodes=self._with(origin))

    def pad(self, axis: int, before: int, after: int, origin: str) -> Selection:
        """Zero padding along ``axis`` (a negative amount removes entries, as ONNX Pad)."""
        old = self.idx[axis]
        kept = old[max(-before, 0):len(old) - max(-after, 0)]
        new = np.concatenate([np.full(max(before, 0), -1), kept, np.full(max(after, 0), -1)])
        idx = list(self.idx)
        idx[axis] = new.astype(np.int64)
        return replace(self, idx=tuple(idx), nodes=self._with(origin))

    def _with(self, origin: str) -> tuple[str, ...]:
        return self.nodes if origin in self.nodes else (*self.nodes, origin)

    def untouched(self, axis: int) -> bool:
        i = self.idx[axis]
        return len(i) == self.in_shape[axis] and bool(np.all(i == np.arange(len(i))))

    @property
    def is_identity(self) -> bool:
        return all(self.untouched(a) for a in range(len(self.idx)))

    def matrix(self, axis: int) -> np.ndarray:
        """S (out, in) with S[o, idx[o]] = 1: the selection along ``axis`` as a 0/1 matrix."""
        i = self.idx[axis]
        m = np.zeros((len(i), self.in_shape[axis]), dtype=np.float32)
        rows = np.flatnonzero(i >= 0)
        m[rows, i[rows]] = 1.0
        return m


def window(n: int, idx: np.ndarray) -> tuple[int, int, int, int]:
    """(k, o, p, s): a 1-D convolution over n inputs with symmetric zero padding p, stride s and
    a kernel of size k that is 1 at offset o, 0 elsewhere, whose output h is x[idx[h]]
    (0 where idx[h] = −1). Raises ValueError when no such convolution exists.

    Output h reads input h·s + d with d = o − p. The indices must be −1 (a leading zeros),
    then h0, h0 + s, ..., h0 + (m'−1)·s, then −1 (b trailing zeros). With d = h0 − a·s: the
    leading zeros read outside iff a = 0 or h0 < s, the trailing ones iff b = 0 or
    h0 + m'·s ≥ n. p = max(0, −d, (m − 1)·s + d + 1 − n) keeps every read inside the padded
    input; k = n + 2p − (m − 1)·s − r with the largest r < s that keeps k > o gives m outputs.
    """
    m = len(idx)
    real = np.flatnonzero(idx >= 0)
    if not len(real):
        raise ValueError("selects only zeros")
    a, b = int(real[0]), m - 1 - int(real[-1])
    vals = idx[a:m - b]
    if np.any(vals < 0):
        raise ValueError("zeros in the middle of the selected range")
    steps = np.diff(vals)
    h0 = int(vals[0])
    # one selected value: any stride will do; the smallest that reads zeros where needed
    strides = [int(steps[0])] if len(steps) else list(range(1, n + 2))
    if strides[0] < 1 or np.any(steps != strides[0]):
        raise ValueError(f"indices {vals.tolist()} are not evenly spaced and increasing")
    fits = [s for s in strides if not (a and h0 >= s or b and h0 + len(vals) * s < n)]
    if not fits:
        raise ValueError("a zero pad next to a crop on the same side")
    s = fits[0]
    d = h0 - a * s
    p = max(0, -d, (m - 1) * s + d + 1 - n)
    o = d + p
    k0 = n + 2 * p - (m - 1) * s
    k = k0 - min(s - 1, k0 - o - 1)
    return k, o, p, s


def lower(sel: Selection) -> Node:
    """The selection as one fixed linear IR op (module docstring); ValueError when the H or W
    indices fit no convolution window (``window``)."""
    origin = " + ".join(sel.nodes) + " (selection)"
    if len(sel.idx) == 1:
        return Dense(origin=origin, weight=sel.matrix(0))
    c_in, h, w = sel.in_shape
    (kh, oh, ph, sh), (kw, ow, pw, sw) = (window(n, i) for n, i in zip((h, w), sel.idx[1:]))
    pads = (ph, pw, ph, pw)
    if sel.untouched(0):  # depthwise: channel c reads channel c
        weight = np.zeros((c_in, 1, kh, kw), dtype=np.float32)
        weight[:, 0, oh, ow] = 1.0
        return Conv2d(origin=origin, weight=weight, stride=(sh, sw), padding=pads, groups=c_in)
    weight = np.zeros((len(sel.idx[0]), c_in, kh, kw), dtype=np.float32)
    weight[:, :, oh, ow] = sel.matrix(0)
    return Conv2d(origin=origin, weight=weight, stride=(sh, sw), padding=pads)


def fold_into(weight: np.ndarray, sel_idx: np.ndarray, c_in: int) -> np.ndarray:
    """W' with W'·x = W·(S·x) for the channel selection S (S[o, sel_idx[o]] = 1, a row of
    zeros where sel_idx[o] = −1): W'[:, i] = Σ_{o: sel_idx[o] = i} W[:, o] (float64 sums)."""
    out = np.zeros((weight.shape[0], c_in, *weight.shape[2:]), dtype=np.float64)
    keep = np.flatnonzero(sel_idx >= 0)
    np.add.at(out, (slice(None), sel_idx[keep]), weight[:, keep].astype(np.float64))
    return out.astype(np.float32)
