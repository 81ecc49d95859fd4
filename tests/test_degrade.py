"""Degradations: each deterministic for a seed, with the documented shapes and effects."""

from __future__ import annotations

import numpy as np
import pytest

from upres.data import degrade as D
from upres.io import read_rgb8

from conftest import BENCH


@pytest.fixture(scope="module")
def hr() -> np.ndarray:
    return read_rgb8(BENCH / "Set5" / "butterfly.png")[64:160, 64:160].astype(np.float32) / 255


RANDOM_STEPS = {
    "blur": D.random_blur,
    "resize": D.random_resize,
    "noise": D.random_noise,
    "jpeg": D.random_jpeg,
    "second_order_x4": D.second_order(4),
    "pipeline_x2": D.Pipeline(scale=2, steps=(D.random_blur, D.random_noise)),
}


@pytest.mark.parametrize("name", sorted(RANDOM_STEPS))
def test_deterministic_for_a_seed(hr, name):
    step = RANDOM_STEPS[name]
    keep = hr.copy()
    a = step(hr, np.random.default_rng(7))
    b = step(hr, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(hr, keep)  # input untouched
    outs = [step(hr, np.random.default_rng(s)) for s in range(4)]
    assert any(o.shape != outs[0].shape or not np.array_equal(o, outs[0]) for o in outs[1:])


def test_pipeline_output_size_and_range(hr):
    lr = D.second_order(4)(hr, np.random.default_rng(0))
    assert lr.shape == (24, 24, 3) and lr.dtype == np.float32
    assert lr.min() >= 0 and lr.max() <= 1


def test_kernels_normalised_and_oriented():
    k = D.gaussian_kernel(11, 2.0)
    assert k.shape == (11, 11) and k.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(k, k.T)
    a = D.anisotropic_gaussian_kernel(15, 3.0, 0.5, 0.0)  # wide along x
    assert a.sum() == pytest.approx(1.0)
    assert a[7].sum() > a[:, 7].sum()
    with pytest.raises(ValueError):
        D.gaussian_kernel(4, 1.0)


def test_noise_levels_and_gray_noise(hr):
    rng = np.random.default_rng(1)
    n = D.add_gaussian_noise(hr, 0.05, rng) - hr
    assert abs(n.std() - 0.05) < 0.005
    g = D.add_gaussian_noise(hr, 0.05, rng, gray=True) - hr
    np.testing.assert_allclose(g[..., 0], g[..., 1], atol=1e-6)


def test_jpeg_and_bicubic_down(hr):
    low, high = D.jpeg(hr, 10), D.jpeg(hr, 95)
    assert np.abs(low - hr).mean() > np.abs(high - hr).mean()
    u8 = read_rgb8(BENCH / "Set5" / "bird.png")
    assert D.bicubic_down(u8, 3).shape == (u8.shape[0] // 3, u8.shape[1] // 3, 3)


def test_blind_test_set_is_deterministic_and_sized(tmp_path):
    from upres.data.blindset import make_blind_set
    from upres.io import read_rgb8

    a = make_blind_set(BENCH / "Set5", tmp_path / "a", scale=4, seed=7)
    b = make_blind_set(BENCH / "Set5", tmp_path / "b", scale=4, seed=7)
    c = make_blind_set(BENCH / "Set5", tmp_path / "c", scale=4, seed=8)
    assert [p.name for p in a] == ["babyx4.png", "birdx4.png", "butterflyx4.png", "headx4.png",
                                   "womanx4.png"]
    for pa, pb, pc in zip(a, b, c, strict=True):
        assert pa.read_bytes() == pb.read_bytes()
        assert pa.read_bytes() != pc.read_bytes()
        hr = read_rgb8(BENCH / "Set5" / pa.name.replace("x4", ""))
        assert read_rgb8(pa).shape == (hr.shape[0] // 4, hr.shape[1] // 4, 3)
