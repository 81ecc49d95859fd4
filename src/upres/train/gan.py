"""GAN training parts: adversarial losses, a VGG19 feature (perceptual) loss loaded from a file
the user supplies, and :class:`GanTrainer`, the discriminator side of one training step.

All images are ``(B, 3, H, W)`` float tensors in [0, 1]; discriminator outputs are raw logits
of any shape.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from upres.errors import UpresError
from upres.train.config import GanConfig

__all__ = ["ADV_LOSSES", "GanTrainer", "PerceptualLoss", "VGG19Features", "d_loss", "g_loss",
           "vgg19_layer_names"]

ADV_LOSSES = ("vanilla", "lsgan", "hinge", "ragan")


def _bce(x: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(x, torch.full_like(x, target))


def d_loss(kind: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Discriminator loss from its logits on real HR and on generated images.

    ``vanilla``: BCE (Goodfellow et al. 2014); ``lsgan``: least squares to 1/0 (Mao et al.
    2017); ``hinge``: ``relu(1 - real) + relu(1 + fake)`` (Lim & Ye 2017); ``ragan``:
    relativistic average, each side judged against the other's mean (Jolicoeur-Martineau 2019,
    as in ESRGAN).
    """
    if kind == "vanilla":
        return _bce(real, 1.0) + _bce(fake, 0.0)
    if kind == "lsgan":
        return F.mse_loss(real, torch.ones_like(real)) + F.mse_loss(fake, torch.zeros_like(fake))
    if kind == "hinge":
        return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()
    if kind == "ragan":
        return 0.5 * (_bce(real - fake.mean(), 1.0) + _bce(fake - real.mean(), 0.0))
    raise ValueError(f"unknown adversarial loss {kind!r}; choose from {', '.join(ADV_LOSSES)}")


def g_loss(kind: str, fake: torch.Tensor, real: torch.Tensor | None = None) -> torch.Tensor:
    """Generator loss from the discriminator's logits on generated images (and, for ``ragan``,
    its logits on real images, which carry no gradient to the generator)."""
    if kind == "vanilla":
        return _bce(fake, 1.0)
    if kind == "lsgan":
        return F.mse_loss(fake, torch.ones_like(fake))
    if kind == "hinge":
        return -fake.mean()
    if kind == "ragan":
        if real is None:
            raise ValueError("ragan needs the discriminator's logits on real images")
        real = real.detach()
        return 0.5 * (_bce(real - fake.mean(), 0.0) + _bce(fake - real.mean(), 1.0))
    raise ValueError(f"unknown adversarial loss {kind!r}; choose from {', '.join(ADV_LOSSES)}")


# VGG19 "features" (torchvision layout): conv layer names -> index in the Sequential.
_VGG19 = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
          512, 512, 512, 512, "M"]


def vgg19_layer_names() -> dict[str, int]:
    """VGG19's conv layer names (``conv1_1`` ... ``conv5_4``) -> index in torchvision's
    ``features``."""
    names, block, conv, idx = {}, 1, 1, 0
    for v in _VGG19:
        if v == "M":
            block, conv = block + 1, 1
            idx += 1
        else:
            names[f"conv{block}_{conv}"] = idx
            conv += 1
            idx += 2  # conv + relu
    return names


class VGG19Features(nn.Module):
    """VGG19's convolutional part, returning the pre-activation outputs of named layers
    (``conv5_4`` etc., as BasicSR does). Input: RGB in [0, 1], normalised here with the
    ImageNet mean and std. Frozen; weights come from :meth:`from_file`."""

    def __init__(self, layers: Mapping[str, float]) -> None:
        super().__init__()
        names = vgg19_layer_names()
        unknown = [n for n in layers if n not in names]
        if unknown:
            raise ValueError(f"unknown VGG19 layer(s) {unknown}; e.g. conv3_4, conv4_4, conv5_4")
        mods: list[nn.Module] = []
        ch = 3
        for v in _VGG19:
            if v == "M":
                mods.append(nn.MaxPool2d(2, 2))
            else:
                mods += [nn.Conv2d(ch, int(v), 3, padding=1), nn.ReLU(inplace=False)]
                ch = int(v)
        last = max(names[n] for n in layers)
        self.features = nn.Sequential(*mods[: last + 1])
        self.taps = {names[n]: n for n in layers}
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], layers: Mapping[str, float]
                  ) -> VGG19Features:
        """Load ImageNet VGG19 weights in torchvision's key layout (``features.N.weight``; a
        ``.pth`` read with ``weights_only=True`` or a ``.safetensors``)."""
        p = Path(path)
        if not p.is_file():
            raise UpresError(f"{p}: VGG19 weights file not found (perceptual loss)")
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(p))
        else:
            try:
                state = torch.load(p, map_location="cpu", weights_only=True)
            except Exception as exc:
                raise UpresError(f"{p}: cannot read VGG19 weights ({type(exc).__name__})") \
                    from None
            state = state.get("state_dict", state)
        net = cls(layers)
        own = net.features.state_dict()
        feats = {k[k.index("features.") + 9:]: v for k, v in state.items() if "features." in k}
        missing = [k for k in own if k not in feats]
        if missing:
            raise UpresError(f"{p}: not VGG19 features weights (missing {missing[:3]})")
        try:
            net.features.load_state_dict({k: feats[k] for k in own})
        except RuntimeError:
            raise UpresError(f"{p}: VGG19 weights of the wrong shapes") from None
        return net

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = (x - self.mean) / self.std
        out = {}
        for i, m in enumerate(self.features):
            h = m(h)
            if i in self.taps:
                out[self.taps[i]] = h
        return out


