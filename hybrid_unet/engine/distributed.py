"""torchrun data parallelism: process group, rank-disjoint data, reductions, sync checks.

Every rank runs the same config in the same run dir; only rank 0 writes, logs and saves.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Sampler


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job (``world_size == 1`` without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group torchrun describes (gloo on CPU, nccl on CUDA), if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


class RankSampler(Sampler[int]):
    """Item indices of global batch ``n`` for this rank: ``((n * W + rank) * B + j)``.

    Ranks draw disjoint items, and the data order still depends only on the step (so a
    resume at ``start_batch`` continues it). With ``W = 1`` it is ``StepSampler(n * B)``.
    """

    def __init__(self, start_batch: int, batch_size: int, rank: int, world_size: int) -> None:
        self.start, self.batch_size, self.rank, self.world = (
            start_batch,
            batch_size,
            rank,
            world_size,
        )

    def __iter__(self) -> Iterator[int]:
        n = self.start
        while True:
            first = (n * self.world + self.rank) * self.batch_size
            yield from range(first, first + self.batch_size)
            n += 1


def mean_over_ranks(value: float, info: DistInfo) -> float:
    """The mean of ``value`` over ranks (the value itself without torchrun)."""
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / info.world_size


def any_rank(flag: bool, info: DistInfo) -> bool:
    """True on every rank once any rank says so (a stop signal must stop all together)."""
    if not info.enabled:
        return flag
    t = torch.tensor([int(flag)])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def gather_lists(items: list, info: DistInfo) -> list:
    """Concatenate every rank's ``items`` (picklable objects), in rank order."""
    if not info.enabled:
        return items
    parts: list = [None] * info.world_size
    dist.all_gather_object(parts, items)
    return [x for part in parts for x in part]


def weights_digest(model: torch.nn.Module) -> str:
    """A hash of every tensor in the state dict: equal digests mean bitwise-equal weights."""
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]
