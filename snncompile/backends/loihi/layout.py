"""Torch ↔ Lava layouts, in one place: Lava orders feature maps (W, H, C) where torch has
(C, H, W), and convolves (flipped kernels, (C_out, kW, kH, C_in)) where torch cross-correlates
(LAVA_NOTES §1)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from snncompile.backends.loihi.plan import Synapse


def lava_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """torch (C, H, W) -> Lava (W, H, C); vectors unchanged."""
    return tuple(reversed(shape)) if len(shape) == 3 else tuple(shape)


def to_lava(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Array whose leading axes are ``shape`` in torch order -> Lava order (others kept)."""
    a = np.broadcast_to(a, shape) if np.ndim(a) < len(shape) else np.asarray(a)
    return np.ascontiguousarray(np.swapaxes(a, 0, 2) if len(shape) == 3 else a)


def trailing_to_torch(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Array whose trailing axes are ``shape`` in Lava order (W, H, C) -> torch (C, H, W)."""
    return np.swapaxes(a, -1, -3) if len(shape) == 3 else a


def conv_weight(w: np.ndarray) -> np.ndarray:
    """torch (C_out, C_in, kH, kW) -> Lava (C_out, kW, kH, C_in), spatially flipped."""
    return np.ascontiguousarray(w.transpose(0, 3, 2, 1)[:, ::-1, ::-1, :])


def lava_order(shape: tuple[int, ...]) -> np.ndarray:
    """perm with lava_flat[j] = torch_flat[perm[j]] (C-order flattening of each layout)."""
    n = int(np.prod(shape))
    if len(shape) != 3:
        return np.arange(n)
    return np.arange(n).reshape(shape).transpose(2, 1, 0).ravel()


def dense_weight(w: np.ndarray, src: tuple[int, ...], dst: tuple[int, ...]) -> np.ndarray:
    """Dense matrix over torch-flattened units -> over Lava-flattened units."""
    return np.ascontiguousarray(w[lava_order(dst)][:, lava_order(src)])


def conv_matrix(s: Synapse, src: tuple[int, ...], w: np.ndarray) -> np.ndarray:
    """The dense (dst units, src units) matrix of conv synapse ``s`` with weights ``w``
    (torch-flattened order on both sides)."""
    n = int(np.prod(src))
    wt = torch.from_numpy(np.asarray(w, np.float64))
    cols = []
    for i in range(0, n, 256):  # unit vectors in blocks: memory 256 · n, not n²
        eye = torch.zeros((min(256, n - i), n), dtype=torch.float64)
        eye[torch.arange(eye.shape[0]), torch.arange(i, i + eye.shape[0])] = 1.0
        y = torch.nn.functional.conv2d(eye.reshape(-1, *src), wt, None, s.stride, s.padding,
                                       s.dilation, s.groups)
        cols.append(y.reshape(eye.shape[0], -1))
    m = torch.cat(cols).T.numpy()
    return m.astype(w.dtype) if np.issubdtype(w.dtype, np.integer) else m
