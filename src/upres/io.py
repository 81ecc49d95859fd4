"""Reading and writing images: the only place where files become arrays and back.

Arrays are numpy ``(H, W)`` (gray), ``(H, W, 3)`` (RGB) or ``(H, W, 4)`` (RGBA), uint8 or
uint16. EXIF orientation is applied on read. Writes are atomic (a temporary file renamed into
place), so a failed write never leaves a half-written file, and never replace an existing file
unless asked to.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from upres.errors import UpresError

__all__ = ["IMAGE_EXTS", "read_image", "read_rgb8", "write_image"]

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

#: Refuse images with more pixels than this (decompression bombs); ``None`` disables the check.
MAX_PIXELS = 400_000_000


def _open(path: Path) -> Image.Image:
    if not path.is_file():
        raise UpresError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise UpresError(f"{path}: file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = MAX_PIXELS
            img = Image.open(path)
            img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UpresError(f"{path}: image too large ({exc})") from None
    except UnidentifiedImageError:
        raise UpresError(f"{path}: not an image file (format not recognised)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise UpresError(f"{path}: cannot decode image ({exc})") from None
    return ImageOps.exif_transpose(img)


def _to_array(img: Image.Image, path: Path) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img)
        if mode == "I" and (arr.min() < 0 or arr.max() > 65535):
            raise UpresError(f"{path}: 32-bit integer pixels out of 16-bit range")
        return arr.astype(np.uint16)
    if mode == "1":
        img = img.convert("L")
    elif mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode == "LA" or mode == "PA":
        img = img.convert("RGBA")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        img = img.convert("RGB")
    elif mode == "F":
        raise UpresError(f"{path}: floating-point images are not supported")
    elif mode not in ("L", "RGB", "RGBA"):
        img = img.convert("RGB")
    return np.asarray(img).copy()


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as uint8/uint16 ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)``.

    Raises:
        UpresError: one line naming the file and the problem (missing, empty, not an image,
            truncated, too large).
    """
    p = Path(path)
    return _to_array(_open(p), p)


def read_rgb8(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image as 8-bit RGB ``(H, W, 3)`` uint8, as the evaluation protocol wants.

    Gray becomes three equal channels; alpha is dropped; 16-bit is rounded to 8-bit.
    """
    arr = read_image(path)
    if arr.dtype == np.uint16:
        arr = np.floor(arr.astype(np.float64) / 257.0 + 0.5).astype(np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    return np.ascontiguousarray(arr[:, :, :3])


_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP",
            ".tif": "TIFF", ".tiff": "TIFF", ".webp": "WEBP"}


def write_image(
    path: str | os.PathLike[str], arr: np.ndarray, *, overwrite: bool = False, quality: int = 95
) -> Path:
    """Write ``arr`` (uint8/uint16, gray/RGB/RGBA) to ``path`` atomically; format from the suffix.

    Raises:
        UpresError: the file exists and ``overwrite`` is False, the suffix is unknown, or the
            format cannot hold the array (e.g. RGBA to JPEG).
    """
    p = Path(path)
    fmt = _FORMATS.get(p.suffix.lower())
    if fmt is None:
        raise UpresError(f"{p}: unknown output format {p.suffix!r}")
    if p.exists() and not overwrite:
        raise UpresError(f"{p}: already exists (use --overwrite to replace it)")
    a = np.asarray(arr)
    sixteen_ok = fmt in ("PNG", "TIFF")
    if a.dtype not in (np.uint8, np.uint16) or (a.dtype == np.uint16 and not sixteen_ok):
        raise UpresError(f"{p}: cannot write {a.dtype} pixels as {fmt}")
    if a.ndim == 3 and a.shape[2] == 4 and fmt == "JPEG":
        raise UpresError(f"{p}: JPEG cannot hold transparency; choose png, webp or tiff")
    if a.dtype == np.uint16:
        if a.ndim == 2:
            img = Image.fromarray(a.astype("<u2"), mode="I;16")
        else:
            raise UpresError(f"{p}: 16-bit colour output is not supported yet")
    else:
        img = Image.fromarray(a)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".part", dir=p.parent)
    os.close(fd)
    try:
        img.save(tmp, format=fmt, **({"quality": quality} if fmt in ("JPEG", "WEBP") else {}))
        if not overwrite and p.exists():
            raise UpresError(f"{p}: already exists (use --overwrite to replace it)")
        os.replace(tmp, p)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return p
