"""GeoTIFF (issue 21): quality on real scenes, and memory and time against raster size.

Quality: the Landsat 7 subset (`RGB.byte.tif`, 3 x uint8, nodata 0 around a rotated
footprint) and the gray GeoTIFF (`gray_geotiff.tif`, 1 x uint8, every sample valid) are cut to
a multiple of ``s``, their invalid samples filled from nearby valid ones (as upres does before
the network), shrunk by MATLAB bicubic (uint8, rounded after each pass), written as GeoTIFFs
with nodata where an LR pixel's ``s x s`` block held any invalid sample, upscaled by
:func:`upres.raster.upscale_raster` (the path ``upres upscale`` takes) and compared with the
original over the samples valid in both (PSNR, all bands, peak 255, ``s`` border pixels shaved).

Scale: rasters of 3 x uint8 (a real 512x512 Landsat tile repeated, nodata 0) upscaled x2 by
``upres upscale`` in a child process, for outputs of 25, 100 and 400 megapixels and a gigapixel
(16000 x 16000 in, 32000 x 32000 out); peak RSS of the child and wall time.

    .venv/bin/python benchmarks/bench_geo.py [--skip-scale] [--skip-quality] [--giga]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

sys.path.insert(0, str(Path(__file__).resolve().parent))
import upres
from upres.models import zoo
from upres.raster import fill_nearby, upscale_raster
from upres.resize import imresize

from _report import update_section

GEO = Path(__file__).resolve().parents[2] / "shared" / "data" / "apps" / "geo"
SCENES = {"RGB.byte.tif": "Landsat 7 RGB, 791x718", "gray_geotiff.tif": "gray GeoTIFF, 699x929"}
# shade.tif (the SRTM hillshade) is left out: its valid samples are all 0 (88 % is nodata 255),
# so every method scores an infinite PSNR there; its nodata handling is tested in the suite.


def models_for(s: int) -> list[str]:
    return ["bicubic", "lanczos"] + [c.name for c in zoo.shipped() if c.scale == s]


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def make_lr(src: Path, s: int, tmp: Path) -> tuple[np.ndarray, np.ndarray, Path]:
    """``(hr, hr_valid, lr_path)``: the modcropped scene, its valid samples ``(h, w)``, and the
    LR GeoTIFF made from it."""
    with rasterio.open(src) as ds:
        h, w = ds.height // s * s, ds.width // s * s
        hr = ds.read(window=Window(0, 0, w, h))
        valid = (ds.read_masks(window=Window(0, 0, w, h)) > 0).all(axis=0)
        nodata = ds.nodata
        prof = ds.profile
    filled = fill_nearby(hr.astype(np.float32), ~valid, 4 * s)
    filled = np.clip(np.floor(filled + 0.5), 0, 255).astype(np.uint8)
    lr = imresize(np.ascontiguousarray(filled.transpose(1, 2, 0)), 1 / s)
    lr = lr.reshape(lr.shape[0], lr.shape[1], -1).transpose(2, 0, 1)
    lr_valid = valid.reshape(h // s, s, w // s, s).all(axis=(1, 3))
    if nodata is not None:
        nd = int(nodata)
        lr = np.where(lr == nd, nd + (1 if nd < 255 else -1), lr)  # valid is never nodata
        lr[:, ~lr_valid] = nd
    t = prof["transform"]
    out = tmp / f"lr_{s}_{src.name}"
    with rasterio.open(out, "w", **(prof | {"width": w // s, "height": h // s, "tiled": False,
                                            "transform": t * rasterio.Affine.scale(s)})) as d:
        d.write(lr)
    return hr, valid, out


def quality(args: argparse.Namespace) -> None:
    body = ["PSNR (dB) over the samples valid in the original and in the output, all bands, "
            "peak 255, border shaved by s; time of `upscale_raster` on this machine.", ""]
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for s in (2, 4):
            body += [f"### x{s}", "", "| model | " + " | ".join(SCENES.values()) + " |",
                     "|---|" + "---|" * len(SCENES)]
            lrs = {n: make_lr(GEO / n, s, tmp) for n in SCENES}
            for m in models_for(s):
                up = upres.load(m, scale=s, device="cpu")
                cells = []
                for n, (hr, valid, lr) in lrs.items():
                    out = tmp / f"sr_{m}_{n}"
                    t0 = time.perf_counter()
                    upscale_raster(up, lr, out, overwrite=True)
                    dt = time.perf_counter() - t0
                    with rasterio.open(out) as ds:
                        sr = ds.read()
                        ok = valid & (ds.read_masks() > 0).all(axis=0)
                    ok[:s], ok[-s:], ok[:, :s], ok[:, -s:] = False, False, False, False
                    cells.append(f"{_psnr(sr[:, ok], hr[:, ok]):.2f} ({dt:.1f} s)")
                    print(m, s, n, cells[-1], flush=True)
                body.append(f"| {m} | " + " | ".join(cells) + " |")
            body.append("")
    update_section("geo-quality", "GeoTIFF: quality on real scenes (x2, x4)", "\n".join(body))


def make_big(path: Path, n: int) -> None:
    """An ``n x n`` 3-band uint8 GeoTIFF: a 512x512 Landsat tile (nodata 0 in a corner)
    repeated, tiled and DEFLATE-compressed."""
    with rasterio.open(GEO / "RGB.byte.tif") as a:
        tile = a.read(window=Window(100, 60, 512, 512))
    with rasterio.open(path, "w", driver="GTiff", width=n, height=n, count=3, dtype="uint8",
                       nodata=0, tiled=True, compress="deflate", crs="EPSG:32618",
                       transform=from_origin(300000, 4000000, 30, 30), photometric="rgb",
                       bigtiff="if_safer") as ds:
        for y in range(0, n, 512):
            for x in range(0, n, 512):
                h, w = min(512, n - y), min(512, n - x)
                ds.write(tile[:, :h, :w], window=Window(x, y, w, h))


def run_child(args: list[str]) -> tuple[float, float]:
    """``(seconds, peak RSS MB)`` of ``upres ARGS`` run in a child process of its own."""
    code = ("import resource, sys; from upres.cli import main; rc = main(sys.argv[1:]); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)")
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", code, *args], check=True, capture_output=True,
                       text=True)
    dt = time.perf_counter() - t0
    return dt, int(r.stdout.split()[-1]) / 1024


def scale(args: argparse.Namespace) -> None:
    sizes = [2500, 5000, 10000] + ([16000] if args.giga else [])
    rows = ["| input | output | model | wall time | output MP/s | peak RSS (child) | "
            "output file |", "|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory(dir=args.tmp) as d:
        tmp = Path(d)
        for n in sizes:
            src = tmp / f"in{n}.tif"
            make_big(src, n)
            out = tmp / f"out{n}.tif"
            dt, rss = run_child(["upscale", str(src), "-o", str(out), "-m", args.model, "-q",
                                 "--max-pixels", "0"])
            mp = (2 * n) ** 2 / 1e6
            size = out.stat().st_size / 2**20
            rows.append(f"| {n}x{n} | {2 * n}x{2 * n} ({mp:.0f} MP) | {args.model} | "
                        f"{dt:.0f} s | {mp / dt:.2f} | {rss:.0f} MB | {size:.0f} MiB |")
            print(rows[-1], flush=True)
            out.unlink()
            src.unlink()
    body = ("Each size runs in a child process of its own, which reports its peak RSS. The "
            "output is tiled 512x512, DEFLATE with the horizontal predictor, BigTIFF where "
            "needed.\n\n"
            + "\n".join(rows))
    update_section("geo-scale", "GeoTIFF: memory and time against raster size (x2)", body)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--skip-scale", action="store_true")
    ap.add_argument("--giga", action="store_true", help="also 16000x16000 in (1 GP out)")
    ap.add_argument("--model", default="tiny-x2", help="model of the scale runs")
    ap.add_argument("--tmp", default=None, help="folder for the large rasters")
    args = ap.parse_args()
    if not args.skip_quality:
        quality(args)
    if not args.skip_scale:
        scale(args)


if __name__ == "__main__":
    main()
