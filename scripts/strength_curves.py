"""PSNR-Y of a photo model at fixed clean-up strengths, image by image, on a rung of the
degradation ladder, and what an estimator's readings make of those curves (a diagnosis of
``--denoise auto``; docs/ladder.md, session 27). Nothing is fitted to these images.

    .venv/bin/python scripts/strength_curves.py -s 2 --rung L3 [--set BSD100]
        [--level FILE.safetensors ...] [--json OUT.json]

Prints the mean gain over strength 0 (``x{s}`` itself) at each strength, the gain of the best
strength per image, and for the shipped estimator and each ``--level`` file the gain at the
strength it reads (0 under its threshold ``off``; linear between the measured strengths).
The ladder's LR images are made by ``scripts/make_ladder.py`` (``runs/ladder-x{s}``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

import upres
from upres.evaluate import load_benchmark
from upres.inference import level
from upres.metrics import psnr_y

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT.parent / "shared" / "data" / "benchmark"
STRENGTHS = (0.0, 0.25, 0.5, 0.625, 0.75, 0.875, 1.0)


def reader(path: Path | None, scale: int) -> tuple[level.LevelNet, float, dict[str, float]]:
    """The estimator in ``path`` (default: the shipped one), its threshold ``off`` and its map
    from a reading to a strength."""
    if path is None:
        return level.level_net(scale), level.level_off(scale), level.level_map(scale)
    return level.read_estimator(path), level.estimator_off(path), level.estimator_map(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-s", "--scale", type=int, required=True)
    ap.add_argument("--rung", required=True, choices=("L0", "L1", "L2", "L3"))
    ap.add_argument("--set", default="BSD100")
    ap.add_argument("--ladder", default=str(ROOT / "runs" / "ladder"))
    ap.add_argument("--level", type=Path, nargs="*", default=[])
    ap.add_argument("--json", type=Path, default=None, help="write the curves here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    s = args.scale
    images = load_benchmark(str(BENCH / args.set), s, f"{args.ladder}-x{s}/{args.rung}/{args.set}")
    photo = upres.load(f"photo-x{s}", device="cpu", precision="fp32")
    curves = np.array([[psnr_y(photo.upscale(lr, denoise=t), hr, shave=s) for t in STRENGTHS]
                       for _, hr, lr in images])
    base = curves[:, 0].mean()
    gains = " ".join(f"{t:g}: {m - base:+.3f}" for t, m in zip(STRENGTHS, curves.mean(0),
                                                                 strict=True))
    print(f"x{s} {args.rung} {args.set}, {len(images)} images; gain over strength 0: {gains}; "
          f"best strength per image {curves.max(1).mean() - base:+.3f}")
    for path in [None, *args.level]:
        net, off, smap = reader(path, s)
        used = np.array([level.read_strength(lr, net, off, smap)[1] for _, _, lr in images])
        got = np.array([np.interp(t, STRENGTHS, c) for t, c in zip(used, curves, strict=True)])
        print(f"  {path or 'shipped estimator'} (off {off:.3f}): mean strength "
              f"{used.mean():.3f}, gain {got.mean() - base:+.3f}")
    if args.json is not None:
        args.json.write_text(json.dumps({"strengths": STRENGTHS, "names": [n for n, _, _ in images],
                                         "psnr": curves.round(4).tolist()}))


if __name__ == "__main__":
    main()
