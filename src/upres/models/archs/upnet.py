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
        self.size_multiple = unshuffle
        self.head = nn.Conv2d(in_ch * unshuffle**2, channels, 3, padding=1)
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
        self.tail = nn.Conv2d(channels, out_ch * (scale * unshuffle) ** 2, 3, padding=1)
        # Start as a nearest-neighbour upscaler: the learned residual begins at zero.
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

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
