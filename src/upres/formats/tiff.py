"""Scientific TIFF (tifffile): float32 and signed images, page stacks, physical pixel sizes.

An ordinary 8/16-bit photo TIFF goes through :mod:`upres.formats.image` (ICC, EXIF, print DPI
kept). This module takes the TIFFs that :func:`is_scientific` picks: floating-point or signed
samples, 32-bit samples, 16-bit min-is-white, more than one page (stacks, ImageJ and OME
hyperstacks), a metric resolution unit (unless an ICC profile or a display orientation shows a
photo), or an instrument's metadata (ImageJ, OME, FEI/SEM, ...): :func:`scientific_reason`.

Reading gives every page ``(H, W)`` or ``(H, W, S)`` in the file's dtype and a :class:`TiffMeta`.
Values are mapped to the network's [0, 1] by the finite range of the whole stack
(``lo``..``hi``; 8- and 16-bit unsigned integers by their type's range) and back
(:mod:`upres.formats.values`), so float32 stays float32 and int16 stays int16; NaN and
infinite samples are kept where they were (nearest neighbour), and never reach the network (it
sees the nearest finite value there). A 16-bit min-is-white page (which Pillow would read as
min-is-black) is upscaled as stored and written back min-is-white.

``TiffMeta.scaled(s)``: the physical pixel size shrinks by ``s`` so the image covers the same
extent: X/YResolution (pixels per unit) x s, OME ``PhysicalSizeX/Y`` / s and ``SizeX/Y`` x s, the
FEI ``PixelWidth/PixelHeight`` / s. ImageJ's ``spacing`` is the Z step and is kept (pages are
upscaled in X and Y only).
"""

from __future__ import annotations

import contextlib
import io as _io
import logging
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from upres.errors import ImageTooLargeError, UnsupportedImageError, UpresError
from upres.formats.files import encode_and_write

__all__ = ["TiffMeta", "is_scientific", "ome_links_other_files", "read_tiff", "scientific_reason",
           "scientific_reason_of", "write_tiff"]

_INSTRUMENT_FLAGS = ("is_imagej", "is_ome", "is_fei", "is_sem", "is_lsm", "is_stk", "is_fluoview",
                     "is_metaseries", "is_micromanager", "is_nih", "is_andor", "is_sis")
_FEI_TAGS = (34680, 34682)  # FEI_SFEG, FEI_HELIOS: INI text with the pixel size in metres
_METRIC_UNITS = (3, 4, 5)  # RESUNIT centimeter, millimeter, micrometer


def _flag(tf: object, name: str) -> bool:
    try:
        return bool(getattr(tf, name))
    except Exception:
        return False


_QUIET = threading.local()  # how deep this thread is in _quiet_tifffile


class _QuietFilter(logging.Filter):
    """Drops tifffile's records logged by a thread inside :func:`_quiet_tifffile`."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(_QUIET, "depth", 0)


@contextmanager
def _quiet_tifffile() -> Iterator[None]:
    """Silence tifffile's logger while a file is probed: a damaged file then gives the reader's
    one-line error only, not tifffile's log lines as well. Per thread (a filter, not the
    logger's level, which threads of a server would race on and could leave silenced)."""
    log = logging.getLogger("tifffile")
    if not any(isinstance(f, _QuietFilter) for f in log.filters):
        log.addFilter(_QuietFilter())
    _QUIET.depth = getattr(_QUIET, "depth", 0) + 1
    try:
        yield
    finally:
        _QUIET.depth -= 1


def scientific_reason(source: str | os.PathLike[str] | bytes) -> str | None:
    """Why a TIFF (a path with a .tif/.tiff suffix, or a file's bytes) is for this module:
    :func:`scientific_reason_of` of the file on its own (a multi-file OME-TIFF's other files
    are not opened); None for a damaged file or anything not TIFF."""
    import tifffile

    if isinstance(source, bytes):
        src: object = _io.BytesIO(source)
    else:
        src = Path(source)
        if src.suffix.lower() not in (".tif", ".tiff"):
            return None
    try:
        with _quiet_tifffile(), tifffile.TiffFile(src, _multifile=False) as tf:
            return scientific_reason_of(tf)
    except Exception:
        return None


