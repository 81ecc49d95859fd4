"""The PNG writer (upres.formats.png): lossless round trips through PIL and OpenCV for every
bit depth and channel count, metadata chunks, and scanlines split over several blocks."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from upres.formats import png
from upres.formats.image import read_image, read_image_info, write_image
from upres.formats.png import encode_png

SRGB_LIKE = b"\x00" * 128 + b"acsp" + b"\x01" * 300  # PIL keeps iCCP bytes as they are


def _cv2_read(data: bytes) -> np.ndarray:
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr.ndim == 3 and arr.shape[2] == 3:
        return arr[:, :, ::-1]
    if arr.ndim == 3 and arr.shape[2] == 4:
        return arr[:, :, [2, 1, 0, 3]]
    return arr


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("shape", [(37, 53), (37, 53, 2), (37, 53, 3), (37, 53, 4), (1, 1, 3)])
def test_round_trip_exact(dtype, shape):
    rng = np.random.default_rng(sum(shape))
    hi = np.iinfo(dtype).max
    arr = rng.integers(0, hi + 1, size=shape, dtype=np.int64).astype(dtype)
    if arr.shape[0] > 8:  # smooth half too, where the filter matters
        arr[: shape[0] // 2] = np.linspace(0, hi, shape[1]).astype(dtype)[None, :, *(
            [None] if len(shape) == 3 else [])]
    data = encode_png(arr)
    if len(shape) == 3 and shape[2] == 2:  # OpenCV reads gray + alpha as 4 channels
        back = np.asarray(Image.open(io.BytesIO(data)))
        if dtype == np.uint8:
            np.testing.assert_array_equal(back, arr)
    else:
        np.testing.assert_array_equal(_cv2_read(data), arr)
        if dtype == np.uint8:
            np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), arr)


def test_upres_reader_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    for shape in [(20, 30), (20, 30, 2), (20, 30, 3), (20, 30, 4)]:
        for dtype in (np.uint8, np.uint16):
            arr = rng.integers(0, np.iinfo(dtype).max + 1, size=shape).astype(dtype)
            p = tmp_path / f"{len(shape)}-{arr.shape[-1]}-{arr.dtype}.png"
            write_image(p, arr)
            np.testing.assert_array_equal(read_image(p), arr)
            assert read_image_info(p)[1].bit_depth == 8 * arr.dtype.itemsize


def test_blocks(monkeypatch):
    """An image spread over many filter/deflate blocks and IDAT chunks decodes the same."""
    monkeypatch.setattr(png, "_BLOCK_BYTES", 7 * 31 * 3)
    monkeypatch.setattr(png, "_IDAT_MAX", 500)
    rng = np.random.default_rng(5)
    arr = rng.integers(0, 256, size=(101, 31, 3)).astype(np.uint8)
    data = encode_png(arr)
    assert data.count(b"IDAT") > 3
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), arr)


def test_metadata_chunks():
    arr = np.full((8, 8, 3), 128, np.uint8)
    exif = Image.Exif()
    exif[0x010F] = "upres test camera"
    data = encode_png(arr, icc_profile=SRGB_LIKE, dpi=(300, 150), exif=exif.tobytes())
    img = Image.open(io.BytesIO(data))
    assert img.info["icc_profile"] == SRGB_LIKE
    assert [round(v) for v in img.info["dpi"]] == [300, 150]
    assert img.getexif()[0x010F] == "upres test camera"


def test_refuses_what_png_cannot_hold():
    with pytest.raises(ValueError, match="uint8 or uint16"):
        encode_png(np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match="channels"):
        encode_png(np.zeros((4, 4, 5), np.uint8))


def test_compresses_photographs_like_pil():
    """On a real photograph the file is within 10 % of PIL's level-6 adaptive encoder."""
    import upres

    sample = Path(upres.__file__).parent / "assets" / "butterfly.png"  # the bundled sample
    arr = np.asarray(Image.open(sample).convert("RGB"))
    ours = len(encode_png(arr))
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    assert ours < 1.10 * buf.tell()


def test_blocks_16bit(monkeypatch, tmp_path):
    """16-bit rows swapped to big-endian block by block; the filter's left neighbour is one
    whole pixel (2 bytes per sample) back."""
    monkeypatch.setattr(png, "_BLOCK_BYTES", 5 * 23 * 8)
    rng = np.random.default_rng(6)
    for c in (1, 2, 3, 4):
        arr = rng.integers(0, 65536, size=(41, 23, c)).astype(np.uint16)
        arr[:20] = np.linspace(0, 65535, 23).astype(np.uint16)[None, :, None]
        data = encode_png(arr if c > 1 else arr[:, :, 0])
        if c == 2:  # gray + alpha: through upres's reader (OpenCV expands it to RGBA)
            (tmp_path / "la.png").write_bytes(data)
            np.testing.assert_array_equal(read_image(tmp_path / "la.png"), arr)
            continue
        np.testing.assert_array_equal(_cv2_read(data), arr if c > 1 else arr[:, :, 0])
