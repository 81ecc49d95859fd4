"""NIQE, the no-reference "naturalness" score (Mittal, Soundararajan & Bovik, IEEE SPL 2013).

Lower is more natural. The image (gray, [0, 255]) is split into 96x96 patches; each patch gives
36 natural-scene statistics (generalised-Gaussian fits of its mean-subtracted contrast-normalised
coefficients and of their products with four neighbours, at full and half resolution); a
multivariate Gaussian fitted to the image's patches is compared with one fitted to pristine
images. The computation follows the authors' MATLAB release (7x7 Gaussian window of sigma 7/6,
``C = 1``, MATLAB bicubic for the half-resolution scale, sharpness-selected patches with
threshold 0.75 for the pristine model).

**The pristine model is upres's own**: it is fitted by ``scripts/fit_niqe.py`` on the 291
training HR images (T91 + BSD200), not on the authors' 125 pristine photographs, so scores are
comparable with each other here but not with published NIQE figures.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import correlate
from scipy.special import gamma as G

from upres.resize import imresize

__all__ = ["NiqeModel", "fit_niqe", "niqe", "niqe_features"]

_GAM = np.arange(0.2, 10.0, 0.001)
_R_GGD = G(1 / _GAM) * G(3 / _GAM) / G(2 / _GAM) ** 2
_R_AGGD = G(2 / _GAM) ** 2 / (G(1 / _GAM) * G(3 / _GAM))
MODEL_FILE = Path(__file__).parent / "assets" / "niqe_291.npz"


def _window() -> np.ndarray:
    ax = np.arange(-3, 4)
    g = np.exp(-(ax[:, None] ** 2 + ax[None, :] ** 2) / (2 * (7 / 6) ** 2))
    return g / g.sum()


def _mscn(im: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    w = _window()
    mu = correlate(im, w, mode="nearest")
    sigma = np.sqrt(np.abs(correlate(im * im, w, mode="nearest") - mu * mu))
    return (im - mu) / (sigma + 1.0), sigma


def _ggd(x: np.ndarray) -> tuple[float, float]:
    sigma_sq = np.mean(x * x)
    e = np.mean(np.abs(x))
    rho = sigma_sq / (e * e + 1e-12)
    return float(_GAM[np.argmin(np.abs(rho - _R_GGD))]), float(sigma_sq)


def _aggd(x: np.ndarray) -> tuple[float, float, float]:
    left, right = x[x < 0], x[x > 0]
    lstd = np.sqrt(np.mean(left * left)) if left.size else 0.0
    rstd = np.sqrt(np.mean(right * right)) if right.size else 0.0
    ghat = lstd / (rstd + 1e-12)
    rhat = np.mean(np.abs(x)) ** 2 / (np.mean(x * x) + 1e-12)
    rnorm = rhat * (ghat ** 3 + 1) * (ghat + 1) / (ghat ** 2 + 1) ** 2
    return float(_GAM[np.argmin(np.abs(_R_AGGD - rnorm))]), float(lstd), float(rstd)


def _block_features(s: np.ndarray) -> list[float]:
    alpha, var = _ggd(s)
    feat = [alpha, var]
    for dy, dx in ((0, 1), (1, 0), (1, 1), (-1, 1)):
        pair = s * np.roll(s, (dy, dx), axis=(0, 1))
        a, lstd, rstd = _aggd(pair)
        mean = (rstd - lstd) * (G(2 / a) / G(1 / a)) * np.sqrt(G(1 / a) / G(3 / a))
        feat += [a, float(mean), lstd ** 2, rstd ** 2]
    return feat


def _gray(img: np.ndarray) -> np.ndarray:
    """uint8/uint16/float image -> float64 gray in [0, 255] (MATLAB rgb2gray weights)."""
    a = np.asarray(img)
    peak = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(a.dtype, 1.0)
    f = a.astype(np.float64) * (255.0 / peak)
    if f.ndim == 3:
        f = f[:, :, :3] @ np.array([0.298936021293775, 0.587043074451121, 0.114020904255103]) \
            if f.shape[2] >= 3 else f[:, :, 0]
    return f


def niqe_features(img: np.ndarray, *, block: int = 96, sharp_only: float = 0.0) -> np.ndarray:
    """``(n_patches, 36)`` NIQE features of an image (uint8/uint16 or float in [0, 1]; RGB or
    gray). ``sharp_only > 0`` keeps the patches whose mean local deviation exceeds that fraction
    of the sharpest patch's (the pristine-model selection)."""
    im = _gray(img)
    h, w = (im.shape[0] // block) * block, (im.shape[1] // block) * block
    if h == 0 or w == 0:
        raise ValueError(f"NIQE needs at least {block}x{block} pixels, got {im.shape[1]}x"
                         f"{im.shape[0]}")
    im = im[:h, :w]
    feats, sharp = [], []
    for scale_i, (b, x) in enumerate(((block, im), (block // 2, imresize(im, 0.5)))):
        s, sigma = _mscn(x)
        rows = []
        for y0 in range(0, (x.shape[0] // b) * b, b):
            for x0 in range(0, (x.shape[1] // b) * b, b):
                rows.append(_block_features(s[y0:y0 + b, x0:x0 + b]))
                if scale_i == 0:
                    sharp.append(float(sigma[y0:y0 + b, x0:x0 + b].mean()))
        feats.append(np.array(rows))
    out = np.concatenate(feats, axis=1)
    if sharp_only > 0:
        sh = np.array(sharp)
        out = out[sh > sharp_only * sh.max()]
    return out


@dataclass(frozen=True)
class NiqeModel:
    """The pristine multivariate Gaussian: ``mu`` ``(36,)`` and ``cov`` ``(36, 36)``."""

    mu: np.ndarray
    cov: np.ndarray
    source: str = ""

    def save(self, path: str | os.PathLike[str]) -> None:
        np.savez(path, mu=self.mu, cov=self.cov, source=np.array(self.source))

    @classmethod
    def load(cls, path: str | os.PathLike[str] = MODEL_FILE) -> NiqeModel:
        with np.load(path) as z:
            return cls(mu=z["mu"], cov=z["cov"], source=str(z["source"]))


def fit_niqe(images: list[np.ndarray], *, source: str = "") -> NiqeModel:
    """Fit the pristine model on sharp patches (threshold 0.75) of ``images``."""
    feats = np.concatenate([niqe_features(im, sharp_only=0.75) for im in images])
    return NiqeModel(mu=feats.mean(axis=0), cov=np.cov(feats, rowvar=False), source=source)


_DEFAULT: list[NiqeModel] = []


def niqe(img: np.ndarray, model: NiqeModel | None = None) -> float:
    """NIQE of one image (lower is more natural) against ``model`` (default: upres's pristine
    model fitted on the 291 training images, ``assets/niqe_291.npz``)."""
    if model is None:
        if not _DEFAULT:
            _DEFAULT.append(NiqeModel.load())
        model = _DEFAULT[0]
    f = niqe_features(img)
    mu = np.nanmean(f, axis=0)
    cov = np.cov(f, rowvar=False) if len(f) > 1 else np.zeros_like(model.cov)
    d = model.mu - mu
    return float(np.sqrt(d @ np.linalg.pinv((model.cov + cov) / 2) @ d))
