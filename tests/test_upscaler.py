"""The Upscaler keeps the input's kind and dtype, routes gray/alpha, and never edits the input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import upres
from upres.errors import UpresError
from upres.inference.tiling import tile_grid
from upres.inference.upscaler import Upscaler, to_dtype
from upres.models import REGISTRY, ModelCard


@pytest.fixture(scope="module")
def up() -> Upscaler:
    torch.manual_seed(1)
    m = REGISTRY.build("upnet", {"scale": 2, "channels": 8, "depth": 2})
    return Upscaler(m, ModelCard("t", "upnet", 2, {}, 0), device="cpu")


def _img(shape, dtype):
    rng = np.random.default_rng(3)
    hi = 256 if dtype == np.uint8 else 65536
    return rng.integers(0, hi, shape).astype(dtype)


@pytest.mark.parametrize("shape", [(20, 30), (20, 30, 1), (20, 30, 3), (20, 30, 4)])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_kind_dtype_shape_kept(up, shape, dtype):
    img = _img(shape, dtype)
    keep = img.copy()
    out = up.upscale(img)
    assert out.dtype == dtype
    assert out.shape == (40, 60, *shape[2:])
    np.testing.assert_array_equal(img, keep)


def test_float_and_pil(up):
    f = np.random.default_rng(0).random((10, 12, 3), dtype=np.float32)
    assert up.upscale(f).dtype == np.float32
    pil = Image.fromarray(_img((10, 12, 3), np.uint8))
    out = up.upscale(pil)
    assert isinstance(out, Image.Image) and out.size == (24, 20)


def test_zero_model_is_nearest_neighbour():
    """UpNet starts as nearest-neighbour (zero residual): a known answer for the data path."""
    m = REGISTRY.build("upnet", {"scale": 3, "channels": 4, "depth": 1})
    u = Upscaler(m, ModelCard("z", "upnet", 3, {}, 0), device="cpu")
    img = _img((7, 9, 3), np.uint16)
    np.testing.assert_array_equal(u.upscale(img), img.repeat(3, 0).repeat(3, 1))
    g = _img((5, 6), np.uint8)
    np.testing.assert_array_equal(u.upscale(g), g.repeat(3, 0).repeat(3, 1))


def test_uint16_keeps_precision():
    """A 16-bit image is not flattened to 8 bits on the way through."""
    m = REGISTRY.build("upnet", {"scale": 2, "channels": 4, "depth": 1})
    u = Upscaler(m, ModelCard("z", "upnet", 2, {}, 0), device="cpu")
    img = (np.arange(16 * 16 * 3) % 65536).astype(np.uint16).reshape(16, 16, 3) + 1000
    out = u.upscale(img)
    assert len(np.unique(out % 257)) > 10  # values between 8-bit levels survive


def test_to_dtype_rounds_not_truncates():
    x = np.array([0.0, 0.4 / 255, 0.6 / 255, 1.2, -0.1], np.float32)
    np.testing.assert_array_equal(to_dtype(x, np.uint8), [0, 0, 1, 255, 0])


def test_bad_inputs(up):
    with pytest.raises(UpresError, match="expected"):
        up.upscale(np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(UpresError, match="int32"):
        up.upscale(np.zeros((4, 4), np.int32))
    with pytest.raises(UpresError):
        up.upscale(42)


@pytest.mark.parametrize("align", [1, 2, 4])
def test_tile_grid_covers_exactly_once(align):
    cover = np.zeros((50, 33), int)
    for t in tile_grid(50, 33, 16, 5, align):
        y0, y1, x0, x1 = t.core
        cover[y0:y1, x0:x1] += 1
        py0, py1, px0, px1 = t.padded
        assert py0 <= y0 and py1 >= y1 and px0 <= x0 and px1 >= x1
        assert y0 % align == x0 % align == py0 % align == px0 % align == 0
    assert (cover == 1).all()


def test_interpolators_and_load_errors():
    bic = upres.load("bicubic", scale=3)
    assert bic.upscale(np.zeros((5, 5, 3), np.uint8)).shape == (15, 15, 3)
    assert upres.load("lanczos", scale=2).upscale(np.zeros((4, 6), np.uint16)).shape == (8, 12)
    with pytest.raises(UpresError, match="not a shipped model"):
        upres.load("no-such-model")


def test_fp16_on_cpu_is_not_a_crash(capsys):
    m = REGISTRY.build("upnet", {"scale": 2, "channels": 4, "depth": 1})
    u = Upscaler(m, ModelCard("z", "upnet", 2, {}, 0), device="cpu", precision="fp16")
    assert u.precision == "fp32"
    assert "fp16" in capsys.readouterr().err
    assert u.upscale(np.zeros((4, 4, 3), np.uint8)).shape == (8, 8, 3)
