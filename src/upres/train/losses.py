"""Pixel losses on ``(B, C, H, W)`` float tensors in [0, 1]; each returns a scalar mean."""

from __future__ import annotations

import torch
from torch.nn import functional as F

__all__ = ["charbonnier", "make_loss"]


def charbonnier(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Mean of ``sqrt((pred - target)^2 + eps^2)``: a smooth L1."""
    return torch.sqrt((pred - target) ** 2 + eps * eps).mean()


def make_loss(name: str):
    """``l1`` | ``mse`` | ``charbonnier`` -> ``f(pred, target) -> scalar tensor``."""
    table = {"l1": F.l1_loss, "mse": F.mse_loss, "charbonnier": charbonnier}
    if name not in table:
        raise ValueError(f"unknown loss {name!r}; choose from {', '.join(table)}")
    return table[name]
