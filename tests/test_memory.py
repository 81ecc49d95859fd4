"""Tiling bounds memory: a 2000x2000 photo upscaled x4 (64 MP out) stays under 1.2 GB peak RSS."""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

from upres.bench import _frame, run_peak_rss
from upres.io import write_image


def test_64_megapixel_output_under_1200_mb(tmp_path):
    src = tmp_path / "photo.png"
    write_image(src, _frame(2000, 2000))
    out = tmp_path / "big.png"
    exe = Path(sys.executable).with_name("upres")
    status, err, peak_mb = run_peak_rss([str(exe), "upscale", str(src), "-o", str(out), "-m",
                                         "x4", "-q"])
    assert status == 0, err
    assert peak_mb < 1200, f"peak RSS {peak_mb:.0f} MB"
    with Image.open(out) as im:
        assert im.size == (8000, 8000)


def test_bench_reports_the_childs_own_peak_memory():
    """``upres bench`` measures in a spawned child; a big caller must not inflate its peak RSS
    (Linux hands the replaced image's peak to the new program at exec)."""
    import numpy as np

    from upres.bench import bench

    ballast = np.ones(125_000_000)  # 1 GB, touched, in this (calling) process
    r = bench("bicubic", scale=2, width=32, height=32, repeat=1, warmup=0)
    assert ballast[-1] == 1.0
    assert 50 < r.peak_rss_mb < 900, r.peak_rss_mb
