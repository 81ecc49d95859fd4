"""The Upscaler: one image in, one upscaled image of the same kind and dtype out.

Data path: array/PIL/path -> float32 ``(1, 3, H, W)`` in [0, 1] per tile -> model -> clip,
scale and round once into the output array's dtype. Gray images go through the RGB model as
three equal channels and come back as the channel mean; alpha is upscaled the same way as a
gray image and re-attached (gray+alpha ``(H, W, 2)`` and RGBA ``(H, W, 4)`` alike).
"""

from __future__ import annotations

import copy
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

from upres.errors import NotEnoughMemoryError, UpresError, one_line
from upres.formats.image import read_image
from upres.inference.tiling import tile_grid
from upres.models.descriptor import ModelCard
from upres.models.registry import REGISTRY
from upres.resize import imresize, imresize_peak_bytes

# what Upscaler(precision=...) accepts; "default": the card's default_precision on a CPU, else fp32
PRECISIONS = ("default", "fp32", "bf16", "fp16", "int8", "auto")
# what runs int8 graphs: onnxruntime always; OpenVINO where installed (upres[openvino])
INT8_RUNTIMES = ("onnxruntime", "openvino")
# OpenVINO is chosen for a model's int8 graph only when at least this much faster
INT8_RUNTIME_MARGIN = 1.1

__all__ = ["ENSEMBLES", "INT8_RUNTIMES", "INT8_RUNTIME_MARGIN", "PRECISIONS", "Interpolator",
           "Upscaler", "check_ensemble", "check_memory", "check_precision", "choose_precision",
           "dihedral", "fill_transparent", "pick_device", "rgb_to_ycbcr", "to_dtype",
           "ycbcr_to_rgb"]

_MAX = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}
ENSEMBLES = (1, 2, 4, 8)  # self-ensemble sizes: plain, +h-flip, +v-flip/180, +transposes


def check_ensemble(n: int) -> int:
    """``n`` if it is a self-ensemble size upres runs (1, 2, 4, 8), else UpresError."""
    if n not in ENSEMBLES:
        raise UpresError(f"ensemble must be one of {', '.join(map(str, ENSEMBLES))}, got {n}")
    return n


def check_precision(precision: str) -> str:
    """``precision`` if Upscaler accepts it (:data:`PRECISIONS`), else UpresError."""
    if precision not in PRECISIONS:
        raise UpresError(f"unknown precision {precision!r}; choose default, fp32, bf16, fp16, "
                         "int8 or auto")
    return precision


def dihedral(x: torch.Tensor, k: int, *, inverse: bool = False) -> torch.Tensor:
    """The ``k``-th (0..7) of the eight flips/rotations of ``(N, C, H, W)`` ``x``, or its
    inverse: bit 0 flips left-right, bit 1 flips up-down, bit 2 transposes (first on the way
    in, last on the way back). ``k`` = 0, 1, 2, 3 keep the shape; 4..7 swap H and W."""
    if k & 4 and not inverse:
        x = x.transpose(2, 3)
    if k & 1:
        x = x.flip(3)
    if k & 2:
        x = x.flip(2)
    if k & 4 and inverse:
        x = x.transpose(2, 3)
    return x


def pick_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU; an explicit device must be available."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UpresError("device cuda requested but CUDA is not available")
    if device == "mps" and not (getattr(torch.backends, "mps", None)
                                and torch.backends.mps.is_available()):
        raise UpresError("device mps requested but MPS is not available")
    if device not in ("cpu", "cuda", "mps"):
        raise UpresError(f"unknown device {device!r}; choose auto, cpu, cuda or mps")
    return torch.device(device)


