"""Video files through PyAV (FFmpeg's libraries in its wheel): probe, decode frames as RGB,
encode segments, and assemble the output with every other stream.

A video is never held whole: :func:`probe` reads only the packet headers of the video stream
(timestamps and keyframes); :func:`decode_rgb` yields the frames of one time range as RGB
arrays (uint8 for 8-bit sources, uint16 for 9-16-bit ones, so the network never sees 10-bit
video squeezed to 8 bits), converted with the source's own colour matrix and range and turned
upright when the stream carries a rotation; :class:`SegmentEncoder` encodes upscaled frames of
one range into a file of their own; :func:`assemble` muxes the segments' packets with the
input's audio, subtitle and data streams (copied packet for packet where the output container
takes their codec, re-encoded or dropped with a note where it does not), metadata and
chapters.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from upres.errors import UnsupportedImageError, UpresError, one_line

__all__ = ["CODECS", "CONTAINERS", "EncodeSettings", "SegmentEncoder", "VideoMeta", "assemble",
           "check_streams", "decode_rgb", "encode_settings", "is_video", "probe"]

#: Output container (FFmpeg muxer) by suffix.
CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mkv": "matroska", ".mov": "mov",
              ".webm": "webm"}
#: ``--codec`` name -> FFmpeg encoder.
CODECS = {"h264": "libx264", "h265": "libx265", "hevc": "libx265", "vp9": "libvpx-vp9",
          "av1": "libsvtav1", "ffv1": "ffv1", "prores": "prores_ks"}
_VIDEO_EXTS = (".mp4", ".m4v", ".mkv", ".mov", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts",
               ".m2ts", ".flv", ".wmv", ".3gp", ".ogv", ".y4m", ".mxf", ".vob")
_DEFAULT_CRF = {"libx264": 18, "libx265": 20, "libvpx-vp9": 24, "libsvtav1": 28}
#: The --crf each encoder takes.
_CRF_RANGE = {"libx264": (0, 51), "libx265": (0, 51), "libvpx-vp9": (0, 63),
              "libsvtav1": (1, 63)}
_X26X_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow",
                 "slower", "veryslow", "placebo")
#: The --preset each encoder takes (VP9: libvpx's cpu-used; AV1: SVT-AV1's preset).
_PRESETS = {"libx264": _X26X_PRESETS, "libx265": _X26X_PRESETS,
            "libvpx-vp9": tuple(str(i) for i in range(-8, 9)),
            "libsvtav1": tuple(str(i) for i in range(14))}
#: Matrix names swscale takes, by FFmpeg's AVColorSpace number.
_MATRIX = {1: "ITU709", 4: "FCC", 5: "ITU601", 6: "ITU601", 7: "SMPTE240M", 9: "BT2020",
           10: "BT2020"}


def is_video(path: str | os.PathLike[str]) -> bool:
    """True for a file with a video suffix (the video path is chosen by suffix; the reader
    then says what it cannot take)."""
    return Path(path).suffix.lower() in _VIDEO_EXTS


@dataclass(frozen=True)
class StreamInfo:
    """A non-video stream of the input: ``index``, ``kind`` (audio, subtitle, data,
    attachment), ``codec`` (FFmpeg name) and its metadata (language, title, ...)."""

    index: int
    kind: str
    codec: str
    metadata: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class VideoMeta:
    """What a video file is, besides its frames.

    ``width``/``height``: of the frames as they are shown (after ``rotation``, degrees
    counter-clockwise, which the decoded frames are turned by); ``pix_fmt``: the decoder's
    pixel format; ``bits``: bits per sample (8, 10, 12, ...); ``colorspace``, ``color_range``,
    ``color_primaries``, ``color_trc``: FFmpeg's numbers (unspecified = 2, range 0);
    ``matrix``: the matrix the RGB conversion uses (the stream's own, or the one players assume
    for its size when unspecified: BT.709 from 720 lines up, BT.601 below); ``sar``: sample
    aspect ratio of the frames as shown (the stream's inverted when a 90/270 degree rotation
    turns them, as FFmpeg's transpose does); ``interlaced``: the first frame is flagged
    interlaced; ``mastering``, ``light_level``: HDR10 static metadata of the first frame in
    x265's syntax (``G(x,y)B(x,y)R(x,y)WP(x,y)L(max,min)``, ``MaxCLL,MaxFALL``) or None;
    ``time_base`` of the video stream; ``pts``: every frame's timestamp, in
    display order; ``keyframes``: the keyframes' timestamps; ``end``: the end of the last
    frame; ``streams``: the other streams; ``metadata``: the container's; ``chapters``;
    ``scale``: how many times larger than the source; ``decode_order``: the container's
    timestamps follow decoding order, not display order (H.264 with B-frames in AVI, which has
    no presentation times): the decoded frames are given ``pts`` in the order they come out.
    """

    path: Path
    index: int
    codec: str
    width: int
    height: int
    rotation: int
    pix_fmt: str
    bits: int
    colorspace: int
    color_range: int
    color_primaries: int
    color_trc: int
    matrix: str
    sar: Fraction | None
    time_base: Fraction
    rate: Fraction | None
    pts: tuple[int, ...]
    keyframes: tuple[int, ...]
    end: int
    streams: tuple[StreamInfo, ...]
    metadata: tuple[tuple[str, str], ...]
    video_metadata: tuple[tuple[str, str], ...]
    chapters: tuple[dict, ...] = field(default=(), compare=False)
    damaged_at: float | None = None
    scale: int = 1
    interlaced: bool = False
    mastering: str | None = None
    light_level: str | None = None
    decode_order: bool = False

    def seconds(self, pts: int) -> float:
        return float(pts * self.time_base)

    def scaled(self, s: int) -> VideoMeta:
        """The video after an upscale of every frame by ``s``: frames ``s`` times larger,
        stored upright (no rotation left); timing, colour and streams unchanged."""
        return replace(self, width=self.width * s, height=self.height * s, rotation=0,
                       scale=self.scale * s)


def _bits(fmt: Any) -> int:
    try:
        return max(c.bits for c in fmt.components)
    except Exception:
        return 8


def probe(path: str | os.PathLike[str], *, max_pixels: int | None = None) -> VideoMeta:
    """Read a video's headers, its video packets' timestamps, and decode its first frame.

    Raises:
        UpresError: one line: not a video, no video stream, no decoder, frames larger than
            ``max_pixels`` (refused before decoding), or damaged before the first frame.
    """
    import av

    from upres.formats.image import DEFAULT_MAX_PIXELS

    p = Path(path)
    if not p.is_file():
        raise UpresError(f"{p}: no such file")
    try:
        c = av.open(str(p), metadata_errors="replace")
    except Exception as exc:
        head = b""
        with contextlib.suppress(OSError), open(p, "rb") as f:
            head = f.read(12)
        if head[4:8] == b"ftyp":  # an MP4/MOV FFmpeg cannot open: its index is what is missing
            raise UpresError(f"{p}: damaged MP4/MOV: its index (moov) is missing or cut, as "
                             "when a recording is interrupted; nothing to decode without it "
                             f"({one_line(exc)})") from None
        raise UnsupportedImageError(f"{p}: not a video file ({one_line(exc)})") from None
    with c:
        fmt = c.format.name or ""
        if fmt == "image2" or fmt.endswith("_pipe"):  # FFmpeg reads a still as one frame
            raise UnsupportedImageError(f"{p}: a still image ({fmt.removesuffix('_pipe')}), "
                                        "not a video; upscale it with upres upscale")
        if not c.streams.video:
            raise UnsupportedImageError(f"{p}: no video stream")
        v = c.streams.video[0]
        cc = v.codec_context
        if cc is None or not cc.name or cc.width <= 0 or cc.height <= 0:
            raise UnsupportedImageError(f"{p}: video stream has no decodable codec or size")
        limit = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
        if limit and cc.width * cc.height > limit:
            raise UpresError(f"{p}: frames too large ({cc.width}x{cc.height} pixels, limit "
                             f"{limit}; raise it with --max-pixels)")
        tb = v.time_base or Fraction(1, 90000)
        pts, keys, end, damaged = [], [], None, None
        in_order = True  # every packet's pts above the one before (decoding order)
        open_keys: set[int] = set()  # H.264/H.265 keyframes that are not IDR pictures
        nal_kind = cc.name if cc.name in ("h264", "hevc") else None
        try:
            for pkt in c.demux(v):
                if pkt.pts is None:
                    continue
                in_order = in_order and (not pts or pkt.pts > pts[-1])
                pts.append(pkt.pts)
                if pkt.is_keyframe:
                    keys.append(pkt.pts)
                    if nal_kind and c.format.name == "avi" and not _is_idr(bytes(pkt),
                                                                            nal_kind):
                        open_keys.add(pkt.pts)
                stop = pkt.pts + (pkt.duration or 0)
                end = stop if end is None else max(end, stop)
        except Exception as exc:
            if not pts:
                raise UpresError(f"{p}: damaged video ({one_line(exc)})") from None
            damaged = True  # the frames before the damage are planned; the run says where
        if not pts:
            raise UpresError(f"{p}: video stream has no frames")
        pts.sort()
        keys = sorted(k for k in keys if k >= pts[0]) or [pts[0]]
        if keys[0] != pts[0]:
            keys.insert(0, pts[0])
        if end is None or end <= pts[-1]:
            step = (pts[-1] - pts[-2]) if len(pts) > 1 else max(1, int(1 / (tb * 25)))
            end = pts[-1] + step
        declared_end = None  # where the headers say the video ends
        tag = _clock_seconds(v.metadata.get("DURATION", ""))  # Matroska's, the track's end
        if v.duration:
            declared_end = (v.start_time or 0) + v.duration
        elif tag is not None:
            declared_end = int(tag / tb)
        elif c.duration:  # the container's span, from its earliest stream's start
            declared_end = int(((c.start_time or 0) + c.duration) / 1e6 / tb)
        frame = (pts[-1] - pts[0]) / max(1, len(pts) - 1)
        if damaged or (declared_end is not None and declared_end - end > 2 * frame):
            damaged = float((end) * tb)
        first = _first_frame(p)
        decode_order = c.format.name == "avi" and in_order and _reorders(p)
        if decode_order:
            # frames are given display times by counting from the keyframe a decode starts
            # at, which holds only where no frame after it shows before it: an IDR picture
            # (an open GOP's I-frame drops the B-frames after it that show before it)
            keys = [k for k in keys if k not in open_keys or k == pts[0]]
        rotation = round(first.rotation or 0) % 360
        fmt = first.format
        cs = int(first.colorspace or cc.colorspace or 2)
        h, w = first.height, first.width
        if rotation in (90, 270):
            w, h = h, w
        matrix = _MATRIX.get(cs) or ("ITU709" if h >= 720 else "ITU601")
        streams = tuple(StreamInfo(s.index, s.type, _codec_name(s),
                                   tuple(sorted(s.metadata.items())))
                        for s in c.streams if s.index != v.index)
        # the container's first, as FFmpeg guesses it: Matroska says it for codecs whose
        # bitstream cannot (VP9, FFV1), and the codec context then says nothing
        sar = v.sample_aspect_ratio or cc.sample_aspect_ratio
        if sar and sar.numerator and rotation in (90, 270):
            sar = 1 / Fraction(sar)  # the pixels turn with the picture
        chapters = ()
        with contextlib.suppress(Exception):
            chapters = tuple(dict(ch) for ch in c.chapters())
        return VideoMeta(
            path=p, index=v.index, codec=cc.name, width=w, height=h, rotation=rotation,
            pix_fmt=fmt.name, bits=_bits(fmt), colorspace=cs,
            color_range=_source_range(fmt.name, int(first.color_range or cc.color_range or 0)),
            color_primaries=int(cc.color_primaries or 2), color_trc=int(cc.color_trc or 2),
            matrix=matrix, sar=Fraction(sar) if sar and sar.numerator else None,
            time_base=Fraction(tb), rate=Fraction(v.average_rate) if v.average_rate else None,
            pts=tuple(pts), keyframes=tuple(keys), end=end, streams=streams,
            metadata=tuple(sorted(c.metadata.items())),
            video_metadata=tuple(sorted(v.metadata.items())), chapters=chapters,
            damaged_at=damaged, interlaced=bool(getattr(first, "interlaced_frame", False)),
            decode_order=decode_order, **_hdr10(first))


def _clock_seconds(text: str) -> Fraction | None:
    """``HH:MM:SS.fraction`` in seconds, or None."""
    m = re.fullmatch(r"(\d+):(\d\d):(\d\d(?:\.\d+)?)", text.strip())
    if m is None:
        return None
    return int(m[1]) * 3600 + int(m[2]) * 60 + Fraction(m[3])


def _hdr10(frame: Any) -> dict[str, str]:
    """HDR10 static metadata of ``frame`` (FFmpeg's mastering display and content light level
    side data) in x265's syntax: chromaticities in units of 0.00002, luminance of 0.0001
    cd/m2 (``mastering``), ``MaxCLL,MaxFALL`` in cd/m2 (``light_level``); what is absent is
    left out."""
    import struct

    out: dict[str, str] = {}
    sds = getattr(frame, "side_data", None) or ()
    for item in sds:
        # PyAV 18 iterates side-data objects; a release that iterates keys gets them looked up
        sd = item if hasattr(item, "type") else sds[item]
        kind = getattr(getattr(sd, "type", None), "name", "")
        with contextlib.suppress(Exception):
            data = bytes(sd)
            if kind == "MASTERING_DISPLAY_METADATA" and len(data) >= 88:
                v = struct.unpack("=22i", data[:88])
                q = [v[i] / v[i + 1] if v[i + 1] else 0.0 for i in range(0, 20, 2)]
                if v[20] and v[21]:  # has primaries, has luminance
                    c = [round(x * 50000) for x in q[:8]]  # R, G, B, white point (x, y)
                    out["mastering"] = (f"G({c[2]},{c[3]})B({c[4]},{c[5]})R({c[0]},{c[1]})"
                                        f"WP({c[6]},{c[7]})"
                                        f"L({round(q[9] * 10000)},{round(q[8] * 10000)})")
            elif kind == "CONTENT_LIGHT_LEVEL" and len(data) >= 8:
                cll, fall = struct.unpack("=2I", data[:8])
                out["light_level"] = f"{cll},{fall}"
    return out


def _codec_name(s: Any) -> str:
    with contextlib.suppress(Exception):
        return s.codec_context.name
    return getattr(getattr(s, "codec", None), "name", "") or "unknown"


def _first_frame(p: Path) -> Any:
    import av

    try:
        with av.open(str(p), metadata_errors="replace") as c:
            for frame in c.decode(c.streams.video[0]):
                return frame
    except Exception as exc:
        raise UpresError(f"{p}: cannot decode the first frame: damaged or unsupported codec "
                         f"({one_line(exc)})") from None
    raise UpresError(f"{p}: no frame could be decoded (unsupported or damaged video)")


def _is_idr(data: bytes, codec: str) -> bool:
    """True if an H.264 (``h264``) or H.265 (``hevc``) access unit, length-prefixed or Annex B
    (start codes), holds an IDR picture's slice (H.264 NAL type 5; H.265 types 19 and 20).
    Length-prefixed is taken only where the 4-byte lengths add up to the packet exactly (a
    first unit 256-511 bytes long starts ``00 00 01`` too)."""
    def idr(first: int) -> bool:
        return (first & 0x1F) == 5 if codec == "h264" else ((first >> 1) & 0x3F) in (19, 20)

    heads, i = [], 0
    while i + 4 < len(data):  # 4-byte lengths (AVC1 / HVC1 in a container)
        n = int.from_bytes(data[i:i + 4], "big")
        heads.append(data[i + 4])
        i += 4 + n
    if heads and i == len(data):
        return any(idr(h) for h in heads)
    i = data.find(b"\0\0\1")
    while 0 <= i < len(data) - 3:
        if idr(data[i + 3]):
            return True
        i = data.find(b"\0\0\1", i + 3)
    return False


def _reorders(p: Path, n: int = 48) -> bool:
    """True if the first ``n`` frames the decoder gives come out with timestamps out of
    order: the container's timestamps are the packets' decoding order (AVI has no other), and
    the frames of a codec with B-frames carry them reordered."""
    import av

    with contextlib.suppress(Exception), av.open(str(p), metadata_errors="replace") as c:
        got = [f.pts for f in itertools.islice(c.decode(c.streams.video[0]), n)]
        return any(b is None or a is None or b <= a for a, b in itertools.pairwise(got))
    return False


def _source_range(pix_fmt: str, r: int) -> int:
    """The AVColorRange a stream's samples are in: its own tag, except that a gray stream that
    says none is full range (2), as FFmpeg's converter and players read it; tagging its
    upscale limited would have them stretch its levels (black crushed, white blown)."""
    return 2 if r == 0 and pix_fmt.startswith(("gray", "ya")) else r


def _range(r: int) -> Any:
    """swscale's range for FFmpeg's AVColorRange ``r`` (2 full, anything else limited)."""
    from av.video.reformatter import ColorRange

    return ColorRange.JPEG if r == 2 else ColorRange.MPEG


def decode_rgb(meta: VideoMeta, start: int, stop: int) -> Iterator[tuple[int, int, np.ndarray]]:
    """The frames whose timestamps lie in ``[start, stop)``, in display order, as
    ``(pts, duration, rgb)``: ``rgb`` ``(H, W, 3)`` uint8 (8-bit sources) or uint16 (deeper
    ones), converted with the stream's matrix and range, turned upright.

    Decoding starts at the keyframe at or before ``start`` (a seek). FFmpeg seeks some
    containers (MPEG-TS) by decoding timestamp, inexactly, and can land past that keyframe; when
    the first frame decoded is later than the first frame ``meta.pts`` has at or after
    ``start``, the seek goes back one keyframe more (up to 4 times, then to the start of the
    file), so no frame is skipped.

    Raises:
        UpresError: the stream is damaged, naming the time where decoding failed, or no frame
            of the range could be decoded.
    """
    import bisect

    import av

    p = meta.path
    fmt = "rgb24" if meta.bits <= 8 else "rgb48le"
    k = (meta.rotation // 90) % 4
    i = bisect.bisect_left(meta.pts, start)
    want = meta.pts[i] if i < len(meta.pts) else None  # the first frame of the range
    if want is None or want >= stop:
        return
    keys = [t for t in meta.keyframes if t <= start]
    targets: list[int | None] = [t for t in reversed(keys)][:5]
    targets = [t if t > meta.pts[0] else None for t in targets]  # None: from the start
    if not targets or targets[-1] is not None:
        targets.append(None)
    pos = start
    for attempt, target in enumerate(targets):
        with av.open(str(p), metadata_errors="replace") as c:
            v = c.streams.video[0]
            v.thread_type = "AUTO"
            first, retry = True, False
            order = -1  # decode_order: the index in meta.pts of the frame last given
            try:
                if target is not None:
                    c.seek(target, stream=v, backward=True)
                for frame in c.decode(v):
                    t = frame.pts
                    if meta.decode_order:
                        # the keyframe a decode starts at comes out first with its own time;
                        # every frame after it takes the next display time (its own pts
                        # belongs to the packet decoded when it came out)
                        if order < 0:  # the keyframe sought (an IDR), or the first frame
                            if target is not None and t != target:
                                # the seek did not land on it: start again from the start
                                targets[attempt + 1:] = [None]
                                retry = True
                                break
                            order = 0 if target is None else bisect.bisect_left(meta.pts,
                                                                                target)
                        else:
                            order += 1
                        t = meta.pts[order] if order < len(meta.pts) else None
                    if t is None or t < start:
                        continue
                    if first:
                        first = False
                        if t > want and attempt < len(targets) - 1:
                            retry = True  # the seek landed past frames of the range
                            break
                    if t >= stop:
                        return
                    pos = t
                    rgb = frame.reformat(format=fmt, src_colorspace=meta.matrix,
                                         dst_colorspace=meta.matrix,
                                         src_color_range=_range(meta.color_range),
                                         dst_color_range=_range(2)).to_ndarray()
                    # a copy of our own: the array may share memory that FFmpeg reuses for the
                    # next frame while this one waits in a queue
                    rgb = np.array(np.rot90(rgb, k) if k else rgb, copy=True, order="C")
                    yield t, int(frame.duration or 0), rgb
            except UpresError:
                raise
            except Exception as exc:
                raise UpresError(f"{p}: damaged video at {meta.seconds(pos):.3f} s "
                                 f"({one_line(exc)})") from None
            if retry:
                continue  # back one keyframe more
            if first and attempt == len(targets) - 1:
                raise UpresError(f"{p}: no frame between {meta.seconds(start):.3f} s and "
                                 f"{meta.seconds(stop):.3f} s could be decoded (damaged "
                                 "video, or timestamps the decoder does not reproduce)")
            if not first:
                return


@dataclass(frozen=True)
class EncodeSettings:
    """How the video stream is encoded: FFmpeg ``encoder``, ``pix_fmt``, ``options`` (crf,
    preset, ...), and a one-line ``summary`` for the user."""

    encoder: str
    pix_fmt: str
    options: tuple[tuple[str, str], ...]
    summary: str
    codec_tag: str | None = None
    segment: str = "nut"


def _supported(container: str) -> set[str]:
    """The codecs FFmpeg's ``container`` muxer takes (empty if it cannot say)."""
    import av

    try:
        with av.open(os.devnull, "w", format=container) as out:
            return set(out.supported_codecs)
    except Exception:
        return set()


def _quiet_encoders() -> None:
    """SVT-AV1 logs its banner and settings to stderr unless its environment says otherwise
    (FFmpeg's log level does not reach it)."""
    os.environ.setdefault("SVT_LOG", "1")


def _muxes_video(container: str, encoder: str, pix_fmt: str) -> bool:
    """True if FFmpeg's ``container`` muxer writes a header for a stream of ``encoder`` (a
    throw-away muxer on the null device: codec lists say yes to pairs the muxer refuses)."""
    import av

    _quiet_encoders()
    try:
        with av.open(os.devnull, "w", format=container) as out:
            quiet = {"x265-params": "log-level=none"} if encoder == "libx265" else {}
            st = out.add_stream(encoder, rate=25, options=quiet)
            st.codec_context.width, st.codec_context.height = 64, 64
            st.codec_context.pix_fmt = pix_fmt
            st.codec_context.time_base = Fraction(1, 25)
            out.start_encoding()
        return True
    except Exception:
        return False


def _muxes_copy(container: str, stream: Any) -> bool:
    """True if FFmpeg's ``container`` muxer writes a header for a copy of ``stream``."""
    import av

    try:
        with av.open(os.devnull, "w", format=container) as out:
            out.add_stream_from_template(stream, opaque=True)
            out.start_encoding()
        return True
    except Exception:
        return False


def _nearest_format(wanted: str, bits: int, supported: list[str]) -> str:
    """``wanted`` if the encoder takes it, else the supported 4:2:0 format of the same depth,
    else the deepest one not above ``bits``."""
    if wanted in supported:
        return wanted
    by_depth = {8: "yuv420p", 10: "yuv420p10le", 12: "yuv420p12le"}
    for b in (bits, 10, 8):
        f = by_depth.get(b)
        if f in supported and b <= max(bits, 8):
            return f
    return supported[0]


def encode_settings(meta: VideoMeta, container: str, *, codec: str | None = None,
                    crf: int | None = None, preset: str | None = None,
                    pix_fmt: str | None = None) -> EncodeSettings:
    """The encoder for ``meta``'s upscaled stream in ``container`` (an FFmpeg muxer name).

    Defaults: H.264 CRF 18 preset veryfast for 8-bit sources, H.265 CRF 20 keeping the depth
    for deeper ones
    (VP9 CRF 24 in WebM); the source's pixel format where the encoder takes it (same chroma
    layout and depth), else 4:2:0 of the same depth.

    Raises:
        UpresError: an unknown codec or one this FFmpeg lacks, one the container's muxer
            refuses (``ffv1`` in MP4, ``vp9`` in MOV, ...), a ``crf`` out of the encoder's
            range or a ``preset`` it does not have.
    """
    import av

    if codec is None:
        codec = "vp9" if container == "webm" else ("h264" if meta.bits <= 8 else "h265")
    codec = codec.lower()
    if codec not in CODECS:
        raise UpresError(f"unknown --codec {codec!r}; choose {', '.join(sorted(CODECS))}")
    enc = CODECS[codec]
    if enc not in av.codecs_available:
        raise UpresError(f"--codec {codec}: this FFmpeg build has no {enc} encoder")
    supported = _supported(container)
    base = {"libx264": "h264", "libx265": "hevc", "libvpx-vp9": "vp9", "libsvtav1": "av1",
            "ffv1": "ffv1", "prores_ks": "prores"}[enc]
    formats = [f.name for f in av.Codec(enc, "w").video_formats]
    if (supported and base not in supported) or not _muxes_video(container, enc, formats[0]):
        raise UpresError(f"--codec {codec} cannot go into a {container} file; use .mkv "
                         "(or .mov for prores)")
    if pix_fmt is not None:
        if pix_fmt not in formats:
            raise UpresError(f"--pix-fmt {pix_fmt}: {enc} takes {', '.join(formats)}")
        fmt = pix_fmt
    elif enc == "prores_ks":
        fmt = "yuv444p10le" if "444" in meta.pix_fmt else "yuv422p10le"
    else:
        fmt = _nearest_format(meta.pix_fmt, meta.bits, formats)
    _check_quality(codec, enc, crf, preset)
    opts: dict[str, str] = {}
    what = enc
    if enc in _DEFAULT_CRF:
        q = _DEFAULT_CRF[enc] if crf is None else crf
        opts["crf"] = str(q)
        what += f" CRF {q}"
        if enc == "libvpx-vp9":
            opts.update({"b": "0", "row-mt": "1", "deadline": "good",
                         "cpu-used": preset or "2"})
        elif enc == "libsvtav1":
            opts["preset"] = preset or "8"
        else:
            # veryfast, not x264's medium: on this project's 2-core CPU medium took twice the
            # time per 1280x720 frame (36 against 18 ms), taken from the network, while at CRF
            # 18 its file was 7 % larger and 1.2 dB closer to the frames it was given (46.8
            # against 45.6 dB, both far above the visible); docs/benchmarks.md "video-speed".
            # x265 (deeper sources) gets the same choice, not measured separately
            opts["preset"] = preset or "veryfast"
        if enc in ("libx264", "libx265") or enc == "libsvtav1":
            what += f", preset {opts.get('preset')}"
        if enc == "libx265":
            opts["x265-params"] = "log-level=error"
            hdr = [f"master-display={meta.mastering}"] if meta.mastering else []
            hdr += [f"max-cll={meta.light_level}"] if meta.light_level else []
            if hdr:  # HDR10 static metadata, as the source's SEI had it
                opts["x265-params"] += ":" + ":".join(["hdr10=1", *hdr])
                what += ", HDR10 metadata kept"
        if enc == "libx264":
            # x264's macroblock tree made two encodes of the same frames differ (measured
            # here, even with one thread), and a resumed video must equal an uninterrupted
            # one; without it x264 is deterministic (x265, VP9 and SVT-AV1 are as they are)
            opts["x264-params"] = "mbtree=0"
            if _constant_rate(meta):  # the stream's timing info says the rate, not 1/time base
                opts["x264-params"] += ":force-cfr=1"
    elif enc == "ffv1":
        opts.update({"level": "3", "slicecrc": "1"})
        what += " (lossless)"
    elif enc == "prores_ks":
        opts["profile"] = "3"
        what += " HQ"
    tag = "hvc1" if enc == "libx265" and container in ("mp4", "mov") else None
    segment = "mov" if enc == "prores_ks" else "nut"  # NUT cannot hold ProRes
    return EncodeSettings(enc, fmt, tuple(sorted(opts.items())), f"{what}, {fmt}", tag,
                          segment)


def _constant_rate(meta: VideoMeta) -> bool:
    """True if every frame lasts exactly 1 / ``meta.rate``."""
    if not meta.rate or len(meta.pts) < 2:
        return False
    step = 1 / (meta.rate * meta.time_base)
    return step.denominator == 1 and all(b - a == step for a, b in
                                         itertools.pairwise(meta.pts))


def _check_quality(codec: str, enc: str, crf: int | None, preset: str | None) -> None:
    """Refuse a ``crf`` or ``preset`` that ``enc`` does not take, before any work."""
    if crf is not None:
        if enc not in _CRF_RANGE:
            raise UpresError(f"--crf applies to h264, h265, vp9 and av1, not {codec}")
        lo, hi = _CRF_RANGE[enc]
        if not lo <= crf <= hi:
            raise UpresError(f"--crf {crf}: {codec} takes {lo} to {hi}")
    if preset is not None:
        if enc not in _PRESETS:
            raise UpresError(f"--preset applies to h264, h265, vp9 and av1, not {codec}")
        if preset not in _PRESETS[enc]:
            what = {"libvpx-vp9": "cpu-used, ", "libsvtav1": "SVT-AV1's preset, "}.get(enc, "")
            choices = _PRESETS[enc]
            listed = ", ".join(choices) if len(choices) < 12 else f"{choices[0]} to {choices[-1]}"
            raise UpresError(f"--preset {preset}: {codec} takes {what}{listed}")


class SegmentEncoder:
    """Encodes the upscaled frames of one segment into ``path`` (``settings.segment``: NUT,
    which keeps any time base exactly, or MOV for ProRes, whose time scale is a multiple of
    the source's; video only), with the source's timestamps, colour tags and sample aspect
    ratio. :meth:`close` flushes the encoder and closes the file; the caller commits it by a
    rename."""

    def __init__(self, path: Path, meta: VideoMeta, width: int, height: int,
                 settings: EncodeSettings) -> None:
        import av

        self.meta, self.settings = meta, settings
        self.width, self.height = width, height
        # NUT keeps any time base exactly; negative decode times are not shifted (assemble
        # rebuilds those of the first packets)
        _quiet_encoders()
        self.out = av.open(str(path), "w", format=settings.segment,
                           options={"avoid_negative_ts": "disabled"})
        st = self.out.add_stream(settings.encoder, rate=meta.rate or Fraction(25),
                                 options=dict(settings.options))
        cc = st.codec_context
        cc.width, cc.height, cc.pix_fmt = width, height, settings.pix_fmt
        cc.time_base = meta.time_base
        st.time_base = meta.time_base
        _tag_colour(cc, meta)
        cc.thread_count = 0
        self.stream = st
        self._fmt = "rgb24"

    def encode(self, pts: int, duration: int, rgb: np.ndarray) -> None:
        """``rgb`` ``(H, W, 3)`` uint8 or uint16 (full range) at timestamp ``pts``."""
        import av

        fmt = "rgb24" if rgb.dtype == np.uint8 else "rgb48le"
        frame = av.VideoFrame.from_ndarray(rgb, format=fmt)
        m = self.meta
        out = frame.reformat(format=self.settings.pix_fmt, src_colorspace=m.matrix,
                             dst_colorspace=m.matrix, src_color_range=_range(2),
                             dst_color_range=_range(m.color_range))
        out.pts = pts
        out.time_base = m.time_base
        if duration:
            out.duration = duration
        for pkt in self.stream.encode(out):
            self.out.mux(pkt)

    def close(self) -> None:
        for pkt in self.stream.encode(None):
            self.out.mux(pkt)
        self.out.close()

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.out.close()


def _tag_colour(cc: Any, meta: VideoMeta) -> None:
    """Give the codec context ``cc`` the source's colour tags and sample aspect ratio (the
    container carries them for codecs whose bitstream does not: FFV1, VP9, ProRes)."""
    cc.color_range = 2 if meta.color_range == 2 else 1
    cc.colorspace = _matrix_number(meta.matrix, meta.colorspace)
    cc.color_primaries = meta.color_primaries
    cc.color_trc = meta.color_trc
    if meta.sar is not None:
        cc.sample_aspect_ratio = meta.sar


def _matrix_number(matrix: str, original: int) -> int:
    if original != 2:
        return original
    return {"ITU709": 1, "ITU601": 6}.get(matrix, 2)


#: Container metadata that describes the input file's own muxing, not its content.
_CONTAINER_OWN = ("encoder", "major_brand", "minor_version", "compatible_brands")
_AUDIO_TARGET = {"mp4": "aac", "mov": "aac", "webm": "libopus", "matroska": "aac"}
#: FFmpeg's default layout by channel count, for sources whose layout has no channel order.
_DEFAULT_LAYOUT = {1: "mono", 2: "stereo", 3: "2.1", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1",
                   8: "7.1"}
#: Text subtitles a container cannot hold are rewritten into its own text format.
_SUB_TARGET = {"mp4": "mov_text", "mov": "mov_text", "webm": "webvtt", "matroska": "subrip"}
_TEXT_SUBS = ("subrip", "srt", "text", "webvtt", "mov_text", "ass", "ssa")
#: The ASS header FFmpeg's text subtitle encoders open with (one default style); they take no
#: styling from it that upres keeps, but refuse to open without one.
_ASS_HEADER = (b"[Script Info]\r\nScriptType: v4.00+\r\n\r\n[V4+ Styles]\r\n"
               b"Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour,"
               b" BackColour, Bold, Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle,"
               b" BorderStyle, Outline, Shadow, Alignment, MarginL, MarginR, MarginV, Encoding"
               b"\r\nStyle: Default,Serif,18,&Hffffff,&Hffffff,&H0,&H0,0,0,0,0,100,100,0,0,1,1,0,"
               b"2,10,10,10,0\r\n\r\n[Events]\r\nFormat: Layer, Start, End, Style, Name, "
               b"MarginL, MarginR, MarginV, Effect, Text\r\n")


def subtitle_text(codec: str, payload: bytes) -> str:
    """The plain text of one subtitle packet of a text ``codec`` (SubRip, WebVTT, mov_text,
    ASS/SSA as Matroska stores them): markup and ASS override blocks removed, line breaks as
    newlines."""
    if codec == "mov_text":
        n = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 0
        text = payload[2:2 + n].decode("utf-8", "replace")
    else:
        text = payload.decode("utf-8", "replace")
    if codec in ("ass", "ssa"):
        parts = text.split(",", 8)  # ReadOrder, Layer, Style, Name, margins x3, Effect, Text
        text = parts[8] if len(parts) == 9 else parts[-1]
        text = re.sub(r"\{[^}]*\}", "", text)
        text = text.replace("\\N", "\n").replace("\\n", "\n").replace("\\h", " ")
    text = re.sub(r"</?[A-Za-z][^>]*>", "", text)  # <i>, <font color=...>, WebVTT's tags
    return text.replace("\r\n", "\n").strip("\n")


def _subtitle_payload(target: str, text: str) -> bytes:
    data = text.encode("utf-8")
    if target == "mov_text":  # a 16-bit length, then the UTF-8 text (3GPP TS 26.245)
        data = len(data[:65535]).to_bytes(2, "big") + data[:65535]
    return data


def check_streams(meta: VideoMeta, dst: Path, container: str, settings: EncodeSettings,
                  width: int, height: int) -> None:
    """Open a throw-away ``container`` muxer on the null device with the video encoder and
    every other stream as :func:`assemble` will add them, write its header, one packet of
    each copied audio stream found early in the file and the trailer, so what the muxer or
    an encoder refuses is said before the upscale, not after it.

    Raises:
        UpresError: one line naming ``dst`` and what FFmpeg refused.
    """
    import av

    _quiet_encoders()
    with av.open(str(meta.path), metadata_errors="replace") as inp:
        out = av.open(os.devnull, "w", format=container)
        try:
            st = out.add_stream(settings.encoder, rate=meta.rate or Fraction(25),
                                options=dict(settings.options))
            cc = st.codec_context
            cc.width, cc.height, cc.pix_fmt = width, height, settings.pix_fmt
            cc.time_base = meta.time_base
            copies, _, _ = _add_streams(inp, out, meta, container, lambda _: None)
            out.start_encoding()
            # one packet of each copied audio stream, and the trailer: MP4 writes its index
            # there, and refuses some streams (PCM without channel order) only then; the first
            # 500 packets of the file at most are read, whatever streams they belong to (a
            # stream that starts later is not looked for through a film's length)
            audio = {i: so for i, so in copies.items() if inp.streams[i].type == "audio"}
            if audio:
                for pkt in itertools.islice(inp.demux(), 500):
                    so = audio.pop(pkt.stream.index, None) if pkt.size else None
                    if so is not None:
                        pkt.pts = pkt.dts = 0
                        pkt.stream = so
                        out.mux(pkt)
                    if not audio:
                        break
            out.close()
        except Exception as exc:
            raise UpresError(f"{dst}: a {container} file cannot be written with these streams "
                             f"({one_line(exc)})") from None
        finally:
            with contextlib.suppress(Exception):
                out.close()


def assemble(meta: VideoMeta, segments: list[Path], dst_tmp: Path, container: str, *,
             start: int, stop: int, settings: EncodeSettings,
             note: Callable[[str], None]) -> None:
    """Mux the segments' video packets (in order) with the input's other streams into
    ``dst_tmp``: each stream copied packet for packet if ``container`` takes its codec,
    else re-encoded (audio to AAC / Opus, PCM in MP4 too; text subtitles rewritten as
    mov_text in MP4/MOV and WebVTT in WebM, plain text without styling) or dropped (bitmap
    subtitles a container cannot hold: keep them with .mkv), said through ``note``. Container
    and stream metadata and chapters are copied; everything in ``[start, stop)`` (the video
    stream's time base) is kept and shifted to begin at 0 when ``start`` is not the first
    frame."""
    import av

    shift_s = 0.0 if start == meta.pts[0] else meta.seconds(start)
    end_s = meta.seconds(stop)
    inp = av.open(str(meta.path), metadata_errors="replace")
    seg_ins = [av.open(str(s)) for s in segments]
    out = av.open(str(dst_tmp), "w", format=container)
    try:
        out.metadata.update({k: v for k, v in meta.metadata if k not in _CONTAINER_OWN})
        vtemplate = seg_ins[0].streams.video[0]
        # opaque: the segment's codec parameters as they are (its decoder, e.g. libdav1d,
        # is no encoder to open)
        vout = out.add_stream_from_template(vtemplate, opaque=True)
        vout.time_base = meta.time_base
        if meta.rate:  # the frame rate containers declare (Matroska's default duration)
            vout.codec_context.framerate = meta.rate
        if settings.codec_tag:
            vout.codec_context.codec_tag = settings.codec_tag
        _tag_colour(vout.codec_context, meta)
        vout.disposition = inp.streams[meta.index].disposition
        vout.metadata.update({k: v for k, v in meta.video_metadata
                              if k in ("language", "title", "handler_name")})
        copies, recodes, texts = _add_streams(inp, out, meta, container, note)
        with contextlib.suppress(Exception):
            if meta.chapters:
                out.set_chapters(_shift_chapters(meta.chapters, shift_s, end_s))
        _interleave(inp, seg_ins, out, vout, copies, recodes, meta, shift_s, end_s, start, stop,
                    texts)
    finally:
        for s in seg_ins:
            s.close()
        inp.close()
        out.close()


def _add_streams(inp: Any, out: Any, meta: VideoMeta, container: str,
                 note: Callable[[str], None]
                 ) -> tuple[dict[int, Any], dict[int, tuple[Any, Any, Any]],
                            dict[int, tuple[Any, str, str]]]:
    """Add ``inp``'s streams but the video to ``out``: ``copies`` (index -> output stream),
    ``recodes`` (index -> (input stream, output stream, resampler)) and ``texts`` (index ->
    (output stream, source codec, target codec)); what is dropped or re-encoded is said
    through ``note``."""
    import av

    supported = out.supported_codecs
    copies: dict[int, Any] = {}
    recodes: dict[int, tuple[Any, Any, Any]] = {}
    texts: dict[int, tuple[Any, str, str]] = {}  # index -> (stream, source codec, target)
    for info in meta.streams:
        s_in = inp.streams[info.index]
        md = dict(info.metadata)
        if info.kind in ("audio", "subtitle", "data", "attachment") and \
                _takes(supported, info.codec) and \
                not (info.kind == "audio" and _recoded_audio(container, info.codec)) and \
                (info.kind not in ("audio", "subtitle") or _muxes_copy(container, s_in)):
            try:
                so = out.add_stream_from_template(s_in)
            except Exception as exc:
                note(f"stream {info.index} ({info.kind}, {info.codec}) dropped: the "
                     f"{container} file refused it ({one_line(exc)})")
                continue
            so.metadata.update(md)
            so.disposition = s_in.disposition
            copies[info.index] = so
            continue
        if info.kind == "subtitle" and info.codec in _TEXT_SUBS and container in _SUB_TARGET:
            target = _SUB_TARGET[container]
            so = out.add_stream(target)  # the encoder makes the sample description
            so.codec_context.time_base = s_in.time_base
            so.codec_context.subtitle_header = _ASS_HEADER
            so.metadata.update(md)
            so.disposition = s_in.disposition
            texts[info.index] = (so, info.codec, target)
            note(f"subtitle stream {info.index} ({info.codec}) rewritten as {target}, "
                 f"plain text: a {container} file cannot hold {info.codec}")
            continue
        if info.kind == "data" and info.codec == "unknown" and meta.chapters:
            continue  # MP4's chapter track: the chapters are written as the container's
        target = _AUDIO_TARGET.get(container) if info.kind == "audio" else None
        if target:
            so = out.add_stream(target, rate=_audio_rate(target, s_in))
            so.layout = _layout(s_in.codec_context.layout)
            so.metadata.update(md)
            so.disposition = s_in.disposition
            res = av.AudioResampler(format=so.codec_context.format, layout=so.layout,
                                    rate=so.codec_context.sample_rate)
            recodes[info.index] = (s_in, so, res)
            why = (f"PCM in a {container} file plays in few players"
                   + ("" if info.codec in ("pcm_bluray", "pcm_dvd") else
                      " (.mov or .mkv keep it lossless)")
                   if _recoded_audio(container, info.codec) else
                   f"a {container} file cannot hold {info.codec}")
            note(f"audio stream {info.index} ({info.codec}) re-encoded to {target}: {why}")
        else:
            note(f"stream {info.index} ({info.kind}, {info.codec}) dropped: a {container} "
                 f"file cannot hold it" + ("" if info.kind != "subtitle" or
                                           container == "matroska" else
                                           " (use .mkv to keep it)"))
    return copies, recodes, texts


def _recoded_audio(container: str, codec: str) -> bool:
    """True for audio ``container``'s muxer takes but is re-encoded all the same: PCM in MP4
    (ISO 23003-5 ``ipcm``, which few players read; FFmpeg's muxer refuses a layout without
    channel order, as Matroska, AVI and WAV give, only when it writes the index at the very
    end, after every frame was upscaled). MOV holds PCM natively and keeps it."""
    return container == "mp4" and codec.startswith("pcm_")


def _takes(supported: set[str], codec: str) -> bool:
    alias = {"mp3float": "mp3", "aac_fixed": "aac", "ac3_fixed": "ac3",
             "libopus": "opus", "libvorbis": "vorbis", "libdav1d": "av1"}
    return alias.get(codec, codec) in supported


def _layout(layout: Any) -> Any:
    """``layout``, or the default one of its channel count when it has no channel order (WMA
    in ASF says only "2 channels", which encoders refuse)."""
    if all(ch.name != "NONE" for ch in layout.channels):
        return layout
    return _DEFAULT_LAYOUT.get(layout.nb_channels, layout)


def _audio_rate(target: str, s_in: Any) -> int:
    rate = s_in.codec_context.sample_rate or 48000
    if target == "libopus" and rate not in (48000, 24000, 16000, 12000, 8000):
        return 48000
    return rate


def _shift_chapters(chapters: tuple[dict, ...], shift: float, end: float) -> list[dict]:
    out = []
    for ch in chapters:
        tb = ch.get("time_base") or Fraction(1, 1000)
        a, b = float(ch["start"] * tb), float(ch["end"] * tb)
        if b <= shift or a >= end:
            continue
        c = dict(ch)
        c["start"] = round((max(a, shift) - shift) / tb)
        c["end"] = round((min(b, end) - shift) / tb)
        out.append(c)
    return out


def _interleave(inp: Any, seg_ins: list[Any], out: Any, vout: Any, copies: dict[int, Any],
                recodes: dict[int, tuple[Any, Any, Any]], meta: VideoMeta, shift_s: float,
                end_s: float, start_pts: int, stop_pts: int,
                texts: dict[int, tuple[Any, str, str]] | None = None) -> None:
    """Write every packet in order of time: the segments' video packets one after another,
    and the input's other streams' packets (copied, rewritten text subtitles, or decoded and
    re-encoded) merged in."""
    import av

    texts = texts or {}
    vshift = round(shift_s / meta.time_base) if shift_s else 0

    whole = start_pts == meta.pts[0] and stop_pts == meta.end  # everything, priming included
    frame_pts = [p for p in meta.pts if start_pts <= p < stop_pts]
    durations = {p: (frame_pts[i + 1] if i + 1 < len(frame_pts) else stop_pts) - p
                 for i, p in enumerate(frame_pts)}

    def video_packets() -> Iterator[tuple[float, Any, Any]]:
        """The segments' packets with the source's timestamps and frame durations. A
        segment file keeps the encoder's timestamps except the negative decode times of its
        first packets (B-frame delay); those are rebuilt from the segment's first frame
        times, so the output starts at the first frame's time as the source did."""
        last_dts = None
        for c in seg_ins:
            pkts = [q for q in c.demux(c.streams.video[0]) if q.pts is not None]
            for q in pkts:  # NUT keeps a finer multiple of the time base: back to the source's
                ratio = Fraction(q.time_base) / meta.time_base
                q.pts = round(q.pts * ratio)
                q.dts = None if q.dts is None else round(q.dts * ratio)
                q.time_base = meta.time_base
            seg = sorted(q.pts for q in pkts)
            lead = 0
            while lead < len(pkts) and pkts[lead].dts is None:
                lead += 1
            step = (seg[1] - seg[0]) if len(seg) > 1 else max(1, durations.get(seg[0], 1))
            for k, pkt in enumerate(pkts):
                dts = pkt.dts if k >= lead else seg[0] - (lead - k) * step
                if last_dts is not None and dts <= last_dts:
                    dts = last_dts + 1  # segments meet: keep decode times increasing
                dts = min(dts, pkt.pts)
                last_dts = dts
                pkt.duration = durations.get(pkt.pts, pkt.duration)
                pkt.pts, pkt.dts = pkt.pts - vshift, dts - vshift
                pkt.stream = vout
                yield float(pkt.dts * meta.time_base), pkt, None

    def other_packets() -> Iterator[tuple[float, Any, Any]]:
        wanted = [inp.streams[i] for i in (*copies, *recodes, *texts)]
        if not wanted:
            return
        for pkt in inp.demux(wanted):
            i = pkt.stream.index
            if pkt.dts is None and pkt.pts is None:
                if i in recodes:  # the end: flush the decoder and encoder
                    yield float("inf"), pkt, "flush"
                continue
            tb = pkt.time_base
            t = float((pkt.pts if pkt.pts is not None else pkt.dts) * tb)
            if not whole and (t < shift_s - 1e-9 or t >= end_s - 1e-9):
                continue  # a piece: what starts inside it (audio to within one packet)
            if i in texts:
                so, codec, target = texts[i]
                off = round(shift_s / tb) if shift_s else 0
                text = subtitle_text(codec, bytes(pkt))
                if not text:  # mov_text's gap samples: no cue
                    continue
                new = av.Packet(_subtitle_payload(target, text))
                new.pts = None if pkt.pts is None else pkt.pts - off
                new.dts = new.pts if pkt.dts is None else pkt.dts - off
                new.duration, new.time_base, new.stream = pkt.duration, tb, so
                new.is_keyframe = True
                yield float((new.dts if new.dts is not None else new.pts) * tb), new, None
                continue
            if i in copies:
                off = round(shift_s / tb) if shift_s else 0
                if pkt.pts is not None:
                    pkt.pts -= off
                if pkt.dts is not None:
                    pkt.dts -= off
                pkt.stream = copies[i]
                yield float((pkt.dts if pkt.dts is not None else pkt.pts) * tb), pkt, None
            else:
                yield t - shift_s, pkt, "recode"

    import heapq

    merged = heapq.merge(video_packets(), other_packets(), key=lambda x: x[0])
    for _, pkt, how in merged:
        if how is None:
            out.mux(pkt)
            continue
        s_in, so, res = recodes[pkt.stream.index]
        frames = s_in.decode(pkt) if how == "recode" else s_in.decode(None)
        for fr in frames:
            if fr.pts is not None and shift_s:
                fr.pts -= round(shift_s / fr.time_base)
            for rf in res.resample(fr):
                for op in so.encode(rf):
                    out.mux(op)
    for _, so, res in recodes.values():
        for rf in res.resample(None):
            for op in so.encode(rf):
                out.mux(op)
        for op in so.encode(None):
            out.mux(op)
