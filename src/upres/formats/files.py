"""Writing a file safely: the one place every format writer ends (atomic, never overwriting)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from upres.errors import UpresError

__all__ = ["atomic_write", "check_writable", "encode_and_write"]


def _umask() -> int:
    """The process's umask (read from /proc where it can be, without changing it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    old = os.umask(0o022)  # elsewhere: read by setting it, then put it back at once
    os.umask(old)
    return old


def check_writable(path: Path, overwrite: bool) -> None:
    """Raise UpresError if ``path`` exists and ``overwrite`` is False."""
    if path.exists() and not overwrite:
        raise UpresError(f"{path}: already exists (use --overwrite to replace it)")


def atomic_write(path: str | os.PathLike[str], data: bytes, *, overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename, so a
    failed or killed write never leaves a half-written file; an existing file is replaced only
    if ``overwrite``. The file gets the mode a plain ``open()`` would give it (the replaced
    file's mode, or 0666 less the umask)."""
    p = Path(path)
    check_writable(p, overwrite)
    tmp = None
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        mode = (p.stat().st_mode & 0o777) if p.exists() else 0o666 & ~_umask()
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".part", dir=p.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        check_writable(p, overwrite)
        os.replace(tmp, p)
    except OSError as exc:  # read-only folder, disk full, permission denied
        raise UpresError(f"{p}: cannot write ({exc.strerror or exc})") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    return p


def encode_and_write(path: str | os.PathLike[str], encode: Callable[[], bytes], what: str, *,
                     overwrite: bool = False) -> Path:
    """Refuse an existing ``path`` (unless ``overwrite``) before any work, run ``encode`` and
    write its bytes with :func:`atomic_write`. Any failure of ``encode`` becomes one
    UpresError line naming the file (``what``: the kind of file, for the message)."""
    p = Path(path)
    check_writable(p, overwrite)
    try:
        data = encode()
    except UpresError as exc:
        raise UpresError(f"{p}: {exc}") from None
    except Exception as exc:  # encoders (pydicom, tifffile) raise many kinds
        raise UpresError(f"{p}: cannot encode {what} ({type(exc).__name__}: {exc})") from None
    return atomic_write(p, data, overwrite=overwrite)
