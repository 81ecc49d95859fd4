"""SPAN: Swift Parameter-free Attention Network.

Wan et al., "Swift Parameter-free Attention Network for Efficient Super-Resolution", CVPRW 2024
(NTIRE 2024 efficient SR winner). Each ``Conv3XC`` trains as a 1x1 -> 3x3 -> 1x1 chain plus a
1x1 skip and folds into a single 3x3 convolution for inference (structural
re-parameterisation): :meth:`SPAN.fold` does it once, and ``eval()`` folds automatically.
The attention is parameter-free: ``sigmoid(x) - 0.5`` of a block's output gates it.
Parameter names follow the authors' release. Input RGB in [0, 1]; the network subtracts the
DIV2K mean and works on [0, 255] values inside (``img_range``).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["SPAN"]

_MEAN = (0.4488, 0.4371, 0.4040)


class Conv3XC(nn.Module):
    """A re-parameterisable 3x3 convolution (``gain`` widens the hidden 3x3)."""

    def __init__(self, cin: int, cout: int, gain: int = 2) -> None:
        super().__init__()
        self.sk = nn.Conv2d(cin, cout, 1)
        self.conv = nn.Sequential(nn.Conv2d(cin, cin * gain, 1),
                                  nn.Conv2d(cin * gain, cout * gain, 3),
                                  nn.Conv2d(cout * gain, cout, 1))
        self.eval_conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.eval_conv.requires_grad_(False)
        self.folded = False

    @torch.no_grad()
    def fold(self) -> None:
        """Write the single 3x3 convolution equal to the training-time branches."""
        a, b, c = self.conv
        # (b . a): 3x3 kernel over the input channels; then (c . (b . a)).
        w = torch.einsum("omhw,mi->oihw", b.weight, a.weight[:, :, 0, 0])
        bias = b.bias + torch.einsum("omhw,m->o", b.weight, a.bias)
        w = torch.einsum("po,oihw->pihw", c.weight[:, :, 0, 0], w)
        bias = c.weight[:, :, 0, 0] @ bias + c.bias
        w = w + F.pad(self.sk.weight, (1, 1, 1, 1))
        self.eval_conv.weight.copy_(w)
        self.eval_conv.bias.copy_(bias + self.sk.bias)
        self.folded = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.folded = False
            out = self.conv(F.pad(x, (1, 1, 1, 1))) + self.sk(x)
        else:
            if not self.folded:
                self.fold()
            out = self.eval_conv(x)
        return out


class _SPAB(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.c1_r, self.c2_r, self.c3_r = Conv3XC(ch, ch), Conv3XC(ch, ch), Conv3XC(ch, ch)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out1 = self.c1_r(x)
        out3 = self.c3_r(F.silu(self.c2_r(F.silu(out1))))
        att = torch.sigmoid(out3) - 0.5
        return (out3 + x) * att, out1


class SPAN(nn.Module):
    """Input ``(B, 3, H, W)`` RGB in [0, 1]; output ``(B, 3, sH, sW)`` in [0, 1]."""

    def __init__(self, *, scale: int, channels: int = 48, blocks: int = 6,
                 img_range: float = 255.0) -> None:
        super().__init__()
        if blocks < 2:
            raise ValueError("SPAN needs at least 2 blocks")
        self.scale, self.blocks, self.img_range = scale, blocks, img_range
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.conv_1 = Conv3XC(3, channels)
        for i in range(blocks):
            self.add_module(f"block_{i + 1}", _SPAB(channels))
        self.conv_cat = nn.Conv2d(channels * 4, channels, 1)
        self.conv_2 = Conv3XC(channels, channels)
        self.upsampler = nn.Sequential(nn.Conv2d(channels, 3 * scale * scale, 3, padding=1),
                                       nn.PixelShuffle(scale))

    def fold(self) -> SPAN:
        """Fold every Conv3XC for inference; returns self."""
        for m in self.modules():
            if isinstance(m, Conv3XC):
                m.fold()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) * self.img_range
        feat = self.conv_1(x)
        h, first, before_last = feat, None, None
        for i in range(self.blocks):
            h, inner = getattr(self, f"block_{i + 1}")(h)
            if i == 0:
                first = h
            if i == self.blocks - 1:
                before_last = inner
        out = self.conv_cat(torch.cat([feat, self.conv_2(h), first, before_last], dim=1))
        # As in the authors' code, the output is not de-normalised: the last convolution learns
        # to produce [0, 1] values from the [0, 255]-scaled features.
        return self.upsampler(out)
