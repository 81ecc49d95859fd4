"""``upres serve``: the web page and the HTTP API (FastAPI + uvicorn).

Endpoints::

    GET  /              the page (static HTML/CSS/JS from ./static, no build step)
    GET  /healthz       {"status": "ok", "running": n, "waiting": n}
    GET  /v1/models     the offered models: an ``auto`` row per scale with a photo model,
                        then the rows of ``upres models --json`` (no lanczos)
    POST /v1/upscale    image in (multipart field ``file`` alone, or the raw body), image
                        out; query only: model (default auto), scale, format (png | jpg |
                        webp | tiff | same; default png, tiff for a scientific TIFF), denoise
                        (photo models: 0..1 or auto), one of outscale, size, fit. A scientific
                        TIFF (float, signed, stacks) comes back as ``upres upscale`` writes it

Limits (:class:`ServeConfig`): bodies over ``max_upload_bytes`` get 413 (checked on
Content-Length and while streaming); images over ``max_pixels`` get 413, refused from the header
before any decoding; bytes that are not a supported image get 415; damaged images and bad query
parameters get 422 (what the header shows is refused before the request queues; an output
larger than its format holds is refused after decoding, before the upscale); all errors are
JSON ``{"detail": "one line"}``, unexpected ones too (500). At most ``workers`` upscales
run at once; up to ``max_queue`` more wait for at most ``queue_timeout`` seconds, and beyond
that the answer is 503 with ``Retry-After``. Uploads are decoded from an anonymous memory file
(Linux; a temporary folder elsewhere) under a server-made name: no name from the client reaches
the file system, none in an upload opens another file, and a killed server leaves nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

from upres.errors import (
    ImageTooLargeError,
    NotEnoughMemoryError,
    UnsupportedImageError,
    UpresError,
    one_line,
)
from upres.formats.image import is_tiff_bytes

__all__ = ["ServeConfig", "create_app", "is_loopback", "run"]

STATIC = Path(__file__).parent / "static"
_MEDIA = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "TIFF": "image/tiff",
          "BMP": "image/bmp"}
_FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP", "tiff": "TIFF",
            "tif": "TIFF"}
#: ``format`` not given: PNG, but TIFF for a scientific TIFF (no other format holds it).
_DEFAULT = "DEFAULT"  # upper case: no lower-cased query value equals it
_EXT = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp", "TIFF": "tiff", "BMP": "bmp"}
#: What each query parameter allows, for one-line validation errors.
_ALLOWED = {"scale": "a whole number from 2 to 8 (the networks enlarge by 2, 3 or 4)",
            "outscale": "a finite number above 0 and at most 16"}
_PARAMS = ("model", "scale", "format", "denoise", "outscale", "size", "fit")
#: The request body in the OpenAPI spec: FastAPI cannot see it, the handler reads it itself.
_BODY = {"required": True, "content": {
    "multipart/form-data": {"schema": {
        "type": "object", "required": ["file"],
        "properties": {"file": {"type": "string", "format": "binary",
                                "description": "the image (the only field)"}}}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary",
                                            "description": "the image file's bytes"}}}}


@dataclass(frozen=True)
class ServeConfig:
    """Server limits and offered models.

    ``models``: shipped model names to offer (``None``: all shipped models); ``bicubic`` is
    always offered as the comparison baseline. ``max_upload_bytes``: largest request body;
    ``max_pixels``: largest input image (width x height); ``workers``: upscales run at once;
    ``max_queue``: requests allowed to wait for a worker; ``queue_timeout``: seconds one may
    wait; ``retry_after``: seconds suggested to clients refused with 503. ``precision``: what the
    models run in (``default``: each model's own on a CPU, int8 for tiny-x3/tiny-x4 and fp32
    for the rest; or ``fp32``, ``bf16``, ``fp16``, ``int8``, ``auto``, as in ``upres.load``);
    each answer names the one that ran in its ``X-Upres-Precision`` header (fp32 for a 16-bit
    upload where a default int8 path runs 8-bit images only). ``token``: when
    set, every ``/v1/`` request needs ``Authorization: Bearer TOKEN`` (compared in constant
    time; 401 otherwise). ``read_timeout``: seconds an upload may go without sending a byte (408
    after that; uploads are read before a worker is taken, so a slow client never holds one).
    """

    models: tuple[str, ...] | None = None
    max_upload_bytes: int = 50 * 2**20
    max_pixels: int = 16_000_000
    workers: int = 1
    max_queue: int = 32
    queue_timeout: float = 60.0
    retry_after: int = 5
    precision: str = "default"
    token: str | None = None
    read_timeout: float = 30.0

    def __post_init__(self) -> None:
        """Limits that would refuse every request are refused here, at start-up."""
        for name, low, what in (("max_upload_bytes", 1, "at least 1 byte"),
                                ("max_pixels", 1, "at least 1 pixel"),
                                ("workers", 1, "at least 1"), ("max_queue", 0, "0 or more"),
                                ("queue_timeout", 1e-9, "more than 0 seconds"),
                                ("read_timeout", 1e-9, "more than 0 seconds"),
                                ("retry_after", 0, "0 or more seconds")):
            value = getattr(self, name)
            if not value >= low or value != value:  # (NaN compares false)
                raise UpresError(f"serve: {name.replace('_', '-')} must be {what}, got {value}")


class _HTTPError(Exception):
    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers or {}


class _Gate:
    """At most ``workers`` holders; at most ``max_queue`` waiters, each for ``timeout`` s."""

    def __init__(self, workers: int, max_queue: int, timeout: float) -> None:
        self.sem = asyncio.Semaphore(workers)
        self.max_queue, self.timeout = max_queue, timeout
        self.running = 0
        self.waiting = 0

    async def __aenter__(self) -> None:
        if self.sem.locked() and self.waiting >= self.max_queue:
            raise _HTTPError(503, "server busy: the work queue is full")
        self.waiting += 1
        try:
            await asyncio.wait_for(self.sem.acquire(), self.timeout)
        except TimeoutError:
            raise _HTTPError(503, f"server busy: no worker free within {self.timeout:g} s") \
                from None
        finally:
            self.waiting -= 1
        self.running += 1

    async def __aexit__(self, *exc: object) -> None:
        self.running -= 1
        self.sem.release()


class _Models:
    """Offered models, loaded on first use and kept (one Upscaler per name)."""

    def __init__(self, names: tuple[str, ...] | None, precision: str = "default") -> None:
        from upres.inference.upscaler import check_precision
        from upres.models import zoo

        self.precision = check_precision(precision)  # now, not at the first request

        cards = {c.name: c for c in zoo.shipped()}
        wanted = list(names) if names else sorted(cards, key=lambda n: (cards[n].scale, n))
        unknown = [n for n in wanted if n not in cards and n not in zoo.BASELINES]
        if unknown:
            raise UpresError(f"serve: unknown model(s) {', '.join(unknown)}; shipped: "
                             f"{', '.join(cards)}")
        self.names = [n for n in wanted if n not in zoo.BASELINES]
        self.cards = cards
        self.scales = sorted({cards[n].scale for n in self.names})  # those offered
        self._loaded: dict[tuple[str, int], Any] = {}
        self._lock = threading.Lock()

    def rows(self) -> list[dict]:
        from upres.models import zoo

        by_name = {r["name"]: r for r in zoo.shipped_rows()}
        return (self.rows_auto() + [by_name[n] for n in self.names]
                + [r for r in zoo.baseline_rows() if r["name"] == "bicubic"])

    def pick(self, model: str | None, scale: int | None) -> tuple[str, int]:
        if model is None or model == "auto":  # default x4, or the largest scale offered
            s = scale or (4 if 4 in self.scales or not self.scales else self.scales[-1])
            photo = next((n for n in self.names if self.cards[n].scale == s
                          and self.cards[n].denoise_base), None)
            if photo is not None and self.cards[photo].denoise_base in self.names:
                return photo, s  # auto: clean images get the base model's output exactly
            default = f"x{s}"
            if default not in self.names:
                choices = [n for n in self.names if self.cards[n].scale == s]
                if not choices:
                    raise _HTTPError(422, f"no model offered for scale {s}")
                default = choices[0]
            return default, s
        if model == "bicubic":
            return model, scale or 4
        if model not in self.names:
            raise _HTTPError(422, f"unknown model {model!r}; offered: "
                                  f"{', '.join([*self.names, 'bicubic'])}")
        s = self.cards[model].scale
        if scale is not None and scale != s:
            raise _HTTPError(422, f"model {model} upscales x{s}, not x{scale}")
        return model, s

    def rows_auto(self) -> list[dict]:
        """An ``auto`` row per scale that has a photo model and its base."""
        out = []
        for n in self.names:
            c = self.cards[n]
            if c.denoise_base and c.denoise_base in self.names:
                out.append({"name": "auto", "arch": c.arch, "scale": c.scale,
                            "params": c.params, "psnr": {}, "denoise": True,
                            "summary": f"The default: {c.denoise_base}'s output for clean "
                                       f"images, {n} with the clean-up each image's noise and "
                                       "JPEG damage call for otherwise."})
        return out

    def get(self, name: str, scale: int) -> Any:
        import upres

        with self._lock:
            key = (name, scale)
            if key not in self._loaded:
                if name == "bicubic":
                    up = upres.load(name, scale=scale)
                else:
                    up = upres.load(name, device="auto", precision=self.precision)
                    if up.precision_note:
                        print(f"upres: {name}: {up.precision_note}", flush=True)
                self._loaded[key] = up
            return self._loaded[key]


async def _read_body(request: Request, limit: int, timeout: float = 30.0) -> bytes:
    size = request.headers.get("content-length")
    if size is not None and size.isdigit() and int(size) > limit:
        raise _HTTPError(413, f"upload too large: {int(size)} bytes, limit {limit}")
    chunks, total = [], 0
    stream = request.stream().__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(stream.__anext__(), timeout)
        except StopAsyncIteration:
            break
        except TimeoutError:
            raise _HTTPError(408, f"upload too slow: nothing received for {timeout:g} s") \
                from None
        except ClientDisconnect:  # the client left mid-upload: nobody to answer, nothing kept
            raise _HTTPError(400, "client disconnected during the upload") from None
        total += len(chunk)
        if total > limit:
            raise _HTTPError(413, f"upload too large: more than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _multipart_problem(message: str) -> str:
    """Starlette's multipart error, said as what the client should change."""
    if message.startswith("Too many files"):
        return "multipart body: more than one file part; send one image, in the field 'file'"
    if message.startswith("Too many fields"):
        return ("multipart body: more than 8 fields; send only the field 'file' (parameters "
                "go in the query string)")
    if message.startswith("Missing boundary"):
        return ("multipart body: the Content-Type header has no boundary (send "
                "multipart/form-data; boundary=..., or the image as the raw body)")
    return f"multipart body: {message.rstrip('.')}"


