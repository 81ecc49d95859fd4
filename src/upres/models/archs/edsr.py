"""EDSR and EDSR-baseline: Enhanced Deep Residual Networks.

Lim, Son, Kim, Nah, Lee, "Enhanced Deep Residual Networks for Single Image Super-Resolution",
CVPRW 2017. Residual blocks without batch normalisation (conv-ReLU-conv, scaled by ``res_scale``),
a global skip, and pixel-shuffle upsampling. EDSR-baseline: 16 blocks of 64 channels,
res_scale 1; EDSR: 32 blocks of 256 channels, res_scale 0.1. Parameter names follow the
authors' release (``head``/``body``/``tail``, ``sub_mean``/``add_mean``): the mean shift works on
[0, 255] values (``rgb_range`` 255), so the weights' card says ``value_range: 255``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["EDSR"]

_MEAN = (0.4488, 0.4371, 0.4040)


class _MeanShift(nn.Conv2d):
    def __init__(self, rgb_range: float, sign: float) -> None:
        super().__init__(3, 3, 1)
        with torch.no_grad():
            self.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
            self.bias.copy_(sign * rgb_range * torch.tensor(_MEAN))
        self.requires_grad_(False)


class _ResBlock(nn.Module):
    def __init__(self, ch: int, res_scale: float) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(ch, ch, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(ch, ch, 3, padding=1))
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) * self.res_scale


class EDSR(nn.Module):
    """Input ``(B, 3, H, W)`` RGB in [0, rgb_range]; output ``(B, 3, sH, sW)`` likewise."""

    def __init__(self, *, scale: int, channels: int = 64, blocks: int = 16,
                 res_scale: float = 1.0, rgb_range: float = 255.0) -> None:
        super().__init__()
        self.scale = scale
        self.sub_mean, self.add_mean = _MeanShift(rgb_range, -1.0), _MeanShift(rgb_range, 1.0)
        self.head = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1))
        body: list[nn.Module] = [_ResBlock(channels, res_scale) for _ in range(blocks)]
        body.append(nn.Conv2d(channels, channels, 3, padding=1))
        self.body = nn.Sequential(*body)
        up: list[nn.Module] = []
        if scale == 3:
            up += [nn.Conv2d(channels, 9 * channels, 3, padding=1), nn.PixelShuffle(3)]
        elif scale in (2, 4, 8):
            for _ in range(int(math.log2(scale))):
                up += [nn.Conv2d(channels, 4 * channels, 3, padding=1), nn.PixelShuffle(2)]
        else:
            raise ValueError(f"EDSR: scale must be 2, 3, 4 or 8, got {scale}")
        self.tail = nn.Sequential(nn.Sequential(*up), nn.Conv2d(channels, 3, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(self.sub_mean(x))
        return self.add_mean(self.tail(self.body(h) + h))
