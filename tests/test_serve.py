"""``upres serve``: the real server (uvicorn, a subprocess on a free loopback port) answered over
HTTP by httpx, and its page driven in Debian's chromium by Playwright."""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

import upres
from upres.cli import main
from upres.errors import UpresError

from conftest import ARTIFACTS, BENCH, DATA, ROOT

BABY = BENCH / "Set5" / "baby.png"  # 512x512
BIRD = BENCH / "Set5" / "bird.png"  # 288x288
RGBA16_TIFF = DATA / "apps" / "geo" / "RGBA.uint16.tif"  # 634x411, 16-bit RGBA
DICOM = DATA / "apps" / "dicom" / "dicom_file04.dcm"
MAX_UPLOAD = 2 * 2**20
MAX_PIXELS = 1_200_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _serving(cwd: Path, *args: str):
    """``upres serve *args`` as a real uvicorn subprocess on a free loopback port: its URL."""
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "upres.cli", "serve", "--port", str(port), *args], cwd=cwd,
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"server did not start: {proc.stdout.read()}")
        time.sleep(0.3)
    yield url
    proc.terminate()
    out, _ = proc.communicate(timeout=30)
    assert "Traceback" not in out, out


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The real server with small limits: 2 MiB uploads, 1.2 MP inputs, one worker, no queue."""
    cwd = tmp_path_factory.mktemp("serve-cwd")  # the server must not write here
    with _serving(cwd, "--max-upload-mb", "2", "--max-pixels", str(MAX_PIXELS), "--workers",
                  "1", "--max-queue", "0", "--queue-timeout", "0.2") as url:
        yield url, cwd


def _png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def _multipart(*parts: tuple[str, str | None, bytes], boundary: str = "xyz") -> dict:
    """A multipart body of ``(name, filename or None, bytes)`` parts, as httpx keyword args."""
    body = b""
    for name, filename, data in parts:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--{boundary}\r\nContent-Disposition: {disp}\r\n\r\n".encode() + data + b"\r\n"
    return {"content": body + f"--{boundary}--\r\n".encode(),
            "headers": {"content-type": f"multipart/form-data; boundary={boundary}"}}


def _png_header(data: bytes) -> tuple[int, int, int, int]:
    """(width, height, bit depth, colour type) from a PNG's IHDR."""
    w, h, depth, color = struct.unpack(">IIBB", data[16:26])
    return w, h, depth, color


