"""Pack the training images small enough to travel with the working tree to a lent GPU machine.

The device tool copies the working tree plus the paths named in ``carry``, 64 MiB in all; the
291 images take 66 MB as PNG/BMP. This re-encodes each one as lossless WebP (pixel-exact,
checked after writing) under ``gpu-data/`` (git-ignored), keeping the folder layout, and prints
the total. Then, for example::

    python scripts/pack_train_data.py                       # -> gpu-data/train/{BSD200,T91}
    # device run, carry ["gpu-data"]:
    #   upres train configs/x2-base.yaml --set 'data.train=[gpu-data/train]' --run-dir $OUT/x2 ...

Only the training images are packed: the benchmark sets stay on this machine, where the
checkpoints that come back through ``$OUT`` are evaluated.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from upres.data.datasets import scan_images
from upres.errors import UpresError
from upres.io import read_rgb8

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", type=Path, default=ROOT.parent / "shared" / "data" / "train")
    ap.add_argument("--dst", type=Path, default=ROOT / "gpu-data" / "train")
    args = ap.parse_args()
    total = 0
    files = scan_images([args.src])
    for f in files:
        out = args.dst / f.relative_to(args.src).with_suffix(".webp")
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            rgb = read_rgb8(f)  # what training reads: 8-bit RGB
        except UpresError as exc:
            raise SystemExit(f"pack_train_data: {exc}") from None
        Image.fromarray(rgb).save(out, format="WEBP", lossless=True, quality=100, method=4)
        if not np.array_equal(read_rgb8(out), rgb):
            raise SystemExit(f"pack_train_data: {out}: lossless WebP did not round-trip")
        total += out.stat().st_size
    print(f"{len(files)} images -> {args.dst}: {total / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
