"""Tiling bounds memory: a 2000x2000 photo upscaled x4 (64 MP out) stays under 1.2 GB peak RSS."""

from __future__ import annotations

import os
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
    proc = subprocess.Popen([str(exe), "upscale", str(src), "-o", str(out), "-m", "x4", "-q"],
                            stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    err = proc.stderr.read().decode() if proc.stderr else ""
    assert status == 0, err
    peak_mb = usage.ru_maxrss / 1024
    assert peak_mb < 1200, f"peak RSS {peak_mb:.0f} MB"
    with Image.open(out) as im:
        assert im.size == (8000, 8000)
