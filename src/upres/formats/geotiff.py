"""GeoTIFF and other GDAL rasters (rasterio): georeferenced, any band count and type, windowed.

A satellite or aerial scene may be larger than memory, so this kind is never read whole: a
:class:`GeoSource` gives windows of every band (in the file's dtype) with their validity masks,
and a :class:`GeoSink` writes windows of the output into a tiled, compressed GeoTIFF under a
temporary name that becomes the output name only when the last window is written (and, with
``cog``, once the Cloud-Optimised copy is made). :class:`GeoMeta` is what the file carries
besides its pixels; ``GeoMeta.scaled(s)`` is what it is after an upscale by ``s``:

- the affine transform keeps its upper-left corner and divides the pixel size by ``s``, so the
  bounds are identical; a PixelIsPoint raster keeps ``AREA_OR_POINT=Point`` and GDAL writes its
  tie point at the centre of the new (smaller) first pixel;
- ground control points keep their ground position and get pixel/line x ``s``;
- CRS, band descriptions, colour interpretation, scale/offset, units, nodata, colour maps and
  the dataset's and bands' metadata are copied.

Rasters georeferenced only by RPCs (a sensor model in pixel/line units) are refused with one
line: their polynomial coefficients would need re-fitting.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from upres.errors import UnsupportedImageError, UpresError, one_line
from upres.formats.files import check_writable, commit, default_mode, sweep_stale, temp_path

__all__ = ["GDAL_EXTS", "GEO_FORMATS", "GeoMeta", "GeoSink", "GeoSource", "has_geo_tags",
           "is_geotiff", "output_block"]

#: ``--format`` values that write this kind.
GEO_FORMATS = ("gtiff", "cog")
#: Suffixes of other rasters GDAL reads, taken by a folder listing with ``--format gtiff|cog``.
GDAL_EXTS = (".img", ".jp2", ".vrt", ".nc", ".hdf", ".h5", ".dem", ".asc", ".ers", ".bil",
             ".rst", ".sdat", ".kea", ".ntf", ".hgt")
_GEO_TAGS = (33550, 33922, 34264, 34735)  # ModelPixelScale, ModelTiepoint, ModelTransformation,
#                                           GeoKeyDirectory
_RPC_TAG = 50844  # RPCCoefficientTag
_DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64")
#: Input pixels (width x height) beyond which a raster is refused unless --max-pixels says more.
DEFAULT_MAX_GEO_PIXELS = 2_000_000_000


def has_geo_tags(tags: Any) -> bool:
    """True when a TIFF page's tags (a ``tifffile.TiffTags``, or any container of tag codes)
    georeference it: tie points, pixel scale, a model transformation, GeoKeys or RPCs."""
    return any(code in tags for code in (*_GEO_TAGS, _RPC_TAG))


def is_geotiff(path: str | os.PathLike[str]) -> bool:
    """True for a TIFF that GDAL would georeference: GeoTIFF tags on its first page (tie
    points, pixel scale, a model transformation or GeoKeys), RPCs (TIFF tag 50844), a world
    file beside it (``.tfw``, ``.tifw``, ``.wld``), or a ``.aux.xml`` sidecar holding a
    geotransform, a CRS or GCPs. False otherwise, and for anything that is not a readable
    TIFF."""
    import tifffile

    from upres.formats.tiff import _quiet_tifffile

    p = Path(path)
    if p.suffix.lower() not in (".tif", ".tiff"):
        return False
    try:
        with _quiet_tifffile(), tifffile.TiffFile(p) as tf:
            if has_geo_tags(tf.pages[0].tags):
                return True
    except Exception:
        return False
    return _georeferencing_sidecar(p)


def _georeferencing_sidecar(p: Path) -> bool:
    """A world file or a PAM sidecar with georeferencing beside ``p`` (as GDAL looks for them:
    same stem, any letter case)."""
    for ext in (".tfw", ".tifw", ".tiffw", ".wld"):  # a few names, not a folder listing
        if any(p.with_name(p.stem + e).is_file() for e in (ext, ext.upper())):
            return True
    aux = next((q for q in (p.with_name(p.name + ".aux.xml"), p.with_name(p.name + ".AUX.XML"))
                if q.is_file()), None)
    if aux is None:
        return False
    try:
        head = aux.read_text(errors="replace")[:1_000_000]
    except OSError:
        return False
    return any(t in head for t in ("<GeoTransform>", "<SRS", "<GCPList"))


@contextlib.contextmanager
def _env(*, read: bool = False) -> Iterator[None]:
    """GDAL settings for every open: bounded block cache, quiet about unreferenced rasters,
    and PAM sidecars (``.aux.xml``) read for an input (``read``: GDAL keeps nodata, scale,
    offset, descriptions and georeferencing there for formats that cannot hold them) but never
    written beside an output or its temporary."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    with rasterio.Env(GDAL_CACHEMAX=32, GDAL_PAM_ENABLED="YES" if read else "NO",
                      CPL_LOG="/dev/null"), warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        yield


