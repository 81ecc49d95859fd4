"""GeoTIFF and other GDAL rasters (issue 21): georeferencing kept exactly, any band count and
type, nodata/NaN/masks/alpha kept out of the network and put back, windowed == whole, bounded
memory, COG and overviews, bad inputs. Every output is read back with rasterio."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")
from affine import Affine  # noqa: E402
from rasterio.control import GroundControlPoint  # noqa: E402
from rasterio.transform import from_origin  # noqa: E402
from rasterio.windows import Window  # noqa: E402

import upres  # noqa: E402
from upres.cli import main  # noqa: E402
from upres.errors import UpresError  # noqa: E402
from upres.raster import fill_nearby, parse_bands, plan_bands, upscale_raster  # noqa: E402

from conftest import DATA, ROOT  # noqa: E402

GEO = DATA / "apps" / "geo"
SCENES = sorted(p.name for p in GEO.glob("*.tif") if p.name != "corrupt.tif")


def _valid(ds) -> np.ndarray:
    """(count, h, w) bool: GDAL's mask, and finite for float bands."""
    ok = ds.read_masks() > 0
    if ds.dtypes[0].startswith("float"):
        ok &= np.isfinite(ds.read())
    return ok


def _near(a: np.ndarray, s: int) -> np.ndarray:
    return np.repeat(np.repeat(a, s, -2), s, -1)


def _check_same_place(src: Path, out: Path, s: int) -> None:
    """What a GIS needs to lay ``out`` exactly on ``src``, and the masks in the same places."""
    with rasterio.open(src) as a, rasterio.open(out) as b:
        assert (b.width, b.height) == (a.width * s, a.height * s)
        assert b.bounds == a.bounds
        if not a.transform.is_identity:
            assert b.transform.almost_equals(a.transform @ Affine.scale(1 / s), 1e-12)
        assert b.crs == a.crs
        assert b.dtypes == a.dtypes and b.count == a.count
        assert b.colorinterp == a.colorinterp
        assert all(x == y or (x != x and y != y) for x, y in zip(a.nodatavals, b.nodatavals,
                                                                  strict=True))
        assert b.tags() == a.tags()
        va, vb = _valid(a), _valid(b)
        np.testing.assert_array_equal(_near(va, s), vb)  # masks: nearest, in place
        data = b.read()
        for i, nd in enumerate(b.nodatavals):
            if nd is not None and nd == nd:  # no valid sample reads as nodata
                assert not (vb[i] & (data[i] == nd)).any()
        src_vals = a.read()
        # every invalid sample keeps its value, enlarged by nearest neighbour
        np.testing.assert_array_equal(data[~vb], _near(src_vals, s)[~vb])


@pytest.mark.parametrize("name", SCENES)
def test_real_rasters_lie_exactly_on_the_input(name, tmp_path):
    out = tmp_path / "o.tif"
    assert main(["upscale", str(GEO / name), "-o", str(out), "-m", "bicubic", "-s", "2",
                 "-q"]) == 0
    _check_same_place(GEO / name, out, 2)


def test_landsat_through_the_network_with_alpha(tmp_path):
    up = upres.load("fast-x2", device="cpu")
    out = upscale_raster(up, GEO / "RGBA.byte.tif", tmp_path / "o.tif")
    _check_same_place(GEO / "RGBA.byte.tif", out, 2)
    with rasterio.open(GEO / "RGBA.byte.tif") as a, rasterio.open(out) as b:
        # alpha is a mask: enlarged by nearest neighbour, exactly
        np.testing.assert_array_equal(b.read(4), _near(a.read(4), 2))
        # the scene itself went through the network: not nearest, not bicubic
        rgb = b.read([1, 2, 3]).astype(int)
        ok = b.read_masks(1) > 0
        assert np.abs(rgb - _near(a.read([1, 2, 3]), 2))[:, ok].mean() > 1


