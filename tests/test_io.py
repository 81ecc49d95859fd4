"""Real files in every format, mode and bit depth through ``upres upscale``.

The odd inputs (16-bit, palette, CMYK, EXIF-rotated, ICC-tagged, hard-edged alpha) are made from
the shared benchmark images.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageCms

from upres.cli import main
from upres.errors import UpresError
from upres.io import read_image, read_image_info, write_image

from conftest import BENCH

MODEL = ["-m", "x2"]  # the shipped x2 model: real weights through the whole path


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    """A 48x64 RGB crop of a real photo."""
    return np.asarray(Image.open(BENCH / "Set5" / "bird.png").convert("RGB"))[100:148, 80:144]


def _run(src, tmp_path, *extra) -> tuple[int, np.ndarray | None, object]:
    out = tmp_path / "out"
    rc = main(["upscale", str(src), "-o", str(out), *MODEL, "-q", *extra])
    files = [p for p in out.iterdir()] if out.exists() else []
    assert not [p for p in files if p.name.endswith(".part")], "temporary file left behind"
    if not files:
        return rc, None, None
    arr, info = read_image_info(files[0])
    return rc, arr, (files[0], info)


def _rgb16(rgb: np.ndarray) -> np.ndarray:
    """A 16-bit image with detail below the 8-bit step (not just v*257)."""
    ramp = (np.arange(rgb.shape[1]) * 97 % 257).astype(np.uint16)
    return rgb.astype(np.uint16) * 257 + ramp[None, :, None] // 2


@pytest.mark.parametrize(("ext", "fmt"), [(".png", "PNG"), (".jpg", "JPEG"), (".webp", "WEBP"),
                                          (".tiff", "TIFF"), (".bmp", "BMP")])
@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_8bit_formats_round_trip(rgb, tmp_path, ext, fmt, mode):
    src = tmp_path / f"in{ext}"
    Image.fromarray(rgb).convert(mode).save(src, format=fmt)
    rc, arr, (dst, info) = _run(src, tmp_path)
    assert rc == 0 and dst.suffix == ext and info.format == fmt
    assert arr.dtype == np.uint8
    if mode == "L" and fmt == "WEBP":  # WebP has no gray mode: three equal channels
        assert arr.shape == (96, 128, 3)
        assert np.abs(arr.astype(int) - arr[:, :, :1]).max() <= 2
    elif mode == "L":
        assert arr.shape == (96, 128)
    else:
        assert arr.shape == (96, 128, 3)
        ref = np.asarray(Image.fromarray(rgb).resize((128, 96), Image.BICUBIC)).astype(int)
        assert np.abs(arr.astype(int) - ref).mean() < 12  # same picture, no colour shift


@pytest.mark.parametrize("ext", [".png", ".tiff"])
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_16bit_stays_16bit(rgb, tmp_path, ext, channels):
    a16 = _rgb16(rgb)
    if channels == 1:
        a16 = a16[:, :, 1]
    elif channels == 4:
        alpha = np.full(a16.shape[:2], 65535, np.uint16)
        alpha[:, :20] = 30000
        a16 = np.concatenate([a16, alpha[:, :, None]], axis=2)
    src = tmp_path / f"in{ext}"
    write_image(src, a16)
    back = read_image(src)
    np.testing.assert_array_equal(back, a16)  # the codec itself is lossless at 16 bits
    rc, arr, _ = _run(src, tmp_path)
    assert rc == 0 and arr.dtype == np.uint16
    assert arr.shape[:2] == (96, 128) and arr.shape[2:] == a16.shape[2:]
    assert len(np.unique(arr % 257)) > 20  # sub-8-bit detail survived


def test_16bit_to_jpeg_is_8bit(rgb, tmp_path):
    src = tmp_path / "in.png"
    write_image(src, _rgb16(rgb))
    rc, arr, (dst, info) = _run(src, tmp_path, "--format", "jpg")
    assert rc == 0 and dst.suffix == ".jpg" and arr.dtype == np.uint8 and info.bit_depth == 8


def test_palette_and_gray_alpha(rgb, tmp_path):
    src = tmp_path / "pal.png"
    Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE, colors=32).save(src)
    rc, arr, _ = _run(src, tmp_path)
    assert rc == 0 and arr.shape == (96, 128, 3)
    la = tmp_path / "la.png"
    g = np.asarray(Image.fromarray(rgb).convert("L"))
    Image.fromarray(np.stack([g, np.full_like(g, 200)], axis=2), mode="LA").save(la)
    rc, arr, _ = _run(la, tmp_path / "b")
    assert rc == 0 and arr.shape == (96, 128, 2)
    assert np.abs(arr[:, :, 1].astype(int) - 200).max() <= 2


def test_cmyk_becomes_rgb(rgb, tmp_path):
    src = tmp_path / "cmyk.jpg"
    Image.fromarray(rgb).convert("CMYK").save(src, quality=98)
    assert Image.open(src).mode == "CMYK"
    rc, arr, _ = _run(src, tmp_path)
    assert rc == 0 and arr.shape == (96, 128, 3)
    ref = np.asarray(Image.fromarray(rgb).resize((128, 96), Image.BICUBIC)).astype(int)
    assert np.abs(arr.astype(int) - ref).mean() < 12


def test_exif_orientation_applied_and_reset(rgb, tmp_path):
    src = tmp_path / "rot.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: display rotated 90 degrees clockwise
    exif[0x010F] = "upres-test-camera"
    Image.fromarray(rgb).save(src, exif=exif, quality=95)
    arr0 = read_image(src)
    assert arr0.shape == (64, 48, 3)  # upright on read
    rc, arr, (dst, _) = _run(src, tmp_path)
    assert rc == 0 and arr.shape == (128, 96, 3)
    out_exif = Image.open(dst).getexif()
    assert out_exif.get(0x0112, 1) == 1 and out_exif.get(0x010F) == "upres-test-camera"


@pytest.mark.parametrize(("ext", "sixteen"), [(".png", False), (".png", True), (".jpg", False),
                                              (".tiff", True), (".webp", False)])
def test_icc_profile_carried(rgb, tmp_path, ext, sixteen):
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
    src = tmp_path / f"in{ext}"
    if sixteen:
        from upres.io import ImageInfo

        write_image(src, _rgb16(rgb), info=ImageInfo("PNG", 16, icc_profile=icc))
    else:
        Image.fromarray(rgb).save(src, icc_profile=icc)
    assert read_image_info(src)[1].icc_profile == icc
    rc, _, (_, info) = _run(src, tmp_path)
    assert rc == 0 and info.icc_profile == icc


def test_format_same_and_rgba_never_to_jpeg(rgb, tmp_path, capsys):
    src = tmp_path / "a.png"
    rgba = np.concatenate([rgb, np.full((*rgb.shape[:2], 1), 128, np.uint8)], axis=2)
    Image.fromarray(rgba).save(src)
    out = tmp_path / "o"
    assert main(["upscale", str(src), "-o", str(out), *MODEL, "--format", "jpg"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "transparency" in err[0]
    assert not out.exists() or not list(out.iterdir())
    webp = tmp_path / "w.webp"
    Image.fromarray(rgba).save(webp, lossless=True)
    rc, arr, (_, info) = _run(webp, tmp_path)
    assert rc == 0 and info.format == "WEBP" and arr.shape == (96, 128, 4)


def test_alpha_hard_edge_has_no_dark_fringe(rgb, tmp_path):
    """Left: opaque white; right: fully transparent with black colour underneath."""
    img = np.zeros((48, 64, 4), np.uint8)
    img[:, :32, :3] = 255
    img[:, :32, 3] = 255
    src = tmp_path / "edge.png"
    Image.fromarray(img).save(src)
    rc, arr, _ = _run(src, tmp_path)
    assert rc == 0 and arr.shape == (96, 128, 4)
    visible = arr[:, :, 3] > 0
    assert visible[:, :64].all()
    # Every visible pixel keeps the white it had: no black bleeding in from under alpha 0.
    assert arr[:, :, :3][visible].min() >= 250


def test_opaque_alpha_stays_opaque(rgb, tmp_path):
    src = tmp_path / "opaque.png"
    Image.fromarray(np.concatenate([rgb, np.full((*rgb.shape[:2], 1), 255, np.uint8)], 2)).save(
        src)
    rc, arr, _ = _run(src, tmp_path)
    assert rc == 0 and (arr[:, :, 3] == 255).all()


def test_bad_files_one_line_each_batch_goes_on(rgb, tmp_path, capsys):
    d = tmp_path / "batch"
    d.mkdir()
    Image.fromarray(rgb).save(d / "a_good.png")
    (d / "b_empty.png").write_bytes(b"")
    full = (BENCH / "Set5" / "baby.png").read_bytes()
    (d / "c_truncated.png").write_bytes(full[: len(full) // 2])
    (d / "d_text.jpg").write_text("hello")
    Image.fromarray(rgb).save(d / "e_good.jpg")
    out = tmp_path / "o"
    rc = main(["upscale", str(d), "-o", str(out), *MODEL, "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1
    assert [line.split(": ")[1].split("/")[-1] for line in err] == [
        "b_empty.png", "c_truncated.png", "d_text.jpg"]
    assert sorted(p.name for p in out.iterdir()) == ["a_good_x2.png", "e_good_x2.jpg"]


def test_decompression_bomb_refused(rgb, tmp_path, capsys):
    src = tmp_path / "big.png"
    Image.fromarray(rgb).save(src)
    rc, arr, _ = _run(src, tmp_path, "--max-pixels", "1000")
    assert rc == 1 and arr is None
    assert "too large" in capsys.readouterr().err
    with pytest.raises(UpresError, match="too large"):
        read_image(src, max_pixels=100)


def test_recursive_tree_is_mirrored(rgb, tmp_path):
    d = tmp_path / "tree"
    (d / "sub" / "deeper").mkdir(parents=True)
    Image.fromarray(rgb).save(d / "top.png")
    Image.fromarray(rgb).save(d / "sub" / "deeper" / "low.png")
    out = tmp_path / "o"
    assert main(["upscale", str(d), "-r", "-o", str(out), *MODEL, "-q"]) == 0
    assert (out / "top_x2.png").is_file() and (out / "sub" / "deeper" / "low_x2.png").is_file()
    assert main(["upscale", str(d / "**" / "*.png"), "-r", "-o", str(tmp_path / "g"), *MODEL,
                 "-q"]) == 0


def test_written_images_get_the_usual_file_mode(tmp_path):
    """Atomic writes go through a private temporary file; the image must still come out as a
    plain open() would make it (0666 less the umask), and a replaced file keeps its mode."""
    import os
    import stat

    img = np.zeros((4, 4, 3), np.uint8)
    old = os.umask(0o027)
    try:
        p = write_image(tmp_path / "new.png", img)
        assert stat.S_IMODE(p.stat().st_mode) == 0o640
        os.umask(0o022)
        q = write_image(tmp_path / "other.png", img)
        assert stat.S_IMODE(q.stat().st_mode) == 0o644
        os.chmod(q, 0o600)
        write_image(q, img, overwrite=True)
        assert stat.S_IMODE(q.stat().st_mode) == 0o600
    finally:
        os.umask(old)
    assert not [f for f in tmp_path.iterdir() if f.name.endswith(".part")]


# -- inputs from a second review (each of these failed before its fix) -------------------------
def _exif_png(path, arr16: np.ndarray, orientation: int) -> None:
    """A 16-bit PNG carrying an EXIF Orientation (eXIf chunk before IDAT)."""
    import struct
    import zlib

    import cv2

    def chunk(k, d):
        return struct.pack(">I", len(d)) + k + d + struct.pack(">I", zlib.crc32(d, zlib.crc32(k)))

    e = Image.Exif()
    e[274] = orientation
    data = cv2.imencode(".png", arr16[:, :, ::-1])[1].tobytes()
    i = data.index(b"IDAT") - 4
    path.write_bytes(data[:i] + chunk(b"eXIf", e.tobytes()[6:]) + data[i:])


@pytest.mark.parametrize("orientation", range(1, 9))
def test_sixteen_bit_orientation_like_pillow(orientation, tmp_path):
    import tifffile
    from PIL import ImageOps

    base = np.random.default_rng(orientation).integers(0, 256, (4, 6, 3), np.uint8)
    e = Image.Exif()
    e[274] = orientation
    Image.fromarray(base).save(tmp_path / "ref.png", exif=e.tobytes())
    want = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "ref.png")))
    a16 = base.astype(np.uint16) * 257
    tifffile.imwrite(tmp_path / "t.tif", a16, photometric="rgb",
                     extratags=[(274, 3, 1, orientation, True)])
    _exif_png(tmp_path / "p.png", a16, orientation)
    for name in ("t.tif", "p.png"):
        got = read_image(tmp_path / name)
        assert got.dtype == np.uint16 and np.array_equal(got // 257, want), name


def test_png_trns_becomes_alpha(tmp_path):
    g = np.arange(64, dtype=np.uint8).reshape(8, 8)
    Image.fromarray(g).save(tmp_path / "g.png", transparency=5)
    a = read_image(tmp_path / "g.png")
    assert a.shape == (8, 8, 2) and a[0, 5, 1] == 0 and a[0, 4, 1] == 255
    c = np.stack([g, g, g], -1)
    Image.fromarray(c).save(tmp_path / "c.png", transparency=(7, 7, 7))
    a = read_image(tmp_path / "c.png")
    assert a.shape == (8, 8, 4) and a[0, 7, 3] == 0 and a[0, 6, 3] == 255
    g16 = (np.arange(64, dtype=np.uint16) * 1000).reshape(8, 8)
    Image.fromarray(g16).save(tmp_path / "g16.png", transparency=3000)
    a = read_image(tmp_path / "g16.png")
    assert a.dtype == np.uint16 and a.shape == (8, 8, 2) and a[0, 3, 1] == 0
    assert a[0, 2, 1] == 65535


def test_mpo_camera_jpeg_stays_jpeg(rgb, tmp_path):
    Image.fromarray(rgb).save(tmp_path / "cam.jpg", format="MPO", save_all=True,
                              append_images=[Image.fromarray(255 - rgb)], quality=80)
    arr, info = read_image_info(tmp_path / "cam.jpg")
    assert info.format == "JPEG" and info.jpeg_quality == 80 and arr.shape == rgb.shape
    assert main(["upscale", str(tmp_path / "cam.jpg"), "-m", "bicubic", "-s", "2", "-q"]) == 0
    assert (tmp_path / "cam_x2.jpg").exists()


def test_output_never_replaces_an_input_and_clashes_are_said(rgb, tmp_path, capsys):
    Image.fromarray(rgb).save(tmp_path / "a.png")
    before = (tmp_path / "a.png").read_bytes()
    for extra in ([], ["--overwrite"]):
        capsys.readouterr()
        assert main(["upscale", str(tmp_path / "a.png"), "-m", "bicubic", "-s", "2",
                     "--suffix", "", *extra]) == 1
        assert "the output would replace the input" in capsys.readouterr().err
    assert (tmp_path / "a.png").read_bytes() == before
    d = tmp_path / "two"
    d.mkdir()
    Image.fromarray(rgb).save(d / "b.png")
    Image.fromarray(rgb).save(d / "b.jpg")
    capsys.readouterr()
    assert main(["upscale", str(d), "-m", "bicubic", "-s", "2", "--format", "png",
                 "--overwrite"]) == 1
    err = capsys.readouterr().err
    assert "is also the output of" in err and "b_x2.png" in err


def test_decompression_bomb_is_one_line_and_pillow_guard_restored(tmp_path, capsys):
    import struct
    import zlib

    def chunk(k, d):
        return struct.pack(">I", len(d)) + k + d + struct.pack(">I", zlib.crc32(d, zlib.crc32(k)))

    (tmp_path / "big.png").write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 15000, 13000, 8, 2, 0, 0, 0))
        + chunk(b"IEND", b""))
    old = Image.MAX_IMAGE_PIXELS
    guard = Image.MAX_IMAGE_PIXELS = 89_478_485  # Pillow's own default, as an application has it
    try:
        read_image(BENCH / "Set5" / "bird.png")
        assert guard == Image.MAX_IMAGE_PIXELS  # an embedding application keeps its guard
        with pytest.raises(UpresError, match="image too large"):  # 195 MP: Pillow's bomb
            read_image(tmp_path / "big.png", max_pixels=100_000_000)
        with pytest.raises(UpresError, match="truncated or corrupt"):  # under upres's 200 MP:
            read_image(tmp_path / "big.png")  # decoded (Pillow's guard off), no pixel data
        assert guard == Image.MAX_IMAGE_PIXELS
    finally:
        Image.MAX_IMAGE_PIXELS = old


def test_alpha_to_jpeg_opaque_dropped_transparent_refused_before_work(rgb, tmp_path, capsys):
    opaque = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    Image.fromarray(opaque).save(tmp_path / "o.png")
    assert main(["upscale", str(tmp_path / "o.png"), "-m", "bicubic", "-s", "2",
                 "--format", "jpg", "-q"]) == 0
    assert Image.open(tmp_path / "o_x2.jpg").mode == "RGB"
    see_through = opaque.copy()
    see_through[:4, :4, 3] = 0
    Image.fromarray(see_through).save(tmp_path / "t.png")
    capsys.readouterr()
    assert main(["upscale", str(tmp_path / "t.png"), "-m", "bicubic", "-s", "2",
                 "--format", "jpg"]) == 1
    assert "has transparency, which JPEG cannot hold" in capsys.readouterr().err


def test_sixteen_bit_tiff_premultiplied_alpha_and_gray_alpha(rgb, tmp_path):
    import tifffile

    colour = rgb.astype(np.uint16) * 257
    pm = np.dstack([colour // 2, np.full(rgb.shape[:2], 32768, np.uint16)])
    tifffile.imwrite(tmp_path / "pm.tif", pm, photometric="rgb", extrasamples=["assocalpha"])
    a = read_image(tmp_path / "pm.tif")
    assert np.abs(a[:, :, :3].astype(int) - colour).max() <= 260  # unpremultiplied
    la = np.dstack([colour[:, :, 0], np.full(rgb.shape[:2], 40000, np.uint16)])
    tifffile.imwrite(tmp_path / "la.tif", la, photometric="minisblack",
                     extrasamples=["unassalpha"])
    assert np.array_equal(read_image(tmp_path / "la.tif"), la)  # Pillow cannot open it


def test_webp_lossless_kept_gray_profile_not_on_rgb_and_stale_exif_size_dropped(rgb, tmp_path):
    Image.fromarray(rgb).save(tmp_path / "l.webp", lossless=True)
    assert main(["upscale", str(tmp_path / "l.webp"), "-m", "bicubic", "-s", "2", "-q"]) == 0
    assert (tmp_path / "l_x2.webp").read_bytes()[12:16] == b"VP8L"
    gray = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))  # placeholder bytes...
    icc = bytearray(gray.tobytes())
    icc[16:20] = b"GRAY"  # ...with a gray colour space, as a gray JPEG's profile has
    Image.fromarray(rgb[:, :, 0]).save(tmp_path / "g.jpg", icc_profile=bytes(icc))
    assert main(["upscale", str(tmp_path / "g.jpg"), "-m", "bicubic", "-s", "2",
                 "--format", "webp", "-q"]) == 0
    assert "icc_profile" not in Image.open(tmp_path / "g_x2.webp").info
    e = Image.Exif()
    e.get_ifd(0x8769)[0xA002] = rgb.shape[1]
    e.get_ifd(0x8769)[0xA003] = rgb.shape[0]
    Image.fromarray(rgb).save(tmp_path / "px.jpg", exif=e)
    assert main(["upscale", str(tmp_path / "px.jpg"), "-m", "bicubic", "-s", "2", "-q"]) == 0
    sub = Image.open(tmp_path / "px_x2.jpg").getexif().get_ifd(0x8769)
    assert 0xA002 not in sub and 0xA003 not in sub


def test_sixteen_bit_cmyk_tiff_refused_not_misread(tmp_path):
    import tifffile

    tifffile.imwrite(tmp_path / "cmyk.tif", np.zeros((8, 8, 4), np.uint16),
                     photometric="separated")
    with pytest.raises(UpresError, match="photometric interpretation 5"):
        read_image(tmp_path / "cmyk.tif")


def test_a_tiff_is_known_by_its_bytes_not_its_name(tmp_path, rgb):
    """A 16-bit gray+alpha TIFF (which Pillow cannot open) read from a file with no suffix,
    as an HTTP upload's temporary file is."""
    import tifffile

    ga = np.stack([rgb[:, :, 0].astype(np.uint16) * 257,
                   np.full(rgb.shape[:2], 40000, np.uint16)], axis=2)
    tifffile.imwrite(tmp_path / "upload", ga, photometric="minisblack", extrasamples=[2])
    arr, info = read_image_info(tmp_path / "upload")
    assert info.format == "TIFF" and arr.dtype == np.uint16
    np.testing.assert_array_equal(arr, ga)


