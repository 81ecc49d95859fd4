"""SRResNet / SRGAN generator.

Ledig et al., "Photo-Realistic Single Image Super-Resolution Using a Generative Adversarial
Network", CVPR 2017: a 9x9 head, residual blocks with batch normalisation and PReLU, a 3x3
convolution with PReLU closing the trunk, a global skip, x2 pixel-shuffle stages, and a 9x9
tail. Parameter names follow a widely used PyTorch
SRGAN port (``block1`` ... ``block8``), whose generator ends in ``(tanh(x) + 1) / 2``: input and
output are RGB in [0, 1].
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["SRResNet"]


class _Residual(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(ch, ch, 3, padding=1), nn.BatchNorm2d(ch)
        self.prelu = nn.PReLU()
        self.conv2, self.bn2 = nn.Conv2d(ch, ch, 3, padding=1), nn.BatchNorm2d(ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bn2(self.conv2(self.prelu(self.bn1(self.conv1(x)))))


class _Up2(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch * 4, 3, padding=1)
        self.pixel_shuffle = nn.PixelShuffle(2)
        self.prelu = nn.PReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prelu(self.pixel_shuffle(self.conv(x)))


class SRResNet(nn.Module):
    """Input ``(B, 3, H, W)`` RGB in [0, 1]; output ``(B, 3, sH, sW)`` in [0, 1]. ``scale``: 2,
    4 or 8; ``blocks`` residual blocks (the port's layout names them ``block2`` ...)."""

    def __init__(self, *, scale: int, channels: int = 64, blocks: int = 5) -> None:
        super().__init__()
        if scale not in (2, 4, 8):
            raise ValueError(f"SRResNet: scale must be 2, 4 or 8, got {scale}")
        self.scale, self.blocks = scale, blocks
        self.block1 = nn.Sequential(nn.Conv2d(3, channels, 9, padding=4), nn.PReLU())
        for i in range(blocks):
            self.add_module(f"block{i + 2}", _Residual(channels))
        self.add_module(f"block{blocks + 2}", nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1), nn.PReLU()))
        ups: list[nn.Module] = [_Up2(channels) for _ in range(int(math.log2(scale)))]
        ups.append(nn.Conv2d(channels, 3, 9, padding=4))
        self.add_module(f"block{blocks + 3}", nn.Sequential(*ups))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        head = self.block1(x)
        h = head
        for i in range(self.blocks + 1):
            h = getattr(self, f"block{i + 2}")(h)
        out = getattr(self, f"block{self.blocks + 3}")(head + h)
        return (torch.tanh(out) + 1) / 2
