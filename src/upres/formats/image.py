"""Reading and writing images: the only place where files become arrays and back.

Arrays are numpy ``(H, W)`` (gray), ``(H, W, 2)`` (gray + alpha), ``(H, W, 3)`` (RGB) or
``(H, W, 4)`` (RGBA), uint8 or uint16. On read, EXIF orientation is applied, palette images become
RGB(A), CMYK becomes RGB (through its ICC profile when it has one), and 16-bit files stay 16-bit.
:class:`ImageInfo` keeps what the output should carry: format, ICC profile, EXIF.

Writes are atomic (a temporary file in the target folder, then a rename), so a failed or killed
write never leaves a half-written file, and never replace an existing file unless asked to.
"""

from __future__ import annotations

import contextlib
import io as _io
import os
import struct
import threading
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from upres.errors import ImageTooLargeError, UnsupportedImageError, UpresError
from upres.formats.files import atomic_write
from upres.formats.png import encode_png

__all__ = [
    "DEFAULT_MAX_PIXELS", "FORMAT_EXTS", "IMAGE_EXTS", "MAX_SIDE", "ImageInfo", "check_size",
    "encode_image", "format_for_suffix", "is_opaque", "is_tiff_bytes", "jpeg_quality_of",
    "read_image", "read_image_info", "read_rgb8", "to_8bit", "write_image",
]

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
#: output format name -> file suffix
FORMAT_EXTS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "TIFF": ".tiff", "BMP": ".bmp"}
_SUFFIX_FORMAT = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP",
                  ".tif": "TIFF", ".tiff": "TIFF", ".webp": "WEBP"}

#: Images with more pixels than this are refused before decoding (decompression bombs).
DEFAULT_MAX_PIXELS = 200_000_000


@dataclass(frozen=True)
class ImageInfo:
    """What a file was, for writing the output alike.

    ``format``: PIL format name (``PNG``, ``JPEG``, ...); ``bit_depth``: 8 or 16;
    ``icc_profile``: the colour profile to carry (None if none); ``exif``: EXIF bytes with the
    orientation reset to 1 (the pixels are already upright), or None; ``dpi``: the print
    resolution ``(x, y)`` in dots per inch, or None; ``jpeg_quality``: for a JPEG, the IJG quality
    (1-100) its luminance quantisation table corresponds to (what photo models' automatic
    clean-up strength reads), else None. An ordinary image's print DPI is kept as it
    is by an upscale (the print gets larger, not finer); physical pixel sizes of scientific
    images are handled by :mod:`upres.formats.tiff`. ``lossless``: a lossless WebP (VP8L),
    written lossless again.
    """

    format: str
    bit_depth: int
    icc_profile: bytes | None = None
    exif: bytes | None = None
    dpi: tuple[float, float] | None = None
    jpeg_quality: int | None = None
    lossless: bool = False


def format_for_suffix(path: str | os.PathLike[str]) -> str | None:
    """The image format a file name's suffix names (``"PNG"``, ``"JPEG"``, ...), or None."""
    return _SUFFIX_FORMAT.get(Path(path).suffix.lower())


# The IJG (libjpeg) luminance table at quality 50, row by row.
_IJG_LUMA = np.array([16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
                      14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
                      18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
                      49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99],
                     dtype=np.float64)


def jpeg_quality_of(img: Image.Image) -> int | None:
    """The IJG quality (1-100) whose scaled luminance table is closest to an open JPEG's own
    (what cameras and libjpeg write; other encoders' tables get the nearest), or None."""
    tables = getattr(img, "quantization", None)
    if not tables:
        return None
    q = np.sort(np.asarray(tables[min(tables)], dtype=np.float64))
    if q.size != 64:
        return None
    errs = []
    for quality in range(1, 101):
        s = 5000 / quality if quality < 50 else 200 - 2 * quality
        t = np.clip(np.floor((_IJG_LUMA * s + 50) / 100), 1, 255)
        errs.append(float(np.abs(np.sort(t) - q).mean()))
    return int(np.argmin(errs)) + 1


