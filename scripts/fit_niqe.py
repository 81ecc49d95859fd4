"""Fit upres's NIQE pristine model on the 291 training HR images (T91 + BSD200).

    .venv/bin/python scripts/fit_niqe.py [--train ../shared/data/train]

Writes src/upres/assets/niqe_291.npz (mean and covariance of the 36 NIQE features over the
sharp 96x96 patches). These are not the authors' pristine statistics: see upres.niqe.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from upres.data.datasets import scan_images
from upres.io import read_rgb8
from upres.niqe import MODEL_FILE, fit_niqe

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", default=str(ROOT.parent / "shared" / "data" / "train"))
    args = ap.parse_args()
    files = scan_images([args.train])
    images = [im for im in (read_rgb8(f) for f in files) if min(im.shape[:2]) >= 96]
    model = fit_niqe(images, source=f"{len(images)} HR images of the 291-image training set "
                                    "(T91 + BSD200), sharp 96x96 patches")
    model.save(MODEL_FILE)
    print(f"fitted on {len(images)} images -> {MODEL_FILE}")


if __name__ == "__main__":
    main()
