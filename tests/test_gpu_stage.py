"""scripts/gpu_stage.py (time-boxed training of several runs side by side), run here on the
CPU: the probe, the fitted schedule (a resumed run restarts its cosine where it stands and
ends it on time), the packed run folders."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

import torch
import yaml

import upres
from upres.train.config import load_config
from upres.train.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_stage_fits_schedules_to_the_time(tiny, tmp_path):
    cfg = load_config(tiny, ["optim.steps=6", "val_every=100000"])
    Trainer(cfg, tmp_path / "old", log=lambda _: None).run()  # a finished run to go on with
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gpu_stage.py"), "--out", str(out),
         "--work", str(tmp_path / "work"), "--budget", "80", "--reserve", "40", "--probe", "20",
         "--ckpt-every", "2", "--set", "device=cpu", "--set", "threads=1",
         "--set", "val_every=100000",
         "--job", f"old={tmp_path / 'old'};optim.lr=5e-4", "--job", f"new={tiny};optim.steps=1000",
         "--job", f"bad={tiny};optim.loss=l7"],  # fails at once: the others go on
        capture_output=True, text=True, timeout=150)
    said = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "probe failed for bad (packed as it was)" in said, said
    assert "bad: no run folder to pack" in said and not (out / "bad.tar").exists()
    for name, start in (("old", 6), ("new", 0)):
        with tarfile.open(out / f"{name}.tar") as tar:
            tar.extractall(tmp_path / "back", filter="data")
        run = tmp_path / "back" / name
        c = yaml.safe_load((run / "config.yaml").read_text())["optim"]
        step = torch.load(run / "last.pt", weights_only=False)["step"]
        # the schedule ran to its (fitted) end within the time, and the weights were exported
        assert step == c["steps"] > start + 20
        assert upres.load(str(run / "final.safetensors")).card.steps == step
        log = (run / "train.log").read_text()
        assert f"resumed from {tmp_path / 'work' / name / 'last.pt'} at step {start + 20}" in log
        if name == "old":  # a new cycle from where it was resumed, at the job's own rate
            assert c["restart"] == start and c["lr"] == 5e-4
        else:
            assert c["restart"] == 0


def test_gpu_stage_names_a_missing_job_source(tmp_path):
    missing = tmp_path / "no-such-run"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gpu_stage.py"), "--out", str(tmp_path / "out"),
         "--work", str(tmp_path / "work"), "--budget", "60", "--job", f"x={missing}"],
        capture_output=True, text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert str(missing) in lines[0] and "neither a config file nor a run folder" in lines[0]
    assert not (tmp_path / "work" / "x").exists()
