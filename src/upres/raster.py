"""Georeferenced rasters through the network, window by window (GeoTIFF in, GeoTIFF or COG out).

The path: :class:`~upres.formats.geotiff.GeoSource` window (every band, file dtype, validity
masks) -> bands grouped by :func:`plan_bands` -> values mapped onto the network's [0, 1]
(:func:`value_ranges`) -> invalid samples filled from nearby valid ones (:func:`fill_nearby`)
-> the Upscaler on the window -> the window's core mapped back to the file's values and dtype,
invalid samples put back by nearest neighbour -> :class:`~upres.formats.geotiff.GeoSink`.

Windows: the input is cut into cores of ``c x c`` pixels, ``c`` a multiple of
``output_block(s) / s``, so each core fills whole tiles of the output; each core is read with
``2 x overlap`` pixels of context (``overlap`` for the network's receptive field, ``overlap``
more for the fill), so for a network whose receptive-field radius is at most ``overlap`` the
result does not depend on the window size: windows give the same output as one window of the
whole raster. Memory holds one window, never the raster.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from upres.errors import UpresError
from upres.formats.geotiff import GeoMeta, GeoSink, GeoSource, output_block
from upres.formats.values import from_unit

__all__ = ["MODES", "BandGroup", "fill_nearby", "parse_bands", "plan_bands",
           "upscale_raster", "value_ranges"]

#: How a band can be enlarged: ``rgb`` (three bands through the colour path together), ``net``
#: (a gray plane through the network), ``bicubic``/``lanczos`` (MATLAB interpolation),
#: ``nearest`` (categories, masks, alpha).
MODES = ("rgb", "net", "bicubic", "lanczos", "nearest")


@dataclass(frozen=True)
class BandGroup:
    """Bands enlarged together: ``mode`` (one of :data:`MODES`) and 0-based ``bands`` (three
    for ``rgb``, one otherwise)."""

    mode: str
    bands: tuple[int, ...]


def _band_list(text: str, opt: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part[1:]:
                a, b = part.split("-", 1)
                lo, hi = int(a), int(b)
                if hi < lo:
                    raise ValueError
                out.extend(range(lo, hi + 1))
            else:
                out.append(int(part))
        except ValueError:
            raise UpresError(f"--bands {opt!r}: {part!r} is not a band number or range "
                             "(bands count from 1: 4,3,2 or 5-13)") from None
    if any(b < 1 for b in out):
        raise UpresError(f"--bands {opt!r}: bands count from 1")
    return out


def parse_bands(specs: list[str] | tuple[str, ...] | None
                ) -> tuple[list[int] | None, dict[str, list[int]]]:
    """``--bands`` values -> ``(select, modes)``.

    Each value is either a band list (``4,3,2``, ``1-3,5``: the output holds only these
    bands, in this order, like ``gdal_translate -b``) or ``MODE:LIST`` (``rgb:4,3,2``,
    ``nearest:14``, ``bicubic:5-13``; ``rgb:none`` turns the automatic colour triplet off),
    bands counted from 1 in the input. Raises UpresError (one line) for anything else."""
    select: list[int] | None = None
    modes: dict[str, list[int]] = {}
    for spec in specs or ():
        mode, sep, rest = spec.partition(":")
        if not sep:
            if select is not None:
                raise UpresError(f"--bands {spec!r}: give the bands to keep only once")
            select = _band_list(spec, spec)
            continue
        mode = mode.strip().lower()
        if mode not in MODES:
            raise UpresError(f"--bands {spec!r}: unknown mode {mode!r}; choose "
                             f"{', '.join(MODES)} (e.g. rgb:4,3,2 or nearest:5)")
        if mode == "rgb" and rest.strip().lower() == "none":
            modes["rgb"] = []
            continue
        bands = _band_list(rest, spec)
        if mode == "rgb" and len(bands) != 3:
            raise UpresError(f"--bands {spec!r}: rgb takes exactly three bands")
        modes.setdefault(mode, []).extend(bands)
    seen: set[int] = set()
    for bands in modes.values():
        twice = seen.intersection(bands) or (len(set(bands)) < len(bands))
        if twice:
            raise UpresError(f"--bands: a band is given two modes ({', '.join(specs or [])})")
        seen.update(bands)
    return select, modes


def plan_bands(meta: GeoMeta, specs: list[str] | tuple[str, ...] | None = None
               ) -> tuple[list[int], list[BandGroup]]:
    """Which input bands the output holds (0-based, in output order) and how each is enlarged.

    Default: the bands whose colour interpretation is red, green and blue go through the
    colour path together; alpha and palette (colour-mapped) bands are enlarged by nearest
    neighbour (they are masks and categories, not intensities); every other band (NIR, SWIR,
    elevation, ...) goes through the network as a gray plane. ``specs`` (``--bands``, see
    :func:`parse_bands`) override this.

    Raises:
        UpresError: a band beyond the raster's count, or a mode given a band not kept.
    """
    select, modes = parse_bands(specs)
    n = meta.count
    for b in [*(select or []), *(x for v in modes.values() for x in v)]:
        if b > n:
            raise UpresError(f"{meta.path}: --bands names band {b}, but the raster has {n} "
                             f"band{'s' if n != 1 else ''}")
    keep = [b - 1 for b in select] if select is not None else list(range(n))
    if len(set(keep)) < len(keep):
        raise UpresError(f"{meta.path}: --bands lists a band twice")
    given = {b - 1: m for m, bands in modes.items() for b in bands}
    for b in given:
        if b not in keep:
            raise UpresError(f"{meta.path}: --bands gives band {b + 1} a mode but does not "
                             "keep it")
    groups: list[BandGroup] = []
    rgb = [b - 1 for b in modes["rgb"]] if "rgb" in modes else None
    if rgb is None:
        ci = meta.colorinterp
        idx = {c: [b for b in keep if ci[b] == c and b not in given] for c in
               ("red", "green", "blue")}
        if all(len(v) == 1 for v in idx.values()):
            rgb = [idx["red"][0], idx["green"][0], idx["blue"][0]]
        else:
            rgb = []
    if rgb:
        groups.append(BandGroup("rgb", tuple(rgb)))
    mapped = {b for b, _ in meta.colormaps} if meta.colormaps else set()
    for b in keep:
        if b in rgb:
            continue
        mode = given.get(b)
        if mode is None:
            auto_nearest = meta.colorinterp[b] in ("alpha", "palette") or (b + 1) in mapped
            mode = "nearest" if auto_nearest else "net"
        groups.append(BandGroup(mode, (b,)))
    return keep, groups


def value_ranges(src: GeoSource, keep: list[int], groups: list[BandGroup],
                 how: str = "auto") -> dict[int, tuple[float, float]]:
    """The stored values that the network's 0 and 1 stand for, per input band.

    ``how``: ``auto`` (8-bit bands their type's range 0..255, as photos; every other type the
    range its valid values use, found by one windowed pass), ``type`` (the integer type's
    whole range), ``data``, or ``LO:HI`` (the same fixed range for every band: use it to
    process the tiles of one mosaic alike; values outside are clipped). The three bands of an
    ``rgb`` group share one range (the union), so colours keep their balance."""
    m = src.meta
    dt = np.dtype(m.dtype)
    if ":" in how:
        try:
            lo, hi = (float(v) for v in how.split(":"))
        except ValueError:
            raise UpresError(f"--value-range {how!r}: expected auto, type, data or LO:HI") \
                from None
        if not hi > lo:
            raise UpresError(f"--value-range {how!r}: HI must be above LO")
        return dict.fromkeys(keep, (lo, hi))
    if how not in ("auto", "type", "data"):
        raise UpresError(f"--value-range {how!r}: expected auto, type, data or LO:HI")
    if how == "type" or (how == "auto" and dt == np.uint8):
        if dt.kind == "f":
            raise UpresError(f"{m.path}: --value-range type needs integer bands, not {dt}; "
                             "use data or LO:HI")
        info = np.iinfo(dt)
        return dict.fromkeys(keep, (float(info.min), float(info.max)))
    per = src.value_range()
    out = {b: per[b] for b in keep}
    for g in groups:
        if g.mode == "rgb":
            lo = min(out[b][0] for b in g.bands)
            hi = max(out[b][1] for b in g.bands)
            for b in g.bands:
                out[b] = (lo, hi)
    return out


def _box_sum(x: np.ndarray) -> np.ndarray:
    """Sum over each sample's 3x3 neighbourhood (zero outside), ``(..., h, w)``: nine shifted
    adds, so every sample's sum has the same order wherever the window starts."""
    p = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(1, 1), (1, 1)])
    h, w = x.shape[-2:]
    out = np.zeros_like(x)
    for dy in range(3):
        for dx in range(3):
            out += p[..., dy:dy + h, dx:dx + w]
    return out


