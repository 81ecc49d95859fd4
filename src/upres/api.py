"""``upres.load``: a model name or weights path -> an object with ``upscale(img)``."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from upres.errors import UpresError
from upres.inference.upscaler import INT8_RUNTIMES, Interpolator, Upscaler, check_ensemble
from upres.models import zoo
from upres.models.weights import load_model

__all__ = ["load", "resolve_weights", "upscale_image"]


def resolve_weights(model: str | os.PathLike[str], *, also: Sequence[str] = ()) -> Path:
    """A shipped model name or a weights path -> the weights file (UpresError if neither; its
    message lists the shipped names and ``also``, the other names the caller accepts)."""
    name = str(model)
    path = zoo.resolve(name)
    if path is None:
        path = Path(name)
        if not path.is_file():
            known = ", ".join([c.name for c in zoo.shipped()] + list(also))
            raise UpresError(f"{name}: not a shipped model ({known}) nor a weights file")
    return path


def load(model: str | os.PathLike[str] = "auto", *, device: str = "auto",
         precision: str = "default", scale: int | None = None,
         channels_last: bool | None = None, backend: str = "torch",
         ensemble: int = 1, denoise: float | str = "auto",
         int8_runtime: str | None = None) -> Upscaler | Interpolator:
    """Load a shipped model by name (``upres models``), ``bicubic``/``lanczos`` (then ``scale``
    is needed, default 4), a weights file (``.safetensors`` from upres, third-party ``.pth``) or
    an ONNX file written by ``upres export`` (run by onnxruntime).

    A model with a fixed scale refuses a different ``scale``. ``channels_last=None`` uses the
    memory format measured faster for the architecture on CPU. ``backend="onnxruntime"`` exports
    a PyTorch model to ONNX in memory and runs it with onnxruntime (CPU, fp32). ``ensemble``
    (1, 2, 4, 8): average over that many flipped/rotated runs per tile (self-ensemble; that many
    times slower); interpolators ignore it. ``precision``: ``default`` (the model's own:
    fp32, or int8 on a CPU for models made to run quantised, see ``upres models``), ``fp32``,
    ``bf16``,
    ``fp16`` (CUDA), ``int8`` (CPU, :mod:`upres.quantize`; photo models need a fixed
    ``denoise``) or ``auto`` (the fastest of fp32, bf16 and int8 on this machine, measured at
    the first load and cached; int8 only within 0.05 dB of fp32 on the calibration crops).
    int8 runs on onnxruntime, or on OpenVINO where it is installed (``upres[openvino]``) and
    measured faster for the model on this machine (timed once, cached); ``int8_runtime``
    (``onnxruntime`` or ``openvino``) names one instead. ``backend="onnxruntime"`` and ONNX
    files run int8 on onnxruntime.

    ``"auto"`` (the default) is the photo model of the scale (``scale``, default 4) with an
    automatic clean-up strength: an image that reads as clean gets exactly ``x{s}``'s output
    (about nine clean images in ten do; flat areas and transparent parts are not read:
    :mod:`upres.inference.level`), a damaged one (noise, JPEG, blur) the clean-up its damage
    calls for; at a scale without a photo model it is ``x{s}``. ``denoise`` (photo models:
    0..1, or ``auto`` measured per image) sets the clean-up strength; see
    :mod:`upres.inference.denoise`.
    """
    name = str(model)
    if name == "auto":
        photo = zoo.photo_for(scale or 4)
        name = photo.name if photo is not None and backend == "torch" else f"x{scale or 4}"
    if backend not in ("torch", "onnxruntime"):
        raise UpresError(f"unknown backend {backend!r}; choose torch or onnxruntime")
    if int8_runtime not in (None, *INT8_RUNTIMES):
        raise UpresError(f"unknown int8 runtime {int8_runtime!r}; choose "
                         f"{' or '.join(INT8_RUNTIMES)}")
    if backend == "onnxruntime" or name.lower().endswith(".onnx"):
        if int8_runtime == "openvino":
            raise UpresError("int8_runtime='openvino' needs the torch backend and a model "
                             "name or weights file (an ONNX graph runs on onnxruntime)")
        int8_runtime = "onnxruntime"  # asked for onnxruntime: int8 too
    check_ensemble(ensemble)  # also for interpolators, which need no ensemble
    if name in zoo.BASELINES:
        return Interpolator(name, scale or 4)
    if name.lower().endswith(".onnx"):
        from upres.export import load_onnx

        onet, card = load_onnx(name)
        if scale is not None and scale != card.scale:
            raise UpresError(f"{name}: model upscales x{card.scale}, not x{scale}")
        return Upscaler(onet, card, device="cpu", precision=precision, ensemble=ensemble)
    net, card = load_model(resolve_weights(name, also=zoo.BASELINES), scale)
    if card.denoise_base:
        from upres.inference.denoise import PhotoUpscaler, check_denoise

        base, _ = load_model(resolve_weights(card.denoise_base), scale)
        photo = {k: v.clone() for k, v in net.state_dict().items()}
        strength = check_denoise(denoise)
        if precision == "int8" and strength == "auto" and backend == "torch":
            print(f"upres: {name}: int8 needs a fixed clean-up strength (--denoise 0..1; the "
                  "automatic one changes the weights per image); using fp32", file=sys.stderr)
            precision = "fp32"
        if backend == "onnxruntime" or precision == "int8":  # a fixed strength, one network
            if strength == "auto":
                raise UpresError(f"{name}: the automatic clean-up strength needs the torch "
                                 "backend; give a fixed --denoise 0..1")
            PhotoUpscaler(_Holder(net), base.state_dict(), photo).set_strength(strength)
        else:  # the strength may change per image: int8 (fixed weights) is no candidate
            up = Upscaler(net, card, device=device, precision=precision,
                          channels_last=channels_last, ensemble=ensemble, int8_ok=False)
            return PhotoUpscaler(up, base.state_dict(), photo, denoise=strength)
    own_int8 = precision in ("default", "auto")  # an int8 path not asked for by name
    if backend == "onnxruntime" and precision == "default" and card.default_precision == "int8":
        precision = "int8"  # onnxruntime is the CPU: the model's own int8 graph
    if backend == "onnxruntime" and precision != "int8":
        from upres.export import OnnxNet, onnx_bytes

        return Upscaler(OnnxNet(onnx_bytes(net, card)), card, device="cpu", precision=precision,
                        ensemble=ensemble)
    return Upscaler(net, card, device=device, precision=precision, channels_last=channels_last,
                    ensemble=ensemble, int8_runtime=int8_runtime, int8_8bit_only=own_int8)


class _Holder:
    """A bare ``.model`` for :class:`~upres.inference.denoise.PhotoUpscaler` to set weights in."""

    def __init__(self, model: object) -> None:
        self.model = model


def upscale_image(img: Any, model: str = "auto", *, scale: int | None = None,
                  outscale: float | None = None, size: tuple[int, int] | None = None,
                  fit: tuple[int, int] | None = None, tile: int | None = None,
                  **load_kw: Any) -> Any:
    """Upscale one image (numpy array, PIL image or a path, as :meth:`Upscaler.upscale` takes)
    to any size: ``outscale`` (a factor: 1.5, 6, 8), ``size`` ``(w, h)`` (a 0 keeps the aspect
    ratio) or ``fit`` ``(w, h)`` (largest within, keeping the aspect ratio); none of them:
    the model's own scale. With ``model="auto"`` the network of each scale is the default one
    of that scale (loaded once and kept); a named model runs as many times as needed. The
    network passes are the least work that reaches the size, then one MATLAB-bicubic resize.
    ``load_kw`` go to :func:`load` (device, precision, denoise, ...). A request out of
    range (two of them, a factor not finite or above 64, sides not whole, negative, both 0 or
    above 1000000) is UpresError, before the image is read."""
    import numpy as np
    from PIL import Image

    from upres.inference.outscale import passes_for, size_request, target_size, upscale_to
    from upres.inference.upscaler import pil_pixels

    req = size_request(outscale, size, fit)  # checked before the image is read
    pil = isinstance(img, Image.Image)
    if pil:
        arr = pil_pixels(img)
    elif isinstance(img, str | os.PathLike):
        from upres.formats.image import read_image

        arr = read_image(Path(img))
    else:
        arr = np.asarray(img)
    if req is None:
        out = _cached(model, scale, load_kw).upscale(arr, tile=tile)
    else:
        h, w = arr.shape[:2]
        tw, th = target_size(w, h, req)
        fixed = None if model == "auto" else _cached(model, scale, load_kw).scale
        passes = passes_for(max(tw / w, th / h), fixed)
        out = upscale_to(arr, (tw, th), lambda s: _cached(model, s if model == "auto"
                                                          else scale, load_kw), passes,
                         tile=tile)
    return Image.fromarray(out) if pil else out


_LOADED: dict[tuple, Upscaler | Interpolator] = {}


def _cached(model: str, scale: int | None, load_kw: dict[str, Any]) -> Any:
    key = (model, scale, tuple(sorted(load_kw.items())))
    if key not in _LOADED:
        _LOADED[key] = load(model, scale=scale, **load_kw)
    return _LOADED[key]
