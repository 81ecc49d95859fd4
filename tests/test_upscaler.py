"""The Upscaler keeps the input's kind and dtype, routes gray/alpha, and never edits the input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import upres
from upres.errors import UpresError
from upres.inference.tiling import tile_grid
from upres.inference.upscaler import Upscaler, choose_precision, dihedral, to_dtype
from upres.models import REGISTRY, ModelCard

from conftest import ROOT, SHARED

SAMPLE = ROOT / "src" / "upres" / "assets" / "butterfly.png"


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


def test_choose_precision_keeps_fp32_unless_another_path_is_clearly_faster():
    assert choose_precision({"fp32": 1.0, "bf16": 0.5}) == "bf16"
    assert choose_precision({"fp32": 1.0, "bf16": 0.8}) == "bf16"  # exactly the 1.25x margin
    assert choose_precision({"fp32": 1.0, "bf16": 0.9}) == "fp32"  # a close call keeps fp32
    assert choose_precision({"fp32": 0.1, "bf16": 1.0}) == "fp32"  # no native bf16
    assert choose_precision({"fp32": 1.0, "bf16": 0.5, "int8": 0.3}) == "int8"  # the fastest
    assert choose_precision({"fp32": 1.0, "bf16": 0.5, "int8": 0.6}) == "bf16"
    assert choose_precision({"fp32": 1.0}) == "fp32"


@pytest.mark.parametrize("k", range(8))
def test_dihedral_inverse_and_shapes(k):
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    y = dihedral(x, k)
    assert y.shape == ((2, 3, 5, 4) if k >= 4 else (2, 3, 4, 5))
    assert torch.equal(dihedral(y, k, inverse=True), x)
    assert k == 0 or not torch.equal(y.reshape(-1), x.reshape(-1))  # each is a real change


def test_ensemble_is_the_mean_of_the_transformed_runs():
    """ensemble=8 equals averaging 8 plain runs on the flipped/rotated image, undone by hand
    (numpy flips, independent of ``dihedral``); a random net is far from equivariant, so a
    wrong inverse transform would show."""
    torch.manual_seed(2)
    net = REGISTRY.build("upnet", {"scale": 3, "channels": 8, "depth": 2})
    torch.nn.init.normal_(net.tail.weight, std=0.02)  # the residual starts at zero otherwise
    card = ModelCard("t", "upnet", 3, {}, 0)
    plain = Upscaler(net, card, device="cpu")
    ens = Upscaler(net, card, device="cpu", ensemble=8)
    img = 0.3 + 0.4 * np.random.default_rng(5).random((13, 17, 3), dtype=np.float32)
    acc = np.zeros((39, 51, 3), np.float64)
    for k in range(8):
        t = np.rot90(img, k % 4)
        t = t[:, ::-1] if k >= 4 else t
        y = plain.upscale(np.ascontiguousarray(t), tile=0).astype(np.float64)
        assert y.min() > 0 and y.max() < 1  # no run clipped: averaging order cannot matter
        y = y[:, ::-1] if k >= 4 else y
        acc += np.rot90(y, -(k % 4))
    got = ens.upscale(img, tile=0)
    assert got.shape == (39, 51, 3) and got.dtype == np.float32
    np.testing.assert_allclose(got, acc / 8, atol=1e-5)
    assert np.abs(got - plain.upscale(img, tile=0)).max() > 1e-3  # it is not the plain run


def test_ensemble_tiles_equal_whole_image_and_bad_sizes():
    net = REGISTRY.build("upnet", {"scale": 2, "channels": 8, "depth": 2})
    card = ModelCard("t", "upnet", 2, {}, 0)
    ens = Upscaler(net, card, device="cpu", ensemble=4)
    img = _img((70, 90, 3), np.uint8)
    np.testing.assert_array_equal(ens.upscale(img, tile=32, tile_overlap=8),
                                  ens.upscale(img, tile=0))
    for bad in (0, 3, 16):
        with pytest.raises(UpresError, match="ensemble"):
            Upscaler(net, card, device="cpu", ensemble=bad)
        with pytest.raises(UpresError, match="ensemble"):
            upres.load("fast-x4", ensemble=bad)


def test_ensemble_raises_psnr_of_a_shipped_model():
    """Set5 x4, fast-x4: the 8-fold self-ensemble measured +0.20 dB (31.20 -> 31.40)."""
    from upres.evaluate import evaluate

    ds = SHARED / "data" / "benchmark" / "Set5"
    plain = evaluate(upres.load("fast-x4").upscale, model_name="p", dataset=ds, scale=4,
                     with_ssim=False)
    ens = evaluate(upres.load("fast-x4", ensemble=8).upscale, model_name="e", dataset=ds,
                   scale=4, with_ssim=False)
    assert ens.psnr_y > plain.psnr_y + 0.1


def test_pil_modes_that_are_not_pixel_values_come_back_as_colour(up):
    """Palette indices, CMYK ink and 1-bit are converted before the network, not read as gray
    or RGBA; the result is the upscale of the converted image."""
    rgb = Image.fromarray(_img((10, 12, 3), np.uint8))
    cases = {"P": rgb.convert("P"), "CMYK": rgb.convert("CMYK"), "YCbCr": rgb.convert("YCbCr"),
             "1": rgb.convert("1")}
    for mode, img in cases.items():
        out = up.upscale(img)
        want = {"P": "RGB", "CMYK": "RGB", "YCbCr": "RGB", "1": "L"}[mode]
        assert out.mode == want and out.size == (24, 20), mode
        ref = img.convert("RGB") if want == "RGB" else img.convert("L")
        np.testing.assert_array_equal(np.asarray(out), up.upscale(np.asarray(ref)))
    pal = rgb.convert("P")
    pal.info["transparency"] = 0
    assert up.upscale(pal).mode == "RGBA"


def test_pil_big_endian_and_float_modes(up):
    a16 = _img((10, 12), np.uint16)
    big = Image.frombytes("I;16B", (12, 10), a16.astype(">u2").tobytes())
    np.testing.assert_array_equal(np.asarray(up.upscale(big)), up.upscale(a16))
    with pytest.raises(UpresError, match="must lie in"):
        up.upscale(Image.fromarray(np.full((10, 12), 200.0, np.float32), mode="F"))


def test_float64_stays_float64(up):
    f = np.random.default_rng(0).random((10, 12, 3))
    out = up.upscale(f)
    assert out.dtype == np.float64 and out.shape == (20, 24, 3)
    np.testing.assert_allclose(out, up.upscale(f.astype(np.float32)), atol=1e-6)


def test_upscale_image_takes_a_path_with_a_size(tmp_path):
    src = tmp_path / "a.png"
    Image.fromarray(_img((16, 20, 3), np.uint8)).save(src)
    out = upres.upscale_image(str(src), "bicubic", size=(30, 0))
    assert isinstance(out, np.ndarray) and out.shape == (24, 30, 3)


def test_upscale_file_never_replaces_its_input(tmp_path):
    src = tmp_path / "a.png"
    Image.fromarray(_img((16, 20, 3), np.uint8)).save(src)
    before = src.read_bytes()
    bic = upres.load("bicubic", scale=2)
    for dst in (src, tmp_path / "." / "a.png"):
        with pytest.raises(UpresError, match="would replace the input"):
            upres.upscale_file(bic, src, dst, overwrite=True)
    assert src.read_bytes() == before
    (tmp_path / "d.png").mkdir()
    with pytest.raises(UpresError, match="is a folder"):
        upres.upscale_file(bic, src, tmp_path / "d.png", overwrite=True)
