"""Data-parallel training under ``torchrun``: process-group set-up and rank helpers.

Launch with ``torchrun --nproc_per_node=N -m upres train RECIPE.yaml``: every process draws the
same global batch of ``data.batch`` patches (same seed) and trains on its own shard of it,
gradients are averaged by DistributedDataParallel (so N processes follow the one-process run
with that batch), the logged losses are averaged over the processes, and only rank 0 logs,
validates and writes files. Backend: NCCL on CUDA, gloo on CPU.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from dataclasses import dataclass
from typing import NoReturn

import torch
import torch.distributed as dist

__all__ = ["Dist", "end_process", "left", "setup", "teardown"]

_OWNED = False  # setup() made the process group (teardown ends it)
_LEFT = False  # teardown() ended it: the process ends through end_process


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
    global _OWNED
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
        _OWNED = True  # (a group the caller made is the caller's to end)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device_type == "cuda":
        torch.cuda.set_device(local)
    return Dist(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local)


def teardown() -> bool:
    """Leave the process group that :func:`setup` made, if it made one (every torchrun process
    calls it when its training ends, however it ends; a group the caller had made stays);
    returns whether it did, and from then on :func:`left` says so."""
    global _OWNED, _LEFT
    if not (_OWNED and dist.is_available() and dist.is_initialized()):
        return False
    dist.destroy_process_group()
    _OWNED, _LEFT = False, True
    return True


def left() -> bool:
    """Whether this process has left a process group that :func:`setup` made: it should then
    end through :func:`end_process`."""
    return _LEFT


def end_process(code: int) -> NoReturn:
    """End a torchrun process that has left its group (:func:`teardown`) with exit status
    ``code``, its output flushed, without the interpreter's shutdown. The group itself outlives
    ``destroy_process_group`` (DistributedDataParallel's reducer keeps it in C++), so gloo's
    worker threads run on into shutdown, and one that frees its last finished collective then
    takes the GIL and aborts the process ("terminate called without an active exception",
    SIGABRT): seen once in CI and in 4 of 117 two-process runs here, always the rank that
    finishes first. Everything the run writes is closed before this point."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)
