"""UpNet: a plain, fast CNN for classical super-resolution (upres's own first family).

Design (post-upsampling, in the spirit of ESPCN [Shi et al., CVPR 2016] and FSRCNN
[Dong et al., ECCV 2016]): every convolution runs at low resolution, a pixel shuffle
[Shi et al. 2016] enlarges at the very end, and the network only learns a residual over a
nearest-neighbour "anchor" (each LR pixel repeated ``scale**2`` times before the shuffle, as in
ABPN [Du et al., 2021]), which costs nothing at inference and speeds up training.

    x ─ conv3x3(3→C) ─┬─ [conv3x3(C→C) + act] x depth ─(+)─ conv3x3(C→3·s²) ─(+ anchor)─ shuffle
                      └────────────────────────────────┘

With ``unshuffle=u`` > 1 the input is first folded into ``3·u²`` channels at ``1/u`` of the LR
size (pixel unshuffle, as FFDNet [Zhang et al., TIP 2018] and Real-ESRGAN's x2 model do), the
body runs there, and the tail shuffles by ``s·u``: ``u²`` times less work per channel and a
receptive field ``u`` times wider in LR pixels, for inputs that need context more than fine
per-pixel capacity (noise, JPEG). Inputs must then be a multiple of ``u`` (``size_multiple``).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["RepUpNet", "UpNet"]


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
        unshuffle: int = 1,
    ) -> None:
        super().__init__()
        if scale not in (2, 3, 4, 8):
            raise ValueError(f"UpNet: scale must be 2, 3, 4 or 8, got {scale}")
        if in_ch != out_ch:
            raise ValueError("UpNet: the anchor residual needs in_ch == out_ch")
        if act not in ("relu", "prelu", "lrelu"):
            raise ValueError(f"UpNet: act must be relu, prelu or lrelu, got {act!r}")
        if unshuffle not in (1, 2, 4):
            raise ValueError(f"UpNet: unshuffle must be 1, 2 or 4, got {unshuffle}")
        self.scale, self.act, self.unshuffle = scale, act, unshuffle
        self.hparams = {"channels": channels, "depth": depth, "in_ch": in_ch, "out_ch": out_ch,
                        "act": act, "unshuffle": unshuffle}  # constructor arguments but scale
        self.size_multiple = unshuffle
        self.head = nn.Conv2d(in_ch * unshuffle**2, channels, 3, padding=1)
        layers: list[nn.Module] = []
        for _ in range(depth):
            layers.append(self._body_conv(channels))
            if act == "relu":
                layers.append(nn.ReLU(inplace=True))
            elif act == "prelu":
                layers.append(nn.PReLU(channels))
            else:
                layers.append(nn.LeakyReLU(0.05, inplace=True))
        self.body = nn.Sequential(*layers)
        self.tail = nn.Conv2d(channels, out_ch * (scale * unshuffle) ** 2, 3, padding=1)
        # Start as a nearest-neighbour upscaler: the learned residual begins at zero.
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    def _body_conv(self, channels: int) -> nn.Module:
        """One body convolution, ``channels`` in and out (the training form replaces it)."""
        return nn.Conv2d(channels, channels, 3, padding=1)

    @torch.no_grad()
    def grow_from(self, state: dict[str, torch.Tensor]) -> str:
        """Start from a smaller trained UpNet of the same scale and compute the same function.

        Net2Net-style growth [Chen et al., ICLR 2016]: each tensor of ``state`` is copied into
        the leading block of the matching tensor; the weights that would let new channels reach
        old ones (input columns of new channels, and the tail's) are zero, so the new channels
        start random but invisible; body layers beyond the smaller depth start as identity
        convolutions, which pass the previous layer's ReLU output unchanged (so deepening needs
        ``act="relu"``; widening works with every activation). Returns a one-line summary.
        """
        own = self.state_dict()
        old_depth = sum(1 for k in state if k.startswith("body.") and k.endswith(".weight")
                        and state[k].dim() == 4)
        if self.unshuffle != 1:
            raise ValueError("UpNet.grow_from: growing needs unshuffle=1")
        old_ch = state["head.weight"].shape[0]
        new_ch = own["head.weight"].shape[0]
        new_depth = sum(1 for m in self.body if isinstance(m, nn.Conv2d))
        if old_ch > new_ch or old_depth > new_depth or state["tail.weight"].shape[0] != \
                own["tail.weight"].shape[0] or state["head.weight"].shape[1] != \
                own["head.weight"].shape[1]:
            raise ValueError(f"UpNet.grow_from: cannot grow {old_ch} channels x {old_depth} "
                             f"layers into {new_ch} x {new_depth} (scale and colours must match)")
        if new_depth > old_depth and self.act != "relu":
            raise ValueError(f"UpNet.grow_from: adding layers keeps the function only with relu, "
                             f"not {self.act} (an identity layer after {self.act} changes its "
                             "negative part)")
        stride = len(self.body) // new_depth  # modules per layer: conv + activation
        for k, t in own.items():
            if k in state:
                src = state[k]
                if t.dim() == 4:  # conv weight (out, in, 3, 3): zero the new input columns
                    t[:, old_ch:] = 0
                    t[: src.shape[0], : src.shape[1]] = src
                else:
                    t[: src.shape[0]] = src
            elif k.startswith("body."):
                layer = int(k.split(".")[1]) // stride
                if layer >= old_depth and t.dim() == 4:
                    t.zero_()
                    t[range(new_ch), range(new_ch), 1, 1] = 1.0
                elif layer >= old_depth and k.endswith(".bias"):
                    t.zero_()
        self.load_state_dict(own)
        return (f"{old_ch} channels x {old_depth} layers -> {new_ch} x {new_depth} "
                f"(same function at the start)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.unshuffle > 1:
            h = self.head(F.pixel_unshuffle(x, self.unshuffle))
            h = self.body(h) + h
            r = F.pixel_shuffle(self.tail(h), self.scale * self.unshuffle)
            return r + F.interpolate(x, scale_factor=self.scale, mode="nearest")
        h = self.head(x)
        h = self.body(h) + h
        r = self.tail(h)
        anchor = torch.repeat_interleave(x, self.scale * self.scale, dim=1)
        return F.pixel_shuffle(r + anchor, self.scale)


class RepConv3x3(nn.Module):
    """Training form of one 3x3 convolution with ``C`` in and out channels: a 3x3 branch, a 1x1
    branch and a per-channel scaled identity, summed (structural re-parameterisation as in
    RepVGG [Ding et al., CVPR 2021], without batch norm, as in ECBSR [Zhang et al., ACM MM
    2021]). :meth:`folded` gives the single 3x3 kernel and bias that compute exactly the same
    map (zero padding: the 1x1 and identity branches need none), so inference pays for one
    convolution. ``(B, C, H, W)`` in, ``(B, C, H, W)`` out."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv3 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv1 = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(x) + self.conv1(x) + x * self.gamma.view(1, -1, 1, 1)

    @torch.no_grad()
    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(weight (C, C, 3, 3), bias (C,))`` of the equivalent plain 3x3 convolution."""
        w = self.conv3.weight.clone()
        w[:, :, 1, 1] += self.conv1.weight[:, :, 0, 0]
        idx = torch.arange(w.shape[0])
        w[idx, idx, 1, 1] += self.gamma
        return w, self.conv3.bias + self.conv1.bias


class RepUpNet(UpNet):
    """UpNet in re-parameterisable training form: every body convolution is a
    :class:`RepConv3x3` (3x3 + 1x1 + scaled identity); constructor and wiring are UpNet's.
    :meth:`fold` returns the plain :class:`UpNet` with the same hyper-parameters that computes
    the same function, which is the form upres validates, exports and ships (``deploy_arch``);
    training costs about 1.1x the multiply-adds of UpNet, inference nothing extra.

    Input ``(B, in_ch, H, W)`` float in [0, 1]; output ``(B, out_ch, H*scale, W*scale)``.
    """

    deploy_arch = "upnet"

    def _body_conv(self, channels: int) -> nn.Module:
        return RepConv3x3(channels)

    def deploy_hparams(self) -> dict:
        """Constructor arguments (without ``scale``) of the folded :class:`UpNet`."""
        return {k: v for k, v in self.hparams.items() if k != "unshuffle" or v != 1}

    @torch.no_grad()
    def fold(self) -> UpNet:
        """A new plain :class:`UpNet` computing this network's function (float rounding
        aside); this module is left unchanged."""
        plain = UpNet(scale=self.scale, **self.hparams).to(self.head.weight.device)
        plain.head.load_state_dict(self.head.state_dict())
        plain.tail.load_state_dict(self.tail.state_dict())
        for src, dst in zip(self.body, plain.body, strict=True):
            if isinstance(src, RepConv3x3):
                w, b = src.folded()
                dst.weight.copy_(w)
                dst.bias.copy_(b)
            else:
                dst.load_state_dict(src.state_dict())
        return plain.train(self.training)

    @torch.no_grad()
    def grow_from(self, state: dict[str, torch.Tensor]) -> str:
        """Start from a trained plain UpNet (same size or smaller, see :meth:`UpNet.grow_from`)
        with the same function: its 3x3 kernels go to the 3x3 branches, the 1x1 branches and
        identity scales start at zero. Returns a one-line summary."""
        plain = UpNet(scale=self.scale, **self.hparams)
        note = plain.grow_from(state)
        self.head.load_state_dict(plain.head.state_dict())
        self.tail.load_state_dict(plain.tail.state_dict())
        for dst, src in zip(self.body, plain.body, strict=True):
            if isinstance(dst, RepConv3x3):
                dst.conv3.load_state_dict(src.state_dict())
                nn.init.zeros_(dst.conv1.weight)
                nn.init.zeros_(dst.conv1.bias)
                dst.gamma.zero_()
            else:
                dst.load_state_dict(src.state_dict())
        return note + ", re-parameterisable branches at zero"