# -- reading -----------------------------------------------------------------------------------
_PIL_GUARD = threading.Lock()
_PIL_USERS = 0
_PIL_LIMIT: int | None = None


@contextlib.contextmanager
def _own_pixel_limit() -> Iterator[None]:
    """Pillow's decompression-bomb guard off while upres reads (its own ``max_pixels`` limit is
    checked from the header instead, and may be set higher), and put back as it was when the
    last concurrent reader is done, so an application that embeds upres keeps its guard."""
    global _PIL_USERS, _PIL_LIMIT
    with _PIL_GUARD:
        if _PIL_USERS == 0:
            _PIL_LIMIT = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
        _PIL_USERS += 1
    try:
        yield
    finally:
        with _PIL_GUARD:
            _PIL_USERS -= 1
            if _PIL_USERS == 0:
                Image.MAX_IMAGE_PIXELS = _PIL_LIMIT


def _open(path: Path, max_pixels: int | None) -> Image.Image:
    if not path.exists():
        raise UpresError(f"{path}: no such file")
    if not path.is_file():
        raise UpresError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise UpresError(f"{path}: file is empty")
    try:
        with warnings.catch_warnings():  # a damaged file gets our one line, not PIL's warnings
            warnings.simplefilter("ignore")
            img = Image.open(path)
    except UnidentifiedImageError:
        raise UnsupportedImageError(f"{path}: not an image file (format not recognised)") \
            from None
    except Image.DecompressionBombError as exc:  # only where Pillow's guard is on
        raise ImageTooLargeError(f"{path}: image too large ({exc})") from None
    except OSError as exc:
        raise UpresError(f"{path}: cannot open image ({exc})") from None
    limit = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    w, h = img.size
    if limit and w * h > limit:
        img.close()
        raise ImageTooLargeError(f"{path}: image too large ({w}x{h} = {w * h} pixels, limit "
                                 f"{limit}; raise it with --max-pixels)")
    return img


def _dpi(img: Image.Image) -> tuple[float, float] | None:
    """The print resolution PIL found (``(x, y)`` dots per inch), or None."""
    d = img.info.get("dpi")
    tags = getattr(img, "tag_v2", None)
    if tags is not None and 282 not in tags:  # a TIFF without XResolution: Pillow says 1 dpi
        return None
    try:
        x, y = float(d[0]), float(d[1])
    except (TypeError, ValueError, IndexError):
        return None
    return (x, y) if x > 0 and y > 0 else None