def fill_nearby(planes: np.ndarray, invalid: np.ndarray, radius: int) -> np.ndarray:
    """Fill invalid samples from nearby valid ones, so that nodata, NaN or masked values never
    reach the network and edges of the valid area do not ring.

    ``planes`` ``(k, h, w)`` float32 (any range), ``invalid`` ``(h, w)`` bool. Each of
    ``radius`` rounds gives every still-empty sample that touches a filled one the mean of its
    filled 3x3 neighbours (a local, GDAL FillNodata-like growth: a sample's fill depends only on
    samples within ``radius``); samples farther than ``radius`` from any valid one take the
    mean of the valid samples (they lie outside every valid output's receptive field). Returns
    a new array; ``planes`` is not changed.
    """
    x = np.where(invalid, np.float32(0), planes).astype(np.float32)
    filled = ~invalid
    if filled.all():
        return x
    if not filled.any():
        return np.full_like(x, 0.5)
    mean = planes[:, filled].mean(axis=1).astype(np.float32)
    w = filled.astype(np.float32)
    for _ in range(radius):
        if filled.all():
            break
        sw = _box_sum(w)
        new = (~filled) & (sw > 0)
        if not new.any():
            break
        sx = _box_sum(x)
        x[:, new] = sx[:, new] / sw[new]
        w[new] = 1.0
        filled = filled | new
    if not filled.all():
        x[:, ~filled] = mean[:, None]
    return x