async def _image_bytes(request: Request, limit: int, timeout: float = 30.0) -> bytes:
    """The uploaded file's bytes: multipart field ``file`` (the only field), or the body."""
    body = await _read_body(request, limit, timeout)
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        return body

    async def replay() -> AsyncIterator[bytes]:  # the body read above, once
        yield body

    try:
        form = await MultiPartParser(request.headers, replay(), max_files=1,
                                     max_fields=8).parse()
    except MultiPartException as exc:
        raise _HTTPError(422, _multipart_problem(exc.message)) from None
    except Exception as exc:  # the parser's own errors for bodies that are not multipart
        raise _HTTPError(422, f"malformed multipart body ({type(exc).__name__})") from None
    try:
        for key, value in form.multi_items():
            if not isinstance(value, UploadFile):
                where = (f"'{key}' is a parameter: parameters go in the query string "
                         f"(/v1/upscale?{key}=...)" if key in _PARAMS else
                         "it must be a file part (curl -F file=@PATH)" if key == "file" else
                         "only the field 'file' is read")
                raise _HTTPError(422, f"multipart field '{key}' refused: {where}")
        item = form.get("file")
        if not isinstance(item, UploadFile):
            raise _HTTPError(422, "multipart body without the field 'file' (the image)")
        return await item.read()
    finally:
        await form.close()


