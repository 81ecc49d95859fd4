from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from upres import imresize
from upres.data.degrade import bicubic_down, modcrop
from upres.evaluate import evaluate
from upres.io import read_rgb8
from upres.metrics import psnr, psnr_y, rgb_to_y, ssim, ssim_y

from conftest import BENCH

# PROTOCOL.md, measured by an independent implementation of the standard recipe.
TABLE = {
    ("Set5", 2): (33.67, 0.9303), ("Set14", 2): (30.32, 0.8699), ("BSD100", 2): (29.56, None),
    ("Set5", 3): (30.40, 0.8689), ("Set14", 3): (27.63, 0.7759), ("BSD100", 3): (27.21, None),
    ("Set5", 4): (28.43, 0.8111), ("Set14", 4): (26.09, 0.7048), ("BSD100", 4): (25.96, None),
}


def _bicubic(scale):
    return lambda lr: imresize(lr, scale)


@pytest.mark.parametrize(("dataset", "scale"), sorted(TABLE))
def test_bicubic_baseline_matches_protocol_table(dataset, scale):
    want_psnr, want_ssim = TABLE[(dataset, scale)]
    res = evaluate(_bicubic(scale), model_name="bicubic", dataset=BENCH / dataset, scale=scale,
                   with_ssim=want_ssim is not None)
    assert abs(round(res.psnr_y, 2) - want_psnr) <= 0.01, res.psnr_y
    if want_ssim is not None:
        assert abs(round(res.ssim_y, 4) - want_ssim) <= 0.0001, res.ssim_y
    assert res.n_images == len(list((BENCH / dataset).glob("*.png")))


@pytest.mark.parametrize("name", ["Set14/baboon.png", "Set14/bridge.png", "Set5/butterfly.png",
                                  "BSD100/101085.png"])
def test_ssim_matches_skimage(name):
    hr = modcrop(read_rgb8(BENCH / name), 3)
    sr = imresize(bicubic_down(hr, 3), 3)
    a, b = rgb_to_y(sr)[3:-3, 3:-3], rgb_to_y(hr)[3:-3, 3:-3]
    ref = structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False, data_range=255)
    assert abs(ssim(a, b) - ref) < 1e-4
    assert ssim_y(sr, hr, shave=3) == pytest.approx(ssim(a, b), abs=1e-12)


def test_y_formula_and_gray():
    white = np.full((4, 4, 3), 255, np.uint8)
    black = np.zeros((4, 4, 3), np.uint8)
    assert rgb_to_y(white)[0, 0] == pytest.approx(235.0, abs=1e-9)
    assert rgb_to_y(black)[0, 0] == pytest.approx(16.0)
    g = np.arange(64, dtype=np.uint8).reshape(8, 8)
    np.testing.assert_allclose(rgb_to_y(g), rgb_to_y(np.repeat(g[:, :, None], 3, 2)))


def test_psnr_values_and_shave():
    a = np.zeros((10, 10), np.float64)
    b = a.copy()
    assert psnr(a, b) == math.inf
    b[:] = 255.0 / 10  # MSE = 25.5^2 -> PSNR 20 dB
    assert psnr(a, b) == pytest.approx(20.0)
    c = np.zeros((10, 10, 3), np.uint8)
    d = c.copy()
    d[0, :] = 200  # only the border differs: shaved away
    assert psnr_y(c, d, shave=1) == math.inf
    assert psnr_y(c, d, shave=0) < 30
    with pytest.raises(ValueError):
        psnr(np.zeros((4, 4)), np.zeros((4, 5)))
