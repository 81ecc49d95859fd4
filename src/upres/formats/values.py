"""Stored values <-> the network's [0, 1], for formats whose values mean something (DICOM
stored values, float32 and signed TIFF): a linear map of ``lo..hi`` onto 0..1 and back, with
masked samples (DICOM padding, NaN and infinities) kept out of the network and put back."""

from __future__ import annotations

import numpy as np

__all__ = ["from_unit", "masked_nearest", "to_unit"]


def to_unit(frame: np.ndarray, lo: float, hi: float,
            mask: np.ndarray | None = None) -> np.ndarray:
    """``(H, W[, C])`` stored values -> float32 in [0, 1] by ``(v - lo) / (hi - lo)``, clipped.

    Masked samples (``mask`` ``(H, W)`` bool, True = masked) take the value of the nearest
    unmasked sample first, so padding or NaN neither reaches the network nor rings at edges.
    """
    x = frame.astype(np.float64)
    if mask is not None and mask.any():
        if mask.all():
            x = np.zeros_like(x)
        else:
            from scipy import ndimage

            idx = ndimage.distance_transform_edt(mask, return_distances=False,
                                                 return_indices=True)
            x = x[idx[0], idx[1]]
    u = (x - lo) / (hi - lo)
    return np.clip(np.nan_to_num(u, nan=0.0), 0.0, 1.0).astype(np.float32)


def from_unit(u: np.ndarray, lo: float, hi: float, dtype: np.dtype) -> np.ndarray:
    """float ``[0, 1]`` -> stored values of ``dtype``, clipped to ``lo..hi`` (integers rounded
    half up)."""
    dt = np.dtype(dtype)
    v = lo + np.clip(u.astype(np.float64), 0.0, 1.0) * (hi - lo)
    if dt.kind in "ui":
        return np.clip(np.floor(v + 0.5), lo, hi).astype(dt)
    return np.clip(v, lo, hi).astype(dt)


def masked_nearest(out: np.ndarray, src: np.ndarray, mask: np.ndarray | None,
                   s: int) -> np.ndarray:
    """Put the masked samples of ``src`` back into ``out`` (``s`` times larger), each one onto
    the ``s x s`` block it becomes (nearest neighbour). ``out`` is changed in place."""
    if mask is None or not mask.any():
        return out
    big = np.repeat(np.repeat(mask, s, axis=0), s, axis=1)
    src_big = np.repeat(np.repeat(src, s, axis=0), s, axis=1)
    out[big] = src_big[big]
    return out