def test_kind_is_chosen_automatically_and_api_upscale_file(tmp_path):
    from upres import formats

    assert formats.kind_of(GEO / "RGB.byte.tif") == "geotiff"
    assert formats.kind_of(DATA / "apps" / "science" / "fei-sem-rbc.tif") == "tiff"
    with pytest.raises(UpresError, match="window by window"):
        formats.read(GEO / "shade.tif")
    up = upres.load("bicubic", scale=2)
    out = upres.upscale_file(up, GEO / "gray_geotiff.tif", tmp_path / "g.tif")
    _check_same_place(GEO / "gray_geotiff.tif", out, 2)


def _scene_crop(tmp_path: Path, size: int = 200) -> Path:
    """A real Landsat crop that holds the rotated footprint's nodata corner."""
    path = tmp_path / "crop.tif"
    with rasterio.open(GEO / "RGB.byte.tif") as a:
        win = Window(0, 60, size, size)
        prof = a.profile | {"width": size, "height": size,
                            "transform": a.window_transform(win)}
        with rasterio.open(path, "w", **prof) as d:
            d.write(a.read(window=win))
    return path


def test_windowed_equals_whole_on_a_real_scene(tmp_path):
    """x2 (UpNet 64 x 16: receptive-field radius 18 LR pixels) with nodata in the scene:
    64-pixel windows give exactly the one-window result."""
    src = _scene_crop(tmp_path)
    with rasterio.open(src) as a:
        assert (a.read_masks(1) == 0).mean() > 0.05  # the nodata corner is in
    up = upres.load("x2", device="cpu")
    whole = upscale_raster(up, src, tmp_path / "whole.tif", tile=0)
    tiled = upscale_raster(up, src, tmp_path / "tiled.tif", tile=64, tile_overlap=20)
    with rasterio.open(whole) as w, rasterio.open(tiled) as t:
        np.testing.assert_array_equal(w.read(), t.read())
    _check_same_place(src, tiled, 2)


def test_every_window_of_an_8bit_raster_reaches_the_network_on_8bit_levels(tmp_path):
    """The nodata fill's means are rounded to 8-bit levels in 8-bit rasters, so every window
    takes the same network path (a default int8 path runs 8-bit inputs only; windows that
    touch nodata would otherwise run the float network beside int8 ones)."""
    from upres.inference.upscaler import on_8bit_grid

    src = GEO / "RGB.byte.tif"  # 3 x uint8, nodata 0 around a rotated footprint
    up = upres.load("tiny-x2", device="cpu", precision="fp32")
    seen: list[bool] = []
    run = up.upscale

    def spy(img: np.ndarray, **kw: object) -> np.ndarray:
        seen.append(on_8bit_grid(np.asarray(img)))
        return run(img, **kw)

    up.upscale = spy  # type: ignore[method-assign]
    upscale_raster(up, src, tmp_path / "tiled.tif", tile=128)
    assert len(seen) > 4 and all(seen)


def _sentinel_like(path: Path) -> np.ndarray:
    rng = np.random.default_rng(3)
    small = rng.random((13, 12, 15))
    a = (np.kron(small, np.ones((1, 6, 6))) * 6000 - 800).astype(np.int16)
    a[:, :7, :] = -9999
    a[:, 30:33, 40:44] = -9999
    with rasterio.open(path, "w", driver="GTiff", width=90, height=72, count=13, dtype="int16",
                       nodata=-9999, crs="EPSG:32633",
                       transform=from_origin(300000, 5000000, 20, 20)) as d:
        d.write(a)
        d.descriptions = tuple(f"B{i + 1}" for i in range(13))
        d.scales, d.offsets = [1e-4] * 13, [-0.1] * 13
        d.update_tags(8, wavelength="842")
        d.update_tags(mission="test")
    return a


