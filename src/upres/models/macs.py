"""Size of a network: parameters of its inference form and multiply-adds per output frame.

MACs are counted by ``torch.utils.flop_counter`` (convolutions and matrix products; element-wise
operations are not counted) on the meta device, so nothing is computed and large networks cost
nothing to measure.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from upres.models.registry import REGISTRY

__all__ = ["OUT_720P", "count_macs", "inference_params"]

OUT_720P = (1280, 720)  # (width, height) of the output frame the ladder is measured at


def inference_params(m: torch.nn.Module) -> int:
    """Parameters of the inference form: a re-parameterisable block counts its folded conv."""
    if hasattr(m, "eval_conv"):
        return sum(p.numel() for p in m.eval_conv.parameters())
    own = sum(p.numel() for p in m.parameters(recurse=False))
    return own + sum(inference_params(c) for c in m.children())


def count_macs(arch: str, hparams: dict[str, Any], scale: int,
               out: tuple[int, int] = OUT_720P) -> tuple[int, float]:
    """``(inference parameters, GMACs)`` of ``arch`` with ``hparams`` at ``scale`` for one
    ``out = (width, height)`` output frame (pre-upsampling networks see the output size; others
    ``out / scale``)."""
    spec = REGISTRY.get(arch)
    hp = {**hparams, "scale": scale}
    with torch.device("meta"):
        m = REGISTRY.build(arch, hp).eval()
        pre = spec.defaults.get("pre_upsample", False)
        c = 1 if spec.defaults.get("color") == "y" or hp.get("in_ch") == 1 else 3
        w, h = out if pre else (out[0] // scale, out[1] // scale)
        x = torch.empty(1, c, h, w)
        with FlopCounterMode(display=False) as fc, torch.no_grad():
            m(x)
    return inference_params(m), fc.get_total_flops() / 2e9
