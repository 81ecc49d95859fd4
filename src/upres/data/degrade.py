"""Degradations that turn HR images into LR inputs.

Every random function takes an explicit ``numpy.random.Generator``: the same seed gives the same
result on any machine. Images are float32 ``(H, W, C)`` in [0, 1] unless said otherwise (the
bicubic helpers also take uint8/uint16, as MATLAB's ``imresize`` does).

* resizing: MATLAB bicubic (the protocol's), and bilinear / area / lanczos (OpenCV);
* blur: isotropic and anisotropic Gaussian kernels;
* noise: Gaussian and Poisson, per colour channel or the same on all channels (gray noise);
* JPEG at a quality drawn from a range;
* :class:`Pipeline`: a chain of steps with drawn parameters, including Real-ESRGAN's second-order
  recipe (:func:`second_order`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from upres.resize import imresize

__all__ = [
    "DEGRADATIONS",
    "Leveled",
    "Mixture",
    "Pipeline",
    "add_gaussian_noise",
    "add_poisson_noise",
    "anisotropic_gaussian_kernel",
    "bicubic_down",
    "blur",
    "degradation",
    "gaussian_kernel",
    "jpeg",
    "leveled",
    "leveled_single",
    "modcrop",
    "photo_mix",
    "random_blur",
    "random_jpeg",
    "random_noise",
    "random_resize",
    "resize",
    "second_order",
]

Rng = np.random.Generator


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    """Cut the bottom/right so that height and width are multiples of ``scale`` (a view)."""
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]


def bicubic_down(hr: np.ndarray, scale: int) -> np.ndarray:
    """MATLAB ``imresize(hr, 1/scale, 'bicubic')`` of a modcropped image, same dtype."""
    return imresize(modcrop(hr, scale), 1.0 / scale)


_CV_INTERP = {"bilinear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA,
              "lanczos": cv2.INTER_LANCZOS4}


def resize(img: np.ndarray, size: tuple[int, int], kernel: str = "bicubic") -> np.ndarray:
    """Resize float ``(H, W, C)`` to ``size`` = ``(h, w)``: ``bicubic`` is MATLAB's (with
    antialiasing), ``bilinear``/``area``/``lanczos`` are OpenCV's."""
    h, w = size
    if kernel == "bicubic":
        return imresize(img, size=(h, w)).astype(np.float32)
    if kernel not in _CV_INTERP:
        raise ValueError(f"unknown resize kernel {kernel!r}")
    out = cv2.resize(img, (w, h), interpolation=_CV_INTERP[kernel])
    return out.reshape(h, w, -1).astype(np.float32)


def gaussian_kernel(size: int, sigma: float) -> np.ndarray:
    """Isotropic Gaussian, ``(size, size)`` float64 summing to 1 (``size`` odd)."""
    return anisotropic_gaussian_kernel(size, sigma, sigma, 0.0)


def anisotropic_gaussian_kernel(size: int, sigma_x: float, sigma_y: float,
                                theta: float) -> np.ndarray:
    """Gaussian with standard deviations ``sigma_x``/``sigma_y`` along axes rotated by
    ``theta`` radians; ``(size, size)`` float64 summing to 1."""
    if size % 2 == 0 or size < 3:
        raise ValueError(f"kernel size must be odd and >= 3, got {size}")
    r = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    cov = r @ np.diag([sigma_x**2, sigma_y**2]) @ r.T
    inv = np.linalg.inv(cov)
    ax = np.arange(size) - size // 2
    xx, yy = np.meshgrid(ax, ax)
    pts = np.stack([xx, yy], axis=-1).astype(np.float64)
    k = np.exp(-0.5 * np.einsum("...i,ij,...j->...", pts, inv, pts))
    return k / k.sum()


