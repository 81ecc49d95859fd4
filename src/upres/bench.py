"""Latency, throughput and peak memory of models on one input size (``upres bench``).

Each model is measured in a fresh child process, so that its peak RSS is its own: the figure is
the whole process (Python, torch and the model), as a user running ``upres`` would see it.
"""

from __future__ import annotations

import multiprocessing as mp
import platform
import resource
import statistics
import time
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["BenchResult", "bench", "machine", "peak_rss_mb", "run_peak_rss"]


@dataclass(frozen=True)
class BenchResult:
    """One measurement; the JSON schema of ``upres bench --json``."""

    model: str
    scale: int
    input: str  # "WxH"
    device: str
    precision: str
    latency_ms: float  # median over the timed runs, after warm-up
    mpix_per_s: float  # output megapixels per second
    peak_rss_mb: float
    channels_last: bool = False
    backend: str = "torch"  # torch (eager), onnxruntime, or openvino (an int8 graph on it)
    ensemble: int = 1  # self-ensemble size (network runs per tile)

    def to_json(self) -> dict:
        return asdict(self)


def machine() -> str:
    """A one-line description of this machine (CPU model, cores, torch version)."""
    import os

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith(
                "model name"))
    except (OSError, StopIteration):
        pass
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads")


def _frame(width: int, height: int) -> np.ndarray:
    """A real photo (the bundled sample) resized to ``width x height``, uint8 RGB."""
    from pathlib import Path

    from upres.formats.image import read_rgb8
    from upres.resize import imresize

    sample = read_rgb8(Path(__file__).parent / "assets" / "butterfly.png")
    return imresize(sample, size=(height, width))


def peak_rss_mb(pid: int | None = None) -> float:
    """Peak resident memory in MB of process ``pid`` (this process when None).

    On Linux, ``VmHWM`` of ``/proc/PID/status``: ``getrusage`` would also count the memory
    image that the program replaced at exec (the parent's, for a spawned or forked child).
    Elsewhere, this process's ``ru_maxrss``, or NaN for another process.
    """
    try:
        with open(f"/proc/{pid or 'self'}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    if pid is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return float("nan")


# Runs argv[1:], passes its stderr on and prints its peak RSS (kB). Being a small process, it
# keeps the child's figure clean of the caller's memory, which Linux would otherwise count as
# the child's at exec.
_LAUNCHER = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], stderr="
             "subprocess.PIPE); sys.stderr.buffer.write(r.stderr); print(resource.getrusage("
             "resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)")


def run_peak_rss(cmd: list[str]) -> tuple[int, str, float]:
    """Run ``cmd`` (Linux) and return ``(exit status, stderr, peak RSS in MB)`` of that program
    alone, whatever the size of the calling process."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _LAUNCHER, *cmd], capture_output=True,
                          text=True)
    lines = proc.stdout.split()
    return proc.returncode, proc.stderr, (int(lines[-1]) / 1024 if lines else float("nan"))


def _measure(model: str, scale: int, width: int, height: int, device: str, precision: str,
             repeat: int, warmup: int, channels_last: bool | None, backend: str,
             ensemble: int, int8_runtime: str | None = None) -> dict:
    import upres

    up = upres.load(model, device=device, precision=precision, scale=scale,
                    channels_last=channels_last, backend=backend, ensemble=ensemble,
                    int8_runtime=int8_runtime)
    img = _frame(width, height)
    for _ in range(warmup):
        up.upscale(img, tile=0)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        out = up.upscale(img, tile=0)
        times.append(time.perf_counter() - t)
    lat = statistics.median(times)
    dev = str(getattr(up, "device", "cpu"))
    peak = peak_rss_mb()
    return BenchResult(
        model=model, scale=up.scale, input=f"{width}x{height}", device=dev,
        precision=getattr(up, "precision", "fp32"), latency_ms=round(lat * 1000, 2),
        mpix_per_s=round(out.shape[0] * out.shape[1] / 1e6 / lat, 3),
        peak_rss_mb=round(peak, 1), channels_last=bool(getattr(up, "channels_last", False)),
        backend=getattr(up, "int8_runtime", "") or getattr(up, "backend", "torch"),
        ensemble=getattr(up, "ensemble", 1),
    ).to_json()


def bench(model: str, *, scale: int, width: int = 320, height: int = 180, device: str = "cpu",
          precision: str = "default", repeat: int = 10, warmup: int = 2,
          channels_last: bool | None = None, backend: str = "torch",
          ensemble: int = 1, int8_runtime: str | None = None) -> BenchResult:
    """Measure one model in a child process; see :class:`BenchResult` (``int8_runtime``:
    as :func:`upres.load`)."""
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        res = pool.apply(_measure, (model, scale, width, height, device, precision, repeat,
                                    warmup, channels_last, backend, ensemble, int8_runtime))
    return BenchResult(**res)