def test_thirteen_band_int16_keeps_units_and_metadata(tmp_path):
    src = tmp_path / "s2.tif"
    a = _sentinel_like(src)
    out = tmp_path / "s2_x2.tif"
    assert main(["upscale", str(src), "-o", str(out), "-m", "fast-x2", "-q",
                 "--bands", "rgb:4,3,2", "--bands", "nearest:13", "--bands", "bicubic:11"]) == 0
    _check_same_place(src, out, 2)
    with rasterio.open(out) as b:
        assert b.descriptions == tuple(f"B{i + 1}" for i in range(13))
        assert b.scales == (1e-4,) * 13 and b.offsets == (-0.1,) * 13
        assert b.tags(8) == {"wavelength": "842"} and b.tags()["mission"] == "test"
        data = b.read()
        ok = b.read_masks() > 0
    np.testing.assert_array_equal(data[12], _near(a[12], 2))  # nearest: exactly
    valid = a[:, 7:, :][a[:, 7:, :] != -9999]
    for i in range(12):  # values stay in their units and range (not stretched to 8 bits)
        v = data[i][ok[i]]
        assert v.min() >= valid.min() and v.max() <= valid.max()
        assert abs(float(v.mean()) - float(a[i][a[i] != -9999].mean())) < 60


def test_band_selection_and_bad_bands(tmp_path, capsys):
    src = tmp_path / "s2.tif"
    _sentinel_like(src)
    out = tmp_path / "sel.tif"
    assert main(["upscale", str(src), "-o", str(out), "-m", "bicubic", "-s", "2", "-q",
                 "--bands", "4,3,2,8"]) == 0
    with rasterio.open(out) as b:
        assert b.count == 4 and b.descriptions == ("B4", "B3", "B2", "B8")
        assert b.tags(4) == {"wavelength": "842"}
    for bad, msg in ((["--bands", "14"], "names band 14, but the raster has 13 bands"),
                     (["--bands", "foo"], "'foo' is not a band number"),
                     (["--bands", "rgb:1,2"], "rgb takes exactly three bands"),
                     (["--bands", "warp:1"], "unknown mode 'warp'"),
                     (["--bands", "net:1", "--bands", "nearest:1"], "two modes")):
        capsys.readouterr()
        assert main(["upscale", str(src), "-o", str(tmp_path / "bad.tif"), "-m", "bicubic",
                     "-s", "2", *bad]) == 1
        err = capsys.readouterr().err.strip()
        assert msg in err and len(err.splitlines()) == 1, err
        assert not (tmp_path / "bad.tif").exists()


def test_plan_bands_defaults():
    meta = _meta_for(colorinterp=("blue", "green", "red", "alpha", "undefined"))
    keep, groups = plan_bands(meta)
    assert keep == [0, 1, 2, 3, 4]
    assert [(g.mode, g.bands) for g in groups] == [("rgb", (2, 1, 0)), ("nearest", (3,)),
                                                   ("net", (4,))]
    _, groups = plan_bands(meta, ["rgb:none"])
    assert [g.mode for g in groups] == ["net", "net", "net", "nearest", "net"]
    assert parse_bands(["1-3,5"]) == ([1, 2, 3, 5], {})


def _meta_for(colorinterp):
    from upres.formats.geotiff import GeoMeta

    n = len(colorinterp)
    return GeoMeta(path=Path("x.tif"), driver="GTiff", width=4, height=4, count=n,
                   dtype="uint16", crs=None, transform=None, gcps=(), gcps_crs=None,
                   nodata=(None,) * n, colorinterp=colorinterp, descriptions=(None,) * n,
                   scales=(1.0,) * n, offsets=(0.0,) * n, units=(None,) * n, tags=(),
                   band_tags=((),) * n, colormaps=(), mask=False, point=False)


