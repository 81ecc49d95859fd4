"""Videos through the network: resumable, segment by segment, decoding and encoding beside it.

The path: :func:`~upres.formats.video.probe` (timestamps, keyframes, colour, streams) ->
segments cut at keyframes -> per segment, three threads joined by small queues: decoding to
RGB (:func:`~upres.formats.video.decode_rgb`), the network (``Upscaler.upscale``, one frame at
a time), encoding (:class:`~upres.formats.video.SegmentEncoder`) -> every segment committed by
a rename in a work folder beside the output -> :func:`~upres.formats.video.assemble` muxes the
segments with the input's other streams into a temporary file, renamed to the output when
complete.

Resume: the work folder ``.NAME.upres/`` holds ``job.json`` (what the job is: the input's
path, size, modification time and video stream, the model and a hash of its weights, scale,
tiling, precision, encoder; a hash of it) and ``seg-A-B.nut`` (``.mov`` for ProRes) for each
finished segment (frames with timestamps in ``[A, B)``). Run the same command again after a
crash, Ctrl-C or SIGKILL and only the missing segments are made; the finished ones are used as
they are, so the result is the same as an uninterrupted run's. A different job for the same
output (or a changed input) starts over; a run that fails before any segment is finished
removes its work folder. A damaged input (read errors, or a file that ends before the
duration it declares) is processed up to the damage, then the run stops with one line naming
the time; its segments stay for a run on the repaired file.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import queue
import shutil
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from upres.errors import UpresError
from upres.formats.files import check_writable, commit, default_mode, sweep_stale, temp_path
from upres.formats.video import (
    CONTAINERS,
    EncodeSettings,
    SegmentEncoder,
    VideoMeta,
    assemble,
    check_streams,
    decode_rgb,
    encode_settings,
    probe,
)

__all__ = ["VideoJob", "plan_segments", "select_range", "upscale_video"]

_SEGMENT_SECONDS = 5.0  # a segment spans at least this much, from keyframe to keyframe


def select_range(meta: VideoMeta, *, frames: tuple[int | None, int | None] | None = None,
                 start: float | None = None, duration: float | None = None
                 ) -> tuple[int, int]:
    """``[start, stop)`` in the video stream's time base: frames ``A:B`` (display order,
    from 0, ``B`` excluded) or ``start``/``duration`` in seconds; the whole video by default.

    Raises:
        UpresError: a range that holds no frame.
    """
    pts = meta.pts
    lo, hi = pts[0], meta.end
    if frames is not None:
        a, b = frames
        a = 0 if a is None else a
        if a < 0 or a >= min(len(pts), len(pts) if b is None else b):
            raise UpresError(f"--frames {a}:{'' if b is None else b}: no frame in that range "
                             f"(the video has {len(pts)} frames)")
        b = len(pts) if b is None else min(b, len(pts))
        lo, hi = pts[a], (pts[b] if b < len(pts) else meta.end)
    if start is not None or duration is not None:
        t0 = pts[0] + round((start or 0.0) / meta.time_base)
        lo = max(lo, t0)
        if duration is not None:
            hi = min(hi, t0 + round(duration / meta.time_base))
    inside = [p for p in pts if lo <= p < hi]
    if not inside:
        raise UpresError(f"{meta.path}: the chosen range holds no frame")
    return inside[0], hi


def plan_segments(meta: VideoMeta, start: int, stop: int,
                  seconds: float = _SEGMENT_SECONDS) -> list[tuple[int, int]]:
    """``[(a, b), ...]`` covering ``[start, stop)``, cut only at keyframes, each at least
    ``seconds`` long but the last."""
    cuts = [start]
    for k in meta.keyframes:
        if start < k < stop and meta.seconds(k - cuts[-1]) >= seconds:
            cuts.append(k)
    if len(cuts) > 1 and meta.seconds(stop - cuts[-1]) < seconds / 2:
        cuts.pop()  # a short tail joins the segment before it
    cuts.append(stop)
    return list(itertools.pairwise(cuts))


@dataclass(frozen=True)
class VideoJob:
    """Everything that decides the output's bytes; its ``key`` names the work folder's job."""

    src: str
    src_stat: str
    stream: str
    model: str
    weights: str
    scale: int
    tile: int | None
    tile_overlap: int
    precision: str
    settings: tuple
    denoise: str = ""

    @property
    def key(self) -> str:
        blob = json.dumps(self.__dict__, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _weights_id(up: Any) -> str:
    """What identifies the network's weights: a hash of its state dict (cheap for these
    models), or the interpolator's name."""
    model = getattr(up, "float_model", None) or getattr(up, "model", None)
    if model is None:
        return getattr(up, "name", "")
    from upres.models.weights import state_sha256

    return state_sha256(model)[:16]


