"""``--engine ray``: the same job on a Ray cluster (an existing one, or a local one started here).

Each worker is a Ray actor that loads the model once and processes chunks of items with
:func:`upres.jobs.process_item` (decode, upscale, commit its own outputs), returning only the
small status rows; the driver keeps a bounded number of chunks in flight and writes the rows to
the report. Ray delivers at least once: an actor whose process dies is restarted and its
unfinished chunk runs again (``max_restarts`` / ``max_task_retries``); the commit by hard link
makes the outputs exactly-once (an output already committed is reported ``exists``).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from upres.errors import UpresError
from upres.jobs import Item, JobOptions, Row

__all__ = ["ModelSpec", "run_ray"]

#: Items per task: large enough that Ray's per-task cost is small, small enough that a killed
#: worker loses little and stragglers balance.
CHUNK = 8


@dataclass(frozen=True)
class ModelSpec:
    """What each worker passes to :func:`upres.load`."""

    model: str
    scale: int | None
    device: str = "auto"
    precision: str = "default"
    backend: str = "torch"
    ensemble: int = 1
    denoise: float | str = "auto"
    int8_runtime: str | None = None


class _Worker:
    """A Ray actor: the model, loaded once, and :func:`process_item` over chunks."""

    def __init__(self, spec: ModelSpec, opts: JobOptions, threads: int) -> None:
        import torch

        import upres

        torch.set_num_threads(max(1, threads))
        self.up = upres.load(spec.model, device=spec.device, precision=spec.precision,
                             scale=spec.scale, backend=spec.backend, ensemble=spec.ensemble,
                             denoise=spec.denoise, int8_runtime=spec.int8_runtime)
        self.opts = opts

    def pid(self) -> int:
        return os.getpid()

    def run(self, chunk: list[tuple[str, str, bool]]) -> list[Row]:
        from pathlib import Path

        from upres.convert import Session
        from upres.jobs import process_item

        session = Session()
        return [process_item(self.up, Item(Path(s), Path(b), listed), self.opts,
                             session=session) for s, b, listed in chunk]


def _chunks(items: list[Item], size: int) -> Iterator[list[tuple[str, str, bool]]]:
    for i in range(0, len(items), size):
        yield [(str(it.src), str(it.base), it.listed) for it in items[i:i + size]]


def run_ray(items: list[Item], opts: JobOptions, spec: ModelSpec, *,
            address: str | None = None, workers: int | None = None,
            gpus_per_worker: float = 0.0, cpus_per_worker: float = 1.0,
            on_rows: Callable[[list[Row]], None], say: Callable[[str], None]) -> None:
    """Process ``items`` on a Ray cluster; every row goes to ``on_rows`` as it arrives.

    ``address``: ``auto`` (the cluster this machine belongs to), ``HOST:PORT``, or None to
    start a local one (loopback only, no dashboard, a 256 MB object store: only status rows
    travel). ``workers``: actors (default: the cluster's CPUs / ``cpus_per_worker``, or its
    GPUs / ``gpus_per_worker``).
    """
    if not address and "ray" not in sys.modules:
        # a cluster of this machine alone: Ray then binds and talks on 127.0.0.1 only
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError:
        raise UpresError("--engine ray needs Ray: pip install 'upres[ray]'") from None
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    started = False
    try:
        if address:
            ray.init(address=address, logging_level="ERROR", log_to_driver=False,
                     include_dashboard=False)
        else:
            ray.init(_node_ip_address="127.0.0.1", include_dashboard=False,
                     object_store_memory=256 * 2**20, logging_level="ERROR",
                     log_to_driver=False)
            started = True
    except Exception as exc:
        raise UpresError(f"cannot reach a Ray cluster at {address or 'a new local one'} "
                         f"({' '.join(str(exc).split())[:200]})") from None
    actors: list[Any] = []
    try:
        res = ray.cluster_resources()
        if workers is None:
            if gpus_per_worker:
                workers = max(1, int(res.get("GPU", 0) / gpus_per_worker))
            else:
                workers = max(1, int(res.get("CPU", 1) / cpus_per_worker))
        threads = max(1, int(cpus_per_worker))
        Actor = ray.remote(_Worker).options(num_cpus=cpus_per_worker, num_gpus=gpus_per_worker,
                                           max_restarts=-1, max_task_retries=-1)
        actors = [Actor.remote(spec, opts, threads) for _ in range(workers)]
        say(f"ray: {workers} worker(s) on {int(res.get('CPU', 0))} CPU(s)"
            + (f" and {res.get('GPU', 0):g} GPU(s)" if res.get("GPU") else "")
            + f", {len(items)} input(s)")
        todo = deque(_chunks(items, CHUNK))
        in_flight: dict[Any, tuple[int, list]] = {}
        free = deque(range(workers)) * 2  # two chunks per actor in flight
        while todo or in_flight:
            while todo and free:
                a = free.popleft()
                chunk = todo.popleft()
                in_flight[actors[a].run.remote(chunk)] = (a, chunk)
            done, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in done:
                a, chunk = in_flight.pop(ref)
                try:
                    rows = ray.get(ref)
                except ray.exceptions.RayActorError:
                    # retries exhausted or the actor is gone for good: run it elsewhere
                    todo.appendleft(chunk)
                    free.append((a + 1) % workers)
                    continue
                except ray.exceptions.RayTaskError as exc:
                    rows = [Row(input=s, output=None, status="failed",
                                error=f"{s}: worker error ({type(exc.cause).__name__})")
                            for s, _, _ in chunk]
                free.append(a)
                on_rows(rows)
    finally:
        for a in actors:
            with contextlib.suppress(Exception):  # the cluster may be going away
                ray.kill(a)
        ray.shutdown()
        if started:
            sys.stderr.flush()
