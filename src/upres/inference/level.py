"""How damaged an input looks, as the level ``t`` of :class:`upres.data.degrade.Leveled`: the
learned estimator behind ``--denoise auto`` of photo models trained on those levels (issue 22).

A photo model's network at clean-up strength ``t`` was trained on inputs damaged to level ``t``
(``model.denoise_base`` in the training config), so the strength for an input is its level. The
estimator is a small CNN (:class:`LevelNet`, 46 thousand weights) that reads the level off
the pixels: blur, noise, JPEG blocking and ringing, whichever is there; beside its pooled
features it is given two measured ones, the least-textured-region noise sigma and the 8x8 blockiness
(:mod:`upres.inference.denoise`). It is trained on crops of the 291 training images only,
degraded at random levels (at x4 three in ten at the image's own resolution rather than
downscaled), the blind (second-order) kind of damage read as level 1 (``scripts/fit_level.py``;
the x2 one, since session 36, also says how likely that kind is, and its level moves towards 1
by that probability: :func:`estimate_level`), and shipped per scale as
``upres/assets/level_x{s}.safetensors``. An image read under the threshold ``off`` stored with
the estimator gets the clean model itself (strength 0); over it, the strength is the reading
through a small map stored with the estimator too (:func:`strength_of`, the identity if none),
fitted on the PSNR of training crops at every strength (``scripts/fit_level.py --fit-map``).

An image is read in up to nine 64x64 windows whose corners sit on the 8x8 JPEG grid: those of a
3x3 grid over the image, with windows of a finer 5x5 grid standing in for any that say nothing
(:func:`usable`: flat, such as a white background or a clear sky, or not fully opaque, whose
colour under the alpha is not the picture); their features are averaged before the head, so the
estimate costs the same for any size (a few milliseconds on a CPU core). An image with no
usable window reads as clean. The estimator is trained on windows picked by the same rule.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["FLAT", "IDENTITY", "WINDOW", "LevelNet", "estimate_level", "estimator_map",
           "estimator_off", "level_map", "level_net", "level_off", "level_path", "read_damage",
           "read_estimator", "read_strength", "read_windows", "strength_of", "usable", "windows"]

ASSETS = Path(__file__).resolve().parent.parent / "assets"
#: side of the windows an image is read in (training crops are this size too)
WINDOW = 64
#: a window whose luma varies less than this (standard deviation, levels of 255) is flat
FLAT = 2.0
#: the map from a reading to a strength when an estimator stores none: the reading itself
IDENTITY: dict[str, float] = {"a": 1.0, "b": 0.0, "power": 1.0}


class LevelNet(nn.Module):
    """Input: ``x`` float32 ``(N, 3, H, W)`` RGB in [0, 1] (windows of one image or of a batch),
    ``extra`` float32 ``(N, 2)`` (log1p of the noise sigma in levels, blockiness);
    ``group``: how many consecutive windows belong to one image (their features are averaged).
    Output: ``(N / group,)`` float32 level: in [0, 1] with ``margin`` 0 (a sigmoid), else the
    sigmoid stretched to ``[-margin, 1 + margin]``, so that the ends 0 and 1 are reached at
    finite logits (a bare sigmoid trained by squared error reads the top level, the blind kind,
    well under 1: session 23); training fits the stretched value, :func:`estimate_level` clips
    it to [0, 1].

    ``kind=True`` adds a second output, the logit that the damage is the blind (second-order)
    kind rather than an everyday pass (:meth:`both`); the level is then the everyday level, and
    :func:`estimate_level` moves the level towards 1 by the blind kind's probability (the
    shipped x2 estimator has it since session 36: docs/ladder.md)."""

    def __init__(self, width: int = 32, margin: float = 0.0, kind: bool = False) -> None:
        super().__init__()
        w = width
        self.margin = float(margin)
        self.kind = bool(kind)
        self.body = nn.Sequential(
            nn.Conv2d(3, w // 2, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(w // 2, w, 4, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(w, w, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(w, w, 4, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(w, w, 3, padding=1), nn.ReLU(inplace=True),
        )
        self.head = nn.Sequential(nn.Linear(2 * w + 2, 32), nn.ReLU(inplace=True),
                                  nn.Linear(32, 2 if kind else 1))

    def both(self, x: torch.Tensor, extra: torch.Tensor, group: int = 1
             ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The level ``(N / group,)`` (as :meth:`forward`) and, with ``kind``, the blind
        kind's logit ``(N / group,)`` (else None)."""
        f = self.body(x - 0.5)
        feats = torch.cat([f.mean(dim=(2, 3)), f.std(dim=(2, 3))], dim=1)
        feats = feats.view(-1, group, feats.shape[1]).mean(dim=1)
        extra = extra.view(-1, group, extra.shape[1]).mean(dim=1)
        h = self.head(torch.cat([feats, extra], dim=1))
        y = torch.sigmoid(h[:, 0])
        y = y * (1 + 2 * self.margin) - self.margin if self.margin else y
        return y, (h[:, 1] if self.kind else None)

    def forward(self, x: torch.Tensor, extra: torch.Tensor, group: int = 1) -> torch.Tensor:
        return self.both(x, extra, group)[0]


