"""Degradations that turn HR images into LR inputs. Each takes explicit arguments only."""

from __future__ import annotations

import numpy as np

from upres.resize import imresize

__all__ = ["bicubic_down", "modcrop"]


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    """Cut the bottom/right so that height and width are multiples of ``scale`` (a view)."""
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]


def bicubic_down(hr: np.ndarray, scale: int) -> np.ndarray:
    """MATLAB ``imresize(hr, 1/scale, 'bicubic')`` of a modcropped image, same dtype."""
    return imresize(modcrop(hr, scale), 1.0 / scale)
