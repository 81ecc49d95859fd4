"""CARN-M: Cascading Residual Network, mobile variant.

Ahn, Kang, Sohn, "Fast, Accurate, and Lightweight Super-Resolution with Cascading Residual
Network", ECCV 2018. One network holds upsamplers for x2, x3 and x4 (``multi_scale``); the scale
is chosen when the model is built here (``scale``), so it behaves like any single-scale model.
Parameter names follow the authors' release (``carn_m.pth`` loads as it is). The mean shift
(``sub_mean``/``add_mean``, fixed 1x1 convolutions) is inside the network: input RGB in [0, 1].
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["CARNM"]

_MEAN = (0.4488, 0.4371, 0.4040)  # DIV2K mean, as in the paper's code


class _MeanShift(nn.Module):
    def __init__(self, sign: float) -> None:
        super().__init__()
        self.shifter = nn.Conv2d(3, 3, 1)
        with torch.no_grad():
            self.shifter.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
            self.shifter.bias.copy_(torch.tensor(_MEAN) * sign)
        self.shifter.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shifter(x)


class _EResidual(nn.Module):
    """Efficient residual block: two grouped 3x3 convs and a 1x1, with a skip."""

    def __init__(self, ch: int, groups: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(ch, ch, 3, padding=1, groups=groups), nn.ReLU(inplace=True),
            nn.Conv2d(ch, ch, 3, padding=1, groups=groups), nn.ReLU(inplace=True),
            nn.Conv2d(ch, ch, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + x)


class _Basic(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(cin, cout, 1), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _cascade(x: torch.Tensor, units: list[nn.Module], fuses: list[nn.Module]) -> torch.Tensor:
    """CARN's cascading: each unit's output is concatenated to all before and fused by 1x1."""
    c, o = x, x
    for unit, fuse in zip(units, fuses, strict=True):
        c = torch.cat([c, unit(o)], dim=1)
        o = fuse(c)
    return o


class _Block(nn.Module):
    """A cascading block; CARN-M shares one residual unit across its three steps."""

    def __init__(self, ch: int, groups: int) -> None:
        super().__init__()
        self.b1 = _EResidual(ch, groups)
        self.c1, self.c2, self.c3 = _Basic(ch * 2, ch), _Basic(ch * 3, ch), _Basic(ch * 4, ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _cascade(x, [self.b1] * 3, [self.c1, self.c2, self.c3])


class _Up(nn.Module):
    def __init__(self, ch: int, scale: int, groups: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        if scale == 3:
            layers += [nn.Conv2d(ch, 9 * ch, 3, padding=1, groups=groups), nn.ReLU(inplace=True),
                       nn.PixelShuffle(3)]
        else:
            for _ in range(int(math.log2(scale))):
                layers += [nn.Conv2d(ch, 4 * ch, 3, padding=1, groups=groups),
                           nn.ReLU(inplace=True), nn.PixelShuffle(2)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class _MultiUp(nn.Module):
    def __init__(self, ch: int, groups: int) -> None:
        super().__init__()
        self.up2, self.up3, self.up4 = _Up(ch, 2, groups), _Up(ch, 3, groups), _Up(ch, 4, groups)


class CARNM(nn.Module):
    """CARN-M. Input ``(B, 3, H, W)`` RGB in [0, 1]; output ``(B, 3, sH, sW)``.

    ``multi_scale=True`` holds the x2/x3/x4 upsamplers of the authors' release and uses the one
    for ``scale``; ``multi_scale=False`` holds only that one.
    """

    def __init__(self, *, scale: int, channels: int = 64, groups: int = 4,
                 multi_scale: bool = True) -> None:
        super().__init__()
        if scale not in (2, 3, 4):
            raise ValueError(f"CARN-M: scale must be 2, 3 or 4, got {scale}")
        self.scale, self.multi_scale = scale, multi_scale
        self.sub_mean, self.add_mean = _MeanShift(-1.0), _MeanShift(1.0)
        self.entry = nn.Conv2d(3, channels, 3, padding=1)
        self.b1, self.b2, self.b3 = (_Block(channels, groups) for _ in range(3))
        self.c1 = _Basic(channels * 2, channels)
        self.c2 = _Basic(channels * 3, channels)
        self.c3 = _Basic(channels * 4, channels)
        self.upsample: nn.Module = (_MultiUp(channels, groups) if multi_scale
                                    else nn.ModuleDict({"up": _Up(channels, scale, groups)}))
        self.exit = nn.Conv2d(channels, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.entry(self.sub_mean(x))
        h = _cascade(h, [self.b1, self.b2, self.b3], [self.c1, self.c2, self.c3])
        up = getattr(self.upsample, f"up{self.scale}") if self.multi_scale else self.upsample["up"]
        return self.add_mean(self.exit(up(h)))
