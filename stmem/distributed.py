"""One process per device under torchrun (DistributedDataParallel); a single process otherwise.

Every rank trains on its shard of each epoch's order; rank 0 alone evaluates
and writes. gloo on CPU, nccl on CUDA.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but no CUDA device is available")
    return torch.device(name)


@dataclass
class Ranks:
    rank: int
    world: int
    device: torch.device
    owns_group: bool  # this process started the process group, so it ends it

    @property
    def ddp(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        if not self.ddp:
            return model
        # The memory write can sit out a step (a curriculum epoch of one
        # segment, a batch of empty segments): its parameters then get no gradient.
        return DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                                       find_unused_parameters=True)

    def no_sync(self, model: torch.nn.Module, last: bool):
        """DDP all-reduces the gradients on a step's last backward only."""
        return model.no_sync() if self.ddp and not last else contextlib.nullcontext()

    def shard(self, order: list[int]) -> list[int]:
        # every world-th example, the order padded by wrapping round so that
        # all ranks make the same number of steps
        pad = -len(order) % self.world
        return (order + order[:pad])[self.rank::self.world]

    def sum(self, *values: float) -> list[float]:
        if not self.ddp:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def agree(self, flag: bool) -> bool:
        """Rank 0's decision, on every rank."""
        if not self.ddp:
            return flag
        box = [flag]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.ddp:
            dist.barrier()

    def close(self) -> None:
        if self.owns_group:
            dist.destroy_process_group()


def setup(device_name: str) -> Ranks:
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    device = resolve_device(device_name)
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    owns = world > 1 and not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Ranks(rank, world, device, owns)