def _png_is_16bit(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(26)
    return len(head) == 26 and head[:8] == b"\x89PNG\r\n\x1a\n" and head[24] == 16


def _tiff_is_16bit(img: Image.Image) -> bool:
    bits = getattr(img, "tag_v2", {}).get(258)
    bits = bits if isinstance(bits, tuple) else (bits,)
    return 16 in bits


def _orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1..8) to an array, like ``ImageOps.exif_transpose``."""
    ops = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
           5: lambda a: np.swapaxes(a, 0, 1), 6: lambda a: np.rot90(a, -1),
           7: lambda a: np.swapaxes(a, 0, 1)[::-1, ::-1], 8: lambda a: np.rot90(a, 1)}
    return np.ascontiguousarray(ops[orientation](arr)) if orientation in ops else arr


def _decode_tiff(path: Path, max_pixels: int | None) -> tuple[np.ndarray, dict]:
    """A TIFF's first page as stored (tifffile: no orientation applied, any codec through
    imagecodecs), associated (premultiplied) alpha undone, and its tags that matter: ``{"icc",
    "orientation", "dpi"}``. For 16-bit TIFF and for what Pillow cannot open (16-bit gray +
    alpha)."""
    import tifffile

    from upres.formats.tiff import _page_array, _quiet_tifffile, page_resolution

    try:
        # opened here, not by tifffile, which resolves links (a server's upload is a memory
        # file at /proc/self/fd/N, whose link target is no path)
        with _quiet_tifffile(), open(path, "rb") as fh, \
                tifffile.TiffFile(fh, _multifile=False) as tf:
            page = tf.pages[0]
            limit = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
            if limit and page.imagewidth * page.imagelength > limit:
                raise ImageTooLargeError(
                    f"{path}: image too large ({page.imagewidth}x{page.imagelength} pixels, "
                    f"limit {limit}; raise it with --max-pixels)")
            pm = int(getattr(page, "photometric", 1))
            if pm not in (1, 2):  # MINISBLACK, RGB (min-is-white 16-bit is scientific TIFF)
                raise UnsupportedImageError(f"{path}: TIFF photometric interpretation {pm} "
                                            "(palette, CMYK, CIELab, ...) is not supported at "
                                            "this depth")
            a = _page_array(page)
            extra = tuple(int(v) for v in (getattr(page, "extrasamples", ()) or ()))
            tags = page.tags
            icc = tags[34675].value if 34675 in tags else None
            orientation = int(tags[274].value) if 274 in tags else 1
            dpi = page_resolution(page) if int(getattr(page, "resolutionunit", 2)) == 2 else None
    except UpresError:
        raise
    except Exception as exc:
        raise UpresError(f"{path}: cannot decode TIFF: truncated or corrupt "
                         f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
                         ) from None
    if a.dtype not in (np.uint8, np.uint16) or (a.ndim == 3 and a.shape[2] not in (2, 3, 4)):
        raise UnsupportedImageError(f"{path}: TIFF of {a.dtype} with shape {a.shape} is not "
                                    "an ordinary image")
    if a.ndim == 3 and a.shape[2] in (2, 4) and extra[:1] == (1,):  # ASSOCALPHA
        top = float(np.iinfo(a.dtype).max)
        alpha = a[:, :, -1:].astype(np.float64)
        colour = a[:, :, :-1].astype(np.float64) * top / np.maximum(alpha, 1.0)
        a = np.concatenate([np.clip(np.floor(colour + 0.5), 0, top).astype(a.dtype),
                            a[:, :, -1:]], axis=2)
    if isinstance(icc, str):
        icc = icc.encode("latin-1")
    return np.ascontiguousarray(a), {"icc": bytes(icc) if icc else None,
                                     "orientation": orientation, "dpi": dpi}


def _webp_lossless(path: Path) -> bool:
    """True if a WebP's image chunk is VP8L (lossless), walking its RIFF chunks."""
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WEBP":
            return False
        for _ in range(64):
            ch = f.read(8)
            if len(ch) < 8:
                return False
            kind, size = ch[:4], int.from_bytes(ch[4:], "little")
            if kind in (b"VP8L", b"VP8 ", b"ANMF"):
                return kind == b"VP8L"
            f.seek(size + (size & 1), 1)
    return False


def _decode_16bit(path: Path) -> np.ndarray:
    data = np.fromfile(path, dtype=np.uint8)
    arr = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise UpresError(f"{path}: cannot decode 16-bit image (truncated or corrupt)")
    if arr.dtype != np.uint16:
        arr = arr.astype(np.uint16) * 257 if arr.dtype == np.uint8 else arr
    if arr.ndim == 3 and arr.shape[2] == 3:
        arr = arr[:, :, ::-1]
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, [2, 1, 0, 3]]
        if data[:8].tobytes() == b"\x89PNG\r\n\x1a\n" and data.size > 25 and data[25] == 4:
            arr = arr[:, :, [0, 3]]  # a gray + alpha PNG, which OpenCV expands to RGBA
    return np.ascontiguousarray(arr)


#: TIFF/EXIF tags that describe pixel layout (size, samples, strips): never copied to an output.
_STRUCTURE_TAGS = (256, 257, 258, 259, 262, 273, 277, 278, 279, 284, 317, 322, 323, 324, 325,
                   338, 339)

