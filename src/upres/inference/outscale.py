"""Any output size (issue 25): ``--outscale F``, ``--size WxH`` and ``--fit WxH``.

The networks enlarge by 2, 3 or 4. Another size is reached by the network pass (or passes,
for factors above 4) that reaches it with the least work, then one high-quality resize to the
exact size (MATLAB bicubic, antialiased when it shrinks). Work grows with the square of the
input a pass sees, so for a factor above 4 the smaller pass runs first (x8 is x2 then x4).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from upres.errors import UpresError

__all__ = ["MAX_OUTSCALE", "MAX_SIDE", "SizeRequest", "parse_size", "passes_for",
           "size_request", "target_size", "upscale_to"]

_SCALES = (2, 3, 4)


@dataclass(frozen=True)
class SizeRequest:
    """One of ``outscale`` (a factor > 0), ``size`` (exact ``(w, h)``; a 0 keeps the aspect
    ratio) or ``fit`` (the largest size within ``(w, h)`` keeping the aspect ratio)."""

    outscale: float | None = None
    size: tuple[int, int] | None = None
    fit: tuple[int, int] | None = None

    @property
    def label(self) -> str:
        """What names the output (``{scale}`` in the suffix): ``1.5``, ``1920x1080``."""
        if self.outscale is not None:
            return f"{self.outscale:g}"
        w, h = self.size or self.fit or (0, 0)
        return f"{w}x{h}"


#: the largest --outscale factor
MAX_OUTSCALE = 64
#: the largest side --size and --fit take
MAX_SIDE = 1_000_000


def parse_size(text: str, what: str) -> tuple[int, int]:
    """``"1920x1080"`` -> ``(1920, 1080)`` (``"1920x0"``: height from the aspect ratio)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UpresError(f"{what} {text!r}: expected WxH, e.g. 1920x1080") from None
    _check_sides(w, h, f"{what} {text!r}")
    return w, h


def _check_sides(w: int, h: int, what: str) -> None:
    if w < 0 or h < 0 or w == h == 0 or max(w, h) > MAX_SIDE:
        raise UpresError(f"{what}: sizes must be positive (one of them may be 0) and at most "
                         f"{MAX_SIDE}")


def size_request(outscale: float | None = None, size: Sequence[int] | None = None,
                 fit: Sequence[int] | None = None, *, prefix: str = "") -> SizeRequest | None:
    """The checked request of at most one of ``outscale`` (finite, above 0, at most
    :data:`MAX_OUTSCALE`), ``size`` and ``fit`` (two whole numbers ``(w, h)``, at least 0, not
    both 0, at most :data:`MAX_SIDE`); None when none is given. ``prefix`` goes before the
    names in messages (``--`` for the command line). Raises UpresError, one line."""
    given = [n for n, v in (("outscale", outscale), ("size", size), ("fit", fit))
             if v is not None]
    if len(given) > 1:
        raise UpresError(f"{prefix}{given[0]} and {prefix}{given[1]} exclude each other")
    if not given:
        return None
    if outscale is not None:
        try:
            f = float(outscale)
        except (TypeError, ValueError):
            f = math.nan
        if not (math.isfinite(f) and 0 < f <= MAX_OUTSCALE):
            raise UpresError(f"{prefix}outscale must be above 0 and at most {MAX_OUTSCALE}, "
                             f"got {outscale}")
        return SizeRequest(outscale=f)
    name = given[0]
    pair = size if size is not None else fit
    try:
        w, h = (int(v) for v in pair)  # type: ignore[union-attr]
        whole = all(float(v) == int(v) for v in pair)  # type: ignore[union-attr]
    except (TypeError, ValueError, OverflowError):
        whole = False
    if not whole:
        raise UpresError(f"{prefix}{name} must be two whole numbers (width, height), got "
                         f"{pair!r}")
    _check_sides(w, h, f"{prefix}{name} {w}x{h}")
    return SizeRequest(**{name: (w, h)})


def target_size(w: int, h: int, req: SizeRequest) -> tuple[int, int]:
    """The output ``(width, height)`` for a ``w x h`` input."""
    if req.outscale is not None:
        if not req.outscale > 0:
            raise UpresError(f"--outscale must be above 0, got {req.outscale}")
        return max(1, round(w * req.outscale)), max(1, round(h * req.outscale))
    if req.size is not None:
        tw, th = req.size
        if tw == 0:
            tw = max(1, round(w * th / h))
        if th == 0:
            th = max(1, round(h * tw / w))
        return tw, th
    if req.fit is not None:
        fw, fh = req.fit
        f = min(fw / w if fw else math.inf, fh / h if fh else math.inf)
        return max(1, round(w * f)), max(1, round(h * f))
    return w, h


def passes_for(factor: float, fixed: int | None = None,
               scales: Sequence[int] = _SCALES) -> list[int]:
    """Network scales to run, in order, to reach ``factor`` (>= it) with the least work; with
    ``fixed`` (the user named one model of that scale), that scale as often as needed;
    ``scales``: the scales there are models for (a server may offer only some). Below 1
    (shrinking) or exactly 1: no pass."""
    if factor <= 1:
        return []
    avail = sorted(set(scales))
    if fixed is None and len(avail) == 1:
        fixed = avail[0]
    if fixed is not None:
        return [fixed] * max(1, math.ceil(math.log(factor) / math.log(fixed) - 1e-9))
    if not avail:
        raise ValueError("passes_for: no scales")
    one = [s for s in avail if s >= factor - 1e-9]
    if one:
        return [one[0]]
    best: tuple[float, float, list[int]] | None = None
    for a in avail:
        for b in avail:
            for c in (*avail, None):
                seq = [a, b] if c is None else [a, b, c]
                total = math.prod(seq)
                if total < factor - 1e-9:
                    continue
                work, size = 0.0, 1.0
                for s in seq:
                    work += size * size
                    size *= s
                key = (work, total)
                if best is None or key < best[:2]:
                    best = (work, total, seq)
    if best is None:  # beyond three passes of the largest: that one as often as needed
        top = avail[-1]
        return [top] * math.ceil(math.log(factor) / math.log(top) - 1e-9)
    return best[2]


def upscale_to(img: np.ndarray, target: tuple[int, int],
               upscaler_for: Callable[[int], Any], passes: list[int],
               **kw: Any) -> np.ndarray:
    """Run ``passes`` (each through ``upscaler_for(scale).upscale(img, **kw)``), then resize
    to ``target`` ``(w, h)`` by MATLAB bicubic (antialiased when shrinking). Same dtype and
    channels as ``img``."""
    from upres.inference.upscaler import check_memory
    from upres.resize import imresize, imresize_peak_bytes

    tw, th = target
    h, w = img.shape[:2]
    c = 1 if img.ndim == 2 else img.shape[2]
    grow = math.prod(passes)
    ph, pw = h * grow, w * grow  # out of the last pass
    need = ph * pw * c * img.dtype.itemsize
    if (ph, pw) != (th, tw):
        need += imresize_peak_bytes(ph, pw, th, tw, c)
    check_memory(need, tw, th, "ask for a smaller size, or use a smaller input")
    out = img
    for s in passes:
        out = np.asarray(upscaler_for(s).upscale(out, **kw))
    if out.shape[:2] != (th, tw):
        dt = out.dtype
        res = imresize(out, size=(th, tw))
        out = res.astype(dt) if res.dtype != dt else res
    return out
