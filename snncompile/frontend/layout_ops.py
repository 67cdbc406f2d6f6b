"""The converters of layout ops and selections, and the folds that resolve them after the walk.

Exporters write layout changes an SNN has no op for (``views``: a channel shuffle's 5-D reshape
and transposes, Keras' channels-last transpose and flatten, the gathers of an exported adaptive
average pool, a squeeze in two steps, a zero ``Pad`` before a convolution) and selections of
channels or pixels (``Slice``, ``Split``, ``Gather``, a channel ``Pad``; ``selections``). The
converters here turn each into a view of data the IR already has, or into the exact fixed op
that view amounts to; after the walk the folds move what they can into the weights of the op
that reads it (W·P·x = W'·x): channel permutations, channel selections, channels-last feature
permutations and spatial maps. Each mapping is exact.

Registered in the converter table of ``op_table`` (which imports this module at its end).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from snncompile.frontend.op_table import (
    Builder,
    OnnxNode,
    Unsupported,
    _image,
    converts,
    sanitize,
)
from snncompile.frontend.selections import Selection, fold_into
from snncompile.frontend.views import ChannelGroups, ChannelsLast, Padded, SpatialGather, Squeezed
from snncompile.ir.nodes import AvgPool2d, Conv2d, Dense, Flatten, Identity, Input, Node

#: Slice's "to the end" as exporters write it (INT64_MAX; torch's legacy exporter also writes
#: INT64_MIN + 1 as the end of a reversal)
_END = 0x7FFFFFFF  # INT32_MAX: the batch end exporters write


@converts("ReduceMean")
def reduce_mean(node: OnnxNode, b: Builder) -> str:
    """ReduceMean over (H, W) -> AvgPool2d(kernel=(H, W)) (+ Flatten when keepdims=0)."""
    x = node.inputs[0]
    axes = node.attr("axes")
    if len(node.inputs) > 1 and node.inputs[1]:
        axes = b.const(node.inputs[1], "axes").reshape(-1).tolist()
    if b.view(x, SpatialGather):
        if node.attr("keepdims", 1):
            raise Unsupported("keepdims=1 on a gathered spatial view")
        return _spatial_mean(node, b, list(axes or []))
    spatial = [2, 3]
    if nhwc := b.view(x, ChannelsLast):  # Keras' GlobalAveragePooling2D: the mean over axes
        x, spatial = nhwc.data, [1, 2]  # 1, 2 of (N, H, W, C)
        if node.attr("keepdims", 1):
            raise Unsupported("keepdims=1 on a channels-last view")
    _, h, w = _image(node, b, x)
    if axes is None or sorted(int(a) % 4 for a in axes) != spatial:
        raise Unsupported(f"axes={axes}; only the mean over (H, W) = axes {spatial} is "
                          "supported")
    pooled = b.add(node, AvgPool2d(origin=node.origin, kernel=(h, w), stride=(h, w)),
                   [b.tensor(x)])
    if node.attr("keepdims", 1):
        return pooled
    return b.graph.add(b.graph.unique(f"{sanitize(node.name)}_flat"),
                       Flatten(origin=node.origin), [pooled])


@converts("Flatten")
def flatten(node: OnnxNode, b: Builder) -> str:
    """Flatten(axis=1) -> Flatten."""
    x = node.inputs[0]
    nhwc = b.view(x, ChannelsLast)
    rank = len(b.shape(nhwc.data if nhwc else x)) + 1
    axis = int(node.attr("axis", 1))
    if axis % rank != 1:
        raise Unsupported(f"axis={axis}; only axis=1 (keep the batch axis) is supported")
    if nhwc:
        target = np.array([0, -1])
        return _flatten_nhwc(node, b, (target, target), False)
    return b.add(node, Flatten(origin=node.origin), [b.tensor(x)])


def _flatten_nhwc(node: OnnxNode, b: Builder, targets: tuple[np.ndarray, np.ndarray],
                  allowzero: bool) -> str:
    """Flatten of a channels-last view (Keras' Flatten): the IR flattens (C, H, W) and the
    MatMul/Gemm that reads it gets its columns permuted (``fold_feature_permutations``)."""
    src = b.views[node.inputs[0]].data
    c, h, w = b.shape(src)
    const = targets[0] is targets[1] or np.array_equal(*targets)
    n = (b.fixed_batch if const else None) or b.batch_sizes[0]
    target = targets[0]
    if _resolve_reshape((n, h, w, c), target, allowzero) != (n, c * h * w):
        raise Unsupported(f"reshape of a channels-last (N, {h}, {w}, {c}) view to "
                          f"{target.tolist()}; only flattening to (N, -1) is supported")
    flat = b.add(node, Flatten(origin=node.origin), [b.tensor(src)])
    b.feature_perms[flat] = np.arange(c * h * w).reshape(c, h, w).transpose(1, 2, 0).reshape(-1)
    return flat


def _resolve_reshape(in_full: tuple[int, ...], target: np.ndarray,
                     allowzero: bool) -> tuple[int, ...]:
    t = [int(v) for v in target.reshape(-1)]
    out = [in_full[i] if v == 0 and not allowzero and i < len(in_full) else v
           for i, v in enumerate(t)]
    if out.count(-1) > 1:
        raise Unsupported(f"target shape {t} has more than one -1")
    if -1 in out:
        known = math.prod(v for v in out if v != -1)
        total = math.prod(in_full)
        if known == 0 or total % known:
            raise Unsupported(f"target shape {t} does not fit the input")
        out[out.index(-1)] = total // known
    return tuple(out)


@converts("Squeeze")
def squeeze(node: OnnxNode, b: Builder) -> str:
    """Squeeze of size-1 axes after a global pool, (N, C, 1, 1) -> (N, C): Flatten."""
    x = node.inputs[0]
    squeezed = b.view(x, Squeezed)
    s = squeezed.shape if squeezed else b.shape(x)
    rank = len(s) + 1
    if len(node.inputs) > 1 and node.inputs[1]:
        axes = [int(a) for a in b.const(node.inputs[1], "axes").reshape(-1)]
        if any(not -rank <= a < rank for a in axes):
            raise Unsupported(f"axes {axes} out of range for a rank-{rank} input")
        drop = {a % rank for a in axes}
        if 0 in drop:
            raise Unsupported("it removes the batch axis")
        if any(s[a - 1] != 1 for a in drop):
            raise Unsupported(f"axes {sorted(drop)} of an (N, {', '.join(map(str, s))}) input "
                              "are not all of size 1")
    elif b.fixed_batch == 1:
        raise Unsupported("without axes it also removes the batch axis of this batch-1 export; "
                          "squeeze the pooled axes only (x.flatten(1)) or export with a dynamic "
                          "batch axis")
    else:
        drop = {i + 1 for i, d in enumerate(s) if d == 1}
    kept = tuple(d for i, d in enumerate(s) if i + 1 not in drop)
    if kept == tuple(s) or (squeezed and len(kept) == 1):
        out = b.add(node, Identity(origin=node.origin, onnx_op="Squeeze"), [b.tensor(x)])
    elif len(kept) == 1 or math.prod(kept[1:]) == 1:
        out = b.add(node, Flatten(origin=node.origin), [b.tensor(x)])
    else:
        raise Unsupported(f"(N, {', '.join(map(str, s))}) to (N, {', '.join(map(str, kept))}); "
                          "only squeezing to (N, C) is supported")
    if len(kept) > 1 and kept != tuple(b.shape(x)):
        # x.squeeze(-1).squeeze(-1): (N, C, 1) in between, flat in the IR
        b.views[node.outputs[0]] = Squeezed(kept)
        b.unchecked.add(node.outputs[0])
    return out


@converts("Reshape")
def reshape(node: OnnxNode, b: Builder) -> str:
    """Reshape to (N, C·H·W) -> Flatten; a reshape to the same shape -> Identity."""
    x, shape_name = node.inputs[:2]
    if shape_name not in b.consts:
        raise Unsupported("the target shape is not a constant")
    allowzero = bool(node.attr("allowzero", 0))
    if b.view(x, ChannelGroups):
        return _end_of_shuffle(node, b)
    if b.view(x, ChannelsLast):
        return _flatten_nhwc(node, b, b.consts[shape_name], allowzero)
    s = b.shape(x)
    targets = b.consts[shape_name]
    if b.fixed_batch and (targets[0] is targets[1] or np.array_equal(*targets)):
        # a model exported with a fixed batch size has it written into its target shapes
        # (x.reshape(1, -1) exported with a batch of 1): read them at that size
        outs = [(b.fixed_batch, _resolve_reshape((b.fixed_batch, *s), targets[0], allowzero))]
    else:
        outs = [(n, _resolve_reshape((n, *s), t, allowzero))
                for n, t in zip(b.batch_sizes, targets)]
    if all(o == (n, math.prod(s)) for n, o in outs):
        return b.add(node, Flatten(origin=node.origin), [b.tensor(x)])
    if all(o == (n, *s) for n, o in outs):
        return b.add(node, Identity(origin=node.origin, onnx_op="Reshape"), [b.tensor(x)])
    n, o = outs[0]
    if len(s) == 3 and all(len(o2) > 4 and o2[0] == n2 and o2[-2:] == s[1:]
                           and math.prod(o2[1:-2]) == s[0] and o2[1:] == o[1:]
                           for n2, o2 in outs):
        # (N, C, H, W) -> (N, g1, g2, ..., H, W): the start of a channel shuffle
        b.views[node.outputs[0]] = ChannelGroups(b.tensor(x), np.arange(s[0]).reshape(o[1:-2]))
        return b.tensor(x)
    shown = ", ".join("N" if v == n else str(v) for v in o)
    raise Unsupported(f"reshape from (N, {', '.join(map(str, s))}) to ({shown}); only "
                      "flattening to (N, -1) is supported")


def _end_of_shuffle(node: OnnxNode, b: Builder) -> str:
    """Reshape of a channel-group view back to (N, C, H, W): output channel i is input channel
    p[i], p the view's index array read in C order -> a 1×1 Conv2d with W[i, p[i]] = 1 (exact),
    folded into the next convolution's weights by ``fold_channel_permutations``."""
    groups = b.views[node.inputs[0]]
    src, idx = groups.src, groups.index
    c, h, w = b.graph.shape(src)
    for n, target in zip(b.batch_sizes, b.consts[node.inputs[1]]):
        full = _resolve_reshape((n, *idx.shape, h, w), target, bool(node.attr("allowzero", 0)))
        if full != (n, c, h, w):
            raise Unsupported(f"a channel-group view reshaped to {list(full[1:])}; only back to "
                              f"(N, {c}, {h}, {w})")
    perm = idx.reshape(-1)
    weight = np.zeros((c, c, 1, 1), dtype=np.float32)
    weight[np.arange(c), perm, 0, 0] = 1.0
    name = b.add(node, Conv2d(origin=f"{node.origin} (channel shuffle)", weight=weight), [src])
    b.permutations[name] = perm
    return name


@converts("Transpose")
def transpose(node: OnnxNode, b: Builder) -> str:
    """Transpose of channel-group axes inside a channel shuffle; an identity perm -> Identity.

    The view's channel index array is transposed the same way (batch and H, W stay put)."""
    x = node.inputs[0]
    perm = [int(p) for p in node.attr("perm", [])]
    if b.view(x, SpatialGather):
        return _spatial_transpose(node, b, perm)
    if nhwc := b.view(x, ChannelsLast):
        if perm != [0, 3, 1, 2]:
            raise Unsupported(f"perm={perm} on a channels-last view; only [0, 3, 1, 2] back")
        return b.tensor(nhwc.data)
    groups = b.view(x, ChannelGroups)
    if groups is None and perm == [0, 2, 3, 1] and len(b.shape(x)) == 3:
        b.views[node.outputs[0]] = ChannelsLast(x)  # (N, C, H, W) -> (N, H, W, C): Keras'
        return b.tensor(x)
    if groups is None and perm == [2, 3, 0, 1] and len(b.shape(x)) == 3:
        _, h, w = b.shape(x)  # (N, C, H, W) -> (H, W, N, C): a gather over positions follows
        b.views[node.outputs[0]] = SpatialGather(b.tensor(x), np.arange(h * w).reshape(h, w),
                                                 False)
        return b.tensor(x)
    if groups is None:
        rank = len(b.shape(x)) + 1
        if perm == list(range(rank)):
            return b.add(node, Identity(origin=node.origin, onnx_op="Transpose"),
                         [b.tensor(x)])
        src = b.tensor(x)
        if perm == [0, 3, 1, 2] and isinstance(inp := b.graph.op(src), Input):
            if b.uses.get(x, 0) != 1 or inp.channels_last:
                raise Unsupported(f"the model reads channels-last input {x!r} (N, H, W, C) "
                                  "and uses it other than through one Transpose; convert it "
                                  f"with channels-first input (tf2onnx: --inputs-as-nchw {x})")
            h, w, c = inp.shape
            # TensorFlow/Keras' layout: the IR takes (N, C, H, W); the Transpose is absorbed
            b.graph.replace(src, shape=(c, h, w), channels_last=True,
                            origin=f"{inp.origin} (channels-last, through {node.origin})")
            return src
        raise Unsupported(f"perm={perm} changes the memory layout of an activation; only "
                          "channel-group transposes inside a channel shuffle are supported")
    k = groups.index.ndim
    if len(perm) != k + 3 or perm[0] != 0 or perm[-2:] != [k + 1, k + 2]:
        raise Unsupported(f"perm={perm}; a channel shuffle keeps the batch and H, W axes")
    b.views[node.outputs[0]] = ChannelGroups(
        groups.src, groups.index.transpose([p - 1 for p in perm[1:-2]]))
    return groups.src


def _spatial_transpose(node: OnnxNode, b: Builder, perm: list[int]) -> str:
    v = b.views[node.inputs[0]]
    src, idx, lead = v.src, v.index, v.lead
    k = idx.ndim
    if not lead and perm == [k, k + 1, *range(k)]:
        b.views[node.outputs[0]] = SpatialGather(src, idx, True)
    elif lead and perm[:2] == [0, 1] and sorted(perm[2:]) == list(range(2, k + 2)):
        b.views[node.outputs[0]] = SpatialGather(src, idx.transpose([p - 2 for p in perm[2:]]),
                                                 True)
    else:
        raise Unsupported(f"perm={perm} on a gathered spatial view")
    return src


@converts("GatherND")
def gather_nd(node: OnnxNode, b: Builder) -> str:
    """GatherND of spatial positions (constant indices) from an (H, W, N, C) view: how the
    dynamo exporter writes an adaptive average pool whose output does not divide the input."""
    x = node.inputs[0]
    v = b.view(x, SpatialGather)
    if v is None or v.lead or int(node.attr("batch_dims", 0)):
        raise Unsupported("only a gather of spatial positions (batch_dims=0) inside an "
                          "exported adaptive average pool is supported")
    src, idx = v.src, v.index
    ind = b.const(node.inputs[1], "indices").astype(np.int64)
    if ind.shape[-1] != idx.ndim:
        raise Unsupported(f"indices of shape {ind.shape} do not address the {idx.ndim} "
                          "spatial axes")
    ind = ind % np.array(idx.shape)  # negative indices count from the end
    b.views[node.outputs[0]] = SpatialGather(src, idx[tuple(np.moveaxis(ind, -1, 0))], False)
    return src


def _spatial_mean(node: OnnxNode, b: Builder, axes: list[int]) -> str:
    """Mean over some axes of an (N, C, ...) spatial view: out[c, o] = Σ_p S[o, p]·x[c, p]
    with S[o, p] = (number of times position p is averaged into o) / (values averaged), as a
    Dense with weight I_C ⊗ S on the flattened input; ``fold_spatial_maps`` folds it into the
    Gemm that follows (the usual AdaptiveAvgPool -> Flatten -> Linear)."""
    v = b.views[node.inputs[0]]
    src, idx, lead = v.src, v.index, v.lead
    k = idx.ndim
    red = sorted({a % (k + 2) for a in axes})
    if not lead or any(a < 2 for a in red):
        raise Unsupported(f"axes={axes} on a gathered spatial view; only its spatial axes")
    keep = [a - 2 for a in range(2, k + 2) if a not in red]
    g = np.moveaxis(idx, keep, list(range(len(keep))))
    g = g.reshape(int(np.prod([idx.shape[a] for a in keep])), -1)
    c, h, w = b.graph.shape(src)
    smap = np.zeros((g.shape[0], h * w))
    for o in range(g.shape[0]):
        np.add.at(smap[o], g[o], 1.0 / g.shape[1])
    weight = np.kron(np.eye(c), smap).astype(np.float32)
    flat = b.graph.add(b.graph.unique(f"{sanitize(node.name)}_flat"),
                       Flatten(origin=node.origin), [src])
    name = b.add(node, Dense(origin=f"{node.origin} (adaptive average pool)", weight=weight),
                 [flat])
    b.spatial_maps[name] = smap
    b.unchecked.add(node.outputs[0])
    return name


def fold_spatial_maps(b: Builder) -> None:
    """A spatial map M (Dense, no bias) read only by [Flatten →] Dense D becomes part of D:
    D(M·x) = (W_D·W_M)·x (exact up to float rounding)."""
    g = b.graph
    for name, smap in b.spatial_maps.items():
        users = g.users(name)
        if any(b.tensors.get(t) == name for t in b.graph_outputs) or len(users) != 1:
            continue
        nxt = users[0]
        if isinstance(g.op(nxt), Flatten) and len(g.users(nxt)) == 1:
            flat, nxt = nxt, g.users(nxt)[0]
        else:
            flat = None
        d = g.op(nxt)
        if not isinstance(d, Dense) or any(b.tensors.get(t) == flat for t in b.graph_outputs):
            continue
        # W_M = I_C ⊗ S, so W_D·W_M = Σ_o W_D[k, c, o]·S[o, p] per channel (no C²-sized product)
        k, n_out = d.weight.shape[0], smap.shape[0]
        w = np.einsum("kco,op->kcp", d.weight.astype(np.float64).reshape(k, -1, n_out), smap)
        w = w.reshape(k, -1)
        if flat is not None:
            g.bypass(flat)
        g.bypass(name)
        g.replace(nxt, weight=w.astype(np.float32), origin=f"{g.op(nxt).origin} + pool map")


def _fold_permutation(b: Builder, name: str, perm: np.ndarray,
                      reader_ok: Callable[[Node], bool]) -> bool:
    """Move y = x[perm] (IR op ``name``) into the weights of every reader, W·y = W'·x with
    W'[:, perm] = W, when each reader passes ``reader_ok`` and ``name`` is not a graph
    output; False (nothing changed) otherwise."""
    g = b.graph
    users = g.users(name)
    if any(b.tensors.get(t) == name for t in b.graph_outputs) or not users \
            or not all(reader_ok(g.op(u)) for u in users):
        return False
    for u in users:
        op = g.op(u)
        w = np.empty_like(op.weight)
        w[:, perm] = op.weight
        g.replace(u, weight=w, origin=f"{g.op(name).origin} + {op.origin}")
        _compose_index(b, u, perm)
    return True


def _compose_index(b: Builder, reader: str, idx: np.ndarray) -> None:
    """``reader`` read y = x[idx] and now reads x (the index moved into its weights): if the
    reader is itself a channel permutation or selection still to be folded, its own index
    must now count x's channels too, z = y[j] = x[idx[j]] (−1, a zero, stays −1). Without
    this a shuffle followed by the next block's split (ShuffleNet) folded the split's stale
    index into the convolutions after it."""
    for table in (b.permutations, b.channel_selections):
        if reader in table:
            j = table[reader]
            table[reader] = np.where(j >= 0, idx[np.maximum(j, 0)], -1)


def fold_feature_permutations(b: Builder) -> list[str]:
    """A channels-last flatten (x_flat[p]) read only by Dense layers moves into their weights.
    Returns the origins of the flattens it could not fold."""
    return [b.graph.op(name).origin for name, perm in b.feature_perms.items()
            if not _fold_permutation(b, name, perm, lambda op: isinstance(op, Dense))]


def fold_channel_permutations(b: Builder) -> None:
    """A channel permutation y[i] = x[p[i]] whose every reader is a full (groups = 1) Conv2d
    moves into their weights. Otherwise it stays a bias-free 1×1 convolution (exact; it costs
    C² synapses)."""
    for name, perm in b.permutations.items():
        if _fold_permutation(b, name, perm,
                             lambda op: isinstance(op, Conv2d) and op.groups == 1):
            b.graph.bypass(name)


@converts("Pad")
def pad(node: OnnxNode, b: Builder) -> str:
    """A Pad of nothing (torch's opset-9 export puts one before every AvgPool) -> Identity;
    zero padding of H and W (TensorFlow's asymmetric "same", ``F.pad``) -> a padded view that
    the Conv / AveragePool after it takes over as its own padding (exact); zero padding of the
    channels (He et al.'s option-A shortcut), with or without H and W, or of a selection ->
    a selection (``selections``)."""
    x = node.inputs[0]
    mode, pads, value = _pad_args(node, b)
    if not any(pads):
        return b.add(node, Identity(origin=node.origin, onnx_op="Pad"), [b.tensor(x)])
    sel = b.selection(x)
    rank = len(sel.shape) + 1
    if mode != "constant" or value != 0.0 or len(pads) != 2 * rank or pads[0] or pads[rank]:
        raise Unsupported(f"pads={pads}, mode {mode}, value {value}; only zero padding of the "
                          "channels, H and W is supported")
    if rank == 4 and sel.is_identity and not pads[1] and not pads[5] and min(pads) >= 0:
        b.views[node.outputs[0]] = Padded(x, (pads[2], pads[3], pads[6], pads[7]))
        return b.tensor(x)
    for axis in range(1, rank):
        sel = sel.pad(axis - 1, pads[axis], pads[axis + rank], node.origin)
    if min(sel.shape) < 1:
        raise Unsupported(f"pads={pads} remove every entry of an axis")
    b.views[node.outputs[0]] = sel
    return sel.src


def _pad_args(node: OnnxNode, b: Builder) -> tuple[str, list[int], float]:
    """Pad's mode, pads (begin of each axis, then end) and constant value."""
    mode = node.attr("mode", "constant")
    if isinstance(mode, bytes):
        mode = mode.decode()
    pads = node.attr("pads")
    if len(node.inputs) > 1 and node.inputs[1]:
        pads = b.const(node.inputs[1], "pads").reshape(-1).tolist()
    value = float(node.attr("value", 0.0))
    if len(node.inputs) > 2 and node.inputs[2]:
        value = float(b.const(node.inputs[2], "constant_value").reshape(-1)[0])
    if len(node.inputs) > 3 and node.inputs[3]:
        raise Unsupported("the axes input")
    return mode, [int(v) for v in (pads or [])], value


def _slice_args(node: OnnxNode, b: Builder) -> list[tuple[int, int, int, int]]:
    """(start, end, axis, step) per sliced axis (opset ≥ 10 inputs or opset 1's attributes)."""
    if len(node.inputs) > 1:
        starts, ends = (b.const(node.inputs[i], w).reshape(-1).tolist()
                        for i, w in ((1, "starts"), (2, "ends")))
        axes = b.const(node.inputs[3], "axes").reshape(-1).tolist() \
            if len(node.inputs) > 3 and node.inputs[3] else list(range(len(starts)))
        steps = b.const(node.inputs[4], "steps").reshape(-1).tolist() \
            if len(node.inputs) > 4 and node.inputs[4] else [1] * len(starts)
    else:
        starts, ends = list(node.attr("starts", [])), list(node.attr("ends", []))
        axes = list(node.attr("axes", range(len(starts))))
        steps = [1] * len(starts)
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise Unsupported(f"starts {starts}, ends {ends}, axes {axes}, steps {steps} differ "
                          "in length")
    return [(int(a), int(e), int(x), int(s)) for a, e, x, s in zip(starts, ends, axes, steps)]


@converts("Slice")
def slice_(node: OnnxNode, b: Builder) -> str:
    """Slice with constant starts/ends/steps > 0 on C, H, W (or the features of (N, F)) -> a
    selection (``selections``); ONNX's clamping of starts and ends is Python's slicing for
    steps > 0. The batch axis may only be taken whole."""
    x = node.inputs[0]
    sel = b.selection(x)
    rank = len(sel.shape) + 1
    for start, end, axis, step in _slice_args(node, b):
        if not -rank <= axis < rank:
            raise Unsupported(f"axis {axis} out of range for a rank-{rank} input")
        axis %= rank
        if step <= 0:
            raise Unsupported(f"steps={step} on axis {axis}: a negative step (a reversal) or "
                              "zero; only steps > 0 are supported")
        if axis == 0:
            if start != 0 or step != 1 or end < min(_END, b.fixed_batch or _END):
                raise Unsupported(f"it slices the batch axis ({start}:{end}:{step})")
            continue
        kept = np.arange(sel.shape[axis - 1])[start:end:step]
        if not len(kept):
            raise Unsupported(f"{start}:{end}:{step} of axis {axis} is empty")
        sel = sel.take(axis - 1, kept, node.origin)
    b.views[node.outputs[0]] = sel
    return sel.src


def _selection_axis(node: OnnxNode, b: Builder, refusal: str) -> tuple[Selection, int]:
    """The input of a Split or Gather as a selection, and its ``axis`` attribute as 1, 2 or 3
    (C, H or W); any other axis is refused with ``refusal``."""
    sel = b.selection(node.inputs[0])
    rank = len(sel.shape) + 1
    axis = int(node.attr("axis", 0))
    if not -rank <= axis < rank or axis % rank == 0:
        raise Unsupported(f"axis={axis}; {refusal}")
    return sel, axis % rank


@converts("Split")
def split(node: OnnxNode, b: Builder) -> str:
    """Split along C, H or W (``torch.chunk``, shufflenet's channel split) -> one selection
    per output."""
    sel, axis = _selection_axis(node, b, "only C, H or W may be split")
    n = sel.shape[axis - 1]
    sizes = node.attr("split")
    if len(node.inputs) > 1 and node.inputs[1]:
        sizes = b.const(node.inputs[1], "split").reshape(-1).tolist()
    if sizes is None:
        k = len(node.outputs)
        sizes = [-(-n // k)] * (k - 1) + [n - (k - 1) * -(-n // k)]  # opset 18: last smaller
    sizes = [int(v) for v in sizes]
    if len(sizes) != len(node.outputs) or sum(sizes) != n or min(sizes) < 1:
        raise Unsupported(f"split {sizes} into {len(node.outputs)} outputs of an axis of {n}")
    start = 0
    for out, size in zip(node.outputs, sizes):
        if out:
            b.views[out] = sel.take(axis - 1, np.arange(start, start + size), node.origin)
            b.tensors[out] = sel.src
        start += size
    return sel.src


@converts("Gather")
def gather(node: OnnxNode, b: Builder) -> str:
    """Gather of constant indices (a 1-D list; negative ones count from the end) along C, H or
    W of an activation -> a selection."""
    sel, axis = _selection_axis(node, b, "only a gather along C, H or W")
    ind = b.const(node.inputs[1], "indices")
    n = sel.shape[axis - 1]
    if ind.ndim != 1 or not len(ind):
        raise Unsupported(f"indices of shape {ind.shape}; only a 1-D list (a scalar index "
                          "drops the axis)")
    ind = ind.astype(np.int64)
    if np.any((ind < -n) | (ind >= n)):
        raise Unsupported(f"indices {ind.tolist()} out of range for an axis of {n}")
    b.views[node.outputs[0]] = sel.take(axis - 1, ind % n, node.origin)
    return sel.src


#: ONNX TensorProto.FLOAT
_FLOAT = 1


@converts("Cast")
def cast(node: OnnxNode, b: Builder) -> str:
    """Cast of a float activation to float (what exporters write around shape arithmetic and
    ``x.float()``) -> Identity; a selection stays one."""
    to = int(node.attr("to", 0))
    if to != _FLOAT:
        raise Unsupported(f"to={to}; only a cast of an activation to float (1)")
    x = node.inputs[0]
    if sel := b.view(x, Selection):
        b.views[node.outputs[0]] = sel
        return sel.src
    return b.add(node, Identity(origin=node.origin, onnx_op="Cast"), [b.tensor(x)])


def fold_channel_selections(b: Builder) -> None:
    """A channel (feature) selection y = S·x whose every reader is a full (groups = 1) Conv2d
    (a Dense) moves into their weights, W·S·x = W'·x (``selections.fold_into``); otherwise
    it stays a 1×1 Conv2d (Dense) with a 0/1 matrix."""
    g = b.graph
    for name, idx in b.channel_selections.items():
        users = g.users(name)
        kind = Dense if isinstance(g.op(name), Dense) else Conv2d
        if any(b.tensors.get(t) == name for t in b.graph_outputs) or not users or not all(
                type(g.op(u)) is kind and getattr(g.op(u), "groups", 1) == 1 for u in users):
            continue
        c_in = int(g.shape(g.inputs(name)[0])[0])
        for u in users:
            op = g.op(u)
            g.replace(u, weight=fold_into(op.weight, idx, c_in),
                      origin=f"{g.op(name).origin} + {op.origin}")
            _compose_index(b, u, idx)
        g.bypass(name)
