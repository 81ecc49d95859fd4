"""Scientific TIFF and the rest of the file layer (issue 20): float32/int16/NaN round trips,
stacks page by page, physical pixel size scaled, print DPI kept, GIF listed like any input."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
import tifffile
from PIL import Image

import upres
from upres import formats
from upres.cli import main
from upres.convert import upscale_file

from conftest import DATA

SCIENCE = DATA / "apps" / "science"


@pytest.fixture(scope="module")
def fast2():
    return upres.load("fast-x2", device="cpu")


def _smooth(shape, lo, hi, seed=0):
    """A smooth field (what microscopy and sky images are like) scaled to lo..hi."""
    rng = np.random.default_rng(seed)
    small = rng.random((shape[0] // 4 + 1, shape[1] // 4 + 1))
    big = np.kron(small, np.ones((4, 4)))[: shape[0], : shape[1]]
    return lo + (hi - lo) * big


def test_float32_with_nan_round_trip(fast2, tmp_path):
    a = _smooth((48, 64), -3.5e4, 1.2e5).astype(np.float32)
    a[10:14, 20:23] = np.nan
    a[0, 0] = np.inf
    tifffile.imwrite(tmp_path / "f.tif", a, resolution=(2000.0, 2000.0),
                     resolutionunit="CENTIMETER")
    assert formats.kind_of(tmp_path / "f.tif") == "tiff"
    upscale_file(fast2, tmp_path / "f.tif", tmp_path / "f_x2.tif")
    with tifffile.TiffFile(tmp_path / "f_x2.tif") as t:
        b = t.asarray()
        xres = t.pages[0].tags[282].value
        unit = t.pages[0].tags[296].value
    assert b.dtype == np.float32 and b.shape == (96, 128)
    nan_big = np.kron(np.isnan(a), np.ones((2, 2), bool))
    assert (np.isnan(b) == nan_big).all()  # NaN exactly where it was, nowhere else
    assert np.isposinf(b[:2, :2]).all()
    fin = b[np.isfinite(b)]
    assert fin.min() >= np.nanmin(a[np.isfinite(a)]) and fin.max() <= a[np.isfinite(a)].max()
    # values keep their scale: shrunk back, the result is close to the original (not [0, 1])
    back = upres.imresize(np.nan_to_num(b, posinf=0).astype(np.float64), 0.5)
    from scipy import ndimage

    ok = ~ndimage.binary_dilation(~np.isfinite(a), iterations=3)  # away from NaN and inf
    err = np.abs(back - np.nan_to_num(a, posinf=0))[ok]
    assert np.median(err) < 0.02 * (1.2e5 + 3.5e4)
    assert xres[0] / xres[1] == pytest.approx(4000.0) and int(unit) == 3  # px/cm doubled


def test_int16_stays_int16_with_its_sign(fast2, tmp_path):
    a = _smooth((40, 40), -1200, 900).astype(np.int16)
    tifffile.imwrite(tmp_path / "i.tif", a, photometric="minisblack")
    upscale_file(fast2, tmp_path / "i.tif", tmp_path / "i_x2.tif")
    b = tifffile.imread(tmp_path / "i_x2.tif")
    assert b.dtype == np.int16 and b.shape == (80, 80)
    assert b.min() >= a.min() and b.max() <= a.max() and b.min() < 0


def test_imagej_stack_page_by_page_calibration_scaled(tmp_path):
    up = upres.load("bicubic", scale=2)
    stack = np.stack([_smooth((30, 40), 0, 4000, seed=k) for k in range(5)]).astype(np.uint16)
    tifffile.imwrite(tmp_path / "ij.tif", stack, imagej=True, resolution=(1 / 0.25, 1 / 0.5),
                     metadata={"spacing": 2.0, "unit": "um", "axes": "ZYX"})
    upscale_file(up, tmp_path / "ij.tif", tmp_path / "ij_x2.tif")
    with tifffile.TiffFile(tmp_path / "ij_x2.tif") as t:
        out = t.asarray()
        md = t.imagej_metadata
        xr, yr = t.pages[0].tags[282].value, t.pages[0].tags[283].value
    assert out.shape == (5, 60, 80) and out.dtype == np.uint16
    assert md["unit"] == "um" and md["spacing"] == 2.0  # Z step kept
    assert xr[0] / xr[1] == pytest.approx(8.0) and yr[0] / yr[1] == pytest.approx(4.0)
    for k in (0, 4):  # each page is its own page upscaled
        want = np.clip(upres.imresize(stack[k].astype(np.float64), 2.0), 0, 65535)
        assert np.abs(out[k] - want).max() <= 0.51


def test_ome_physical_size_scaled(tmp_path):
    up = upres.load("bicubic", scale=2)
    stack = np.stack([_smooth((20, 24), 0, 200, seed=k) for k in range(3)]).astype(np.uint8)
    tifffile.imwrite(tmp_path / "a.ome.tif", stack,
                     metadata={"axes": "ZYX", "PhysicalSizeX": 0.2, "PhysicalSizeY": 0.3,
                               "PhysicalSizeXUnit": "µm", "PhysicalSizeYUnit": "µm"})
    upscale_file(up, tmp_path / "a.ome.tif", tmp_path / "a_x2.ome.tif")
    with tifffile.TiffFile(tmp_path / "a_x2.ome.tif") as t:
        assert t.is_ome and t.series[0].shape == (3, 40, 48)
        px = re.search(r"<Pixels [^>]*>", t.ome_metadata).group(0)
    assert 'SizeX="48"' in px and 'SizeY="40"' in px
    assert 'PhysicalSizeX="0.1"' in px and 'PhysicalSizeY="0.15"' in px


def test_fei_sem_pixel_size_scaled(tmp_path):
    up = upres.load("bicubic", scale=2)
    upscale_file(up, SCIENCE / "fei-sem-rbc.tif", tmp_path / "sem.tif")
    with tifffile.TiffFile(SCIENCE / "fei-sem-rbc.tif") as t:
        src = t.fei_metadata
        a = t.asarray()
    with tifffile.TiffFile(tmp_path / "sem.tif") as t:
        out = t.fei_metadata
        b = t.asarray()
    assert b.shape == (2 * a.shape[0], 2 * a.shape[1]) and b.dtype == np.uint8
    assert out["Scan"]["PixelWidth"] == pytest.approx(src["Scan"]["PixelWidth"] / 2, rel=1e-5)
    assert out["Scan"]["PixelHeight"] == pytest.approx(src["Scan"]["PixelHeight"] / 2, rel=1e-5)
    assert out["Image"]["ResolutionX"] == 2 * src["Image"]["ResolutionX"]
    assert out["User"] == src["User"]  # the rest of the instrument record is kept


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".tiff"])
def test_photo_print_dpi_kept(suffix, tmp_path):
    up = upres.load("bicubic", scale=2)
    img = Image.fromarray(_smooth((16, 20), 0, 255).astype(np.uint8)).convert("RGB")
    img.save(tmp_path / f"p{suffix}", dpi=(300, 300))
    assert formats.kind_of(tmp_path / f"p{suffix}") == "image"
    upscale_file(up, tmp_path / f"p{suffix}", tmp_path / f"p_x2{suffix}")
    with Image.open(tmp_path / f"p_x2{suffix}") as out:
        assert out.size == (40, 32)
        assert tuple(round(v) for v in out.info["dpi"]) == (300, 300)


def test_sixteen_bit_png_dpi_kept(tmp_path):
    import cv2

    up = upres.load("bicubic", scale=2)
    a = _smooth((16, 20), 0, 65535).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "g.png"), a)
    img = Image.open(tmp_path / "g.png")
    img.save(tmp_path / "d.png", dpi=(150, 150))
    upscale_file(up, tmp_path / "d.png", tmp_path / "d_x2.png")
    with Image.open(tmp_path / "d_x2.png") as out:
        assert round(out.info["dpi"][0]) == 150


def test_folder_lists_gif_dicom_and_stacks(tmp_path, capsys):
    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(_smooth((12, 12), 0, 255).astype(np.uint8)).save(d / "a.gif")
    frames = [Image.fromarray(_smooth((8, 8), 0, 255, seed=k).astype(np.uint8))
              for k in range(3)]
    frames[0].save(d / "anim.gif", save_all=True, append_images=frames[1:])
    tifffile.imwrite(d / "stack.tif", np.zeros((2, 8, 8), np.float32))
    (d / "scan.dcm").write_bytes((DATA / "apps" / "dicom" / "dicom_file03.dcm").read_bytes())
    rc = main(["upscale", str(d), "-o", str(tmp_path / "out"), "-m", "bicubic", "-s", "2"])
    out = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert out == ["a_x2.png", "scan_x2.dcm", "stack_x2.tif"]
    err = capsys.readouterr().err
    assert rc == 1 and "anim.gif: animated GIF (3 frames)" in err  # said, not skipped silently


def test_format_other_than_same_refused_for_dicom(tmp_path, capsys):
    rc = main(["upscale", str(DATA / "apps" / "dicom" / "dicom_file03.dcm"), "-o",
               str(tmp_path / "o"), "-m", "bicubic", "-s", "2", "--format", "png"])
    assert rc == 1
    assert "--format applies to ordinary images" in capsys.readouterr().err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_multi_series_and_palette_tiff_refused_in_one_line(tmp_path):
    with tifffile.TiffWriter(tmp_path / "two.tif") as tw:
        tw.write(np.zeros((8, 8), np.float32))
        tw.write(np.zeros((6, 10), np.float32))
    with pytest.raises(upres.UpresError, match="2 image series"):
        formats.read(tmp_path / "two.tif")
    tifffile.imwrite(tmp_path / "cmyk.tif", np.zeros((2, 8, 8, 4), np.uint8),
                     photometric="separated")
    with pytest.raises(upres.UpresError, match="photometric"):
        formats.read(tmp_path / "cmyk.tif")
    tifffile.imwrite(tmp_path / "white.tif", np.zeros((2, 8, 8), np.uint8),  # read as stored
                     photometric="miniswhite")
    assert formats.read(tmp_path / "white.tif").meta.photometric == "miniswhite"


def test_uint32_counts_keep_their_values(fast2, tmp_path):
    """A uint32 image fills a sliver of 0..2**32-1: it is mapped by its own range (it was
    mapped by the type's and came back as noise 45x too large)."""
    a = _smooth((40, 48), 1e5, 7.2e5).astype(np.uint32)
    tifffile.imwrite(tmp_path / "u32.tif", a)
    assert formats.kind_of(tmp_path / "u32.tif") == "tiff"
    upscale_file(fast2, tmp_path / "u32.tif", tmp_path / "u32_x2.tif")
    b = tifffile.imread(tmp_path / "u32_x2.tif")
    assert b.dtype == np.uint32 and b.min() >= a.min() and b.max() <= a.max()
    back = upres.imresize(b.astype(np.float64), 0.5)
    assert np.median(np.abs(back - a)) < 0.02 * (7.2e5 - 1e5)


def test_lzw_stack_is_read(tmp_path):
    up = upres.load("bicubic", scale=2)
    stack = np.stack([_smooth((20, 24), 0, 50000, seed=k) for k in range(2)]).astype(np.uint16)
    tifffile.imwrite(tmp_path / "lzw.tif", stack, compression="lzw")
    upscale_file(up, tmp_path / "lzw.tif", tmp_path / "lzw_x2.tif")
    out = tifffile.imread(tmp_path / "lzw_x2.tif")
    assert out.shape == (2, 40, 48)
    want = np.clip(upres.imresize(stack[1].astype(np.float64), 2.0), 0, 65535)
    assert np.abs(out[1] - want).max() <= 0.51


def test_sixteen_bit_min_is_white_keeps_its_meaning(tmp_path):
    up = upres.load("bicubic", scale=2)
    a = _smooth((24, 32), 1000, 60000).astype(np.uint16)
    tifffile.imwrite(tmp_path / "mw.tif", a, photometric="miniswhite")
    assert formats.kind_of(tmp_path / "mw.tif") == "tiff"  # not Pillow's, which ignores it
    upscale_file(up, tmp_path / "mw.tif", tmp_path / "mw_x2.tif")
    with tifffile.TiffFile(tmp_path / "mw_x2.tif") as t:
        assert t.pages[0].photometric == tifffile.PHOTOMETRIC.MINISWHITE
        b = t.asarray()
    want = np.clip(upres.imresize(a.astype(np.float64), 2.0), 0, 65535)
    assert np.abs(b - want).max() <= 0.51  # stored values, not inverted


@pytest.mark.parametrize("extra", ["assocalpha", "unspecified"])
def test_fourth_sample_keeps_its_extrasamples_and_no_unit_stays_none(extra, tmp_path):
    up = upres.load("bicubic", scale=2)
    a = np.stack([_smooth((16, 20), 0, 1, seed=k) for k in range(4)], -1).astype(np.float32)
    tifffile.imwrite(tmp_path / "rgba.tif", a, photometric="rgb", extrasamples=[extra],
                     resolution=(3.0, 3.0), resolutionunit="NONE", metadata=None)
    assert formats.kind_of(tmp_path / "rgba.tif") == "tiff"
    upscale_file(up, tmp_path / "rgba.tif", tmp_path / "rgba_x2.tif")
    with tifffile.TiffFile(tmp_path / "rgba_x2.tif") as t:
        page = t.pages[0]
        assert page.shape == (32, 40, 4)
        assert [int(v) for v in page.extrasamples] == [
            int(getattr(tifffile.EXTRASAMPLE, extra.upper()))]
        assert int(page.resolutionunit) == 1  # NONE, not tifffile's INCH


def test_ome_tiff_named_and_identified_as_a_new_file(tmp_path, capsys):
    stack = np.stack([_smooth((20, 24), 0, 200, seed=k) for k in range(2)]).astype(np.uint8)
    tifffile.imwrite(tmp_path / "cells.ome.tif", stack, metadata={"axes": "ZYX"})
    with tifffile.TiffFile(tmp_path / "cells.ome.tif") as t:
        old = t.ome_metadata
    old_uuid = re.search(r'<OME [^>]*UUID="([^"]+)"', old).group(1)
    assert main(["upscale", str(tmp_path), "-m", "bicubic", "-s", "2", "-q"]) == 0
    assert (tmp_path / "cells_x2.ome.tif").exists()
    with tifffile.TiffFile(tmp_path / "cells_x2.ome.tif") as t:
        xml = t.ome_metadata
        assert t.is_ome and t.series[0].shape == (2, 40, 48)
    new_uuid = re.search(r'<OME [^>]*UUID="([^"]+)"', xml).group(1)
    assert new_uuid.startswith("urn:uuid:") and new_uuid != old_uuid
    assert "cells.ome.tif" not in xml
    # a second run over the folder leaves its own output alone
    assert main(["upscale", str(tmp_path), "-m", "bicubic", "-s", "2", "-q"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cells.ome.tif", "cells_x2.ome.tif"]


def test_four_samples_min_is_black_written(tmp_path):
    up = upres.load("bicubic", scale=2)
    a = np.stack([_smooth((12, 16), 0, 1, seed=k) for k in range(4)], -1).astype(np.float32)
    tifffile.imwrite(tmp_path / "four.tif", a, photometric="minisblack", planarconfig="contig")
    upscale_file(up, tmp_path / "four.tif", tmp_path / "four_x2.tif")
    assert tifffile.imread(tmp_path / "four_x2.tif").shape == (24, 32, 4)


def test_pictures_are_not_taken_for_scientific_tiff(tmp_path):
    """1-bit pages, palette pages, photos with a metric DPI and an ICC profile or a display
    orientation are pictures (Pillow reads them; a 1-bit TIFF was refused as "bool"); a plain
    8-bit page with a metric unit is a calibrated measurement; a second page of the same size
    makes a stack."""
    from upres.formats.image import _srgb_profile
    from upres.formats.tiff import scientific_reason

    rgb = Image.fromarray(np.random.default_rng(1).integers(0, 255, (20, 30, 3), np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6
    cases = {"bilevel": (rgb.convert("1"), {"compression": "group4"}, None),
             "palette_cm": (rgb.convert("P"), {"resolution": 50, "resolution_unit": "cm"},
                            None),
             "icc_cm": (rgb, {"resolution": 50, "resolution_unit": "cm",
                              "icc_profile": _srgb_profile()}, None),
             "turned_cm": (rgb, {"resolution": 50, "resolution_unit": "cm",
                                 "exif": exif.tobytes()}, None),
             "plain_cm": (rgb, {"resolution": 50, "resolution_unit": "cm"}, "metadata"),
             "two_pages": (rgb, {"save_all": True, "append_images": [rgb]}, "pages")}
    for name, (im, kw, want) in cases.items():
        im.save(tmp_path / f"{name}.tif", format="TIFF", **kw)
        assert scientific_reason(tmp_path / f"{name}.tif") == want, name
        assert scientific_reason((tmp_path / f"{name}.tif").read_bytes()) == want, name
    doc = formats.read(tmp_path / "bilevel.tif")
    assert doc.kind == "image" and doc.frames[0].shape[:2] == (20, 30)
    doc = formats.read(tmp_path / "turned_cm.tif")
    assert doc.kind == "image" and doc.frames[0].shape[:2] == (30, 20)  # turned upright


def test_ome_upload_without_its_name_is_still_a_new_dataset():
    """On the server the source's name is unknown: a single-file OME-TIFF is then told by its
    references, every one of which carries the document's own UUID (a Bio-Formats file
    names itself in them); a reference to another file's UUID keeps the XML's identity."""
    from upres.formats.tiff import _scale_ome

    own = "urn:uuid:0f1e2d3c-0000-4000-8000-000000000001"
    xml = (f'<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06" UUID="{own}">'
           '<Image ID="Image:0"><Pixels ID="Pixels:0" SizeX="24" SizeY="20" SizeZ="1" '
           'PhysicalSizeX="0.5" PhysicalSizeY="0.5"><TiffData IFD="0" PlaneCount="1">'
           f'<UUID FileName="sample.ome.tif">{own}</UUID></TiffData></Pixels></Image></OME>')
    out = _scale_ome(xml, 2)
    assert 'SizeX="48"' in out and 'PhysicalSizeX="0.25"' in out
    assert own not in out and "sample.ome.tif" not in out
    other = xml.replace(f'">{own}</UUID>', '">urn:uuid:99999999-0000-4000-8000-000000000002'
                                           '</UUID>')
    kept = _scale_ome(other, 2)
    assert own in kept and "sample.ome.tif" in kept


def _linked_ome(other_name: str) -> bytes:
    """A one-plane OME-TIFF whose XML puts a second plane in the file ``other_name``."""
    own = "urn:uuid:0f1e2d3c-0000-4000-8000-000000000003"
    xml = (f'<?xml version="1.0" encoding="UTF-8"?><OME xmlns="http://www.openmicroscopy.org/'
           f'Schemas/OME/2016-06" UUID="{own}"><Image ID="Image:0"><Pixels ID="Pixels:0" '
           'DimensionOrder="XYZCT" Type="uint16" SizeX="32" SizeY="24" SizeZ="2" SizeC="1" '
           'SizeT="1"><Channel ID="Channel:0:0" SamplesPerPixel="1"/>'
           f'<TiffData FirstZ="0" IFD="0" PlaneCount="1"><UUID FileName="a.ome.tif">{own}'
           '</UUID></TiffData><TiffData FirstZ="1" IFD="0" PlaneCount="1"><UUID FileName='
           f'"{other_name}">urn:uuid:0f1e2d3c-0000-4000-8000-000000000004</UUID></TiffData>'
           '</Pixels></Image></OME>')
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.full((24, 32), 7, np.uint16), description=xml, metadata=None)
    return buf.getvalue()


def test_multi_file_ome_links_are_told_and_need_not_be_followed(tmp_path):
    """A multi-file OME-TIFF is told by its references to another UUID (or, without a
    document UUID, to more than one); single-file documents are not. With ``linked=False``
    read_tiff reads the file's own pages only and opens no file its XML names."""
    from upres.formats.tiff import ome_links_other_files, read_tiff

    tifffile.imwrite(tmp_path / "b.tif", np.full((24, 32), 4242, np.uint16))
    data = _linked_ome("b.tif")
    (tmp_path / "a.ome.tif").write_bytes(data)
    with tifffile.TiffFile(tmp_path / "a.ome.tif") as tf:
        xml = tf.pages.first.description
    assert ome_links_other_files(xml)
    single = re.sub(r'<TiffData FirstZ="1".*?</TiffData>', "", xml)
    assert not ome_links_other_files(single)
    no_root = re.sub(r'(<OME\b[^>]*?)\sUUID="[^"]*"', r"\1", xml)
    assert ome_links_other_files(no_root) and not ome_links_other_files(
        re.sub(r'(<OME\b[^>]*?)\sUUID="[^"]*"', r"\1", single))
    pages, _ = read_tiff(tmp_path / "a.ome.tif")  # the CLI follows the set (as tifffile does)
    assert [int(p.max()) for p in pages] == [7, 4242]
    pages, _ = read_tiff(tmp_path / "a.ome.tif", linked=False)
    assert [int(p.max()) for p in pages] == [7]


def test_quieting_tifffile_is_per_thread_and_leaves_it_as_it_was(caplog):
    """Threads of a server read TIFFs at once: one thread's quiet reading must neither
    silence another's tifffile records nor leave the logger silenced afterwards."""
    import logging
    import threading

    from upres.formats.tiff import _quiet_tifffile

    log = logging.getLogger("tifffile")
    inside, release = threading.Event(), threading.Event()

    def quiet_reader():
        with _quiet_tifffile():
            log.warning("dropped")
            inside.set()
            release.wait(10)

    t = threading.Thread(target=quiet_reader)
    with caplog.at_level(logging.WARNING, logger="tifffile"):
        t.start()
        assert inside.wait(10)
        log.warning("from another thread")
        release.set()
        t.join(10)
        log.warning("after")
    seen = [r.getMessage() for r in caplog.records if r.name == "tifffile"]
    assert seen == ["from another thread", "after"]