def blur(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolve every channel with ``kernel`` (reflect borders); float32 out."""
    out = cv2.filter2D(img.astype(np.float32), -1, kernel.astype(np.float32),
                       borderType=cv2.BORDER_REFLECT_101)
    return out.reshape(img.shape)


def add_gaussian_noise(img: np.ndarray, sigma: float, rng: Rng, *, gray: bool = False
                       ) -> np.ndarray:
    """Add N(0, sigma) noise (sigma on the [0, 1] scale); ``gray``: one noise for all channels."""
    shape = (*img.shape[:2], 1) if gray else img.shape
    return (img + rng.normal(0.0, sigma, size=shape).astype(np.float32)).astype(np.float32)


def add_poisson_noise(img: np.ndarray, scale: float, rng: Rng, *, gray: bool = False
                      ) -> np.ndarray:
    """Shot noise as in Real-ESRGAN: draw Poisson counts at the image's number of distinct
    levels (rounded up to a power of two), scale back, and add ``scale`` times the difference."""
    x = np.clip(img, 0.0, 1.0)
    if gray:
        y = x.mean(axis=2, keepdims=True)
        vals = 2 ** np.ceil(np.log2(max(len(np.unique(np.round(y * 255))), 2)))
        noise = rng.poisson(y * vals) / vals - y
    else:
        vals = 2 ** np.ceil(np.log2(max(len(np.unique(np.round(x * 255))), 2)))
        noise = rng.poisson(x * vals) / vals - x
    return (img + scale * noise).astype(np.float32)


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """Round-trip through 8-bit JPEG at ``quality`` (OpenCV's codec); float32 [0, 1] out."""
    u8 = np.floor(np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    squeeze = u8.ndim == 2 or u8.shape[2] == 1
    ok, buf = cv2.imencode(".jpg", u8[:, :, ::-1] if not squeeze else u8,
                           [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    dec = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    dec = dec[:, :, ::-1] if not squeeze else dec.reshape(img.shape)
    return (dec.astype(np.float32) / 255.0).reshape(img.shape)


# -- random steps ------------------------------------------------------------------------------
def random_blur(img: np.ndarray, rng: Rng, *, sizes: Sequence[int] = (7, 9, 11, 13, 15, 17, 19,
                                                                      21),
                sigma: tuple[float, float] = (0.2, 3.0), iso_prob: float = 0.5) -> np.ndarray:
    """Blur with a kernel drawn from ``sizes`` and ``sigma``; isotropic with ``iso_prob``."""
    size = int(rng.choice(sizes))
    if rng.random() < iso_prob:
        k = gaussian_kernel(size, float(rng.uniform(*sigma)))
    else:
        k = anisotropic_gaussian_kernel(size, float(rng.uniform(*sigma)),
                                        float(rng.uniform(*sigma)),
                                        float(rng.uniform(-math.pi, math.pi)))
    return blur(img, k)


def random_resize(img: np.ndarray, rng: Rng, *, range_: tuple[float, float] = (0.15, 1.5),
                  kernels: Sequence[str] = ("bicubic", "bilinear", "area")) -> np.ndarray:
    """Resize by a factor drawn from ``range_`` with a kernel drawn from ``kernels``."""
    f = float(rng.uniform(*range_))
    h, w = img.shape[:2]
    size = (max(1, round(h * f)), max(1, round(w * f)))
    return resize(img, size, str(rng.choice(list(kernels))))


def random_noise(img: np.ndarray, rng: Rng, *, gaussian_prob: float = 0.5,
                 sigma: tuple[float, float] = (1 / 255, 30 / 255),
                 poisson: tuple[float, float] = (0.05, 3.0), gray_prob: float = 0.4
                 ) -> np.ndarray:
    """Gaussian noise (with ``gaussian_prob``) or Poisson noise; gray with ``gray_prob``."""
    gray = bool(rng.random() < gray_prob)
    if rng.random() < gaussian_prob:
        return add_gaussian_noise(img, float(rng.uniform(*sigma)), rng, gray=gray)
    return add_poisson_noise(img, float(rng.uniform(*poisson)), rng, gray=gray)


def random_jpeg(img: np.ndarray, rng: Rng, *, quality: tuple[int, int] = (30, 95)) -> np.ndarray:
    """JPEG at a quality drawn uniformly from ``quality`` (inclusive)."""
    return jpeg(img, int(rng.integers(quality[0], quality[1] + 1)))


Step = Callable[[np.ndarray, Rng], np.ndarray]


@dataclass(frozen=True)
class Pipeline:
    """A chain of degradation steps, each ``step(img, rng) -> img`` (clipped to [0, 1] after
    each), then a resize to ``1/scale`` of the input size with a kernel drawn from
    ``final_kernels``, then the ``after`` steps at LR size.

    ``__call__(hr, rng)``: ``hr`` float32 ``(sH, sW, C)`` in [0, 1] -> LR float32 ``(H, W, C)``.
    """

    scale: int
    steps: tuple[Step, ...] = ()
    after: tuple[Step, ...] = ()
    final_kernels: tuple[str, ...] = ("bicubic",)

    def __call__(self, hr: np.ndarray, rng: Rng) -> np.ndarray:
        h, w = hr.shape[0] // self.scale, hr.shape[1] // self.scale
        x = hr.astype(np.float32)
        for step in self.steps:
            x = np.clip(step(x, rng), 0.0, 1.0)
        kernel = str(rng.choice(list(self.final_kernels)))
        x = np.clip(resize(x, (h, w), kernel), 0.0, 1.0)
        for step in self.after:
            x = np.clip(step(x, rng), 0.0, 1.0)
        return x.astype(np.float32)


def _mild_blur(img: np.ndarray, rng: Rng) -> np.ndarray:
    return img if rng.random() < 0.2 else random_blur(img, rng, sigma=(0.2, 1.5))


def _mild_resize(img: np.ndarray, rng: Rng) -> np.ndarray:
    return random_resize(img, rng, range_=(0.3, 1.2))


def _mild_noise(img: np.ndarray, rng: Rng) -> np.ndarray:
    return random_noise(img, rng, sigma=(1 / 255, 25 / 255), poisson=(0.05, 2.5))


def second_order(scale: int) -> Pipeline:
    """Real-ESRGAN's second-order degradation (Wang et al., ICCVW 2021), with its published
    ranges: blur -> random resize -> noise -> JPEG, then a second, milder pass (its blur skipped
    one time in five) without the JPEG, a resize to 1/scale with a random kernel, and JPEG.
    (The paper's sinc filters and the random order of its last two stages are left out.)
    """
    return Pipeline(
        scale=scale,
        steps=(random_blur, random_resize, random_noise, random_jpeg,
               _mild_blur, _mild_resize, _mild_noise),
        after=(random_jpeg,),
        final_kernels=("bicubic", "bilinear", "area"),
    )


def _maybe(p: float, step: Step) -> Step:
    """``step`` with probability ``p``, else nothing."""
    def run(img: np.ndarray, rng: Rng) -> np.ndarray:
        return step(img, rng) if rng.random() < p else img
    return run


def one_pass(scale: int) -> Pipeline:
    """An everyday camera or web photo: maybe a blur (p 0.5, sigma 0.2-2.5 HR pixels), a
    bicubic downscale, maybe noise (p 0.6, Gaussian sigma 0.5-10 levels or Poisson), maybe
    JPEG (p 0.7, quality 40-95); each drawn independently."""
    return Pipeline(
        scale=scale,
        steps=(_maybe(0.5, lambda x, r: random_blur(x, r, sigma=(0.2, 2.5))),),
        after=(_maybe(0.6, lambda x, r: random_noise(x, r, sigma=(0.5 / 255, 10 / 255),
                                                     poisson=(0.05, 1.0))),
               _maybe(0.7, lambda x, r: random_jpeg(x, r, quality=(40, 95)))),
        final_kernels=("bicubic",),
    )


@dataclass(frozen=True)
class Mixture:
    """One of ``parts`` per call, drawn with ``weights``: ``__call__(hr, rng)`` as
    :class:`Pipeline`'s."""

    scale: int
    parts: tuple[Callable[[np.ndarray, Rng], np.ndarray], ...]
    weights: tuple[float, ...]

    def __call__(self, hr: np.ndarray, rng: Rng) -> np.ndarray:
        w = np.asarray(self.weights, dtype=np.float64)
        k = int(rng.choice(len(self.parts), p=w / w.sum()))
        return self.parts[k](hr, rng)


def photo_mix(scale: int) -> Mixture:
    """Photos as users bring them, from clean to badly damaged: half Real-ESRGAN's second-order
    pipeline (:func:`second_order`), half one everyday pass (:func:`one_pass`)."""
    return Mixture(scale=scale, parts=(second_order(scale), one_pass(scale)), weights=(1, 1))


@dataclass(frozen=True)
class Leveled:
    """Damage at a level ``t`` in [0, 1], the scale on which a photo model's clean-up strength is
    trained (issue 22): the network whose weights are ``(1 - t) * x{s} + t * photo`` learns the
    inputs of level ``t``, and the level estimator learns to read ``t`` off an input (with
    the second-order branch read as 1, whatever ``t`` drew it: ``scripts/fit_level.py``).

    - ``t = 0``: clean MATLAB bicubic.
    - ``t > 0``: with probability ``max(0, 2t - 1)**2`` Real-ESRGAN's second-order pipeline
      (1 at ``t = 1``: the worst damage is the blind kind); otherwise one everyday pass of blur
      (p 0.5; Gaussian, sigma ``t * U(0.8, 1.4)`` LR pixels, i.e. times ``scale`` in HR
      pixels), MATLAB bicubic downscale, noise (p 0.6; Gaussian of sigma ``t * U(6, 14)``
      levels of 255, gray 40 % of the time, or Poisson) and JPEG (p 0.7; quality
      ``100 - t * U(40, 70)``), at least one of the three. Every strength grows with ``t``, so
      an input's level is how damaged it looks whatever the kind.

    ``single``: the share of everyday passes that take exactly one of the three (blur, noise
    or JPEG, equally likely) instead of drawing each on its own (which gives one kind alone
    about a third of the time, blur alone 8 %): a photo is often damaged one way only (soft
    from its lens, noisy from its sensor, or compressed by a website). 0 (``leveled``) draws
    as before, random number for random number.

    ``at(t)`` is the pipeline of one level (``(hr, rng) -> lr``, float32 [0, 1] as
    :class:`Pipeline`); calling the object itself draws ``t`` uniformly first.
    """

    scale: int
    single: float = 0.0

    def at(self, t: float) -> Callable[[np.ndarray, Rng], np.ndarray]:
        return lambda hr, rng: self.draw(hr, rng, t)

    def __call__(self, hr: np.ndarray, rng: Rng) -> np.ndarray:
        return self.draw(hr, rng, float(rng.uniform(0.0, 1.0)))

    @staticmethod
    def blind_at(t: float) -> float:
        """The probability that level ``t`` takes the second-order branch."""
        return max(0.0, 2.0 * t - 1.0) ** 2

    def draw(self, hr: np.ndarray, rng: Rng, t: float, *, blind: bool | None = None
             ) -> np.ndarray:
        """``hr`` float32 ``(sH, sW, C)`` in [0, 1] -> LR float32 ``(H, W, C)`` at level ``t``;
        ``blind``: True or False forces the second-order or the everyday branch (for ``t > 0``)
        instead of drawing it (:meth:`blind_at` says how often it is drawn)."""
        s = self.scale
        h, w = hr.shape[0] // s, hr.shape[1] // s
        x = hr.astype(np.float32)
        if t <= 0.0:
            return np.clip(resize(x, (h, w), "bicubic"), 0.0, 1.0)
        if blind is None:
            blind = bool(rng.random() < self.blind_at(t))
        if blind:
            return second_order(s)(x, rng)
        if self.single > 0.0 and rng.random() < self.single:
            parts = np.zeros(3, dtype=bool)
            parts[int(rng.integers(3))] = True
        else:
            parts = rng.random(3) < np.array([0.5, 0.6, 0.7])
            if not parts.any():
                parts[int(rng.integers(3))] = True
        if parts[0]:
            sigma = s * t * float(rng.uniform(0.8, 1.4))
            x = np.clip(blur(x, gaussian_kernel(2 * math.ceil(3 * sigma) + 1, sigma)), 0, 1)
        x = np.clip(resize(x, (h, w), "bicubic"), 0.0, 1.0)
        if parts[1]:
            gray = bool(rng.random() < 0.4)
            if rng.random() < 0.7:
                x = add_gaussian_noise(x, t * float(rng.uniform(6, 14)) / 255, rng, gray=gray)
            else:
                x = add_poisson_noise(x, t * float(rng.uniform(0.5, 2.0)), rng, gray=gray)
            x = np.clip(x, 0.0, 1.0)
        if parts[2]:
            x = jpeg(x, round(100 - t * float(rng.uniform(40, 70))))
        return x.astype(np.float32)


def leveled(scale: int) -> Leveled:
    """:class:`Leveled` at ``scale`` (``data.degradation: leveled``)."""
    return Leveled(scale)


def leveled_single(scale: int) -> Leveled:
    """:class:`Leveled` at ``scale`` with half of its everyday passes one kind of damage alone
    (``data.degradation: leveled_single``)."""
    return Leveled(scale, single=0.5)


#: ``data.degradation`` names with a pipeline (``bicubic`` has none: MATLAB bicubic LR).
DEGRADATIONS = {"second_order": second_order, "photo_mix": photo_mix, "leveled": leveled,
                "leveled_single": leveled_single}


def degradation(name: str, scale: int) -> Callable[[np.ndarray, Rng], np.ndarray] | None:
    """The pipeline of ``data.degradation`` ``name`` at ``scale`` (None for ``bicubic``)."""
    return DEGRADATIONS[name](scale) if name in DEGRADATIONS else None