#: Every page of a TIFF stack counts as at least this many pixels against ``max_pixels``:
#: each page is one pass of the network, so thousands of tiny pages cost far more than
#: their pixels.
_PAGE_FLOOR = 128 * 128


@dataclass(frozen=True)
class _TiffHeader:
    """What :func:`_probe` needs of a TIFF upload, from one parse: its first image page's
    ``width`` and ``height``, the ``pages`` of its first image series, whether it is
    georeferenced (``geo``: GeoTIFF tags or RPCs on its first page), why it is scientific
    (``reason``: :func:`upres.formats.tiff.scientific_reason_of`) and whether it is part of a
    multi-file OME dataset (``linked``)."""

    width: int
    height: int
    pages: int
    geo: bool
    reason: str | None
    linked: bool


def _tiff_header(data: bytes) -> _TiffHeader:
    """The upload's :class:`_TiffHeader`. References to other files are never followed."""
    import io

    import tifffile

    from upres.formats.geotiff import has_geo_tags
    from upres.formats.tiff import _quiet_tifffile, ome_links_other_files, scientific_reason_of

    with _quiet_tifffile(), tifffile.TiffFile(io.BytesIO(data), _multifile=False) as tf:
        series = [sr for sr in tf.series if getattr(sr, "kind", "") != "thumbnail"]
        page = series[0].keyframe if series else tf.pages.first
        n = len(series[0].pages) if series else 1
        geo = has_geo_tags(tf.pages.first.tags)
        try:
            reason = scientific_reason_of(tf)
        except Exception:  # as scientific_reason: a damaged page is not scientific
            reason = None
        xml = tf.pages.first.description if tf.is_ome else ""
        return _TiffHeader(int(page.imagewidth), int(page.imagelength), max(n, 1), geo, reason,
                           bool(xml) and ome_links_other_files(xml))