def _bomb_png(width: int, height: int) -> bytes:
    """A valid PNG header claiming ``width x height`` pixels, with almost no data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0"))
            + chunk(b"IEND", b""))


# -- API -------------------------------------------------------------------------------------
def test_health_docs_and_models(server, capsys):
    url, _ = server
    h = httpx.get(f"{url}/healthz").json()
    assert h == {"status": "ok", "running": 0, "waiting": 0}
    assert "swagger" in httpx.get(f"{url}/docs").text.lower()
    spec = httpx.get(f"{url}/openapi.json").json()
    assert "/v1/upscale" in spec["paths"] and "/v1/models" in spec["paths"]
    served = httpx.get(f"{url}/v1/models").json()
    assert main(["models", "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    # An `auto` row (the default) first for each scale with a photo model and its base...
    autos = [r for r in served if r["name"] == "auto"]
    assert sorted(r["scale"] for r in autos) == [2, 4] and all(r["denoise"] for r in autos)
    assert [r["name"] for r in served[:len(autos)]] == ["auto"] * len(autos)
    # ...then the same list as `upres models --json` (lanczos is not offered by the page).
    named = [r for r in served if r["name"] != "auto"]
    assert [r["name"] for r in named] == [r["name"] for r in cli if r["name"] != "lanczos"]
    assert [r["psnr"] for r in named] == [r["psnr"] for r in cli if r["name"] != "lanczos"]


def test_upscale_multipart_and_raw_equal_the_library(server):
    import upres

    url, _ = server
    # a clean PNG as the standard protocol makes LR images: the bird shrunk x4 (MATLAB bicubic)
    lr = upres.imresize(np.asarray(Image.open(BIRD).convert("RGB")), 1 / 4)
    buf = io.BytesIO()
    Image.fromarray(lr).save(buf, format="PNG")
    data = buf.getvalue()
    a = httpx.post(f"{url}/v1/upscale", params={"model": "x4"},
                   files={"file": ("bird.png", data, "image/png")}, timeout=120)
    b = httpx.post(f"{url}/v1/upscale?scale=4", content=data, timeout=120)
    assert a.status_code == b.status_code == 200, (a.text, b.text)
    assert a.headers["content-type"] == "image/png"
    assert a.headers["x-upres-model"] == "x4"
    # No model named: auto. A clean PNG gets the photo model at strength 0, which is x4 exactly.
    assert b.headers["x-upres-model"] == "photo-x4" and b.headers["x-upres-denoise"] == "0.00"
    assert a.headers["x-upres-precision"] == "fp32"  # the server's default
    out_a, out_b = _decode(a.content), _decode(b.content)
    assert out_a.shape == (288, 288, 3)
    np.testing.assert_array_equal(out_a, out_b)
    ref = upres.load("x4", device="cpu").upscale(lr)
    # Different thread counts may round a few values the other way: at most one level.
    assert np.abs(out_a.astype(int) - ref.astype(int)).max() <= 1


def test_output_formats(server):
    url, _ = server
    data = BIRD.read_bytes()
    magic = {"jpg": b"\xff\xd8", "webp": b"RIFF", "tiff": b"II", "png": b"\x89PNG"}
    for fmt, head in magic.items():
        r = httpx.post(f"{url}/v1/upscale", params={"scale": 2, "format": fmt}, content=data,
                       timeout=120)
        assert r.status_code == 200 and r.content[:len(head)] == head, (fmt, r.text[:200])
    jpeg = io.BytesIO()
    Image.open(BIRD).save(jpeg, format="JPEG", quality=90)
    r = httpx.post(f"{url}/v1/upscale", params={"scale": 2, "format": "same"},
                   content=jpeg.getvalue(), timeout=120)
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"


# case: (status, what the one-line detail must say)
_BAD = {
    "too_big": (413, "upload too large"), "bomb": (413, "too large"),
    "bomb_small": (413, "too large"), "text": (415, "not an image"),
    "truncated": (422, "upload"), "empty": (422, "empty upload"),
    "bad_scale": (422, "upscales x4, not x3"), "bad_model": (422, "unknown model"),
    "bad_format": (422, "format must be"), "alpha_jpeg": (422, "transparency"),
    "no_file_field": (422, "multipart field 'note' refused"),
    "scale_out_of_range": (422, "scale must be a whole number from 2 to 8"),
    "scale_not_a_number": (422, "scale must be a whole number from 2 to 8"),
    "outscale_nan": (422, "outscale must be a finite number above 0 and at most 16, got 'nan'"),
    "outscale_inf": (422, "outscale must be a finite number above 0 and at most 16, got 'inf'"),
    "empty_size": (422, "size '': expected WxH"), "empty_fit": (422, "fit '': expected WxH"),
    "form_fields": (422, "multipart field 'model' refused: 'model' is a parameter: parameters "
                         "go in the query string"),
    "two_files": (422, "more than one file part"),
    "many_fields": (422, "more than 8 fields"),
    "no_boundary": (422, "no boundary"),
    "dicom": (415, "DICOM is not served by the HTTP API; use upres upscale"),
    "denoise_without_clean_up": (422, "denoise: x4 is not a photo model"),
}


@pytest.mark.parametrize("case", list(_BAD))
def test_bad_requests_get_clear_json_errors(server, case):
    """Every refusal is JSON {"detail": "one line"} that says what is wrong; the server goes on
    answering."""
    url, _ = server
    png = BIRD.read_bytes()
    rgba = np.zeros((20, 20, 4), np.uint8)
    rgba[..., 3] = 128
    params: dict = {"scale": 2}
    kwargs: dict = {}
    expect, says = _BAD[case]
    if case == "too_big":
        kwargs["content"] = os.urandom(MAX_UPLOAD + 1)
    elif case == "bomb":
        kwargs["content"] = _bomb_png(40_000, 40_000)
    elif case == "bomb_small":  # under PIL's own ceiling, over the server's limit
        kwargs["content"] = _bomb_png(2000, 2000)
    elif case == "text":
        kwargs["content"] = b"hello, this is not an image\n" * 10
    elif case == "truncated":
        kwargs["content"] = png[: len(png) // 3]
    elif case == "empty":
        kwargs["content"] = b""
    elif case == "bad_scale":
        params = {"model": "x4", "scale": 3}
        kwargs["content"] = png
    elif case == "bad_model":
        params = {"model": "../../etc/passwd"}
        kwargs["content"] = png
    elif case == "bad_format":
        params["format"] = "gif"
        kwargs["content"] = png
    elif case == "alpha_jpeg":
        params["format"] = "jpg"
        kwargs["content"] = _png_bytes(rgba)
    elif case == "no_file_field":
        kwargs["content"] = (b'--xyz\r\nContent-Disposition: form-data; name="note"\r\n\r\n'
                             b"no file here\r\n--xyz--\r\n")
        kwargs["headers"] = {"content-type": "multipart/form-data; boundary=xyz"}
    elif case in ("scale_out_of_range", "scale_not_a_number"):
        params = {"model": "bicubic", "scale": 9 if case == "scale_out_of_range" else "two"}
        kwargs["content"] = png
    elif case in ("outscale_nan", "outscale_inf"):
        params["outscale"] = case.removeprefix("outscale_")
        kwargs["content"] = png
    elif case in ("empty_size", "empty_fit"):  # ?scale=2&size=
        params[case.removeprefix("empty_")] = ""
        kwargs["content"] = png
    elif case == "form_fields":  # curl -F file=@bird.png -F model=bicubic -F scale=2 ...
        params = {}
        kwargs = _multipart(("file", "bird.png", png), ("model", None, b"bicubic"),
                            ("scale", None, b"2"), ("format", None, b"jpg"))
    elif case == "two_files":
        kwargs = _multipart(("file", "a.png", png), ("file", "b.png", png))
    elif case == "many_fields":
        kwargs = _multipart(*[(f"f{i}", None, b"x") for i in range(9)])
    elif case == "no_boundary":
        kwargs["content"] = png
        kwargs["headers"] = {"content-type": "multipart/form-data"}
    elif case == "dicom":
        kwargs["content"] = DICOM.read_bytes()
    elif case == "denoise_without_clean_up":
        params = {"model": "x4", "denoise": "0.5"}
        kwargs["content"] = png
    r = httpx.post(f"{url}/v1/upscale", params=params, timeout=60, **kwargs)
    assert r.status_code == expect, (case, r.status_code, r.text[:300])
    detail = r.json()["detail"]
    assert isinstance(detail, str) and says in detail, (case, detail)
    assert "\n" not in detail and "/tmp" not in detail  # one line, no server paths
    assert "Exception" not in detail  # says what is wrong, not which class was raised
    assert httpx.get(f"{url}/healthz").json()["status"] == "ok"


@pytest.mark.parametrize("case", ["webp_size", "webp_x4", "jpeg_x4", "exif_jpeg", "exif_tiff"])
def test_outputs_a_format_cannot_hold_are_json_422(server, case):
    """WebP holds 16383 pixels a side and JPEG 65500 (libjpeg): a larger output is refused
    from its size (before the upscale); EXIF too long for JPEG is refused by the encoder;
    both as JSON 422, never a plain-text 500 (TIFF holds that EXIF and answers 200)."""
    url, _ = server
    rng = np.random.default_rng(0)
    if case == "webp_size":  # 4200x2 asked as 16800 wide
        data, params = _png_bytes(rng.integers(0, 256, (2, 4200, 3), np.uint8)), {
            "format": "webp", "size": "16800x0", "scale": 4}
    elif case == "webp_x4":  # 4096 px at x4 through the default model
        data, params = _png_bytes(rng.integers(0, 256, (4, 4096, 3), np.uint8)), {
            "format": "webp", "scale": 4}
    elif case == "jpeg_x4":  # 16400 px at x4
        data, params = _png_bytes(rng.integers(0, 256, (2, 16400, 3), np.uint8)), {
            "format": "jpg", "model": "bicubic", "scale": 4}
    else:  # a 70 KB EXIF description
        exif = Image.Exif()
        exif[0x010E] = "x" * 70_000
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), np.uint8)).save(
            buf, format="PNG", exif=exif.tobytes())
        data, params = buf.getvalue(), {"format": case.removeprefix("exif_"), "scale": 2,
                                        "model": "bicubic"}
    r = httpx.post(f"{url}/v1/upscale", params=params, content=data, timeout=120)
    if case == "exif_tiff":  # TIFF holds it (its main EXIF directory: since session 29)
        assert r.status_code == 200, r.text[:300]
        back = Image.open(io.BytesIO(r.content))
        assert back.size == (32, 32) and back.getexif()[0x010E] == "x" * 70_000
        return
    assert r.status_code == 422, (case, r.status_code, r.text[:300])
    detail = r.json()["detail"]
    assert "\n" not in detail
    word = {"webp_size": "WEBP holds", "webp_x4": "16384x16 output is larger than WEBP",
            "jpeg_x4": "65600x8 output is larger than JPEG", "exif_jpeg": "EXIF"}[case]
    assert word in detail, detail
    assert httpx.get(f"{url}/healthz").json()["status"] == "ok"


def test_16bit_tiffs_with_alpha_are_read(server, tmp_path):
    """TIFFs PIL cannot open (16-bit RGBA, 16-bit gray + alpha) are read as `upres upscale`
    reads them, and stay 16-bit with their alpha in PNG."""
    import tifffile

    url, _ = server
    la = np.zeros((24, 40, 2), np.uint16)
    la[..., 0] = np.arange(40, dtype=np.uint16) * 1500
    la[..., 1] = 65535
    la[:4, :4, 1] = 0
    tifffile.imwrite(tmp_path / "la16.tif", la, photometric="minisblack",
                     extrasamples=["unassalpha"])
    for path, size, color in [(RGBA16_TIFF, (1268, 822), 6), (tmp_path / "la16.tif", (80, 48), 4)]:
        r = httpx.post(f"{url}/v1/upscale", params={"scale": 2}, content=path.read_bytes(),
                       timeout=120)
        assert r.status_code == 200, (path.name, r.text[:300])
        assert _png_header(r.content) == (*size, 16, color), path.name


def test_scientific_tiffs_come_back_as_upres_upscale_writes_them(server, tmp_path):
    """A float32 ImageJ stack with NaN and a micrometre calibration, and a signed 16-bit page,
    come back as TIFF (the default for them) equal to what `upres upscale` writes: every page,
    dtype, NaN where it was, the pixel size halved. Other formats, output sizes and too many
    pages are refused in one line."""
    import tifffile

    from upres.convert import upscale_file

    url, _ = server
    rng = np.random.default_rng(5)
    stack = (rng.random((3, 30, 40)) * 4 - 1).astype(np.float32)
    stack[1, 5, 7] = np.nan
    tifffile.imwrite(tmp_path / "ij.tif", stack, imagej=True, resolution=(4.0, 4.0),
                     metadata={"unit": "um", "axes": "ZYX"})
    tifffile.imwrite(tmp_path / "s16.tif", rng.integers(-900, 900, (30, 40), dtype=np.int16))
    bicubic = upres.load("bicubic", scale=2)
    for name in ("ij.tif", "s16.tif"):
        upscale_file(bicubic, tmp_path / name, tmp_path / f"cli_{name}")
        for fmt in (None, "same", "tiff"):
            params = {"model": "bicubic", "scale": 2} | ({"format": fmt} if fmt else {})
            r = httpx.post(f"{url}/v1/upscale", params=params,
                           content=(tmp_path / name).read_bytes(), timeout=120)
            assert r.status_code == 200, (name, fmt, r.text[:300])
            assert r.headers["content-type"] == "image/tiff"
            with tifffile.TiffFile(io.BytesIO(r.content)) as got, \
                    tifffile.TiffFile(tmp_path / f"cli_{name}") as want:
                np.testing.assert_array_equal(got.asarray(), want.asarray())
                assert got.asarray().dtype == want.asarray().dtype
                assert got.pages[0].tags[282].value == want.pages[0].tags[282].value
                assert got.imagej_metadata == want.imagej_metadata
    with tifffile.TiffFile(io.BytesIO(r.content)) as t:
        assert t.asarray().dtype == np.int16 and t.asarray().min() < 0
    r = httpx.post(f"{url}/v1/upscale", params={"model": "bicubic", "scale": 2},
                   content=(tmp_path / "ij.tif").read_bytes(), timeout=120)
    with tifffile.TiffFile(io.BytesIO(r.content)) as t:
        out, xres = t.asarray(), t.pages[0].tags[282].value
    assert out.shape == (3, 60, 80) and np.isnan(out[1, 10:12, 14:16]).all()
    assert np.isnan(out).sum() == 4 and xres[0] / xres[1] == pytest.approx(8.0)
    geo = [(33550, 12, 3, (1.0, 1.0, 0.0), True), (33922, 12, 6, (0, 0, 0, 5e5, 4e6, 0), True)]
    tifffile.imwrite(tmp_path / "geo.tif", stack[0], extratags=geo)
    tifffile.imwrite(tmp_path / "tiny.tif", np.zeros((MAX_PIXELS // 16384 + 1, 2, 2), np.uint8))
    for name, params, status, words in [
            ("ij.tif", {"format": "png"}, 422, "comes back only as TIFF"),
            ("ij.tif", {"outscale": 3}, 422, "apply to ordinary images"),
            ("geo.tif", {}, 415, "georeferencing would be lost"),  # upres upscale keeps it
            ("tiny.tif", {}, 413, "each page at least 16384")]:  # one network pass a page
        r = httpx.post(f"{url}/v1/upscale", params={"model": "bicubic", "scale": 2} | params,
                       content=(tmp_path / name).read_bytes(), timeout=60)
        assert r.status_code == status and words in r.json()["detail"], r.text
    pages = np.zeros((MAX_PIXELS // (300 * 400) + 1, 300, 400), np.float32)
    tifffile.imwrite(tmp_path / "many.tif", pages, compression="zlib")
    r = httpx.post(f"{url}/v1/upscale", params={"model": "bicubic", "scale": 2},
                   content=(tmp_path / "many.tif").read_bytes(), timeout=60)
    assert r.status_code == 413 and "11 pages of 400x300" in r.json()["detail"], r.text


def test_upload_naming_other_files_opens_none(server, tmp_path):
    """A multi-file OME-TIFF upload names other files for its planes: an absolute path on the
    server, or a bare number (which beside a memory file would be one of the server's open
    files). Each is refused in one line, and nothing of the named file comes back."""
    import tifffile

    from test_scitiff import _linked_ome

    url, _ = server
    secret = tmp_path / "secret.tif"
    tifffile.imwrite(secret, np.full((24, 32), 4242, np.uint16))
    for name in (str(secret), "3", "secret.tif"):
        r = httpx.post(f"{url}/v1/upscale", params={"model": "bicubic", "scale": 2},
                       content=_linked_ome(name), timeout=60)
        assert r.status_code == 422 and "multi-file OME" in r.json()["detail"], (name, r.text)


def test_an_upload_read_past_the_probe_follows_no_reference(tmp_path):
    """Behind the probe too: the scientific path reads an upload's own pages only, even when
    its OME-XML names a readable file on the server for a second plane."""
    import tifffile

    from test_scitiff import _linked_ome
    from upres.serve.app import _upscale_tiff

    secret = tmp_path / "secret.tif"
    tifffile.imwrite(secret, np.full((24, 32), 4242, np.uint16))
    body, fmt, _, _ = _upscale_tiff(upres.load("bicubic", scale=2), _linked_ome(str(secret)),
                                    MAX_PIXELS, None)
    with tifffile.TiffFile(io.BytesIO(body), _multifile=False) as t:
        pages = [pg.asarray() for pg in t.pages]
    assert fmt == "TIFF" and [(p.shape, int(p.max())) for p in pages] == [((48, 64), 7)]


@pytest.mark.skipif(not hasattr(os, "memfd_create"), reason="memory files are Linux's")
def test_uploads_are_decoded_from_memory_not_the_disk(tmp_path, monkeypatch):
    """The server reads an upload through a memory file: none appears in the temporary
    folder (a SIGKILL would leave it), the readers open it by path, and it is gone after."""
    from upres.formats.image import read_image_info
    from upres.serve.app import _upload_file

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    data = BIRD.read_bytes()
    with _upload_file(data, "upload") as src:
        assert list(tmp_path.iterdir()) == []
        img, info = read_image_info(src)
        assert img.shape == (288, 288, 3) and info.format == "PNG"
    assert not src.exists() or src.read_bytes() != data


def test_uploads_fall_back_to_a_temporary_folder_removed_after(tmp_path, monkeypatch):
    """Where the kernel refuses a memory file (or off Linux) the upload goes to a temporary
    folder under a server-made name, removed when the upload has been read."""
    from upres.serve.app import _upload_file

    def refused(*_a, **_k):
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(os, "memfd_create", refused, raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    with _upload_file(b"abc", "upload") as src:
        assert src.parent.parent == tmp_path and src.name == "upload"
        assert src.read_bytes() == b"abc"
    assert list(tmp_path.iterdir()) == []


def test_picture_tiffs_stay_pictures(server):
    """TIFFs that are pictures keep the picture path: 1-bit (group 4) and a picture with a
    centimetre resolution unit come back as the PNG asked for, and a photo with a display
    orientation as PNG by default, turned upright; without a format a calibrated image comes
    back as a TIFF with its pixel size halved (as `upres upscale` writes it); a two-page
    picture is never cut to its first page."""
    import tifffile

    url, _ = server
    rgb = Image.fromarray(np.random.default_rng(2).integers(0, 255, (40, 50, 3), np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees for display
    files = {}
    cm = {"resolution": 100, "resolution_unit": "cm"}
    for name, im, kw in [("bilevel", rgb.convert("1"), {"compression": "group4"}),
                         ("cm", rgb, cm), ("cm_turned", rgb, cm | {"exif": exif.tobytes()})]:
        buf = io.BytesIO()
        im.save(buf, format="TIFF", **kw)
        files[name] = buf.getvalue()
    for name, size, fmt in [("bilevel", (100, 80), "png"), ("cm", (100, 80), "png"),
                            ("cm_turned", (80, 100), "png"), ("cm_turned", (80, 100), None)]:
        # cm_turned: a photo (it has a display orientation), turned upright, PNG by default
        r = httpx.post(f"{url}/v1/upscale", params={"model": "bicubic", "scale": 2} | (
            {"format": fmt} if fmt else {}), content=files[name], timeout=60)
        assert r.status_code == 200, (name, r.text)
        assert r.headers["content-type"] == "image/png", name
        assert Image.open(io.BytesIO(r.content)).size == size, name
    r = httpx.post(f"{url}/v1/upscale", params={"model": "bicubic", "scale": 2},
                   content=files["cm"], timeout=60)
    assert r.headers["content-type"] == "image/tiff", r.text
    with tifffile.TiffFile(io.BytesIO(r.content)) as t:
        xres = t.pages[0].tags[282].value
        assert t.asarray().shape == (80, 100, 3) and xres[0] / xres[1] == pytest.approx(200)
    buf = io.BytesIO()
    rgb.save(buf, format="TIFF", save_all=True,
             append_images=[rgb.transpose(Image.Transpose.FLIP_LEFT_RIGHT)])
    r = httpx.post(f"{url}/v1/upscale", params={"model": "bicubic", "scale": 2,
                                                "format": "png"},
                   content=buf.getvalue(), timeout=60)
    assert r.status_code == 422 and "only as TIFF" in r.json()["detail"], r.text
    r = httpx.post(f"{url}/v1/upscale", params={"model": "bicubic", "scale": 2},
                   content=buf.getvalue(), timeout=60)
    assert r.status_code == 200 and tifffile.imread(io.BytesIO(r.content)).shape == \
        (2, 80, 100, 3)


def test_opaque_alpha_is_dropped_for_jpeg(server):
    """An all-opaque alpha (RGBA or gray+alpha) goes to JPEG, as `upres upscale` takes it."""
    url, _ = server
    rgba = np.full((20, 20, 4), 255, np.uint8)
    rgba[..., :3] = np.arange(20, dtype=np.uint8)[:, None, None] * 10
    for arr in (rgba, rgba[..., 2:]):
        r = httpx.post(f"{url}/v1/upscale", params={"scale": 2, "format": "jpg"},
                       content=_png_bytes(arr), timeout=120)
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg", r.text[:300]
        assert _decode(r.content).shape[:2] == (40, 40)


def test_auto_uses_the_scales_offered_and_never_drops_denoise(tmp_path):
    """A server offering x2 models only: auto takes x2 for any size (scale given or not), and
    a fixed denoise that auto cannot apply (the photo model's base is not offered) is 422."""
    data = _png_bytes(np.asarray(Image.open(BIRD).convert("RGB").resize((40, 40))))
    with _serving(tmp_path, "--models", "tiny-x2", "photo-x2") as url:
        for params, shape in (({"outscale": 3}, (120, 120, 3)),
                              ({"scale": 2, "size": "100x0"}, (100, 100, 3)),
                              ({"fit": "70x70"}, (70, 70, 3)), ({}, (80, 80, 3))):
            r = httpx.post(f"{url}/v1/upscale", params=params, content=data, timeout=120)
            assert r.status_code == 200, (params, r.text[:300])
            assert r.headers["x-upres-model"] == "tiny-x2"
            assert _decode(r.content).shape == shape
        r = httpx.post(f"{url}/v1/upscale", params={"scale": 2, "denoise": 0.5}, content=data,
                       timeout=120)
        assert r.status_code == 422 and "no photo model" in r.json()["detail"]


def test_denoise_applies_with_any_output_size(server):
    """`denoise` with outscale/size/fit sets the photo model's strength and is reported."""
    url, _ = server
    small = np.asarray(Image.open(BIRD).convert("RGB").resize((48, 48)))
    noisy = np.clip(small + np.random.default_rng(1).normal(0, 20, small.shape), 0, 255)
    data = _png_bytes(noisy.astype(np.uint8))
    got = {}
    for denoise in ("0", "1", None):
        params = {"outscale": 3.5} | ({"denoise": denoise} if denoise else {})
        r = httpx.post(f"{url}/v1/upscale", params=params, content=data, timeout=120)
        assert r.status_code == 200, r.text[:300]
        assert r.headers["x-upres-model"] == "photo-x4"
        assert _decode(r.content).shape == (168, 168, 3)
        got[denoise] = (r.headers["x-upres-denoise"], r.content)
    assert got["0"][0] == "0.00" and got["1"][0] == "1.00"
    assert 0 < float(got[None][0]) < 1  # auto: measured on the noisy input
    assert len({c for _, c in got.values()}) == 3
    r = httpx.post(f"{url}/v1/upscale", params={"model": "photo-x2", "size": "200x0",
                                                 "denoise": "0.5"}, content=data, timeout=120)
    assert r.status_code == 200 and r.headers["x-upres-denoise"] == "0.50"
    assert _decode(r.content).shape == (200, 200, 3)
    # a fixed strength where auto's passes would run x3, which has no photo model: refused
    r = httpx.post(f"{url}/v1/upscale", params={"outscale": 3, "denoise": "0.5"}, content=data,
                   timeout=120)
    assert r.status_code == 422 and "x3" in r.json()["detail"], r.text[:300]


def test_openapi_documents_the_upload_and_the_default_model(server):
    url, _ = server
    op = httpx.get(f"{url}/openapi.json").json()["paths"]["/v1/upscale"]["post"]
    body = op["requestBody"]["content"]
    assert body["multipart/form-data"]["schema"]["properties"]["file"]["format"] == "binary"
    assert body["application/octet-stream"]["schema"]["format"] == "binary"
    model = next(p for p in op["parameters"] if p["name"] == "model")
    assert "default auto" in model["description"]
    assert all(p["in"] == "query" for p in op["parameters"])


def test_precision_option_runs_the_models_in_bf16_and_says_so(tmp_path):
    """``upres serve --precision bf16``: the answer names bf16 and stays within a few 8-bit
    levels of the library's fp32 result; the bicubic baseline names no precision."""
    import upres

    with _serving(tmp_path, "--models", "fast-x2", "--precision", "bf16") as url:
        r = httpx.post(f"{url}/v1/upscale", params={"model": "fast-x2"},
                       content=BIRD.read_bytes(), timeout=120)
        base = httpx.post(f"{url}/v1/upscale", params={"model": "bicubic", "scale": 2},
                          content=BIRD.read_bytes(), timeout=120)
    assert r.status_code == 200, r.text
    assert r.headers["x-upres-precision"] == "bf16"
    out = _decode(r.content).astype(int)
    ref = upres.load("fast-x2", device="cpu").upscale(np.asarray(Image.open(BIRD).convert("RGB")))
    diff = np.abs(out - ref.astype(int))
    assert out.shape == ref.shape and 0 < diff.max() <= 4 and diff.mean() < 0.5
    assert base.status_code == 200 and "x-upres-precision" not in base.headers


def test_precision_header_names_what_ran_for_8bit_and_16bit_uploads(server):
    """tiny-x4 runs int8 by its card; a 16-bit upload runs the float network behind that path
    (8-bit activations would lose its extra bits), and the header says so per answer."""
    import upres

    url, _ = server
    img = np.asarray(Image.open(BIRD).convert("RGB"))[:40, :40]
    wide = (img.astype(np.uint16) * 257 + 100).astype(np.uint16)  # off the 8-bit levels
    buf = io.BytesIO()
    Image.fromarray(wide[:, :, 0]).save(buf, format="PNG")  # 16-bit gray (Pillow: I;16)
    answers = {}
    for name, data in (("8-bit", _png_bytes(img)), ("16-bit", buf.getvalue())):
        r = httpx.post(f"{url}/v1/upscale", params={"model": "tiny-x4"}, content=data,
                       timeout=120)
        assert r.status_code == 200, r.text
        answers[name] = r
    assert answers["8-bit"].headers["x-upres-precision"] == "int8"
    assert answers["16-bit"].headers["x-upres-precision"] == "fp32"
    out = _decode(answers["16-bit"].content)
    ref = upres.load("tiny-x4", device="cpu", precision="fp32").upscale(wide[:, :, 0])
    np.testing.assert_array_equal(out, ref)


def test_unknown_precision_is_refused_at_start(capsys):
    from upres.serve.app import ServeConfig, create_app

    with pytest.raises(UpresError, match="unknown precision 'fp8'"):
        create_app(ServeConfig(precision="fp8"))
    with pytest.raises(SystemExit) as exc:
        main(["serve", "--precision", "fp8"])
    assert exc.value.code == 2
    assert "invalid choice: 'fp8'" in capsys.readouterr().err


@pytest.mark.parametrize(("args", "words"), [
    (["--port", "99999"], "--port must be 0..65535"),
    (["--port", "-1"], "--port must be 0..65535"),
    (["--max-upload-mb", "-1"], "--max-upload-mb must be at least 1"),
    (["--max-pixels", "-5"], "max-pixels must be at least 1 pixel"),
    (["--read-timeout", "0"], "read-timeout must be more than 0 seconds"),
    (["--workers", "0"], "workers must be at least 1"),
    (["--max-queue", "-1"], "max-queue must be 0 or more"),
])
def test_limits_that_refuse_every_request_are_refused_at_start(capsys, args, words):
    assert main(["serve", "--models", "tiny-x2", *args]) == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_port_in_use_is_one_line_before_any_serving_line(capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert main(["serve", "--models", "tiny-x2", "--port", str(port)]) == 2
    out, err = capsys.readouterr()
    assert "serving on" not in out and f"cannot listen on 127.0.0.1:{port}" in err
    assert len(err.strip().splitlines()) == 1


def test_listen_socket_takes_ipv6_loopback():
    from upres.serve.app import listen_socket

    try:
        sock = listen_socket("::1", 0)
    except UpresError:
        pytest.skip("no IPv6 loopback here")
    with sock:
        assert sock.family == socket.AF_INET6 and sock.getsockname()[1] > 0


def test_client_file_names_never_reach_the_disk(server):
    url, cwd = server
    evil = "../../../../tmp/upres-evil-name.png"
    r = httpx.post(f"{url}/v1/upscale", params={"scale": 2},
                   files={"file": (evil, BIRD.read_bytes(), "image/png")}, timeout=120)
    assert r.status_code == 200
    assert not Path("/tmp/upres-evil-name.png").exists()
    assert list(cwd.iterdir()) == []
    assert "evil" not in r.headers["content-disposition"]


def test_busy_server_answers_503_with_retry_after(server):
    url, _ = server
    big = np.asarray(Image.open(BABY).convert("RGB").resize((1000, 1000)))
    slow = _png_bytes(big)  # 1 MP at x4: seconds of work for the one worker
    results: dict = {}

    def first() -> None:
        results["first"] = httpx.post(f"{url}/v1/upscale", params={"scale": 4}, content=slow,
                                      timeout=300)

    t = threading.Thread(target=first)
    t.start()
    deadline = time.time() + 60
    while httpx.get(f"{url}/healthz").json()["running"] == 0:
        assert time.time() < deadline, "the first request never started"
        time.sleep(0.02)
    r = httpx.post(f"{url}/v1/upscale", params={"scale": 2}, content=BIRD.read_bytes(),
                   timeout=60)
    t.join()
    assert r.status_code == 503 and int(r.headers["retry-after"]) > 0, r.text
    assert "busy" in r.json()["detail"]
    assert results["first"].status_code == 200
    assert _decode(results["first"].content).shape == (4000, 4000, 3)


# -- the page in a real browser ----------------------------------------------------------------
def _watch(page) -> list[str]:
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    return errors


def test_page_upscales_compares_and_downloads(server, browser, tmp_path):
    url, _ = server
    page = browser.new_page(viewport={"width": 1200, "height": 900}, accept_downloads=True)
    errors = _watch(page)
    page.goto(url)
    page.wait_for_selector("#model option", state="attached")
    page.select_option("#scale", "4")
    assert page.input_value("#model") == "auto"  # the default
    page.select_option("#model", "x4")
    page.set_input_files("#file", str(BIRD))
    page.click("#go")
    page.wait_for_function("document.getElementById('status-text').textContent"
                           ".startsWith('Done')", timeout=120_000)
    assert page.is_visible("#result")
    sizes = page.eval_on_selector_all(
        "#viewer img", "els => els.map(e => [e.naturalWidth, e.naturalHeight])")
    assert sizes == [[1152, 1152], [1152, 1152]]  # bicubic and model: same size
    clip = page.eval_on_selector("#layer-after", "e => e.style.clipPath")
    page.fill("#split", "20")
    moved = page.eval_on_selector("#layer-after", "e => e.style.clipPath")
    assert moved != clip
    page.focus("#split")
    page.keyboard.press("ArrowRight")
    assert page.input_value("#split") == "21"
    # Zoom keeps both images on one transform (synced zoom and pan).
    page.click("#zoom-in")
    t = page.eval_on_selector_all("#viewer img", "els => els.map(e => e.style.transform)")
    assert t[0] == t[1] and "scale" in t[0]
    page.focus("#viewer")
    page.keyboard.press("ArrowLeft")
    t2 = page.eval_on_selector_all("#viewer img", "els => els.map(e => e.style.transform)")
    assert t2[0] == t2[1]
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "serve-page.png"), full_page=True)
    with page.expect_download() as dl:
        page.click("#download")
    saved = tmp_path / dl.value.suggested_filename
    dl.value.save_as(saved)
    assert saved.name == "bird_x4.png"
    with Image.open(saved) as im:
        assert im.size == (1152, 1152)
    assert errors == []


