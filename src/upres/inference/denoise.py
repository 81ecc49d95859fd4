"""Clean-up strength for photo models (issue 22): weights interpolated between two trained
networks, and an estimate of how damaged an input is.

A photo model ``photo-x{s}`` is stored as its strong-clean-up endpoint; its card names the
clean endpoint (``denoise_base``, the bicubic-trained ``x{s}`` it was fine-tuned from). Strength
``t`` in [0, 1] runs the network whose every weight is ``(1 - t) * base + t * photo`` (ESRGAN's
network interpolation): computed once per strength, so every strength runs at the same speed,
and ``t = 0`` gives exactly ``x{s}``'s output, ``t = 1`` the photo model's.

``auto`` picks ``t`` per image from :func:`damage`: the noise level measured on flat regions
(Immerkaer's fast estimator, after Liu et al.'s idea of using low-texture patches), the JPEG
blockiness of the pixels, and for a JPEG file the quality its quantisation tables say. Models
trained on damage levels (card ``denoise_level``: strength ``t`` was trained on inputs damaged
to level ``t`` of :class:`upres.data.degrade.Leveled`) take the level that the learned
estimator of :mod:`upres.inference.level` reads off the pixels (given the two measured
features), or the level the file's JPEG quality alone implies if that is higher. Older models
map the measured features (the blocking as :func:`blockiness_v1` measures it; the noise as
:func:`noise_sigma` does now, which since session 14 leaves exactly flat and transparent areas
out, so images with such areas read differently from when the formula was fitted) to ``t``
by a formula (:func:`strength_for`) fitted on the training images degraded by known amounts
(``scripts/fit_denoise.py``). Both were fitted on the 291
training images only, never on benchmark images.
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from upres.inference.upscaler import _MAX  # the peak value of each integer pixel type

__all__ = ["Damage", "PhotoUpscaler", "blockiness", "blockiness_v1", "check_denoise", "damage",
           "data_kwargs", "jpeg_level", "jpeg_quality", "noise_sigma", "strength_for"]


def _luma(img: np.ndarray) -> np.ndarray:
    """``(H, W[, C])`` uint8/uint16/float -> float64 luma on 0..255."""
    a = np.asarray(img)
    a = a.astype(np.float64) * (255 / _MAX.get(a.dtype, 1.0))
    if a.ndim == 3 and a.shape[2] >= 3:
        return a[:, :, 0] * 0.299 + a[:, :, 1] * 0.587 + a[:, :, 2] * 0.114
    return a[:, :, 0] if a.ndim == 3 else a


def noise_sigma(img: np.ndarray) -> float:
    """Gaussian noise sigma (levels of 255) of an image, from its flattest parts: the residual
    of Immerkaer's Laplacian-difference kernel (which cancels smooth shading) has, for white
    noise of sigma s, a standard deviation of 6 s; its standard deviation in 16x16 blocks is
    taken at the 10th percentile of the blocks, where texture is least. Blocks that are
    exactly flat (a clipped highlight, a synthetic background, the colour under a transparent
    area) hold no noise to measure and are left out; 0 when nothing else is left. Looks at
    most the middle 1024x1024 pixels."""
    from scipy.ndimage import convolve

    y, opaque = _luma(img), _opaque(img)
    h, w = y.shape
    if h > 1024 or w > 1024:
        y0, x0 = max(0, (h - 1024) // 2), max(0, (w - 1024) // 2)
        y = y[y0:y0 + 1024, x0:x0 + 1024]
        opaque = opaque[y0:y0 + 1024, x0:x0 + 1024]
    if min(y.shape) < 18:
        return 0.0
    k = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float64)
    r = convolve(y, k, mode="reflect")[1:-1, 1:-1]
    bh, bw = r.shape[0] // 16, r.shape[1] // 16
    blocks = r[: bh * 16, : bw * 16].reshape(bh, 16, bw, 16).std(axis=(1, 3))
    if not opaque.all():  # the residual of a pixel reads its 8 neighbours too
        from scipy.ndimage import minimum_filter

        opaque = minimum_filter(opaque, size=3, mode="nearest")
    seen = opaque[1:-1, 1:-1][: bh * 16, : bw * 16].reshape(bh, 16, bw, 16).all(axis=(1, 3))
    blocks = blocks[seen & (blocks > 0.05)]  # (6 x a noise sigma of 0.01 levels; NaN out too)
    return float(np.percentile(blocks, 10) / 6.0) if blocks.size else 0.0


def _opaque(img: np.ndarray) -> np.ndarray:
    """``(H, W)`` bool: where ``img`` is opaque, its alpha within half an 8-bit level of full
    (everywhere when it has no alpha, that is unless it has 2 or 4 channels)."""
    a = np.asarray(img)
    if a.ndim == 3 and a.shape[2] in (2, 4):
        return a[:, :, -1] >= _MAX.get(a.dtype, 1.0) * (1 - 1 / 510)
    return np.ones(a.shape[:2], dtype=bool)


def blockiness(img: np.ndarray) -> float:
    """JPEG blocking: how much larger the steps across the 8x8 grid are than the steps beside
    them (0 for none; luma, horizontal and vertical). Per grid line, the mean step across it is
    compared with the mean of the six nearest lines' inside the blocks, and the median of those
    ratios is taken, so that a few hard edges that happen to lie on the grid (a photo placed on
    a page) do not count as blocking; only steps between two fully opaque pixels count, so the
    edge of a transparent area does not either."""
    y, opaque = _luma(img), _opaque(img)
    if min(y.shape) < 24:
        return 0.0

    def ratio(d: np.ndarray, seen: np.ndarray) -> float:  # steps along axis 1
        seen = seen & np.isfinite(d)
        n = seen.sum(axis=0)
        line = np.where(seen, d, 0.0).sum(axis=0) / np.maximum(n, 1)
        grid = np.arange(7, d.shape[1] - 3, 8)
        if grid.size == 0:
            return 1.0
        side = [grid + k for k in (-3, -2, -1, 1, 2, 3)]  # lines with no steps seen left out
        counted = np.stack([n[i] > 0 for i in side])
        near = (np.stack([line[i] for i in side]) * counted).sum(axis=0) / np.maximum(
            counted.sum(axis=0), 1)
        ok = (near > 1e-3) & (n[grid] > 0)
        return float(np.median(line[grid][ok] / near[ok])) if ok.any() else 1.0

    bx = ratio(np.abs(np.diff(y, axis=1)), opaque[:, 1:] & opaque[:, :-1])
    by = ratio(np.abs(np.diff(y, axis=0)).T, (opaque[1:] & opaque[:-1]).T)
    return float(max(0.0, (bx + by) / 2 - 1.0)) if np.isfinite(bx + by) else 0.0


def blockiness_v1(img: np.ndarray) -> float:
    """The blocking measure :data:`STRENGTH_FIT` and the ``denoise_fit`` of older photo cards
    were fitted on (``scripts/fit_denoise.py``): mean step across the 8x8 grid over mean step
    inside the blocks, minus 1, over the whole image. Hard edges on the grid and the edges of
    transparent areas count as blocking here; :func:`blockiness` does not."""
    y = _luma(img)
    if min(y.shape) < 24:
        return 0.0
    dx = np.abs(np.diff(y, axis=1))
    dy = np.abs(np.diff(y, axis=0))
    bx = dx[:, 7::8].mean() / max(1e-6, np.delete(dx, np.s_[7::8], axis=1).mean())
    by = dy[7::8, :].mean() / max(1e-6, np.delete(dy, np.s_[7::8], axis=0).mean())
    return float(max(0.0, (bx + by) / 2 - 1.0))


def jpeg_quality(path: str | os.PathLike[str]) -> int | None:
    """The IJG quality (1-100) of a JPEG file's quantisation tables, or None for anything
    else (see :func:`upres.formats.image.jpeg_quality_of`)."""
    from PIL import Image

    from upres.formats.image import jpeg_quality_of

    try:
        with Image.open(path) as im:
            return jpeg_quality_of(im) if im.format == "JPEG" else None
    except Exception:
        return None


@dataclass(frozen=True)
class Damage:
    """What :func:`damage` measured: ``noise`` sigma (levels), ``blocking``, JPEG ``quality``
    from the file's tables (None when not a JPEG), the damage ``level`` the learned
    estimator read (None when it was not asked), and the ``strength`` in [0, 1] its map gives
    that reading once it is over the threshold (:func:`upres.inference.level.strength_of`;
    None: the level itself)."""

    noise: float
    blocking: float
    quality: int | None = None
    level: float | None = None
    strength: float | None = None


def damage(img: np.ndarray, quality: int | None = None, *, legacy: bool = False) -> Damage:
    """Measure an input's noise and JPEG damage (``quality``: from the file, if a JPEG);
    ``legacy``: the blocking measure the fitted formula was made with (:func:`blockiness_v1`)."""
    return Damage(noise_sigma(img), (blockiness_v1 if legacy else blockiness)(img), quality)


#: ``t = clip(max(0, a + b * noise + c * blocking) + d * (100 - quality) / 100, 0, 1)``: what
#: the pixels show, plus what a JPEG file's own tables say (quality 100 when not a JPEG); fitted
#: by scripts/fit_denoise.py on the training images (a photo model's card carries its own fit,
#: ``denoise_fit``; this is photo-x4's); below ``_OFF`` the clean model runs as is.
STRENGTH_FIT = {"a": -1.1, "b": 0.12, "c": 6.0, "d": 3.25}
_OFF = 0.05
#: below this estimated level an input counts as clean (the clean model runs as is)
LEVEL_OFF = 0.1


def jpeg_level(quality: int | None) -> float:
    """The damage level a JPEG quality implies on :class:`upres.data.degrade.Leveled`'s scale
    (quality ``100 - t * U(40, 70)``: ``t = (100 - quality) / 55``), 0 for no JPEG."""
    return 0.0 if quality is None else float(np.clip((100 - quality) / 55, 0.0, 1.0))


def strength_for(d: Damage, fit: dict[str, float] | None = None, *,
                 off: float = LEVEL_OFF) -> float:
    """The clean-up strength ``t`` in [0, 1] for measured damage ``d``: when the estimator
    read a ``level``, 0 if it (or the file's JPEG quality's level, if higher) is under
    ``off``, else the estimator's ``strength`` for it (or the JPEG quality's level, if
    higher); without a reading, the fitted formula ``fit``."""
    if d.level is not None:
        level = d.level if math.isfinite(d.level) else 0.0  # NaN pixels: nothing to read
        q = jpeg_level(d.quality)
        if max(level, q) < off:
            return 0.0
        s = d.strength if d.strength is not None and math.isfinite(d.strength) else level
        return float(max(s, q))
    f = fit or STRENGTH_FIT
    q = d.quality if d.quality is not None else 100
    pixels = max(0.0, f["a"] + f["b"] * d.noise + f["c"] * d.blocking)
    t = float(np.clip(pixels + f["d"] * (100 - q) / 100, 0.0, 1.0))
    return 0.0 if t < _OFF else t


class PhotoUpscaler:
    """An :class:`~upres.inference.upscaler.Upscaler` whose network is the blend of a clean and
    a clean-up endpoint; ``denoise`` (``float`` 0..1 or ``"auto"``) sets the strength, per call
    or for every call. Everything else (tiling, alpha, 16-bit, precision) is the Upscaler's."""

    def __init__(self, up: Any, base: dict[str, torch.Tensor], photo: dict[str, torch.Tensor],
                 *, denoise: float | str = "auto") -> None:
        self.up = up
        self.base = {k: v.detach().clone().float() for k, v in base.items()}
        self.photo = {k: v.detach().clone().float() for k, v in photo.items()}
        if set(self.base) != set(self.photo) or any(
                self.base[k].shape != self.photo[k].shape for k in self.base):
            raise ValueError("denoise endpoints must be the same architecture")
        self.denoise = check_denoise(denoise)
        self.strength: float | None = None
        self.last: tuple[float, Damage | None] = (0.0, None)
        self._lock = threading.RLock()
        self._params = dict(up.model.named_parameters())
        self._buffers = dict(up.model.named_buffers())

    def __getattr__(self, name: str) -> Any:  # name, scale, card, precision, ...
        return getattr(self.__dict__["up"], name)

    @torch.no_grad()
    def set_strength(self, t: float) -> None:
        """Load the weights of strength ``t`` into the network (once per strength)."""
        if self.strength == t:
            return
        for k, a in self.base.items():
            dst = self._params.get(k)
            if dst is None:
                dst = self._buffers.get(k)
            if dst is None:
                continue
            w = a if t == 0 else self.photo[k] if t == 1 else torch.lerp(a, self.photo[k], t)
            dst.copy_(w.to(dst.dtype))
        self.strength = t

    def choose(self, img: Any, denoise: float | str | None = None,
               quality: int | None = None) -> float:
        """The strength for ``img`` (``denoise`` or this upscaler's setting; ``auto``:
        measured)."""
        d = check_denoise(self.denoise if denoise is None else denoise)
        if d != "auto":
            self.last = (float(d), None)
            return float(d)
        if isinstance(img, str | os.PathLike):
            quality = quality if quality is not None else jpeg_quality(img)
            from upres.formats.image import read_image

            img = read_image(Path(img))
        card = self.up.card
        off = LEVEL_OFF
        net = None
        if getattr(card, "denoise_level", False):
            from upres.inference.level import (
                level_map,
                level_net,
                level_off,
                read_damage,
                strength_of,
            )

            net = level_net(card.scale)
        a = np.asarray(img)
        if net is not None:
            dmg = damage(a, quality)
            off = level_off(card.scale)
            # strength_for tests off on the reading (or the JPEG quality's level, if higher)
            t, blind = read_damage(a, net, noise=dmg.noise, blocking=dmg.blocking)
            dmg = replace(dmg, level=strength_of(t, blind),
                          strength=strength_of(t, blind, level_map(card.scale)))
        else:  # the fitted formula, on the blocking measure it was fitted with
            dmg = damage(a, quality, legacy=True)
        t = strength_for(dmg, getattr(card, "denoise_fit", None) or None, off=off)
        self.last = (t, dmg)
        return t

    def run(self, img: Any, *, denoise: float | str | None = None, quality: int | None = None,
            **kw: Any) -> tuple[Any, float]:
        """:meth:`upscale`, and the strength it used. One call at a time (the strength is the
        network's weights), so threads may share this object."""
        with self._lock:
            t = self.choose(img, denoise, quality)
            self.set_strength(t)
            return self.up.upscale(img, **kw), t

    def upscale(self, img: Any, *, denoise: float | str | None = None,
                quality: int | None = None, **kw: Any) -> Any:
        """As :meth:`Upscaler.upscale`, at clean-up strength ``denoise`` (default: this
        upscaler's; ``auto`` measures ``img``; ``quality``: a JPEG source's quality)."""
        return self.run(img, denoise=denoise, quality=quality, **kw)[0]


def data_kwargs(up: Any) -> dict[str, Any]:
    """Keyword arguments for ``up.upscale`` on measured data (DICOM, scientific TIFF, GeoTIFF):
    an automatic clean-up strength becomes 0 there (their noise is signal, not damage); a
    strength the user gave is kept."""
    return {"denoise": 0.0} if getattr(up, "denoise", None) == "auto" and \
        isinstance(up, PhotoUpscaler) else {}


def check_denoise(value: float | str) -> float | str:
    """``"auto"`` or a number in [0, 1] (a numeric string is taken), else UpresError."""
    from upres.errors import UpresError

    if isinstance(value, str):
        if value == "auto":
            return value
        try:
            value = float(value)
        except ValueError:
            raise UpresError(f"denoise must be auto or a number from 0 to 1, got {value!r}") \
                from None
    if not 0.0 <= float(value) <= 1.0:
        raise UpresError(f"denoise must be from 0 to 1, got {value}")
    return float(value)