def scientific_reason_of(tf: Any) -> str | None:
    """Why an open ``tifffile.TiffFile`` is for this module: ``"values"`` (samples no picture
    format holds: float, signed, more than 16 bits, 16-bit min-is-white), ``"pages"`` (more
    than one image page: a stack, or several series), ``"metadata"`` (one 8/16-bit page with
    an instrument's metadata, or a metric resolution unit and neither an ICC profile nor a
    display orientation); None for an ordinary picture TIFF (1-bit, palette, CMYK and YCbCr
    pages included: Pillow reads them). A reduced-resolution thumbnail page does not make a
    stack. Raises what tifffile raises for a damaged file."""
    page = tf.pages[0]
    images = [sr for sr in tf.series if getattr(sr, "kind", "") != "thumbnail"]
    if len(images) > 1 or (images and len(images[0].pages) > 1):
        return "pages"
    dt = page.dtype
    pm = int(getattr(page, "photometric", 1))
    if dt is None:
        return "values"
    if dt.kind == "b" or pm not in (0, 1, 2):
        return None
    if dt.kind != "u" or dt.itemsize > 2 or (pm == 0 and dt.itemsize > 1):
        return "values"  # 16-bit min-is-white: Pillow would read it as min-is-black
    if any(_flag(tf, f) for f in _INSTRUMENT_FLAGS):
        return "metadata"
    unit = int(getattr(page, "resolutionunit", 1) or 1)
    if unit in _METRIC_UNITS:
        # a photo saved with a metric DPI (an ICC profile, a display orientation) is a
        # picture; a calibrated plain image is a measurement
        orientation = page.tags.get(274)
        photo = 34675 in page.tags or (orientation is not None
                                       and int(orientation.value) != 1)
        return None if photo else "metadata"
    return None


def ome_links_other_files(xml: str) -> bool:
    """True when an OME-XML document puts planes in other files (a multi-file OME dataset):
    a <UUID> element that is not the document's own UUID, or, where the document has none,
    <UUID> elements naming more than one file."""
    root = re.search(r'<(?:\w+:)?OME\b[^>]*\sUUID="([^"]*)"', xml)
    ids = {u.strip() for _, u in re.findall(r"<((?:\w+:)?)UUID\b[^>]*>([^<]*)</\1UUID>", xml)}
    return bool(ids - {root.group(1)}) if root else len(ids) > 1


def is_scientific(path: str | os.PathLike[str]) -> bool:
    """True for a TIFF this module should read (:func:`scientific_reason` gives one); False
    for an ordinary photo TIFF, a damaged file or anything that is not TIFF."""
    return scientific_reason(path) is not None


@dataclass(frozen=True)
class TiffMeta:
    """What a scientific TIFF carries besides its pages.

    ``dtype``: the samples' dtype; ``lo``/``hi``: finite value range of the stack (the network's
    0 and 1); ``shape``: the series shape (pages stacked, e.g. ``(Z, Y, X)``), ``axes``: its
    tifffile axes string; ``resolution``: ``(x, y)`` pixels per ``unit`` or None; ``unit``:
    ``"INCH"``, ``"CENTIMETER"``, ... or None; ``physical``: whether the resolution is a
    physical pixel size (scaled by an upscale) rather than a print DPI (kept); ``imagej``:
    ImageJ metadata dict or None; ``ome``: OME-XML or None; ``text_tags``: instrument tags as
    ``(code, text)``; ``photometric``: ``"minisblack"``, ``"miniswhite"`` (0 is white; the
    values are upscaled as stored and written back min-is-white) or ``"rgb"``;
    ``extrasamples``: the ExtraSamples codes of a 4th sample (0 unspecified, 1 associated
    alpha, 2 unassociated alpha), written back as read.
    """

    path: Path
    dtype: np.dtype
    lo: float
    hi: float
    shape: tuple[int, ...]
    axes: str
    photometric: str
    resolution: tuple[float, float] | None = None
    unit: str | None = None
    physical: bool = False
    imagej: dict | None = field(default=None, hash=False, compare=False)
    ome: str | None = None
    text_tags: tuple[tuple[int, str], ...] = ()
    scale: int = 1
    extrasamples: tuple[int, ...] = ()

    def scaled(self, s: int) -> TiffMeta:
        """This header after an upscale of every page by ``s``."""
        res = self.resolution
        if res is not None and self.physical:
            res = (res[0] * s, res[1] * s)
        shape = (*self.shape[:-2], self.shape[-2] * s, self.shape[-1] * s) \
            if self.photometric != "rgb" else \
            (*self.shape[:-3], self.shape[-3] * s, self.shape[-2] * s, self.shape[-1])
        ome = _scale_ome(self.ome, s, self.path.name) if self.ome else None
        tags = tuple((code, _scale_fei(text, s)) for code, text in self.text_tags)
        return replace(self, resolution=res, shape=shape, ome=ome, text_tags=tags,
                       scale=self.scale * s)