def to_dtype(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Float ``[0, 1]`` -> ``dtype``: clip, scale, round half up (never truncate)."""
    dt = np.dtype(dtype)
    if dt in _MAX:
        return np.floor(np.clip(x, 0.0, 1.0) * _MAX[dt] + 0.5).astype(dt)
    return x.astype(dt)


def write_planes(dst: np.ndarray, y: torch.Tensor) -> None:
    """Write :func:`to_dtype` of a ``(C, H, W)`` float32 tensor into ``dst`` ``(H, W, C)`` (a
    view of the output, of its dtype): the same float32 operations in the same order, so the
    same values, run by torch's threaded kernels, with the layout change done in the same copy
    as the final cast."""
    dt = dst.dtype
    if dt == np.uint8:
        q = torch.clamp(y, 0.0, 1.0).mul_(_MAX[dt]).add_(0.5).floor_()
        torch.from_numpy(dst).copy_(q.permute(1, 2, 0))  # integral floats: exact cast
    else:
        dst[...] = to_dtype(y.permute(1, 2, 0).numpy(), dt)


def pil_pixels(img: Image.Image) -> np.ndarray:
    """A PIL image's pixels as an ``(H, W[, C])`` array upres takes: modes whose array is not
    pixel values (palette indices, CMYK, YCbCr, LAB, HSV, 1-bit, premultiplied, 32-bit
    integer) are converted first: palette to RGB(A), 1-bit to L, the rest to RGB(A); ``I``
    to 16 bits when its values fit (so it comes back ``I;16``), else refused; big-endian
    ``I;16B`` to native order; ``F`` must already be in [0, 1] (else refused)."""
    mode = img.mode
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode == "PA":
        img = img.convert("RGBA")
    elif mode == "1":
        img = img.convert("L")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        img = img.convert("RGB")
    elif mode == "RGBa":
        img = img.convert("RGBA")
    elif mode == "La":
        img = img.convert("LA")
    elif mode == "I":
        arr = np.asarray(img)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise UpresError(f"a PIL image of mode I with values {arr.min()}..{arr.max()} "
                             "(outside 0..65535); give a numpy array scaled to [0, 1]")
        return arr.astype(np.uint16)
    arr = np.asarray(img)
    if arr.dtype.byteorder == ">":  # I;16B
        return arr.astype(arr.dtype.newbyteorder("="))
    if mode == "F" and arr.size and (np.nanmin(arr) < 0 or np.nanmax(arr) > 1):
        raise UpresError(f"a PIL image of mode F with values {np.nanmin(arr):g}.."
                         f"{np.nanmax(arr):g}; float pixels must lie in [0, 1]")
    return arr


def _as_array(img: Any) -> tuple[np.ndarray, str]:
    if isinstance(img, np.ndarray):
        return img, "array"
    if isinstance(img, Image.Image):
        return pil_pixels(img), "pil"
    if isinstance(img, str | os.PathLike):
        return read_image(Path(img)), "array"
    raise UpresError(f"cannot upscale an object of type {type(img).__name__}")


def _check(arr: np.ndarray) -> None:
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 2, 3, 4)):
        raise UpresError(f"expected an (H, W) or (H, W, 1|2|3|4) image, got shape {arr.shape}")
    if arr.dtype not in (np.uint8, np.uint16, np.float32, np.float64):
        raise UpresError(f"expected uint8, uint16 or float32 pixels, got {arr.dtype}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise UpresError(f"image is empty: shape {arr.shape}")


def _back(arr: np.ndarray, kind: str) -> Any:
    return Image.fromarray(arr) if kind == "pil" else arr


def _int8_runner(runtime: str, graph: bytes, name: str) -> nn.Module:
    """The int8 ``graph`` on ``runtime`` (:data:`INT8_RUNTIMES`), or UpresError naming the
    model and what went wrong."""
    from upres.export import OnnxNet

    try:
        if runtime == "openvino":
            from upres.ovnet import OvNet

            return OvNet(graph)
        return OnnxNet(graph)
    except UpresError:
        raise
    except Exception as exc:  # onnxruntime's and OpenVINO's own error types
        raise UpresError(f"{name}: {runtime} cannot run its int8 graph "
                         f"({one_line(exc, 200)})") from None


def _best_time(call: Any, *, warm: int, repeat: int, give_up: float = float("inf")) -> float:
    """Best of ``repeat`` timed ``call()`` after ``warm`` untimed ones, in seconds (inf for
    no timed call). A first timed call over ``give_up`` seconds is the answer: a path that
    slow is not repeated (the warm-ups, which build kernels, never decide)."""
    for _ in range(warm):
        call()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - t0)
        if best > give_up:
            break
    return best


# precision="auto" takes the memory format other than the architecture's recorded one only
# when it is at least this much faster on the tile
FORMAT_MARGIN = 1.1


def choose_precision(times: dict[str, float], *, margin: float = 1.25) -> str:
    """The fastest path of ``times`` (seconds per path name; ``"fp32"`` must be there), taken
    only when it is at least ``margin`` times faster than fp32; else ``"fp32"`` (a close call
    keeps the exact precision)."""
    best = min(times, key=lambda k: times[k])
    return best if times[best] * margin <= times["fp32"] else "fp32"


class Interpolator:
    """``bicubic``/``lanczos`` baselines (MATLAB ``imresize``) with the Upscaler's interface."""

    def __init__(self, name: str, scale: int) -> None:
        if name not in ("bicubic", "lanczos"):
            raise UpresError(f"unknown interpolation {name!r}")
        self.name, self.scale = name, int(scale)
        self.card = ModelCard(name=name, arch=name, scale=self.scale, hparams={}, params=0)
        self._kernel = "cubic" if name == "bicubic" else "lanczos3"

    def upscale(self, img: Any, **_: Any) -> Any:
        """Enlarge by ``scale``; integer images are rounded per pass as MATLAB does."""
        arr, kind = _as_array(img)
        _check(arr)
        h, w = arr.shape[:2]
        s = self.scale
        check_memory(imresize_peak_bytes(h, w, h * s, w * s, 1 if arr.ndim == 2 else arr.shape[2]),
                     w * s, h * s, "use a smaller input or scale")
        return _back(imresize(arr, float(s), kernel=self._kernel), kind)


class Upscaler:
    """A loaded network ready to upscale images.

    ``upscale`` takes a numpy ``(H, W)`` or ``(H, W, 1|2|3|4)`` array (uint8, uint16 or float32
    in [0, 1]), a PIL image or a path, and returns the same kind with the same dtype, ``scale``
    times larger. The card's conventions (colour, value range, sizes, pre-upsampling) are
    applied here, so every registered architecture is called the way its weights expect.
    ``ensemble`` (1, 2, 4 or 8) runs the network on that many flipped/rotated copies of each
    tile and averages the results ("self-ensemble", test-time augmentation): ``ensemble``
    times slower, usually a little sharper and cleaner. ``precision`` is ``default`` (the card's
    ``default_precision`` on a CPU, else fp32), ``fp32`` (exact), ``bf16`` / ``fp16``
    (autocast), ``int8`` (the CPU's integer kernels, :mod:`upres.quantize`, on onnxruntime
    or OpenVINO: ``int8_runtime``, default the one measured faster here) or ``auto``: the
    fastest of those measured on this machine at the first load, cached (``precision_note``
    says what was measured and chosen). An int8 path that ``default`` or ``auto`` chose runs
    8-bit images only: an image with finer steps (16-bit, or float values off the 1/255 grid,
    as DICOM, scientific TIFF and most GeoTIFFs reach the network) runs the float32 network
    behind it, because 8-bit activations lose what those extra bits carry (``tiny-x4`` on real
    DICOM frames: 0.28 dB on a 12-bit CT, 6.3 dB on an MR that uses 0..920 of its 16 bits);
    ``precision="int8"`` asked by name runs int8 on everything (``int8_8bit_only`` overrides
    which). ``last_precision`` says what the last call in this thread ran.
    """

    def __init__(self, model: nn.Module, card: ModelCard, *, device: str = "auto",
                 precision: str = "default", channels_last: bool | None = None,
                 ensemble: int = 1, int8_ok: bool = True,
                 int8_runtime: str | None = None, int8_8bit_only: bool | None = None) -> None:
        from upres.export import GraphNet

        self.ensemble = check_ensemble(ensemble)
        self.card = card
        # an int8 path picked for the caller runs 8-bit images only (class docstring)
        self._int8_8bit_only = (precision in ("default", "auto") if int8_8bit_only is None
                                else bool(int8_8bit_only))
        self._call = threading.local()  # per upscale call: whether it runs the float network
        self._float_cl = False  # the memory format of the float network behind an int8 path
        self.name, self.scale = card.name, int(card.scale)
        # "onnxruntime": an exported graph (int8_runtime says which runtime runs it)
        self.backend = "onnxruntime" if isinstance(model, GraphNet) else "torch"
        if int8_runtime not in (None, *INT8_RUNTIMES):
            raise UpresError(f"unknown int8 runtime {int8_runtime!r}; choose "
                             f"{' or '.join(INT8_RUNTIMES)}")
        self._int8_runtime_asked = int8_runtime
        # the runtime of the graph running: onnxruntime, openvino, or "" for torch
        self.int8_runtime = getattr(model, "runtime", "") if self.backend != "torch" else ""
        check_precision(precision)
        if self.backend == "onnxruntime":  # onnxruntime's CPU provider, plain layout
            device, channels_last = "cpu", False
            native = "int8" if card.quantized else "fp32"  # the graph's own precision
            if precision == "default":
                precision = native
            if precision in ("bf16", "fp16") or (precision in ("int8", "fp32")
                                                 and precision != native):
                print(f"upres: this onnxruntime graph runs {native}, not {precision}",
                      file=sys.stderr)
            precision = native if precision != "auto" else precision
        self.device = pick_device(device)
        if precision == "default":  # the model's own path on a CPU; fp32 elsewhere
            own = card.default_precision or "fp32"
            if own not in ("fp32", "bf16", "int8"):
                raise UpresError(f"{card.name}: its card names an unknown default precision "
                                 f"{own!r}")
            precision = own if self.device.type == "cpu" else "fp32"
        self.precision_note = ""
        self.int8_loss: float | None = None  # calibration-crop PSNR-Y loss of an int8 path
        known = card.arch in REGISTRY.names()
        spec = REGISTRY.get(card.arch) if known else None
        # int8: a graph onnxruntime can run (dynamic sizes), on the CPU, with fixed weights
        self._int8_ok = bool(int8_ok and self.backend == "torch" and (spec is None or spec.onnx))
        auto = precision == "auto"
        if auto:  # settled below, once the model is in place (an ONNX graph: as exported)
            precision = "int8" if self.backend == "onnxruntime" and card.quantized else "fp32"
        if precision == "int8" and self.backend == "torch":
            if not self._int8_ok:
                why = ("its weights change per image (automatic clean-up strength: give a "
                       "fixed --denoise)" if int8_ok else "it cannot be exported to ONNX")
                raise UpresError(f"{card.name}: int8 is not available: {why}")
            if self.device.type != "cpu":
                print(f"upres: int8 runs on the CPU, not {self.device.type}",
                      file=sys.stderr)
                self.device = torch.device("cpu")
        if precision == "fp16" and self.device.type == "cpu":
            print("upres: fp16 is not supported on CPU; using fp32", file=sys.stderr)
            precision = "fp32"
        if precision in ("bf16", "fp16") and not card.supports_half:
            print(f"upres: {card.name} does not support {precision}; using fp32", file=sys.stderr)
            precision = "fp32"
        self.precision = precision
        self.tile_exact = spec.tile_exact if spec else True
        # a memory format left open is the architecture's recorded default here, and is
        # measured on this machine by precision="auto"
        self._format_open = channels_last is None
        if channels_last is None:  # the measured default for this architecture on CPU
            channels_last = bool(spec and spec.channels_last_cpu and self.device.type == "cpu")
        self.channels_last = self._format_home = channels_last
        # Size requirements, from the card or the network itself (e.g. RRDBNet x2, RFDN).
        self.size_multiple = max(1, card.size_multiple, getattr(model, "size_multiple", 1))
        self.min_size = max(card.min_size, getattr(model, "min_size", 1))
        self.model = model.eval().to(self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self._float_model: nn.Module | None = None  # the torch network behind an int8 path
        if precision == "int8" and self.backend == "torch":
            self._use_int8()
            from upres.quantize import loss_words

            self.precision_note = (f"int8 {loss_words(self.int8_loss)} PSNR-Y against fp32 on "
                                   "the calibration crops (training-set images)"
                                   + self._runtime_words())
        if auto:
            self._settle_precision()

    @property
    def float_model(self) -> nn.Module:
        """The torch network: the one running, or the one behind an int8 path."""
        return self._float_model or self.model

    def int8_source(self) -> nn.Module:
        """A float32, contiguous CPU copy of :attr:`float_model`: what the int8 graph is made
        from (and what a card's ``int8_scan`` is keyed to, :mod:`upres.quantize`)."""
        net = copy.deepcopy(self.float_model).float().cpu()
        return net.to(memory_format=torch.contiguous_format)

    def _int8_net(self, *, auto: bool = False) -> tuple[nn.Module, float, str]:
        """The int8 network of this model (graph made or taken from the cache) on its int8
        runtime (:meth:`_int8_runtime_for`), its calibration-crop loss in dB and how it was
        quantised (the card's ``quantized``). For ``auto``, a graph over the loss rule is no
        candidate, so no runtime is timed for it."""
        from upres.quantize import INT8_RULE_DB, graph_note, int8_graph

        net = self.int8_source()
        graph, loss = int8_graph(net, self.card)
        note = graph_note(graph)
        if auto and loss > INT8_RULE_DB:
            runtime = self._int8_runtime_asked or "onnxruntime"
            run = _int8_runner(runtime, graph, self.card.name)
        else:
            runtime, run = self._int8_runtime_for(graph, net)
        self.int8_runtime = runtime
        return run, loss, note

    def _int8_runtime_for(self, graph: bytes, net: nn.Module) -> tuple[str, nn.Module]:
        """``(runtime, network)`` for the int8 ``graph``: the runtime asked for, the only one
        installed, or, with both onnxruntime and OpenVINO here, the one measured faster for
        this model on this machine (a 256x256 tile through the path 8-bit images take; OpenVINO
        only when at least :data:`INT8_RUNTIME_MARGIN` times faster), timed once and cached
        with the ``auto`` choices (:mod:`upres.inference.paths`). OpenVINO failing to load
        or run falls back to onnxruntime, with one line on stderr."""
        from upres import ovnet
        from upres.inference import paths

        name = self.card.name
        if self._int8_runtime_asked:
            return self._int8_runtime_asked, _int8_runner(self._int8_runtime_asked, graph, name)
        if not ovnet.available():
            return "onnxruntime", _int8_runner("onnxruntime", graph, name)
        choices = [f"int8-{r}" for r in INT8_RUNTIMES]
        key = paths.cache_key(net, self.card, choices)
        hit = paths.lookup(key)
        if hit is not None and hit["precision"] not in choices:
            hit = None  # not what upres wrote: measure again
        ort = _int8_runner("onnxruntime", graph, name)
        if hit is not None and hit["precision"] == "int8-onnxruntime":
            return "onnxruntime", ort
        x = torch.rand(1, 1 if self.card.color == "y" else 3, 256, 256,
                       generator=torch.Generator().manual_seed(0)).numpy()
        times = {} if hit is not None else {"int8-onnxruntime": self._time_graph(ort, x)}
        try:
            ov = _int8_runner("openvino", graph, name)
            ov.compile_at = 1  # this shape on OpenVINO itself, compiled at once
            if hit is not None:  # the cached choice, OpenVINO: it compiles and runs here
                self._time_graph(ov, x, warm=1, repeat=0)
            else:
                times["int8-openvino"] = self._time_graph(ov, x)
            ov.compile_at = 2
        except UpresError as exc:
            print(f"upres: {name}: OpenVINO failed, int8 runs on onnxruntime ({exc})",
                  file=sys.stderr)
            return "onnxruntime", ort
        if ov.failed:  # it could not compile (and said so): onnxruntime, not recorded
            return "onnxruntime", ort
        if hit is not None:
            return "openvino", ov
        fast = times["int8-openvino"] * INT8_RUNTIME_MARGIN <= times["int8-onnxruntime"]
        paths.record(key, "int8-openvino" if fast else "int8-onnxruntime", times, None)
        return ("openvino", ov) if fast else ("onnxruntime", ort)

    def _time_graph(self, run: nn.Module, x: np.ndarray, *, warm: int = 2,
                    repeat: int = 2) -> float:
        """Best of ``repeat`` timed runs of the graph network ``run`` on ``x`` (float32
        ``(1, C, h, w)``) after ``warm`` untimed ones (kernels are built on the first call;
        OpenVINO compiles a shape seen twice), in seconds (inf for no timed run); 8-bit
        pixels where this model's 8-bit images take that path."""
        if self._pixels_from(run):
            return _best_time(lambda: run.uint8_hwc(x), warm=warm, repeat=repeat)
        return _best_time(lambda: run(torch.from_numpy(x)), warm=warm, repeat=repeat)

    def _use_int8(self, *, auto: bool = False) -> None:
        """Switch to the int8 path (its graph on onnxruntime or OpenVINO; CPU, plain layout)."""
        if self._float_model is None:
            self._float_model, self._float_cl = self.model, self.channels_last
        self.model, self.int8_loss, note = self._int8_net(auto=auto)
        self.card = self.card.with_(quantized=note)
        self.backend, self.precision, self.channels_last = "onnxruntime", "int8", False
        self.device = torch.device("cpu")

    def _time(self, x: torch.Tensor, give_up: float = float("inf")) -> float:
        """Best of two timed runs of ``x`` after a warm-up (oneDNN and onnxruntime build their
        kernels on the first call; OpenVINO compiles a shape at its second sighting: two
        warm-ups), in seconds; the first timed run's when it took over ``give_up``."""
        from upres.export import GraphNet

        return _best_time(lambda: self._run(x), warm=2 if isinstance(self.model, GraphNet) else 1,
                          repeat=2, give_up=give_up)

    def _set_format(self, channels_last: bool) -> None:
        """Put the torch network (and so its inputs) in channels_last or contiguous format."""
        self.channels_last = channels_last
        self.model = self.model.to(memory_format=torch.channels_last if channels_last
                                   else torch.contiguous_format)

    def _settle_precision(self) -> None:
        """``precision="auto"``: fp16 on CUDA, fp32 on MPS; on CPU, the fastest of fp32, bf16
        (architectures that support it) and int8 (on its runtime, :meth:`_int8_runtime_for`;
        only if it loses at most
        :data:`~upres.quantize.INT8_RULE_DB` dB PSNR-Y on the calibration crops), timed on one
        128x128 tile and kept only when clearly faster than fp32 (:func:`choose_precision`).
        Unless the caller fixed ``channels_last``, each float path is also timed in the other
        memory format, which replaces the architecture's recorded one where it is at least
        :data:`FORMAT_MARGIN` times faster (which format is faster differs between CPUs).
        The choice is cached per model, weights and machine (:mod:`upres.inference.paths`),
        so later loads skip the measurement. bf16 costs at most a few 8-bit levels and ~0.002 dB
        on the benchmarks, but is 10x to 300x slower than fp32 on x86 CPUs without bf16
        instructions, where it is not timed (:func:`~upres.inference.paths.has_native_bf16`);
        a float path whose first timed run takes over 4x fp32's time (and over 1 s) is not
        timed again."""
        from upres.inference import paths
        from upres.quantize import INT8_RULE_DB

        if self.backend != "torch":
            self.precision_note = (f"auto precision: {self.precision} (an exported graph runs "
                                   "as exported)")
            return
        if self.device.type != "cpu":
            if self.card.supports_half and self.device.type == "cuda":
                self.precision = "fp16"
            self.precision_note = f"auto precision: {self.precision} ({self.device.type})"
            return
        no_bf16 = self.card.supports_half and not paths.has_native_bf16()
        candidates = ["fp32"] + (["bf16"] if self.card.supports_half and not no_bf16 else []) \
            + (["int8"] if self._int8_ok else [])
        skipped = "; bf16 not timed: this CPU has no bf16 instructions" if no_bf16 else ""
        asked = self._int8_runtime_asked  # a named int8 runtime is measured on its own
        formats = self._format_open  # the memory format is measured too
        key = paths.cache_key(self.model, self.card,
                              [*candidates, *([f"int8@{asked}"] if asked and self._int8_ok
                                              else []), *(["formats"] if formats else [])])
        hit = paths.lookup(key)
        if hit is not None and hit["precision"] in candidates:
            choice = hit["precision"]
            cached = True
            if formats and isinstance(hit.get("channels_last"), bool):
                self._set_format(hit["channels_last"])
            if choice == "int8":
                float_state = self.model, self.channels_last, self.card, self.device
                try:
                    self._use_int8()
                except UpresError:  # the int8 path no longer loads here: measure again
                    self.model, self.channels_last, self.card, self.device = float_state
                    self.backend, self._float_model, self.int8_loss = "torch", None, None
                    self.int8_runtime, cached = "", False
            else:
                self.precision = choice
            if cached:
                self.precision_note = (f"auto precision: {choice} "
                                       f"({paths.describe(hit, cached=True)}{skipped})"
                                       + self._runtime_words())
                return
        x = torch.rand(1, 1 if self.card.color == "y" else 3, 128, 128,
                       generator=torch.Generator().manual_seed(0))
        times: dict[str, float] = {}
        home = self._format_home  # the recorded (or the caller's) format, measured against
        self._set_format(home)
        other = "contiguous" if home else "channels_last"
        best_format: dict[str, bool] = {}
        by_path: dict[str, float] = {}  # each path's time, a float path at its faster format
        give_up = float("inf")  # a float path 4x slower than fp32 (and over 1 s) is timed
        # once after its warm-up: it cannot be chosen (choose_precision asks 1.25x faster, a
        # format FORMAT_MARGIN)
        for prec in candidates:
            if prec == "int8":
                continue
            self.precision = prec
            times[prec] = by_path[prec] = self._time(x, give_up)
            if prec == "fp32":
                give_up = max(4 * times["fp32"], 1.0)
            best_format[prec] = home
            if formats:
                self._set_format(not home)
                times[f"{prec} {other}"] = t = self._time(x, give_up)
                self._set_format(home)
                if t * FORMAT_MARGIN <= times[prec]:
                    best_format[prec], by_path[prec] = not home, t
        loss, int8_state, runtime = None, None, ""
        if "int8" in candidates:
            float_state = self.model, self.channels_last, self.card, self.device
            try:
                self._use_int8(auto=True)
                loss = self.int8_loss
                if loss is not None and loss <= INT8_RULE_DB:
                    times["int8"] = by_path["int8"] = self._time(x)
                    int8_state = self.model, self.int8_loss, self.card
                    runtime = self.int8_runtime
            except UpresError:  # a graph that cannot be quantised or run: no int8 candidate
                pass
            # back to the float network until the choice is made
            self.model, self.channels_last, self.card, self.device = float_state
            self.backend, self._float_model, self.int8_loss = "torch", None, None
            self.int8_runtime = ""
        self.precision = choose_precision(by_path)
        chosen_format = best_format.get(self.precision, home)
        entry = paths.record(key, self.precision, times, loss,
                             channels_last=chosen_format if formats else None)
        if chosen_format != home:
            self._set_format(chosen_format)
        if self.precision == "int8" and int8_state is not None:
            self._float_model, self._float_cl = self.model, self.channels_last
            self.model, self.int8_loss, self.card = int8_state
            self.backend, self.channels_last = "onnxruntime", False
            self.device = torch.device("cpu")
            self.int8_runtime = runtime
        self.precision_note = (f"auto precision: {self.precision} ({paths.describe(entry)}"
                               f"{skipped})" + self._runtime_words())

    def _runtime_words(self) -> str:
        """``"; int8 runs on openvino"`` where an int8 graph runs, else ``""``."""
        return (f"; int8 runs on {self.int8_runtime}"
                if self.precision == "int8" and self.int8_runtime else "")

    @torch.inference_mode()
    def _run(self, x: torch.Tensor) -> torch.Tensor:
        """``(1, C, h, w)`` float32 [0, 1] -> ``(1, C, h*s, w*s)`` float32 (unclipped), on CPU.

        Applies the card's input convention: value range, and edge padding up to ``min_size``
        and to a multiple of ``size_multiple`` (from the card or the network itself; the padded
        part of the output is cropped off).
        Pre-upsampling models keep the size.
        """
        card = self.card
        s = 1 if card.pre_upsample else self.scale
        h, w = x.shape[2:]
        ph, pw = self._padding(h, w)
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        x = x.to(self.device)
        if card.value_range != 1.0:
            x = x * card.value_range
        net, precision, channels_last = self.model, self.precision, self.channels_last
        if getattr(self._call, "wide", False):  # the float network behind the int8 path
            net, precision, channels_last = self.float_model, "fp32", self._float_cl
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if precision == "fp32":
            y = net(x)
        else:
            dt = torch.bfloat16 if precision == "bf16" else torch.float16
            with torch.autocast(self.device.type, dtype=dt):
                y = net(x)
        y = y.float()
        if card.value_range != 1.0:
            y = y / card.value_range
        return y[:, :, : h * s, : w * s].cpu().contiguous()

    def _padding(self, h: int, w: int) -> tuple[int, int]:
        """Rows and columns of edge padding that bring an ``h x w`` input to the network's
        ``min_size`` and a multiple of its ``size_multiple``."""
        m, low = self.size_multiple, self.min_size
        return max(low, -(-h // m) * m) - h, max(low, -(-w // m) * m) - w

    def _uint8_path(self, out_dtype: np.dtype) -> bool:
        """Whether 8-bit RGB outputs can come straight out of the graph's runtime as pixels
        (:meth:`upres.export.GraphNet.uint8_hwc`): an exported graph taking and giving RGB
        in [0, 1] at the output size, without self-ensemble."""
        return (self.backend == "onnxruntime" and np.dtype(out_dtype) == np.uint8
                and self._pixels_from(self.model))

    def _pixels_from(self, net: nn.Module) -> bool:
        """Whether the graph network ``net`` can give this model's 8-bit RGB outputs as pixels
        (RGB in [0, 1] at the output size, no self-ensemble, a pixels graph it can make)."""
        card = self.card
        return (self.ensemble == 1 and card.color != "y" and not card.pre_upsample
                and card.value_range == 1.0 and hasattr(net, "uint8_ready")
                and net.uint8_ready())

    def _run_uint8(self, x: np.ndarray) -> np.ndarray:
        """float32 ``(1, 3, h, w)`` RGB [0, 1] -> uint8 ``(h*s, w*s, 3)`` pixels, rounded as
        :func:`write_planes` rounds, with :meth:`_run`'s padding to the network's sizes."""
        h, w = x.shape[2:]
        ph, pw = self._padding(h, w)
        if ph or pw:
            x = np.pad(x, ((0, 0), (0, 0), (0, ph), (0, pw)), mode="edge")
        s = self.scale
        return self.model.uint8_hwc(x)[: h * s, : w * s]

    def _bicubic(self, t: torch.Tensor) -> torch.Tensor:
        """``(1, C, h, w)`` float32 -> MATLAB bicubic enlargement by the scale (unrounded)."""
        arr = t[0].permute(1, 2, 0).numpy().astype(np.float64)
        up = imresize(arr, float(self.scale)).astype(np.float32)
        return torch.from_numpy(np.ascontiguousarray(up)).permute(2, 0, 1)[None]

    def _forward(self, rgb: torch.Tensor) -> torch.Tensor:
        """``(1, 3, h, w)`` RGB [0, 1] -> ``(1, 3, h*s, w*s)`` RGB, through the model's colour
        convention (luma-only models get BT.601 Y, chroma is enlarged by MATLAB bicubic) and
        enlarging the input first for pre-upsampling models."""
        card = self.card
        x = rgb_to_ycbcr(rgb) if card.color == "y" else rgb
        net_in = x[:, :1] if card.color == "y" else x
        if card.pre_upsample:
            net_in = self._bicubic(net_in)
        out = self._run(net_in)
        if self.ensemble > 1:  # self-ensemble: mean over flipped/rotated copies, in float32
            for k in range(1, self.ensemble):
                out = out + dihedral(self._run(dihedral(net_in, k).contiguous()), k,
                                     inverse=True)
            out = out / self.ensemble
        if card.color != "y":
            return out
        return ycbcr_to_rgb(torch.cat([out, self._bicubic(x[:, 1:])], dim=1))

    def auto_tile(self, height: int, width: int) -> int:
        """Tile side (input pixels) whose activations fit the memory budget, or 0 for whole.

        Estimate: ``4 bytes x (12 x widest layer + 12 x scale^2)`` per input pixel (three
        feature maps plus the 3x3 convolution's 9-channel-per-channel scratch, and the tail,
        anchor and shuffle outputs), within a quarter of the available memory, at most 256 MiB
        (half the available memory for architectures whose tiles cannot equal the whole image).
        """
        channels = int(self.card.hparams.get("channels", 64))
        per_px = 4 * (12 * channels + 12 * self.scale**2)
        budget = min(256 * 2**20, _available_memory() // 4)
        if not self.tile_exact:  # tiles would differ from the whole image: avoid them
            budget = _available_memory() // 2
        side = int((budget / per_px) ** 0.5)
        if height * width <= side * side:
            return 0
        return max(64, side // 32 * 32)

    def _upscale_planes(self, rgb: np.ndarray, out_dtype: np.dtype, tile: int,
                        overlap: int, *, gray: bool = False,
                        on_tile: Callable[[int, int], None] | None = None) -> np.ndarray:
        """``(H, W, 3)`` float32 [0, 1] -> ``(H*s, W*s, 3)`` of ``out_dtype`` (``(H*s, W*s)``,
        the mean of the three output channels, with ``gray``), tile by tile.

        Each tile's core is converted to ``out_dtype`` and written into the output at once: no
        float canvas of the whole output is ever held.
        """
        h, w = rgb.shape[:2]
        s = self.scale
        out = np.empty((h * s, w * s) if gray else (h * s, w * s, 3), dtype=out_dtype)
        size = tile if tile > 0 else max(h, w)
        tiles = list(tile_grid(h, w, size, overlap if tile > 0 else 0, self.size_multiple))
        pixels = not gray and self._uint8_path(out_dtype)
        for i, t in enumerate(tiles):
            py0, py1, px0, px1 = t.padded
            x = torch.from_numpy(np.ascontiguousarray(rgb[py0:py1, px0:px1].transpose(2, 0, 1)))
            cy0, cy1, cx0, cx1 = t.crop
            y0, y1, x0, x1 = t.core
            if pixels:
                out[y0 * s:y1 * s, x0 * s:x1 * s] = self._run_uint8(x[None].numpy())[
                    cy0 * s:cy1 * s, cx0 * s:cx1 * s]
            elif gray:
                yt = self._forward(x[None])[0]
                core = yt.numpy().transpose(1, 2, 0)[cy0 * s:cy1 * s, cx0 * s:cx1 * s]
                out[y0 * s:y1 * s, x0 * s:x1 * s] = to_dtype(core.mean(axis=2), out_dtype)
            else:
                yt = self._forward(x[None])[0]
                write_planes(out[y0 * s:y1 * s, x0 * s:x1 * s],
                             yt[:, cy0 * s:cy1 * s, cx0 * s:cx1 * s])
            if on_tile is not None:
                on_tile(i + 1, len(tiles))
        return out

    def _upscale_gray(self, plane: np.ndarray, out_dtype: np.dtype, tile: int,
                      overlap: int,
                      on_tile: Callable[[int, int], None] | None = None) -> np.ndarray:
        """``(H, W)`` float32 -> ``(H*s, W*s)``: through the RGB model as three equal channels."""
        return self._upscale_planes(np.repeat(plane[:, :, None], 3, axis=2), out_dtype, tile,
                                    overlap, gray=True, on_tile=on_tile)

    def upscale(self, img: Any, *, tile: int | None = None, tile_overlap: int = 16,
                on_tile: Callable[[int, int], None] | None = None) -> Any:
        """Upscale one image by ``self.scale``.

        Args:
            img: numpy ``(H, W)``, ``(H, W, 1|2|3|4)`` (uint8, uint16, or float32 in [0, 1]), a
                PIL image, or a path. A path is read as upres reads files (EXIF orientation
                applied, animations refused); a PIL image's pixels are taken as they are (its
                current frame, unrotated: ``ImageOps.exif_transpose`` it first to orient it).
            tile: input-pixel tile side; ``None`` picks one from the image size and available
                memory, ``0`` runs the whole image at once.
            tile_overlap: context pixels read around each tile (>= the network's receptive-field
                radius makes tiling exact).
            on_tile: called as ``on_tile(done, total)`` after each tile (progress bars).

        Returns:
            The same kind (array or PIL image) and dtype, ``scale`` times larger (a PIL
            image of a mode that does not hold pixel values, such as palette or CMYK, comes
            back as RGB/RGBA; float output is not clipped, so it may overshoot [0, 1] a little
            at sharp edges, as the network made it). Colour and
            alpha are upscaled separately; colour under fully transparent pixels is replaced by
            the nearest visible colour first, so it cannot bleed into visible edges; a fully
            opaque alpha stays fully opaque.
        """
        arr, kind = _as_array(img)
        _check(arr)
        h, w = arr.shape[:2]
        s, c = self.scale, 1 if arr.ndim == 2 else arr.shape[2]
        # the output, once more where an alpha plane is joined to it, beside the float input
        check_memory(h * w * s * s * c * arr.dtype.itemsize * (1 + (c in (2, 4)))
                     + h * w * c * 4, w * s, h * s, "use a smaller input or scale")
        wide = (self.precision == "int8" and self._int8_8bit_only
                and self._float_model is not None and not on_8bit_grid(arr))
        self._call.wide = wide
        self._call.ran = "fp32" if wide else self.precision
        try:
            return self._upscale(arr, kind, tile, tile_overlap, on_tile)
        finally:
            self._call.wide = False

    @property
    def last_precision(self) -> str:
        """What the last :meth:`upscale` call in this thread ran: ``precision``, or ``fp32``
        where an int8 path sent an image of more than 8 bits to the float network (before any
        call: ``precision``)."""
        return getattr(self._call, "ran", self.precision)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_call"]  # per-thread call state: not carried
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._call = threading.local()

    def _upscale(self, arr: np.ndarray, kind: Any, tile: int | None, tile_overlap: int,
                 on_tile: Callable[[int, int], None] | None) -> Any:
        """:meth:`upscale` of the checked array ``arr`` (``kind``: what to give back)."""
        dt = arr.dtype
        out_dt = np.dtype(np.float32) if dt == np.float64 else dt
        peak = _MAX.get(dt, 1.0)
        if tile is None:
            tile = self.auto_tile(arr.shape[0], arr.shape[1])
        if tile < 0 or tile_overlap < 0:
            raise UpresError(f"tile and tile_overlap must be >= 0, got {tile}, {tile_overlap}")
        squeeze = arr.ndim == 2
        a3 = arr[:, :, None] if squeeze else arr
        channels = a3.shape[2]
        colour = a3[:, :, :1] if channels <= 2 else a3[:, :, :3]
        alpha = a3[:, :, -1] if channels in (2, 4) else None
        f = colour.astype(np.float32) / np.float32(peak)
        if alpha is not None:
            f = fill_transparent(f, alpha)
        if f.shape[2] == 1:
            res = self._upscale_gray(f[:, :, 0], out_dt, tile, tile_overlap, on_tile)[:, :, None]
        else:
            res = self._upscale_planes(f, out_dt, tile, tile_overlap, on_tile=on_tile)
        if alpha is not None:
            if alpha.min() >= peak:  # fully opaque stays exactly opaque
                a_up = np.full(res.shape[:2], peak, dtype=out_dt)
            else:
                a_up = self._upscale_gray(alpha.astype(np.float32) / np.float32(peak), out_dt,
                                          tile, tile_overlap)
            res = np.concatenate([res, a_up[:, :, None]], axis=2)
        if squeeze:
            res = res[:, :, 0]
        return _back(res.astype(dt, copy=False) if dt == np.float64 else res, kind)


def on_8bit_grid(arr: np.ndarray, *, chunk: int = 1 << 20) -> bool:
    """Whether every value of ``arr`` is an 8-bit level: any uint8 array; uint16 whose values
    are all multiples of 257 (8-bit data widened); float whose values are all within 0.001 of
    a level of 1/255 (8-bit data scaled to [0, 1]). Read ``chunk`` values at a time, stopping
    at the first that is not."""
    if arr.dtype == np.uint8:
        return True
    flat = arr.reshape(-1)
    for i in range(0, flat.size, chunk):
        part = flat[i:i + chunk]
        if arr.dtype == np.uint16:
            if np.any(part % 257):
                return False
            continue
        v = part.astype(np.float64) * 255.0
        if not np.all(np.abs(v - np.round(v)) <= 1e-3):  # (NaN is off the grid too)
            return False
    return True


def fill_transparent(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Replace colour under fully transparent pixels (``alpha == 0``) by the colour of the
    nearest pixel that is not fully transparent. ``colour`` ``(H, W, C)``; returns a new array
    (or ``colour`` itself when nothing is transparent or everything is)."""
    hidden = alpha == 0
    if not hidden.any() or hidden.all():
        return colour
    from scipy.ndimage import distance_transform_edt

    iy, ix = distance_transform_edt(hidden, return_distances=False, return_indices=True)
    return colour[iy, ix]


# BT.601 (MATLAB rgb2ycbcr) on [0, 1] values: ycc = M @ rgb + offset.
_YCC_M = torch.tensor([[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0],
                       [112.0, -93.786, -18.214]], dtype=torch.float64) / 255.0
_YCC_OFF = torch.tensor([16.0, 128.0, 128.0], dtype=torch.float64) / 255.0
_YCC_INV = torch.linalg.inv(_YCC_M)


def rgb_to_ycbcr(x: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` RGB in [0, 1] -> BT.601 YCbCr in [0, 1] (Y in [16/255, 235/255])."""
    m, off = _YCC_M.to(x.dtype), _YCC_OFF.to(x.dtype)
    return torch.einsum("ij,bjhw->bihw", m, x) + off.view(1, 3, 1, 1)


def ycbcr_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_ycbcr`."""
    inv, off = _YCC_INV.to(x.dtype), _YCC_OFF.to(x.dtype)
    return torch.einsum("ij,bjhw->bihw", inv, x - off.view(1, 3, 1, 1))


def _available_memory() -> int:
    """Bytes of memory available to this process: Linux MemAvailable, or the room left under
    its cgroup's memory limit (:func:`_cgroup_room`) when that is less; 4 GiB if neither can
    be read."""
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError):
        pass
    room = _cgroup_room()
    if room is not None:
        avail = room if avail is None else min(avail, room)
    return 4 * 2**30 if avail is None else max(0, avail)


def _cgroup_room(proc: Path = Path("/proc/self/cgroup"),
                 root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Bytes left under this process's cgroup memory limit (cgroup v2 ``memory.max``, or v1
    ``memory.limit_in_bytes``), counting the inactive file cache as free (the kernel drops it
    before it refuses memory; a long-lived container sits near its limit with it); None where
    there is no limit or none can be read. The cgroup is the one ``/proc/self/cgroup`` names,
    or the controller's mount root (inside a container, the container's own cgroup)."""
    try:
        lines = proc.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        rel = parts[2].lstrip("/")
        if parts[1] == "":  # v2: the unified hierarchy
            dirs, files = (root / rel, root), ("memory.max", "memory.current", "inactive_file")
        elif "memory" in parts[1].split(","):
            dirs = (root / "memory" / rel, root / "memory")
            files = ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")
        else:
            continue
        for d in dirs:
            try:
                limit = (d / files[0]).read_text().strip()
                if limit == "max" or int(limit) >= 2**60:  # no limit set here
                    break
                used = int((d / files[1]).read_text())
                cache = 0
                for stat in (d / "memory.stat").read_text().splitlines():
                    key, _, value = stat.partition(" ")
                    if key == files[2]:
                        cache = int(value)
                return max(0, int(limit) - used + cache)
            except (OSError, ValueError):
                continue
    return None


def check_memory(need: float, width: int, height: int, instead: str) -> None:
    """Refuse work whose arrays (``need`` bytes, an estimate of the peak) cannot fit in the
    memory available here, before it starts, rather than run for minutes and then fail or be
    killed: :class:`NotEnoughMemoryError`, one line with the ``width`` x ``height`` output,
    both amounts and ``instead`` (what to ask for)."""
    avail = _available_memory()
    if need > avail:
        raise NotEnoughMemoryError(f"a {width}x{height} output needs about {_amount(need)} of "
                                   f"memory, more than the {_amount(avail)} available here; "
                                   f"{instead}")


def _amount(n: float) -> str:
    """Bytes in GiB, MiB or KiB, whichever reads best."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n / 1024:.0f} KiB"
