"""scripts/average_weights.py: a weighted mean of exported models, its card, and refusals."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "average_weights.py"


def _model(path: Path, value: float, shape=(2, 3)) -> Path:
    card = {"name": "m", "psnr": {"Set5": 30.0}, "ssim": {}, "notes": ""}
    save_file({"w": torch.full(shape, value), "b": torch.tensor([value, 2 * value])}, str(path),
              metadata={"upres": json.dumps(card)})
    return path


def _run(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True,
                          text=True, timeout=60)


def test_weighted_average_and_card(tmp_path):
    a, b = _model(tmp_path / "a.safetensors", 1.0), _model(tmp_path / "b.safetensors", 4.0)
    out = tmp_path / "avg.safetensors"
    proc = _run(out, a, b, "--weights", "2", "1")
    assert proc.returncode == 0, proc.stderr
    with safe_open(str(out), "pt") as f:
        assert torch.allclose(f.get_tensor("w"), torch.full((2, 3), 2.0))  # (2*1 + 1*4) / 3
        assert torch.allclose(f.get_tensor("b"), torch.tensor([2.0, 4.0]))
        card = json.loads(f.metadata()["upres"])
    assert card["psnr"] == {} and "weight average of" in card["notes"] and "x 2" in card["notes"]
    assert not list(tmp_path.glob("*.part"))


def test_refuses_mismatch_and_overwrite(tmp_path):
    a = _model(tmp_path / "a.safetensors", 1.0)
    c = _model(tmp_path / "c.safetensors", 1.0, shape=(3, 3))
    out = tmp_path / "avg.safetensors"
    proc = _run(out, a, c)
    assert proc.returncode != 0 and "c.safetensors: w has shape (3, 3)" in proc.stderr
    assert not out.exists()
    out.write_bytes(b"keep")
    proc = _run(out, a, a)
    assert proc.returncode != 0 and "exists; not overwritten" in proc.stderr
    assert out.read_bytes() == b"keep"
