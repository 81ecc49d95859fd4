"""UpNet: a plain, fast CNN for classical super-resolution (upres's own first family).

Design (post-upsampling, in the spirit of ESPCN [Shi et al., CVPR 2016] and FSRCNN
[Dong et al., ECCV 2016]): every convolution runs at low resolution, a pixel shuffle
[Shi et al. 2016] enlarges at the very end, and the network only learns a residual over a
nearest-neighbour "anchor" (each LR pixel repeated ``scale**2`` times before the shuffle, as in
ABPN [Du et al., 2021]), which costs nothing at inference and speeds up training.

    x ─ conv3x3(3→C) ─┬─ [conv3x3(C→C) + act] x depth ─(+)─ conv3x3(C→3·s²) ─(+ anchor)─ shuffle
                      └────────────────────────────────┘
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["UpNet"]


class UpNet(nn.Module):
    """Plain 3x3 CNN at LR resolution with pixel-shuffle upsampling.

    Input ``(B, in_ch, H, W)`` float in [0, 1]; output ``(B, out_ch, H*scale, W*scale)``, about
    [0, 1] (not clipped). Any ``H, W >= 1`` works: no size multiple is needed.
    """

    def __init__(
        self,
        *,
        scale: int,
        channels: int = 32,
        depth: int = 6,
        in_ch: int = 3,
        out_ch: int = 3,
        act: str = "relu",
    ) -> None:
        super().__init__()
        if scale not in (2, 3, 4, 8):
            raise ValueError(f"UpNet: scale must be 2, 3, 4 or 8, got {scale}")
        if in_ch != out_ch:
            raise ValueError("UpNet: the anchor residual needs in_ch == out_ch")
        if act not in ("relu", "prelu", "lrelu"):
            raise ValueError(f"UpNet: act must be relu, prelu or lrelu, got {act!r}")
        self.scale = scale
        self.head = nn.Conv2d(in_ch, channels, 3, padding=1)
        layers: list[nn.Module] = []
        for _ in range(depth):
            layers.append(nn.Conv2d(channels, channels, 3, padding=1))
            if act == "relu":
                layers.append(nn.ReLU(inplace=True))
            elif act == "prelu":
                layers.append(nn.PReLU(channels))
            else:
                layers.append(nn.LeakyReLU(0.05, inplace=True))
        self.body = nn.Sequential(*layers)
        self.tail = nn.Conv2d(channels, out_ch * scale * scale, 3, padding=1)
        # Start as a nearest-neighbour upscaler: the learned residual begins at zero.
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(x)
        h = self.body(h) + h
        r = self.tail(h)
        anchor = torch.repeat_interleave(x, self.scale * self.scale, dim=1)
        return F.pixel_shuffle(r + anchor, self.scale)