def test_page_on_a_phone_is_clean_and_keyboard_reachable(server, browser):
    url, _ = server
    page = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True,
                            has_touch=True)
    errors = _watch(page)
    page.goto(url)
    page.wait_for_selector("#model option", state="attached")
    # Nothing wider than the phone's screen.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    focused = []
    for _ in range(8):
        page.keyboard.press("Tab")
        focused.append(page.evaluate("document.activeElement.id"))
    assert {"file", "scale", "model", "format"} <= set(focused)
    page.set_input_files("#file", str(BIRD))
    page.select_option("#scale", "2")
    page.focus("#go")
    page.keyboard.press("Enter")
    page.wait_for_function("document.getElementById('status-text').textContent"
                           ".startsWith('Done')", timeout=120_000)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "serve-phone.png"), full_page=True)
    assert errors == []


def test_client_leaving_mid_upload_is_quiet(server):
    """A client that sends half its body and hangs up: no traceback in the server's log (the
    fixture checks it at the end), and the server goes on answering."""
    url, _ = server
    port = int(url.rsplit(":", 1)[1])
    data = BIRD.read_bytes()
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(f"POST /v1/upscale?scale=2 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      f"Content-Type: image/png\r\nContent-Length: {len(data)}\r\n\r\n".encode()
                      + data[: len(data) // 3])
    time.sleep(1.0)
    assert httpx.get(f"{url}/healthz", timeout=10).json()["status"] == "ok"


@pytest.mark.parametrize("seed", [1, 2])
def test_killed_server_leaves_nothing_and_restarts(tmp_path, seed):
    """SIGKILL the server at a random moment while it takes large multipart uploads (which
    starlette spools to temporary files) and works: nothing is left in its temporary folder or
    its working folder, and a server started again on the same port answers at once."""
    import random
    import signal

    rng = random.Random(seed)
    cwd, tmp = tmp_path / "cwd", tmp_path / "tmp"
    cwd.mkdir()
    tmp.mkdir()
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp)}
    url = f"http://127.0.0.1:{port}"
    # a PNG of about 2 MB (noise does not compress): spooled to disk by the multipart parser
    noisy = np.random.default_rng(seed).integers(0, 256, (820, 820, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noisy).save(buf, format="PNG", compress_level=0)
    data = buf.getvalue()

    def start() -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-m", "upres.cli", "serve", "--port", str(port),
                                 "--models", "tiny-x2", "--max-upload-mb", "8"], cwd=cwd, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    return proc
            assert proc.poll() is None and time.time() < deadline, "server did not start"
            time.sleep(0.3)

    proc = start()

    def post() -> None:
        with contextlib.suppress(httpx.HTTPError):
            httpx.post(f"{url}/v1/upscale", files={"file": ("big.png", data, "image/png")},
                       timeout=60)

    clients = [threading.Thread(target=post, daemon=True) for _ in range(3)]
    for c in clients:
        c.start()
    time.sleep(rng.uniform(0.2, 1.5))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    for c in clients:
        c.join(timeout=60)
    assert list(tmp.iterdir()) == [] and list(cwd.iterdir()) == []
    proc = start()  # the port is free again at once
    try:
        r = httpx.post(f"{url}/v1/upscale?scale=2", content=BIRD.read_bytes(), timeout=120)
        assert r.status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert list(tmp.iterdir()) == [] and list(cwd.iterdir()) == []


