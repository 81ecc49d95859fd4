"""Average the weights of several exported models of one architecture (a "model soup").

    .venv/bin/python scripts/average_weights.py OUT.safetensors A.safetensors B.safetensors [...]
    .venv/bin/python scripts/average_weights.py OUT.safetensors A.safetensors B.safetensors \
        --weights 0.7 0.3

Every input must hold the same tensor names and shapes (runs of one architecture that share an
ancestor: a fine-tune and its start, two points of one cosine cycle). Tensors are averaged in
float64 and stored in the first input's dtype; the first input's card (``upres`` metadata) is
kept, with ``notes`` naming the inputs and weights and the measured scores cleared, since the
average has not been scored. Score it with ``upres eval`` like any model.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file


def average(paths: list[Path], weights: list[float]) -> tuple[dict[str, torch.Tensor], dict]:
    """Weighted mean of the tensors in ``paths``; returns (tensors, first input's metadata).

    ``weights`` are normalised to sum 1. Raises ``ValueError`` naming the file whose tensor
    names or shapes differ from the first input's.
    """
    if len(paths) != len(weights):
        raise ValueError(f"{len(paths)} inputs but {len(weights)} weights")
    total = float(sum(weights))
    if total <= 0:
        raise ValueError("weights must sum to a positive number")
    acc: dict[str, torch.Tensor] = {}
    dtypes: dict[str, torch.dtype] = {}
    meta: dict = {}
    for i, (p, w) in enumerate(zip(paths, weights, strict=True)):
        with safe_open(str(p), "pt") as f:
            keys = set(f.keys())
            if i == 0:
                meta = f.metadata() or {}
                for k in keys:
                    t = f.get_tensor(k)
                    dtypes[k] = t.dtype
                    acc[k] = t.to(torch.float64) * (w / total)
                continue
            if keys != set(acc):
                raise ValueError(f"{p}: tensor names differ from {paths[0]}")
            for k in keys:
                t = f.get_tensor(k)
                if t.shape != acc[k].shape:
                    raise ValueError(f"{p}: {k} has shape {tuple(t.shape)}, "
                                     f"{paths[0]} has {tuple(acc[k].shape)}")
                acc[k] += t.to(torch.float64) * (w / total)
    return {k: v.to(dtypes[k]).contiguous() for k, v in acc.items()}, meta


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
        tensors, meta = average(args.inputs, weights)
    except (ValueError, OSError) as exc:
        sys.exit(f"average_weights: {exc}")
    if "upres" in meta:
        card = json.loads(meta["upres"])
        parts = ", ".join(f"{p} x {w:g}" for p, w in zip(args.inputs, weights, strict=True))
        card["notes"] = f"weight average of {parts}"
        card["psnr"], card["ssim"] = {}, {}
        meta = {**meta, "upres": json.dumps(card, sort_keys=True)}
    tmp = args.out.with_name(args.out.name + ".part")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(args.out)
    print(f"{args.out}: {len(tensors)} tensors from {len(args.inputs)} inputs")


if __name__ == "__main__":
    main()