def _even(rgb: np.ndarray, w: int, h: int) -> np.ndarray:
    """Pad ``rgb`` by repeating its last column/row up to ``w x h``."""
    ph, pw = h - rgb.shape[0], w - rgb.shape[1]
    if ph or pw:
        rgb = np.pad(rgb, ((0, ph), (0, pw), (0, 0)), mode="edge")
    return rgb


#: frames a photo model's automatic clean-up strength is measured on, spread over the clip
STRENGTH_FRAMES = 5


def clip_strength(up: Any, meta: Any, lo: int, hi: int,
                  samples: int = STRENGTH_FRAMES) -> tuple[float, int]:
    """The clean-up strength for every frame of ``[lo, hi)`` (timestamps) and how many frames
    gave it: the median of ``up.choose`` over up to ``samples`` frames spread evenly over the
    range, first and last included. One frame is a poor sample: on a real clip of soft footage
    (`cockatoo.mp4`, clean x4 LR) ``photo-x4``'s strengths for single frames ran from 0 to
    0.53. A sample after the first that cannot be decoded is skipped (the damage is reported
    where the upscale reaches it, the segments before it kept)."""
    import bisect

    i0, i1 = bisect.bisect_left(meta.pts, lo), bisect.bisect_left(meta.pts, hi)
    picks = sorted({int(i) for i in np.linspace(i0, max(i0, i1 - 1), max(1, min(samples,
                                                                          i1 - i0))).round()})
    reads: list[float] = []
    for k, i in enumerate(picks):
        try:
            frame = next(decode_rgb(meta, meta.pts[i], hi))[2]
        except (UpresError, StopIteration):
            if k == 0:
                raise
            continue
        reads.append(float(up.choose(frame)))
    return float(np.median(reads)), len(reads)