_SRGB: bytes | None = None


def _srgb_profile() -> bytes:
    global _SRGB
    if _SRGB is None:
        _SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    return _SRGB


def _pil_to_array(img: Image.Image, path: Path) -> tuple[np.ndarray, bytes | None]:
    """Pixels of a loaded PIL image and the ICC profile that now describes them."""
    icc = img.info.get("icc_profile") or None
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img)
        if arr.min() < 0 or arr.max() > 65535:
            raise UnsupportedImageError(f"{path}: 32-bit integer pixels are out of the 16-bit "
                                        "range")
        arr = arr.astype(np.uint16)
        t = img.info.get("transparency")
        if isinstance(t, int):  # a PNG tRNS gray value: that value is transparent
            arr = np.stack([arr, np.where(arr == t, 0, 65535).astype(np.uint16)], axis=2)
        return arr, icc
    if mode == "F":
        raise UnsupportedImageError(f"{path}: floating-point images are not supported")
    if mode == "CMYK":
        if icc:
            try:
                src = ImageCms.ImageCmsProfile(_io.BytesIO(icc))
                img = ImageCms.profileToProfile(img, src, ImageCms.createProfile("sRGB"),
                                                outputMode="RGB")
                return np.asarray(img).copy(), _srgb_profile()
            except (ImageCms.PyCMSError, OSError):
                pass
        return np.asarray(img.convert("RGB")).copy(), None
    if mode == "1":
        img = img.convert("L")
    elif mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode == "PA" or (mode == "RGB" and "transparency" in img.info):
        img = img.convert("RGBA")  # (a PNG tRNS colour is transparent)
    elif mode == "L" and "transparency" in img.info:
        img = img.convert("LA")
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        img = img.convert("RGBA" if "A" in mode else "RGB")
    return np.asarray(img).copy(), icc


