"""An explicit registry of architectures: name -> builder, hyper-parameters, state-dict detector.

Adding an architecture is one file in ``archs/`` plus one ``REGISTRY.register(...)`` entry in
``_register_all`` below. Nothing is registered by import side effects elsewhere.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from upres.errors import UpresError
from upres.models.archs.carn import CARNM
from upres.models.archs.edsr import EDSR
from upres.models.archs.espcn import ESPCN
from upres.models.archs.fsrcnn import FSRCNN
from upres.models.archs.imdn import IMDN
from upres.models.archs.rfdn import RFDN
from upres.models.archs.rrdbnet import RRDBNet
from upres.models.archs.safmn import SAFMN
from upres.models.archs.span import SPAN
from upres.models.archs.srcnn import SRCNN, VDSR
from upres.models.archs.srresnet import SRResNet
from upres.models.archs.srvgg import SRVGGNetCompact
from upres.models.archs.swinir import SwinIR
from upres.models.archs.upnet import RepUpNet, UpNet

__all__ = ["REGISTRY", "ArchSpec", "Detected", "Registry"]

StateDict = Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class Detected:
    """What a detector learned from a state dict.

    ``hparams``: constructor keyword arguments, without ``scale``. ``scales``: the scales the
    weights can run at (one for most; CARN-M holds three; FSRCNN's weights do not record theirs,
    so any of 2, 3, 4 is possible and the caller must say which). ``color``: ``"rgb"`` or ``"y"``
    (the model sees the luma only); ``value_range``: 1.0 for inputs in [0, 1], 255.0 for
    [0, 255]; ``min_size``: smallest input side the network accepts (smaller inputs are padded).
    """

    hparams: dict[str, Any]
    scales: tuple[int, ...]
    color: str = "rgb"
    value_range: float = 1.0
    min_size: int = 1
    size_multiple: int = 1
    pre_upsample: bool = False
    note: str = ""
    drop: tuple[str, ...] = ()  # key suffixes the file carries that the module does not hold

    def conventions(self) -> dict[str, Any]:
        """The card fields this detection fixes."""
        return {"color": self.color, "value_range": self.value_range,
                "min_size": self.min_size, "size_multiple": self.size_multiple,
                "pre_upsample": self.pre_upsample}


@dataclass(frozen=True)
class ArchSpec:
    """One architecture: how to build it and how to recognise its weights.

    ``detect(state)`` returns a :class:`Detected` when the state dict is this architecture's,
    else ``None``. ``defaults`` holds the conventions of weights that upres trains itself.
    ``channels_last_cpu``: run in channels_last memory format on CPU by default (set only where
    it was measured faster: ``benchmarks/bench_inference.py`` or ``upres bench
    --channels-last``; ``precision="auto"`` measures it again per machine).
    ``tile_exact``: the network's receptive field is bounded, so tiles with enough overlap give
    exactly the untiled result. False for networks with image-size-dependent pooling (RFDN's
    attention, SAFMN's modulation): they run whole images unless memory forbids it.
    ``onnx``: ``upres export --format onnx`` can write it with dynamic height and width (False
    where torch's exporter fixes input-size-dependent parts of the graph at the traced size:
    SAFMN's adaptive pooling, SwinIR's window partition and shift mask).
    """

    name: str
    build: Callable[..., nn.Module]
    detect: Callable[[StateDict], Detected | None]
    summary: str
    defaults: dict[str, Any] = field(default_factory=dict)
    tile_exact: bool = True
    channels_last_cpu: bool = False  # measured faster on CPU in channels_last memory format
    onnx: bool = True


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

    def detect(self, state: StateDict) -> tuple[str, Detected]:
        """Find the architecture whose detector accepts ``state``; error lists the keys seen."""
        for spec in self._specs.values():
            found = spec.detect(state)
            if found is not None:
                return spec.name, found
        keys = list(state)
        shown = ", ".join(keys[:8]) + (f", ... ({len(keys)} keys)" if len(keys) > 8 else "")
        raise UpresError(f"weights match no known architecture; keys seen: {shown}")


# -- detectors ---------------------------------------------------------------------------------
def _count(state: StateDict, pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in state if (m := rx.match(k))})


def _shuffle_scale(out_channels: int, colours: int) -> int | None:
    s = round((out_channels / colours) ** 0.5)
    return s if s >= 2 and s * s * colours == out_channels else None


def _detect_upnet(state: StateDict, *, rep: bool = False) -> Detected | None:
    fixed = {"head.weight", "head.bias", "tail.weight", "tail.bias"}
    body = re.compile(r"body\.\d+\.(conv3\.weight|conv3\.bias|conv1\.weight|conv1\.bias|gamma|"
                      r"weight)$" if rep else r"body\.\d+\.(weight|bias)$")
    if not fixed <= set(state) or any(k not in fixed and not body.match(k) for k in state):
        return None
    if rep != any(k.endswith(".gamma") for k in state):
        return None
    conv = ".conv3.weight" if rep else ".weight"
    convs = [k for k in state if k.startswith("body.") and k.endswith(conv)
             and state[k].ndim == 4]
    prelu = any(k.startswith("body.") and state[k].ndim == 1 and k.endswith(".weight")
                for k in state)
    channels, head_in = (int(v) for v in state["head.weight"].shape[:2])
    # unshuffle u folds 3 colours into 3u^2 head inputs; 1- and 3-colour nets are plain
    u = next((u for u in (2, 4) if head_in == 3 * u * u), 1)
    in_ch = head_in // (u * u)
    scale = _shuffle_scale(state["tail.weight"].shape[0], in_ch * u * u)
    if scale is None:
        return None
    hp = {"channels": channels, "depth": len(convs), "in_ch": in_ch, "out_ch": in_ch,
          "act": "prelu" if prelu else "relu"}
    if u > 1:
        hp["unshuffle"] = u
    return Detected(hp, (scale,), size_multiple=u)


def _detect_upnet_rep(state: StateDict) -> Detected | None:
    return _detect_upnet(state, rep=True)


def _detect_imdn(state: StateDict) -> Detected | None:
    if not {"fea_conv.weight", "IMDB1.c1.weight", "LR_conv.weight", "upsampler.0.weight"} <= set(
            state):
        return None
    channels, in_ch = state["fea_conv.weight"].shape[:2]
    scale = _shuffle_scale(state["upsampler.0.weight"].shape[0], 3)
    if scale is None:
        return None
    return Detected({"channels": int(channels), "blocks": _count(state, r"IMDB(\d+)\.c1\.weight"),
                     "in_ch": int(in_ch)}, (scale,))


def _detect_rfdn(state: StateDict) -> Detected | None:
    if not {"fea_conv.weight", "B1.c1_d.weight", "LR_conv.weight", "upsampler.0.weight"} <= set(
            state):
        return None
    channels, in_ch = state["fea_conv.weight"].shape[:2]
    blocks = _count(state, r"B(\d+)\.c1_d\.weight")
    scale = _shuffle_scale(state["upsampler.0.weight"].shape[0], 3)
    if scale is None:
        return None
    # The AIM 2020 challenge release (50 channels, 4 blocks) was trained on [0, 255] inputs;
    # the keys cannot tell, so this layout is taken to be that release.
    aim = int(channels) == 50 and blocks == 4
    return Detected({"channels": int(channels), "blocks": blocks, "in_ch": int(in_ch)}, (scale,),
                    value_range=255.0 if aim else 1.0, min_size=15,
                    note="RFDN AIM 2020 layout: inputs in [0, 255]" if aim else "")


def _detect_carnm(state: StateDict) -> Detected | None:
    if not {"entry.weight", "sub_mean.shifter.weight", "b1.b1.body.0.weight"} <= set(state):
        return None
    channels = int(state["entry.weight"].shape[0])
    groups = channels // int(state["b1.b1.body.0.weight"].shape[1])
    hp = {"channels": channels, "groups": groups}
    if "upsample.up2.body.0.weight" in state:
        return Detected({**hp, "multi_scale": True}, (2, 3, 4))
    first = state.get("upsample.up.body.0.weight")
    if first is None:
        return None
    if first.shape[0] == 9 * channels:
        scale = 3
    else:
        scale = 4 if "upsample.up.body.3.weight" in state else 2
    return Detected({**hp, "multi_scale": False}, (scale,))


def _detect_fsrcnn(state: StateDict) -> Detected | None:
    if not {"first_part.0.weight", "mid_part.0.weight", "last_part.weight"} <= set(state):
        return None
    d, in_ch = state["first_part.0.weight"].shape[:2]
    s = state["mid_part.0.weight"].shape[0]
    m = sum(1 for k, v in state.items() if k.startswith("mid_part.") and v.ndim == 4
            and v.shape[-1] == 3)
    return Detected({"d": int(d), "s": int(s), "m": m, "in_ch": int(in_ch)}, (2, 3, 4),
                    color="y" if int(in_ch) == 1 else "rgb",
                    note="FSRCNN weights do not record their scale")


def _detect_srvgg(state: StateDict) -> Detected | None:
    if "body.0.weight" not in state or any(not k.startswith("body.") for k in state):
        return None
    convs = sorted((int(k.split(".")[1]) for k in state
                    if k.endswith(".weight") and state[k].ndim == 4), key=int)
    if len(convs) < 2 or convs[0] != 0:
        return None
    num_feat, in_ch = state["body.0.weight"].shape[:2]
    last = state[f"body.{convs[-1]}.weight"]
    scale = _shuffle_scale(last.shape[0], int(in_ch))
    if scale is None:
        return None
    prelu = "body.1.weight" in state
    return Detected({"num_feat": int(num_feat), "num_conv": len(convs) - 2,
                     "act": "prelu" if prelu else "lrelu", "in_ch": int(in_ch),
                     "out_ch": int(in_ch)}, (scale,))


def _detect_srresnet(state: StateDict) -> Detected | None:
    if "block1.0.weight" not in state or "block2.conv1.weight" not in state:
        return None
    channels = int(state["block1.0.weight"].shape[0])
    blocks = _count(state, r"block(\d+)\.conv1\.weight")
    ups = _count(state, rf"block{blocks + 3}\.(\d+)\.conv\.weight")
    if ups == 0:
        return None
    return Detected({"channels": channels, "blocks": blocks}, (2**ups,))


def _detect_espcn(state: StateDict) -> Detected | None:
    if set(state) != {f"conv{i}.{p}" for i in (1, 2, 3) for p in ("weight", "bias")}:
        return None
    f1, in_ch, k1 = state["conv1.weight"].shape[:3]
    if k1 != 5 or state["conv2.weight"].shape[-1] != 3:
        return None
    scale = _shuffle_scale(state["conv3.weight"].shape[0], int(in_ch))
    if scale is None:
        return None
    return Detected({"f1": int(f1), "f2": int(state["conv2.weight"].shape[0]),
                     "in_ch": int(in_ch)}, (scale,), color="y" if in_ch == 1 else "rgb")


def _detect_srcnn(state: StateDict) -> Detected | None:
    if set(state) != {f"conv{i}.{p}" for i in (1, 2, 3) for p in ("weight", "bias")}:
        return None
    w1, w2, w3 = (state[f"conv{i}.weight"] for i in (1, 2, 3))
    if w3.shape[0] != w1.shape[1]:
        return None
    in_ch = int(w1.shape[1])
    return Detected({"f1": int(w1.shape[0]), "f2": int(w2.shape[0]), "k1": int(w1.shape[-1]),
                     "k2": int(w2.shape[-1]), "k3": int(w3.shape[-1]), "in_ch": in_ch},
                    (2, 3, 4), color="y" if in_ch == 1 else "rgb", pre_upsample=True,
                    note="SRCNN weights do not record their scale")


def _detect_vdsr(state: StateDict) -> Detected | None:
    if not {"input.weight", "output.weight", "residual_layer.0.conv.weight"} <= set(state):
        return None
    channels, in_ch = state["input.weight"].shape[:2]
    depth = _count(state, r"residual_layer\.(\d+)\.conv\.weight") + 2
    return Detected({"channels": int(channels), "depth": depth, "in_ch": int(in_ch)}, (2, 3, 4),
                    color="y" if in_ch == 1 else "rgb", pre_upsample=True,
                    note="VDSR weights do not record their scale")


def _detect_edsr(state: StateDict) -> Detected | None:
    if not {"sub_mean.weight", "head.0.weight", "tail.1.weight"} <= set(state):
        return None
    channels = int(state["head.0.weight"].shape[0])
    blocks = _count(state, r"body\.(\d+)\.body\.0\.weight")
    stages = _count(state, r"tail\.0\.(\d+)\.weight")
    scale = 3 if state["tail.0.0.weight"].shape[0] == 9 * channels else 2**stages
    res_scale = 0.1 if channels >= 256 else 1.0  # the paper's two configurations
    return Detected({"channels": channels, "blocks": blocks, "res_scale": res_scale}, (scale,),
                    value_range=255.0)


def _detect_rrdbnet(state: StateDict) -> Detected | None:
    if not {"conv_first.weight", "body.0.rdb1.conv1.weight", "conv_up1.weight",
            "conv_last.weight"} <= set(state):
        return None
    num_feat, cin = state["conv_first.weight"].shape[:2]
    out_ch = int(state["conv_last.weight"].shape[0])
    fold = round((int(cin) / out_ch) ** 0.5)
    scale = {1: 4, 2: 2, 4: 1}.get(fold)
    if scale is None:
        return None
    return Detected({"num_feat": int(num_feat), "num_block": _count(state, r"body\.(\d+)\.rdb1"),
                     "num_grow_ch": int(state["body.0.rdb1.conv1.weight"].shape[0]),
                     "in_ch": out_ch, "out_ch": out_ch}, (scale,), size_multiple=fold)


def _detect_span(state: StateDict) -> Detected | None:
    if not {"conv_1.sk.weight", "block_1.c1_r.sk.weight", "conv_cat.weight",
            "upsampler.0.weight"} <= set(state):
        return None
    scale = _shuffle_scale(state["upsampler.0.weight"].shape[0], 3)
    if scale is None:
        return None
    return Detected({"channels": int(state["conv_1.sk.weight"].shape[0]),
                     "blocks": _count(state, r"block_(\d+)\.c1_r\.sk\.weight")}, (scale,))


def _detect_swinir(state: StateDict) -> Detected | None:
    if not {"conv_first.weight", "patch_embed.norm.weight", "conv_after_body.weight",
            "upsample.0.weight"} <= set(state):
        return None
    dim = int(state["conv_first.weight"].shape[0])
    layers = _count(state, r"layers\.(\d+)\.residual_group")
    depths = list(_count(state, rf"layers\.{i}\.residual_group\.blocks\.(\d+)\.norm1")
                   for i in range(layers))
    table = state["layers.0.residual_group.blocks.0.attn.relative_position_bias_table"]
    heads = list(int(state[f"layers.{i}.residual_group.blocks.0.attn."
                            "relative_position_bias_table"].shape[1]) for i in range(layers))
    ws = (round(table.shape[0] ** 0.5) + 1) // 2
    hidden = int(state["layers.0.residual_group.blocks.0.mlp.fc1.weight"].shape[0])
    scale = _shuffle_scale(state["upsample.0.weight"].shape[0], 3)
    if scale is None:
        return None
    return Detected({"embed_dim": dim, "depths": depths, "num_heads": heads, "window_size": ws,
                     "mlp_ratio": hidden / dim}, (scale,), size_multiple=ws,
                    drop=(".attn_mask",))


def _detect_safmn(state: StateDict) -> Detected | None:
    if not {"to_feat.weight", "feats.0.safm.aggr.weight", "to_img.0.weight"} <= set(state):
        return None
    dim = int(state["to_feat.weight"].shape[0])
    scale = _shuffle_scale(state["to_img.0.weight"].shape[0], 3)
    if scale is None:
        return None
    hidden = int(state["feats.0.ccm.ccm.0.weight"].shape[0])
    variant = "ntire2023" if "norm.gamma" in state else "paper"
    return Detected({"dim": dim, "n_blocks": _count(state, r"feats\.(\d+)\.safm\.aggr\.weight"),
                     "ffn_scale": hidden / dim, "variant": variant}, (scale,))


def _register_all(reg: Registry) -> None:
    reg.register(ArchSpec(
        "upnet", UpNet, _detect_upnet,
        "plain 3x3 CNN at LR resolution, pixel shuffle, nearest-neighbour anchor (upres's own)",
        channels_last_cpu=True))
    reg.register(ArchSpec(
        "upnet_rep", RepUpNet, _detect_upnet_rep,
        "UpNet in training form: 3x3 + 1x1 + identity branches per layer, folded into plain "
        "UpNet for validation, export and inference (upres's own; RepVGG/ECBSR-style)"))
    # IMDN and RFDN: channels_last measured faster on a Zen 4 EPYC at x2 and x4, 1280x720 out
    # (session 17, `upres bench ... --channels-last` / `--no-channels-last`, docs/ladder.md)
    reg.register(ArchSpec("imdn", IMDN, _detect_imdn,
                          "information multi-distillation network (Hui et al., ACM MM 2019)",
                          channels_last_cpu=True))
    reg.register(ArchSpec("rfdn", RFDN, _detect_rfdn,
                          "residual feature distillation network (Liu et al., ECCVW 2020)",
                          defaults={"min_size": 15}, tile_exact=False, channels_last_cpu=True))
    reg.register(ArchSpec("carn_m", CARNM, _detect_carnm,
                          "cascading residual network, mobile (Ahn et al., ECCV 2018)"))
    reg.register(ArchSpec("fsrcnn", FSRCNN, _detect_fsrcnn,
                          "fast SRCNN on the luma channel (Dong et al., ECCV 2016)",
                          defaults={"color": "y"}))
    reg.register(ArchSpec("srvgg", SRVGGNetCompact, _detect_srvgg,
                          "compact VGG-style generator of Real-ESRGAN (Wang et al., ICCVW 2021)"))
    reg.register(ArchSpec("srresnet", SRResNet, _detect_srresnet,
                          "SRResNet / SRGAN generator (Ledig et al., CVPR 2017)"))
    reg.register(ArchSpec("espcn", ESPCN, _detect_espcn,
                          "efficient sub-pixel CNN (Shi et al., CVPR 2016)"))
    reg.register(ArchSpec("srcnn", SRCNN, _detect_srcnn,
                          "SRCNN 9-5-5 on the bicubic-enlarged image (Dong et al., TPAMI 2016)",
                          defaults={"pre_upsample": True}))
    reg.register(ArchSpec("vdsr", VDSR, _detect_vdsr,
                          "very deep residual CNN on the bicubic-enlarged luma (Kim et al., "
                          "CVPR 2016)", defaults={"pre_upsample": True, "color": "y"}))
    reg.register(ArchSpec("edsr", EDSR, _detect_edsr,
                          "enhanced deep residual network (Lim et al., CVPRW 2017)",
                          defaults={"value_range": 255.0}))
    reg.register(ArchSpec("rrdbnet", RRDBNet, _detect_rrdbnet,
                          "ESRGAN generator, residual-in-residual dense blocks (Wang et al., "
                          "ECCVW 2018)"))
    reg.register(ArchSpec("span", SPAN, _detect_span,
                          "swift parameter-free attention network, re-parameterisable "
                          "(Wan et al., CVPRW 2024)"))
    reg.register(ArchSpec("safmn", SAFMN, _detect_safmn,
                          "spatially-adaptive feature modulation network (Sun et al., "
                          "ICCV 2023)", tile_exact=False,
                          # adaptive max pooling to (H // k, W // k): no dynamic-size ONNX form
                          onnx=False))
    reg.register(ArchSpec("swinir", SwinIR, _detect_swinir,
                          "Swin Transformer restoration network, lightweight SR configuration "
                          "(Liang et al., ICCVW 2021)",
                          # window partition and shift mask are traced at one size
                          onnx=False))


REGISTRY = Registry()
_register_all(REGISTRY)
