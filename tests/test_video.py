"""Video (issue 19): streams, timestamps, duration and sync kept; 10-bit kept; rotation; colour
tags and matrix; odd sizes; resume after a real SIGKILL giving identical frames; damaged
input; refusing to overwrite. Real clips from ../shared/data/apps/video and clips made here
with PyAV; every output is read back with PyAV."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")

import upres  # noqa: E402
from upres.cli import main  # noqa: E402
from upres.errors import UpresError  # noqa: E402
from upres.formats.video import decode_rgb, probe, subtitle_text  # noqa: E402
from upres.resize import imresize  # noqa: E402

from conftest import DATA  # noqa: E402

VIDEO = DATA / "apps" / "video"


def _pattern(i: int, w: int, h: int) -> np.ndarray:
    """A smooth moving picture with a bright marker in the top-left corner."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    r = 128 + 100 * np.sin((x + 3 * i) / 9.0)
    g = 128 + 100 * np.cos((y - 2 * i) / 7.0)
    b = 128 + 60 * np.sin((x + y + i) / 13.0)
    img = np.stack([r, g, b], axis=2)
    img[: max(2, h // 8), : max(2, w // 8)] = [250, 20, 20]
    return np.clip(img, 0, 255).astype(np.uint8)


def make_clip(path: Path, *, n: int = 20, w: int = 64, h: int = 48, pts: list[int] | None = None,
              tb: Fraction = Fraction(1, 1000), codec: str = "libx264",
              pix_fmt: str = "yuv420p", gop: int = 10, audio: bool = False,
              subtitles: bool = False, rotation: int = 0, colorspace: int | None = None,
              color_range: int | None = None, title: str | None = None,
              chapters: bool = False, options: dict | None = None,
              dispositions: tuple[int, int] = (0, 0)) -> list[int]:
    """Write a test clip; returns the frame timestamps. ``dispositions``: the audio's and
    the subtitles' (FFmpeg's AV_DISPOSITION_* flags)."""
    pts = pts or [i * 100 for i in range(n)]  # 10 fps in milliseconds
    out = av.open(str(path), "w")
    if title:
        out.metadata["title"] = title
    v = out.add_stream(codec, rate=10, options={"g": str(gop), **(options or {})})
    cc = v.codec_context
    cc.width, cc.height, cc.pix_fmt = w, h, pix_fmt
    cc.time_base, v.time_base = tb, tb
    if colorspace is not None:
        cc.colorspace = colorspace
    if color_range is not None:
        cc.color_range = color_range
    if rotation:
        v.set_display_rotation(rotation)
    v.metadata["language"] = "fra"
    a = s = None
    if audio:
        a = out.add_stream("aac", rate=48000)
        a.layout = "mono"
        a.metadata["language"] = "eng"
        a.disposition = av.stream.Disposition(dispositions[0])
    if subtitles:
        s = out.add_mux_stream("subrip")
        s.disposition = av.stream.Disposition(dispositions[1])
    if chapters:
        out.set_chapters([{"id": 1, "start": 0, "end": 500, "time_base": Fraction(1, 1000),
                           "metadata": {"title": "one"}},
                          {"id": 2, "start": 500, "end": pts[-1] + 100,
                           "time_base": Fraction(1, 1000), "metadata": {"title": "two"}}])
    fmt_in = "rgb24"
    for i, t in enumerate(pts):
        f = av.VideoFrame.from_ndarray(_pattern(i, w, h), format=fmt_in)
        kw = {}
        if colorspace is not None:
            kw["dst_colorspace"] = {1: "ITU709", 5: "ITU601", 6: "ITU601", 9: "BT2020"}[
                colorspace]
        if color_range is not None:
            kw["dst_color_range"] = av.video.reformatter.ColorRange(color_range)
        f = f.reformat(format=pix_fmt, **kw)
        f.pts, f.time_base = t, tb
        for p in v.encode(f):
            out.mux(p)
    for p in v.encode(None):
        out.mux(p)
    if a is not None:
        samples = int((pts[-1] + 100) / 1000 * 48000)
        tone = (0.2 * np.sin(np.arange(samples) / 48000 * 2 * np.pi * 440)).astype(np.float32)
        for k in range(0, samples, 1024):
            fr = av.AudioFrame.from_ndarray(tone[None, k:k + 1024], format="fltp",
                                            layout="mono")
            fr.sample_rate, fr.pts = 48000, k
            for p in a.encode(fr):
                out.mux(p)
        for p in a.encode(None):
            out.mux(p)
    if s is not None:
        for k, text in enumerate(("hello", "world")):
            pkt = av.Packet(f"{text}\n".encode())
            pkt.pts = pkt.dts = k * 500
            pkt.duration = 400
            pkt.time_base = Fraction(1, 1000)
            pkt.stream = s
            out.mux(pkt)
    out.close()
    return pts


def _frames(path: Path) -> list[tuple[int, np.ndarray]]:
    with av.open(str(path)) as c:
        return [(f.pts, f.to_ndarray(format="rgb24")) for f in c.decode(c.streams.video[0])]


def _video(path: Path):
    c = av.open(str(path))
    return c, c.streams.video[0]


@pytest.fixture(scope="module")
def bic2():
    return upres.load("bicubic", scale=2)


def test_real_clip_keeps_audio_packets_timestamps_and_sync(tmp_path, capsys):
    src = VIDEO / "realshort.mp4"
    out = tmp_path / "o.mp4"
    assert main(["video", str(src), "-o", str(out), "-m", "bicubic", "-s", "2"]) == 0
    assert "libx264 CRF 18" in capsys.readouterr().err  # the encoder is said once
    with av.open(str(src)) as a, av.open(str(out)) as b:
        va, vb = a.streams.video[0], b.streams.video[0]
        assert (vb.codec_context.width, vb.codec_context.height) == (640, 480)
        assert vb.time_base == va.time_base
        assert vb.metadata["language"] == "eng"
        pa = [f.pts for f in a.decode(va)]
        pb = [f.pts for f in b.decode(vb)]
        assert pa == pb  # every frame keeps its own timestamp
        assert abs(a.duration - b.duration) <= 1e6 / 29.97  # container within one frame
    with av.open(str(src)) as a, av.open(str(out)) as b:  # audio copied packet for packet
        ka = [(p.pts, bytes(p)) for p in a.demux(a.streams.audio[0]) if p.size]
        kb = [(p.pts, bytes(p)) for p in b.demux(b.streams.audio[0]) if p.size]
        assert ka == kb
        assert b.streams.audio[0].start_time == a.streams.audio[0].start_time
        assert b.streams.video[0].start_time == a.streams.video[0].start_time


def test_piece_of_real_footage_with_mp3(tmp_path, bic2):
    src = VIDEO / "cockatoo.mp4"
    out = upres.upscale_video(bic2, src, tmp_path / "p.mp4", frames=(100, 130), say=print)
    with av.open(str(out)) as b:
        v = b.streams.video[0]
        pts = [f.pts for f in b.decode(v)]
        assert len(pts) == 30 and pts[0] == 0 and np.all(np.diff(pts) == 512)
        assert b.streams.audio[0].codec_context.name.startswith("mp3")
    with av.open(str(out)) as b:
        aud = [p.pts * p.time_base for p in b.demux(b.streams.audio[0]) if p.pts is not None]
        # audio of the piece only, starting with it (to within one audio packet)
        assert 0 <= float(aud[0]) < 0.08 and float(aud[-1]) < 30 / 20


def test_variable_frame_rate_keeps_exact_timestamps(tmp_path, bic2):
    pts = [0, 40, 90, 100, 260, 300, 310, 480, 500, 700, 710, 740]
    make_clip(tmp_path / "vfr.mkv", pts=pts, gop=4)
    out = upres.upscale_video(bic2, tmp_path / "vfr.mkv", tmp_path / "o.mkv")
    got = [p for p, _ in _frames(out)]
    assert got == pts
    c, v = _video(out)
    with c:
        assert v.time_base == Fraction(1, 1000)


def test_ten_bit_stays_ten_bit_and_network_sees_sixteen_bits(tmp_path, bic2):
    src = tmp_path / "hdr.mkv"
    make_clip(src, codec="libx265", pix_fmt="yuv420p10le", colorspace=9, n=8,
              options={"x265-params": "log-level=error"})
    meta = probe(src)
    assert meta.bits == 10
    _, _, rgb = next(decode_rgb(meta, meta.pts[0], meta.end))
    assert rgb.dtype == np.uint16 and len(np.unique(rgb)) > 256  # not squeezed to 8 bits
    out = upres.upscale_video(bic2, src, tmp_path / "o.mkv")
    c, v = _video(out)
    with c:
        assert v.codec_context.name == "hevc"
        assert v.codec_context.pix_fmt == "yuv420p10le"
        assert v.codec_context.colorspace == 9  # BT.2020 tag carried
        f = next(c.decode(v))
        assert f.format.name == "yuv420p10le"


def test_bt709_full_range_keeps_colours_and_tags(tmp_path, bic2):
    src = tmp_path / "pc.mp4"
    make_clip(src, w=96, h=64, colorspace=1, color_range=2, pix_fmt="yuv444p", n=6)
    out = upres.upscale_video(bic2, src, tmp_path / "o.mp4")
    c, v = _video(out)
    with c:
        assert v.codec_context.colorspace == 1 and v.codec_context.color_range == 2
    a = [f for _, f in _frames(src)]
    b = [f for _, f in _frames(out)]
    meta_a, meta_b = probe(src), probe(out)
    fa = next(decode_rgb(meta_a, meta_a.pts[0], meta_a.end))[2].astype(np.float64)
    fb = next(decode_rgb(meta_b, meta_b.pts[0], meta_b.end))[2].astype(np.float64)
    # mean colour of the upscaled frame equals the input's (no matrix/range shift)
    assert np.abs(fa.mean(axis=(0, 1)) - fb.mean(axis=(0, 1))).max() < 1.0
    assert len(a) == len(b)


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_gray_without_a_range_tag_keeps_its_levels(tmp_path, bic2, suffix):
    """FFmpeg reads untagged gray as full range; its upscale must not come out tagged limited
    (players then stretch it: black crushed, white blown)."""
    src = tmp_path / "gray.mkv"
    make_clip(src, codec="ffv1", pix_fmt="gray", n=4)
    out = upres.upscale_video(bic2, src, tmp_path / f"o{suffix}")
    a = np.stack([f for _, f in _frames(src)]).astype(np.float64)  # as FFmpeg shows them
    b = np.stack([f for _, f in _frames(out)]).astype(np.float64)
    assert len(a) == len(b)
    assert abs(a.mean() - b.mean()) < 1.0
    for q in (1, 99):
        assert abs(np.percentile(a, q) - np.percentile(b, q)) < 3, q


def test_rotation_is_applied_upright(tmp_path, bic2, capsys):
    src = tmp_path / "rot.mp4"
    make_clip(src, w=64, h=48, rotation=90, n=4)
    meta = probe(src)
    assert meta.rotation == 90 and (meta.width, meta.height) == (48, 64)
    out = upres.upscale_video(bic2, src, tmp_path / "o.mp4")
    c, v = _video(out)
    with c:
        f = next(c.decode(v))
        assert (f.width, f.height) == (96, 128) and not f.rotation
    # the picture is the upright one: same as the input frame turned by its display matrix
    up = next(decode_rgb(meta, meta.pts[0], meta.end))[2]
    got = _frames(out)[0][1].astype(int)
    want = imresize(up, 2).astype(int)
    assert np.abs(got - want).mean() < 6


def test_odd_output_size_is_padded_and_said(tmp_path, capsys):
    src = tmp_path / "odd.mkv"
    make_clip(src, w=33, h=25, pix_fmt="yuv444p", n=4)
    up3 = upres.load("bicubic", scale=3)
    notes: list[str] = []
    out = upres.upscale_video(up3, src, tmp_path / "o.mp4", say=notes.append, pix_fmt="yuv420p")
    c, v = _video(out)
    with c:
        assert (v.codec_context.width, v.codec_context.height) == (100, 76)
    assert any("needs even sizes" in n and "99x75" in n for n in notes)


def test_subtitles_chapters_and_metadata(tmp_path, bic2):
    src = tmp_path / "s.mkv"
    make_clip(src, audio=True, subtitles=True, title="Bird", chapters=True, n=10)
    notes: list[str] = []
    mkv = upres.upscale_video(bic2, src, tmp_path / "o.mkv", say=notes.append)
    with av.open(str(mkv)) as c:
        kinds = sorted(s.type for s in c.streams)
        assert kinds == ["audio", "subtitle", "video"]
        assert c.metadata.get("title") == "Bird"
        assert [ch["metadata"].get("title") for ch in c.chapters()] == ["one", "two"]
        sub = c.streams.subtitles[0]
        assert [bytes(p).strip() for p in c.demux(sub) if p.size] == [b"hello", b"world"]
    mp4 = upres.upscale_video(bic2, src, tmp_path / "o.mp4", say=notes.append)
    with av.open(str(mp4)) as c:
        # MP4 keeps the chapters as a text track of its own ("data")
        assert sorted(s.type for s in c.streams if s.type != "data") == [
            "audio", "subtitle", "video"]
        assert [ch["metadata"].get("title") for ch in c.chapters()] == ["one", "two"]
        assert c.streams.audio[0].metadata.get("language") == "eng"
        sub = c.streams.subtitles[0]
        assert sub.codec_context.name == "mov_text"
        cues = [(float(p.pts * p.time_base), float(p.duration * p.time_base),
                 subtitle_text("mov_text", bytes(p))) for p in c.demux(sub) if p.size > 2]
        assert cues == [(0.0, 0.4, "hello"), (0.5, 0.4, "world")]
    assert any("subtitle" in n and "rewritten as mov_text" in n for n in notes)
    webm = upres.upscale_video(bic2, src, tmp_path / "o.webm", say=notes.append)
    with av.open(str(webm)) as c:
        sub = c.streams.subtitles[0]
        assert sub.codec_context.name == "webvtt"
        assert [bytes(p) for p in c.demux(sub) if p.size] == [b"hello", b"world"]


def test_subtitle_text_of_each_text_format():
    assert subtitle_text("subrip", b"<i>Hello</i>\r\n<font color=\"red\">there</font>\n") == \
        "Hello\nthere"
    assert subtitle_text("ass", b"3,0,Default,,0,0,0,,{\\an8}Up\\Nhere\\hnow") == "Up\nhere now"
    assert subtitle_text("mov_text", b"\x00\x06w\xc3\xb6rld" + b"styl-box") == "w\u00f6rld"
    assert subtitle_text("webvtt", b"<v Bob>Hi <b>you</b>") == "Hi you"


def test_webm_reencodes_aac_audio_and_says_so(tmp_path, bic2):
    src = tmp_path / "a.mp4"
    make_clip(src, audio=True, n=6)
    notes: list[str] = []
    out = upres.upscale_video(bic2, src, tmp_path / "o.webm", say=notes.append)
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.name == "vp9"
        assert c.streams.audio[0].codec_context.name in ("opus", "libopus")
    assert any("re-encoded to libopus" in n for n in notes)


def test_bad_inputs_one_line_before_any_work(tmp_path, capsys):
    (tmp_path / "text.mp4").write_text("not a video at all")
    audio_only = tmp_path / "a.m4a"
    with av.open(str(audio_only), "w", format="mp4") as out:
        a = out.add_stream("aac", rate=48000)
        a.layout = "mono"
        fr = av.AudioFrame.from_ndarray(np.zeros((1, 4096), np.float32), format="fltp",
                                        layout="mono")
        fr.sample_rate, fr.pts = 48000, 0
        for p in [*a.encode(fr), *a.encode(None)]:
            out.mux(p)
    src = tmp_path / "ok.mkv"
    make_clip(src, n=4)
    make_clip(tmp_path / "whole.mp4", n=20)  # MP4 puts its index (moov) at the end
    data = (tmp_path / "whole.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    (tmp_path / "whole.mp4").unlink()
    cases = [(["video", str(tmp_path / "text.mp4")], "not a video file"),
             (["video", str(tmp_path / "cut.mp4")], "damaged MP4/MOV: its index (moov)"),
             (["video", str(audio_only)], "no video stream"),
             (["video", str(tmp_path / "missing.mp4")], "no such file"),
             (["video", str(src), "--max-pixels", "100"], "frames too large"),
             (["video", str(src), "-o", str(tmp_path / "x.avi")], "unknown video container"),
             (["video", str(src), "-o", str(tmp_path / "x.mp4"), "--codec", "prores"],
              "cannot go into a mp4 file")]
    for args, msg in cases:
        capsys.readouterr()
        assert main([*args, "-m", "bicubic", "-s", "2"]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and msg in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.m4a", "cut.mp4", "ok.mkv",
                                                          "text.mp4"]


def test_existing_output_is_not_overwritten(tmp_path, capsys):
    src = tmp_path / "c.mkv"
    make_clip(src, n=4)
    out = tmp_path / "c_x2.mkv"
    out.write_bytes(b"mine")
    assert main(["video", str(src), "-m", "bicubic", "-s", "2"]) == 1
    assert "already exists" in capsys.readouterr().err and out.read_bytes() == b"mine"
    assert main(["video", str(src), "-m", "bicubic", "-s", "2", "--overwrite", "-q"]) == 0
    assert out.read_bytes() != b"mine"


def test_damaged_input_names_the_time_and_keeps_the_work(tmp_path, capsys):
    src = tmp_path / "long.mkv"
    make_clip(src, n=60, w=96, h=64, gop=10)
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(src.read_bytes()[: int(src.stat().st_size * 0.6)])
    out = tmp_path / "cut_x2.mkv"
    assert main(["video", str(cut), "-m", "bicubic", "-s", "2", "--segment-seconds",
                 "1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert "damaged video at" in err[-1] and str(cut) in err[-1], err
    assert not out.exists()
    work = tmp_path / ".cut_x2.mkv.upres"
    assert list(work.glob("seg-*.nut"))  # the part before the damage is kept


def _resume_cmd(src: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "upres", "video", str(src), "-o", str(out), "-m", "fast-x2",
            "-q", "--segment-seconds", "1"]


def test_sigkill_then_resume_gives_identical_frames(tmp_path):
    src = tmp_path / "clip.mkv"
    make_clip(src, n=80, w=160, h=120, gop=10, audio=True)
    ref = tmp_path / "ref.mkv"
    subprocess.run(_resume_cmd(src, ref), check=True, timeout=600)
    out = tmp_path / "out.mkv"
    work = tmp_path / ".out.mkv.upres"
    p = subprocess.Popen(_resume_cmd(src, out))
    deadline = time.monotonic() + 300
    while len(list(work.glob("seg-*-*[0-9].nut"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=30)
    assert not out.exists()
    done = sorted(work.glob("seg-*-*[0-9].nut"))
    assert 2 <= len(done) < 8, done  # killed mid-way, with segments committed
    r = subprocess.run([a for a in _resume_cmd(src, out) if a != "-q"], check=True,
                       timeout=600, capture_output=True, text=True)
    assert f"{len(done)} already done (resuming)" in r.stderr
    assert out.exists() and not work.exists()
    a, b = _frames(ref), _frames(out)
    assert [t for t, _ in a] == [t for t, _ in b] == [i * 100 for i in range(80)]
    assert all(np.array_equal(x, y) for (_, x), (_, y) in zip(a, b, strict=True))


class _SlowNetwork:
    """A real upscaler that takes ``seconds`` per frame, as a heavy model on large frames does
    (the end of a video used to hang when one frame took longer than a second)."""

    def __init__(self, up, seconds: float) -> None:
        self._up, self._seconds = up, seconds

    def __getattr__(self, name):
        return getattr(self._up, name)

    def upscale(self, img, **kw):
        time.sleep(self._seconds)
        return self._up.upscale(img, **kw)


def test_slow_network_finishes(tmp_path, bic2):
    """The decoder's end mark waits for a free slot however long the network takes: a queue
    still full a second after the last frame was decoded lost it and the run never ended."""
    import threading

    src = tmp_path / "in.mp4"
    make_clip(src, n=9, gop=30)
    out = tmp_path / "out.mp4"
    done: list = []
    t = threading.Thread(target=lambda: done.append(upres.upscale_video(
        _SlowNetwork(bic2, 1.3), src, out, say=lambda _: None)), daemon=True)
    t.start()
    t.join(timeout=120)
    assert not t.is_alive(), "upscale_video did not finish"
    assert done == [out] and len(_frames(out)) == 9


def test_mpeg_ts_with_b_frames_keeps_every_frame_across_segments(tmp_path, bic2):
    """FFmpeg seeks MPEG-TS by decode time and can land a keyframe late: every segment after
    the first then lost its first frames (a 300-frame .ts came out with 279)."""
    src = tmp_path / "b.ts"
    make_clip(src, n=80, gop=10, options={"x264-params": "bframes=3:open-gop=1"})
    want = _frames(src)
    out = upres.upscale_video(bic2, src, tmp_path / "o.mkv", segment_seconds=1.0)
    got = _frames(out)
    assert len(got) == len(want) == 80
    # MPEG-TS counts in 1/90000 s, Matroska in 1/1000 s: the same times
    assert [p * 90 for p, _ in got] == [p for p, _ in want]
    for (_, a), (_, b) in zip(want[::9], got[::9], strict=True):  # each frame is its own
        assert np.abs(imresize(a, 2).astype(int) - b.astype(int)).mean() < 6


def test_rotated_anamorphic_video_turns_its_aspect_ratio(tmp_path, bic2):
    src = tmp_path / "r.mp4"
    make_clip(src, w=64, h=48, rotation=90, n=3, options={"aspect": "4:3"})
    # stored 64x48 with 4:3 pixels (shown 85x48), turned 90 degrees: 48 wide pixels of 3:4
    assert probe(src).sar == Fraction(3, 4)
    out = upres.upscale_video(bic2, src, tmp_path / "o.mp4")
    c, v = _video(out)
    with c:
        assert (v.codec_context.width, v.codec_context.height) == (96, 128)
        assert Fraction(v.codec_context.sample_aspect_ratio) == Fraction(3, 4)


def test_interlaced_source_is_said(tmp_path, bic2):
    src = tmp_path / "i.mp4"
    make_clip(src, n=4, options={"x264-params": "interlaced=1:tff=1"})
    assert probe(src).interlaced and not probe(VIDEO / "realshort.mp4").interlaced
    notes: list[str] = []
    upres.upscale_video(bic2, src, tmp_path / "o.mp4", say=notes.append)
    assert any("interlaced" in n and "bwdif" in n for n in notes)


def test_hdr10_mastering_metadata_kept(tmp_path, bic2):
    src = tmp_path / "hdr.mkv"
    md = "G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,1)"
    make_clip(src, n=4, codec="libx265", pix_fmt="yuv420p10le", colorspace=9,
              options={"x265-params": f"log-level=error:hdr10=1:master-display={md}:"
                                      "max-cll=1000,400"})
    meta = probe(src)
    assert (meta.mastering, meta.light_level) == (md, "1000,400")
    out = upres.upscale_video(bic2, src, tmp_path / "o.mkv")
    assert (probe(out).mastering, probe(out).light_level) == (md, "1000,400")
    notes: list[str] = []
    upres.upscale_video(bic2, src, tmp_path / "o.mp4", codec="h264", pix_fmt="yuv420p",
                        say=notes.append)
    assert any("HDR10" in n and "--codec h265" in n for n in notes)
    assert probe(tmp_path / "o.mp4").mastering is None


@pytest.mark.parametrize("codec", ["prores", "av1", "h265"])
def test_prores_and_av1_are_written_quietly_and_resumed(tmp_path, bic2, capfd, codec):
    src = tmp_path / "c.mkv"
    make_clip(src, n=6, gop=3)
    with pytest.raises(RuntimeError):  # a failed run, then a resumed one
        upres.upscale_video(_FailingNetwork(bic2, 4, RuntimeError("boom")), src,
                            tmp_path / "o.mkv", codec=codec, segment_seconds=0.2,
                            say=lambda _: None)
    capfd.readouterr()
    notes: list[str] = []
    out = upres.upscale_video(bic2, src, tmp_path / "o.mkv", codec=codec, segment_seconds=0.2,
                              say=notes.append)
    assert any("1 already done (resuming)" in n for n in notes), notes
    with av.open(str(out)) as c:
        v = c.streams.video[0]
        assert v.codec_context.name in {"prores": {"prores"}, "h265": {"hevc"}}.get(
            codec, {"libdav1d", "av1"})
        assert len(list(c.decode(v))) == 6
    err = capfd.readouterr().err
    assert "Svt[" not in err and "x265 [" not in err  # no encoder's banner


@pytest.mark.parametrize(("codec", "suffix"), [("ffv1", ".mkv"), ("vp9", ".webm"),
                                              ("vp9", ".mp4")])
def test_ffv1_and_vp9_keep_colour_tags_and_aspect_ratio(tmp_path, bic2, codec, suffix):
    src = tmp_path / "c.mp4"
    make_clip(src, n=3, colorspace=1, options={"aspect": "32:27"})
    notes: list[str] = []
    out = upres.upscale_video(bic2, src, tmp_path / f"o{suffix}", codec=codec,
                              say=notes.append)
    c, v = _video(out)
    with c:
        assert v.codec_context.colorspace == 1 and v.codec_context.color_range == 1
        if suffix == ".mp4":
            assert v.sample_aspect_ratio == Fraction(32, 27)
        else:  # PyAV cannot give a Matroska stream its aspect ratio: said
            assert any("non-square pixels (32:27)" in n for n in notes)


def test_ten_bit_into_webm_says_it_becomes_eight_bit(tmp_path, bic2):
    src = tmp_path / "hdr.mkv"
    make_clip(src, codec="libx265", pix_fmt="yuv420p10le", colorspace=9, n=3,
              options={"x265-params": "log-level=error"})
    notes: list[str] = []
    out = upres.upscale_video(bic2, src, tmp_path / "o.webm", say=notes.append)
    c, v = _video(out)
    with c:
        assert v.codec_context.pix_fmt == "yuv420p"
    assert any("10-bit" in n and "output is 8-bit" in n for n in notes)


class _FailingNetwork:
    """A real upscaler that raises ``exc`` at frame ``at``."""

    def __init__(self, up, at: int, exc: BaseException) -> None:
        self._up, self._at, self._exc, self._n = up, at, exc, 0

    def __getattr__(self, name):
        return getattr(self._up, name)

    def upscale(self, img, **kw):
        self._n += 1
        if self._n > self._at:
            raise self._exc
        return self._up.upscale(img, **kw)


def test_changed_input_under_the_same_name_starts_afresh(tmp_path, bic2):
    src, out = tmp_path / "c.mkv", tmp_path / "o.mkv"
    make_clip(src, n=30, gop=5)
    with pytest.raises(RuntimeError):
        upres.upscale_video(_FailingNetwork(bic2, 20, RuntimeError("boom")), src, out,
                            segment_seconds=0.5, say=lambda _: None)
    assert list((tmp_path / ".o.mkv.upres").glob("seg-*.nut"))
    make_clip(src, n=30, gop=5, options={"crf": "45"})  # another video, same name and form
    os.utime(src, ns=(1, 10**18))
    notes: list[str] = []
    upres.upscale_video(bic2, src, out, segment_seconds=0.5, say=notes.append)
    assert any("changed (size or time)" in n for n in notes)
    want = upres.upscale_video(bic2, src, tmp_path / "ref.mkv", segment_seconds=0.5,
                               say=lambda _: None)
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(_frames(out), _frames(want),
                                                              strict=True))


def test_interrupt_says_how_to_resume_and_early_failure_leaves_no_work(tmp_path, bic2):
    src, out = tmp_path / "c.mkv", tmp_path / "o.mkv"
    make_clip(src, n=30, gop=5)
    notes: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        upres.upscale_video(_FailingNetwork(bic2, 20, KeyboardInterrupt()), src, out,
                            segment_seconds=0.5, say=notes.append)
    work = tmp_path / ".o.mkv.upres"
    assert any("interrupted" in n and str(work) in n and "resume" in n for n in notes)
    assert list(work.glob("seg-*.nut"))
    out2 = tmp_path / "p.mkv"
    with pytest.raises(UpresError):
        upres.upscale_video(_FailingNetwork(bic2, 0, UpresError("bad")), src, out2,
                            say=lambda _: None)
    assert not (tmp_path / ".p.mkv.upres").exists()


def test_late_video_start_or_longer_subtitles_in_matroska_are_not_damage(tmp_path, bic2):
    src = tmp_path / "late.mkv"
    make_clip(src, pts=[480 + i * 100 for i in range(10)], audio=True)
    meta = probe(src)
    assert meta.damaged_at is None
    out = upres.upscale_video(bic2, src, tmp_path / "o.mkv", say=lambda _: None)
    assert [p for p, _ in _frames(out)] == [480 + i * 100 for i in range(10)]
    make_clip(tmp_path / "subs.mkv", n=5, subtitles=True)  # a cue lasts past the last frame
    assert probe(tmp_path / "subs.mkv").damaged_at is None


def _clip_with_audio(path: Path, acodec: str, *, vcodec: str = "libx264", rate: int = 48000,
                     n: int = 5) -> None:
    """A 64x48 clip at 10 fps with one stereo audio stream of ``acodec``."""
    out = av.open(str(path), "w")
    v = out.add_stream(vcodec, rate=10)
    v.codec_context.width, v.codec_context.height, v.codec_context.pix_fmt = 64, 48, "yuv420p"
    a = out.add_stream(acodec, rate=rate)
    a.layout = "stereo"
    if acodec.startswith("wma"):
        a.bit_rate = 128000
    for i in range(n):
        f = av.VideoFrame.from_ndarray(_pattern(i, 64, 48), format="rgb24").reformat(
            format="yuv420p")
        f.pts = i
        for p in v.encode(f):
            out.mux(p)
    for p in v.encode(None):
        out.mux(p)
    res = av.AudioResampler(format=a.codec_context.format, layout="stereo", rate=rate)
    tone = np.tile((0.2 * np.sin(np.arange(rate * n // 10) / 20)).astype(np.float32), (2, 1))
    fr = av.AudioFrame.from_ndarray(tone, format="fltp", layout="stereo")
    fr.sample_rate, fr.pts = rate, 0
    size = a.codec_context.frame_size or 1024
    fifo = av.AudioFifo()
    for rf in res.resample(fr):
        fifo.write(rf)
    while (chunk := fifo.read(size)) is not None:
        for p in a.encode(chunk):
            out.mux(p)
    for p in a.encode(None):
        out.mux(p)
    out.close()


@pytest.mark.parametrize(("name", "acodec", "vcodec", "suffix"), [
    ("w.wmv", "wmav2", "wmv2", ".mkv"), ("w.wmv", "wmav2", "wmv2", ".mp4"),
    ("o.mkv", "libopus", "libx264", ".mov"), ("f.mkv", "flac", "libx264", ".mov")])
def test_audio_the_container_cannot_hold_is_reencoded(tmp_path, bic2, name, acodec, vcodec,
                                                      suffix):
    src = tmp_path / name
    _clip_with_audio(src, acodec, vcodec=vcodec)
    notes: list[str] = []
    out = upres.upscale_video(bic2, src, tmp_path / f"out{suffix}", say=notes.append)
    with av.open(str(out)) as c:
        assert c.streams.audio[0].codec_context.name == "aac"
        assert c.streams.audio[0].codec_context.channels == 2
        assert len(list(c.decode(c.streams.audio[0]))) > 0
    assert any("re-encoded to aac" in n for n in notes)


def test_codec_the_container_refuses_is_said_before_any_work(tmp_path, capsys):
    src = tmp_path / "c.mkv"
    make_clip(src, n=4)
    for codec in ("vp9", "av1"):
        assert main(["video", str(src), "-o", str(tmp_path / "x.mov"), "--codec", codec,
                     "-m", "bicubic", "-s", "2"]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"--codec {codec} cannot go into a mov file" in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.mkv"]


def test_crf_and_preset_out_of_range_are_refused_before_any_work(tmp_path, capsys):
    src = tmp_path / "c.mkv"
    make_clip(src, n=4)
    cases = [(["--crf", "-5"], "--crf -5: h264 takes 0 to 51"),
             (["--crf", "64", "--codec", "vp9"], "--crf 64: vp9 takes 0 to 63"),
             (["--crf", "99999999999", "--codec", "h265"], "h265 takes 0 to 51"),
             (["--preset", "bogus"], "--preset bogus: h264 takes ultrafast, "),
             (["--preset", "slow", "--codec", "vp9"], "vp9 takes cpu-used, -8 to 8"),
             (["--preset", "fast", "--codec", "ffv1"], "--preset applies to"),
             (["--crf", "1", "--codec", "prores", "-o", str(tmp_path / "x.mov")],
              "--crf applies to")]
    for args, msg in cases:
        capsys.readouterr()
        assert main(["video", str(src), "-m", "bicubic", "-s", "2", *args]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and msg in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.mkv"]


def test_matroska_output_declares_the_input_frame_rate(tmp_path, bic2):
    src = tmp_path / "c.mp4"
    make_clip(src, n=5, tb=Fraction(1, 12800), pts=[i * 1280 for i in range(5)])
    out = upres.upscale_video(bic2, src, tmp_path / "o.mkv", say=lambda _: None)
    c, v = _video(out)
    with c:
        assert v.average_rate == v.guessed_rate == 10
        assert v.codec_context.framerate == 10  # H.264's own timing info, not 1/time base


@pytest.mark.parametrize("suffix", [".mkv", ".mp4"])
def test_default_and_forced_dispositions_are_copied(tmp_path, bic2, suffix):
    from av.stream import Disposition

    src = tmp_path / "d.mkv"
    make_clip(src, n=10, audio=True, subtitles=True,
              dispositions=(Disposition.default | Disposition.dub,
                            Disposition.default | Disposition.forced))
    out = upres.upscale_video(bic2, src, tmp_path / f"o{suffix}", say=lambda _: None)
    with av.open(str(out)) as c:
        assert Disposition.default in c.streams.audio[0].disposition
        sub = c.streams.subtitles[0].disposition
        assert Disposition.default in sub and Disposition.forced in sub


def test_frames_past_the_end_and_mp4_chapter_track(tmp_path, bic2, capsys):
    src = tmp_path / "c.mp4"
    make_clip(src, n=10, chapters=True)
    assert main(["video", str(src), "--frames", "60:70", "-m", "bicubic", "-s", "2"]) == 1
    err = capsys.readouterr().err.strip()
    assert "--frames 60:70: no frame in that range (the video has 10 frames)" in err
    notes: list[str] = []
    out = upres.upscale_video(bic2, src, tmp_path / "o.mkv", say=notes.append)
    assert not any("dropped" in n for n in notes), notes
    with av.open(str(out)) as c:
        assert [ch["metadata"].get("title") for ch in c.chapters()] == ["one", "two"]


def test_stream_an_encoder_refuses_is_said_before_any_work(tmp_path, bic2, monkeypatch):
    import upres.formats.video as fv

    src = tmp_path / "w.wmv"
    _clip_with_audio(src, "wmav2", vcodec="wmv2")
    monkeypatch.setattr(fv, "_layout", lambda layout: layout)  # AAC refuses "2 channels"
    net = _FailingNetwork(bic2, 0, AssertionError("the network ran"))
    with pytest.raises(UpresError, match=r"out\.mp4: a mp4 file cannot be written"):
        upres.upscale_video(net, src, tmp_path / "out.mp4", say=lambda _: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.wmv"]


@pytest.mark.parametrize(("name", "acodec"), [("p.mov", "pcm_s16le"), ("p.mkv", "pcm_s24le"),
                                              ("p.mkv", "pcm_s16le")])
def test_pcm_audio_into_mp4_is_reencoded_to_aac(tmp_path, bic2, name, acodec):
    src = tmp_path / name
    _clip_with_audio(src, acodec)
    notes: list[str] = []
    out = upres.upscale_video(bic2, src, tmp_path / "out.mp4", say=notes.append)
    with av.open(str(out)) as c:
        a = c.streams.audio[0]
        assert a.codec_context.name == "aac" and a.codec_context.channels == 2
        assert len(list(c.decode(a))) > 0
    assert any(f"({acodec}) re-encoded to aac" in n and ".mov or .mkv" in n for n in notes)
    out = upres.upscale_video(bic2, src, tmp_path / "out.mov", say=lambda _: None)
    with av.open(str(out)) as c:  # MOV holds PCM: copied
        assert c.streams.audio[0].codec_context.name == acodec


def test_stream_the_mp4_index_refuses_is_said_before_any_work(tmp_path, bic2, monkeypatch):
    import upres.formats.video as fv

    src = tmp_path / "p.mkv"
    _clip_with_audio(src, "pcm_s16le")  # Matroska's PCM: 2 channels without an order
    monkeypatch.setattr(fv, "_recoded_audio", lambda container, codec: False)  # copied
    net = _FailingNetwork(bic2, 0, AssertionError("the network ran"))
    with pytest.raises(UpresError, match=r"out\.mp4: a mp4 file cannot be written"):
        upres.upscale_video(net, src, tmp_path / "out.mp4", say=lambda _: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.mkv"]


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_h264_with_b_frames_in_avi_keeps_every_frame_in_order(tmp_path, bic2, capsys, suffix):
    src = tmp_path / "b.avi"  # AVI's time base is 1/fps and its timestamps are decode order
    make_clip(src, n=30, tb=Fraction(1, 10), pts=list(range(30)),
              options={"bf": "3", "x264-params": "b-pyramid=normal"})
    meta = probe(src)
    assert meta.time_base == Fraction(1, 10) and meta.decode_order
    assert len(meta.keyframes) == 3  # every 10 frames, IDR pictures (x264's closed GOPs)
    want = _frames(src)
    assert [p for p, _ in want] != sorted(p for p, _ in want)  # the frames carry them reordered
    out = upres.upscale_video(bic2, src, tmp_path / f"o{suffix}", segment_seconds=0.9,
                              say=lambda _: None)
    got = _frames(out)
    assert len(got) == 30
    ticks = [round(Fraction(p) * probe(out).time_base * 10) for p, _ in got]
    assert ticks == list(meta.pts)  # display times 0.1 s apart, in order
    for (_, a), (_, b) in zip(want, got, strict=True):  # each picture at its own time
        assert np.abs(imresize(a, 2).astype(int) - b.astype(int)).mean() < 6
    piece = upres.upscale_video(bic2, src, tmp_path / f"p{suffix}", frames=(12, 25),
                                say=lambda _: None)
    got = _frames(piece)
    assert len(got) == 13
    for (_, a), (_, b) in zip(want[12:25], got, strict=True):
        assert np.abs(imresize(a, 2).astype(int) - b.astype(int)).mean() < 6
    # an open GOP: the later I-frames are not IDR pictures, whose B-frames that show before
    # them are dropped by a decode that starts there; the plan starts only at IDR pictures
    src = tmp_path / "open.avi"
    make_clip(src, n=30, tb=Fraction(1, 10), pts=list(range(30)),
              options={"bf": "3", "x264-params": "open-gop=1"})
    meta = probe(src)
    assert meta.decode_order and len(meta.keyframes) == 1  # the first picture alone
    want = _frames(src)
    got = _frames(upres.upscale_video(bic2, src, tmp_path / f"open{suffix}",
                                      segment_seconds=0.9, say=lambda _: None))
    assert len(got) == 30
    for (_, a), (_, b) in zip(want, got, strict=True):
        assert np.abs(imresize(a, 2).astype(int) - b.astype(int)).mean() < 6
    assert main(["video", str(src), "-o", str(tmp_path / "x.avi"), "-m", "fast-x2"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "x.avi: unknown video container '.avi'; use " in err[0], err


def test_idr_pictures_are_found_in_either_h264_layout():
    from upres.formats.video import _is_idr

    def units(*nals: bytes) -> bytes:  # length-prefixed, as in MP4/MKV
        return b"".join(len(n).to_bytes(4, "big") + n for n in nals)

    sei = b"\x06" + bytes(0x164)  # 0x165 bytes: the packet starts 00 00 01 65 like Annex B
    assert not _is_idr(units(sei, b"\x41\x9a\x00"), "h264")  # then a P slice
    assert _is_idr(units(sei, b"\x65\x88\x80"), "h264")  # then an IDR slice
    assert _is_idr(b"\0\0\0\1\x09\xf0\0\0\1\x65\x88", "h264")  # Annex B, AUD then IDR
    assert not _is_idr(b"\0\0\1\x41\x9a\0\0\1\x01\x02", "h264")
    assert _is_idr(units(b"\x26\x01\xaf"), "hevc") and not _is_idr(units(b"\x2a\x01"), "hevc")
    assert not _is_idr(b"", "h264")


def test_clip_strength_is_the_median_over_frames_across_the_clip():
    """A photo model's automatic strength for a video: the median of its readings on five
    frames spread over the clip (first and last included), not the first frame's alone."""
    from upres.formats.video import decode_rgb, probe
    from upres.video import clip_strength, select_range

    meta = probe(VIDEO / "cockatoo.mp4")
    lo, hi = select_range(meta, frames=(0, 60), start=None, duration=None)
    up = upres.load("photo-x4", device="cpu")
    t, n = clip_strength(up, meta, lo, hi)
    frames = [rgb for _, _, rgb in decode_rgb(meta, lo, hi)]
    assert len(frames) == 60 and n == 5
    reads = [up.choose(frames[i]) for i in (0, 15, 30, 44, 59)]  # linspace(0, 59, 5), rounded
    assert t == pytest.approx(float(np.median(reads)))
