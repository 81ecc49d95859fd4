"""The degradation ladder (issue 22): four rungs of LR inputs made from the same HR images, to
judge photo models from clean to badly damaged input.

- **L0 clean**: MATLAB bicubic (the standard protocol's LR).
- **L1 mild**: one of four kinds per image (by a hash of its name): JPEG at quality 85-95 of the
  bicubic LR; Gaussian noise of sigma 0.5-2 levels (of 255) on it; a light Gaussian blur of
  the HR image before the bicubic downscale, sigma 0.25-0.5 x scale HR pixels; or all three.
- **L2 moderate**: the same four kinds, stronger: JPEG 50-75, noise 3-8 levels, blur 0.5-0.8 x
  scale HR pixels.
- **L3 blind**: Real-ESRGAN's second-order pipeline (:func:`upres.data.blindset.make_blind_set`,
  the existing blind sets).

Parameters are drawn uniformly in those ranges from a generator seeded by ``(seed, rung,
crc32(name))``, so every image's degradation is fixed whatever else is in the folder. The
ranges were set from common use (camera JPEG 85-95, sensor noise of a few levels), before any
model was scored on them, and are the same for every model.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from upres.data.datasets import scan_images
from upres.data.degrade import add_gaussian_noise, blur, gaussian_kernel, jpeg, modcrop
from upres.formats.image import read_rgb8, write_image
from upres.inference.upscaler import to_dtype
from upres.resize import imresize

__all__ = ["KINDS", "RUNGS", "Rung", "degrade", "make_ladder_set"]


@dataclass(frozen=True)
class Rung:
    """A rung's parameter ranges: JPEG quality, noise sigma (levels of 255), blur sigma (in
    units of the scale, HR pixels)."""

    name: str
    quality: tuple[int, int]
    noise: tuple[float, float]
    blur: tuple[float, float]


RUNGS = {"L1": Rung("L1", (85, 95), (0.5, 2.0), (0.25, 0.5)),
         "L2": Rung("L2", (50, 75), (3.0, 8.0), (0.5, 0.8))}
#: The kind of degradation an image gets on L1/L2 (by ``crc32(name) % 4``).
KINDS = ("jpeg", "noise", "blur", "all")


def degrade(hr: np.ndarray, scale: int, rung: Rung, kind: str,
            rng: np.random.Generator) -> np.ndarray:
    """``hr`` uint8 ``(sH, sW, 3)`` (modcropped) -> LR uint8 ``(H, W, 3)`` on ``rung``."""
    x = hr
    if kind in ("blur", "all"):
        sigma = float(rng.uniform(*rung.blur)) * scale
        size = 2 * int(np.ceil(3 * sigma)) + 1
        x = to_dtype(np.clip(blur(hr.astype(np.float32) / 255, gaussian_kernel(size, sigma)),
                             0, 1), np.dtype(np.uint8))
    lr = imresize(x, 1.0 / scale)  # MATLAB bicubic, uint8 rounded per pass
    f = lr.astype(np.float32) / 255
    if kind in ("noise", "all"):
        f = add_gaussian_noise(f, float(rng.uniform(*rung.noise)) / 255, rng)
    f = np.clip(f, 0, 1)
    if kind in ("jpeg", "all"):
        f = jpeg(f, int(rng.integers(rung.quality[0], rung.quality[1] + 1)))
    return to_dtype(f, np.dtype(np.uint8))


def make_ladder_set(hr_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
                    scale: int, rung: str, seed: int = 2026) -> list[Path]:
    """Write ``OUT/X{s}/{stem}x{s}.png`` for every HR image of ``hr_dir`` on ``rung`` (``L0``,
    ``L1``, ``L2`` or ``L3``; the layout ``upres eval --lr-dir`` reads). Files already there
    are kept (their content is a function of the inputs and the seed)."""
    if rung == "L3":
        from upres.data.blindset import make_blind_set

        return make_blind_set(hr_dir, out_dir, scale=scale, seed=seed)
    if rung != "L0" and rung not in RUNGS:
        raise ValueError(f"rung must be L0, L1, L2 or L3, got {rung!r}")
    out = Path(out_dir) / f"X{scale}"
    written = []
    for f in scan_images([hr_dir]):
        dst = out / f"{f.stem}x{scale}.png"
        if not dst.exists():
            hr = modcrop(read_rgb8(f), scale)
            if rung == "L0":
                lr = imresize(hr, 1.0 / scale)
            else:
                tag = zlib.crc32(f.stem.encode())
                rng = np.random.default_rng([seed, int(rung[1]), tag])
                lr = degrade(hr, scale, RUNGS[rung], KINDS[tag % 4], rng)
            write_image(dst, lr)
        written.append(dst)
    return written
