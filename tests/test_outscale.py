"""Any output size (issue 25): --outscale, --size and --fit reach the size with the least
network work and one resize; the same through the API and the HTTP API."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

import upres
from upres.cli import main
from upres.inference.outscale import SizeRequest, passes_for, target_size, upscale_to

from conftest import DATA, ROOT

BUTTERFLY = ROOT / "src" / "upres" / "assets" / "butterfly.png"


def test_passes_are_the_least_work():
    assert passes_for(1.5) == [2] and passes_for(2) == [2] and passes_for(2.5) == [3]
    assert passes_for(4) == [4] and passes_for(6) == [2, 3] and passes_for(8) == [2, 4]
    assert passes_for(16) == [4, 4] and passes_for(0.5) == [] and passes_for(1) == []
    assert passes_for(8, fixed=4) == [4, 4] and passes_for(3, fixed=2) == [2, 2]
    # only the scales there are models for (a server offering some)
    assert passes_for(1.5, scales=[2]) == [2] and passes_for(8, scales=[2]) == [2, 2, 2]
    assert passes_for(4, scales=[2, 3]) == [2, 2] and passes_for(2.5, scales=[2, 3]) == [3]
    assert passes_for(100, scales=[2, 3]) == [3] * 5  # beyond three passes: the largest


def test_target_sizes():
    assert target_size(200, 100, SizeRequest(outscale=1.5)) == (300, 150)
    assert target_size(200, 100, SizeRequest(size=(640, 0))) == (640, 320)
    assert target_size(200, 100, SizeRequest(size=(640, 480))) == (640, 480)
    assert target_size(200, 100, SizeRequest(fit=(1000, 1000))) == (1000, 500)
    assert target_size(200, 100, SizeRequest(fit=(0, 300))) == (600, 300)


@pytest.mark.parametrize(("args", "size", "name"), [
    (["--outscale", "1.5"], (384, 384), "butterfly_x1.5.png"),
    (["--outscale", "6", "-m", "bicubic", "-s", "2"], (1536, 1536), "butterfly_x6.png"),
    (["--size", "500x300"], (500, 300), "butterfly_x500x300.png"),
    (["--fit", "700x1000"], (700, 700), "butterfly_x700x1000.png"),
])
def test_cli_reaches_the_size(tmp_path, args, size, name):
    assert main(["upscale", str(BUTTERFLY), "-o", str(tmp_path), "-q", *args]) == 0
    out = tmp_path / name
    assert Image.open(out).size == size


def test_outscale_one_and_a_half_is_x2_then_a_resize():
    img = np.asarray(Image.open(BUTTERFLY).convert("RGB"))[:64, :64]
    up2 = upres.load("x2", device="cpu")
    got = upscale_to(img, (96, 96), lambda s: up2, [2])
    want = upres.imresize(up2.upscale(img), size=(96, 96))
    np.testing.assert_array_equal(got, want)
    assert got.dtype == np.uint8


def test_sizes_refused_for_data_and_contradictions(tmp_path, capsys):
    dcm = DATA / "apps" / "dicom" / "dicom_file01.dcm"
    assert main(["upscale", str(dcm), "-o", str(tmp_path), "--outscale", "1.5"]) == 1
    assert "apply to ordinary images" in capsys.readouterr().err
    assert main(["upscale", str(BUTTERFLY), "--outscale", "2", "--size", "9x9"]) == 2
    assert main(["upscale", str(BUTTERFLY), "--size", "axb"]) == 2
    assert main(["upscale", str(BUTTERFLY), "--outscale", "0"]) == 2
    assert not any(tmp_path.iterdir())


def test_api_and_http_reach_the_size(tmp_path):
    import httpx

    from test_serve import _serving

    im = Image.open(BUTTERFLY)
    assert upres.upscale_image(im, outscale=1.5).size == (384, 384)
    assert upres.upscale_image(np.asarray(im), fit=(100, 50)).shape == (50, 50, 3)
    with _serving(tmp_path) as url:
        r = httpx.post(f"{url}/v1/upscale", params={"outscale": 1.5},
                       content=BUTTERFLY.read_bytes(), timeout=120)
        bad = httpx.post(f"{url}/v1/upscale", params={"outscale": 1.5, "size": "9x9"},
                         content=BUTTERFLY.read_bytes(), timeout=120)
    assert r.status_code == 200, r.text
    import io

    assert Image.open(io.BytesIO(r.content)).size == (384, 384)
    assert bad.status_code == 422


def test_outputs_beyond_memory_refused_before_any_work(tmp_path, capsys, monkeypatch):
    """A size no machine holds is one line at once (it ran for minutes, growing, before), and
    nothing is written; the plain scale path checks its output the same way."""
    from upres.errors import UpresError
    from upres.inference import upscaler

    small = tmp_path / "g.png"
    Image.new("L", (8, 8), 100).save(small)
    for model in ("bicubic", "tiny-x2"):
        assert main(["upscale", str(small), "-m", model, "--size", "1000000x1000000",
                     "-o", str(tmp_path / "out.png")]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        assert str(small) in err and "1000000x1000000 output needs about" in err, err
    ran = []
    with pytest.raises(UpresError, match="ask for a smaller size"):
        upscale_to(np.zeros((8, 8), np.uint8), (10**6, 10**6), lambda s: ran.append(s), [4] * 9)
    assert ran == []  # refused before the first pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.png"]
    # the plain path, with this process's memory made scarce (64 KiB): refused, then allowed
    img = np.zeros((64, 64, 3), np.uint8)
    up = upres.load("tiny-x2", device="cpu", precision="fp32")
    monkeypatch.setattr(upscaler, "_available_memory", lambda: 64 * 2**10)
    with pytest.raises(UpresError, match=r"128x128 output needs about \d+ KiB of memory, more "
                                         r"than the 64 KiB"):
        up.upscale(img)
    with pytest.raises(UpresError, match="use a smaller input or scale"):
        upres.load("bicubic", scale=2).upscale(img)
    monkeypatch.undo()
    assert up.upscale(img).shape == (128, 128, 3)


@pytest.mark.parametrize(("kw", "says"), [
    ({"outscale": float("inf")}, "outscale must be above 0 and at most 64, got inf"),
    ({"outscale": 0}, "outscale must be above 0"),
    ({"outscale": "abc"}, "outscale must be above 0"),
    ({"fit": (0, 0)}, "fit 0x0: sizes must be positive"),
    ({"size": (-5, 10)}, "size -5x10: sizes must be positive"),
    ({"size": (0, 0)}, "size 0x0: sizes must be positive"),
    ({"fit": (-3, -3)}, "fit -3x-3: sizes must be positive"),
    ({"size": (1.5, 10)}, "size must be two whole numbers"),
    ({"size": (10,)}, "size must be two whole numbers"),
    ({"size": (2_000_000, 10)}, "size 2000000x10: sizes must be positive (one of them may "
                                "be 0) and at most 1000000"),
    ({"outscale": 2, "size": (10, 10)}, "outscale and size exclude each other"),
])
def test_api_size_requests_are_checked_like_the_command_line(kw, says):
    """upres.upscale_image raised OverflowError or ValueError, or silently made a 1x1 image or
    took one of two requests, where the command line refuses."""
    from upres.errors import UpresError

    with pytest.raises(UpresError, match=f"^{re.escape(says)}"):
        upres.upscale_image(np.zeros((8, 8, 3), np.uint8), "bicubic", scale=2, **kw)


def test_cgroup_room_counts_the_inactive_file_cache_as_free(tmp_path):
    """A long-lived container sits near its limit with file cache the kernel drops on demand:
    counting it as used refused every upscale ("0 KiB available"). v2 and v1 layouts, the
    process's own cgroup or the mount root (inside a container), and no limit."""
    from upres.inference.upscaler import _cgroup_room

    def files(d, **text):  # a cgroup's memory files, their dots written as underscores
        d.mkdir(parents=True, exist_ok=True)
        for name, value in text.items():
            (d / name.replace("_", ".", 1)).write_text(value)

    proc = tmp_path / "cgroup"
    v2 = tmp_path / "v2"
    files(v2 / "job", memory_max="1000000\n", memory_current="990000\n",
          memory_stat="anon 200000\nfile 790000\ninactive_file 700000\n")
    proc.write_text("0::/job\n")
    assert _cgroup_room(proc, v2) == 1000000 - 990000 + 700000
    proc.write_text("0::/elsewhere\n")  # not mounted there: the root's own files
    files(v2, memory_max="max\n")
    assert _cgroup_room(proc, v2) is None
    v1 = tmp_path / "v1"
    files(v1 / "memory", memory_limit_in_bytes="2000000\n", memory_usage_in_bytes="1500000\n",
          memory_stat="cache 900000\ntotal_inactive_file 400000\n")
    proc.write_text("4:memory:/process_api/abc\n1:cpu:/\n")
    assert _cgroup_room(proc, v1) == 2000000 - 1500000 + 400000
    files(v1 / "memory", memory_limit_in_bytes=str(2**63 - 4096))
    assert _cgroup_room(proc, v1) is None
    assert _cgroup_room(tmp_path / "missing", v1) is None


def test_multi_frame_documents_are_checked_as_a_whole(tmp_path, monkeypatch):
    """Every frame's output is kept until the file is written: a stack whose frames fit one
    at a time but not together is refused before the first frame runs."""
    import tifffile

    from upres import formats
    from upres.convert import upscale_document
    from upres.errors import UpresError
    from upres.inference import upscaler

    stack = np.random.default_rng(0).random((3, 32, 32), dtype=np.float32)
    tifffile.imwrite(tmp_path / "stack.tif", stack, photometric="minisblack")
    doc = formats.read(tmp_path / "stack.tif")
    up = upres.load("tiny-x2", device="cpu", precision="fp32")
    monkeypatch.setattr(upscaler, "_available_memory", lambda: 40 * 2**10)
    with pytest.raises(UpresError, match=r"64x64 output needs about 48 KiB .* its 3 frames "
                                         r"together do not fit"):
        upscale_document(up, doc)
    monkeypatch.undo()
    assert [f.shape for f in upscale_document(up, doc).frames] == [(64, 64)] * 3
