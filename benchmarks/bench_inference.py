"""CPU speed of the default model for a 320x180 -> 1280x720 x4 frame: fp32 vs bf16, with and
without channels_last, beside OpenCV dnn_superres FSRCNN/ESPCN x4 (official graphs from
../shared/peers) run in this same process on the same input.

    .venv/bin/python benchmarks/bench_inference.py [--repeat 10]

Writes the "inference" section of docs/benchmarks.md. Also reports how far bf16 output is from
fp32 output (max and mean absolute difference in 8-bit levels) and Set5 PSNR-Y at each precision.
These figures decide the CPU defaults: precision fp32 (bf16 on request, or by ``precision="auto"``,
whose choice on this machine is reported too), and channels_last for an architecture only where
it is faster (ArchSpec.channels_last_cpu).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

import upres
from upres.bench import _frame
from upres.evaluate import evaluate

from _report import timeit, update_section

PEERS = Path(__file__).resolve().parents[2] / "shared" / "peers" / "opencv_dnn_superres"
BENCH = Path(__file__).resolve().parents[2] / "shared" / "data" / "benchmark"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="x4")
    ap.add_argument("--repeat", type=int, default=10)
    args = ap.parse_args()
    frame = _frame(320, 180)
    out_mp = 1280 * 720 / 1e6
    rows = []
    ref = None
    for precision in ("fp32", "bf16"):
        for cl in (False, True):
            up = upres.load(args.model, device="cpu", precision=precision, channels_last=cl)
            lat = timeit(lambda up=up: up.upscale(frame, tile=0), args.repeat, warmup=2)
            out = up.upscale(frame, tile=0)
            if ref is None:
                ref = out.astype(int)
            d = np.abs(out.astype(int) - ref)
            rows.append((f"upres {args.model} ({up.card.params} params)", precision,
                         "yes" if cl else "no", lat, f"{d.max()} / {d.mean():.3f}"))
            print(rows[-1])
    psnr = {}
    for precision in ("fp32", "bf16"):
        up = upres.load(args.model, device="cpu", precision=precision, channels_last=True)
        psnr[precision] = evaluate(lambda lr, up=up: up.upscale(lr, tile=0), model_name="m",
                                   dataset=BENCH / "Set5", scale=up.scale,
                                   with_ssim=False).psnr_y
    auto = upres.load(args.model, device="cpu", precision="auto")
    print(auto.precision_note)
    for name in ("FSRCNN", "ESPCN"):
        sr = cv2.dnn_superres.DnnSuperResImpl_create()
        sr.readModel(str(PEERS / f"{name}_x4.pb"))
        sr.setModel(name.lower(), 4)
        bgr = np.ascontiguousarray(frame[:, :, ::-1])
        lat = timeit(lambda sr=sr, bgr=bgr: sr.upsample(bgr), args.repeat, warmup=2)
        rows.append((f"OpenCV dnn_superres {name} x4", "fp32", "-", lat, "-"))
        print(rows[-1])
    lines = ["| model | precision | channels_last | latency (ms) | MP/s out | "
             "max / mean abs diff vs fp32 (8-bit levels) |", "|---|---|---|---|---|---|"]
    for name, prec, cl, lat, diff in rows:
        lines.append(f"| {name} | {prec} | {cl} | {lat * 1000:.1f} | {out_mp / lat:.2f} | "
                     f"{diff} |")
    body = ("Input 320x180 RGB (the bundled sample resized), output 1280x720, whole frame (no "
            "tiling), median of "
            f"{args.repeat} runs after 2 warm-up runs, end to end (uint8 in, uint8 out).\n\n"
            + "\n".join(lines)
            + f"\n\nSet5 PSNR-Y of `{args.model}`: fp32 {psnr['fp32']:.3f} dB, bf16 "
            f"{psnr['bf16']:.3f} dB.\n\n`upres.load({args.model!r}, precision=\"auto\")` on this "
            f"machine: {auto.precision_note}.\n")
    update_section("inference", "Inference speed on CPU (x4, 1280x720 output)", body)


if __name__ == "__main__":
    main()