def level_path(scale: int) -> Path:
    """The shipped estimator of ``scale`` (it may not exist)."""
    return ASSETS / f"level_x{scale}.safetensors"


def _meta(p: Path) -> dict:
    """The ``upres_level`` entry ``scripts/fit_level.py`` wrote with the weights in ``p``."""
    import json

    from safetensors import safe_open

    with safe_open(str(p), framework="pt") as fh:
        return json.loads((fh.metadata() or {}).get("upres_level", "{}"))


@lru_cache(maxsize=4)
def level_off(scale: int) -> float:
    """The level under which ``auto`` leaves the clean model alone, as ``scripts/fit_level.py``
    measured it for the shipped estimator of ``scale`` (nine clean training images in ten read
    under it); :data:`upres.inference.denoise.LEVEL_OFF` when it says none."""
    from upres.inference.denoise import LEVEL_OFF

    p = level_path(scale)
    return estimator_off(p) if p.is_file() else LEVEL_OFF


def estimator_off(p: Path) -> float:
    """The threshold ``off`` stored with the estimator in ``p`` (``LEVEL_OFF`` if none)."""
    from upres.inference.denoise import LEVEL_OFF

    return float(_meta(p).get("off", LEVEL_OFF))


def estimator_map(p: Path) -> dict[str, float]:
    """The map from a reading to a strength stored with the estimator in ``p`` (``a``, ``b``,
    ``power``: :func:`strength_of`; fitted by ``scripts/fit_level.py --fit-map`` on the PSNR
    of training crops at every strength), :data:`IDENTITY` if none."""
    return {**IDENTITY, **{k: float(v) for k, v in _meta(p).get("map", {}).items()}}


@lru_cache(maxsize=4)
def level_map(scale: int) -> dict[str, float]:
    """:func:`estimator_map` of the shipped estimator of ``scale`` (identity if none)."""
    p = level_path(scale)
    return estimator_map(p) if p.is_file() else dict(IDENTITY)


@lru_cache(maxsize=4)
def level_net(scale: int) -> LevelNet | None:
    """The shipped estimator of ``scale`` in eval mode, or None when there is none."""
    p = level_path(scale)
    return read_estimator(p) if p.is_file() else None


def read_estimator(p: Path) -> LevelNet:
    """The estimator written by ``scripts/fit_level.py`` in ``p``, in eval mode."""
    from safetensors.torch import load_file

    state = load_file(str(p))
    margin = float(_meta(p).get("args", {}).get("margin", 0.0))
    net = LevelNet(width=2 * int(state["body.0.weight"].shape[0]), margin=margin,
                   kind=int(state["head.2.weight"].shape[0]) == 2)
    net.load_state_dict(state)
    return net.eval()