def test_float_nan_internal_mask_and_uint16_full_range(tmp_path):
    rng = np.random.default_rng(4)
    f = np.kron(rng.random((10, 9)), np.ones((6, 6))).astype(np.float32) * 3 - 1
    f[10:20, 10:20] = np.nan
    t = from_origin(10, 50, 0.001, 0.001)
    with rasterio.open(tmp_path / "f.tif", "w", driver="GTiff", width=54, height=60, count=1,
                       dtype="float32", crs="EPSG:4326", transform=t) as d:
        d.write(f, 1)
    m = (rng.random((3, 60, 54)) * 255).astype(np.uint8)
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), \
            rasterio.open(tmp_path / "m.tif", "w", driver="GTiff", width=54, height=60,
                          count=3, dtype="uint8", crs="EPSG:4326", transform=t,
                          photometric="rgb") as d:
        d.write(m)
        mk = np.full((60, 54), 255, np.uint8)
        mk[:20, :25] = 0
        d.write_mask(mk)
    up = upres.load("fast-x2", device="cpu")
    for name in ("f.tif", "m.tif"):
        out = upscale_raster(up, tmp_path / name, tmp_path / f"o_{name}")
        _check_same_place(tmp_path / name, out, 2)
    with rasterio.open(tmp_path / "o_f.tif") as b:
        o = b.read(1)
        assert np.isnan(o[20:40, 20:40]).all() and np.isnan(o).sum() == 400
        fin = o[np.isfinite(o)]
        assert fin.min() >= np.nanmin(f) and fin.max() <= np.nanmax(f)
    with rasterio.open(tmp_path / "o_m.tif") as b:
        assert b.mask_flag_enums[0][0].name == "per_dataset"


def test_pixel_is_point_and_gcps(tmp_path):
    import tifffile

    arr = (np.random.default_rng(0).random((2, 40, 50)) * 1000).astype(np.int16)
    with rasterio.open(tmp_path / "p.tif", "w", driver="GTiff", width=50, height=40, count=2,
                       dtype="int16", crs="EPSG:32633",
                       transform=from_origin(500000, 6000000, 10, 10)) as d:
        d.write(arr)
        d.update_tags(AREA_OR_POINT="Point")
    gcps = [GroundControlPoint(row=r, col=c, x=10 + c / 50, y=50 - r / 40, z=0)
            for r in (0, 40) for c in (0, 50)]
    with rasterio.open(tmp_path / "g.tif", "w", driver="GTiff", width=50, height=40, count=1,
                       dtype="uint8") as d:
        d.write((arr[0] % 255).astype(np.uint8), 1)
        d.gcps = (gcps, rasterio.crs.CRS.from_epsg(4326))
    up = upres.load("bicubic", scale=2)
    p = upscale_raster(up, tmp_path / "p.tif", tmp_path / "p2.tif")
    _check_same_place(tmp_path / "p.tif", p, 2)
    # PixelIsPoint: the tie point is the centre of the first pixel, at the new pixel size
    tie = tifffile.TiffFile(p).pages[0].tags[33922].value
    assert tie[3:5] == (500002.5, 5999997.5)
    assert tifffile.TiffFile(tmp_path / "p.tif").pages[0].tags[33922].value[3:5] == \
        (500005.0, 5999995.0)
    g = upscale_raster(up, tmp_path / "g.tif", tmp_path / "g2.tif")
    with rasterio.open(g) as b:
        got = sorted((q.row, q.col, q.x, q.y) for q in b.gcps[0])
        assert got == sorted((q.row * 2, q.col * 2, q.x, q.y) for q in gcps)
        assert b.gcps[1].to_epsg() == 4326


def test_cog_and_overviews(tmp_path):
    out = tmp_path / "c.tif"
    assert main(["upscale", str(GEO / "cogeo.tif"), "-o", str(out), "-m", "bicubic", "-s",
                 "2", "--format", "cog", "-q"]) == 0
    with rasterio.open(out) as b:
        assert b.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert b.overviews(1) == [2, 4]
    _check_same_place(GEO / "cogeo.tif", out, 2)
    out2 = tmp_path / "o.tif"
    assert main(["upscale", str(GEO / "shade.tif"), "-o", str(out2), "-m", "bicubic", "-s",
                 "2", "--overviews", "-q"]) == 0
    with rasterio.open(out2) as b:
        assert b.overviews(1) == [2, 4] and b.block_shapes[0] == (512, 512)
        assert b.compression.name == "deflate"
    assert not list(tmp_path.glob(".*"))  # no temporaries left


