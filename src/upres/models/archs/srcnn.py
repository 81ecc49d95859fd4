"""SRCNN and VDSR: the pre-upsampling designs (the input is first enlarged by bicubic).

SRCNN: Dong, Loy, He, Tang, "Image Super-Resolution Using Deep Convolutional Networks", TPAMI
2016 (the 9-5-5 network: patch extraction, non-linear mapping, reconstruction).
VDSR: Kim, Lee, Lee, "Accurate Image Super-Resolution Using Very Deep Convolutional Networks",
CVPR 2016 (20 3x3 layers without bias, learning the residual over the bicubic image).

Both map an already enlarged image to an image of the same size: their card says
``pre_upsample: true`` and the inference path enlarges the input by MATLAB bicubic first.
Convolutions are zero-padded ('same'), so the output keeps the input's size.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["SRCNN", "VDSR"]


class SRCNN(nn.Module):
    """Input ``(B, in_ch, sH, sW)`` bicubic-enlarged, in [0, 1]; output the same shape."""

    def __init__(self, *, scale: int, f1: int = 64, f2: int = 32, k1: int = 9, k2: int = 5,
                 k3: int = 5, in_ch: int = 3) -> None:
        super().__init__()
        self.scale = scale  # nominal: the network itself does not change the size
        self.conv1 = nn.Conv2d(in_ch, f1, k1, padding=k1 // 2)
        self.conv2 = nn.Conv2d(f1, f2, k2, padding=k2 // 2)
        self.conv3 = nn.Conv2d(f2, in_ch, k3, padding=k3 // 2)
        nn.init.normal_(self.conv3.weight, std=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(torch.relu(self.conv2(torch.relu(self.conv1(x)))))


class _ConvReLU(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x))


class VDSR(nn.Module):
    """Input ``(B, in_ch, sH, sW)`` bicubic-enlarged, in [0, 1]; output the same shape."""

    def __init__(self, *, scale: int, channels: int = 64, depth: int = 20,
                 in_ch: int = 1) -> None:
        super().__init__()
        self.scale = scale
        self.input = nn.Conv2d(in_ch, channels, 3, padding=1, bias=False)
        self.residual_layer = nn.Sequential(*[_ConvReLU(channels) for _ in range(depth - 2)])
        self.output = nn.Conv2d(channels, in_ch, 3, padding=1, bias=False)
        nn.init.normal_(self.output.weight, std=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.output(self.residual_layer(torch.relu(self.input(x))))
