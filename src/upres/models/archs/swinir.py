"""SwinIR: image restoration with Swin Transformer (the classical/lightweight SR variants).

Liang, Cao, Sun, Zhang, Van Gool, Timofte, "SwinIR: Image Restoration Using Swin Transformer",
ICCVW 2021. Shallow 3x3 features, residual Swin Transformer blocks (RSTB: window attention with
relative position bias, alternately shifted windows, an MLP, and a 3x3 convolution closing each
group), then upsampling; the lightweight configuration (embed 60, depths 6x4, heads 6, window 8,
mlp ratio 2) upsamples with one convolution and a pixel shuffle ("pixelshuffledirect").
Parameter names follow the authors' release. Input RGB in [0, 1]; inputs are padded (reflect)
to a multiple of the window inside the network and the output is cropped back.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["SwinIR"]

_MEAN = (0.4488, 0.4371, 0.4040)


def _partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """``(B, H, W, C)`` -> ``(B * nW, ws * ws, C)``."""
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, ws * ws, c)


def _reverse(windows: torch.Tensor, ws: int, h: int, w: int) -> torch.Tensor:
    """``(B * nW, ws * ws, C)`` -> ``(B, H, W, C)``."""
    c = windows.shape[-1]
    x = windows.view(-1, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, w, c)


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class _WindowAttention(nn.Module):
    def __init__(self, dim: int, ws: int, heads: int) -> None:
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * ws - 1) ** 2, heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij"))
        flat = coords.flatten(1)
        rel = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0) + (ws - 1)
        self.register_buffer("relative_position_index", rel[..., 0] * (2 * ws - 1) + rel[..., 1])
        self.qkv, self.proj = nn.Linear(dim, dim * 3), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        bw, n, c = x.shape
        q, k, v = self.qkv(x).reshape(bw, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1,
                                                                                    4)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        attn = attn + bias.view(n, n, -1).permute(2, 0, 1)[None]
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(bw // nw, nw, self.heads, n, n) + mask[None, :, None]
            attn = attn.view(-1, self.heads, n, n)
        out = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(bw, n, c)
        return self.proj(out)


class _SwinBlock(nn.Module):
    def __init__(self, dim: int, heads: int, ws: int, shift: int, mlp_ratio: float) -> None:
        super().__init__()
        self.ws, self.shift = ws, shift
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = _WindowAttention(dim, ws, heads)
        self.mlp = _Mlp(dim, int(dim * mlp_ratio))

    def _mask(self, h: int, w: int, device: torch.device) -> torch.Tensor:
        img = torch.zeros(1, h, w, 1, device=device)
        cuts = (slice(0, -self.ws), slice(-self.ws, -self.shift), slice(-self.shift, None))
        label = 0
        for hs in cuts:
            for wsl in cuts:
                img[:, hs, wsl, :] = label
                label += 1
        win = _partition(img, self.ws).squeeze(-1)
        diff = win[:, None, :] - win[:, :, None]
        return diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        h, w = size
        b, _, c = x.shape
        y = self.norm1(x).view(b, h, w, c)
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
        mask = self._mask(h, w, x.device) if self.shift else None
        y = _reverse(self.attn(_partition(y, self.ws), mask), self.ws, h, w)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + y.reshape(b, h * w, c)
        return x + self.mlp(self.norm2(x))


class _BasicLayer(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, ws: int, mlp_ratio: float) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            _SwinBlock(dim, heads, ws, 0 if i % 2 == 0 else ws // 2, mlp_ratio)
            for i in range(depth))

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x, size)
        return x


class _RSTB(nn.Module):
    """Residual Swin Transformer block: a group of Swin blocks, a 3x3 conv, a skip."""

    def __init__(self, dim: int, depth: int, heads: int, ws: int, mlp_ratio: float) -> None:
        super().__init__()
        self.residual_group = _BasicLayer(dim, depth, heads, ws, mlp_ratio)
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        b, _, c = x.shape
        y = self.residual_group(x, size).transpose(1, 2).view(b, c, *size)
        return self.conv(y).flatten(2).transpose(1, 2) + x


class _PatchEmbed(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.flatten(2).transpose(1, 2))


class SwinIR(nn.Module):
    """Input ``(B, 3, H, W)`` RGB in [0, 1]; output ``(B, 3, sH, sW)``. Defaults: lightweight."""

    def __init__(self, *, scale: int, embed_dim: int = 60,
                 depths: Sequence[int] = (6, 6, 6, 6), num_heads: Sequence[int] = (6, 6, 6, 6),
                 window_size: int = 8, mlp_ratio: float = 2.0) -> None:
        super().__init__()
        if len(depths) != len(num_heads):
            raise ValueError("SwinIR: depths and num_heads must have the same length")
        self.scale, self.window_size = scale, window_size
        self.size_multiple = window_size  # tiles start on the window grid
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.conv_first = nn.Conv2d(3, embed_dim, 3, padding=1)
        self.patch_embed = _PatchEmbed(embed_dim)
        self.layers = nn.ModuleList(_RSTB(embed_dim, d, h, window_size, mlp_ratio)
                                    for d, h in zip(depths, num_heads, strict=True))
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = nn.Conv2d(embed_dim, embed_dim, 3, padding=1)
        self.upsample = nn.Sequential(nn.Conv2d(embed_dim, 3 * scale * scale, 3, padding=1),
                                      nn.PixelShuffle(scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:]
        ws = self.window_size
        ph, pw = (-h) % ws, (-w) % ws
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="reflect" if min(h, w) > max(ph, pw) else
                      "replicate")
        x = x - self.mean
        feat = self.conv_first(x)
        size = (feat.shape[2], feat.shape[3])
        t = self.patch_embed(feat)
        for layer in self.layers:
            t = layer(t, size)
        t = self.norm(t).transpose(1, 2).reshape(feat.shape)
        out = self.upsample(self.conv_after_body(t) + feat) + self.mean
        return out[:, :, : h * self.scale, : w * self.scale]
