"""SAFMN: Spatially-Adaptive Feature Modulation Network (the paper's configuration).

Sun, Pan, Dong, Tang, "Spatially-Adaptive Feature Modulation for Efficient Image
Super-Resolution", ICCV 2023. Each block: channel LayerNorm -> SAFM (channel chunks processed at
1, 1/2, 1/4, 1/8 resolution by depth-wise 3x3 convs after adaptive max pooling, aggregated by a
1x1 conv and GELU, modulating the input) -> residual; LayerNorm -> CCM (3x3 expand, GELU, 1x1
reduce) -> residual. Parameter names follow the authors' release of this configuration.
(The NTIRE 2023 challenge variant, without per-block norms and biases, is a different layout.)
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["SAFMN"]


class _LayerNorm(nn.Module):
    """LayerNorm over the channels of an NCHW tensor."""

    def __init__(self, ch: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.ones(ch)), nn.Parameter(torch.zeros(ch))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.mean(1, keepdim=True)
        v = (x - u).pow(2).mean(1, keepdim=True)
        return self.weight[:, None, None] * (x - u) / torch.sqrt(v + self.eps) + self.bias[
            :, None, None]


class _SAFM(nn.Module):
    def __init__(self, dim: int, levels: int = 4) -> None:
        super().__init__()
        self.levels = levels
        c = dim // levels
        self.mfr = nn.ModuleList(nn.Conv2d(c, c, 3, padding=1, groups=c) for _ in range(levels))
        self.aggr = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        out = []
        for i, chunk in enumerate(x.chunk(self.levels, dim=1)):
            if i == 0:
                out.append(self.mfr[0](chunk))
                continue
            s = F.adaptive_max_pool2d(chunk, (max(1, h // 2**i), max(1, w // 2**i)))
            out.append(F.interpolate(self.mfr[i](s), size=(h, w), mode="nearest"))
        return F.gelu(self.aggr(torch.cat(out, dim=1))) * x


class _CCM(nn.Module):
    def __init__(self, dim: int, growth: float) -> None:
        super().__init__()
        hidden = int(dim * growth)
        self.ccm = nn.Sequential(nn.Conv2d(dim, hidden, 3, padding=1), nn.GELU(),
                                 nn.Conv2d(hidden, dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ccm(x)


class _AttBlock(nn.Module):
    def __init__(self, dim: int, ffn_scale: float) -> None:
        super().__init__()
        self.norm1, self.norm2 = _LayerNorm(dim), _LayerNorm(dim)
        self.safm, self.ccm = _SAFM(dim), _CCM(dim, ffn_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.safm(self.norm1(x)) + x
        return self.ccm(self.norm2(x)) + x


class SAFMN(nn.Module):
    """Input ``(B, 3, H, W)`` RGB in [0, 1]; output ``(B, 3, sH, sW)``."""

    def __init__(self, *, scale: int, dim: int = 36, n_blocks: int = 8,
                 ffn_scale: float = 2.0) -> None:
        super().__init__()
        self.scale = scale
        self.to_feat = nn.Conv2d(3, dim, 3, padding=1)
        self.feats = nn.Sequential(*[_AttBlock(dim, ffn_scale) for _ in range(n_blocks)])
        self.to_img = nn.Sequential(nn.Conv2d(dim, 3 * scale * scale, 3, padding=1),
                                    nn.PixelShuffle(scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.to_feat(x)
        return self.to_img(self.feats(feat) + feat)
