"""Pixel and frequency losses on ``(B, C, H, W)`` float tensors in [0, 1]; each returns a scalar
mean. :func:`make_loss` builds one loss or a weighted sum from the recipe."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch.nn import functional as F

__all__ = ["LOSSES", "charbonnier", "fft_loss", "log_mse", "make_loss"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def charbonnier(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Mean of ``sqrt((pred - target)^2 + eps^2)``: a smooth L1."""
    return torch.sqrt((pred - target) ** 2 + eps * eps).mean()


def fft_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 distance between the 2-D spectra (real and imaginary parts, orthonormal FFT)."""
    d = torch.fft.rfft2(pred.float(), norm="ortho") - torch.fft.rfft2(target.float(),
                                                                        norm="ortho")
    return torch.view_as_real(d).abs().mean()


def log_mse(pred: torch.Tensor, target: torch.Tensor, floor: float = (0.5 / 255) ** 2
            ) -> torch.Tensor:
    """Mean over the batch of ``10 log10(MSE + floor)`` of each sample (minus its PSNR in dB,
    for a peak of 1): every patch weighs as every image does in a benchmark's mean PSNR, so a
    flat patch, where an error of a fraction of a level is many dB, counts as much as a
    textured one (L1 and MSE let the textured ones dominate). ``floor``: half an 8-bit level
    of RMS error, below which rounding to 8 bits hides the rest."""
    d = (pred.float() - target.float()) ** 2
    return (10.0 * torch.log10(d.flatten(1).mean(1) + floor)).mean()


LOSSES: dict[str, LossFn] = {"l1": F.l1_loss, "mse": F.mse_loss, "charbonnier": charbonnier,
                             "fft": fft_loss, "log_mse": log_mse}


def make_loss(spec: str | Mapping[str, float]) -> LossFn:
    """``"l1"`` (one loss) or ``{"l1": 1.0, "fft": 0.05}`` (a weighted sum) -> a loss function.

    Names: ``l1``, ``mse`` (the classic), ``charbonnier``, ``fft``, ``log_mse``.
    """
    terms = {spec: 1.0} if isinstance(spec, str) else dict(spec)
    if not terms:
        raise ValueError("the loss needs at least one term")
    for name, w in terms.items():
        if name not in LOSSES:
            raise ValueError(f"unknown loss {name!r}; choose from {', '.join(LOSSES)}")
        if isinstance(w, bool) or not isinstance(w, int | float) or w < 0:
            raise ValueError(f"the weight of {name!r} must be a number >= 0, got {w!r}")
    if len(terms) == 1 and next(iter(terms.values())) == 1.0:
        return LOSSES[next(iter(terms))]

    def weighted(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum(w * LOSSES[n](pred, target) for n, w in terms.items())  # type: ignore[return-value]

    return weighted