def _probe(data: bytes, max_pixels: int, fmt: str | None = _DEFAULT,
           sized: bool = False) -> bool:
    """Refuse what the header already shows (not an image, DICOM, a GeoTIFF that needs its
    georeferencing, too many pixels, a format or size a scientific TIFF cannot take, a
    multi-file OME-TIFF) before
    queueing: bad uploads never wait for, nor take, a worker. True when the upload is a
    scientific TIFF to upscale as one (:func:`_upscale_tiff`); ``fmt`` as :func:`_upscale`'s,
    ``sized``: an output size was asked for."""
    import io

    from PIL import Image, UnidentifiedImageError

    if not data:
        raise _HTTPError(422, "empty upload")
    if data[128:132] == b"DICM":
        raise _HTTPError(415, "upload: DICOM is not served by the HTTP API; use upres upscale")
    pages, head, tiff = 1, None, is_tiff_bytes(data)
    if tiff:  # tifffile reads every TIFF upres reads, stacks and float too
        try:
            head = _tiff_header(data)
            w, h, pages = head.width, head.height, head.pages
        except Exception as exc:  # tifffile raises many types for damaged headers
            try:  # one tifffile cannot parse may still be a picture Pillow reads
                with Image.open(io.BytesIO(data)) as im:
                    w, h = im.size
                tiff = False  # the picture path, as before
            except Exception:
                raise _HTTPError(422, "upload: cannot read the TIFF header "
                                      f"({type(exc).__name__})") from None
    else:
        try:
            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size
        except UnidentifiedImageError:
            raise _HTTPError(415, "upload: not an image file (format not recognised)") \
                from None
        except Image.DecompressionBombError:  # PIL's own ceiling, far above any max_pixels
            raise _HTTPError(413, f"upload: image too large (over {max_pixels} pixels)") \
                from None
        except Exception as exc:  # PIL raises many types for damaged headers
            raise _HTTPError(422, "upload: cannot read the image header "
                                  f"({type(exc).__name__})") from None
    counted = w * h if pages == 1 else pages * max(w * h, _PAGE_FLOOR)
    if counted > max_pixels:
        what = f"{w}x{h} = {counted} pixels" if pages == 1 else \
            f"{pages} pages of {w}x{h}, counted as {counted} pixels: each page at least " \
            f"{_PAGE_FLOOR}"
        raise _HTTPError(413, f"upload: image too large ({what}; limit {max_pixels})")
    if not tiff or head is None:
        return False
    if head.linked:
        raise _HTTPError(422, "upload: an OME-TIFF whose planes are in other files (a "
                              "multi-file OME dataset) cannot be upscaled from one "
                              "uploaded file")
    why, geo = head.reason, head.geo
    picture = fmt not in (_DEFAULT, None, "TIFF")
    if why is None or (why == "metadata" and (picture or sized or geo)):
        return False  # a picture: read as `upres upscale` reads pictures (calibration unused)
    if geo:
        raise _HTTPError(415, "upload: a GeoTIFF of float, signed or 32-bit samples or of "
                              "several pages is not served by the HTTP API (its "
                              "georeferencing would be lost); use upres upscale")
    if picture:
        raise _HTTPError(422, "upload: a scientific TIFF (float, signed or 32-bit samples, a "
                              "page stack) comes back only as TIFF: ask for format=tiff (on "
                              "the page: Output TIFF or Automatic)")
    if sized:
        raise _HTTPError(422, "outscale, size and fit apply to ordinary images; a scientific "
                              "TIFF is upscaled by the model's scale")
    return True


