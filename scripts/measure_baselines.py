"""Measure the interpolation baselines' PSNR-Y and write ``src/upres/zoo/baselines.json``.

    .venv/bin/python scripts/measure_baselines.py

``upres models`` reads that file to show bicubic/lanczos rows. Standard protocol: MATLAB-bicubic
LR, then MATLAB ``imresize`` back up with the 'bicubic' or 'lanczos3' kernel.
"""

from __future__ import annotations

import json
from pathlib import Path

from upres.evaluate import evaluate, load_benchmark
from upres.inference.upscaler import Interpolator
from upres.models.zoo import BASELINES, ZOO_DIR

BENCH = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "benchmark"


def main() -> None:
    table: dict[str, dict[str, dict[str, float]]] = {b: {} for b in BASELINES}
    for scale in (2, 3, 4):
        for ds in ("Set5", "Set14", "BSD100"):
            images = load_benchmark(BENCH / ds, scale)
            for name in BASELINES:
                up = Interpolator(name, scale)
                res = evaluate(up.upscale, model_name=name, dataset=BENCH / ds, scale=scale,
                               with_ssim=False, images=images)
                table[name].setdefault(f"x{scale}", {})[ds] = round(res.psnr_y, 4)
                print(f"{name} x{scale} {ds}: {res.psnr_y:.3f}")
    (ZOO_DIR / "baselines.json").write_text(json.dumps(table, indent=2) + "\n")


if __name__ == "__main__":
    main()
