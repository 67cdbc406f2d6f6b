"""torch.distributed in one place: the process group, this process's rank and the few collectives
the toolchain needs (all-reduce of statistics, all-gather of per-sample results, broadcast);
fine-tuning uses torch's DistributedDataParallel on this process group.

``torchrun --nproc-per-node N -m snncompile ARGS`` starts N copies of the CLI with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` set; ``init()`` joins them into
one process group (gloo: the collectives here move CPU tensors; each rank picks GPU
``LOCAL_RANK`` mod the GPU count when CUDA is present). Without those variables everything here
is the single-process identity: rank 0 of a world of 1, collectives return their input.

Sharding is by whole batches in contiguous blocks (``shard``): rank r of W gets batches
[r·nb/W, (r+1)·nb/W) of the nb global batches, so the ranks' results concatenated in rank order
are the single-process order, and every batch is the same set of samples whatever W is.

Sums of integer counts and maxima are exact whatever the reduction order; float sums (gradients)
are not bit-identical to a single process's (a different summation order).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
import torch.distributed as dist


def env_world() -> int:
    """WORLD_SIZE from the environment (torchrun sets it), 1 without it."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init() -> bool:
    """Join the process group torchrun describes (idempotent). Returns True when distributed."""
    if env_world() <= 1:
        return False
    if not dist.is_initialized():
        if torch.cuda.is_available():  # more ranks than GPUs share them round-robin
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local % torch.cuda.device_count())
        dist.init_process_group(backend="gloo")
    return True


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if active():
        dist.barrier()


def shard(n_batches: int, r: int | None = None, w: int | None = None) -> range:
    """The global batch indices rank ``r`` of ``w`` processes (default: this one) handles."""
    r = rank() if r is None else r
    w = world() if w is None else w
    return range(r * n_batches // w, (r + 1) * n_batches // w)


def all_reduce(a: np.ndarray, op: str = "sum") -> np.ndarray:
    """Element-wise ``sum`` or ``max`` of ``a`` over all ranks (same shape and dtype on every
    rank). Integer sums and maxima are exact."""
    if not active():
        return a
    t = torch.from_numpy(np.ascontiguousarray(a))
    dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return t.numpy()


def all_gather(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order."""
    if not active():
        return [obj]
    out: list[Any] = [None] * world()
    dist.all_gather_object(out, obj)
    return out


def broadcast(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