@dataclass
class _AtStrength:
    """A photo model as one pass of ``upscale_to``, at clean-up ``denoise``; ``used`` collects
    each pass's strength (the first pass sees the upload, and its JPEG ``quality``)."""

    up: Any
    denoise: float | str | None
    quality: int | None
    used: list[float]

    @property
    def scale(self) -> int:
        return self.up.scale

    def upscale(self, img: Any, **kw: Any) -> Any:
        out, t = self.up.run(img, denoise=self.denoise,
                             quality=None if self.used else self.quality, **kw)
        self.used.append(t)
        return out


@contextlib.contextmanager
def _upload_file(data: bytes, name: str) -> Iterator[Path]:
    """The upload as a file the format readers open by path, under a server-made ``name``
    (nothing from the client names it). On Linux an anonymous memory file
    (``memfd_create``), which nothing outlives: not even a SIGKILL leaves it behind (it holds
    a second copy of the upload in memory while the upload is decoded). Elsewhere, or where
    the kernel refuses one, a temporary folder, removed on exit."""
    fd = -1
    if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # refused (seccomp, an old kernel, no fds left)
            fd = os.memfd_create(f"upres-{name}", os.MFD_CLOEXEC)
    if fd >= 0:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            yield Path(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="upres-serve-") as d:
        src = Path(d) / name
        src.write_bytes(data)
        yield src


def _upscale_tiff(up: Any, data: bytes, max_pixels: int, denoise: float | str | None
                  ) -> tuple[bytes, str, float | None, str | None]:
    """A scientific TIFF that passed :func:`_probe` (float, signed or 32-bit samples, page
    stacks, physical pixel sizes, instrument metadata): every page upscaled, its dtype, value
    range and metadata kept as ``upres upscale`` keeps them, and returned as TIFF. A photo
    model runs at strength 0 unless one is given (measured data: its noise is signal)."""
    from upres.convert import upscale_document
    from upres.formats import Document
    from upres.formats.tiff import encode_tiff, read_tiff

    with _upload_file(data, "upload.tif") as src:
        try:  # an upload's references to other files are not followed
            pages, meta = read_tiff(src, max_pixels=max_pixels, linked=False)
        except ImageTooLargeError:
            raise _HTTPError(413, f"upload: image too large (limit {max_pixels} pixels)") \
                from None
        except UnsupportedImageError as exc:
            raise _HTTPError(415, str(exc).replace(str(src), "upload")) from None
        except UpresError as exc:
            raise _HTTPError(422, str(exc).replace(str(src), "upload")) from None
    used: list[float] = []
    net = _AtStrength(up, 0.0 if denoise in (None, "auto") else denoise, None, used) \
        if hasattr(up, "run") else up
    try:
        out = upscale_document(net, Document("tiff", tuple(pages), meta))
    except NotEnoughMemoryError as exc:
        raise _HTTPError(503, str(exc)) from None
    try:
        body = encode_tiff(list(out.frames), out.meta)
    except Exception as exc:  # tifffile's refusals (metadata it cannot write for the type)
        raise _HTTPError(422, f"cannot write the output TIFF ({one_line(exc, 200)})") \
            from None
    return body, "TIFF", used[0] if used else None, getattr(up, "last_precision", None)


