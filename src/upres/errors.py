"""The one exception type upres raises for bad input: its message is a single line for users."""

from __future__ import annotations

__all__ = ["UpresError"]


class UpresError(Exception):
    """A user-facing error (bad file, bad argument); ``str(err)`` is one line naming the problem."""
