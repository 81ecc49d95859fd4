"""Writing a file safely: the one place every format writer ends (atomic, never overwriting).

Every output is written under a hidden temporary name in its own folder,
``.NAME.HOST-PID-RANDOM.part[SUFFIX]``, and then *committed*: without ``overwrite`` by a hard
link to the output name (which fails if the name exists, so two attempts at the same output,
on one machine or many sharing a file system, can never both write it) and the removal of the
temporary; with ``overwrite`` by a rename over it. A killed writer leaves only its hidden
temporary, which :func:`sweep_stale` removes later.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import socket
import time
from collections.abc import Callable
from pathlib import Path

from upres.errors import UpresError

__all__ = ["OutputExistsError", "atomic_write", "check_output", "check_writable", "commit",
           "default_mode", "encode_and_write", "is_temporary", "sweep_stale", "temp_path"]

def _host_tag() -> str:
    """This host's name, its PID namespace and its boot where Linux says them: containers that
    share a host name (and a folder) but not their process IDs, and machines whose names
    differ only in punctuation, must not judge each other's writers (the namespace number
    alone is the same on every Linux host)."""
    tag = re.sub(r"\W", "_", socket.gethostname(), flags=re.ASCII) or "host"
    with contextlib.suppress(OSError):
        tag += f"_ns{os.stat('/proc/self/ns/pid').st_ino}"
    with contextlib.suppress(OSError), open("/proc/sys/kernel/random/boot_id") as f:
        tag += "_" + f.read().strip().replace("-", "")[:12]
    return tag


_HOST = _host_tag()
#: A temporary of another machine is taken as abandoned after this many seconds unchanged.
STALE_SECONDS = 3600.0


class OutputExistsError(UpresError):
    """The output name is taken (by an earlier run, or another attempt that committed first)."""


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


def default_mode() -> int:
    """The mode a plain ``open()`` gives a new file: 0666 less the umask."""
    return 0o666 & ~_umask()


def check_writable(path: Path, overwrite: bool) -> None:
    """Raise OutputExistsError if ``path`` exists and ``overwrite`` is False."""
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path}: already exists (use --overwrite to replace it)")


def check_output(src: str | os.PathLike[str], dst: str | os.PathLike[str],
                 overwrite: bool) -> None:
    """Whether ``dst`` may be written as the output of ``src``: never when it is the input
    itself (an upscale never replaces its source, ``overwrite`` or not) or a folder; an
    existing file only with ``overwrite``.

    Raises:
        UpresError: the output is the input, or a folder.
        OutputExistsError: ``dst`` exists and ``overwrite`` is False.
    """
    src, dst = Path(src), Path(dst)
    with contextlib.suppress(OSError):
        if dst.resolve() == src.resolve() or (dst.exists() and os.path.samefile(dst, src)):
            raise UpresError(f"{src}: the output would replace the input; name another "
                             "output (-o) or keep a --suffix")
    if dst.is_dir():
        raise UpresError(f"{dst}: is a folder, not a file; name another output or move the "
                         "folder")
    check_writable(dst, overwrite)


def temp_path(path: str | os.PathLike[str], suffix: str = "") -> Path:
    """A fresh hidden temporary name beside ``path`` (this host, this process, random)."""
    p = Path(path)
    return p.with_name(f".{p.name}.{_HOST}-{os.getpid()}-{secrets.token_hex(4)}.part{suffix}")


_TEMP_NAME = re.compile(r"\..+\.\w+-\d+-[0-9a-f]{8}\.part[^/]*", re.DOTALL | re.ASCII)


def is_temporary(f: Path) -> bool:
    """Whether ``f`` is named exactly as :func:`temp_path` names (``.NAME.HOST-PID-RANDOM.part``
    and a suffix), so a user's own hidden ``.x.part2.jpg`` is never taken for one."""
    return _TEMP_NAME.fullmatch(f.name) is not None


def _owner(f: Path) -> tuple[str, int] | None:
    """``(host, pid)`` from a temporary's name, or None."""
    try:
        tag = f.name.rsplit(".part", 1)[0].rsplit(".", 1)[1]
        host, pid, _ = tag.rsplit("-", 2)
        return host, int(pid)
    except (IndexError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):  # not ours, or no such PID can exist
        return True
    return True


def sweep_stale(folder: str | os.PathLike[str], name: str | None = None, *,
                recursive: bool = False, this_host_only: bool = False) -> list[Path]:
    """Remove abandoned temporaries in ``folder`` (only those of output ``name``, if given):
    those of a process of this host that is gone, and those of other hosts (or older naming)
    unchanged for :data:`STALE_SECONDS` (not with ``this_host_only``: for folders that hold
    the user's own files, where only names upres certainly made may go). Returns what was
    removed."""
    d = Path(folder)
    if not d.is_dir():
        return []
    pattern = f".{name}.*.part*" if name else ".*.part*"
    gone = []
    now = time.time()
    for f in (d.rglob(pattern) if recursive else d.glob(pattern)):
        if not f.is_file() or not is_temporary(f):
            continue
        owner = _owner(f)
        if owner and owner[0] == _HOST:
            stale = owner[1] != os.getpid() and not _alive(owner[1])
        elif this_host_only:
            continue
        else:
            try:
                stale = now - f.stat().st_mtime > STALE_SECONDS
            except OSError:
                continue
        if stale:
            with contextlib.suppress(OSError):
                f.unlink()
                gone.append(f)
    return gone


def commit(tmp: Path, path: Path, *, overwrite: bool = False) -> Path:
    """Give the finished temporary ``tmp`` the name ``path`` (see the module docstring).

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is False (``tmp`` is removed).
        OSError: the file system refused.
    """
    if overwrite:
        os.replace(tmp, path)
        return path
    try:
        os.link(tmp, path)
    except FileExistsError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise OutputExistsError(f"{path}: already exists (use --overwrite to replace it)") \
            from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV,
                             errno.EMLINK, errno.ENOSYS):  # ENOSYS: FUSE (gcsfuse)
            raise
        # a file system without hard links: check, then rename (not safe against a second
        # writer committing at the same instant)
        check_writable(path, False)
        os.replace(tmp, path)
        return path
    tmp.unlink()
    return path


def atomic_write(path: str | os.PathLike[str], data: bytes, *, overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a commit, so
    a failed or killed write never leaves a half-written file; an existing file is replaced
    only if ``overwrite``. The file gets the mode a plain ``open()`` would give it (the replaced
    file's mode, or 0666 less the umask)."""
    p = Path(path)
    check_writable(p, overwrite)
    tmp = None
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        mode = (p.stat().st_mode & 0o777) if p.exists() else default_mode()
        tmp = temp_path(p)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        commit(tmp, p, overwrite=overwrite)
    except UpresError:
        raise
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
