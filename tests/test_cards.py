"""scripts/stamp_cards.py: a shipped card gains GMACs, measured CPU latency and (from its log)
the training wall time, and the weights are written back bit for bit."""

from __future__ import annotations

import shutil
import sys

from safetensors.torch import load_file

from upres.models.weights import load_model
from upres.models.zoo import ZOO_DIR

from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
from stamp_cards import log_wall, stamp


def test_stamp_fills_size_speed_and_wall_time(tmp_path):
    # fast-x3: one training stage, so its log's first and last lines are that run's wall time
    path = tmp_path / "fast-x3.safetensors"
    shutil.copy(ZOO_DIR / "fast-x3.safetensors", path)
    shutil.copy(ZOO_DIR / "fast-x3.log", tmp_path / "fast-x3.log")
    _, card0 = load_model(path)
    line = stamp(path, repeat=1)
    _, card = load_model(path)
    assert 13.5 < card.gmacs < 14.5  # UpNet 48x6 at x3: 14.05 GMACs for 1280x720
    assert card.cpu_ms > 0 and "cores" in card.bench_machine
    secs, threads = log_wall(tmp_path / "fast-x3.log")
    assert threads == "1 threads" and secs == 1274.0  # 13:18:56 -> 13:40:10 in the log
    if not card0.train_seconds:
        assert card.train_seconds == secs and "from the training log" in card.machine
    assert card.psnr == card0.psnr and card.name == "fast-x3" and "fast-x3" in line
    a, b = load_file(ZOO_DIR / "fast-x3.safetensors"), load_file(path)
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