def is_tiff_bytes(head: bytes) -> bool:
    """Whether ``head`` (a file's first bytes) starts as a TIFF or BigTIFF does (either byte
    order)."""
    return head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def _is_tiff(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return is_tiff_bytes(f.read(4))
    except OSError:
        return False


def read_image_info(path: str | os.PathLike[str], *,
                    max_pixels: int | None = None) -> tuple[np.ndarray, ImageInfo]:
    """Read an image file and what its output should carry.

    Returns ``(pixels, info)``: pixels uint8/uint16 of shape ``(H, W)``, ``(H, W, 2)``,
    ``(H, W, 3)`` or ``(H, W, 4)``, upright (EXIF orientation applied).

    Raises:
        UpresError: one line naming the file and the problem (missing, empty, not an image,
            truncated or corrupt, larger than ``max_pixels``).
    """
    p = Path(path)
    with _own_pixel_limit():
        try:
            img = _open(p, max_pixels)
        except UnsupportedImageError:
            if not _is_tiff(p):  # by its bytes: an upload's temporary file has no suffix
                raise
            arr, tags = _decode_tiff(p, max_pixels)  # e.g. 16-bit gray + alpha
            arr = _orient(arr, tags["orientation"])
            return arr, ImageInfo(format="TIFF", bit_depth=8 * arr.dtype.itemsize,
                                  icc_profile=tags["icc"], dpi=tags["dpi"])
        return _read_opened(p, img, max_pixels)


def _read_opened(p: Path, img: Image.Image,
                 max_pixels: int | None) -> tuple[np.ndarray, ImageInfo]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            fmt = img.format or "PNG"
            if fmt == "MPO":  # a JPEG with an MPF index (camera previews, gain maps)
                fmt = "JPEG"
            dpi = _dpi(img)
            quality = jpeg_quality_of(img) if fmt == "JPEG" else None
            frames = int(getattr(img, "n_frames", 1) or 1)
            if frames > 1 and fmt in ("GIF", "PNG", "WEBP"):
                raise UnsupportedImageError(f"{p}: animated {fmt} ({frames} frames); only still "
                                            "images are upscaled (extract the frames first)")
            exif = img.getexif()
            orientation = int(exif.get(0x0112, 1) or 1)
            sixteen = (fmt == "PNG" and _png_is_16bit(p)) or (fmt == "TIFF"
                                                               and _tiff_is_16bit(img))
            if sixteen and fmt == "TIFF":  # as stored: OpenCV would orient it as well
                arr, tags = _decode_tiff(p, max_pixels)
                icc = tags["icc"] or img.info.get("icc_profile") or None
                arr = _orient(arr, orientation)
            elif sixteen and img.mode not in ("I;16", "I;16B", "I;16L", "I"):
                icc = img.info.get("icc_profile") or None
                arr = _orient(_decode_16bit(p), orientation)
            else:
                img.load()
                img = ImageOps.exif_transpose(img)
                arr, icc = _pil_to_array(img, p)
    except UpresError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error) as exc:
        raise UpresError(f"{p}: cannot decode image: truncated or corrupt ({exc})") from None
    finally:
        img.close()
    if 0x0112 in exif:
        exif[0x0112] = 1
    for tag in _STRUCTURE_TAGS:  # the output has its own size and layout
        exif.pop(tag, None)
    if 0x8769 in exif:  # get_ifd of an absent IFD adds an empty one, which TIFF cannot write
        with contextlib.suppress(Exception):
            sub = exif.get_ifd(0x8769)  # Exif IFD: PixelX/YDimension, the old size
            for tag in (0xA002, 0xA003):
                sub.pop(tag, None)
            if not sub:
                del exif[0x8769]
    # A TIFF's "EXIF" is its own directory of layout tags: carry none of it.
    exif_bytes = exif.tobytes() if len(exif) and fmt != "TIFF" else None
    info = ImageInfo(format=fmt, bit_depth=16 if arr.dtype == np.uint16 else 8,
                     icc_profile=icc, exif=exif_bytes, dpi=dpi, jpeg_quality=quality,
                     lossless=fmt == "WEBP" and _webp_lossless(p))
    return arr, info


def read_image(path: str | os.PathLike[str], *, max_pixels: int | None = None) -> np.ndarray:
    """Read an image file as uint8/uint16 ``(H, W[, C])`` pixels; see :func:`read_image_info`."""
    return read_image_info(path, max_pixels=max_pixels)[0]


def to_8bit(arr: np.ndarray) -> np.ndarray:
    """uint16 -> uint8 by rounding (``v / 257``); uint8 unchanged."""
    if arr.dtype == np.uint8:
        return arr
    return np.floor(arr.astype(np.float64) / 257.0 + 0.5).astype(np.uint8)


