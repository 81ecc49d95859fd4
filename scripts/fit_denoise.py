"""Fit the automatic clean-up strength of a photo model (issue 22) on the training images.

    .venv/bin/python scripts/fit_denoise.py -m runs/photo-x4-mix/final.safetensors -s 4

Crops of the 291 training images (never benchmark images) are degraded by known, random
amounts: clean, one everyday pass (blur, noise, JPEG, as in ``upres.data.degrade.one_pass``) or
Real-ESRGAN's second-order pipeline; half of the JPEG-compressed ones also tell their quality
(as a JPEG file's tables do), the rest are "PNGs that were JPEGs once". Each is upscaled at
strengths 0, 0.1, ..., 1 (the base ``x{s}`` and the photo model's blend) and scored (PSNR-Y
against the crop). The map ``t = max(0, a + b * noise + c * blocking) + d * (100 -
quality) / 100`` (clipped to 0..1, and 0 below 0.05: ``upres.inference.denoise.strength_for``)
is chosen by grid search to maximise the mean PSNR-Y among the maps that give at least 90 % of
the clean crops strength 0 (a clean image must get ``x{s}``'s output itself); the script prints
it and the gap to the best strength per sample, for upres.inference.denoise.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np

import upres
from upres.data.datasets import scan_images
from upres.data.degrade import jpeg, modcrop, one_pass, second_order
from upres.formats.image import read_rgb8
from upres.inference.denoise import Damage, PhotoUpscaler, damage, strength_for
from upres.inference.upscaler import to_dtype
from upres.metrics import psnr_y
from upres.models.weights import load_model
from upres.resize import imresize

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT.parent / "shared" / "data" / "train"
GRID = np.round(np.linspace(0, 1, 11), 2)


def samples(s: int, n: int, seed: int) -> list[tuple[np.ndarray, np.ndarray, int | None, str]]:
    """``(hr, lr, quality or None, kind)`` for ``n`` crops."""
    rng = np.random.default_rng(seed)
    files = [f for f in scan_images([TRAIN])]
    out = []
    size = 64 * s
    while len(out) < n:
        hr = read_rgb8(files[int(rng.integers(len(files)))])
        if min(hr.shape[:2]) < size:
            continue
        y, x = (int(rng.integers(0, d - size + 1)) for d in hr.shape[:2])
        hr = modcrop(hr[y:y + size, x:x + size], s)
        kind = str(rng.choice(["clean", "pass", "pass", "second"]))
        f = hr.astype(np.float32) / 255
        quality = None
        if kind == "clean":
            lr = imresize(hr, 1 / s)
        elif kind == "second":
            lr = to_dtype(second_order(s)(f, rng), np.dtype(np.uint8))
        else:
            lr_f = one_pass(s)(f, rng)
            if rng.random() < 0.5:  # a JPEG file of known quality
                quality = int(rng.integers(40, 96))
                lr_f = jpeg(lr_f, quality)
            lr = to_dtype(lr_f, np.dtype(np.uint8))
        out.append((hr, lr, quality, kind))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-m", "--model", required=True, help="the clean-up endpoint")
    ap.add_argument("-s", "--scale", type=int, required=True)
    ap.add_argument("-n", type=int, default=240)
    ap.add_argument("--seed", type=int, default=5)
    args = ap.parse_args()
    s = args.scale
    base = upres.load(f"x{s}", device="cpu")
    net, _ = load_model(args.model)
    pu = PhotoUpscaler(base, base.model.state_dict(), net.state_dict(), denoise=0.0)
    data = samples(s, args.n, args.seed)
    scores = np.zeros((len(data), len(GRID)))
    feats: list[Damage] = []
    for i, (hr, lr, q, _) in enumerate(data):
        feats.append(damage(lr, q, legacy=True))
        for j, t in enumerate(GRID):
            scores[i, j] = psnr_y(pu.upscale(lr, denoise=float(t)), hr, shave=s)
    best = scores.max(axis=1)
    print(f"{len(data)} samples; mean PSNR-Y at the best strength per sample {best.mean():.3f}, "
          f"at 0 {scores[:, 0].mean():.3f}, at 1 {scores[:, -1].mean():.3f}")
    clean = np.array([x[3] == "clean" for x in data])
    noise = np.array([f.noise for f in feats])
    block = np.array([f.blocking for f in feats])
    qterm = np.array([(100 - (f.quality if f.quality is not None else 100)) / 100
                      for f in feats])
    rows = np.arange(len(data))
    top = None
    for a, b, c in itertools.product(np.arange(-2.0, 0.31, 0.1), np.arange(0, 0.61, 0.04),
                                     np.arange(0, 16.1, 0.5)):
        pixels = np.maximum(0.0, a + b * noise + c * block)
        ds = np.arange(0, 6.1, 0.25)
        ts = np.clip(pixels[None, :] + ds[:, None] * qterm[None, :], 0, 1)
        ts[ts < 0.05] = 0.0
        ok = (ts[:, clean] > 0).mean(axis=1) <= 0.1  # clean input gets x{s} itself (t = 0)
        idx = np.abs(GRID[None, None, :] - ts[:, :, None]).argmin(axis=2)
        means = scores[rows[None, :], idx].mean(axis=1)
        means[~ok] = -np.inf
        k = int(np.argmax(means))
        if top is None or means[k] > top[0]:
            top = (float(means[k]), {"a": round(float(a), 2), "b": round(float(b), 2),
                                     "c": float(c), "d": float(ds[k])})
    mean, fit = top
    print(f"fit {json.dumps({k: round(v, 3) for k, v in fit.items()})}: mean PSNR-Y {mean:.3f} "
          f"({best.mean() - mean:.3f} dB under the best strength per sample)")
    for kind in ("clean", "pass", "second"):
        rows = [i for i, x in enumerate(data) if x[3] == kind]
        idx = [int(np.abs(GRID - strength_for(feats[i], fit)).argmin()) for i in rows]
        print(f"  {kind}: {len(rows)} samples, mean strength {np.mean(GRID[idx]):.2f}, gap "
              f"{np.mean(best[rows] - scores[rows, idx]):.3f} dB")


if __name__ == "__main__":
    main()
