"""onnxruntime vs PyTorch eager on this CPU: the shipped models at a 1280x720 output, PyTorch
fp32 (the architecture's default memory format), PyTorch bf16 autocast, and onnxruntime fp32
(the graph ``upres export`` writes), each measured by ``upres bench`` in a fresh process.

    .venv/bin/python benchmarks/bench_onnx.py [--models fast-x4 x4 fast-x2] [--repeat 10]

Writes the "onnx" section of docs/benchmarks.md, with the largest difference between the
onnxruntime and PyTorch fp32 outputs on the benchmark frame (8-bit levels).
"""

from __future__ import annotations

import argparse

import numpy as np

import upres
from upres.bench import _frame, bench

from _report import update_section


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["fast-x4", "x4", "fast-x2"])
    ap.add_argument("--repeat", type=int, default=10)
    args = ap.parse_args()
    rows = ["| model | input -> output | PyTorch fp32 ms | PyTorch bf16 ms | onnxruntime fp32 ms "
            "| ORT vs PyTorch fp32 | max output difference (levels) |",
            "|---|---|---|---|---|---|---|"]
    for name in args.models:
        scale = upres.load(name).scale
        w, h = 1280 // scale, 720 // scale
        res = {}
        for key, kw in (("fp32", {}), ("bf16", {"precision": "bf16"}),
                        ("ort", {"backend": "onnxruntime"})):
            r = bench(name, scale=scale, width=w, height=h, repeat=args.repeat, **kw)
            res[key] = r.latency_ms
            print(name, key, r.latency_ms, "ms", flush=True)
        frame = _frame(w, h)
        a = upres.load(name, device="cpu").upscale(frame, tile=0).astype(int)
        b = upres.load(name, backend="onnxruntime").upscale(frame, tile=0).astype(int)
        diff = int(np.abs(a - b).max())
        rows.append(f"| {name} | {w}x{h} -> {w * scale}x{h * scale} | {res['fp32']:.1f} | "
                    f"{res['bf16']:.1f} | {res['ort']:.1f} | {res['fp32'] / res['ort']:.2f}x | "
                    f"{diff} |")
    body = ("Median of the timed runs after warm-up, one image at a time, no tiling; the last "
            "column compares the two backends' 8-bit outputs. On this shared 2-core machine "
            "repeated runs differ by up to about 25 %.\n\n" + "\n".join(rows))
    print(body)
    update_section("onnx", "ONNX Runtime vs PyTorch (CPU)", body)


if __name__ == "__main__":
    main()