def test_png_becomes_geotiff_with_format_gtiff(tmp_path):
    out = tmp_path / "b.tif"
    assert main(["upscale", str(ROOT / "src/upres/assets/butterfly.png"), "-o", str(out),
                 "-m", "bicubic", "-s", "2", "--format", "gtiff", "-q"]) == 0
    with rasterio.open(out) as b:
        assert (b.width, b.count, b.dtypes[0]) == (512, 3, "uint8")


def test_bad_rasters_one_line_nothing_written(tmp_path, capsys):
    (tmp_path / "nobands.vrt").write_text(
        '<VRTDataset rasterXSize="10" rasterYSize="10"><SRS>EPSG:4326</SRS>'
        '<GeoTransform>0,1,0,0,0,-1</GeoTransform></VRTDataset>')
    with rasterio.open(tmp_path / "huge.tif", "w", driver="GTiff", width=100000,
                       height=100000, count=1, dtype="uint8", tiled=True, sparse_ok=True,
                       crs="EPSG:4326", transform=from_origin(0, 0, 1, 1)):
        pass
    assert (tmp_path / "huge.tif").stat().st_size < 4_000_000
    trunc = tmp_path / "trunc.tif"
    trunc.write_bytes((GEO / "shade.tif").read_bytes()[:40000])
    cases = {GEO / "corrupt.tif": "damaged", tmp_path / "nobands.vrt": "cannot open raster",
             tmp_path / "huge.tif": "raster too large (100000x100000 pixels",
             trunc: "damaged"}
    out = tmp_path / "out"
    for src, msg in cases.items():
        capsys.readouterr()
        assert main(["upscale", str(src), "-o", str(out), "-m", "bicubic", "-s", "2",
                     "--format", "gtiff"]) == 1
        err = capsys.readouterr().err.strip()
        assert msg in err and str(src) in err and len(err.splitlines()) == 1, err
    assert not out.exists() or not any(out.iterdir())


def test_nodata_beside_an_alpha_band_runs_quietly(tmp_path, capfd, recwarn):
    """GDAL reads band 4 of a 4-band uint8 GeoTIFF as alpha; with a nodata value as well,
    rasterio warns on every mask read. The nodata value decides, and nothing is printed."""
    yy, xx = np.mgrid[0:40, 0:48]
    g = (yy * 48 + xx) / 1920.0
    a = np.stack([g * 250 + 1, (1 - g) * 250 + 1, g * 100 + 1, g * 200 + 1]).astype(np.uint8)
    a[:, :5, :5] = 0
    src = tmp_path / "nd0.tif"
    with rasterio.open(src, "w", driver="GTiff", height=40, width=48, count=4, dtype="uint8",
                       crs="EPSG:32633", transform=Affine(10, 0, 500000, 0, -10, 4000000),
                       nodata=0, photometric="RGB", alpha="YES") as d:
        d.write(a)
    assert main(["upscale", str(src), "-o", str(tmp_path / "out"), "-m", "bicubic", "-s", "2",
                 "-q"]) == 0
    err = capfd.readouterr().err
    assert "Warning" not in err, err
    assert not [w for w in recwarn if "nodata" in str(w.message).lower()], list(recwarn)
    with rasterio.open(tmp_path / "out" / "nd0_x2.tif") as d:
        assert d.count == 4 and d.nodata == 0
        assert (d.read_masks(1)[:10, :10] == 0).all() and (d.read_masks(1)[10:, 10:] > 0).all()


def test_existing_output_is_kept(tmp_path, capsys):
    out = tmp_path / "s.tif"
    out.write_bytes(b"mine")
    assert main(["upscale", str(GEO / "shade.tif"), "-o", str(out), "-m", "bicubic", "-s",
                 "2"]) == 0
    assert out.read_bytes() == b"mine"
    assert "exists, skipped" in capsys.readouterr().err


