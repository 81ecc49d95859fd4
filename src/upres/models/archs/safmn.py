"""SAFMN: Spatially-Adaptive Feature Modulation Network (the paper's configuration).

Sun, Pan, Dong, Tang, "Spatially-Adaptive Feature Modulation for Efficient Image
Super-Resolution", ICCV 2023. Each block: channel LayerNorm -> SAFM (channel chunks processed at
1, 1/2, 1/4, 1/8 resolution by depth-wise 3x3 convs after adaptive max pooling, aggregated by a
1x1 conv and GELU, modulating the input) -> residual; LayerNorm -> CCM (3x3 expand, GELU, 1x1
reduce) -> residual. Parameter names follow the authors' release of this configuration.

``variant="ntire2023"`` is the authors' NTIRE 2023 efficient-SR challenge model: no per-block
norms and no biases inside the blocks, one Global Response Normalization (GRN, Woo et al.,
ConvNeXt V2) after the first convolution, pooling one level coarser in SAFM, and the output added
to a bilinear enlargement of the input.
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


class _GRN(nn.Module):
    """Global response normalisation: scale each channel by its share of the L2 energy."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, dim, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, dim, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        energy = torch.linalg.vector_norm(x, dim=(2, 3), keepdim=True)
        share = energy / (energy.mean(dim=1, keepdim=True) + 1e-6)
        return self.gamma * (x * share) + self.beta + x


class _SAFM(nn.Module):
    def __init__(self, dim: int, levels: int = 4, bias: bool = True, coarser: int = 0) -> None:
        super().__init__()
        self.levels, self.coarser = levels, coarser
        c = dim // levels
        self.mfr = nn.ModuleList(nn.Conv2d(c, c, 3, padding=1, groups=c, bias=bias)
                                 for _ in range(levels))
        self.aggr = nn.Conv2d(dim, dim, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        out = []
        for i, chunk in enumerate(x.chunk(self.levels, dim=1)):
            if i == 0:
                out.append(self.mfr[0](chunk))
                continue
            k = 2 ** (i + self.coarser)
            s = F.adaptive_max_pool2d(chunk, (max(1, h // k), max(1, w // k)))
            out.append(F.interpolate(self.mfr[i](s), size=(h, w), mode="nearest"))
        return F.gelu(self.aggr(torch.cat(out, dim=1))) * x


class _CCM(nn.Module):
    def __init__(self, dim: int, growth: float, bias: bool = True) -> None:
        super().__init__()
        hidden = int(dim * growth)
        self.ccm = nn.Sequential(nn.Conv2d(dim, hidden, 3, padding=1, bias=bias), nn.GELU(),
                                 nn.Conv2d(hidden, dim, 1, bias=bias))

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


class _PlainBlock(nn.Module):
    """The NTIRE 2023 block: no norms, no biases."""

    def __init__(self, dim: int, ffn_scale: float) -> None:
        super().__init__()
        self.safm = _SAFM(dim, bias=False, coarser=1)
        self.ccm = _CCM(dim, ffn_scale, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.safm(x) + x
        return self.ccm(x) + x


class SAFMN(nn.Module):
    """Input ``(B, 3, H, W)`` RGB in [0, 1]; output ``(B, 3, sH, sW)``."""

    def __init__(self, *, scale: int, dim: int = 36, n_blocks: int = 8,
                 ffn_scale: float = 2.0, variant: str = "paper") -> None:
        super().__init__()
        if variant not in ("paper", "ntire2023"):
            raise ValueError(f"SAFMN: variant must be paper or ntire2023, got {variant!r}")
        self.scale, self.variant = scale, variant
        block = _AttBlock if variant == "paper" else _PlainBlock
        if variant == "ntire2023":
            self.norm = _GRN(dim)
        self.to_feat = nn.Conv2d(3, dim, 3, padding=1)
        self.feats = nn.Sequential(*[block(dim, ffn_scale) for _ in range(n_blocks)])
        self.to_img = nn.Sequential(nn.Conv2d(dim, 3 * scale * scale, 3, padding=1),
                                    nn.PixelShuffle(scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.to_feat(x)
        if self.variant == "paper":
            return self.to_img(self.feats(feat) + feat)
        base = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return self.to_img(self.feats(self.norm(feat))) + base