@dataclass(frozen=True)
class GeoMeta:
    """What a raster carries besides its pixels.

    ``width``/``height``: pixels; ``count``: bands; ``dtype``: numpy dtype name of every band;
    ``crs``: WKT or None; ``transform``: the six affine coefficients ``(a, b, c, d, e, f)``
    (pixel corner based, as rasterio gives them) or None when the raster has none;
    ``gcps``: ``((row, col, x, y, z), ...)`` with ``gcps_crs``; ``nodata``: per band (None,
    a number, or NaN); ``colorinterp``: per band (``"red"``, ``"gray"``, ``"alpha"``, ...);
    ``descriptions``, ``scales``, ``offsets``, ``units``: per band; ``tags``: the dataset's
    default-domain metadata; ``band_tags``: per band; ``colormaps``: ``{band: {index: rgba}}``;
    ``mask``: the raster has a per-dataset mask (internal or external ``.msk``, not alpha or
    nodata); ``point``: the raster is PixelIsPoint; ``scale``: how many times larger than the
    source it is.
    """

    path: Path
    driver: str
    width: int
    height: int
    count: int
    dtype: str
    crs: str | None
    transform: tuple[float, ...] | None
    gcps: tuple[tuple[float, float, float, float, float], ...]
    gcps_crs: str | None
    nodata: tuple[float | None, ...]
    colorinterp: tuple[str, ...]
    descriptions: tuple[str | None, ...]
    scales: tuple[float, ...]
    offsets: tuple[float, ...]
    units: tuple[str | None, ...]
    tags: tuple[tuple[str, str], ...]
    band_tags: tuple[tuple[tuple[str, str], ...], ...]
    colormaps: tuple[tuple[int, tuple[tuple[int, tuple[int, ...]], ...]], ...]
    mask: bool
    point: bool
    scale: int = 1

    @property
    def pixels(self) -> int:
        return self.width * self.height

    def bounds(self) -> tuple[float, float, float, float] | None:
        """``(left, bottom, right, top)`` for a north-up transform, None without one."""
        if self.transform is None:
            return None
        a, b, c, d, e, f = self.transform
        xs = (c, c + a * self.width + b * self.height)
        ys = (f, f + d * self.width + e * self.height)
        return min(xs), min(ys), max(xs), max(ys)

    def scaled(self, s: int) -> GeoMeta:
        """This raster after an upscale by ``s``: same footprint, pixels ``s`` times smaller."""
        t = self.transform
        if t is not None:
            a, b, c, d, e, f = t
            t = (a / s, b / s, c, d / s, e / s, f)
        gcps = tuple((row * s, col * s, x, y, z) for row, col, x, y, z in self.gcps)
        return replace(self, width=self.width * s, height=self.height * s, transform=t,
                       gcps=gcps, scale=self.scale * s)


