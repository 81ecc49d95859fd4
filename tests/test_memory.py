"""Tiling bounds memory: a 2000x2000 photo upscaled x4 (64 MP out) stays under 1.2 GB peak RSS."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from PIL import Image

from upres.bench import _frame
from upres.io import write_image


def test_64_megapixel_output_under_1200_mb(tmp_path):
    src = tmp_path / "photo.png"
    write_image(src, _frame(2000, 2000))
    out = tmp_path / "big.png"
    exe = Path(sys.executable).with_name("upres")
    # Linux records, at exec, the peak RSS of the memory image the new program replaces: a
    # child forked (or vforked) straight from this big pytest process would report pytest's own
    # peak. A small launcher process starts upres and reports its children's peak instead.
    launcher = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], "
                "stderr=subprocess.PIPE); sys.stderr.buffer.write(r.stderr); print(resource."
                "getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)")
    proc = subprocess.run([sys.executable, "-c", launcher, str(exe), "upscale", str(src), "-o",
                           str(out), "-m", "x4", "-q"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    peak_mb = int(proc.stdout.split()[-1]) / 1024
    assert peak_mb < 1200, f"peak RSS {peak_mb:.0f} MB"
    with Image.open(out) as im:
        assert im.size == (8000, 8000)