def _scale_ome(xml: str, s: int, name: str = "") -> str:
    """OME-XML with every <Pixels> SizeX/SizeY x s and PhysicalSizeX/Y / s; for a single-file
    OME-TIFF (every ``<UUID FileName=...>`` names the source file ``name``) also a new
    document UUID (derived from the old one and ``s``) and no per-plane UUID, which would
    name the source file: the upscaled file is a new dataset, not the source's."""
    def pixels(m: re.Match[str]) -> str:
        tag = m.group(0)
        for name, f in (("SizeX", s), ("SizeY", s)):
            tag = re.sub(rf'(\s{name}=")(\d+)(")',
                         lambda k, f=f: f"{k.group(1)}{int(k.group(2)) * f}{k.group(3)}", tag)
        for name in ("PhysicalSizeX", "PhysicalSizeY"):
            tag = re.sub(rf'(\s{name}=")([^"]+)(")',
                         lambda k: f"{k.group(1)}{float(k.group(2)) / s:.10g}{k.group(3)}", tag)
        return tag
    xml = re.sub(r"<(?:\w+:)?Pixels\b[^>]*>", pixels, xml)
    refs = re.findall(r'<(?:\w+:)?UUID\b[^>]*\bFileName="([^"]*)"', xml)
    # single-file: every reference names this file, or (its name unknown: an upload) every
    # referenced UUID is the document's own
    own = re.search(r'<(?:\w+:)?OME\b[^>]*\sUUID="', xml) is not None \
        and not ome_links_other_files(xml)
    if (name and all(Path(r).name == name for r in refs)) or own:
        import uuid

        xml = re.sub(r"<((?:\w+:)?)UUID\b[^>]*>[^<]*</\1UUID>", "", xml)
        xml = re.sub(r"(<(?:\w+:)?OME\b[^>]*\sUUID=\")([^\"]*)(\")",
                     lambda m: f"{m.group(1)}urn:uuid:"
                     f"{uuid.uuid5(uuid.NAMESPACE_URL, f'{m.group(2)} upres x{s}')}{m.group(3)}",
                     xml, count=1)
    return xml


def _scale_fei(text: str, s: int) -> str:
    """FEI INI text with PixelWidth/PixelHeight (metres) / s and ResolutionX/Y x s."""
    text = re.sub(r"(?m)^(Pixel(?:Width|Height)=)([-+0-9.eE]+)",
                  lambda m: f"{m.group(1)}{float(m.group(2)) / s:.6g}", text)
    return re.sub(r"(?m)^(Resolution[XY]=)(\d+)", lambda m: f"{m.group(1)}{int(m.group(2)) * s}",
                  text)


def page_resolution(page: object) -> tuple[float, float] | None:
    """A page's X/YResolution (pixels per its ResolutionUnit) as ``(x, y)``, or None when absent
    or not positive."""
    tags = page.tags
    if 282 not in tags or 283 not in tags:
        return None
    rx, ry = (v.value[0] / v.value[1] if isinstance(v.value, tuple) else float(v.value)
              for v in (tags[282], tags[283]))
    return (rx, ry) if rx > 0 and ry > 0 else None


def _page_array(page: object) -> np.ndarray:
    """A page as ``(H, W)`` or ``(H, W, S)``."""
    a = page.asarray()
    axes = getattr(page, "axes", "")
    if a.ndim == 3 and axes.startswith("S"):
        a = np.moveaxis(a, 0, -1)
    a = np.squeeze(a) if a.ndim > 3 else a
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3):
        raise UnsupportedImageError(f"TIFF page of shape {a.shape} (axes {axes!r}) is not "
                                    "an image plane")
    return np.ascontiguousarray(a)


