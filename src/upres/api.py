"""``upres.load``: a model name or weights path -> an object with ``upscale(img)``."""

from __future__ import annotations

import os
from pathlib import Path

from upres.errors import UpresError
from upres.inference.upscaler import Interpolator, Upscaler
from upres.models import zoo
from upres.models.weights import load_model

__all__ = ["load"]


def load(model: str | os.PathLike[str] = "x4", *, device: str = "auto",
         precision: str = "fp32", scale: int | None = None,
         channels_last: bool | None = None) -> Upscaler | Interpolator:
    """Load a shipped model by name (``upres models``), ``bicubic``/``lanczos`` (then ``scale``
    is needed, default 4) or a weights file (``.safetensors`` from upres, third-party ``.pth``).

    A model with a fixed scale refuses a different ``scale``. ``channels_last=None`` uses the
    memory format measured faster for the architecture on CPU.
    """
    name = str(model)
    if name in zoo.BASELINES:
        return Interpolator(name, scale or 4)
    path = zoo.resolve(name)
    if path is None:
        path = Path(name)
        if not path.is_file():
            known = ", ".join([c.name for c in zoo.shipped()] + list(zoo.BASELINES))
            raise UpresError(f"{name}: not a shipped model ({known}) nor a weights file")
    net, card = load_model(path, scale)
    return Upscaler(net, card, device=device, precision=precision, channels_last=channels_last)