def read_rgb8(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image as 8-bit RGB ``(H, W, 3)`` uint8, as the evaluation protocol wants.

    Gray becomes three equal channels; alpha is dropped; 16-bit is rounded to 8-bit.
    """
    arr = to_8bit(read_image(path))
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.shape[2] <= 2:
        arr = np.repeat(arr[:, :, :1], 3, axis=2)
    return np.ascontiguousarray(arr[:, :, :3])


# -- writing -----------------------------------------------------------------------------------
def _encode_16bit_tiff(arr: np.ndarray, info: ImageInfo | None) -> bytes:
    """16-bit TIFF (tifffile, zlib, with the ICC profile and resolution tags)."""
    import tifffile

    buf = _io.BytesIO()
    extratags = []
    if info and info.icc_profile:
        extratags.append((34675, 7, len(info.icc_profile), info.icc_profile, True))
    photometric = "minisblack" if arr.ndim == 2 or arr.shape[2] <= 2 else "rgb"
    extra = "unassalpha" if arr.ndim == 3 and arr.shape[2] in (2, 4) else None
    res = dict(resolution=info.dpi, resolutionunit="INCH") if info and info.dpi else {}
    text = _tiff_text_tags(info.exif if info else None)
    extratags += [(t, "s", 0, v, True) for t, v in text.items() if t not in (270, 305)]
    tifffile.imwrite(buf, arr, photometric=photometric, compression="zlib", metadata=None,
                     description=text.get(270), software=text.get(305, False),
                     extrasamples=[extra] if extra else None, extratags=extratags, **res)
    return buf.getvalue()


#: EXIF sub-directories (Exif, GPS, Interoperability): libtiff cannot write their pointers
_SUB_IFDS = (0x8769, 0x8825, 0xA005)
#: the EXIF main-directory text tags a 16-bit TIFF carries (description, make, model,
#: software, date, artist, copyright)
_TEXT_TAGS = (270, 271, 272, 305, 306, 315, 33432)


def _tiff_exif(exif: bytes) -> Image.Exif | None:
    """What of ``exif`` a TIFF written through libtiff can hold: its main directory (camera
    make and model, date, software, ...); the Exif, GPS and Interoperability sub-directories
    are left out (libtiff refuses their pointers). None when nothing is left."""
    e = Image.Exif()
    e.load(exif)
    for tag in _SUB_IFDS:
        e.pop(tag, None)
    return e if len(e) else None


def _tiff_text_tags(exif: bytes | None) -> dict[int, str]:
    """The text tags of ``exif``'s main directory (ASCII, non-empty), by tag number."""
    if not exif:
        return {}
    e = Image.Exif()
    e.load(exif)
    return {t: v for t in _TEXT_TAGS if isinstance(v := e.get(t), str) and v and v.isascii()}


def _encode_8bit(arr: np.ndarray, fmt: str, info: ImageInfo | None, quality: int) -> bytes:
    img = Image.fromarray(arr)
    kw: dict = {}
    if info and info.icc_profile and fmt != "BMP":
        kw["icc_profile"] = info.icc_profile
    if info and info.exif and fmt in ("JPEG", "PNG", "WEBP"):
        kw["exif"] = info.exif
    elif info and info.exif and fmt == "TIFF":
        exif = _tiff_exif(info.exif)
        if exif is not None:
            kw["exif"] = exif
    if info and info.dpi and fmt in ("JPEG", "PNG", "TIFF", "BMP"):
        kw["dpi"] = info.dpi
    if fmt in ("JPEG", "WEBP"):
        kw["quality"] = quality
    if fmt == "WEBP" and info and info.lossless:
        kw["lossless"] = True
    if fmt == "WEBP" and "icc_profile" in kw and kw["icc_profile"][16:20] == b"GRAY":
        del kw["icc_profile"]  # WebP stores gray as RGB, which a gray profile cannot describe
    if fmt == "TIFF":
        kw["compression"] = "tiff_deflate"
    if fmt == "JPEG" and len(kw.get("exif", b"")) > _JPEG_EXIF_MAX:
        raise UpresError(f"its EXIF ({len(kw['exif'])} bytes) is more than JPEG holds "
                         f"({_JPEG_EXIF_MAX}); choose png, webp or tiff")
    buf = _io.BytesIO()
    try:
        img.save(buf, format=fmt, **kw)
    except (ValueError, OSError, RuntimeError) as exc:  # encoder limits (libtiff: RuntimeError)
        raise UpresError(f"the {fmt} encoder refused it ({exc})") from None
    return buf.getvalue()


#: The largest side each format can hold (WebP: 14-bit sizes; JPEG: libjpeg's own ceiling,
#: below the format's 65535).
MAX_SIDE = {"WEBP": 16383, "JPEG": 65500}
_JPEG_EXIF_MAX = 65533  # an APP1 segment's length field, less the "Exif\0\0" header's share


def check_size(fmt: str, width: int, height: int) -> None:
    """Refuse an output of ``width`` x ``height`` that ``fmt`` cannot hold, before any work.

    Raises:
        UpresError: one line with the size, the format's limit and what to choose instead.
    """
    side = MAX_SIDE.get(fmt)
    if side is not None and max(width, height) > side:
        raise UpresError(f"a {width}x{height} output is larger than {fmt} holds (at most "
                         f"{side} pixels a side); choose png or tiff")


def is_opaque(arr: np.ndarray) -> bool:
    """True if ``arr`` has no alpha channel, or its alpha (last of 2 or 4 channels) is the
    dtype's maximum everywhere."""
    if arr.ndim != 3 or arr.shape[2] not in (2, 4):
        return True
    return bool((arr[:, :, -1] == np.iinfo(arr.dtype).max).all())


def encode_image(arr: np.ndarray, fmt: str, *, info: ImageInfo | None = None,
                 quality: int = 95) -> bytes:
    """Encode pixels as one file's bytes in ``fmt`` (``PNG``, ``JPEG``, ``WEBP``, ``TIFF``,
    ``BMP``); see :func:`write_image` for the pixels accepted and the bit depths kept.

    Raises:
        UpresError: the pixels cannot be written in ``fmt`` (dtype, alpha to JPEG or BMP).
    """
    a = np.asarray(arr)
    if a.dtype not in (np.uint8, np.uint16):
        raise UpresError(f"cannot write {a.dtype} pixels")
    check_size(fmt, a.shape[1], a.shape[0])
    alpha = a.ndim == 3 and a.shape[2] in (2, 4)
    if alpha and fmt in ("JPEG", "BMP"):
        if not is_opaque(a):
            raise UpresError(f"{fmt} cannot hold transparency; choose png, webp or tiff")
        a = a[:, :, :-1] if a.shape[2] == 4 else a[:, :, 0]  # an alpha of all opaque: dropped
    if fmt == "PNG":  # 8 or 16 bits, our own fast writer (upres.formats.png)
        try:
            return encode_png(a, icc_profile=info.icc_profile if info else None,
                              dpi=info.dpi if info else None, exif=info.exif if info else None)
        except ValueError as exc:
            raise UpresError(str(exc)) from None
    if a.dtype == np.uint16 and fmt == "TIFF":
        return _encode_16bit_tiff(a, info)
    a8 = to_8bit(a)
    if a8.ndim == 3 and a8.shape[2] == 2 and fmt == "WEBP":  # WebP has no gray+alpha
        a8 = np.concatenate([np.repeat(a8[:, :, :1], 3, axis=2), a8[:, :, 1:]], axis=2)
    return _encode_8bit(a8, fmt, info, quality)


def write_image(
    path: str | os.PathLike[str], arr: np.ndarray, *, info: ImageInfo | None = None,
    overwrite: bool = False, quality: int = 95,
) -> Path:
    """Write pixels to ``path`` atomically; the format comes from the suffix.

    ``arr``: uint8/uint16 ``(H, W)``, ``(H, W, 2)``, ``(H, W, 3)`` or ``(H, W, 4)``. 16-bit stays
    16-bit in PNG and TIFF and is rounded to 8-bit for JPEG, WebP and BMP. ``info`` carries the
    ICC profile and EXIF of the source.

    Raises:
        UpresError: the file exists and ``overwrite`` is False, the suffix is unknown, or the
            format cannot hold the pixels (alpha to JPEG or BMP).
    """
    p = Path(path)
    fmt = format_for_suffix(p)
    if fmt is None:
        raise UpresError(f"{p}: unknown output format {p.suffix!r} (png, jpg, webp, tiff, bmp)")
    if p.exists() and not overwrite:
        raise UpresError(f"{p}: already exists (use --overwrite to replace it)")
    try:
        data = encode_image(arr, fmt, info=info, quality=quality)
    except UpresError as exc:
        raise UpresError(f"{p}: {exc}") from None
    return atomic_write(p, data, overwrite=overwrite)
