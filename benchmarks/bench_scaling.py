"""Cost of ``upres upscale`` against image size: 1, 4, 16 and 64 megapixels of output (x4),
each in a fresh process, with wall time and peak RSS (automatic tiling, PNG in and out).

    .venv/bin/python benchmarks/bench_scaling.py

Writes the "scaling" section of docs/benchmarks.md.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from upres.bench import _frame, run_peak_rss
from upres.io import write_image

from _report import update_section

ROOT = Path(__file__).resolve().parents[1]


def run(src: Path, out: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one ``upres upscale`` process."""
    exe = Path(sys.executable).with_name("upres")
    t = time.perf_counter()
    status, err, peak = run_peak_rss([str(exe), "upscale", str(src), "-o", str(out), "-m",
                                      "x4", "-q", "--overwrite"])
    wall = time.perf_counter() - t
    if status != 0:
        raise SystemExit(f"upscale failed with status {status}: {err}")
    return wall, peak


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for side in (250, 500, 1000, 2000):
            src = Path(d) / f"in{side}.png"
            write_image(src, _frame(side, side))
            wall, rss = run(src, Path(d) / f"out{side}.png")
            mp = (side * 4) ** 2 / 1e6
            rows.append((side, mp, wall, rss))
            print(side, mp, round(wall, 2), round(rss))
    base = rows[0][2] / rows[0][1]
    lines = ["| input | output | wall time (s) | s per output MP | peak RSS (MB) |",
             "|---|---|---|---|---|"]
    for side, mp, wall, rss in rows:
        lines.append(f"| {side}x{side} | {side * 4}x{side * 4} ({mp:.0f} MP) | {wall:.2f} | "
                     f"{wall / mp:.3f} | {rss:.0f} |")
    body = ("`upres upscale IN.png -o OUT.png -m x4` in a fresh process per size (wall time "
            "includes start-up, PNG decode and encode); the input is the bundled sample resized. "
            f"Seconds per output megapixel at 1 MP: {base:.3f}.\n\n" + "\n".join(lines))
    update_section("scaling", "Cost against image size (x4, automatic tiling)", body)


if __name__ == "__main__":
    main()
