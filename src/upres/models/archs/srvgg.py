"""SRVGGNetCompact: the compact VGG-style generator of Real-ESRGAN.

Wang, Xie, Dong, Shan, "Real-ESRGAN: Training Real-World Blind Super-Resolution with Pure
Synthetic Data", ICCVW 2021 (the compact model of its releases). ``num_conv`` 3x3 convolutions
with PReLU at LR resolution, pixel shuffle, plus a nearest-neighbour upsampled input. Parameter
names follow the authors' release (``body.N``), so ``realesr-*.pth`` files load as they are.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["SRVGGNetCompact"]


class SRVGGNetCompact(nn.Module):
    """Input ``(B, 3, H, W)`` RGB in [0, 1]; output ``(B, 3, sH, sW)``."""

    def __init__(self, *, scale: int, num_feat: int = 64, num_conv: int = 16,
                 act: str = "prelu", in_ch: int = 3, out_ch: int = 3) -> None:
        super().__init__()
        if act not in ("prelu", "relu", "lrelu"):
            raise ValueError(f"SRVGGNetCompact: act must be prelu, relu or lrelu, got {act!r}")
        self.scale = scale

        def activation() -> nn.Module:
            if act == "prelu":
                return nn.PReLU(num_feat)
            return nn.ReLU(inplace=True) if act == "relu" else nn.LeakyReLU(0.1, inplace=True)

        body: list[nn.Module] = [nn.Conv2d(in_ch, num_feat, 3, padding=1), activation()]
        for _ in range(num_conv):
            body += [nn.Conv2d(num_feat, num_feat, 3, padding=1), activation()]
        body.append(nn.Conv2d(num_feat, out_ch * scale * scale, 3, padding=1))
        self.body = nn.ModuleList(body)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for layer in self.body:
            h = layer(h)
        return F.pixel_shuffle(h, self.scale) + F.interpolate(x, scale_factor=self.scale,
                                                               mode="nearest")
