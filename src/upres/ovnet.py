"""OpenVINO as a second runtime for upres's ONNX graphs (optional: ``pip install upres[openvino]``).

:class:`OvNet` runs the same serialized ONNX graph an :class:`~upres.export.OnnxNet` runs (the
int8 QDQ graphs of :mod:`upres.quantize` above all) on OpenVINO's CPU plugin, behind the same
interface, so the :class:`~upres.inference.upscaler.Upscaler` treats both alike. The layers the
graph keeps in float32 stay float32 (``INFERENCE_PRECISION_HINT`` f32: OpenVINO would otherwise
run them in bf16 on CPUs that have it), so its output matches onnxruntime's to rounding: on
tiny-x2 at 1280x720, 0.08 % of output pixels differ, by one 8-bit level. Any input size runs
(one compiled model per input shape, the last few kept). Whether it is faster than onnxruntime
is measured per machine (the :class:`~upres.inference.upscaler.Upscaler` times both once and
caches the choice).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np
import torch

from upres.errors import UpresError, one_line
from upres.export import OnnxNet, _with_uint8_output

__all__ = ["OvNet", "available"]

# compiled input shapes kept per network (tiles of one size, the edge tiles, whole images)
_SHAPES = 8


def available() -> bool:
    """Whether OpenVINO can be imported here."""
    try:
        import openvino  # noqa: F401
    except Exception:  # ImportError, or a broken install raising its own error
        return False
    return True


class OvNet(OnnxNet):
    """An OpenVINO compiled model of an ONNX graph, with :class:`~upres.export.OnnxNet`'s
    interface: ``forward`` takes float32 ``(N, C, H, W)`` on CPU and gives the graph's float32
    output; :meth:`uint8_hwc` gives uint8 ``(H', W', C)`` pixels (the graph's output clipped
    to [0, 1], times 255, rounded half up), computed inside OpenVINO. CPU only; safe to call
    from several threads (one infer request per thread)."""

    runtime = "openvino"

    def __init__(self, model: bytes, *, threads: int = 0) -> None:
        torch.nn.Module.__init__(self)
        try:
            import openvino as ov
        except Exception as exc:
            raise UpresError(f"OpenVINO is not installed here ({exc.__class__.__name__}); "
                             "pip install 'upres[openvino]'") from None
        self._config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32",
                        "INFERENCE_NUM_THREADS": int(threads or torch.get_num_threads())}
        self._core = ov.Core()
        self._src = model
        self._models: dict[str, object] = {"float": self._core.read_model(model)}
        self._compiled: OrderedDict[tuple[str, tuple[int, ...]], object] = OrderedDict()
        self._lock = threading.Lock()
        self._local = threading.local()
        self._u8: bool | None = None

    def _run(self, which: str, x: np.ndarray) -> np.ndarray:
        """The output of model ``which`` (``float`` or ``u8``) for ``x``, compiled for
        ``x``'s shape (static shapes run 10-25 % faster than one dynamic model on tiny
        networks; compiling takes 50-200 ms): the last :data:`_SHAPES` shapes stay
        compiled."""
        key = (which, tuple(x.shape))
        reqs = getattr(self._local, "reqs", None)
        if reqs is None:
            reqs = self._local.reqs = {}
        with self._lock:
            compiled = self._compiled.get(key)
            if compiled is None:
                try:
                    model = self._models[which].clone()
                    model.reshape({0: list(x.shape)})
                    compiled = self._core.compile_model(model, "CPU", self._config)
                except Exception as exc:  # OpenVINO's own error types
                    raise UpresError(f"OpenVINO cannot run this graph at input {x.shape} "
                                     f"({one_line(exc, 200)})") from None
                self._compiled[key] = compiled
                while len(self._compiled) > _SHAPES:
                    self._compiled.popitem(last=False)
            else:
                self._compiled.move_to_end(key)
        req = reqs.get(key)
        if req is None or req[0] is not compiled:
            if len(reqs) > _SHAPES:
                reqs.clear()
            req = reqs[key] = (compiled, compiled.create_infer_request())
        req[1].infer({0: x})
        return np.array(req[1].get_output_tensor(0).data, copy=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        arr = np.ascontiguousarray(x.detach().float().cpu().numpy())
        return torch.from_numpy(self._run("float", arr))

    def uint8_ready(self) -> bool:
        """Whether :meth:`uint8_hwc` can run (its graph is read at the first call)."""
        if self._u8 is None:
            with self._lock:
                if self._u8 is None:
                    try:
                        self._models["u8"] = self._core.read_model(_with_uint8_output(self._src))
                        self._u8 = True
                    except Exception:  # onnx's and OpenVINO's own error types
                        self._u8 = False
        return bool(self._u8)

    def uint8_hwc(self, x: np.ndarray) -> np.ndarray:
        """float32 ``(1, C, H, W)`` -> uint8 ``(H', W', C)``, as :meth:`OnnxNet.uint8_hwc`."""
        if not self.uint8_ready():
            raise UpresError("this OpenVINO model cannot give 8-bit pixels directly")
        return self._run("u8", np.ascontiguousarray(x, np.float32))[0]