def test_fill_nearby_is_local_and_never_zero():
    rng = np.random.default_rng(0)
    x = (rng.random((2, 30, 30)) * 0.5 + 0.25).astype(np.float32)
    bad = np.zeros((30, 30), bool)
    bad[:, :12] = True
    f = fill_nearby(x, bad, 4)
    np.testing.assert_array_equal(f[:, ~bad], x[:, ~bad])
    assert f.min() >= 0.25 and f.max() <= 0.75  # from valid values, never zero
    # local: a window that holds everything within the radius gives the same fill there
    part = fill_nearby(x[:, :, 4:], bad[:, 4:], 4)
    np.testing.assert_array_equal(part[:, :, 4:], f[:, :, 8:])


def _make_big(path: Path, n: int) -> None:
    with rasterio.open(GEO / "RGB.byte.tif") as a:
        tile = a.read(window=Window(150, 150, 512, 512))
    with rasterio.open(path, "w", driver="GTiff", width=n, height=n, count=3, dtype="uint8",
                       nodata=0, tiled=True, compress="deflate", crs="EPSG:32618",
                       transform=from_origin(0, 0, 30, 30), photometric="rgb") as d:
        for y in range(0, n, 512):
            for x in range(0, n, 512):
                h, w = min(512, n - y), min(512, n - x)
                d.write(tile[:, :h, :w], window=Window(x, y, w, h))


def _peak_rss_kb(args: list[str]) -> int:
    code = ("import resource, sys; from upres.cli import main; rc = main(sys.argv[1:]); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                       timeout=300, check=True)
    return int(r.stdout.strip().splitlines()[-1])


def test_peak_memory_does_not_grow_with_the_raster(tmp_path):
    """Outputs of 9 and 36 megapixels x 3 bands: peak RSS within 10 % (a whole-image path
    would hold 81 MB more for the larger one)."""
    rss = []
    for n in (1500, 3000):
        _make_big(tmp_path / f"b{n}.tif", n)
        rss.append(_peak_rss_kb(["upscale", str(tmp_path / f"b{n}.tif"), "-o",
                                 str(tmp_path / f"o{n}.tif"), "-m", "tiny-x2", "-q",
                                 "--tile", "256"]))
    assert rss[1] < rss[0] * 1.10, rss


def test_killed_run_leaves_nothing_under_the_output_name(tmp_path):
    src = tmp_path / "b.tif"
    _make_big(src, 2500)
    out = tmp_path / "o.tif"
    cmd = [sys.executable, "-m", "upres", "upscale", str(src), "-o", str(out), "-m", "x2",
           "-q", "--tile", "256"]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".o.tif.*.part")) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=30)
    assert not out.exists()
    assert list(tmp_path.glob(".o.tif.*.part"))  # the killed run's temporary, hidden
    # the next run sweeps it (its process is gone) and finishes
    assert main(["upscale", str(src), "-o", str(out), "-m", "bicubic", "-s", "2", "-q"]) == 0
    assert out.exists() and not list(tmp_path.glob(".o.tif.*"))


def _plain_tiff(path: Path, a: np.ndarray) -> None:
    """A TIFF with no georeferencing of its own (what a world file or sidecar goes with)."""
    import tifffile

    tifffile.imwrite(path, a)