def _meta(ds: Any, path: Path) -> GeoMeta:
    t = ds.transform
    gcps, gcrs = ds.gcps
    tags = ds.tags()
    band_tags = tuple(tuple(sorted(ds.tags(i).items())) for i in ds.indexes)
    cmaps = []
    for i in ds.indexes:
        with contextlib.suppress(ValueError):
            cmaps.append((i, tuple(sorted((int(k), tuple(int(c) for c in v))
                                          for k, v in ds.colormap(i).items()))))
    flags = ds.mask_flag_enums
    from rasterio.enums import MaskFlags

    mask = any(MaskFlags.per_dataset in f and MaskFlags.alpha not in f
               and MaskFlags.nodata not in f for f in flags)
    return GeoMeta(
        path=path, driver=ds.driver, width=ds.width, height=ds.height, count=ds.count,
        dtype=ds.dtypes[0] if ds.count else "uint8",
        crs=ds.crs.to_wkt() if ds.crs else None,
        transform=None if t.is_identity else tuple(t)[:6],
        gcps=tuple((g.row, g.col, g.x, g.y, g.z or 0.0) for g in gcps),
        gcps_crs=gcrs.to_wkt() if gcrs else None,
        nodata=tuple(ds.nodatavals), colorinterp=tuple(c.name for c in ds.colorinterp),
        descriptions=tuple(ds.descriptions), scales=tuple(ds.scales),
        offsets=tuple(ds.offsets), units=tuple(ds.units),
        tags=tuple(sorted(tags.items())), band_tags=band_tags, colormaps=tuple(cmaps),
        mask=mask, point=tags.get("AREA_OR_POINT", "").lower() == "point")


