"""A deterministic blind-SR test set: benchmark HR images degraded by the second-order pipeline.

Each HR image (modcropped to the scale) is degraded with :func:`upres.data.degrade.second_order`
under its own generator, seeded by ``(seed, crc32(file stem))``, so the set is the same on every
machine and does not depend on which other files are present. The LR images are written as
``OUT/X{s}/{stem}x{s}.png`` (the layout ``upres eval --lr-dir`` reads).
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np

from upres.data.datasets import scan_images
from upres.data.degrade import modcrop, second_order
from upres.formats.image import read_rgb8, write_image
from upres.inference.upscaler import to_dtype

__all__ = ["make_blind_set"]


def make_blind_set(hr_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
                   scale: int = 4, seed: int = 2026) -> list[Path]:
    """Write the degraded LR of every image in ``hr_dir``; returns the written paths (files
    already present are kept: the content is a function of the inputs and the seed)."""
    pipe = second_order(scale)
    out = Path(out_dir) / f"X{scale}"
    written = []
    for f in scan_images([hr_dir]):
        dst = out / f"{f.stem}x{scale}.png"
        if not dst.exists():
            hr = modcrop(read_rgb8(f), scale).astype(np.float32) / 255.0
            rng = np.random.default_rng([seed, zlib.crc32(f.stem.encode())])
            write_image(dst, to_dtype(pipe(hr, rng), np.dtype(np.uint8)))
        written.append(dst)
    return written
