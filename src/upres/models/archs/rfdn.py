"""RFDN: Residual Feature Distillation Network.

Liu, Tang, Wu, "Residual Feature Distillation Network for Lightweight Image Super-Resolution",
ECCV 2020 Workshops (AIM 2020 efficient SR challenge winner). Parameter names follow the authors'
release (``RFDN_AIM.pth`` loads as it is).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["RFDN"]


def _conv(cin: int, cout: int, k: int, stride: int = 1, padding: int | None = None) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride,
                     padding=(k - 1) // 2 if padding is None else padding)


class _ESA(nn.Module):
    """Enhanced spatial attention: a strided, pooled branch gives a sigmoid mask."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        f = channels // 4
        self.conv1 = _conv(channels, f, 1)
        self.conv_f = _conv(f, f, 1)
        self.conv_max = _conv(f, f, 3)
        self.conv2 = _conv(f, f, 3, stride=2, padding=0)
        self.conv3 = _conv(f, f, 3)
        self.conv3_ = _conv(f, f, 3)
        self.conv4 = _conv(f, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1_ = self.conv1(x)
        c1 = self.conv2(c1_)
        v = F.relu(self.conv_max(F.max_pool2d(c1, kernel_size=7, stride=3)))
        c3 = self.conv3_(F.relu(self.conv3(v)))
        c3 = F.interpolate(c3, size=x.shape[2:], mode="bilinear", align_corners=False)
        return x * torch.sigmoid(self.conv4(c3 + self.conv_f(c1_)))


class _RFDB(nn.Module):
    """Residual feature distillation block."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        dc = channels // 2
        self.c1_d, self.c1_r = _conv(channels, dc, 1), _conv(channels, channels, 3)
        self.c2_d, self.c2_r = _conv(channels, dc, 1), _conv(channels, channels, 3)
        self.c3_d, self.c3_r = _conv(channels, dc, 1), _conv(channels, channels, 3)
        self.c4 = _conv(channels, dc, 3)
        self.c5 = _conv(dc * 4, channels, 1)
        self.esa = _ESA(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = lambda t: F.leaky_relu(t, 0.05)  # noqa: E731
        d1, r1 = act(self.c1_d(x)), act(self.c1_r(x) + x)
        d2, r2 = act(self.c2_d(r1)), act(self.c2_r(r1) + r1)
        d3, r3 = act(self.c3_d(r2)), act(self.c3_r(r2) + r2)
        r4 = act(self.c4(r3))
        return self.esa(self.c5(torch.cat([d1, d2, d3, r4], dim=1)))


class RFDN(nn.Module):
    """RFDN. Input ``(B, 3, H, W)`` RGB (range per the weights' card); output ``(B, 3, sH, sW)``.

    Inputs of at least 15x15 pixels are needed (the attention branch's pooling window).
    """

    def __init__(self, *, scale: int, channels: int = 50, blocks: int = 4, in_ch: int = 3,
                 out_ch: int = 3) -> None:
        super().__init__()
        self.scale = scale
        self.blocks = blocks
        self.min_size = 15  # the attention branch pools 7x7 windows of a stride-2 map
        self.fea_conv = _conv(in_ch, channels, 3)
        for i in range(blocks):
            self.add_module(f"B{i + 1}", _RFDB(channels))
        self.c = nn.Sequential(_conv(channels * blocks, channels, 1), nn.LeakyReLU(0.05))
        self.LR_conv = _conv(channels, channels, 3)
        self.upsampler = nn.Sequential(_conv(channels, out_ch * scale * scale, 3),
                                       nn.PixelShuffle(scale))

    @torch.no_grad()
    def grow_from(self, state: dict[str, torch.Tensor]) -> str:
        """Start from a trained RFDN with fewer blocks (same scale and width), same function.

        Every tensor of ``state`` is copied; each new block ``B{k}`` starts as a copy of the
        deepest trained block (a working feature extractor rather than noise), and its input
        columns in the 1x1 fusion ``c`` start at zero, so at step 0 the new block is computed
        but not seen and the output equals the smaller network's. Returns a one-line summary;
        raises ``ValueError`` when ``state`` is not a shallower RFDN of the same scale/width.
        """
        own = self.state_dict()
        old_blocks = len({k.split(".")[0] for k in state if k[0] == "B" and k[1].isdigit()})
        width = own["fea_conv.weight"].shape[0]
        same = all(k in state and state[k].shape == own[k].shape
                   for k in ("fea_conv.weight", "LR_conv.weight", "upsampler.0.weight"))
        if not same or not 0 < old_blocks <= self.blocks:
            raise ValueError(f"RFDN.grow_from: cannot grow {old_blocks} blocks into "
                             f"{self.blocks} (width {width}, scale and colours must match)")
        for k, t in own.items():
            if k == "c.0.weight":  # (width, width * blocks, 1, 1): zero the new blocks' columns
                t.zero_()
                t[:, : width * old_blocks] = state[k]
            elif k in state:
                t.copy_(state[k])
            else:  # B{new}.rest -> B{old_blocks}.rest
                t.copy_(state[f"B{old_blocks}." + k.split(".", 1)[1]])
        self.load_state_dict(own)
        return f"{old_blocks} blocks -> {self.blocks} (width {width})"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fea = self.fea_conv(x)
        outs, h = [], fea
        for i in range(self.blocks):
            h = getattr(self, f"B{i + 1}")(h)
            outs.append(h)
        return self.upsampler(self.LR_conv(self.c(torch.cat(outs, dim=1))) + fea)
