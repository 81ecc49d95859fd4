"""Blind SR evaluation: models on Set14 and BSD100 with clean (MATLAB bicubic) and blind
(second-order degraded, seeded; scripts/make_blind_testset.py) x4 inputs: PSNR-Y, SSIM-Y and the
NIQE of the outputs (upres's pristine model fitted on the 291 training images), plus a visual
report of crops.

    .venv/bin/python benchmarks/blind_eval.py [--models bicubic x4 photo-x4] [--report DIR]

Writes the "blind" section of docs/benchmarks.md and the report (default docs/blind-report:
`upres eval --report` on blind Set14).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import upres
from upres.cli import main as cli
from upres.data.blindset import make_blind_set
from upres.evaluate import evaluate, load_benchmark

from _report import update_section

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT.parent / "shared" / "data" / "benchmark"
BLIND = ROOT / "runs" / "blind-x4"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["bicubic", "x4", "photo-x4"])
    ap.add_argument("--report", default=str(ROOT / "docs" / "blind-report"))
    args = ap.parse_args()
    ups = [(m, upres.load(m, scale=4, device="cpu")) for m in args.models]
    rows = {}
    for ds in ("Set14", "BSD100"):
        make_blind_set(BENCH / ds, BLIND / ds, scale=4)
        for cond, lr_dir in (("clean", None), ("blind", BLIND / ds)):
            images = load_benchmark(BENCH / ds, 4, lr_dir)
            for name, up in ups:
                r = evaluate(up.upscale, model_name=name, dataset=BENCH / ds, scale=4,
                             images=images, niqe=True)
                rows[(name, ds, cond)] = r
                print(f"{name:<16} {ds:<7} {cond:<6} PSNR-Y {r.psnr_y:6.2f} SSIM-Y "
                      f"{r.ssim_y:.4f} NIQE {r.niqe:5.2f}", flush=True)
    head = ("| model | Set14 clean | Set14 blind | BSD100 clean | BSD100 blind |\n"
            "|---|---|---|---|---|")
    lines = [head]
    for name, _ in ups:
        cells = [f"{rows[(name, ds, c)].psnr_y:.2f} / {rows[(name, ds, c)].ssim_y:.4f} / "
                 f"{rows[(name, ds, c)].niqe:.2f}" for ds in ("Set14", "BSD100")
                 for c in ("clean", "blind")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    body = ("Cells: PSNR-Y (dB) / SSIM-Y / NIQE (lower is more natural). Clean: MATLAB-bicubic "
            "x4 LR (the standard protocol). Blind: the same HR images degraded by the second-"
            "order pipeline (blur, resize, noise, JPEG, twice; seed 2026 per image: "
            "`scripts/make_blind_testset.py`). NIQE uses upres's pristine model fitted on the "
            "291 training images, so it compares these rows with each other, not with published "
            "NIQE values. HR images score NIQE "
            f"{_hr_niqe('Set14'):.2f} (Set14) and {_hr_niqe('BSD100'):.2f} (BSD100).\n\n"
            + "\n".join(lines))
    if "x4" in args.models and "photo-x4" in args.models:
        gain = {ds: rows[("photo-x4", ds, "blind")].psnr_y - rows[("x4", ds, "blind")].psnr_y
                for ds in ("Set14", "BSD100")}
        body += ("\n\nphoto-x4 minus x4 on the blind inputs: "
                 + ", ".join(f"{ds} {g:+.2f} dB" for ds, g in gain.items()) + ".")
    print(body)
    update_section("blind", "Blind SR: clean vs degraded inputs (x4)", body)
    cli(["eval", "-m", *args.models, "-d", str(BENCH / "Set14"), "-s", "4", "--lr-dir",
         str(BLIND / "Set14"), "--report", args.report, "--overwrite"])


def _hr_niqe(ds: str) -> float:
    from upres.io import read_rgb8
    from upres.niqe import niqe

    files = sorted((BENCH / ds).glob("*.png"))
    return sum(niqe(read_rgb8(f)) for f in files) / len(files)


if __name__ == "__main__":
    main()
