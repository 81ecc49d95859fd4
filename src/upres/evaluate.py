"""Models x datasets -> PSNR/SSIM by the standard protocol (PROTOCOL.md).

For each HR image: read as 8-bit RGB (gray -> three channels), modcrop to the scale, make the LR
with MATLAB bicubic, upscale it, round to uint8, and score on Y with a ``scale``-pixel border
shave. Set PSNR/SSIM are means of the per-image values.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from upres.data.datasets import scan_images
from upres.data.degrade import bicubic_down, modcrop
from upres.io import read_rgb8
from upres.metrics import psnr_y, ssim_y

__all__ = ["EvalResult", "ImageScore", "evaluate", "load_benchmark"]

#: ``(H, W, 3)`` uint8 LR -> ``(H*s, W*s, 3)`` uint8 SR
UpscaleFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class ImageScore:
    name: str
    psnr_y: float
    ssim_y: float


@dataclass(frozen=True)
class EvalResult:
    """One model on one dataset; the JSON schema of ``upres eval --json``."""

    model: str
    dataset: str
    scale: int
    psnr_y: float
    ssim_y: float
    n_images: int
    per_image: list[ImageScore] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


def load_benchmark(folder: str | os.PathLike[str], scale: int) -> list[tuple[str, np.ndarray,
                                                                             np.ndarray]]:
    """``(name, hr, lr)`` for each image of ``folder``: modcropped 8-bit RGB HR and its MATLAB
    bicubic LR, both uint8 ``(H, W, 3)``."""
    out = []
    for f in scan_images([folder]):
        hr = modcrop(read_rgb8(f), scale)
        out.append((f.stem, np.ascontiguousarray(hr), bicubic_down(hr, scale)))
    return out


def evaluate(
    upscale: UpscaleFn,
    *,
    model_name: str,
    dataset: str | os.PathLike[str],
    scale: int,
    with_ssim: bool = True,
    images: Sequence[tuple[str, np.ndarray, np.ndarray]] | None = None,
) -> EvalResult:
    """Score ``upscale`` on one dataset folder by the standard protocol.

    ``images`` may pass pre-loaded ``load_benchmark`` output (used by training validation).
    """
    data = images if images is not None else load_benchmark(dataset, scale)
    scores = []
    for name, hr, lr in data:
        sr = upscale(lr)
        if sr.shape != hr.shape or sr.dtype != np.uint8:
            raise ValueError(f"{name}: upscaler returned {sr.shape} {sr.dtype}, expected "
                             f"{hr.shape} uint8")
        scores.append(ImageScore(name, psnr_y(sr, hr, shave=scale),
                                 ssim_y(sr, hr, shave=scale) if with_ssim else float("nan")))
    return EvalResult(
        model=model_name, dataset=Path(dataset).name, scale=scale,
        psnr_y=float(np.mean([s.psnr_y for s in scores])),
        ssim_y=float(np.mean([s.ssim_y for s in scores])),
        n_images=len(scores), per_image=scores,
    )
