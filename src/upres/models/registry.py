"""An explicit registry of architectures: name -> builder, hyper-parameters, state-dict detector.

Adding an architecture is one file in ``archs/`` plus one ``REGISTRY.register(...)`` line below.
Nothing is registered by import side effects elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from upres.errors import UpresError
from upres.models.archs.upnet import UpNet

__all__ = ["REGISTRY", "ArchSpec", "Registry"]

StateDict = Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class ArchSpec:
    """One architecture: how to build it and how to recognise its weights.

    ``detect(state)`` returns the constructor's keyword arguments (``scale`` included) when the
    state dict is this architecture's, else ``None``.
    """

    name: str
    build: Callable[..., nn.Module]
    detect: Callable[[StateDict], dict[str, Any] | None]
    summary: str


class Registry:
    """Name -> :class:`ArchSpec`; rejects duplicate names."""

    def __init__(self) -> None:
        self._specs: dict[str, ArchSpec] = {}

    def register(self, spec: ArchSpec) -> None:
        if spec.name in self._specs:
            raise ValueError(f"architecture {spec.name!r} is already registered")
        self._specs[spec.name] = spec

    def names(self) -> list[str]:
        return sorted(self._specs)

    def get(self, name: str) -> ArchSpec:
        try:
            return self._specs[name]
        except KeyError:
            raise UpresError(
                f"unknown architecture {name!r}; known: {', '.join(self.names())}"
            ) from None

    def build(self, name: str, hparams: Mapping[str, Any]) -> nn.Module:
        spec = self.get(name)
        try:
            return spec.build(**dict(hparams))
        except TypeError as exc:
            raise UpresError(f"architecture {name!r}: bad hyper-parameters ({exc})") from None

    def detect(self, state: StateDict) -> tuple[str, dict[str, Any]]:
        """Find the architecture whose detector accepts ``state``; error lists the keys seen."""
        for spec in self._specs.values():
            hp = spec.detect(state)
            if hp is not None:
                return spec.name, hp
        keys = list(state)
        shown = ", ".join(keys[:8]) + (f", ... ({len(keys)} keys)" if len(keys) > 8 else "")
        raise UpresError(f"weights match no known architecture; keys seen: {shown}")


def _detect_upnet(state: StateDict) -> dict[str, Any] | None:
    need = ("head.weight", "head.bias", "tail.weight", "tail.bias")
    if not all(k in state for k in need):
        return None
    body = sorted({int(k.split(".")[1]) for k in state if k.startswith("body.")})
    convs = [i for i in body if f"body.{i}.weight" in state and state[f"body.{i}.weight"].ndim == 4]
    channels, in_ch = state["head.weight"].shape[:2]
    out = state["tail.weight"].shape[0]
    scale2 = out // in_ch
    scale = round(scale2**0.5)
    if scale * scale * in_ch != out or set(state) - {"head.weight", "head.bias", "tail.weight",
                                                     "tail.bias"} - {
        k for k in state if k.startswith("body.")
    }:
        return None
    act = "prelu" if any(
        state[f"body.{i}.weight"].ndim == 1 for i in body if f"body.{i}.weight" in state
    ) else "relu"
    return {"scale": scale, "channels": int(channels), "depth": len(convs),
            "in_ch": int(in_ch), "out_ch": int(in_ch), "act": act}


REGISTRY = Registry()
REGISTRY.register(ArchSpec(
    "upnet", UpNet, _detect_upnet,
    "plain 3x3 CNN at LR resolution, pixel shuffle, nearest-neighbour anchor (upres's own)",
))
