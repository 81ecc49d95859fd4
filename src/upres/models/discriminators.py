"""Discriminators for GAN training of super-resolution networks.

* ``unet_sn``: the U-Net discriminator with spectral normalization of Real-ESRGAN (Wang et al.,
  ICCVW 2021): three stride-2 stages down, bilinear upsampling with skip connections back up,
  a per-pixel realness map out. Per-pixel feedback suits the local artefacts of SR.
* ``vgg_patch``: a VGG-style, fully convolutional patch discriminator (conv 3x3 + conv 4x4
  stride 2 stages, as in ESRGAN's VGG discriminator, without its fixed-size linear head), with
  spectral normalization; each output cell judges one receptive-field patch, at any input size.

Both take ``(B, C, H, W)`` images in [0, 1] (``H, W`` multiples of 8 for ``unet_sn``, at least
32 for ``vgg_patch``) and return raw logits: ``(B, 1, H, W)`` for ``unet_sn`` and
``(B, 1, H/16, W/16)`` for ``vgg_patch``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import spectral_norm

__all__ = ["DISCRIMINATORS", "UNetDiscriminatorSN", "VGGPatchDiscriminator",
           "build_discriminator"]


class UNetDiscriminatorSN(nn.Module):
    """Real-ESRGAN's U-Net discriminator (spectral norm on every inner convolution)."""

    def __init__(self, *, in_ch: int = 3, num_feat: int = 64, skip_connection: bool = True
                 ) -> None:
        super().__init__()
        f = num_feat
        self.skip_connection = skip_connection
        self.conv0 = nn.Conv2d(in_ch, f, 3, 1, 1)
        self.conv1 = spectral_norm(nn.Conv2d(f, f * 2, 4, 2, 1, bias=False))
        self.conv2 = spectral_norm(nn.Conv2d(f * 2, f * 4, 4, 2, 1, bias=False))
        self.conv3 = spectral_norm(nn.Conv2d(f * 4, f * 8, 4, 2, 1, bias=False))
        self.conv4 = spectral_norm(nn.Conv2d(f * 8, f * 4, 3, 1, 1, bias=False))
        self.conv5 = spectral_norm(nn.Conv2d(f * 4, f * 2, 3, 1, 1, bias=False))
        self.conv6 = spectral_norm(nn.Conv2d(f * 2, f, 3, 1, 1, bias=False))
        self.conv7 = spectral_norm(nn.Conv2d(f, f, 3, 1, 1, bias=False))
        self.conv8 = spectral_norm(nn.Conv2d(f, f, 3, 1, 1, bias=False))
        self.conv9 = nn.Conv2d(f, 1, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = lambda t: F.leaky_relu(t, 0.2)  # noqa: E731
        x0 = act(self.conv0(x))
        x1 = act(self.conv1(x0))
        x2 = act(self.conv2(x1))
        x3 = act(self.conv3(x2))
        up = lambda t: F.interpolate(t, scale_factor=2, mode="bilinear",  # noqa: E731
                                     align_corners=False)
        x4 = act(self.conv4(up(x3)))
        if self.skip_connection:
            x4 = x4 + x2
        x5 = act(self.conv5(up(x4)))
        if self.skip_connection:
            x5 = x5 + x1
        x6 = act(self.conv6(up(x5)))
        if self.skip_connection:
            x6 = x6 + x0
        out = act(self.conv7(x6))
        out = act(self.conv8(out))
        return self.conv9(out)


class VGGPatchDiscriminator(nn.Module):
    """VGG-style patch discriminator: ``stages`` blocks of (3x3 conv, 4x4 stride-2 conv), the
    width doubling up to ``8 * num_feat``, then a 3x3 conv to one logit per patch."""

    def __init__(self, *, in_ch: int = 3, num_feat: int = 64, stages: int = 4) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_ch, num_feat, 3, 1, 1),
                                   nn.LeakyReLU(0.2, inplace=True)]
        ch = num_feat
        for i in range(stages):
            out = min(num_feat * 2 ** (i + 1), num_feat * 8)
            layers += [spectral_norm(nn.Conv2d(ch, ch, 4, 2, 1, bias=False)),
                       nn.LeakyReLU(0.2, inplace=True),
                       spectral_norm(nn.Conv2d(ch, out, 3, 1, 1, bias=False)),
                       nn.LeakyReLU(0.2, inplace=True)]
            ch = out
        layers.append(nn.Conv2d(ch, 1, 3, 1, 1))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


DISCRIMINATORS: dict[str, type[nn.Module]] = {"unet_sn": UNetDiscriminatorSN,
                                              "vgg_patch": VGGPatchDiscriminator}


def build_discriminator(name: str, params: dict[str, Any] | None = None) -> nn.Module:
    """``unet_sn`` or ``vgg_patch`` with keyword ``params`` (``num_feat``, ``in_ch``, ...)."""
    if name not in DISCRIMINATORS:
        raise ValueError(f"unknown discriminator {name!r}; choose from "
                         f"{', '.join(DISCRIMINATORS)}")
    return DISCRIMINATORS[name](**(params or {}))
