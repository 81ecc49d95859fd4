"""Measure a shipped model's PSNR/SSIM again and write them into its card, weights untouched.

    .venv/bin/python scripts/remeasure_card.py photo-x2 photo-x4

For when what a model does changed without its weights changing (a photo model's automatic
clean-up strength comes from the level estimator, ``upres/assets/level_x{s}.safetensors``): the
model is loaded as users get it (``upres.load(name)``, photo models at ``auto``) and evaluated
on Set5, Set14 and BSD100 by the standard protocol, the same ``evaluate`` as ``upres eval`` and
``scripts/ship_model.py``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import upres
from upres.evaluate import evaluate
from upres.models.weights import load_model, save_model
from upres.models.zoo import ZOO_DIR

BENCH = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "benchmark"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="+")
    args = ap.parse_args()
    for name in args.names:
        path = ZOO_DIR / f"{name}.safetensors"
        model, card = load_model(path)
        up = upres.load(name, device="cpu")
        psnr, ssim = {}, {}
        for ds in ("Set5", "Set14", "BSD100"):
            res = evaluate(up.upscale, model_name=name, dataset=BENCH / ds, scale=card.scale)
            psnr[ds], ssim[ds] = round(res.psnr_y, 4), round(res.ssim_y, 5)
            print(f"{name} {ds} x{card.scale}: PSNR-Y {res.psnr_y:.3f} (card "
                  f"{card.psnr.get(ds, float('nan')):.3f}) SSIM-Y {res.ssim_y:.4f}", flush=True)
        save_model(path, model, card.with_(psnr=psnr, ssim=ssim))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
