"""How close the shipped models run to this CPU's convolution peak (issue 25, item 6).

The peak: a 3x3 convolution, 64 -> 64 channels (an UpNet body layer), channels-last, in fp32
and in bf16 where torch runs it, timed with ``torch.conv2d`` alone (8 layers in a row) on
feature maps from 48x48 (in cache) to 360x640 (a whole 1280x720 frame at x2, streamed from
memory); the best rate is
the most multiply-adds per second this CPU gives a convolution of this kind. Each shipped
model: ``Upscaler.upscale`` of one 1280x720 output (the full path: conversion, tiling,
network, rounding) at fp32 and bf16, its multiply-adds from the card (``gmacs``), and its
share of the peak of the same precision. All in one run; the instruction sets are read from
/proc/cpuinfo.

    .venv/bin/python benchmarks/bench_peak.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import upres
from upres.bench import _frame
from upres.models import zoo

from _report import update_section

OUT = (1280, 720)


def isa() -> str:
    """The vector and matrix instruction sets that matter for convolutions."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        flags = next(line.split(":", 1)[1].split() for line in text.splitlines()
                     if line.startswith("flags"))
    except (OSError, StopIteration):
        return "unknown"
    keep = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8",
            "avx_vnni")
    return ", ".join(f for f in keep if f in flags) or "none of AVX2/AVX-512/AMX"


SIZES = ((48, 48), (96, 96), (128, 128), (180, 320), (360, 640))


def best_of(fn, repeat: int) -> float:
    """The fastest of ``repeat`` timed calls after two untimed ones (seconds): on a shared
    machine the fastest run is the one least disturbed."""
    import time

    for _ in range(2):
        fn()
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def conv_peak(dtype: torch.dtype, repeat: int) -> tuple[float, tuple[int, int]]:
    """The best GMAC/s of a 64->64 3x3 convolution, channels-last, over feature maps of
    :data:`SIZES` (small ones stay in cache, large ones stream from memory), and its size."""
    best = (0.0, SIZES[0])
    w = torch.randn(64, 64, 3, 3).to(dtype).contiguous(memory_format=torch.channels_last)
    for h, wd in SIZES:
        x = torch.randn(1, 64, h, wd).to(dtype).contiguous(memory_format=torch.channels_last)
        reps = max(1, 360 * 640 // (h * wd))  # about the same work per timing
        def chain(x=x, reps=reps):  # layer after layer, as a network body runs them
            for _ in range(reps):
                y = x
                for _ in range(8):
                    y = torch.conv2d(y, w, padding=1)

        with torch.inference_mode():
            t = best_of(chain, repeat) / 8
        best = max(best, (64 * 64 * 9 * h * wd * reps / t / 1e9, (h, wd)))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    precisions = ["fp32", "bf16"]
    found = {"fp32": conv_peak(torch.float32, args.repeat)}
    try:
        found["bf16"] = conv_peak(torch.bfloat16, args.repeat)
    except RuntimeError:
        precisions = ["fp32"]
    peak = {p: v for p, (v, _) in found.items()}
    for p, (v, hw) in found.items():
        print(f"peak {p}: {v:.1f} GMAC/s at {hw[0]}x{hw[1]}", flush=True)
    rows = ["| model | GMACs (1280x720 out) | " + " | ".join(
        f"{p} ms | {p} GMAC/s | {p} share of peak" for p in precisions) + " |",
        "|---|---|" + "---|---|---|" * len(precisions)]
    for card in zoo.shipped():
        if not card.gmacs:
            continue
        s = card.scale
        lr = _frame(OUT[0] // s, OUT[1] // s)
        cells = []
        for p in precisions:
            up = upres.load(card.name, device="cpu", precision=p)
            if getattr(up, "precision", p) != p:  # not available for this model
                cells += ["-", "-", "-"]
                continue
            kw = {"denoise": 0.0} if card.denoise_base else {}
            t = best_of(lambda up=up, lr=lr, kw=kw: up.upscale(lr, **kw), args.repeat)
            rate = card.gmacs / t
            cells += [f"{t * 1e3:.0f}", f"{rate:.1f}", f"{100 * rate / peak[p]:.0f} %"]
        rows.append(f"| {card.name} | {card.gmacs:.1f} | " + " | ".join(cells) + " |")
        print(rows[-1], flush=True)
    body = (f"Instruction sets: {isa()}. Peak: the best of a 64->64 3x3 convolution, "
            "channels-last, `torch.conv2d` alone, 8 layers in a row, over feature maps from "
            "48x48 to 360x640: "
            + ", ".join(f"{p} {v:.1f} GMAC/s (at {hw[0]}x{hw[1]})"
                        for p, (v, hw) in found.items())
            + ". Each model: the full `Upscaler.upscale` path for one 1280x720 output, its "
            "multiply-adds from its card, and that rate as a share of the peak of the same "
            f"precision (all times: the fastest of {args.repeat}); photo models at strength 0 "
            "(every strength costs the same). Not measured here: onnxruntime int8 (issue 25 "
            "item 1 is not done).\n\n" + "\n".join(rows))
    update_section("conv-peak", "Convolution peak and each model's share of it", body)


if __name__ == "__main__":
    main()
