"""OpenVINO as a second runtime for upres's int8 graphs (``pip install 'upres[openvino]'``).

:class:`OvNet` runs the same serialized ONNX graph an :class:`~upres.export.OnnxNet` runs (the
int8 QDQ graphs of :mod:`upres.quantize`) on OpenVINO's CPU plugin, behind the same interface
(:class:`~upres.export.GraphNet`), so the :class:`~upres.inference.upscaler.Upscaler` treats
both alike. The layers the graph keeps in float32 stay float32 (``INFERENCE_PRECISION_HINT``
f32: OpenVINO would otherwise run them in bf16 on CPUs that have it), so its output matches
onnxruntime's to rounding: on tiny-x2 at 1280x720, 0.08 % of output pixels differ, by one 8-bit
level. Whether it is faster than onnxruntime is measured per model and machine (the Upscaler
times both once and caches the choice).

Shapes: OpenVINO compiles a model per input shape (a model compiled for any shape gave wrong
int8 outputs here, OpenVINO 2026.4: off by up to 0.5 everywhere), which takes 50-200 ms, so a
shape is compiled when it is seen a second time (tiles of one shape in a large image, images of
one size) and runs on onnxruntime (the same graph, the same values to rounding) until then,
and while another shape compiles: a whole image of a size seen once never waits for a compile,
a tiled image compiles its tile shapes as they repeat. The last :data:`SHAPES` compiled models
are kept, each with its own pool of infer requests, so evicting a model frees its requests
too; an evicted shape must be seen twice again. A compile that fails is said once on stderr,
and the network runs on onnxruntime from then on.
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from typing import Any

import numpy as np
import torch

from upres.errors import UpresError, one_line
from upres.export import GraphNet, OnnxNet, _with_uint8_output

__all__ = ["SHAPES", "OvNet", "available"]

# input shapes kept compiled per network, over both outputs (float and 8-bit pixels)
SHAPES = 16


def available() -> bool:
    """Whether OpenVINO can be imported here."""
    try:
        import openvino  # noqa: F401
    except Exception:  # ImportError, or a broken install raising its own error
        return False
    return True


class _Compiled:
    """One compiled model and its idle infer requests."""

    def __init__(self, compiled: Any) -> None:
        self.compiled = compiled
        self.idle: list[Any] = []


class OvNet(GraphNet):
    """An ONNX graph on OpenVINO's CPU plugin, with :class:`~upres.export.GraphNet`'s interface:
    ``forward`` takes float32 ``(N, C, H, W)`` on CPU and gives the graph's float32 output;
    :meth:`uint8_hwc` gives uint8 ``(H', W', C)`` pixels (the graph's output clipped to [0, 1],
    times 255, rounded half up), computed inside OpenVINO (inside onnxruntime for a shape
    not compiled yet: below ``compile_at`` sightings, while another shape compiles, or after
    a failed compile; see the module's note on shapes). CPU only; safe to call from several
    threads. Errors (a graph OpenVINO cannot read, compile or run) are :class:`UpresError`."""

    runtime = "openvino"

    def __init__(self, model: bytes, *, threads: int = 0) -> None:
        super().__init__()
        try:
            import openvino as ov
        except Exception as exc:
            raise UpresError(f"OpenVINO cannot be imported here ({one_line(exc, 120)}); "
                             "pip install 'upres[openvino]'") from None
        self._config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32",
                        "INFERENCE_NUM_THREADS": int(threads or torch.get_num_threads())}
        self._src = model
        try:
            self._core = ov.Core()
            self._models: dict[str, Any] = {"float": self._core.read_model(model)}
        except Exception as exc:  # OpenVINO's own error types
            raise UpresError(f"OpenVINO cannot read this graph ({one_line(exc, 200)})") from None
        self._static: OrderedDict[tuple[str, tuple[int, ...]], _Compiled] = OrderedDict()
        self._seen: OrderedDict[tuple[str, tuple[int, ...]], int] = OrderedDict()
        self._lock = threading.Lock()  # the tables above; held only for lookups
        self._compiling = threading.Lock()  # one compile at a time, outside self._lock
        self._u8_lock = threading.Lock()
        self._u8: bool | None = None
        self._ort = OnnxNet(model, threads=threads)  # shapes not compiled (yet)
        self.failed = ""  # why OpenVINO stopped compiling for this network ("" = it did not)
        self.compiles = 0  # models compiled so far (for tests and benchmarks)
        # the sighting of a shape that compiles it (1: every shape runs on OpenVINO, as
        # benchmarks of its quality need)
        self.compile_at = 2

    def _compile(self, which: str, shape: tuple[int, ...]) -> _Compiled:
        try:
            model = self._models[which].clone()
            model.reshape({0: list(shape)})
            compiled = self._core.compile_model(model, "CPU", self._config)
        except MemoryError:
            raise
        except Exception as exc:  # OpenVINO's own error types
            raise UpresError(f"OpenVINO cannot compile this graph at input {shape} "
                             f"({one_line(exc, 200)})") from None
        self.compiles += 1
        return _Compiled(compiled)

    def _entry(self, which: str, shape: tuple[int, ...]) -> _Compiled | None:
        """The model compiled for ``shape``: kept, or compiled now where this is the shape's
        ``compile_at``-th sighting (or later) and no other compile is running (with
        ``compile_at`` 1, it waits for it); None (run it on onnxruntime) else."""
        key = (which, shape)
        with self._lock:
            entry = self._static.get(key)
            if entry is not None:
                self._static.move_to_end(key)
                return entry
            seen = self._seen.get(key, 0) + 1
            self._seen[key] = seen
            self._seen.move_to_end(key)
            while len(self._seen) > 4 * SHAPES:
                self._seen.popitem(last=False)
        if (self.failed or seen < self.compile_at
                or not self._compiling.acquire(blocking=self.compile_at == 1)):
            return None
        try:
            with self._lock:
                entry = self._static.get(key)
            if entry is None:
                try:
                    entry = self._compile(which, shape)
                except UpresError as exc:  # onnxruntime runs this network from now on
                    self.failed = str(exc)
                    print(f"upres: {exc}; onnxruntime runs it instead", file=sys.stderr)
                    return None
                with self._lock:
                    self._static[key] = entry
                    self._seen.pop(key, None)  # evicted later, it must be seen twice again
                    while len(self._static) > SHAPES:
                        self._static.popitem(last=False)
            return entry
        finally:
            self._compiling.release()

    def _run(self, which: str, x: np.ndarray) -> np.ndarray:
        entry = self._entry(which, tuple(x.shape))
        if entry is None:
            if which == "u8":
                return self._ort.uint8_hwc(x)[None]
            return self._ort(torch.from_numpy(x)).numpy()
        with self._lock:
            req = entry.idle.pop() if entry.idle else None
        try:
            if req is None:
                req = entry.compiled.create_infer_request()
            req.infer({0: x})
            out = np.array(req.get_output_tensor(0).data, copy=True)
        except MemoryError:
            raise
        except Exception as exc:  # OpenVINO's own error types
            raise UpresError(f"OpenVINO failed at input {tuple(x.shape)} "
                             f"({one_line(exc, 200)})") from None
        with self._lock:
            if len(entry.idle) < 4:
                entry.idle.append(req)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        arr = np.ascontiguousarray(x.detach().float().cpu().numpy())
        return torch.from_numpy(self._run("float", arr))

    def uint8_ready(self) -> bool:
        """Whether :meth:`uint8_hwc` can run (its graph is read at the first call)."""
        if self._u8 is None:
            with self._u8_lock:
                if self._u8 is None:
                    try:
                        self._models["u8"] = self._core.read_model(_with_uint8_output(self._src))
                        self._u8 = True
                    except Exception:  # onnx's and OpenVINO's own error types
                        self._u8 = False
        return bool(self._u8) and self._ort.uint8_ready()

    def uint8_hwc(self, x: np.ndarray) -> np.ndarray:
        """float32 ``(1, C, H, W)`` -> uint8 ``(H', W', C)``, as :meth:`OnnxNet.uint8_hwc`."""
        if not self.uint8_ready():
            raise UpresError("this OpenVINO model cannot give 8-bit pixels directly")
        return self._run("u8", np.ascontiguousarray(x, np.float32))[0]