def test_page_shows_clean_up_only_for_photo_models(server, browser):
    """The Clean-up selector (a `hidden` label in a flex row) shows for auto and the photo
    models only: it does nothing for the others."""
    url, _ = server
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors = _watch(page)
    page.goto(url)
    page.wait_for_selector("#model option", state="attached")
    shown = {}
    for scale in ("2", "3", "4"):
        page.select_option("#scale", scale)
        for name in page.eval_on_selector_all("#model option", "os => os.map(o => o.value)"):
            page.select_option("#model", name)
            shown[(scale, name)] = page.is_visible("#denoise-box")
    assert {k for k, v in shown.items() if v} == {
        ("2", "auto"), ("2", "photo-x2"), ("4", "auto"), ("4", "photo-x4")}
    assert ("4", "x4") in shown and ("3", "x3") in shown and ("4", "tiny-x4") in shown
    assert errors == []


def test_page_tiff_output_offers_the_download_and_no_false_comparison(server, browser, tmp_path):
    """A TIFF the browser cannot display: the status says so (after "Done"), no comparison is
    shown (bicubic must never stand under the model's label), and the Download link gives the
    TIFF."""
    url, _ = server
    page = browser.new_page(viewport={"width": 1200, "height": 900}, accept_downloads=True)
    errors = _watch(page)
    page.goto(url)
    page.wait_for_selector("#model option", state="attached")
    page.select_option("#scale", "2")
    page.select_option("#model", "tiny-x2")
    page.select_option("#format", "tiff")
    page.set_input_files("#file", str(BIRD))
    page.click("#go")
    page.wait_for_function("document.getElementById('status-text').textContent"
                           ".startsWith('Done')", timeout=120_000)
    status = page.text_content("#status-text")
    assert "cannot display TIFF" in status and "Download" in status, status
    assert page.is_visible("#result") and page.is_visible("#download")
    assert not page.is_visible("#viewer") and not page.is_visible("#tag-model")
    assert page.get_attribute("#img-before", "src") is None  # no bicubic fetched or shown
    with page.expect_download() as dl:
        page.click("#download")
    saved = tmp_path / dl.value.suggested_filename
    dl.value.save_as(saved)
    assert saved.name == "bird_x2.tiff" and saved.read_bytes()[:4] == b"II*\x00"
    # PNG again: the comparison comes back.
    page.select_option("#format", "png")
    page.click("#go")
    page.wait_for_function("document.getElementById('status-text').textContent"
                           ".startsWith('Done')", timeout=120_000)
    assert page.is_visible("#viewer") and "cannot display" not in page.text_content(
        "#status-text")
    # Automatic (the first choice): a float32 TIFF comes back as float32 TIFF, named so.
    import tifffile

    data = np.linspace(-1, 3, 40 * 50, dtype=np.float32).reshape(40, 50)
    tifffile.imwrite(tmp_path / "field.tif", data)
    page.select_option("#format", "")
    page.set_input_files("#file", str(tmp_path / "field.tif"))
    page.click("#go")
    page.wait_for_function("document.getElementById('status-text').textContent"
                           ".match(/^(Done|Failed)/)", timeout=120_000)
    status = page.text_content("#status-text")
    assert status.startswith("Done") and "cannot display TIFF" in status, status
    with page.expect_download() as dl:
        page.click("#download")
    saved = tmp_path / dl.value.suggested_filename
    dl.value.save_as(saved)
    out = tifffile.imread(saved)
    assert saved.name == "field_x2.tiff" and out.dtype == np.float32 and out.shape == (80, 100)
    assert errors == []


