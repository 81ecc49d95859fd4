"""IMDN: Information Multi-Distillation Network.

Hui, Gao, Yang, Wang, "Lightweight Image Super-Resolution with Information Multi-distillation
Network", ACM Multimedia 2019. Parameter names follow the authors' release, so their
``IMDN_x{2,3,4}.pth`` load as they are (after the ``module.`` prefix is stripped).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["IMDN"]


def _conv(cin: int, cout: int, k: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=(k - 1) // 2)


class _CCA(nn.Module):
    """Contrast-aware channel attention: (std + mean) per channel -> squeeze-excite gate."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.conv_du = nn.Sequential(
            nn.Conv2d(channels, channels // reduction, 1), nn.ReLU(inplace=True),
            nn.Conv2d(channels // reduction, channels, 1), nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(2, 3), keepdim=True)
        std = (x - mean).pow(2).mean(dim=(2, 3), keepdim=True).sqrt()
        return x * self.conv_du(std + mean)


class _IMDB(nn.Module):
    """Information multi-distillation block: keep a quarter of the channels at each step."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.dc = channels // 4
        self.rc = channels - self.dc
        self.c1 = _conv(channels, channels, 3)
        self.c2 = _conv(self.rc, channels, 3)
        self.c3 = _conv(self.rc, channels, 3)
        self.c4 = _conv(self.rc, self.dc, 3)
        self.c5 = _conv(self.dc * 4, channels, 1)
        self.cca = _CCA(self.dc * 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d1, r1 = torch.split(F.leaky_relu(self.c1(x), 0.05), (self.dc, self.rc), dim=1)
        d2, r2 = torch.split(F.leaky_relu(self.c2(r1), 0.05), (self.dc, self.rc), dim=1)
        d3, r3 = torch.split(F.leaky_relu(self.c3(r2), 0.05), (self.dc, self.rc), dim=1)
        d4 = self.c4(r3)
        return self.c5(self.cca(torch.cat([d1, d2, d3, d4], dim=1))) + x


class IMDN(nn.Module):
    """IMDN. Input ``(B, 3, H, W)`` RGB in [0, 1]; output ``(B, 3, sH, sW)``."""

    def __init__(self, *, scale: int, channels: int = 64, blocks: int = 6, in_ch: int = 3,
                 out_ch: int = 3) -> None:
        super().__init__()
        self.scale = scale
        self.fea_conv = _conv(in_ch, channels, 3)
        self.blocks = blocks
        for i in range(blocks):
            self.add_module(f"IMDB{i + 1}", _IMDB(channels))
        self.c = nn.Sequential(_conv(channels * blocks, channels, 1), nn.LeakyReLU(0.05))
        self.LR_conv = _conv(channels, channels, 3)
        self.upsampler = nn.Sequential(_conv(channels, out_ch * scale * scale, 3),
                                       nn.PixelShuffle(scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fea = self.fea_conv(x)
        outs, h = [], fea
        for i in range(self.blocks):
            h = getattr(self, f"IMDB{i + 1}")(h)
            outs.append(h)
        body = self.c(torch.cat(outs, dim=1))
        return self.upsampler(self.LR_conv(body) + fea)
