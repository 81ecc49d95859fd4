"""How much of a model's error sits at the image border, and what padding the input first does.

For each model, on each benchmark set (standard protocol: MATLAB-bicubic LR, Y channel, border
shaved by the scale), prints PSNR-Y over the whole image, over the band of ``4 x scale`` HR
pixels along the edges (after the shave) and over the interior, and the share of the squared
error that lies in the band. With ``--pad``, also the whole-image PSNR-Y when the LR input is
first extended by N pixels (numpy ``symmetric``, ``reflect`` or ``edge`` mode, as Real-ESRGAN's
``pre_pad`` does with reflection) and the output cropped back.

    python scripts/edge_study.py -s 2 -m x2 ../shared/peers/pytorch/CARN-M/carn_m.pth \\
        -d ../shared/data/benchmark/Set5 ../shared/data/benchmark/Set14 --pad symmetric:16
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import upres
from upres.evaluate import load_benchmark
from upres.metrics import psnr_y, rgb_to_y


def _db(mse: float) -> float:
    return float(10 * np.log10(255.0**2 / mse))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-s", "--scale", type=int, required=True)
    ap.add_argument("-m", "--models", nargs="+", required=True, help="names or weight files")
    ap.add_argument("-d", "--datasets", nargs="+", required=True)
    ap.add_argument("--pad", nargs="*", default=[], metavar="MODE:N",
                    help="input paddings to try, e.g. symmetric:16 reflect:16 edge:16")
    ap.add_argument("--per-image", action="store_true", help="also one line per image")
    args = ap.parse_args()
    s = args.scale
    for spec in args.models:
        up = upres.load(spec, device="cpu", scale=s if Path(spec).is_file() else None)
        label = Path(spec).stem if Path(spec).is_file() else spec
        for ds in args.datasets:
            items = load_benchmark(ds, s)
            band_sse = all_sse = 0.0
            whole, band, inner = [], [], []
            for name, hr, lr in items:
                y = rgb_to_y(up.upscale(lr, tile=0)).astype(np.float64)
                e = ((y - rgb_to_y(hr).astype(np.float64)) ** 2)[s:-s, s:-s]
                m = np.zeros(e.shape, bool)
                b = 4 * s
                m[:b], m[-b:], m[:, :b], m[:, -b:] = True, True, True, True
                whole.append(_db(e.mean()))
                band.append(_db(e[m].mean()))
                inner.append(_db(e[~m].mean()))
                band_sse += e[m].sum()
                all_sse += e.sum()
                if args.per_image:
                    print(f"  {label} {Path(ds).name}/{name}: all {whole[-1]:.3f} band "
                          f"{band[-1]:.3f} interior {inner[-1]:.3f} band share "
                          f"{e[m].sum() / e.sum():.3f}")
            print(f"{label} {Path(ds).name} x{s}: PSNR-Y all {np.mean(whole):.3f}, band "
                  f"{np.mean(band):.3f}, interior {np.mean(inner):.3f}; band holds "
                  f"{band_sse / all_sse:.1%} of the squared error")
            for pad in args.pad:
                mode, n = pad.split(":")
                p = int(n)
                vals = []
                for _, hr, lr in items:
                    lp = np.pad(lr, ((p, p), (p, p), (0, 0)), mode=mode)
                    sr = up.upscale(lp, tile=0)[p * s:-p * s, p * s:-p * s]
                    vals.append(psnr_y(sr, hr, shave=s))
                print(f"{label} {Path(ds).name} x{s}: input padded {mode} {p}: PSNR-Y "
                      f"{np.mean(vals):.3f}")


if __name__ == "__main__":
    main()
