"""The one exception type upres raises for bad input: its message is a single line for users."""

from __future__ import annotations

__all__ = ["ImageTooLargeError", "NotEnoughMemoryError", "UnsupportedImageError", "UpresError",
           "one_line"]


class UpresError(Exception):
    """A user-facing error (bad file, bad argument); ``str(err)`` is one line naming the problem."""


class UnsupportedImageError(UpresError):
    """The bytes are not an image upres reads (unknown format, unsupported pixel type)."""


class ImageTooLargeError(UpresError):
    """The image has more pixels than the configured limit (refused before decoding)."""


class NotEnoughMemoryError(UpresError):
    """The output's arrays would not fit in the memory available (refused before the work)."""


def one_line(exc: BaseException, limit: int | None = None) -> str:
    """A third-party exception's message on one line (at most ``limit`` characters), or its
    type's name when it has none: for the parenthesis of an :class:`UpresError`."""
    return " ".join(str(exc).split())[:limit] or type(exc).__name__