def read_tiff(path: str | os.PathLike[str], *, max_pixels: int | None = None,
              linked: bool = True) -> tuple[list[np.ndarray], TiffMeta]:
    """Read every page of a scientific TIFF. ``linked``: follow a multi-file OME-TIFF's
    references to the other files of its set (False for a server's upload: a name in a file
    from a client must not open a file on the server; only the file's own pages are read).

    Returns ``(pages, meta)``: pages ``(H, W)`` or ``(H, W, 3|4)`` in the file's dtype (float32,
    float64, int8/16/32, uint8/16/32), all one shape.

    Raises:
        UpresError: one line naming the file and the problem.
    """
    import tifffile

    from upres.formats.image import DEFAULT_MAX_PIXELS

    p = Path(path)
    try:
        # a linked set is opened by tifffile, which finds the other files beside the real path
        # (a link's target); an upload (a memory file at /proc/self/fd/N, whose link target is
        # no path) is opened here
        with _quiet_tifffile(), contextlib.ExitStack() as stack:
            tf = stack.enter_context(tifffile.TiffFile(p) if linked else tifffile.TiffFile(
                stack.enter_context(open(p, "rb")), _multifile=False))
            images = [sr for sr in tf.series if getattr(sr, "kind", "") != "thumbnail"]
            if len(images) > 1:
                raise UnsupportedImageError(f"{p}: TIFF holds {len(images)} image series; only "
                                            "files of one series (one stack) are supported")
            series = tf.series[0]
            pages = [pg for pg in series.pages if pg is not None] if len(tf.series) else []
            if not pages:
                raise UpresError(f"{p}: TIFF has no image pages")
            first = pages[0]
            pm = int(getattr(first, "photometric", 1))
            if pm not in (0, 1, 2) or (pm == 0 and int(first.samplesperpixel) != 1):
                # MINISWHITE (one sample), MINISBLACK, RGB
                raise UnsupportedImageError(f"{p}: TIFF photometric interpretation {pm} "
                                            "(palette, CMYK, YCbCr, ...) is not supported "
                                            "for stacks and scientific TIFF")
            extra = tuple(int(v) for v in (getattr(first, "extrasamples", ()) or ()))
            limit = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
            if limit and len(pages) * first.imagelength * first.imagewidth > limit:
                raise ImageTooLargeError(f"{p}: image too large ({len(pages)} x {first.imagewidth}x"
                                 f"{first.imagelength} pixels, limit {limit}; raise it with "
                                 "--max-pixels)")
            arrays = [_page_array(pg) for pg in pages]
            resolution = page_resolution(first)
            unit_code = int(getattr(first, "resolutionunit", 1) or 1)
            unit = {1: None, 2: "INCH", 3: "CENTIMETER", 4: "MILLIMETER",
                    5: "MICROMETER"}.get(unit_code)
            ij = dict(tf.imagej_metadata) if _flag(tf, "is_imagej") and tf.imagej_metadata \
                else None
            ome = tf.ome_metadata if _flag(tf, "is_ome") else None
            texts = []
            for code in _FEI_TAGS:
                t = first.tags.get(code)
                if t is not None:
                    tf.filehandle.seek(t.valueoffset)
                    texts.append((code, tf.filehandle.read(t.count).decode("latin-1")
                                  .rstrip("\x00")))
            axes, shape = series.axes, tuple(series.shape)
            photometric = "rgb" if arrays[0].ndim == 3 else \
                ("miniswhite" if pm == 0 else "minisblack")
    except UpresError:
        raise
    except Exception as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "imagecodecs" in msg:
            comp = getattr(getattr(first, "compression", None), "name", "this compression")
            raise UnsupportedImageError(f"{p}: TIFF compression {comp} needs a codec that is "
                                        "not installed (pip install imagecodecs)") from None
        raise UpresError(f"{p}: cannot decode TIFF: truncated or corrupt ({msg})") from None
    if any(a.shape != arrays[0].shape or a.dtype != arrays[0].dtype for a in arrays):
        raise UnsupportedImageError(f"{p}: TIFF pages differ in size or type; only stacks of "
                                    "equal pages are supported")
    dtype = arrays[0].dtype
    if dtype.kind not in "uif" or dtype.kind == "c":
        raise UnsupportedImageError(f"{p}: TIFF samples of type {dtype} are not supported")
    if arrays[0].ndim == 3 and arrays[0].shape[2] not in (3, 4):
        raise UnsupportedImageError(f"{p}: TIFF pages with {arrays[0].shape[2]} samples per "
                                    "pixel are not supported")
    # 8- and 16-bit unsigned integers use their whole type range, as ordinary images do; float,
    # signed and 32-bit samples have no range they fill (a uint32 count image uses a sliver of
    # 0 .. 2**32 - 1), so the stack's finite min..max is the network's 0..1.
    lo, hi = ((0.0, float(np.iinfo(dtype).max)) if dtype.kind == "u" and dtype.itemsize <= 2
              else _finite_range(arrays))
    # Inch is a print resolution (kept); a metric unit, or ImageJ/OME calibration, is a physical
    # pixel size (scaled by an upscale).
    physical = resolution is not None and (unit_code in _METRIC_UNITS or ome is not None
                                           or bool(ij and ij.get("unit")))
    if ij is not None and ij.get("unit") and resolution is not None:
        unit = unit or "NONE"
    meta = TiffMeta(path=p, dtype=dtype, lo=lo, hi=hi, shape=shape, axes=axes,
                    photometric=photometric, resolution=resolution, unit=unit,
                    physical=physical, imagej=ij, ome=ome, text_tags=tuple(texts),
                    extrasamples=extra)
    return arrays, meta