def test_outputs_a_format_cannot_hold_are_one_line_before_the_work(tmp_path, rgb, capsys):
    from upres.formats.image import encode_image

    with pytest.raises(UpresError, match="larger than WEBP holds"):
        encode_image(np.zeros((2, 16384, 3), np.uint8), "WEBP")
    with pytest.raises(UpresError, match="larger than JPEG holds"):  # libjpeg stops at 65500
        encode_image(np.zeros((1, 65501), np.uint8), "JPEG")
    assert encode_image(np.zeros((1, 65500), np.uint8), "JPEG")[:2] == b"\xff\xd8"
    exif = Image.Exif()
    exif[0x010E] = "x" * 70000  # ImageDescription: EXIF larger than an APP1 segment
    from upres.formats.image import ImageInfo

    with pytest.raises(UpresError, match="more than JPEG holds"):
        encode_image(rgb, "JPEG", info=ImageInfo(format="PNG", bit_depth=8,
                                                 exif=exif.tobytes()))
    src = tmp_path / "wide.png"
    Image.fromarray(np.zeros((2, 4200, 3), np.uint8)).save(src)
    out = tmp_path / "out"
    rc = main(["upscale", str(src), "-o", str(out), "-m", "bicubic", "--size", "16800x0",
               "--format", "webp"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and "wide.png" in err[0] and "WEBP" in err[0]
    assert not out.exists() or not any(out.iterdir())


def test_exif_and_dpi_reach_tiff_and_bmp_outputs(tmp_path):
    """Every photo with EXIF failed as TIFF output (libtiff refused the Exif-IFD pointer, even an
    empty one the reader had added); a TIFF without resolution tags came out at 1 dpi; BMP lost
    the DPI and 16-bit TIFF the EXIF. Now: the main directory reaches TIFF (the sub-directories
    stay out), no invented DPI, BMP keeps it."""
    rgb = np.asarray(Image.open(BENCH / "Set5" / "baby.png").convert("RGB"))[:32, :48]
    for name, sub in (("make.jpg", False), ("camera.jpg", True)):
        ex = Image.Exif()
        ex[0x010F], ex[0x0110], ex[0x0112] = "Cam", "Model 1", 6
        if sub:
            ex.get_ifd(0x8769)[0x829A] = 1 / 125  # ExposureTime
            ex.get_ifd(0x8825)[1] = "N"  # GPS
        Image.fromarray(rgb).save(tmp_path / name, exif=ex.tobytes(), dpi=(300, 300))
        arr, info = read_image_info(tmp_path / name)
        assert arr.shape[:2] == (48, 32)  # upright
        out = write_image(tmp_path / f"{name}.tiff", arr, info=info)
        back = Image.open(out)
        e = back.getexif()
        assert (e[0x010F], e[0x0110], e.get(0x0112, 1)) == ("Cam", "Model 1", 1)
        assert back.info["dpi"] == pytest.approx((300, 300)) and back.size == (32, 48)
        bmp = write_image(tmp_path / f"{name}.bmp", arr, info=info)
        assert Image.open(bmp).info["dpi"] == pytest.approx((300, 300), abs=0.01)
    Image.fromarray(rgb).save(tmp_path / "nodpi.tif")  # no resolution tags at all
    arr, info = read_image_info(tmp_path / "nodpi.tif")
    assert info.dpi is None
    png = write_image(tmp_path / "nodpi.png", arr, info=info)
    assert b"pHYs" not in png.read_bytes()
    import tifffile

    with tifffile.TiffFile(write_image(tmp_path / "nodpi_out.tif", arr, info=info)) as t:
        assert 282 not in t.pages[0].tags
    wide = (rgb.astype(np.uint16) * 257)
    ex = Image.Exif()
    ex[0x010F], ex[0x0131] = "Cam", "Raw Tool"
    _, info = read_image_info(tmp_path / "camera.jpg")
    info16 = type(info)(**{**info.__dict__, "exif": ex.tobytes(), "bit_depth": 16})
    with tifffile.TiffFile(write_image(tmp_path / "wide.tif", wide, info=info16)) as t:
        tags = {tg.code: tg.value for tg in t.pages[0].tags.values()}
        assert t.pages[0].dtype == np.uint16 and tags[271] == "Cam" and tags[305] == "Raw Tool"