def _upscale(up: Any, data: bytes, fmt: str | None, max_pixels: int,
             denoise: float | str | None = None, sized: Any = None, scientific: bool = False
             ) -> tuple[bytes, str, float | None, str | None]:
    """Decode, upscale and encode one upload that passed :func:`_probe` (in a worker thread).
    ``fmt``: the output format, None for the input's, ``_DEFAULT`` when none was asked for;
    ``scientific``: :func:`_probe` found a scientific TIFF (:func:`_upscale_tiff`).
    The output's size is checked against its format before the upscale runs. Returns the
    encoded output, its format, the clean-up strength used (photo models) and the precision
    the network ran (None for the bicubic baseline)."""
    from upres.formats.image import check_size, encode_image, is_opaque, read_image_info

    if scientific:
        return _upscale_tiff(up, data, max_pixels, denoise)
    if fmt == _DEFAULT:
        fmt = "PNG"
    with _upload_file(data, "upload") as src:
        try:
            img, info = read_image_info(src, max_pixels=max_pixels)
        except ImageTooLargeError as exc:
            raise _HTTPError(413, str(exc).replace(str(src), "upload")) from None
        except UnsupportedImageError as exc:
            raise _HTTPError(415, str(exc).replace(str(src), "upload")) from None
        except UpresError as exc:
            raise _HTTPError(422, str(exc).replace(str(src), "upload")) from None
    out_fmt = fmt or (info.format if info.format in _MEDIA else "PNG")
    alpha = img.ndim == 3 and img.shape[2] in (2, 4)
    if alpha and out_fmt in ("JPEG", "BMP"):
        if not is_opaque(img):
            raise _HTTPError(422, f"the image has transparency, which {out_fmt} cannot hold; "
                                  "ask for png, webp or tiff")
        img = img[:, :, :-1] if img.shape[2] == 4 else img[:, :, 0]  # all opaque: dropped
    h, w = img.shape[:2]
    if sized is not None:  # (SizeRequest, upscaler_for(scale) or None for a fixed model,
        # passes_for's keywords)
        from upres.inference.outscale import target_size

        tw, th = target_size(w, h, sized[0])
        if tw * th > 4 * max_pixels:
            raise _HTTPError(413, f"requested output too large ({tw}x{th})")
    else:
        tw, th = w * up.scale, h * up.scale
    try:
        check_size(out_fmt, tw, th)
    except UpresError as exc:
        raise _HTTPError(422, str(exc)) from None
    used: list[float] = []
    ran_on = [up]  # the upscaler that ran last (a size request may take another scale's)
    if sized is not None:
        from upres.inference.outscale import passes_for, upscale_to

        upscaler_for = sized[1]

        def one_pass(s: int) -> Any:
            m = upscaler_for(s) if upscaler_for else up
            ran_on.append(m)
            return _AtStrength(m, denoise, info.jpeg_quality, used) if hasattr(m, "run") else m

        passes = passes_for(max(tw / w, th / h), **sized[2])
        if upscaler_for and isinstance(denoise, float):  # a fixed strength reaches every pass
            lacking = sorted({sc for sc in passes if not hasattr(upscaler_for(sc), "run")})
            if lacking:
                raise _HTTPError(422, "denoise: this size takes a network pass at "
                                      + ", ".join(f"x{sc}" for sc in lacking) + ", where no "
                                      "photo model (with its base) is offered; leave denoise "
                                      "out, or name a photo model")
    try:
        if sized is not None:
            out = upscale_to(img, (tw, th), one_pass, passes)
        elif hasattr(up, "run"):  # a photo model: clean-up strength given, or measured
            out = _AtStrength(up, denoise, info.jpeg_quality, used).upscale(img)
        else:
            out = up.upscale(img)
    except NotEnoughMemoryError as exc:  # the arrays would not fit in this server's memory now
        raise _HTTPError(503, str(exc)) from None
    try:
        body = encode_image(out, out_fmt, info=info)
    except UpresError as exc:  # the encoder's own limits (EXIF too long for JPEG, ...)
        raise _HTTPError(422, f"cannot write the output as {out_fmt}: {exc}") from None
    except Exception as exc:  # a refusal the encoder does not word (libtiff: RuntimeError)
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        carried = " with the input's EXIF" if info.exif else ""
        raise _HTTPError(422, f"cannot write the output as {out_fmt}{carried} ({why}); "
                              "choose another format") from None
    ran = getattr(ran_on[-1], "last_precision", None)  # this thread's call; wide images: fp32
    return body, out_fmt, used[0] if used else None, ran