def test_sidecars_world_file_pam_nodata_and_rpcs_are_honoured(tmp_path, capsys):
    """Georeferencing and nodata that GDAL reads from beside the file: a world file, a PAM
    .aux.xml sidecar, RPCs. They were lost (the TIFF went the photo path, or PAM was off), and
    nodata was smeared into valid pixels."""
    a = np.full((32, 32), 2000, np.uint16)
    a[:, :12] = 0  # nodata, declared only in the sidecar
    a[::5, 12:] = 3000
    _plain_tiff(tmp_path / "pam.tif", a)
    (tmp_path / "pam.tif.aux.xml").write_text(
        '<PAMDataset><SRS>EPSG:32633</SRS><GeoTransform>500000, 30, 0, 4000000, 0, -30'
        '</GeoTransform><PAMRasterBand band="1"><NoDataValue>0</NoDataValue>'
        '<Description>elevation</Description></PAMRasterBand></PAMDataset>')
    _plain_tiff(tmp_path / "wld.tif", a)
    (tmp_path / "wld.tfw").write_text("30\n0\n0\n-30\n500015\n3999985\n")
    with rasterio.open(tmp_path / "rpc.tif", "w", driver="GTiff", width=32, height=32,
                       count=1, dtype="uint16") as d:
        from rasterio.rpc import RPC

        d.write(a, 1)
        d.rpcs = RPC(height_off=0, height_scale=1, lat_off=45, lat_scale=1, line_den_coeff=
                     [1] + [0] * 19, line_num_coeff=[0, 1] + [0] * 18, line_off=16,
                     line_scale=16, long_off=7, long_scale=1, samp_den_coeff=[1] + [0] * 19,
                     samp_num_coeff=[0, 0, 1] + [0] * 17, samp_off=16, samp_scale=16)
    for name in ("pam.tif", "wld.tif", "rpc.tif"):
        assert upres.formats.kind_of(tmp_path / name) == "geotiff", name
    out = tmp_path / "out"
    assert main(["upscale", str(tmp_path / "pam.tif"), str(tmp_path / "wld.tif"),
                 "-o", str(out), "-m", "bicubic", "-s", "2", "-q"]) == 0
    with rasterio.open(out / "pam_x2.tif") as b:
        assert b.nodata == 0 and b.descriptions == ("elevation",)
        assert b.transform == Affine(15, 0, 500000, 0, -15, 4000000) and b.crs.to_epsg() == 32633
        v = b.read(1)
        assert (v[:, :24] == 0).all() and (v[:, 24:] > 0).all()  # nodata stayed nodata
    with rasterio.open(out / "wld_x2.tif") as b:  # the world file gives pixel centres
        assert b.transform == Affine(15, 0, 500000, 0, -15, 4000000)
    assert not (tmp_path / "wld.tif.aux.xml").exists()  # nothing written beside an input
    capsys.readouterr()
    assert main(["upscale", str(tmp_path / "rpc.tif"), "-o", str(out), "-m", "bicubic",
                 "-s", "2"]) == 1
    assert "georeferenced by RPCs only" in capsys.readouterr().err


def test_bands_with_different_nodata_refused_unless_selected(tmp_path, capsys):
    for i, nd in ((1, 0), (2, 65535)):
        with rasterio.open(tmp_path / f"b{i}.tif", "w", driver="GTiff", width=16, height=16,
                           count=1, dtype="uint16", nodata=nd, crs="EPSG:32633",
                           transform=from_origin(500000, 4000000, 30, 30)) as d:
            d.write(np.full((16, 16), 1000 * i, np.uint16), 1)
    bands = "".join(
        f'<VRTRasterBand dataType="UInt16" band="{i}"><NoDataValue>{nd}</NoDataValue>'
        f'<SimpleSource><SourceFilename relativeToVRT="1">b{i}.tif</SourceFilename>'
        '<SourceBand>1</SourceBand></SimpleSource></VRTRasterBand>'
        for i, nd in ((1, 0), (2, 65535)))
    (tmp_path / "two.vrt").write_text(
        '<VRTDataset rasterXSize="16" rasterYSize="16"><SRS>EPSG:32633</SRS>'
        f'<GeoTransform>500000, 30, 0, 4000000, 0, -30</GeoTransform>{bands}</VRTDataset>')
    out = tmp_path / "two_x2.tif"
    args = ["upscale", str(tmp_path / "two.vrt"), "-o", str(out), "-m", "bicubic", "-s", "2",
            "--format", "gtiff", "-q"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "bands have different nodata values (0, 65535)" in err and not out.exists()
    assert main([*args, "--bands", "2"]) == 0
    with rasterio.open(out) as b:
        assert b.count == 1 and b.nodata == 65535
