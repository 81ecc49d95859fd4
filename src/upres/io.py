"""Kept for existing callers: the image reader and writer now live in :mod:`upres.formats.image`
(one module per file kind under :mod:`upres.formats`)."""

from upres.formats.image import (
                                 DEFAULT_MAX_PIXELS,
                                 FORMAT_EXTS,
                                 IMAGE_EXTS,
                                 ImageInfo,
                                 encode_image,
                                 format_for_suffix,
                                 read_image,
                                 read_image_info,
                                 read_rgb8,
                                 to_8bit,
                                 write_image,
)

__all__ = [
    "DEFAULT_MAX_PIXELS", "FORMAT_EXTS", "IMAGE_EXTS", "ImageInfo", "encode_image",
    "format_for_suffix", "read_image", "read_image_info", "read_rgb8", "to_8bit", "write_image",
]