class PerceptualLoss(nn.Module):
    """Weighted L1 between VGG19 features of the prediction and the target (Johnson et al.
    2016; ESRGAN's pre-activation variant)."""

    def __init__(self, features: VGG19Features, layers: Mapping[str, float]) -> None:
        super().__init__()
        self.features, self.layers = features, dict(layers)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        fp = self.features(pred)
        with torch.no_grad():
            ft = self.features(target)
        return sum(w * F.l1_loss(fp[n], ft[n]) for n, w in self.layers.items())  # type: ignore[return-value]


class GanTrainer:
    """The adversarial half of a training step: the discriminator, its optimizer, and the
    generator's extra loss terms. Built from ``cfg.gan`` (:class:`~upres.train.config.GanConfig`).
    """

    def __init__(self, gcfg: GanConfig, device: torch.device,
                 amp: torch.dtype | None = None, channels_last: bool = False) -> None:
        from upres.models.discriminators import build_discriminator

        self.cfg = gcfg
        # The discriminator runs under the recipe's autocast too (optim.amp): it is most of a
        # GAN step's cost (on a CPU with AMX, bf16 pays off only in channels_last: measured 4x
        # faster than fp32, and 2x slower than fp32 in the default layout). Its weights,
        # optimizer and losses stay fp32.
        self._amp = amp
        self._device_type = torch.device(device).type
        self._fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.adversarial = gcfg.weight > 0
        self.d = build_discriminator(gcfg.discriminator, gcfg.d_params).to(
            device, memory_format=self._fmt)
        self.d_net: nn.Module = self.d  # DistributedDataParallel(self.d) under torchrun
        self.d_opt = torch.optim.Adam(self.d.parameters(), lr=gcfg.d_lr,
                                      betas=tuple(gcfg.d_betas))
        self.perceptual = None
        if gcfg.perceptual_weight > 0:
            feats = VGG19Features.from_file(gcfg.perceptual_weights, gcfg.perceptual_layers)
            self.perceptual = PerceptualLoss(feats.to(device), gcfg.perceptual_layers)

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self._device_type, enabled=self._amp is not None,
                              dtype=self._amp or torch.bfloat16)

    def active(self, step: int) -> bool:
        """Whether the discriminator judges at this step (after ``d_start`` warm-up steps)."""
        return self.adversarial and step >= self.cfg.d_start

    def generator_terms(self, pred: torch.Tensor, hr: torch.Tensor, step: int
                        ) -> dict[str, torch.Tensor]:
        """Extra generator losses (already weighted): ``adv`` and/or ``percep``."""
        terms = {}
        if self.perceptual is not None:
            terms["percep"] = self.cfg.perceptual_weight * self.perceptual(pred, hr)
        if self.active(step):
            self.d.requires_grad_(False)
            with self._autocast():
                fake = self.d(pred.contiguous(memory_format=self._fmt)).float()
                real = (self.d(hr.contiguous(memory_format=self._fmt)).float()
                        if self.cfg.loss == "ragan" else None)
            terms["adv"] = self.cfg.weight * g_loss(self.cfg.loss, fake, real)
            self.d.requires_grad_(True)
        return terms

    def discriminator_step(self, pred: torch.Tensor, hr: torch.Tensor, lr_scale: float,
                           step: int) -> dict[str, float]:
        """One update of the discriminator on ``hr`` (real) and ``pred`` (detached, fake);
        ``lr_scale`` follows the generator's schedule. Returns logged values."""
        if not self.active(step):
            return {}
        for g in self.d_opt.param_groups:
            g["lr"] = self.cfg.d_lr * lr_scale
        with self._autocast():  # one pass: one DDP reduction
            both = torch.cat([hr, pred.detach()]).contiguous(memory_format=self._fmt)
            logits = self.d_net(both).float()
        real, fake = logits[: hr.shape[0]], logits[hr.shape[0]:]
        loss = d_loss(self.cfg.loss, real, fake)
        self.d_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.d_opt.step()
        return {"d_loss": loss.item(), "d_real": real.detach().mean().item(),
                "d_fake": fake.detach().mean().item()}

    def state_dict(self) -> dict:
        return {"d": self.d.state_dict(), "d_opt": self.d_opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.d.load_state_dict(state["d"])
        self.d_opt.load_state_dict(state["d_opt"])