def _grid(n: int, core: int) -> list[tuple[int, int]]:
    return [(a, min(n, a + core)) for a in range(0, n, core)]


def _core_size(up: Any, meta: GeoMeta, tile: int | None) -> int:
    """Input window side: a multiple of ``output_block(s) / s`` near ``tile`` (or the
    Upscaler's automatic tile), whole raster for ``tile == 0``."""
    s = up.scale
    unit = output_block(s) // s
    if tile == 0:
        return max(meta.width, meta.height)
    want = tile if tile is not None else (getattr(up, "auto_tile", lambda h, w: 256)(
        4096, 4096) or 256)
    return max(unit, round(want / unit) * unit)


def upscale_raster(up: Any, src: str | os.PathLike[str], dst: str | os.PathLike[str], *,
                   fmt: str = "gtiff", bands: list[str] | tuple[str, ...] | None = None,
                   value_range: str = "auto", overviews: bool = False,
                   tile: int | None = None, tile_overlap: int = 16, overwrite: bool = False,
                   max_pixels: int | None = None, progress: bool = False) -> Path:
    """Upscale a georeferenced raster window by window and write a GeoTIFF (``fmt="gtiff"``)
    or a Cloud-Optimised GeoTIFF (``"cog"``) at ``dst``, atomically.

    ``up``: from :func:`upres.load`; ``bands``: ``--bands`` values (:func:`plan_bands`);
    ``value_range``: see :func:`value_ranges`; ``overviews``: add internal overviews (a COG
    always has them), halving until 512 pixels on the longer side (none for a raster within
    that); ``tile``: input window side (``None`` automatic, ``0`` the whole
    raster at once); ``tile_overlap``: the network's context in input pixels (the window is
    read with twice this). Values keep their units and dtype (clipped to the range); nodata,
    NaN, masked and alpha-0 samples keep their values, enlarged by nearest neighbour.

    Raises:
        UpresError: one line naming the file and the problem; nothing is left under ``dst``.
    """
    from upres.inference.upscaler import Interpolator

    s = up.scale
    if (tile is not None and tile < 0) or tile_overlap < 0:
        raise UpresError(f"tile and tile_overlap must be >= 0, got {tile}, {tile_overlap}")
    dst = Path(dst)
    if dst.exists() and not overwrite:
        raise UpresError(f"{dst}: already exists (use --overwrite to replace it)")
    with GeoSource(src, max_pixels=max_pixels) as source:
        meta = source.meta
        keep, groups = plan_bands(meta, bands)
        ranges = value_ranges(source, keep, groups, value_range)
        out_meta = _subset(meta, keep).scaled(s)
        interp = {m: Interpolator(m, s) for m in ("bicubic", "lanczos")}
        core = _core_size(up, meta, tile)
        margin = 2 * tile_overlap
        pos = {b: i for i, b in enumerate(keep)}
        windows = [(y0, y1, x0, x1) for y0, y1 in _grid(meta.height, core)
                   for x0, x1 in _grid(meta.width, core)]
        sink = GeoSink(dst, out_meta, fmt=fmt, overviews=overviews, overwrite=overwrite)
        try:
            from tqdm import tqdm

            bar = tqdm(windows, unit="win", desc=Path(src).name, disable=not progress,
                       dynamic_ncols=True, leave=False, file=sys.stderr)
            for y0, y1, x0, x1 in bar:
                py0, py1 = max(0, y0 - margin), min(meta.height, y1 + margin)
                px0, px1 = max(0, x0 - margin), min(meta.width, x1 + margin)
                vals, invalid = source.read((py0, py1, px0, px1))
                cy0, cy1, cx0, cx1 = y0 - py0, y1 - py0, x0 - px0, x1 - px0
                out = np.empty((len(keep), (y1 - y0) * s, (x1 - x0) * s), dtype=vals.dtype)
                for g in groups:
                    rows = [pos[b] for b in g.bands]
                    core_vals = vals[list(g.bands), cy0:cy1, cx0:cx1]
                    core_bad = invalid[list(g.bands), cy0:cy1, cx0:cx1]
                    out[rows] = _enlarge_group(up, interp, g, vals, invalid, ranges,
                                               tile_overlap, (cy0, cy1, cx0, cx1), s)
                    for r, b, v, bad in zip(rows, g.bands, core_vals, core_bad, strict=True):
                        if g.mode != "nearest":
                            _avoid_nodata(out[r], meta.nodata[b])
                        if bad.any():  # put back what was invalid, enlarged by nearest
                            big = np.repeat(np.repeat(bad, s, 0), s, 1)
                            out[r][big] = np.repeat(np.repeat(v, s, 0), s, 1)[big]
                valid = None
                if out_meta.mask:
                    ok = ~invalid[keep[0], cy0:cy1, cx0:cx1]
                    valid = np.repeat(np.repeat(ok, s, 0), s, 1)
                sink.write(out, (y0 * s, y1 * s, x0 * s, x1 * s), valid)
            bar.close()
            return sink.commit()
        except BaseException:
            sink.abort()
            raise


