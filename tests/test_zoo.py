"""The shipped models: present with recipe and log, honest cards, and above SRCNN on Set5."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors import safe_open

import upres
from upres.cli import main
from upres.io import read_rgb8
from upres.models import zoo
from upres.resize import imresize

from conftest import BENCH, ROOT

# SRCNN's published Set5 PSNR (Dong et al., TPAMI 2016): the floor for the first models.
SRCNN_SET5 = {2: 36.66, 3: 32.75, 4: 30.48}


def test_shipped_models_and_their_files():
    names = {c.name for c in zoo.shipped()}
    assert {"x2", "x3", "x4"} <= names
    for card in zoo.shipped():
        for ext in (".safetensors", ".yaml", ".log"):
            assert (zoo.ZOO_DIR / f"{card.name}{ext}").is_file()
        assert card.steps > 0 and "291" in card.trained_on
        assert set(card.psnr) == {"Set5", "Set14", "BSD100"}
        log = (zoo.ZOO_DIR / f"{card.name}.log").read_text()
        assert f"step {card.steps}/{card.steps}" in log
        with safe_open(str(zoo.ZOO_DIR / f"{card.name}.safetensors"), "pt") as f:
            n = sum(f.get_tensor(k).numel() for k in f.keys())  # noqa: SIM118
        assert n == card.params


def test_default_model_is_x4():
    assert upres.load().scale == 4


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_shipped_beats_srcnn_on_set5_via_upres_eval(scale, tmp_path):
    out = tmp_path / "e.json"
    assert main(["eval", "-m", f"x{scale}", "bicubic", "-d", str(BENCH / "Set5"),
                 "-s", str(scale), "--json", str(out)]) == 0
    model, bicubic = json.loads(out.read_text())
    assert model["psnr_y"] >= SRCNN_SET5[scale], model["psnr_y"]
    assert model["psnr_y"] > bicubic["psnr_y"] + 2.0
    card = next(c for c in zoo.shipped() if c.name == f"x{scale}")
    assert abs(card.psnr["Set5"] - model["psnr_y"]) < 0.01  # the card says what eval measures


def test_shipped_tiled_equals_untiled():
    up = upres.load("x3", device="cpu")
    lr = imresize(read_rgb8(BENCH / "Set14" / "zebra.png"), 1 / 3)
    whole = up.upscale(lr, tile=0)
    tiled = up.upscale(lr, tile=40, tile_overlap=12)
    assert np.abs(whole.astype(int) - tiled.astype(int)).max() <= 1


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    blocks = [b.split("```", 1)[0].strip() for b in readme.split("```bash\n")[1:3]]
    assert len(blocks) == 2
    assert blocks[1] in (ROOT / ".ci" / "run").read_text()
    assert "upres upscale" in blocks[0]


def test_photo_model_says_what_it_is_for_and_runs_everywhere(tmp_path):
    card = next(c for c in zoo.shipped() if c.name == "photo-x4")
    assert "forensic" in card.notes and "removes what it takes for noise" in card.notes
    assert "second-order" in card.trained_on and card.denoise_base == "x4"
    assert "JPEG" in card.summary and card.config["data"]["degradation"] == "leveled_single"
    assert card.denoise_level and card.config["model"]["denoise_base"]
    lr = imresize(read_rgb8(BENCH / "Set5" / "bird.png"), 1 / 4)
    out = upres.load("photo-x4").upscale(lr)
    assert out.shape == (lr.shape[0] * 4, lr.shape[1] * 4, 3)
    src = tmp_path / "bird_lr.png"
    from upres.io import write_image

    write_image(src, lr)
    assert main(["upscale", str(src), "-m", "photo-x4", "-o", str(tmp_path / "o.png"),
                 "-q"]) == 0


def test_every_card_says_photographs_only_and_invented_detail():
    """Issue 20: the cards say what the models were trained on and what they do to scans."""
    for card in zoo.shipped():
        assert "photographs only" in card.trained_on and "invent" in card.trained_on, card.name