def create_app(cfg: ServeConfig | None = None) -> FastAPI:
    """The FastAPI application for ``cfg`` (defaults: :class:`ServeConfig`)."""
    cfg = cfg or ServeConfig()
    models = _Models(cfg.models, cfg.precision)
    app = FastAPI(title="upres", version="0.1.0",
                  description="Deep-learning image super-resolution: upscale images over HTTP.")
    gate: dict[str, _Gate] = {}

    def _gate() -> _Gate:  # created inside the server's event loop
        if "g" not in gate:
            gate["g"] = _Gate(cfg.workers, cfg.max_queue, cfg.queue_timeout)
        return gate["g"]

    if cfg.token:
        import hmac

        want = cfg.token.encode()

        @app.middleware("http")
        async def _auth(request: Request, call_next: Any) -> Response:
            if request.url.path.startswith(("/v1/", "/docs", "/openapi.json", "/redoc")):
                got = request.headers.get("authorization", "")
                scheme, _, value = got.partition(" ")
                if scheme.lower() != "bearer" or not hmac.compare_digest(value.encode(), want):
                    return JSONResponse({"detail": "missing or wrong access token (send "
                                                   "Authorization: Bearer TOKEN)"},
                                        status_code=401,
                                        headers={"WWW-Authenticate": "Bearer"})
            return await call_next(request)

    @app.exception_handler(_HTTPError)
    async def _on_error(_: Request, exc: _HTTPError) -> JSONResponse:
        headers = dict(exc.headers)
        if exc.status == 503:
            headers["Retry-After"] = str(cfg.retry_after)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _on_invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        err = exc.errors()[0]  # one line: the first bad parameter
        name = str(err["loc"][-1]) if err.get("loc") else "request"
        allowed = _ALLOWED.get(name)
        text = (f"{name} must be {allowed}, got {err.get('input')!r}" if allowed
                else f"{name}: {err.get('msg', 'invalid')}")
        return JSONResponse({"detail": text}, status_code=422)

    @app.exception_handler(Exception)
    async def _on_bug(_: Request, exc: Exception) -> JSONResponse:  # logged by uvicorn too
        return JSONResponse({"detail": f"internal error ({type(exc).__name__}); see the "
                                       "server's log"}, status_code=500)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/healthz")
    async def healthz() -> dict:
        g = _gate()
        return {"status": "ok", "running": g.running, "waiting": g.waiting}

    @app.get("/v1/models")
    async def list_models() -> list[dict]:
        return models.rows()

    @app.post("/v1/upscale", openapi_extra={"requestBody": _BODY}, responses={
        200: {"content": {m: {} for m in _MEDIA.values()}, "description": "the upscaled image"},
        413: {"description": "upload or image too large"},
        415: {"description": "not a supported image"},
        422: {"description": "bad parameters or a damaged image"},
        503: {"description": "busy; retry after the Retry-After header's seconds"}})
    async def upscale(
        request: Request,
        model: str | None = Query(None, description="model name (GET /v1/models); default "
                                                    "auto: the scale's photo model at its "
                                                    "automatic clean-up strength, x{scale} "
                                                    "where none exists"),
        scale: int | None = Query(None, ge=2, le=8, description="2, 3 or 4 (default: the "
                                                                "model's, or 4)"),
        format: str | None = Query(None, description="png, jpg, webp, tiff, or same (as the "
                                                     "input); default png, but tiff for a "
                                                     "scientific TIFF (float, signed, stacks)"),
        denoise: str = Query("auto", description="photo models: clean-up strength 0..1, or "
                                                 "auto (measured from the image)"),
        outscale: float | None = Query(None, gt=0, le=16, description="any output factor "
                                                                      "(1.5, 6, 8)"),
        size: str | None = Query(None, description="exact output size WxH (a 0 keeps the "
                                                   "aspect ratio)"),
        fit: str | None = Query(None, description="largest output within WxH"),
    ) -> Response:
        """Upscale one image: multipart form field ``file`` (the only field), or the image as
        the raw body; every parameter goes in the query string."""
        fmt_key = format.lower() if format is not None else _DEFAULT
        if fmt_key not in ("same", _DEFAULT) and fmt_key not in _FORMATS:
            raise _HTTPError(422, f"format must be png, jpg, webp, tiff or same, not {format!r}")
        from upres.inference.denoise import check_denoise

        try:
            strength = check_denoise(denoise)
        except UpresError as exc:
            raise _HTTPError(422, str(exc)) from None
        name, s = models.pick(model, scale)
        photo = name in models.cards and bool(models.cards[name].denoise_base)
        if strength != "auto" and not photo:
            if model not in (None, "auto"):
                raise _HTTPError(422, f"denoise: {name} is not a photo model and has no "
                                      "clean-up strength; use model=auto or a photo model")
            raise _HTTPError(422, f"denoise: no photo model (with its base model) is offered "
                                  f"at x{s}, so auto runs {name}, which has no clean-up "
                                  "strength")
        sized = None
        if sum(v is not None for v in (outscale, size, fit)) > 1:
            raise _HTTPError(422, "give one of outscale, size and fit")
        if outscale is not None or size is not None or fit is not None:
            from upres.inference.outscale import SizeRequest, parse_size

            try:
                req = SizeRequest(outscale=outscale,
                                  size=None if size is None else parse_size(size, "size"),
                                  fit=None if fit is None else parse_size(fit, "fit"))
            except UpresError as exc:
                raise _HTTPError(422, str(exc)) from None
            if model in (None, "auto"):  # the network scales that reach the size with the
                # least work among those offered, or the scale asked for as often as needed
                how = {"fixed": scale} if scale is not None else {"scales": models.scales}
                sized = (req, lambda sc: models.get(*models.pick(None, sc)), how)
            else:
                sized = (req, None, {"fixed": s})
        data = await _image_bytes(request, cfg.max_upload_bytes, cfg.read_timeout)
        fmt = None if fmt_key == "same" else _FORMATS.get(fmt_key, fmt_key)
        scientific = await run_in_threadpool(_probe, data, cfg.max_pixels, fmt,
                                             sized is not None)
        async with _gate():
            up = await run_in_threadpool(models.get, name, s)
            body, out_fmt, used, ran = await run_in_threadpool(
                _upscale, up, data, fmt, cfg.max_pixels, strength, sized, scientific)
        headers = {
            "Content-Disposition": f'attachment; filename="upscaled_{name}.{_EXT[out_fmt]}"',
            "X-Upres-Model": name, "X-Upres-Scale": str(s)}
        if ran is not None:  # networks; the bicubic baseline has no precision
            headers["X-Upres-Precision"] = ran
        if used is not None:  # photo models: the clean-up strength used
            headers["X-Upres-Denoise"] = f"{used:.2f}"
        return Response(body, media_type=_MEDIA[out_fmt], headers=headers)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine's loopback address (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(cfg: ServeConfig, *, host: str = "127.0.0.1", port: int = 8000,
        insecure: bool = False) -> None:
    """Serve ``create_app(cfg)`` with uvicorn until interrupted.

    Raises:
        UpresError: ``host`` is not a loopback address and no token is set (unless
            ``insecure``).
    """
    import sys

    import uvicorn

    open_to_all = not is_loopback(host) and not cfg.token
    if open_to_all and not insecure:
        raise UpresError(f"serve: refusing to listen on {host} without an access token: "
                         "give --token-file PATH (or UPRES_TOKEN), or --insecure to serve "
                         "everyone who can reach it")
    if not 0 <= port <= 65535:
        raise UpresError(f"serve: --port must be 0..65535, got {port}")
    sock = listen_socket(host, port)
    if open_to_all:
        print(f"upres: WARNING: serving on {host} with NO access token: anyone who can "
              "reach this address can use the server (--insecure)", file=sys.stderr,
              flush=True)
    try:
        app = create_app(cfg)
        port = sock.getsockname()[1]  # (0 asks the system for a free one)
        shown = f"[{host}]" if ":" in host else host
        print(f"upres: serving on http://{shown}:{port}/ (API docs at /docs)"
              + (" (token required for /v1/)" if cfg.token else ""), flush=True)
        config = uvicorn.Config(app, log_level="warning", server_header=False)
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()


def listen_socket(host: str, port: int) -> Any:
    """A TCP socket bound to ``host``:``port`` and listening, made before the server starts
    so that a port in use or an address this machine does not have is one line
    (:class:`UpresError`), not a line saying it serves followed by uvicorn's error. IPv6 for a
    host with a colon, IPv4 otherwise (uvicorn's own rule: ``localhost`` is 127.0.0.1 even
    where it also names ::1); an empty host is every interface."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = None
    try:
        addr = socket.getaddrinfo(host or None, port, family=family, type=socket.SOCK_STREAM,
                                  flags=socket.AI_PASSIVE)[0][4]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(2048)
        sock.set_inheritable(True)
    except (OSError, UnicodeError) as exc:
        if sock is not None:
            sock.close()
        why = getattr(exc, "strerror", None) or exc
        raise UpresError(f"serve: cannot listen on {host}:{port} ({why})") from None
    return sock
