"""``--engine ray``: the same job on a Ray cluster (an existing one, or a local one started here).

Each worker is a Ray actor that loads the model once and processes chunks of items with
:func:`upres.jobs.process_item` (decode, upscale, commit its own outputs), returning only the
small status rows; the driver keeps a bounded number of chunks in flight and writes the rows to
the report. Delivery is at least once: an actor whose process dies is restarted by Ray and the
driver runs its unfinished chunk again (one input at a time after a second loss; an input that
has killed :data:`LOSSES` workers is reported failed); the commit by hard link makes the
outputs exactly-once (an output already committed is reported ``exists``). Workers that do
not start (not placeable, or the model fails to load) are said and left out.
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
#: Losses of a worker on one input before that input is reported failed.
LOSSES = 3
#: Seconds the first worker gets to start (be placed and load the model), then the others.
START_SECONDS = 600.0
GRACE_SECONDS = 60.0
#: Seconds a worker that lost a chunk gets to answer (restarted) before it leaves the rotation;
#: the driver waits that long, once per loss.
ALIVE_SECONDS = 15.0


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

        torch.set_num_threads(max(1, threads))
        self.spec = spec
        self.up = self._load(spec.model, spec.scale)
        self.opts = opts
        # any output size with the default model: each scale's own, as a local run does
        self.by_scale: dict[int, Any] | None = (
            {self.up.scale: self.up} if opts.size is not None and spec.model == "auto" else None)

    def _load(self, model: str, scale: int | None) -> Any:
        import upres

        s = self.spec
        return upres.load(model, device=s.device, precision=s.precision, scale=scale,
                          backend=s.backend, ensemble=s.ensemble, denoise=s.denoise,
                          int8_runtime=s.int8_runtime)

    def _upscaler_for(self, scale: int) -> Any:
        assert self.by_scale is not None
        if scale not in self.by_scale:
            self.by_scale[scale] = self._load("auto", scale)
        return self.by_scale[scale]

    def pid(self) -> int:
        return os.getpid()

    def run(self, chunk: list[tuple[str, str, bool]]) -> list[Row]:
        from pathlib import Path

        from upres.convert import Session
        from upres.jobs import process_item

        session = Session()
        pick = self._upscaler_for if self.by_scale is not None else None
        return [process_item(self.up, Item(Path(s), Path(b), listed), self.opts,
                             session=session, upscaler_for=pick) for s, b, listed in chunk]


def _started(actors: list[Any], ray: Any, say: Callable[[str], None]) -> list[Any]:
    """The actors that came up (model loaded): the first within :data:`START_SECONDS`, the
    others within :data:`GRACE_SECONDS` more; the rest are killed (not placeable on this
    cluster, or their model failed to load: said once). None up: UpresError with the first
    worker's error."""
    pings = {a.pid.remote(): a for a in actors}
    first_up, rest = ray.wait(list(pings), num_returns=1, timeout=START_SECONDS)
    more, _ = ray.wait(rest, num_returns=len(rest), timeout=GRACE_SECONDS) if first_up and rest \
        else ([], rest)
    ready = first_up + more
    up, first = [], None
    for ref in ready:
        try:
            ray.get(ref)
            up.append(pings[ref])
        except Exception as exc:  # the model did not load there
            first = first or exc
    for a in set(pings.values()) - set(up):
        with contextlib.suppress(Exception):
            ray.kill(a)
    why = (" ".join(str(first).split())[-300:] if first is not None else
           "not placed and loaded in time: fewer free CPUs/GPUs than --workers asks, or a "
           "slow start")
    if not up:
        raise UpresError(f"no Ray worker started ({why})")
    if len(up) < len(actors):
        say(f"ray: {len(actors) - len(up)} of {len(actors)} worker(s) did not start ({why})")
    return up


def _alive(actor: Any, ray: Any) -> bool:
    try:
        ray.get(actor.pid.remote(), timeout=ALIVE_SECONDS)
    except Exception:
        return False
    return True


def _after_loss(todo: deque, tries: int, chunk: list, exc: Exception) -> list[Row]:
    """Requeue a chunk whose worker died (split into single inputs after the second loss), or
    the failed rows of a single input that has now killed :data:`LOSSES` workers."""
    tries += 1
    if tries < LOSSES:
        if tries >= 2 and len(chunk) > 1:
            todo.extendleft((tries, [it]) for it in reversed(chunk))
        else:
            todo.appendleft((tries, chunk))
        return []
    if len(chunk) > 1:
        todo.extendleft((tries - 1, [it]) for it in reversed(chunk))
        return []
    s = chunk[0][0]
    return [Row(input=s, output=None, status="failed",
                error=f"{s}: the worker died on this input {tries} times (out of memory, or "
                      f"a decoder crash: {type(exc).__name__})")]


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
        else:  # "local": a new cluster here, never one named by RAY_ADDRESS or a running one
            ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False,
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
                                           max_restarts=-1, max_task_retries=0)
        actors = _started([Actor.remote(spec, opts, threads) for _ in range(workers)], ray,
                          say)
        say(f"ray: {len(actors)} worker(s) on {int(res.get('CPU', 0))} CPU(s)"
            + (f" and {res.get('GPU', 0):g} GPU(s)" if res.get("GPU") else "")
            + f", {len(items)} input(s)")
        todo = deque((0, c) for c in _chunks(items, CHUNK))  # (workers lost on it, chunk)
        in_flight: dict[Any, tuple[int, int, list]] = {}
        live = set(range(len(actors)))
        free = deque(range(len(actors))) * 2  # two chunks per actor in flight
        while todo or in_flight:
            while todo and free:
                a = free.popleft()
                if a not in live:
                    continue
                tries, chunk = todo.popleft()
                in_flight[actors[a].run.remote(chunk)] = (a, tries, chunk)
            if not in_flight:
                raise UpresError("every Ray worker has died; the inputs not reported were not "
                                 "done (rerun the same command to do them)")
            done, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in done:
                a, tries, chunk = in_flight.pop(ref)
                try:
                    rows = ray.get(ref)
                except ray.exceptions.RayActorError as exc:
                    # the worker died on this chunk (Ray restarts it; the driver retries): try
                    # it again, one input at a time after a second loss, and give up on an
                    # input that kills workers (a decoder crash, the memory killer); a worker
                    # that does not come back (its node lost) leaves the rotation
                    if not _alive(actors[a], ray):
                        live.discard(a)
                    else:
                        free.append(a)
                    rows = _after_loss(todo, tries, chunk, exc)
                    if not rows:
                        continue
                except ray.exceptions.RayTaskError as exc:
                    rows = [Row(input=s, output=None, status="failed",
                                error=f"{s}: worker error ({type(exc.cause).__name__})")
                            for s, _, _ in chunk]
                    free.append(a)
                else:
                    free.append(a)
                on_rows(rows)
    finally:
        for a in actors:
            with contextlib.suppress(Exception):  # the cluster may be going away
                ray.kill(a)
        ray.shutdown()
        if started:
            sys.stderr.flush()
