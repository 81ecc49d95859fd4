"""Data-parallel training under ``torchrun``: process-group set-up and rank helpers.

Launch with ``torchrun --nproc_per_node=N -m upres train RECIPE.yaml``: every process draws the
same global batch of ``data.batch`` patches (same seed) and trains on its own shard of it,
gradients are averaged by DistributedDataParallel (so N processes follow the one-process run
with that batch), the logged losses are averaged over the processes, and only rank 0 logs,
validates and writes files. Backend: NCCL on CUDA, gloo on CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["Dist", "setup"]


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def setup(device_type: str) -> Dist:
    """Join the process group that ``torchrun`` describes in the environment (or run alone)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device_type == "cuda":
        torch.cuda.set_device(local)
    return Dist(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local)
