"""The shipped models on clean photographs that are in none of shared/'s sets: a check that a
gain measured on Set5 / Set14 / BSD100 is a gain elsewhere too (issue 23: "judged on image sets
that are not in shared/").

    .venv/bin/python benchmarks/outside_sets.py [--scales 2 3 4]

The images are the PNG photographs scikit-image ships inside its wheel (``skimage/data``,
installed by the test and bench extras; nothing is downloaded): astronaut, brick, camera,
chelsea, coffee, coins, grass, gravel and motorcycle_left. Five are gray (brick, camera, coins,
grass, gravel; measured as RGB with equal channels, as Set14's gray images are) and three are
close-up textures (brick, grass, gravel). Left out: the synthetic and microscopy images, those
with alpha, the JPEGs (their compression would be the ground truth), moon (in
``shared/data/apps``) and motorcycle_right (the same scene). Each is measured by the same
standard protocol as ``upres eval`` (modcrop, MATLAB-bicubic LR, PSNR-Y with the scale shaved),
every upres model of that scale but the photo models (on clean images their automatic strength
gives ``x{s}``'s output; ``photo_ladder.py`` measures them) at its default path, beside bicubic
and the peers' official weights that ``compare_peers.py`` runs (IMDN, CARN-M; measured only).
The mean is over images; the median beside it, since one image (brick, a regular pattern that
MATLAB bicubic aliases) spreads the models by several dB. Writes the section "outside-x{s}" of
docs/benchmarks.md per scale.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np
from compare_peers import PEERS

import upres
from upres.evaluate import evaluate, load_benchmark
from upres.models import zoo

from _report import update_section

PHOTOS = ("astronaut", "brick", "camera", "chelsea", "coffee", "coins", "grass", "gravel",
          "motorcycle_left")


def photo_folder(dst: Path) -> Path:
    """Copy :data:`PHOTOS` from scikit-image's data folder into ``dst``; returns ``dst``."""
    import skimage

    src = Path(skimage.__file__).parent / "data"
    for name in PHOTOS:
        shutil.copy(src / f"{name}.png", dst / f"{name}.png")
    return dst


def run(scale: int, folder: Path) -> list[tuple[str, float, list[float]]]:
    """``(label, mean PSNR-Y, per-image PSNR-Y in PHOTOS order)`` per model at ``scale``."""
    images = load_benchmark(folder, scale)
    models: list[tuple[str, object]] = [("bicubic", upres.load("bicubic", scale=scale))]
    models += [(f"upres {c.name}", upres.load(c.name, device="cpu"))
               for c in zoo.shipped() if c.scale == scale and not c.denoise_base]
    models += [(label, upres.load(paths[scale], device="cpu", scale=scale))
               for label, paths in PEERS.items()
               if label in ("IMDN", "CARN-M") and scale in paths and paths[scale].is_file()]
    rows = []
    for label, up in models:
        res = evaluate(lambda im, up=up, **_: up.upscale(im), model_name=label,
                       dataset=folder, scale=scale, with_ssim=False, images=images)
        per = {r.name: r.psnr_y for r in res.per_image}
        rows.append((label, res.psnr_y, [per[n] for n in PHOTOS]))
        print(f"x{scale} {label:24s} " + " ".join(f"{v:.2f}" for v in rows[-1][2])
              + f"  mean {res.psnr_y:.3f}", flush=True)
    return rows


def section(scale: int, rows: list[tuple[str, float, list[float]]]) -> str:
    """Markdown of one scale's table."""
    head = ("| model | mean | median | " + " | ".join(PHOTOS) + " |\n|---|---|---|"
            + "---|" * len(PHOTOS))
    body = "\n".join(f"| {label} | {mean:.3f} | {float(np.median(per)):.2f} | "
                     + " | ".join(f"{v:.2f}" for v in per) + " |" for label, mean, per in rows)
    return (f"PSNR-Y (dB) at x{scale} on scikit-image's bundled photographs (not in shared/; "
            "five gray, three textures: the script's docstring), standard protocol (modcrop, "
            "MATLAB-bicubic LR, Y, the scale shaved), each upres model but the photo models at "
            "its default path; peers through upres's architectures with their authors' weights "
            "(measured only).\n\n" + head + "\n" + body + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scales", type=int, nargs="+", default=[2, 3, 4])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="upres-outside-") as tmp:
        folder = photo_folder(Path(tmp))
        for s in args.scales:
            rows = run(s, folder)
            update_section(f"outside-x{s}", f"Photographs outside shared/, x{s}", section(s, rows))


if __name__ == "__main__":
    main()