def upscale_video(up: Any, src: str | os.PathLike[str], dst: str | os.PathLike[str], *,
                  codec: str | None = None, crf: int | None = None, preset: str | None = None,
                  pix_fmt: str | None = None,
                  frames: tuple[int | None, int | None] | None = None,
                  start: float | None = None, duration: float | None = None,
                  tile: int | None = None, tile_overlap: int = 16, overwrite: bool = False,
                  max_pixels: int | None = None, progress: bool = False,
                  say: Callable[[str], None] | None = None,
                  segment_seconds: float = _SEGMENT_SECONDS) -> Path:
    """Upscale the video ``src`` with ``up`` (from :func:`upres.load`) into ``dst``, whose
    suffix picks the container (.mp4, .m4v, .mkv, .mov, .webm).

    Frames keep their own timestamps (variable frame rate stays variable), colour tags and
    depth (10/12-bit sources reach the network as 16-bit RGB and are encoded at their depth);
    rotated streams are upscaled upright (the rotation is applied, not copied); audio,
    subtitle and data streams, metadata and chapters are copied (see
    :func:`~upres.formats.video.assemble`). ``frames=(A, B)`` or ``start``/``duration``
    (seconds) take a piece. ``say`` receives the one-line notes (encoder chosen, streams
    re-encoded or dropped, padding). Resumable: see the module docstring.

    Raises:
        UpresError: one line: the input is not a video or is damaged (the finished segments
            are kept for a resume), the output exists, the codec does not fit the container.
    """
    say = say or (lambda m: print(f"upres: {m}", file=sys.stderr))
    src, dst = Path(src), Path(dst)
    container = CONTAINERS.get(dst.suffix.lower())
    if container is None:
        raise UpresError(f"{dst}: unknown video container {dst.suffix!r}; use "
                         f"{', '.join(sorted(CONTAINERS))}")
    check_writable(dst, overwrite)
    meta = probe(src, max_pixels=max_pixels)
    s = int(up.scale)
    lo, hi = select_range(meta, frames=frames, start=start, duration=duration)
    settings = encode_settings(meta, container, codec=codec, crf=crf, preset=preset,
                               pix_fmt=pix_fmt)
    w, h = meta.width * s, meta.height * s
    ew, eh = _encoder_size(settings.pix_fmt, w, h)
    check_streams(meta, dst, container, settings, ew, eh)
    segments = plan_segments(meta, lo, hi, segment_seconds)
    kw: dict[str, Any] = {}
    if getattr(up, "denoise", None) == "auto" and hasattr(up, "choose"):
        # one strength for the whole video (per-frame choices could flicker)
        t, n = clip_strength(up, meta, lo, hi)
        kw = {"denoise": t}
        say(f"{up.name}: clean-up strength {t:.2f} for every frame (the median of its "
            f"readings on {n} frames across the clip)")
    st = src.stat()
    job = VideoJob(src=str(src.resolve()), src_stat=f"{st.st_size} {st.st_mtime_ns}",
                   stream=f"{meta.codec} {meta.width}x{meta.height} {meta.pix_fmt} "
                          f"{meta.time_base} {meta.rotation} {meta.matrix}",
                   model=str(getattr(up, "name", "")),
                   weights=_weights_id(up), scale=s, tile=tile, tile_overlap=tile_overlap,
                   precision=str(getattr(up, "precision", "")),
                   settings=(settings.encoder, settings.pix_fmt, settings.options),
                   denoise=str(kw.get("denoise", getattr(up, "denoise", ""))))
    work = dst.with_name(f".{dst.name}.upres")
    done = _open_work(work, job, say, settings.segment)
    n_frames = sum(1 for p in meta.pts if lo <= p < hi)
    say(f"{src.name}: {n_frames} frames, {meta.width}x{meta.height} -> {ew}x{eh}, "
        f"{settings.summary}, {len(segments)} segment(s)"
        + (f", {len(done)} already done (resuming)" if done else ""))
    if (ew, eh) != (w, h):
        say(f"{ew}x{eh}: {settings.pix_fmt} needs even sizes, so the last column/row of the "
            f"{w}x{h} frames is repeated")
    if meta.rotation:
        say(f"the stream is shown rotated by {meta.rotation} degrees: frames are upscaled "
            "upright and written without a rotation tag")
    if (meta.mastering or meta.light_level) and settings.encoder != "libx265":
        say(f"{src.name} carries HDR10 mastering metadata, which {settings.encoder} is not "
            "given: the output plays without it (use --codec h265 to keep it)")
    depth = _format_bits(settings.pix_fmt)
    if pix_fmt is None and depth < meta.bits:
        say(f"{src.name} is {meta.bits}-bit, but {settings.encoder} here takes at most "
            f"{depth} bits: the output is {depth}-bit and may show banding (use .mkv or .mp4, "
            "where H.265 keeps the depth)")
    if meta.sar and meta.sar != 1 and container in ("matroska", "webm") and \
            settings.encoder not in ("libx264", "libx265"):
        say(f"{src.name} has non-square pixels ({meta.sar.numerator}:{meta.sar.denominator}), "
            f"which upres can give a {container} file only in an H.264/H.265 bitstream: the "
            f"{settings.encoder} stream's header says square pixels (use .mp4 or --codec "
            "h264 to keep them)")
    if meta.interlaced:
        say(f"{src.name} is interlaced: each frame's two fields are upscaled together and "
            "written as progressive frames, so motion shows combing; deinterlace it first "
            "(e.g. ffmpeg -vf bwdif) for clean motion")
    todo = [i for i, seg in enumerate(segments) if seg not in done]
    remaining = sum(1 for i in todo for p in meta.pts if segments[i][0] <= p < segments[i][1])
    from tqdm import tqdm

    bar = tqdm(total=remaining, unit="frame", disable=not progress, dynamic_ncols=True,
               file=sys.stderr, leave=False)
    try:
        _run_segments(up, meta, segments, todo, work, settings, (ew, eh), tile, tile_overlap,
                      bar, kw)
    except BaseException as exc:
        bar.close()
        n = len(list(work.glob(f"seg-*[0-9].{settings.segment}")))
        if not n:
            shutil.rmtree(work, ignore_errors=True)  # nothing to resume from
        elif isinstance(exc, KeyboardInterrupt):
            say(f"interrupted: {n} finished segment(s) kept in {work}; run the same command "
                "again to resume from them")
        raise
    finally:
        bar.close()
    if meta.damaged_at is not None:
        raise UpresError(f"{src}: damaged video at {meta.damaged_at:.3f} s (the file ends or "
                         f"fails there); the frames before it are done and kept in {work} for a "
                         "run on a repaired file")
    seg_files = [_seg_file(work, seg, suffix=settings.segment) for seg in segments]
    sweep_stale(dst.parent, dst.name)
    tmp = temp_path(dst, dst.suffix)
    try:
        assemble(meta, seg_files, tmp, container, start=lo, stop=hi, settings=settings,
                 note=say)
        os.chmod(tmp, default_mode())
        commit(tmp, dst, overwrite=overwrite)
    except UpresError:
        raise
    except Exception as exc:
        raise UpresError(f"{dst}: cannot write the video ({' '.join(str(exc).split())})") \
            from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    shutil.rmtree(work, ignore_errors=True)
    return dst


