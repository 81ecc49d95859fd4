"""FSRCNN: Fast Super-Resolution Convolutional Neural Network.

Dong, Loy, Tang, "Accelerating the Super-Resolution Convolutional Neural Network", ECCV 2016.
Feature extraction (5x5, d), shrinking (1x1, s), m mapping layers (3x3, s), expanding (1x1, d),
and a 9x9 transposed convolution that enlarges by the scale, with PReLU activations. The classic
model works on the luma (Y) channel only (``in_ch=1``); parameter names follow a widely used
PyTorch port (``first_part``/``mid_part``/``last_part``), so its weights load as they are.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["FSRCNN"]


class FSRCNN(nn.Module):
    """FSRCNN. Input ``(B, in_ch, H, W)`` in [0, 1] (Y for ``in_ch=1``); output
    ``(B, in_ch, sH, sW)``."""

    def __init__(self, *, scale: int, d: int = 56, s: int = 12, m: int = 4,
                 in_ch: int = 1) -> None:
        super().__init__()
        self.scale = scale
        self.first_part = nn.Sequential(nn.Conv2d(in_ch, d, 5, padding=2), nn.PReLU(d))
        mid: list[nn.Module] = [nn.Conv2d(d, s, 1), nn.PReLU(s)]
        for _ in range(m):
            mid += [nn.Conv2d(s, s, 3, padding=1), nn.PReLU(s)]
        mid += [nn.Conv2d(s, d, 1), nn.PReLU(d)]
        self.mid_part = nn.Sequential(*mid)
        self.last_part = nn.ConvTranspose2d(d, in_ch, 9, stride=scale, padding=4,
                                            output_padding=scale - 1)
        for mod in self.modules():
            if isinstance(mod, nn.Conv2d):
                nn.init.kaiming_normal_(mod.weight, nonlinearity="relu")
                nn.init.zeros_(mod.bias)
        nn.init.normal_(self.last_part.weight, std=0.001)
        nn.init.zeros_(self.last_part.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_part(self.mid_part(self.first_part(x)))
