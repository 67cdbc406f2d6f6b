"""Layout views: ONNX tensors the frontend holds as a view of data the IR already has.

Exporters write layout changes an SNN has no op for: a channel shuffle's 5-D reshape, Keras'
channels-last transpose, a zero ``Pad`` before a convolution, the gathers of an exported
adaptive average pool, a squeeze in two steps, a strided ``Slice``. The frontend does not turn
such a tensor into an IR op; it records what the tensor is (one ``View`` per ONNX tensor, in
``Builder.views``) and the op that reads it makes it exact: a fold into the next weights, a
permutation, a padding taken over, a 0/1 convolution. Each kind says who may read it; any other
reader is refused by name (``Builder.tensor``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Union

import numpy as np

from snncompile.frontend.selections import Selection


@dataclass(frozen=True, eq=False)
class ChannelGroups:
    """(N, g1, g2, ..., H, W) inside a channel shuffle: channel ``index[g1, g2, ...]`` of the
    (C, H, W) data of IR op ``src``."""

    src: str
    index: np.ndarray
    readers: ClassVar[str | None] = ("a 5-D channel-group view; only a channel shuffle "
                                     "(Reshape -> Transpose -> Reshape) may use it")


@dataclass(frozen=True, eq=False)
class SpatialGather:
    """Positions gathered from the (C, H, W) data of IR op ``src`` inside an exported adaptive
    average pool: flat H·W position ``index[...]`` per view position; ``lead``: whether N, C
    lead the axes (else they trail, as in the exporter's (H, W, N, C) transpose)."""

    src: str
    index: np.ndarray
    lead: bool
    readers: ClassVar[str | None] = (
        "a gathered spatial view; only the exported adaptive average pool (Transpose -> "
        "GatherND -> Transpose -> ReduceMean) may use it")


@dataclass(frozen=True, eq=False)
class ChannelsLast:
    """(N, H, W, C) of the (N, C, H, W) ONNX tensor ``data`` (TensorFlow/Keras' layout,
    Transpose perm [0, 2, 3, 1])."""

    data: str
    readers: ClassVar[str | None] = (
        "a channels-last (N, H, W, C) view; only a Flatten/Reshape to (N, -1) read by "
        "MatMul/Gemm, a ReduceMean over H, W, or a Transpose back to (N, C, H, W) may use it")


@dataclass(frozen=True, eq=False)
class Padded:
    """ONNX tensor ``data`` zero-padded on H and W by ``pads`` = (top, left, bottom, right):
    TensorFlow's asymmetric "same", torch's F.pad, opset 9's AvgPool padding."""

    data: str
    pads: tuple[int, int, int, int]
    readers: ClassVar[str | None] = ("zero-padded by a Pad; only a Conv or an AveragePool may "
                                     "read it (it takes the padding over)")


@dataclass(frozen=True, eq=False)
class Squeezed:
    """(N, C, 1) between two Squeezes (``x.squeeze(-1).squeeze(-1)``): flat in the IR, which
    has a tensor for it, so any op may read it."""

    shape: tuple[int, ...]
    readers: ClassVar[str | None] = None


#: what an ONNX tensor can be besides an IR tensor (a ``Selection`` is lowered when read)
View = Union[ChannelGroups, SpatialGather, ChannelsLast, Padded, Squeezed, Selection]