def _avoid_nodata(plane: np.ndarray, nodata: float | None) -> None:
    """Move computed samples that came out equal to the nodata value one step off it (to the
    next integer, or the next float, towards the inside of the type's range), so no valid
    sample reads as nodata. In place."""
    if nodata is None or nodata != nodata:  # none, or NaN (computed samples are never NaN)
        return
    hit = plane == nodata
    if not hit.any():
        return
    dt = plane.dtype
    if dt.kind in "ui":
        info = np.iinfo(dt)
        step = 1 if nodata < info.max else -1
        plane[hit] = dt.type(int(nodata) + step)
    else:
        towards = np.inf if nodata < 0 or nodata == -np.finfo(dt).max else -np.inf
        plane[hit] = np.nextafter(dt.type(nodata), dt.type(towards))


def _enlarge_group(up: Any, interp: dict[str, Any], g: BandGroup, vals: np.ndarray,
                   invalid: np.ndarray, ranges: dict[int, tuple[float, float]], radius: int,
                   crop: tuple[int, int, int, int], s: int) -> np.ndarray:
    """One band group of a padded window -> its core enlarged, ``(k, ch*s, cw*s)`` in the
    window's dtype (invalid samples still to be put back by the caller)."""
    cy0, cy1, cx0, cx1 = crop
    b = list(g.bands)
    if g.mode == "nearest":
        v = vals[b, cy0:cy1, cx0:cx1]
        return np.repeat(np.repeat(v, s, 1), s, 2)
    if invalid[b, cy0:cy1, cx0:cx1].all():  # nothing valid: the caller puts back every value
        return np.zeros((len(b), (cy1 - cy0) * s, (cx1 - cx0) * s), dtype=vals.dtype)
    bad = invalid[b].any(axis=0)
    lo = np.array([ranges[i][0] for i in b])[:, None, None]
    hi = np.array([ranges[i][1] for i in b])[:, None, None]
    with np.errstate(invalid="ignore", over="ignore"):  # invalid samples are replaced below
        u = ((vals[b].astype(np.float64) - lo) / (hi - lo)).astype(np.float32)
    u = np.clip(fill_nearby(u, bad, radius), 0.0, 1.0)
    if vals.dtype == np.uint8 and (lo == 0).all() and (hi == 255).all():
        # 8-bit levels, the fill's means too: every window of an 8-bit raster then takes the
        # same network path (an int8 one runs 8-bit inputs only: upres.inference.upscaler)
        u = (np.round(u * 255.0) / 255.0).astype(np.float32)
    from upres.inference.denoise import data_kwargs

    engine = up if g.mode in ("rgb", "net") else interp[g.mode]
    kw = data_kwargs(engine)
    if g.mode == "rgb":
        y = np.asarray(engine.upscale(np.ascontiguousarray(u.transpose(1, 2, 0)), tile=0, **kw))
        y = y.transpose(2, 0, 1)
    else:
        y = np.asarray(engine.upscale(u[0], tile=0, **kw))[None]
    y = y[:, cy0 * s:cy1 * s, cx0 * s:cx1 * s]
    return np.stack([from_unit(y[i], float(lo[i, 0, 0]), float(hi[i, 0, 0]), vals.dtype)
                     for i in range(len(b))])


def _subset(meta: GeoMeta, keep: list[int]) -> GeoMeta:
    """``meta`` with only the bands ``keep`` (0-based, in this order)."""
    from dataclasses import replace

    if keep == list(range(meta.count)):
        return meta
    pick = lambda t: tuple(t[i] for i in keep)  # noqa: E731
    new_index = {b + 1: i + 1 for i, b in enumerate(keep)}
    cmaps = tuple((new_index[b], c) for b, c in meta.colormaps if b in new_index)
    ci = pick(meta.colorinterp)
    if meta.colorinterp != ci and "alpha" in ci and len(ci) not in (2, 4):
        ci = tuple("undefined" if c == "alpha" else c for c in ci)
    return replace(meta, count=len(keep), nodata=pick(meta.nodata), colorinterp=ci,
                   descriptions=pick(meta.descriptions), scales=pick(meta.scales),
                   offsets=pick(meta.offsets), units=pick(meta.units),
                   band_tags=pick(meta.band_tags), colormaps=cmaps)