def windows(img: np.ndarray, size: int = WINDOW, n: int = 3) -> list[tuple[int, int, int, int]]:
    """Up to ``n x n`` windows ``(y, x, h, w)`` of at most ``size`` on a grid over ``img``
    ``(H, W, ...)``, their corners on multiples of 8 (JPEG's block grid); a small image is one
    window of itself."""
    h, w = img.shape[:2]
    wh, ww = min(size, h), min(size, w)

    def starts(total: int, win: int) -> list[int]:
        if total <= win:
            return [0]
        pos = np.linspace(0, total - win, n)
        return sorted({min(total - win, int(p) // 8 * 8) for p in pos})

    return [(y, x, wh, ww) for y in starts(h, wh) for x in starts(w, ww)]


def usable(win: np.ndarray) -> bool:
    """Whether a window ``(h, w[, C])`` (uint8, uint16 or float in [0, 1]; a 2nd or 4th channel
    is alpha) shows anything to read: opaque (alpha within half an 8-bit level of full), and
    its luma not flat (standard deviation at least :data:`FLAT` levels of 255; noise of a few
    levels on a flat area counts)."""
    from upres.inference.denoise import _luma, _opaque

    a = np.asarray(win)
    if a.size == 0 or not _opaque(a).all():
        return False
    y = _luma(a)
    return bool(np.isfinite(y).all() and y.std() >= FLAT)


def read_windows(img: np.ndarray, count: int = 9) -> list[tuple[int, int, int, int]]:
    """The windows ``(y, x, h, w)`` an image is read in: the :func:`usable` ones of the 3x3
    grid of :func:`windows`, then usable ones of its 5x5 grid, spread over the image, until
    there are ``count``; none when nothing is usable."""
    a = np.asarray(img)
    grid = windows(a)
    first = [w for w in grid if usable(a[w[0]:w[0] + w[2], w[1]:w[1] + w[3]])]
    if len(first) >= count:
        return first[:count]
    rest = [w for w in windows(a, n=5) if w not in grid  # (each window is judged once)
            and usable(a[w[0]:w[0] + w[2], w[1]:w[1] + w[3]])]
    need = min(count - len(first), len(rest))
    pick = np.linspace(0, len(rest) - 1, need).round().astype(int) if need else []
    return first + [rest[i] for i in sorted(set(pick))]


def _rgb01(img: np.ndarray) -> np.ndarray:
    """``(H, W[, C])`` uint8/uint16/float -> float32 RGB ``(H, W, 3)`` in [0, 1]."""
    from upres.inference.upscaler import _MAX

    a = np.asarray(img)
    f = a.astype(np.float32) / np.float32(_MAX[a.dtype]) if a.dtype in _MAX else \
        np.clip(a.astype(np.float32), 0.0, 1.0)
    if f.ndim == 2:
        f = f[:, :, None]
    if f.shape[2] == 1 or f.shape[2] == 2:
        f = np.repeat(f[:, :, :1], 3, axis=2)
    return f[:, :, :3]


@torch.no_grad()
def read_damage(img: np.ndarray, net: LevelNet, *, noise: float | None = None,
                blocking: float | None = None) -> tuple[float, float]:
    """``(level, blind)`` of ``img`` (``(H, W[, C])``, uint8, uint16 or float in [0, 1]; a 2nd
    or 4th channel is alpha): the level in [0, 1] the estimator reads, and the probability in
    [0, 1] that the damage is the blind kind (0 for an estimator without the ``kind`` output,
    whose level already reads that kind as 1); ``noise``/``blocking``: the measured features
    when already known (:func:`upres.inference.denoise.damage`). Images under 16 pixels a
    side, and images with no :func:`usable` window, read as clean ``(0, 0)``."""
    from upres.inference.denoise import blockiness, noise_sigma

    a = np.asarray(img)
    if min(a.shape[:2]) < 16:
        return 0.0, 0.0
    wins = read_windows(a)  # only the windows are converted, whatever the image's size
    if not wins:
        return 0.0, 0.0
    noise = noise_sigma(a) if noise is None else noise
    blocking = blockiness(a) if blocking is None else blocking
    x = torch.from_numpy(np.stack([_rgb01(a[y:y + h, x:x + w]) for y, x, h, w in wins]))
    x = x.permute(0, 3, 1, 2).contiguous()
    extra = torch.tensor([[math.log1p(noise), blocking]], dtype=torch.float32)
    extra = extra.expand(len(wins), 2).contiguous()
    with torch.autocast("cpu", enabled=False):
        y, logit = net.both(x, extra, group=len(wins))
    t = min(1.0, max(0.0, float(y[0])))
    return t, 0.0 if logit is None else float(torch.sigmoid(logit[0]))


def estimate_level(img: np.ndarray, net: LevelNet, *, noise: float | None = None,
                   blocking: float | None = None) -> float:
    """The damage level in [0, 1] of ``img`` (as :func:`read_damage` reads it): the blind
    kind, trained at level 1, weighs in by its probability (``level + blind * (1 - level)``),
    so an estimator without the ``kind`` output gives its level as it is."""
    return strength_of(*read_damage(img, net, noise=noise, blocking=blocking))


def strength_of(level: Any, blind: Any, smap: dict[str, float] | None = None) -> Any:
    """The clean-up strength in [0, 1] for a reading of the everyday ``level`` in [0, 1] and
    the blind kind's probability ``blind`` in [0, 1] (:func:`read_damage`; floats, or float
    arrays of one shape for many readings at once), by the map ``smap`` (default
    :data:`IDENTITY`): ``clip(a * (level + blind ** power * (1 - level)) + b, 0, 1)``, a float
    (an array for arrays). The identity gives :func:`estimate_level`'s reading; ``power``
    under 1 trusts a less than sure blind reading more, ``a`` and ``b`` correct a reading that
    is low or high on the whole. Whether to clean up at all is decided on
    :func:`estimate_level`'s reading against the threshold ``off`` (:func:`read_strength`),
    not on this strength."""
    m = IDENTITY if smap is None else smap
    t = level + np.power(blind, m["power"]) * (1.0 - level)
    t = np.clip(m["a"] * t + m["b"], 0.0, 1.0)
    return float(t) if np.ndim(t) == 0 else t


def read_strength(img: np.ndarray, net: LevelNet, off: float,
                  smap: dict[str, float] | None = None, *, noise: float | None = None,
                  blocking: float | None = None) -> tuple[float, float]:
    """``(reading, strength)`` of ``img`` (as :func:`read_damage` takes it): the reading of
    :func:`estimate_level`, and the clean-up strength ``auto`` gives it: 0 when the reading
    is under ``off`` (the clean model's own output), else :func:`strength_of` by ``smap``."""
    t, blind = read_damage(img, net, noise=noise, blocking=blocking)
    reading = strength_of(t, blind)
    return reading, 0.0 if reading < off else strength_of(t, blind, smap)
