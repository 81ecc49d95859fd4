"""Training recipes: YAML -> frozen, validated dataclasses, once.

An unknown or mistyped key is an error naming it; ``--set a.b=c`` overrides are applied to the
YAML mapping before validation, so the frozen result is never mutated.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from upres.errors import UpresError, one_line

__all__ = ["DataConfig", "GanConfig", "ModelConfig", "OptimConfig", "QatConfig", "TrainConfig",
           "apply_overrides", "load_config"]


@dataclass(frozen=True)
class ModelConfig:
    arch: str = "upnet"
    params: dict[str, Any] = field(default_factory=dict)  # constructor kwargs except scale
    init: str | None = None  # weights to start from (tensors whose shapes match are copied)
    # "match": copy the tensors whose names and shapes match; "grow": the architecture's own
    # function-preserving widening/deepening from a smaller model (UpNet.grow_from)
    init_mode: str = "match"
    # photo models (issue 22): the clean endpoint's weights (strength 0, frozen); each batch of
    # one damage level t (data.degradation: leveled, data.variants > 0) trains the network whose
    # weights are (1 - t) * base + t * these, so every strength between the two is trained
    denoise_base: str | None = None


@dataclass(frozen=True)
class DataConfig:
    train: tuple[str, ...] = ("../shared/data/train",)
    train_lr: tuple[str, ...] = ()  # paired LR folders, one per train folder (default: bicubic)
    degradation: str = "bicubic"  # bicubic (MATLAB, the classic task) | second_order (blind)
    #                              | photo_mix (half second_order, half one everyday pass)
    #                              | leveled (damage growing with a level, for photo models)
    #                              | leveled_single (leveled, half its everyday passes one
    #                                kind of damage alone)
    # blind only: 0 degrades each HR patch on its own; N > 0 degrades whole images into N seeded
    # versions each (made once, kept in memory) and cuts patches from them, as test sets are made
    variants: int = 0
    # with model.denoise_base: batches drawn only from the versions of level in [min_level,
    # max_level] (default every level), e.g. min_level 0.75 for a stage that trains the
    # strengths the blind kind mostly takes
    min_level: float = 0.0
    max_level: float = 1.0
    # extra copies of every HR image shrunk by these factors (0 < f < 1), e.g. [0.9, 0.8, 0.7, 0.6]
    rescale: tuple[float, ...] = ()
    val: tuple[str, ...] = ("../shared/data/benchmark/Set5",)
    patch: int = 48  # LR patch side
    batch: int = 16


@dataclass(frozen=True)
class OptimConfig:
    steps: int = 10000
    # l1 | mse | charbonnier | fft | log_mse | log_mse_y, or a sum {l1: 1.0, fft: 0.05}
    loss: Any = "l1"
    optimizer: str = "adam"  # adam | adamw | sgd | rmsprop
    lr: float = 1e-3
    min_lr: float = 1e-6
    weight_decay: float = 0.0
    momentum: float = 0.9
    schedule: str = "cosine"  # cosine | multistep | constant
    milestones: tuple[int, ...] = ()  # multistep: steps where the rate is multiplied by gamma
    gamma: float = 0.5
    warmup: int = 0
    # cosine: a warm restart at this step (0: none): from it the rate starts again at ``lr`` and
    # anneals to ``min_lr`` at ``steps`` (a second cycle for a run that already annealed once)
    restart: int = 0
    grad_clip: float = 0.0
    ema: float = 0.0  # decay of the exponential moving average of the weights (0: off)
    amp: str = "none"  # none | bf16 | fp16 (autocast; fp16 on CUDA only)
    channels_last: bool = False


@dataclass(frozen=True)
class GanConfig:
    """Adversarial and perceptual training (off unless ``weight`` or ``perceptual_weight`` > 0).

    The generator's loss is ``optim.loss + weight * adversarial + perceptual_weight *
    perceptual``; the discriminator has its own Adam optimizer (``d_lr``, ``d_betas``, the
    generator's schedule shape) and starts judging after ``d_start`` generator-only steps.
    With ``model.denoise_base`` (every clean-up strength trained), ``level_power`` p scales the
    adversarial and perceptual terms of a batch of level ``t`` by ``t ** p``: texture where
    the damage is heavy, plain fidelity near clean (0: the same weight at every level).
    """

    weight: float = 0.0
    loss: str = "vanilla"  # vanilla | lsgan | hinge | ragan (relativistic average)
    discriminator: str = "unet_sn"  # unet_sn | vgg_patch
    d_params: dict[str, Any] = field(default_factory=dict)
    d_lr: float = 1e-4
    d_betas: tuple[float, ...] = (0.9, 0.99)
    d_start: int = 0
    perceptual_weight: float = 0.0
    perceptual_weights: str | None = None  # VGG19 weights file, torchvision key layout
    perceptual_layers: dict[str, float] = field(default_factory=lambda: {"conv5_4": 1.0})
    level_power: float = 0.0


@dataclass(frozen=True)
class QatConfig:
    """Quantisation-aware fine-tuning (:mod:`upres.train.qat`; off unless ``enabled``): the
    int8 graph's rounding simulated in the forward pass, for a plain UpNet with ReLU."""

    enabled: bool = False
    # the last convolution rounded too, so that the int8 graph can quantise it within the
    # 0.05 dB rule (upres.quantize reads this from the card's recipe and tries that graph
    # equalised as well)
    tail: bool = False
    # activation ranges simulated at this percentile; upres.quantize makes the int8 graph at its
    # PERCENTILE (99.999), so another value trains for ranges the graph will not use
    percentile: float = 99.999
    recalibrate: int = 250  # steps between measurements of the ranges


@dataclass(frozen=True)
class TrainConfig:
    name: str
    scale: int
    seed: int = 0
    threads: int = 0  # 0: torch's default
    device: str = "auto"  # auto (CUDA, then CPU) | cpu | cuda
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    gan: GanConfig = field(default_factory=GanConfig)
    qat: QatConfig = field(default_factory=QatConfig)
    log_every: int = 100
    val_every: int = 1000
    ckpt_every: int = 500

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _convert(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        return _convert(value, next(a for a in args if a is not type(None)), key)
    if origin is tuple:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple):
            raise UpresError(f"config key {key!r}: expected a list, got {value!r}")
        return tuple(_convert(v, typing.get_args(tp)[0], key) for v in value)
    if origin is dict:
        if not isinstance(value, dict):
            raise UpresError(f"config key {key!r}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:  # PyYAML reads "1e-5" (no dot) as a string
            return float(value)
        except ValueError:
            pass
    if tp is Any:
        return value
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise UpresError(f"config key {key!r}: expected {tp.__name__}, got {value!r}")
    return value


def _build(cls: Any, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise UpresError(f"config key {prefix or '<root>'!r}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for k in data:
        if k not in names:
            where = f"{prefix}.{k}" if prefix else k
            raise UpresError(f"unknown config key {where!r}; allowed: {', '.join(sorted(names))}")
    kwargs = {k: _convert(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise UpresError(f"config {prefix or '<root>'}: {exc}") from None


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with ``a.b=c`` overrides applied (values parsed as YAML)."""
    import copy

    out = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise UpresError(f"override {item!r} must look like key.sub=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise UpresError(f"override {item!r}: {p!r} is not a section")
        try:
            node[parts[-1]] = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            why = " ".join(str(getattr(exc, "problem", None) or exc).split())
            raise UpresError(f"override {item!r}: not a YAML value ({why})") from None
    return out


def _validate(cfg: TrainConfig) -> None:
    from upres.data.degrade import DEGRADATIONS

    names = ("bicubic", *DEGRADATIONS)
    if cfg.data.degradation not in names:
        raise UpresError(f"config key 'data.degradation': {', '.join(names[:-1])} or "
                         f"{names[-1]}, got {cfg.data.degradation!r}")
    if cfg.data.variants < 0 or (cfg.data.variants and cfg.data.degradation == "bicubic"):
        raise UpresError(f"config key 'data.variants': a count >= 0, and only with a blind "
                         f"degradation, got {cfg.data.variants} with {cfg.data.degradation}")
    lo, hi = cfg.data.min_level, cfg.data.max_level
    for key, value in (("min_level", lo), ("max_level", hi)):
        if not 0.0 <= value <= 1.0 or ((lo, hi) != (0.0, 1.0) and not cfg.model.denoise_base):
            raise UpresError(f"config key 'data.{key}': a level in [0, 1], and only with "
                             f"model.denoise_base (batches of one level), got {value}")
    if cfg.data.variants and not any(lo - 1e-9 <= (v + 1) / cfg.data.variants <= hi + 1e-9
                                     for v in range(cfg.data.variants)):
        raise UpresError(f"config key 'data.max_level': no version's level (v + 1) / "
                         f"{cfg.data.variants} lies in [{lo}, {hi}]")
    from upres.data.datasets import check_rescale  # the sampler's own rule, checked early

    try:
        check_rescale(cfg.data.rescale, paired=bool(cfg.data.train_lr))
    except UpresError as exc:
        raise UpresError(f"config key 'data.rescale': {exc}") from None
    if cfg.device not in ("auto", "cpu", "cuda"):
        raise UpresError(f"config key 'device': must be auto, cpu or cuda, got {cfg.device!r}")
    if cfg.scale not in (2, 3, 4, 8):
        raise UpresError(f"config key 'scale': must be 2, 3, 4 or 8, got {cfg.scale}")
    from upres.train.losses import make_loss

    try:
        make_loss(cfg.optim.loss)
    except (ValueError, TypeError, AttributeError) as exc:
        raise UpresError(f"config key 'optim.loss': {exc}") from None
    if not 0.0 <= cfg.optim.ema < 1.0:
        raise UpresError(f"config key 'optim.ema': must be in [0, 1), got {cfg.optim.ema}")
    if cfg.optim.amp not in ("none", "bf16", "fp16"):
        raise UpresError(f"config key 'optim.amp': must be none, bf16 or fp16, got "
                         f"{cfg.optim.amp!r}")
    if cfg.optim.optimizer not in ("adam", "adamw", "sgd", "rmsprop"):
        raise UpresError(f"config key 'optim.optimizer': unknown optimizer "
                         f"{cfg.optim.optimizer!r}")
    if cfg.optim.schedule not in ("cosine", "multistep", "constant"):
        raise UpresError(f"config key 'optim.schedule': unknown schedule {cfg.optim.schedule!r}")
    if cfg.optim.restart and not (cfg.optim.schedule == "cosine"
                                  and cfg.optim.warmup <= cfg.optim.restart < cfg.optim.steps
                                  and cfg.optim.restart > 0):
        raise UpresError(f"config key 'optim.restart': a cosine restart must lie between the "
                         f"warm-up's end ({cfg.optim.warmup}) and optim.steps "
                         f"({cfg.optim.steps}), got {cfg.optim.restart}")
    _check_numbers(cfg)
    o, g = cfg.optim, cfg.gan
    if o.min_lr > o.lr:
        raise UpresError(f"config key 'optim.min_lr': must not exceed optim.lr ({o.lr}), got "
                         f"{o.min_lr}")
    if any(m < 1 for m in o.milestones) or list(o.milestones) != sorted(set(o.milestones)):
        raise UpresError(f"config key 'optim.milestones': increasing steps >= 1, got "
                         f"{list(o.milestones)}")
    if g.loss not in ("vanilla", "lsgan", "hinge", "ragan"):
        raise UpresError(f"config key 'gan.loss': vanilla, lsgan, hinge or ragan, got {g.loss!r}")
    from upres.models.discriminators import DISCRIMINATORS

    if g.discriminator not in DISCRIMINATORS:
        raise UpresError(f"config key 'gan.discriminator': {', '.join(DISCRIMINATORS)}, got "
                         f"{g.discriminator!r}")
    if g.perceptual_weight > 0 and not g.perceptual_weights:
        raise UpresError("config key 'gan.perceptual_weights': a perceptual loss needs a VGG19 "
                         "weights file (none can be downloaded); set it or perceptual_weight: 0")
    if g.level_power < 0:
        raise UpresError(f"config key 'gan.level_power': must be >= 0, got {g.level_power}")
    if g.level_power > 0 and not cfg.model.denoise_base:
        raise UpresError("config key 'gan.level_power': needs model.denoise_base (levels are "
                         "drawn only when every clean-up strength is trained)")
    if len(g.d_betas) != 2 or not all(0.0 <= b < 1.0 for b in g.d_betas):
        raise UpresError(f"config key 'gan.d_betas': two numbers in [0, 1), got "
                         f"{list(g.d_betas)}")
    from upres.train.gan import vgg19_layer_names

    unknown = sorted(set(g.perceptual_layers) - set(vgg19_layer_names()))
    if unknown:
        raise UpresError(f"config key 'gan.perceptual_layers': unknown VGG19 layer(s) {unknown}; "
                         f"e.g. conv3_4, conv4_4, conv5_4")
    if any(not isinstance(w, int | float) or isinstance(w, bool) or w < 0
           for w in g.perceptual_layers.values()):
        raise UpresError(f"config key 'gan.perceptual_layers': weights must be numbers >= 0, "
                         f"got {g.perceptual_layers}")
    if g.weight > 0 or g.perceptual_weight > 0:
        from upres.models.discriminators import build_discriminator

        try:
            build_discriminator(g.discriminator, g.d_params)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise UpresError(f"config key 'gan.d_params': {one_line(exc, 200)}") from None
    if cfg.model.init_mode not in ("match", "grow"):
        raise UpresError(f"config key 'model.init_mode': match or grow, got "
                         f"{cfg.model.init_mode!r}")
    if "scale" in cfg.model.params:
        raise UpresError("config key 'model.params.scale': set the top-level 'scale' instead")
    _check_model(cfg)
    _check_qat(cfg)


def _check_qat(cfg: TrainConfig) -> None:
    q = cfg.qat
    if not q.enabled:
        if q.tail:
            raise UpresError("config key 'qat.tail': needs qat.enabled: true")
        return
    p = cfg.model.params
    if cfg.model.arch != "upnet" or p.get("act", "relu") != "relu" or p.get("unshuffle", 1) != 1:
        raise UpresError("config key 'qat.enabled': quantisation-aware training needs model.arch "
                         "upnet with act relu and no unshuffle")
    if cfg.model.denoise_base:
        raise UpresError("config key 'qat.enabled': not with model.denoise_base (a photo "
                         "model's activation ranges change with its clean-up strength, and the "
                         "simulated ones are measured for one network)")
    if not 0.0 < q.percentile <= 100.0:
        raise UpresError(f"config key 'qat.percentile': must be in (0, 100], got {q.percentile}")
    if q.recalibrate < 1:
        raise UpresError(f"config key 'qat.recalibrate': must be >= 1, got {q.recalibrate}")


def _check_numbers(cfg: TrainConfig) -> None:
    o, g = cfg.optim, cfg.gan
    at_least_one = {"optim.steps": o.steps, "data.patch": cfg.data.patch,
                    "data.batch": cfg.data.batch, "log_every": cfg.log_every,
                    "val_every": cfg.val_every, "ckpt_every": cfg.ckpt_every}
    positive = {"optim.lr": o.lr, "optim.gamma": o.gamma, "gan.d_lr": g.d_lr}
    non_negative = {"seed": cfg.seed, "threads": cfg.threads, "optim.min_lr": o.min_lr,
                    "optim.weight_decay": o.weight_decay, "optim.momentum": o.momentum,
                    "optim.warmup": o.warmup, "optim.grad_clip": o.grad_clip,
                    "gan.weight": g.weight, "gan.perceptual_weight": g.perceptual_weight,
                    "gan.d_start": g.d_start, "gan.level_power": g.level_power}
    for rule, values, ok in ((">= 1", at_least_one, lambda v: v >= 1),
                             ("> 0", positive, lambda v: v > 0),
                             (">= 0", non_negative, lambda v: v >= 0)):
        for key, v in values.items():
            if not ok(v) or not math.isfinite(v):  # NaN fails every rule; inf trains to NaN
                raise UpresError(f"config key {key!r}: must be a finite number {rule}, got {v}")


def _check_model(cfg: TrainConfig) -> None:
    """Build the network once: bad hyper-parameters are an error naming the key, not a
    traceback at the first step."""
    from upres.models.registry import REGISTRY

    arch = cfg.model.arch
    try:
        spec = REGISTRY.get(arch)
    except UpresError as exc:
        raise UpresError(f"config key 'model.arch': {exc}") from None
    try:
        with warnings.catch_warnings():  # a zero width warns before it is refused below
            warnings.simplefilter("ignore", UserWarning)
            net = REGISTRY.build(arch, {**cfg.model.params, "scale": cfg.scale})
    except (UpresError, ValueError, RuntimeError) as exc:
        raise UpresError(f"config key 'model.params': {arch}: {one_line(exc, 200)}") from None
    empty = [k for k, v in net.named_parameters() if v.numel() == 0]
    if empty:
        raise UpresError(f"config key 'model.params': {arch} with {cfg.model.params} has empty "
                         f"layers ({empty[0]}); widths and counts must be >= 1")
    need = spec.defaults.get("min_size", 1)
    if cfg.data.patch < need:
        raise UpresError(f"config key 'data.patch': {arch} needs LR patches of at least {need} "
                         f"pixels, got {cfg.data.patch}")


def load_config(path: str | os.PathLike[str], overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML recipe, apply overrides, validate, and return a frozen :class:`TrainConfig`."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except OSError as exc:
        raise UpresError(f"{p}: cannot read config ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise UpresError(f"{p}: not a text file (byte {exc.start} is not UTF-8)") from None
    except yaml.YAMLError as exc:
        raise UpresError(f"{p}: invalid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UpresError(f"{p}: a recipe is a YAML mapping of keys, not a "
                         f"{type(data).__name__}")
    data = apply_overrides(data, overrides or [])
    cfg = _build(TrainConfig, data, "")
    _validate(cfg)
    return cfg
