"""The models upres ships: trained by this project, stored in ``upres/zoo`` as safetensors.

Each shipped model ``NAME`` is ``zoo/NAME.safetensors`` (weights + :class:`ModelCard` metadata)
beside ``zoo/NAME.yaml`` (the recipe that trained it) and ``zoo/NAME.log`` (its training log).
``zoo/baselines.json`` holds the measured PSNR of the interpolation baselines.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from safetensors import safe_open

from upres.models.descriptor import ModelCard

__all__ = ["BASELINES", "ZOO_DIR", "baseline_rows", "photo_for", "resolve", "shipped",
           "shipped_rows"]

ZOO_DIR = Path(__file__).resolve().parent.parent / "zoo"
BASELINES = ("bicubic", "lanczos")


@lru_cache(maxsize=1)
def shipped() -> tuple[ModelCard, ...]:
    """Cards of all shipped models, sorted by scale then name."""
    cards = []
    for f in sorted(ZOO_DIR.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as fh:
            card = ModelCard.from_metadata(fh.metadata())
        if card is not None and card.name == f.stem:
            cards.append(card)
    return tuple(sorted(cards, key=lambda c: (c.scale, c.name)))


def resolve(name: str) -> Path | None:
    """Path of shipped model ``name``, or None if there is no such model."""
    p = ZOO_DIR / f"{name}.safetensors"
    return p if name in {c.name for c in shipped()} else None


def photo_for(scale: int) -> ModelCard | None:
    """The shipped photo model (one with a clean-up strength) of ``scale``, or None."""
    return next((c for c in shipped() if c.scale == scale and c.denoise_base), None)


def shipped_rows() -> list[dict]:
    """``models --json`` rows of the shipped models (``GET /v1/models`` serves the same):
    ``summary`` says in a user's words what each is for; ``denoise`` is true for models with a
    clean-up strength (``--denoise``); ``default_precision`` is what it runs on a CPU unless
    told (``fp32`` for most, ``int8`` for models made to run quantised)."""
    return [{"name": c.name, "arch": c.arch, "scale": c.scale, "params": c.params,
             "psnr": dict(c.psnr), "gmacs": c.gmacs, "cpu_ms": c.cpu_ms,
             "summary": c.summary, "denoise": bool(c.denoise_base), "notes": c.notes,
             "default_precision": c.default_precision or "fp32"}
            for c in shipped()]


def baseline_rows() -> list[dict]:
    """``models --json`` rows for the interpolation baselines, one per (baseline, scale)."""
    f = ZOO_DIR / "baselines.json"
    measured = json.loads(f.read_text()) if f.is_file() else {}
    rows = []
    for name in BASELINES:
        for scale in (2, 3, 4):
            psnr = measured.get(name, {}).get(f"x{scale}", {})
            rows.append({"name": name, "arch": name, "scale": scale, "params": 0, "psnr": psnr})
    return rows
