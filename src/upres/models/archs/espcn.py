"""ESPCN: Efficient Sub-Pixel Convolutional Neural Network.

Shi et al., "Real-Time Single Image and Video Super-Resolution Using an Efficient Sub-Pixel
Convolutional Neural Network", CVPR 2016: 5x5 (64) -> 3x3 (32) -> 3x3 (c·s²) at LR resolution
with tanh activations, then the sub-pixel (pixel shuffle) layer.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["ESPCN"]


class ESPCN(nn.Module):
    """Input ``(B, in_ch, H, W)`` in [0, 1] (RGB by default); output ``(B, in_ch, sH, sW)``."""

    def __init__(self, *, scale: int, f1: int = 64, f2: int = 32, in_ch: int = 3) -> None:
        super().__init__()
        self.scale = scale
        self.conv1 = nn.Conv2d(in_ch, f1, 5, padding=2)
        self.conv2 = nn.Conv2d(f1, f2, 3, padding=1)
        self.conv3 = nn.Conv2d(f2, in_ch * scale * scale, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.conv2(torch.tanh(self.conv1(x))))
        return F.pixel_shuffle(self.conv3(h), self.scale)
