"""NIQE (no-reference naturalness) with upres's pristine model fitted on the 291 images."""

from __future__ import annotations

import numpy as np
import pytest

from upres.io import read_rgb8
from upres.niqe import NiqeModel, fit_niqe, niqe, niqe_features
from upres.resize import imresize

from conftest import BENCH


@pytest.fixture(scope="module")
def photos():
    return [read_rgb8(BENCH / "Set14" / f"{n}.png") for n in ("baboon", "lenna", "zebra")]


def test_model_file_says_what_it_was_fitted_on():
    m = NiqeModel.load()
    assert m.mu.shape == (36,) and m.cov.shape == (36, 36)
    assert "291" in m.source and np.allclose(m.cov, m.cov.T)


def test_blur_and_noise_score_worse_than_the_originals(photos):
    rng = np.random.default_rng(0)
    for im in photos:
        clean = niqe(im)
        blurry = niqe(imresize(imresize(im, 1 / 4), 4.0))
        noisy = niqe(np.clip(im + rng.normal(0, 15, im.shape), 0, 255).astype(np.uint8))
        assert clean < noisy < blurry, (clean, noisy, blurry)
        assert niqe(im) == clean  # deterministic


def test_features_gray_16bit_and_size_limits(photos):
    im = photos[1]
    f8 = niqe_features(im)
    assert f8.shape == ((im.shape[0] // 96) * (im.shape[1] // 96), 36)
    f16 = niqe_features(im.astype(np.uint16) * 257)
    np.testing.assert_allclose(f16, f8, rtol=1e-6, atol=1e-9)
    assert niqe_features(im[:, :, 0]).shape == f8.shape
    assert len(niqe_features(im, sharp_only=0.75)) < len(f8)
    with pytest.raises(ValueError, match="at least 96x96"):
        niqe_features(im[:50, :50])


def test_fit_on_own_images_scores_them_low(photos):
    model = fit_niqe(photos, source="test")
    assert niqe(photos[0], model) < niqe(imresize(imresize(photos[0], 0.25), 4.0), model)


def test_upres_eval_niqe(tmp_path, capsys):
    import json

    from upres.cli import main

    out = tmp_path / "e.json"
    assert main(["eval", "-m", "bicubic", "-d", str(BENCH / "Set5"), "-s", "2", "--niqe",
                 "--json", str(out)]) == 0
    (r,) = json.loads(out.read_text())
    assert r["niqe"] > 0 and all(p["niqe"] > 0 for p in r["per_image"])
    assert abs(r["niqe"] - np.mean([p["niqe"] for p in r["per_image"]])) < 1e-9
    assert "NIQE" in capsys.readouterr().out


def test_upres_eval_niqe_on_too_small_outputs_is_one_line(tmp_path, capsys):
    from upres.cli import main
    from upres.io import write_image

    write_image(tmp_path / "tiny.png", read_rgb8(BENCH / "Set5" / "bird.png")[:80, :80])
    assert main(["eval", "-m", "bicubic", "-d", str(tmp_path), "-s", "2", "--niqe"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "upres: tiny: NIQE needs at least 96x96 pixels, got 80x80"
