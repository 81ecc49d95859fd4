"""The frozen description that travels with every model (stored in safetensors metadata)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from upres.errors import UpresError

__all__ = ["ModelCard"]


@dataclass(frozen=True)
class ModelCard:
    """What a model is and how it was made.

    ``psnr`` maps a benchmark name (``"Set5"``) to PSNR-Y in dB by the standard protocol,
    measured by ``upres eval`` on the shipped weights. ``hparams`` are the constructor's keyword
    arguments (``scale`` included).

    The input convention, which the inference path follows: ``color`` ``"rgb"`` (the network
    sees RGB) or ``"y"`` (it sees BT.601 luma; chroma is enlarged by bicubic); ``value_range``
    1.0 (pixels in [0, 1]) or 255.0 (pixels in [0, 255]); ``min_size``: the smallest input side
    the network accepts (smaller inputs are edge-padded and the result cropped);
    ``size_multiple``: input sides must be multiples of it (padded likewise); ``pre_upsample``:
    the network maps a bicubic-enlarged image to one of the same size (SRCNN, VDSR);
    ``supports_half``: the network runs under bf16/fp16 autocast (every registered architecture
    is checked under bf16 by the tests); when False, half precision requests fall back to fp32.
    ``denoise_base``: for a photo model, the model whose weights are clean-up strength 0 (the
    card's own weights are strength 1; :mod:`upres.inference.denoise`), and ``denoise_fit`` the
    coefficients of its automatic strength (``scripts/fit_denoise.py``), unless
    ``denoise_level``: the model was trained so that strength ``t`` restores damage of
    level ``t``, and the automatic strength is the level :mod:`upres.inference.level`
    reads. ``summary``: one or two
    sentences for users: what the model is for. ``quantized``: set on int8 ONNX graphs
    (:mod:`upres.quantize`), saying how they were quantised; empty for float weights.
    ``default_precision``: what ``precision="default"`` runs on a CPU (``"int8"`` for models
    made to run quantised; empty = fp32); other devices run fp32. ``int8_scan``: for weights
    whose int8 graph needs :func:`upres.quantize.make_int8`'s sensitivity scan, what the scan
    measured: ``weights`` (state_sha256 of the float network), ``setting`` (a digest of the
    convention, calibration crops, percentile, quantiser and loss rule), ``equalise`` and
    ``skip`` (the graph it started from), ``order`` (the convolutions' ONNX node names, most
    sensitive first) and ``choice`` (``keep``: how many of them the chosen graph keeps
    float32; ``kernels``: the onnxruntime version and CPU int8 instruction sets that chose
    it). Recorded at shipping (``scripts/stamp_cards.py --int8-scan``) so that the first int8
    use of those very weights makes the same graph without minutes of measuring; ignored for
    any other weights or setting.
    """

    name: str
    arch: str
    scale: int
    hparams: dict[str, Any]
    params: int
    trained_on: str = ""
    steps: int = 0
    psnr: dict[str, float] = field(default_factory=dict)
    ssim: dict[str, float] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    notes: str = ""
    train_seconds: float = 0.0  # wall time of the training run (resumed runs: all segments)
    machine: str = ""  # where it was trained
    gmacs: float = 0.0  # multiply-adds (1e9) for one 1280x720 output frame (0: not counted)
    cpu_ms: float = 0.0  # median CPU latency for a 1280x720 output, fp32, on bench_machine
    bench_machine: str = ""  # where cpu_ms was measured
    color: str = "rgb"
    value_range: float = 1.0
    min_size: int = 1
    size_multiple: int = 1
    pre_upsample: bool = False
    supports_half: bool = True
    denoise_base: str = ""  # photo models: the shipped model that is clean-up strength 0
    denoise_fit: dict[str, float] = field(default_factory=dict)  # its automatic strength map
    # photo models trained on damage levels (upres.data.degrade.Leveled): the automatic
    # strength is the level read by upres.inference.level's estimator (denoise_fit unused)
    denoise_level: bool = False
    summary: str = ""  # what the model is for, in a user's words (listings, web page)
    quantized: str = ""  # int8 graphs (upres.quantize): how they were quantised; "" = float
    default_precision: str = ""  # the path it runs on a CPU unless told ("" = fp32)
    int8_scan: dict[str, Any] = field(default_factory=dict)  # make_int8's measured order

    def to_metadata(self) -> dict[str, str]:
        """Flat ``str -> str`` mapping for safetensors metadata (one JSON entry, ``upres``)."""
        return {"upres": json.dumps(asdict(self), sort_keys=True)}

    @classmethod
    def from_metadata(cls, meta: dict[str, str] | None) -> ModelCard | None:
        if not meta or "upres" not in meta:
            return None
        data = json.loads(meta["upres"])
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def from_file_metadata(cls, meta: dict[str, str] | None, source: Any) -> ModelCard | None:
        """:meth:`from_metadata` for a file's metadata (``source``: its path, for the message).

        Raises:
            UpresError: the card is damaged (not JSON, not an object, not the card's fields).
        """
        try:
            return cls.from_metadata(meta)
        except (ValueError, TypeError, AttributeError, RecursionError):
            raise UpresError(f"{source}: its upres model card (metadata) is damaged") from None

    def with_(self, **changes: Any) -> ModelCard:
        return replace(self, **changes)
