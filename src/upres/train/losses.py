"""Pixel and frequency losses on ``(B, C, H, W)`` float tensors in [0, 1]; each returns a scalar
mean. :func:`make_loss` builds one loss or a weighted sum from the recipe."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch.nn import functional as F

__all__ = ["LOSSES", "charbonnier", "fft_loss", "log_mse", "log_mse_y", "make_loss"]

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


def log_mse_y(pred: torch.Tensor, target: torch.Tensor, floor: float = (0.5 / 255) ** 2
              ) -> torch.Tensor:
    """:func:`log_mse` on BT.601 luma (:func:`upres.inference.upscaler.rgb_to_ycbcr`'s Y, the
    benchmarks' :func:`upres.metrics.rgb_to_y` on [0, 1]), the channel the standard protocol
    scores: minus the mean per-sample PSNR-Y for a peak of 1. A one-channel batch is already
    luma (what the trainer gives luma-only ``color: y`` models), so there it is :func:`log_mse`.
    Colour errors that leave luma alone cost nothing, so an RGB recipe adds a small RGB term
    (``{log_mse_y: 1.0, log_mse: 0.1}``)."""
    if pred.shape[1] == 3:
        from upres.inference.upscaler import rgb_to_ycbcr

        pred, target = rgb_to_ycbcr(pred.float())[:, :1], rgb_to_ycbcr(target.float())[:, :1]
    elif pred.shape[1] != 1:
        raise ValueError(f"log_mse_y needs 1 or 3 channels, got {pred.shape[1]}")
    return log_mse(pred, target, floor)


LOSSES: dict[str, LossFn] = {"l1": F.l1_loss, "mse": F.mse_loss, "charbonnier": charbonnier,
                             "fft": fft_loss, "log_mse": log_mse, "log_mse_y": log_mse_y}


def make_loss(spec: str | Mapping[str, float]) -> LossFn:
    """``"l1"`` (one loss) or ``{"l1": 1.0, "fft": 0.05}`` (a weighted sum) -> a loss function.

    Names: ``l1``, ``mse`` (the classic), ``charbonnier``, ``fft``, ``log_mse``, ``log_mse_y``.
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