def _finite_range(arrays: list[np.ndarray]) -> tuple[float, float]:
    """Finite min and max over all pages (0, 1 if none is finite; hi > lo always)."""
    lo, hi = np.inf, -np.inf
    for a in arrays:
        if a.dtype.kind == "f":
            fin = a[np.isfinite(a)]
            if fin.size:
                lo, hi = min(lo, float(fin.min())), max(hi, float(fin.max()))
        else:
            lo, hi = min(lo, float(a.min())), max(hi, float(a.max()))
    if not np.isfinite(lo):
        return 0.0, 1.0
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def encode_tiff(pages: list[np.ndarray], meta: TiffMeta) -> bytes:
    """The bytes of a TIFF holding ``pages`` with ``meta`` (usually ``meta.scaled(s)``):
    ImageJ hyperstacks as ImageJ, OME as OME (the scaled XML), other stacks page by page;
    lossless (zlib)."""
    import tifffile

    res = {}
    if meta.resolution is not None:
        res["resolution"] = meta.resolution
        # no unit is written as NONE (tifffile's default would be INCH)
        res["resolutionunit"] = meta.unit if meta.unit and meta.unit != "NONE" else "NONE"
    extratags = [(code, "s", 0, text, True) for code, text in meta.text_tags]
    buf = _io.BytesIO()
    if meta.imagej is not None:
        md = {k: v for k, v in meta.imagej.items()
              if k in ("spacing", "unit", "finterval", "fps", "loop", "min", "max", "labels",
                       "Ranges", "LUTs", "mode")}
        stack = np.stack(pages).reshape(meta.shape)
        md["axes"] = meta.axes
        if "min" in md and "max" in md and meta.dtype.kind == "f":
            md.pop("min"), md.pop("max")
        dt = stack.dtype
        if dt == np.int16:  # ImageJ has no signed 16-bit; tifffile refuses it
            tifffile.imwrite(buf, stack, metadata=None, photometric=meta.photometric,
                             compression="zlib", extratags=extratags, **res)
        else:
            if dt == np.float64:
                stack = stack.astype(np.float32)
            tifffile.imwrite(buf, stack, imagej=True, metadata=md, compression="zlib",
                             extratags=extratags, **res)
        return buf.getvalue()
    with tifffile.TiffWriter(buf, bigtiff=sum(a.nbytes for a in pages) > 2**31) as tw:
        for i, page in enumerate(pages):
            extra = None
            if page.ndim == 3 and page.shape[2] == 4:  # written as RGB + one extra sample:
                extra = list(meta.extrasamples[-1:]) or [2]  # as read, else unassociated alpha
            tw.write(page, photometric=meta.photometric, compression="zlib",
                     description=meta.ome.encode() if (i == 0 and meta.ome) else None,
                     metadata=None, extrasamples=extra,
                     extratags=extratags if i == 0 else [], **res)
    return buf.getvalue()


def write_tiff(path: str | os.PathLike[str], pages: list[np.ndarray], meta: TiffMeta, *,
               overwrite: bool = False) -> Path:
    """Write ``pages`` with ``meta`` to ``path`` atomically (see :func:`encode_tiff`)."""
    return encode_and_write(path, lambda: encode_tiff(pages, meta), "TIFF",
                            overwrite=overwrite)
