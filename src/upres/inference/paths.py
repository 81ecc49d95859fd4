"""The cache of measured choices: which path (fp32, bf16, int8) a model ran fastest on this
machine for ``precision="auto"``, in which memory format (channels_last or contiguous), and which
runtime (onnxruntime, OpenVINO) ran its int8 graph faster, so that only the first load pays for
the measurement.

One JSON file, ``<cache_dir>/precision.json`` (:func:`upres.quantize.cache_dir`), maps a key
(the model's name and weights, the candidates, the machine: CPU model and instruction sets,
thread count, torch, onnxruntime and OpenVINO versions) to what was measured and chosen. A file
that is missing, damaged or unwritable only means measuring again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from upres.models.descriptor import ModelCard

__all__ = ["cache_key", "cpu_info", "describe", "has_native_bf16", "lookup", "machine_signature",
           "record"]

# Instruction sets that change which path is fastest.
_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_tile",
          "amx_bf16", "amx_int8", "avx512_fp16")


def _cpuinfo() -> tuple[str, set[str] | None]:
    """``(CPU model name, every flag of /proc/cpuinfo's first processor)``; the platform's
    processor name and None where no flags line can be read."""
    model, flags = platform.processor() or platform.machine(), None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and ":" in line:
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and ":" in line:
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    return model, flags


def cpu_info() -> tuple[str, list[str]]:
    """``(CPU model name, the instruction sets of :data:`_FLAGS` it has)``, from /proc/cpuinfo
    (the platform's processor name and no sets where that cannot be read)."""
    model, flags = _cpuinfo()
    return model, [f for f in _FLAGS if f in (flags or ())]


def has_native_bf16() -> bool:
    """Whether bf16 can be worth timing on this CPU: on x86, only with bf16 instructions
    (AVX512_BF16 or AMX-BF16; without them PyTorch's bf16 convolutions are emulated, measured
    10x to 300x slower than fp32 on an AVX2-only EPYC); True where the instruction sets
    cannot be read or the CPU is not x86 (there it is measured)."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return True
    flags = _cpuinfo()[1]
    return flags is None or "avx512_bf16" in flags or "amx_bf16" in flags


def machine_signature() -> str:
    """``"<CPU model> | <instruction sets> | <threads> threads | torch X | onnxruntime Y |
    openvino Z"`` (``none`` for a runtime not installed)."""
    model, sets = cpu_info()
    try:
        import onnxruntime

        ort = onnxruntime.__version__
    except ImportError:
        ort = "none"
    try:  # the installed version, without loading the runtime
        from importlib.metadata import PackageNotFoundError, version

        ov = version("openvino")
    except (PackageNotFoundError, ValueError):
        ov = "none"
    isa = " ".join(sets) or "-"
    return (f"{model} | {isa} | {torch.get_num_threads()} threads | torch {torch.__version__} | "
            f"onnxruntime {ort} | openvino {ov}")


def _file() -> Path:
    from upres.quantize import cache_dir

    return cache_dir() / "precision.json"


def cache_key(model: nn.Module, card: ModelCard, candidates: list[str]) -> str:
    """The key of one model (name and a hash of its weights), its candidate paths and this
    machine."""
    from upres import quantize
    from upres.models.weights import state_sha256

    h = hashlib.sha256(state_sha256(model).encode())
    h.update(f"{quantize._QUANTISER}|{quantize.PERCENTILE}|{quantize.INT8_RULE_DB}".encode())
    h.update(quantize.calibration_sha256().encode())
    return f"{card.name} {h.hexdigest()[:16]} {'/'.join(candidates)} | {machine_signature()}"


def _read() -> dict[str, Any]:
    try:
        data = json.loads(_file().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError, RuntimeError, RecursionError):
        return {}


def lookup(key: str) -> dict[str, Any] | None:
    """The cached entry for ``key`` (``precision``, ``times_ms``, ``int8_loss_db``,
    ``measured``, and ``channels_last`` where the memory format was measured), or None."""
    entry = _read().get(key)
    if not (isinstance(entry, dict) and isinstance(entry.get("precision"), str)
            and isinstance(entry.get("times_ms"), dict)):
        return None
    num = (int, float)
    if not all(isinstance(k, str) and isinstance(v, num) for k, v in entry["times_ms"].items()):
        return None
    if not isinstance(entry.get("int8_loss_db"), (*num, type(None))):
        return None
    if not isinstance(entry.get("channels_last"), (bool, type(None))):
        return None
    return entry


def record(key: str, precision: str, times: dict[str, float],
           int8_loss: float | None, *, channels_last: bool | None = None) -> dict[str, Any]:
    """Store a measured choice (``times`` in seconds; ``channels_last``: the memory format
    chosen, where it was measured) and return its entry. The file is rewritten atomically;
    failing to write it is not an error."""
    entry = {"precision": precision,
             "times_ms": {k: round(v * 1e3, 2) for k, v in times.items()},
             "int8_loss_db": None if int8_loss is None else round(int8_loss, 4),
             "measured": time.strftime("%Y-%m-%d %H:%M")}
    if channels_last is not None:
        entry["channels_last"] = channels_last
    path = _file()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.part")
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
    with _THREADS, _locked(path):  # read, add, write as one step (see _locked)
        data = _read()
        data[key] = entry
        try:
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
            os.replace(tmp, path)
        except OSError:
            tmp.unlink(missing_ok=True)
    return entry


_THREADS = threading.Lock()  # record() in this process (flock alone is per open file)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``<path>.lock`` (POSIX ``flock``) while the cache is read and
    rewritten: without it, processes measuring different models at once (a server's workers,
    a batch on a shared cache folder) each wrote the file as they had read it, and all but
    the last one's entry was lost, to be measured again at the next load. No lock where the
    folder cannot be written (the write fails anyway) or ``fcntl`` is missing (Windows)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    try:
        fd = os.open(path.with_name(f"{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        yield
        return
    try:
        with contextlib.suppress(OSError):  # no locks here (NFS without lockd): go on without
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def describe(entry: dict[str, Any], *, cached: bool = False) -> str:
    """One line on what was measured: ``a 128x128 tile took 12.0 ms in fp32, ...``."""
    from upres.quantize import INT8_RULE_DB, loss_words

    order = ("fp32", "fp32 channels_last", "fp32 contiguous", "bf16", "bf16 channels_last",
             "bf16 contiguous", "int8", "int8-onnxruntime", "int8-openvino")
    ms = sorted(entry["times_ms"].items(), key=lambda kv: order.index(kv[0])
                if kv[0] in order else len(order))
    times = ", ".join(f"{v:.1f} ms in {k}" for k, v in ms)
    loss = entry.get("int8_loss_db")
    extra = ""
    if loss is not None:
        extra = (f"; int8 {loss_words(loss)} PSNR-Y on the calibration crops"
                 + ("" if loss <= INT8_RULE_DB else
                    f", over the {INT8_RULE_DB} dB rule, not a candidate"))
    if entry.get("channels_last") is not None and entry["precision"] != "int8":
        extra += f"; {'channels_last' if entry['channels_last'] else 'contiguous'} format"
    when = f"cached from {entry.get('measured', '?')}: " if cached else ""
    return f"{when}a 128x128 tile took {times}{extra}"
