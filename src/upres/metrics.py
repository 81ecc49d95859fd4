"""PSNR and SSIM by the SR field's standard protocol (see PROTOCOL.md).

* Images are 8-bit RGB (uint8, ``(H, W, 3)``) or 8-bit gray (``(H, W)``, treated as three
  equal channels).
* Scores are computed on luma: ``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255`` on 0..255
  values, in float64, not rounded (MATLAB ``rgb2ycbcr``).
* ``shave`` pixels (the scale) are cut from every border of both images.
* PSNR = ``10 log10(255^2 / MSE)``; SSIM is Wang et al. 2004 with an 11x11 Gaussian window
  (sigma 1.5), K1 = 0.01, K2 = 0.03, L = 255, "valid" positions only, mean over the map.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["gaussian_window", "psnr", "psnr_y", "rgb_to_y", "ssim", "ssim_y"]


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """BT.601 luma of an 8-bit image as float64 in [16, 235].

    ``img``: ``(H, W, 3)`` RGB or ``(H, W)`` gray, uint8 (or float on the 0..255 scale).
    A gray image is three equal channels, so its Y is ``16 + 219/255 * gray``.
    """
    x = np.asarray(img, dtype=np.float64)
    if x.ndim == 2:
        return 16.0 + (65.481 + 128.553 + 24.966) * x / 255.0
    if x.ndim != 3 or x.shape[2] != 3:
        raise ValueError(f"rgb_to_y expects (H, W, 3) or (H, W), got shape {x.shape}")
    return 16.0 + (65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2]) / 255.0


def _shaved(a: np.ndarray, b: np.ndarray, shave: int) -> tuple[np.ndarray, np.ndarray]:
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    if shave > 0:
        if a.shape[0] <= 2 * shave or a.shape[1] <= 2 * shave:
            raise ValueError(f"image {a.shape[:2]} is too small to shave {shave} pixels")
        a = a[shave:-shave, shave:-shave]
        b = b[shave:-shave, shave:-shave]
    return a, b


def psnr(a: np.ndarray, b: np.ndarray, *, shave: int = 0, peak: float = 255.0) -> float:
    """PSNR in dB between two same-shape arrays (any channels), float64; ``inf`` if identical."""
    x, y = _shaved(np.asarray(a, np.float64), np.asarray(b, np.float64), shave)
    mse = float(np.mean((x - y) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(peak * peak / mse)


def psnr_y(sr: np.ndarray, hr: np.ndarray, *, shave: int) -> float:
    """Standard-protocol PSNR on Y of two 8-bit images, ``shave`` pixels cut from each border."""
    return psnr(rgb_to_y(sr), rgb_to_y(hr), shave=shave)


def gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """Normalised 1-D Gaussian taps, float64, shape ``(size,)``."""
    t = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(t * t) / (2.0 * sigma * sigma))
    return g / g.sum()


def _filter_valid(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of a 2-D float64 array with taps ``g`` on both axes."""
    n = g.size
    rows = np.lib.stride_tricks.sliding_window_view(x, n, axis=0) @ g
    return np.lib.stride_tricks.sliding_window_view(rows, n, axis=1) @ g


def ssim(a: np.ndarray, b: np.ndarray, *, shave: int = 0, peak: float = 255.0) -> float:
    """SSIM (Wang et al. 2004) of two 2-D arrays on a ``0..peak`` scale, Gaussian 11x11 window."""
    x, y = _shaved(np.asarray(a, np.float64), np.asarray(b, np.float64), shave)
    if x.ndim != 2:
        raise ValueError(f"ssim expects 2-D arrays, got shape {x.shape}")
    if min(x.shape) < 11:
        raise ValueError(f"image {x.shape} is smaller than the 11x11 SSIM window")
    g = gaussian_window()
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    mu_x, mu_y = _filter_valid(x, g), _filter_valid(y, g)
    sxx = _filter_valid(x * x, g) - mu_x * mu_x
    syy = _filter_valid(y * y, g) - mu_y * mu_y
    sxy = _filter_valid(x * y, g) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * sxy + c2)
    den = (mu_x * mu_x + mu_y * mu_y + c1) * (sxx + syy + c2)
    return float(np.mean(num / den))


def ssim_y(sr: np.ndarray, hr: np.ndarray, *, shave: int) -> float:
    """Standard-protocol SSIM on Y of two 8-bit images, ``shave`` pixels cut from each border."""
    return ssim(rgb_to_y(sr), rgb_to_y(hr), shave=shave)
