"""scripts/average_weights.py: a weighted mean of exported models, its card, and refusals."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from upres.models.archs.rfdn import RFDN
from upres.models.descriptor import ModelCard
from upres.models.weights import load_model, save_model

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "average_weights.py"


def _model(path: Path, value: float, blocks: int = 1) -> Path:
    net = RFDN(scale=2, channels=8, blocks=blocks)
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(value)
    hp = {"channels": 8, "blocks": blocks, "scale": 2}
    card = ModelCard(name="m", arch="rfdn", scale=2, hparams=hp,
                     params=sum(p.numel() for p in net.parameters()), psnr={"Set5": 30.0})
    return save_model(path, net, card)


def _run(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True,
                          text=True, timeout=60)


def test_weighted_average_and_card(tmp_path):
    a, b = _model(tmp_path / "a.safetensors", 1.0), _model(tmp_path / "b.safetensors", 4.0)
    out = tmp_path / "avg.safetensors"
    proc = _run(out, a, b, "--weights", "2", "1")
    assert proc.returncode == 0, proc.stderr
    model, card = load_model(out)
    for p in model.parameters():
        assert torch.allclose(p, torch.full_like(p, 2.0))  # (2*1 + 1*4) / 3
    assert card.psnr == {} and "weight average of" in card.notes and "x 2" in card.notes
    assert not list(tmp_path.glob("*.part"))


def test_refuses_mismatch_corrupt_and_overwrite(tmp_path):
    a = _model(tmp_path / "a.safetensors", 1.0)
    c = _model(tmp_path / "c.safetensors", 1.0, blocks=2)
    out = tmp_path / "avg.safetensors"
    proc = _run(out, a, c)
    assert proc.returncode != 0 and "c.safetensors: rfdn" in proc.stderr and "differs" in \
        proc.stderr
    assert not out.exists()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"garbage")
    proc = _run(out, a, bad)
    assert proc.returncode != 0 and "bad.safetensors: not a safetensors file" in proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()
    out.write_bytes(b"keep")
    proc = _run(out, a, a)
    assert proc.returncode != 0 and "exists; not overwritten" in proc.stderr
    assert out.read_bytes() == b"keep"