class GeoSource:
    """An open raster: :attr:`meta` and windows of its bands. Use as a context manager.

    Raises UpresError (one line naming the file) for anything it cannot take: not a raster,
    damaged, zero bands or zero size, mixed band types, an unsupported type, more than
    ``max_pixels`` input pixels (refused from the header, before any pixel is read), or RPC-only
    georeferencing.
    """

    def __init__(self, path: str | os.PathLike[str], *, max_pixels: int | None = None) -> None:
        import rasterio

        self.path = Path(path)
        self._stack = contextlib.ExitStack()
        try:
            self._stack.enter_context(_env(read=True))
            self.ds = self._stack.enter_context(rasterio.open(self.path))
            self.meta = self._check(max_pixels)
        except UpresError:
            self._stack.close()
            raise
        except Exception as exc:
            self._stack.close()
            raise UpresError(f"{self.path}: cannot open raster: damaged or not a raster "
                             f"({one_line(exc)})") from None

    def _check(self, max_pixels: int | None) -> GeoMeta:
        ds, p = self.ds, self.path
        if ds.count == 0 or ds.width == 0 or ds.height == 0:
            raise UpresError(f"{p}: raster has no pixels ({ds.count} bands of "
                             f"{ds.width}x{ds.height})")
        if len(set(ds.dtypes)) > 1:
            raise UnsupportedImageError(f"{p}: bands of different types ({', '.join(ds.dtypes)})"
                                        " are not supported")
        if ds.dtypes[0] not in _DTYPES:
            raise UnsupportedImageError(f"{p}: band type {ds.dtypes[0]} is not supported "
                                        f"(supported: {', '.join(_DTYPES)})")
        limit = DEFAULT_MAX_GEO_PIXELS if max_pixels is None else max_pixels
        if limit and ds.width * ds.height > limit:
            raise UpresError(f"{p}: raster too large ({ds.width}x{ds.height} pixels, limit "
                             f"{limit}; raise it with --max-pixels)")
        meta = _meta(ds, p)
        if meta.transform is None and not meta.gcps and ds.rpcs:
            raise UnsupportedImageError(f"{p}: georeferenced by RPCs only; upres cannot rescale "
                                        "an RPC sensor model (orthorectify the scene first, "
                                        "e.g. gdalwarp -rpc)")
        return meta

    def __enter__(self) -> GeoSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stack.close()

    def read(self, window: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Window ``(y0, y1, x0, x1)`` of every band.

        Returns ``(values, invalid)``: ``values`` ``(count, h, w)`` in the file's dtype,
        ``invalid`` ``(count, h, w)`` bool: True where GDAL's mask says invalid (nodata value,
        internal or external mask, alpha of 0) or the value is NaN/infinite.

        Raises:
            UpresError: the window cannot be decoded (damaged blocks), naming the rows.
        """
        from rasterio.errors import NodataShadowWarning
        from rasterio.windows import Window

        y0, y1, x0, x1 = window
        win = Window(x0, y0, x1 - x0, y1 - y0)
        try:
            vals = self.ds.read(window=win)
            with warnings.catch_warnings():  # a nodata value beside an alpha band: GDAL's
                # masks follow the nodata value (as its docs say), which is what upres keeps
                warnings.simplefilter("ignore", NodataShadowWarning)
                masks = self.ds.read_masks(window=win)
        except Exception as exc:
            raise UpresError(f"{self.path}: cannot decode rows {y0}-{y1}, columns {x0}-{x1}: "
                             f"damaged ({_root_cause(exc)})") from None
        invalid = masks == 0
        if vals.dtype.kind == "f":
            invalid |= ~np.isfinite(vals)
        return vals, invalid

    def value_range(self, window_side: int = 1024) -> list[tuple[float, float]]:
        """Per band ``(lo, hi)`` of the valid, finite values, read window by window (bounded
        memory); ``(0, 1)`` for a band with no valid value, ``hi > lo`` always."""
        m = self.meta
        lo = np.full(m.count, np.inf)
        hi = np.full(m.count, -np.inf)
        for y0 in range(0, m.height, window_side):
            for x0 in range(0, m.width, window_side):
                vals, invalid = self.read((y0, min(m.height, y0 + window_side), x0,
                                           min(m.width, x0 + window_side)))
                for b in range(m.count):
                    v = vals[b][~invalid[b]]
                    if v.size:
                        lo[b] = min(lo[b], float(v.min()))
                        hi[b] = max(hi[b], float(v.max()))
        out = []
        for a, b in zip(lo, hi, strict=True):
            if not np.isfinite(a):
                out.append((0.0, 1.0))
            else:
                out.append((float(a), float(b) if b > a else float(a) + 1.0))
        return out


def _root_cause(exc: BaseException) -> str:
    """The innermost message of a chained exception (GDAL's own words), on one line."""
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return one_line(exc)


def output_block(scale: int) -> int:
    """The output's tile side: 512, or 384 at x3 (a multiple of 3 and 16), so that windows of
    the input whose side is a multiple of ``block / scale`` fill whole output tiles."""
    return 384 if scale % 3 == 0 else 512


def _predictor(dtype: str) -> int:
    return 3 if np.dtype(dtype).kind == "f" else 2


class GeoSink:
    """The output raster, written window by window under a temporary name in the output's
    folder (:func:`~upres.formats.files.temp_path`); :meth:`commit` builds overviews
    (``overviews``), makes the Cloud-Optimised copy (``fmt="cog"``) and commits it to
    ``path`` (:func:`~upres.formats.files.commit`). Leaving without commit
    (an error, Ctrl-C) removes the temporary; a SIGKILL leaves only the hidden temporary, which
    the next run for the same output removes. Nothing ever carries ``path`` half-written.

    Tiled (:func:`output_block`), DEFLATE with the predictor for the type (horizontal
    differencing for integers, floating point for floats), BigTIFF when the size needs it.
    """

    def __init__(self, path: str | os.PathLike[str], meta: GeoMeta, *, fmt: str = "gtiff",
                 overviews: bool = False, overwrite: bool = False) -> None:
        import rasterio
        from affine import Affine
        from rasterio.control import GroundControlPoint
        from rasterio.crs import CRS

        if fmt not in GEO_FORMATS:
            raise UpresError(f"unknown raster format {fmt!r}; choose gtiff or cog")
        self.path, self.meta, self.fmt, self.overviews = Path(path), meta, fmt, overviews
        self.overwrite = overwrite
        check_writable(self.path, overwrite)
        sweep_stale(self.path.parent, self.path.name)
        self.tmp = temp_path(self.path)
        block = output_block(meta.scale)
        profile: dict[str, Any] = {
            "driver": "GTiff", "width": meta.width, "height": meta.height, "count": meta.count,
            "dtype": meta.dtype, "tiled": True, "blockxsize": block, "blockysize": block,
            "compress": "deflate", "predictor": _predictor(meta.dtype), "zlevel": 6,
            "bigtiff": "if_safer", "interleave": "pixel" if meta.count <= 4 else "band",
        }
        nodata = meta.nodata[0] if meta.nodata else None
        if any(not (n == nodata or (n != n and nodata is not None and nodata != nodata))
               for n in meta.nodata):
            shown = ", ".join("none" if n is None else f"{n:g}" for n in meta.nodata)
            raise UnsupportedImageError(
                f"{meta.path}: bands have different nodata values ({shown}) and a GeoTIFF "
                "holds one: choose bands that share one with --bands, or give them one "
                "first (gdal_translate -a_nodata)")
        if nodata is not None:
            profile["nodata"] = nodata
        if meta.crs:
            profile["crs"] = CRS.from_wkt(meta.crs)
        if meta.transform is not None:
            profile["transform"] = Affine(*meta.transform)
        if meta.count == 3 and meta.dtype == "uint8" and \
                meta.colorinterp == ("red", "green", "blue"):
            profile["photometric"] = "rgb"
        self._stack = contextlib.ExitStack()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._stack.enter_context(_env())
            self.ds = self._stack.enter_context(rasterio.open(self.tmp, "w", **profile))
            ds = self.ds
            gcps_crs = meta.gcps_crs or meta.crs
            if meta.gcps and gcps_crs:  # (GCPs without any CRS cannot be written)
                ds.gcps = ([GroundControlPoint(row=r, col=c, x=x, y=y, z=z)
                            for r, c, x, y, z in meta.gcps], CRS.from_wkt(gcps_crs))
            tags = dict(meta.tags)
            if tags:
                ds.update_tags(**tags)
            from rasterio.enums import ColorInterp

            ds.colorinterp = [ColorInterp[c] for c in meta.colorinterp]
            for i in range(meta.count):
                b = i + 1
                if meta.descriptions[i]:
                    ds.set_band_description(b, meta.descriptions[i])
                if meta.band_tags[i]:
                    ds.update_tags(b, **dict(meta.band_tags[i]))
                if meta.units[i]:
                    ds.set_band_unit(b, meta.units[i])
            ds.scales, ds.offsets = meta.scales, meta.offsets
            for b, cmap in meta.colormaps:
                ds.write_colormap(b, {k: v for k, v in cmap})
        except Exception as exc:
            self.abort()
            if isinstance(exc, UpresError):
                raise
            raise UpresError(f"{self.path}: cannot write ({one_line(exc)})") from None

    def write(self, values: np.ndarray, window: tuple[int, int, int, int],
              valid: np.ndarray | None = None) -> None:
        """``values`` ``(count, h, w)`` into output window ``(y0, y1, x0, x1)``; ``valid``
        ``(h, w)`` bool is written as the per-dataset mask when the source had one."""
        from rasterio.windows import Window

        y0, y1, x0, x1 = window
        win = Window(x0, y0, x1 - x0, y1 - y0)
        try:
            self.ds.write(values, window=win)
            if self.meta.mask and valid is not None:
                self.ds.write_mask(np.where(valid, 255, 0).astype(np.uint8), window=win)
        except Exception as exc:
            raise UpresError(f"{self.path}: cannot write ({one_line(exc)})") from None

    def commit(self) -> Path:
        """Finish the file and give it its name (atomically; never over an existing file
        unless ``overwrite``)."""
        from rasterio.enums import Resampling
        from rasterio.shutil import copy as rio_copy

        m = self.meta
        final = self.tmp
        try:
            if self.overviews and self.fmt == "gtiff":
                factors = overview_factors(m.width, m.height)
                if factors:
                    categorical = bool(m.colormaps)
                    self.ds.build_overviews(factors, Resampling.nearest if categorical
                                            else Resampling.average)
            self._stack.close()
            if self.fmt == "cog":
                final = temp_path(self.path, ".cog")
                with _env():
                    rio_copy(self.tmp, final, driver="COG", compress="deflate",
                             predictor=_predictor(m.dtype), blocksize=512, bigtiff="if_safer",
                             overview_resampling="nearest" if m.colormaps else "average")
                os.unlink(self.tmp)
            os.chmod(final, default_mode())
            commit(final, self.path, overwrite=self.overwrite)
        except UpresError:
            self.abort(final)
            raise
        except Exception as exc:
            self.abort(final)
            raise UpresError(f"{self.path}: cannot write ({one_line(exc)})") from None
        return self.path

    def abort(self, *also: Path) -> None:
        """Close and remove the temporary files (nothing is left under any name)."""
        with contextlib.suppress(Exception):
            self._stack.close()
        for f in (self.tmp, *also):
            with contextlib.suppress(OSError):
                os.unlink(f)
            with contextlib.suppress(OSError):
                os.unlink(str(f) + ".msk")


def overview_factors(width: int, height: int, smallest: int = 512) -> list[int]:
    """2, 4, 8, ... until the overview fits in ``smallest`` pixels on its longer side."""
    out, f = [], 2
    while max(width, height) / (f // 2) > smallest:
        out.append(f)
        f *= 2
    return out