def _format_bits(pix_fmt: str) -> int:
    import av

    return max(c.bits for c in av.VideoFormat(pix_fmt).components)


def _encoder_size(pix_fmt: str, w: int, h: int) -> tuple[int, int]:
    """The frame size the encoder takes: even width for 4:2:x, even height for 4:2:0."""
    import av

    f = av.VideoFormat(pix_fmt)
    cw = 2 if f.name.startswith(("yuv420", "yuvj420", "yuv422", "yuvj422", "nv")) else 1
    ch = 2 if f.name.startswith(("yuv420", "yuvj420", "nv12", "nv21")) else 1
    return -(-w // cw) * cw, -(-h // ch) * ch


def _seg_file(work: Path, seg: tuple[int, int], part: bool = False,
              suffix: str = "nut") -> Path:
    return work / f"seg-{seg[0]}-{seg[1]}{'.part' if part else ''}.{suffix}"


def _open_work(work: Path, job: VideoJob, say: Callable[[str], None],
               suffix: str = "nut") -> set[tuple[int, int]]:
    """The work folder for ``job``: its finished segments ``(A, B)`` (a folder of another job
    is cleared first; temporaries of killed runs are removed)."""
    meta_file = work / "job.json"
    if work.is_dir():
        try:
            saved = json.loads(meta_file.read_text())
        except (OSError, ValueError):
            saved = {}
        if saved.get("key") != job.key:
            was = saved.get("job") or {}
            if was.get("src") == job.src and was.get("src_stat") != job.src_stat:
                say(f"{work}: {job.src} changed (size or time) since its work was saved; "
                    "starting over")
            else:
                say(f"{work}: holds the work of another job (other input, model or "
                    "settings); starting over")
            shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    for f in work.glob("*.part*"):
        with contextlib.suppress(OSError):
            f.unlink()
    if not meta_file.exists():
        tmp = work / "job.json.part"
        tmp.write_text(json.dumps({"key": job.key, "job": job.__dict__}, default=str,
                                  indent=1))
        os.replace(tmp, meta_file)
    done = set()
    for f in work.glob(f"seg-*.{suffix}"):
        parts = f.stem.split("-")
        with contextlib.suppress(ValueError, IndexError):
            done.add((int(parts[1]), int(parts[2])))
    return done


_END = object()


def _run_segments(up: Any, meta: VideoMeta, segments: list[tuple[int, int]], todo: list[int],
                  work: Path, settings: EncodeSettings, size: tuple[int, int],
                  tile: int | None, tile_overlap: int, bar: Any,
                  kw: dict[str, Any] | None = None) -> None:
    """Decode, upscale and encode the segments ``todo``, committing each by a rename.

    Decoding and encoding run in threads of their own beside the network (FFmpeg releases
    the GIL), joined by queues of a few frames, so memory does not grow with the video."""
    if not todo:
        return
    q_in: queue.Queue = queue.Queue(maxsize=6)
    q_out: queue.Queue = queue.Queue(maxsize=6)
    stop = threading.Event()
    errors: list[BaseException] = []

    def put(q: queue.Queue, item: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def decoder() -> None:
        try:
            for i in todo:
                a, b = segments[i]
                if not put(q_in, ("start", i)):
                    return
                for item in decode_rgb(meta, a, b):
                    if not put(q_in, item):
                        return
                if not put(q_in, ("end", i)):
                    return
        except BaseException as exc:  # handed to the main thread
            errors.append(exc)
            stop.set()
        finally:
            # waits as long as the network needs to free a slot (one frame of a large video
            # can take longer than any fixed timeout; a lost end mark hung the run for good)
            put(q_in, _END)

    def encoder() -> None:
        enc: SegmentEncoder | None = None
        part: Path | None = None
        try:
            while True:
                try:
                    item = q_out.get(timeout=0.2)
                except queue.Empty:
                    if stop.is_set():
                        return
                    continue
                if item is _END:
                    return
                if isinstance(item[0], str):
                    what, i = item
                    final = _seg_file(work, segments[i], suffix=settings.segment)
                    if what == "start":
                        part = _seg_file(work, segments[i], part=True,
                                         suffix=settings.segment)
                        enc = SegmentEncoder(part, meta, size[0], size[1], settings)
                    else:
                        assert enc is not None and part is not None
                        enc.close()
                        enc = None
                        os.replace(part, final)  # committed
                    continue
                pts, dur, rgb = item
                assert enc is not None
                enc.encode(pts, dur, rgb)
        except BaseException as exc:
            errors.append(exc)
            stop.set()
        finally:
            if enc is not None:
                enc.abort()

    threads = [threading.Thread(target=decoder, daemon=True, name="upres-decode"),
               threading.Thread(target=encoder, daemon=True, name="upres-encode")]
    for t in threads:
        t.start()
    try:
        while True:
            try:
                item = q_in.get(timeout=0.2)
            except queue.Empty:
                if stop.is_set():
                    break
                continue
            if item is _END:
                break
            if not isinstance(item[0], str):
                pts, dur, rgb = item
                big = up.upscale(rgb, tile=tile, tile_overlap=tile_overlap, **(kw or {}))
                item = (pts, dur, _even(big, *size))
                bar.update(1)
            if not put(q_out, item):
                break
        put(q_out, _END)
    except BaseException:
        stop.set()
        raise
    finally:
        if stop.is_set():  # an error or an interrupt: the threads see it within 0.2 s
            deadline = time.monotonic() + 60
            for t in threads:
                t.join(timeout=max(0.1, deadline - time.monotonic()))
        else:  # the encoder finishes the last frames and commits the last segment, however
            for t in threads:  # long that takes (large frames, slow codecs)
                t.join()
    if errors:
        exc = errors[0]
        if isinstance(exc, UpresError):
            raise exc
        raise UpresError(f"{meta.path}: {type(exc).__name__}: {' '.join(str(exc).split())}")
