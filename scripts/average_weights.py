"""Average the weights of several exported models of one architecture (a "model soup").

    .venv/bin/python scripts/average_weights.py OUT.safetensors A.safetensors B.safetensors [...]
    .venv/bin/python scripts/average_weights.py OUT.safetensors A.safetensors B.safetensors \
        --weights 0.7 0.3

Every input must be the same architecture with the same hyper-parameters (runs that share an
ancestor: a fine-tune and its start, two points of one cosine cycle). Tensors are averaged in
float64 and stored as float32; the first input's card is kept, with ``notes`` naming the
inputs and weights and the measured scores cleared, since the average has not been scored.
Score it with ``upres eval`` like any model.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

from upres.errors import UpresError
from upres.models.descriptor import ModelCard
from upres.models.weights import load_model, save_model


def average(paths: list[Path], weights: list[float]) -> tuple[nn.Module, ModelCard]:
    """Weighted mean of the models in ``paths`` (read by ``load_model``, so a damaged file is a
    one-line ``UpresError``); returns the first model holding the mean, and its card.

    ``weights`` are normalised to sum 1. Raises ``ValueError`` naming the file whose
    architecture or tensor shapes differ from the first input's.
    """
    if len(paths) != len(weights):
        raise ValueError(f"{len(paths)} inputs but {len(weights)} weights")
    total = float(sum(weights))
    if total <= 0:
        raise ValueError("weights must sum to a positive number")
    first, card = load_model(paths[0])
    acc = {k: v.to(torch.float64) * (weights[0] / total) for k, v in first.state_dict().items()}
    for p, w in zip(paths[1:], weights[1:], strict=True):
        model, other = load_model(p)
        if (other.arch, other.hparams) != (card.arch, card.hparams):
            raise ValueError(f"{p}: {other.arch} {other.hparams} differs from {paths[0]}'s "
                             f"{card.arch} {card.hparams}")
        for k, t in model.state_dict().items():
            acc[k] += t.to(torch.float64) * (w / total)
    first.load_state_dict({k: v.float() for k, v in acc.items()})
    return first, card


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("inputs", type=Path, nargs="+")
    ap.add_argument("--weights", type=float, nargs="+", help="one per input (default: equal)")
    args = ap.parse_args()
    if len(args.inputs) < 2:
        ap.error("give at least two inputs")
    if args.out.exists() or args.out in args.inputs:
        ap.error(f"{args.out}: exists; not overwritten")
    weights = args.weights or [1.0] * len(args.inputs)
    try:
        model, card = average(args.inputs, weights)
    except (ValueError, UpresError) as exc:
        sys.exit(f"average_weights: {exc}")
    parts = ", ".join(f"{p} x {w:g}" for p, w in zip(args.inputs, weights, strict=True))
    save_model(args.out, model, card.with_(notes=f"weight average of {parts}", psnr={}, ssim={}))
    print(f"{args.out}: {len(model.state_dict())} tensors from {len(args.inputs)} inputs")


if __name__ == "__main__":
    main()
