"""Make the bundled int8 calibration crops from the 291 training images (T91 + BSD200).

    .venv/bin/python scripts/make_calibration.py [--train ../shared/data/train]

Writes src/upres/assets/calib_291.npz: 48 seeded random 96x96 RGB crops, one per image, of
training HR images (never benchmark images). ``upres.quantize`` shrinks them by MATLAB bicubic
at each model's scale to calibrate the int8 activation ranges.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from upres.data.datasets import scan_images
from upres.io import read_rgb8
from upres.quantize import CALIB_FILE, make_calibration

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", default=str(ROOT.parent / "shared" / "data" / "train"))
    args = ap.parse_args()
    files = scan_images([args.train])
    crops = make_calibration([read_rgb8(f) for f in files])
    np.savez_compressed(CALIB_FILE, crops=crops,
                        source=f"48 seeded 96x96 crops of {len(files)} training HR images "
                               "(T91 + BSD200), scripts/make_calibration.py")
    print(f"{crops.shape} from {len(files)} images -> {CALIB_FILE} "
          f"({CALIB_FILE.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
