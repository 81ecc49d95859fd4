"""The file layer: one module per kind of file, each a reader and a writer of the same shape.

A reader gives the pixels (one or more frames or pages, in the file's own dtype) and a frozen
metadata object; the pipeline (:mod:`upres.convert`) runs the network on the pixels, asks the
metadata what it is after an upscale by ``s`` (``scaled``), and the writer of the same kind
writes both. Kinds: ``image`` (PNG, JPEG, WebP, BMP, GIF, ordinary TIFF: :mod:`.image`),
``dicom`` (:mod:`.dicom`), ``tiff`` (scientific TIFF: float, signed, stacks, physical units:
:mod:`.tiff`), ``geotiff`` (georeferenced rasters through rasterio, read and written window by
window, never whole: :mod:`.geotiff`, run by :func:`upres.raster.upscale_raster`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from upres.errors import UpresError

__all__ = [
    "INPUT_EXTS",
    "KIND_EXTS",
    "Document",
    "kind_of",
    "looks_like_input",
    "read",
    "write",
]

#: Suffixes a folder listing takes (DICOM files without a suffix are found by their header).
INPUT_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".avif",
              ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".dcm", ".dicom", ".dic", ".ima")
#: Suffixes an output of a DICOM or scientific TIFF input may have (the first is the default).
KIND_EXTS = {"dicom": (".dcm", ".dicom", ".dic", ".ima"), "tiff": (".tif", ".tiff"),
             "geotiff": (".tif", ".tiff")}


@dataclass(frozen=True)
class Document:
    """One input file as the pipeline sees it.

    ``kind``: ``"image"``, ``"dicom"`` or ``"tiff"``; ``frames``: the pixels, each ``(H, W)`` or
    ``(H, W, C)`` in the file's dtype (one for an image, every frame or page otherwise);
    ``meta``: :class:`~upres.formats.image.ImageInfo`, :class:`~upres.formats.dicom.DicomMeta`
    or :class:`~upres.formats.tiff.TiffMeta`.
    """

    kind: str
    frames: tuple[np.ndarray, ...]
    meta: Any

    @property
    def suffix(self) -> str:
        """The file suffix an output of the same kind gets by default."""
        if self.kind in KIND_EXTS:
            return KIND_EXTS[self.kind][0]
        from upres.formats.image import FORMAT_EXTS

        return FORMAT_EXTS.get(self.meta.format, ".png")


def kind_of(path: str | os.PathLike[str], *, raster: bool = False) -> str:
    """Which reader a file goes to: ``"dicom"``, ``"geotiff"``, ``"tiff"`` or ``"image"``.

    A TIFF with GeoTIFF tags is ``geotiff``; with ``raster`` (``--format gtiff|cog``) every
    file but DICOM is, and goes to GDAL (which refuses what it cannot read)."""
    from upres.formats.dicom import is_dicom
    from upres.formats.geotiff import is_geotiff
    from upres.formats.tiff import is_scientific

    if is_dicom(path):
        return "dicom"
    if raster or is_geotiff(path):  # with raster: whatever GDAL opens (the reader says if not)
        return "geotiff"
    if is_scientific(path):
        return "tiff"
    return "image"


def looks_like_input(path: Path, *, raster: bool = False) -> bool:
    """Whether a folder listing should take ``path``: a known suffix (with ``raster``, also
    the suffixes of other rasters GDAL reads), or a DICOM header."""
    from upres.formats.geotiff import GDAL_EXTS

    if path.name.upper() == "DICOMDIR":  # a DICOM CD's index, not an image
        return False
    if path.suffix.lower() in INPUT_EXTS or (raster and path.suffix.lower() in GDAL_EXTS):
        return True
    if path.suffix and path.suffix[1:].isalpha() and len(path.suffix) <= 5:
        return False  # a named kind of file that is not an image (.txt, .json, ...)
    from upres.formats.dicom import is_dicom

    return is_dicom(path)  # DICOM series often have no suffix, or numbers as one


def read(path: str | os.PathLike[str], *, max_pixels: int | None = None) -> Document:
    """Read any supported file into a :class:`Document`.

    Raises:
        UpresError: one line naming the file and the problem.
    """
    kind = kind_of(path)
    if kind == "geotiff":
        raise UpresError(f"{path}: a GeoTIFF is read window by window, never whole; use "
                         "upres.upscale_file (or upres.raster.upscale_raster)")
    if kind == "dicom":
        from upres.formats.dicom import read_dicom

        frames, meta = read_dicom(path, max_pixels=max_pixels)
        return Document("dicom", tuple(frames), meta)
    if kind == "tiff":
        from upres.formats.tiff import read_tiff

        pages, tmeta = read_tiff(path, max_pixels=max_pixels)
        return Document("tiff", tuple(pages), tmeta)
    from upres.formats.image import read_image_info

    arr, info = read_image_info(path, max_pixels=max_pixels)
    return Document("image", (arr,), info)


def write(path: str | os.PathLike[str], doc: Document, *, overwrite: bool = False,
          quality: int = 95) -> Path:
    """Write ``doc`` with the writer of its kind, atomically (never a half-written file; an
    existing file only with ``overwrite``)."""
    if doc.kind == "dicom":
        from upres.formats.dicom import write_dicom

        return write_dicom(path, list(doc.frames), doc.meta, overwrite=overwrite)
    if doc.kind == "tiff":
        from upres.formats.tiff import write_tiff

        return write_tiff(path, list(doc.frames), doc.meta, overwrite=overwrite)
    from upres.formats.image import write_image

    return write_image(path, doc.frames[0], info=doc.meta, overwrite=overwrite, quality=quality)