def test_page_failed_upscale_clears_the_previous_result(server, browser, tmp_path):
    url, _ = server
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all\n" * 20)
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors = _watch(page)
    page.goto(url)
    page.wait_for_selector("#model option", state="attached")
    page.select_option("#scale", "2")
    page.select_option("#model", "tiny-x2")
    page.set_input_files("#file", str(BIRD))
    page.click("#go")
    page.wait_for_function("document.getElementById('status-text').textContent"
                           ".startsWith('Done')", timeout=120_000)
    assert page.is_visible("#result") and page.get_attribute("#download", "href")
    page.set_input_files("#file", str(junk))
    page.click("#go")
    page.wait_for_function("document.getElementById('status-text').textContent"
                           ".startsWith('Failed')", timeout=120_000)
    assert "not an image" in page.text_content("#status-text")
    assert not page.is_visible("#result") and not page.is_visible("#download")
    assert page.get_attribute("#download", "href") is None
    assert [e for e in errors if "status of 415" not in e] == []


def test_page_asks_again_for_a_refused_token(browser, tmp_path):
    """A wrong or cancelled token: "access token refused", asked again at most 3 times in a
    row (no endless prompts); a 401 during an upscale asks again and then goes on."""
    token = "page-token-for-the-tests-only"
    (tmp_path / "token").write_text(token)
    with _serving(tmp_path, "--token-file", str(tmp_path / "token"), "--models",
                  "tiny-x2") as url:
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        errors = _watch(page)
        asked: list[str] = []
        answers = ["wrong-1", "wrong-2", "wrong-3", "wrong-4", "wrong-5"]

        def on_dialog(d) -> None:
            asked.append(d.message)
            if answers:
                d.accept(answers.pop(0))
            else:
                d.dismiss()  # Cancel

        page.on("dialog", on_dialog)
        page.goto(url)
        page.wait_for_function("document.getElementById('status-text').textContent"
                               ".includes('access token refused')", timeout=30_000)
        assert page.text_content("#status-text").startswith("Cannot list models: access token")
        assert len(asked) == 3 and "needs its access token" in asked[0]
        assert all(m.startswith("Access token refused") for m in asked[1:])
        # Cancelling stops the asking at once.
        answers[:] = []
        page.reload()
        page.wait_for_function("document.getElementById('status-text').textContent"
                               ".includes('access token refused')", timeout=30_000)
        assert len(asked) == 4
        # The right token lists the models.
        answers[:] = [token]
        page.reload()
        page.wait_for_selector("#model option", state="attached")
        assert len(asked) == 5
        # The token goes bad before an upscale: 401, asked again, and the upscale goes on.
        page.evaluate("sessionStorage.setItem('upres-token', 'gone-bad')")
        answers[:] = [token]
        page.set_input_files("#file", str(BIRD))
        page.click("#go")
        page.wait_for_function("document.getElementById('status-text').textContent"
                               ".startsWith('Done')", timeout=120_000)
        assert len(asked) == 6 and asked[-1].startswith("Access token refused")
        assert page.is_visible("#viewer")
        page.close()
    assert [e for e in errors if "status of 401" not in e] == []


def test_upload_beyond_the_servers_memory_is_503(monkeypatch):
    """An upscale whose arrays would not fit in the server's memory is refused before the
    network runs: 503 with the one-line reason (tested on the worker's function, in process,
    with the memory made scarce)."""
    import upres
    from upres.inference import upscaler
    from upres.serve.app import _HTTPError, _upscale

    up = upres.load("tiny-x2", device="cpu", precision="fp32")
    data = (ROOT / "src" / "upres" / "assets" / "butterfly.png").read_bytes()
    monkeypatch.setattr(upscaler, "_available_memory", lambda: 2**20)
    with pytest.raises(_HTTPError) as exc:
        _upscale(up, data, None, 10**6)
    assert exc.value.status == 503
    assert "512x512 output needs about" in exc.value.detail
    monkeypatch.undo()
    body, fmt, _, ran = _upscale(up, data, None, 10**6)
    assert fmt == "PNG" and ran == "fp32" and body[:4] == b"\x89PNG"
