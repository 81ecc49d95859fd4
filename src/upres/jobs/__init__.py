"""Many inputs -> many outputs: which files, what each is called, one item through the
pipeline, and what "done" means. The command line, the Ray workers and ``--shard`` processes
all use these, so a file is named, skipped, written and reported the same way everywhere.

An item is done when its output file exists: outputs are committed by
:func:`upres.formats.files.commit` (a hard link to the output name, which fails if the name is
taken), so two attempts at one item, on one machine or on many sharing a file system, cannot
both write it, and a half-written file never carries the output name.
"""

from __future__ import annotations

import glob
import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from upres.errors import UpresError

__all__ = ["FORMAT_EXT", "RASTER_FORMATS", "Item", "JobOptions", "Row", "collect_inputs",
           "drop_clashes", "drop_own_outputs", "out_path", "process_item", "process_items",
           "shard_of"]

#: ``--format`` -> output suffix for ordinary images.
FORMAT_EXT = {"png": ".png", "jpg": ".jpg", "webp": ".webp", "tiff": ".tiff", "bmp": ".bmp"}
#: ``--format`` values that write GeoTIFF (upres.formats.geotiff.GEO_FORMATS, unimported).
RASTER_FORMATS = ("gtiff", "cog")


@dataclass(frozen=True)
class JobOptions:
    """How every item of a job is upscaled and named (the ``upres upscale`` options that are
    not the model). Frozen and picklable: Ray workers get a copy."""

    output: str | None = None
    format: str = "same"
    suffix: str = "_x{scale}"
    overwrite: bool = False
    tile: int | None = None
    tile_overlap: int = 16
    max_pixels: int | None = None
    dicom_range: str = "stored"
    bands: tuple[str, ...] = ()
    value_range: str = "auto"
    overviews: bool = False
    size: Any = None  # upres.inference.outscale.SizeRequest: --outscale / --size / --fit

    @property
    def raster(self) -> bool:
        return self.format in RASTER_FORMATS


@dataclass(frozen=True)
class Item:
    """One input: ``src``; ``base``, the folder the output tree mirrors from; ``listed``: found
    by listing a folder or a pattern (False for a file named on the command line)."""

    src: Path
    base: Path
    listed: bool = True

    @property
    def rel(self) -> str:
        """The input's path relative to its base, with ``/`` (stable across machines)."""
        try:
            return self.src.relative_to(self.base).as_posix()
        except ValueError:
            return self.src.name


@dataclass
class Row:
    """What became of one item: ``status`` ``done``, ``exists`` (skipped: the output was
    there) or ``failed`` (``error``: one line); the output's size in bytes and pixels, and the
    seconds it took; ``denoise``: the clean-up strength a photo model used. ``notes``:
    one-line remarks to show once per run."""

    input: str
    output: str | None
    status: str
    seconds: float = 0.0
    bytes: int | None = None
    width: int | None = None
    height: int | None = None
    frames: int | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    worker: str | None = None
    denoise: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None and v != []}


def collect_inputs(items: list[str], recursive: bool, *, raster: bool = False,
                   say: Callable[[str], None] = print) -> list[Item]:
    """Files, folders (listed, recursively with ``recursive``; hidden files left out) and
    glob patterns -> items, in order. An empty folder or pattern is said, not fatal."""
    from upres.formats import looks_like_input

    found: list[Item] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            it = p.rglob("*") if recursive else p.glob("*")
            files = sorted(f for f in it if not f.name.startswith(".") and _file_or_dangling(f)
                           and looks_like_input(f, raster=raster))
            if not files:
                say(f"{p}: no images in this folder")
            found.extend(Item(f, p, True) for f in files)
        elif any(c in item for c in "*?["):
            matches = sorted(Path(m) for m in glob.glob(item, recursive=recursive))
            files = [m for m in matches if _file_or_dangling(m)]
            if not files:
                say(f"{item}: pattern matches no file")
            found.extend(Item(f, f.parent, True) for f in files)
        else:
            found.append(Item(p, p.parent, False))
    return _once(found)


def _file_or_dangling(p: Path) -> bool:
    """A file, or a link to a missing one: listed all the same, so that its run says so (no
    such file) instead of leaving it out unsaid."""
    return p.is_file() or (p.is_symlink() and not p.exists())


def _once(items: list[Item]) -> list[Item]:
    """``items`` with each path once (the same path named twice, spelt ``./a.png`` or ``a.png``,
    or named and found in a listed folder, is one input; a link is its own name), in
    first-seen order; a file named on the command line anywhere stays named
    (:func:`drop_own_outputs` keeps it)."""
    first: dict[str, int] = {}
    out: list[Item] = []
    for it in items:
        key = os.path.normpath(os.path.abspath(it.src))
        if key not in first:
            first[key] = len(out)
            out.append(it)
        elif not it.listed:
            i = first[key]
            out[i] = Item(out[i].src, out[i].base, False)
    return out


def drop_own_outputs(items: list[Item], opts: JobOptions, scale: int | str
                     ) -> tuple[list[Item], int]:
    """Leave out listed files that a run like this one wrote: those named with this run's
    suffix whose output would land in their own folder (``bird_x4.png`` beside ``bird.png``),
    and those inside an output folder that lies within the listed folder. A second run over the
    same folder then does not upscale its own results. Named files are always kept. Returns
    ``(kept, number left out)``."""
    suffix = opts.suffix.format(scale=scale)
    out = Path(opts.output).resolve() if opts.output is not None else None
    kept, dropped = [], 0
    for it in items:
        if it.listed:
            folder = it.src.resolve().parent
            beside = out_path(it.src, it.base, opts, scale, False, "PNG").resolve().parent \
                == folder
            in_out = out is not None and it.base.resolve() in out.parents and (
                folder == out or out in folder.parents)
            if (suffix and beside and _stem(it.src).endswith(suffix)) or in_out:
                dropped += 1
                continue
        kept.append(it)
    return kept, dropped


def _stem(src: Path) -> str:
    """The name without its suffix; an OME-TIFF's ``.ome.tif`` counts as one suffix."""
    name = src.name
    for double in (".ome.tif", ".ome.tiff"):
        if name.lower().endswith(double):
            return name[:-len(double)]
    return src.stem


def out_path(src: Path, base: Path, opts: JobOptions, scale: int | str, single: bool,
             src_format: str, kind: str = "image") -> Path:
    """The output file of ``src``: ``{stem}{suffix}{ext}`` beside it, in the output folder
    (mirroring the tree under ``base``), or the output path itself for a single input.

    Raises:
        UpresError: a single output whose suffix does not fit the input's kind.
    """
    from upres.formats import KIND_EXTS
    from upres.formats.image import FORMAT_EXTS, format_for_suffix

    if kind == "geotiff":  # any raster in, GeoTIFF out
        ext = src.suffix.lower() if src.suffix.lower() in KIND_EXTS[kind] else ".tif"
    elif kind != "image":  # DICOM stays DICOM, a scientific TIFF stays TIFF
        keep = KIND_EXTS[kind]
        ext = src.suffix.lower() if src.suffix.lower() in keep else keep[0]
        if src.suffix.lower() not in keep:  # IM0001, 1.2.840.1234.5 (UID names): keep it all
            return out_path(src.with_name(src.name + ext), base, opts, scale, single,
                            src_format, kind)
    elif opts.format == "same" or opts.format in RASTER_FORMATS:
        ext = src.suffix.lower() if src.suffix.lower() in (".jpeg", ".tif") else None
        ext = ext or FORMAT_EXTS.get(src_format, ".png")
    else:
        ext = FORMAT_EXT[opts.format]
    stem = _stem(src)
    if kind == "tiff" and stem != src.stem:  # cells.ome.tif -> cells_x2.ome.tif
        ext = src.name[len(stem):].lower()
    name = f"{stem}{opts.suffix.format(scale=scale)}{ext}"
    if opts.output is None:
        return src.parent / name
    out = Path(opts.output)
    if single and (format_for_suffix(out) or out.suffix.lower() in KIND_EXTS["dicom"]):
        keep = KIND_EXTS.get(kind)
        if keep and out.suffix.lower() not in keep:
            raise UpresError(f"{out}: {kind.upper()} input is written as {kind.upper()}; "
                             f"name the output {out.stem}{keep[0]}")
        return out
    try:
        rel = src.parent.relative_to(base)
    except ValueError:
        rel = Path()
    return out / rel / name


def drop_clashes(items: list[Item], opts: JobOptions, scale: int | str
                 ) -> tuple[list[Item], list[tuple[Item, Row]]]:
    """Inputs of one job whose outputs would share a name (``a.JPG`` and ``a.jpg``; ``b.png``
    and ``b.jpg`` with ``--format png``), found from the whole list before any work, as
    scaled-out runs need (their workers and shards never see each other's items): the first
    keeps the name, the others get a failed row. Judged by the file names alone (no file is
    opened), for PNG, JPEG, WebP and BMP names; the other kinds (DICOM's UID names, TIFF,
    rasters) are left to the batch that reads them, which still finds a clash. Returns
    ``(kept, [(item, row), ...])``."""
    from upres.formats.image import format_for_suffix

    first: dict[Path, Item] = {}
    kept, rows = [], []
    for it in items:
        try:
            if format_for_suffix(it.src) in (None, "TIFF") or opts.raster:
                kept.append(it)  # DICOM (UID names), TIFF kinds, rasters: judged when read
                continue
            dst = out_path(it.src, it.base, opts, scale, False,
                           format_for_suffix(it.src) or "PNG")
        except (UpresError, OSError):
            kept.append(it)  # its own row says why, when it is read
            continue
        other = first.setdefault(Path(os.path.normpath(os.path.abspath(dst))), it)
        if other is it:
            kept.append(it)
        else:
            rows.append((it, Row(input=str(it.src), output=str(dst), status="failed",
                                 error=f"{it.src}: its output {dst} is also the output of "
                                       f"{other.src} in this job; rename one or use "
                                       "--suffix")))
    return kept, rows


def shard_of(rel: str, n: int) -> int:
    """Which of ``n`` shards (0..n-1) an input belongs to: a stable hash of its path relative to
    its base, the same on every machine and in every run."""
    return int(hashlib.sha256(os.fsencode(rel)).hexdigest()[:16], 16) % n


@dataclass
class _Work:
    """One item between the stages of :func:`process_item`: its row so far, the output path,
    the decoded document (ordinary images, DICOM, scientific TIFF) and the upscaled result."""

    item: Item
    row: Row
    t0: float
    dst: Path | None = None
    kind: str = ""
    doc: Any = None
    res: Any = None
    done: bool = False  # finished (failed, skipped, or a GeoTIFF written window by window)
    denoise: float | None = None  # a photo model's clean-up strength, reported once written


def _fail(w: _Work, exc: BaseException) -> _Work:
    """Record ``exc`` in ``w``'s row: an error of the item (UpresError, an existing output, out
    of memory) as its one line; any other exception, which is a fault of upres met on this
    item, as one line naming the file and asking for a report, so one file never ends a
    batch."""
    from upres.formats.files import OutputExistsError

    src, dst = w.item.src, w.dst
    if isinstance(exc, OutputExistsError):
        w.row.status = "exists"
    elif isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":  # torch's
        w.row.error = f"{src}: out of memory (try a smaller --tile)"
    elif not isinstance(exc, UpresError):
        first = str(exc).splitlines()[0] if str(exc) else ""
        w.row.error = (f"{src}: unexpected {type(exc).__name__}: {first} (a fault of upres on "
                       "this file; please report it)")
    else:
        msg = str(exc)
        w.row.error = msg if msg.startswith((str(src), str(dst))) else f"{src}: {msg}"
    w.done, w.doc, w.res = True, None, None
    return w


def read_item(item: Item, opts: JobOptions, name_scale: int | str, *,
              single: bool = False) -> _Work:
    """Stage 1 of :func:`process_item`: name the output, skip it if it exists, and decode the
    input (all but GeoTIFF, which is read window by window in stage 2). Never raises for a bad
    input. Safe to run in a thread beside stage 2 of another item."""
    from upres import formats
    from upres.formats.files import check_output
    from upres.formats.image import check_size, format_for_suffix, is_opaque

    src = item.src
    w = _Work(item, Row(input=str(src), output=None, status="failed"), time.perf_counter())
    try:
        # The suffix decides the output format for "same"; the decoded format refines it.
        w.dst = out_path(src, item.base, opts, name_scale, single,
                         format_for_suffix(src) or "PNG")
        check_output(src, w.dst, opts.overwrite)
        w.kind = formats.kind_of(src, raster=opts.raster)
        if opts.size is not None and w.kind != "image":
            raise UpresError(f"{src}: --outscale, --size and --fit apply to ordinary images, "
                             f"not {w.kind.upper()} (whose metadata follows an integer scale)")
        if w.kind == "geotiff":
            if opts.format not in ("same", *RASTER_FORMATS):
                raise UpresError(f"{src}: a GeoTIFF is written as GeoTIFF (--format gtiff or "
                                 f"cog); --format {opts.format} would lose its georeferencing")
            return w
        if opts.bands or opts.value_range != "auto" or opts.overviews:
            raise UpresError(f"{src}: --bands, --value-range and --overviews apply to "
                             "rasters (GeoTIFF, or --format gtiff|cog)")
        w.doc = formats.read(src, max_pixels=opts.max_pixels)
        if w.doc.kind != "image" and opts.format != "same":
            raise UpresError(f"{src}: {w.doc.kind.upper()} input is written as "
                             f"{w.doc.kind.upper()}; --format applies to ordinary images")
        w.dst = out_path(src, item.base, opts, name_scale, single,
                         getattr(w.doc.meta, "format", ""), w.doc.kind)
        check_output(src, w.dst, opts.overwrite)
        out_fmt = format_for_suffix(w.dst)
        if w.doc.kind == "image" and out_fmt in ("JPEG", "BMP") and \
                not is_opaque(w.doc.frames[0]):  # refused before the network's work, not after
            raise UpresError(f"{src}: has transparency, which {out_fmt} cannot hold; choose "
                             "--format png, webp or tiff")
        if w.doc.kind == "image" and out_fmt:
            h, wd = w.doc.frames[0].shape[:2]
            if opts.size is not None:
                from upres.inference.outscale import target_size

                size = target_size(wd, h, opts.size)
            else:
                size = (wd * int(name_scale), h * int(name_scale))
            check_size(out_fmt, *size)
    except Exception as exc:  # UpresError and the like; anything else is reported too
        return _fail(w, exc)
    return w


def upscale_item(up: Any, w: _Work, opts: JobOptions, *, session: Any,
                 on_tile: Callable[[int, int], None] | None = None,
                 upscaler_for: Callable[[int], Any] | None = None,
                 single: bool = False) -> _Work:
    """Stage 2 of :func:`process_item`: the network (a GeoTIFF is also read and written here,
    window by window). Never raises for a bad input; runs where the model runs."""
    from upres.convert import is_network, upscale_document
    from upres.formats.dicom import NOT_FOR_DIAGNOSIS
    from upres.formats.files import check_output

    if w.done:
        return w
    src, row = w.item.src, w.row
    try:
        if w.kind == "geotiff":
            from upres.formats.geotiff import GeoSource
            from upres.raster import upscale_raster

            w.dst = out_path(src, w.item.base, opts, up.scale, single, "TIFF", "geotiff")
            check_output(src, w.dst, opts.overwrite)
            upscale_raster(up, src, w.dst, fmt="cog" if opts.format == "cog" else "gtiff",
                           bands=list(opts.bands), value_range=opts.value_range,
                           overviews=opts.overviews, tile=opts.tile,
                           tile_overlap=opts.tile_overlap, overwrite=opts.overwrite,
                           max_pixels=opts.max_pixels,
                           progress=on_tile is not None)  # a bar of windows, with ETA
            with GeoSource(w.dst, max_pixels=0) as g:
                row.width, row.height = g.meta.width, g.meta.height
            w.done = True
        else:
            if opts.size is not None:
                w.res = _sized(up, w.doc, opts, upscaler_for, on_tile)
            else:
                w.res = upscale_document(up, w.doc, tile=opts.tile,
                                         tile_overlap=opts.tile_overlap, session=session,
                                         dicom_range=opts.dicom_range, on_tile=on_tile)
            w.doc = None
            if w.res.kind == "dicom" and is_network(up):
                row.notes += session.new_notes([NOT_FOR_DIAGNOSIS])
            row.notes += [f"{n} (first seen in {src})"
                          for n in session.new_notes(getattr(w.res.meta, "notes", ()))]
        if hasattr(up, "last"):  # a photo model: the clean-up strength it used
            w.denoise = up.last[0]
    except Exception as exc:  # UpresError and the like; anything else is reported too
        return _fail(w, exc)
    return w


def write_item(w: _Work, opts: JobOptions) -> Row:
    """Stage 3 of :func:`process_item`: commit the output and finish the row. Never raises for
    a bad input. Safe to run in a thread beside stage 2 of another item."""
    from upres import formats

    row = w.row
    try:
        if not w.done:
            formats.write(w.dst, w.res, overwrite=opts.overwrite)
            out = w.res.frames[0]
            row.height, row.width = out.shape[0], out.shape[1]
            row.frames = len(w.res.frames) if len(w.res.frames) > 1 else None
            w.res = None
        if row.status == "failed" and row.error is None:
            row.status = "done"
            row.bytes = w.dst.stat().st_size
            row.denoise = w.denoise
    except Exception as exc:  # UpresError and the like; anything else is reported too
        _fail(w, exc)
    row.output = str(w.dst) if w.dst is not None else None
    row.seconds = round(time.perf_counter() - w.t0, 4)
    row.worker = f"{os.uname().nodename}:{os.getpid()}"
    return row


def process_item(up: Any, item: Item, opts: JobOptions, *, single: bool = False,
                 session: Any = None, on_tile: Callable[[int, int], None] | None = None,
                 upscaler_for: Callable[[int], Any] | None = None) -> Row:
    """Read, upscale and write one item (any kind: image, DICOM, scientific TIFF, GeoTIFF);
    never raises for a bad input: the row says what happened. ``on_tile(done, total)``:
    progress of an ordinary image's tiles. With ``opts.size`` (any output size), the network
    passes come from ``upscaler_for(scale)`` (default: ``up`` for its own scale only)."""
    from upres.convert import Session

    name_scale: int | str = opts.size.label if opts.size is not None else up.scale
    w = read_item(item, opts, name_scale, single=single)
    w = upscale_item(up, w, opts, session=session or Session(), on_tile=on_tile,
                     upscaler_for=upscaler_for, single=single)
    return write_item(w, opts)


def process_items(up: Any, items: list[Item], opts: JobOptions, *, single: bool = False,
                  session: Any = None, upscaler_for: Callable[[int], Any] | None = None,
                  tile_bar: Callable[[Item], Any] | None = None, overlap: bool = True,
                  ) -> Iterator[Row]:
    """:func:`process_item` over ``items``, yielding their rows in order. With ``overlap``,
    decoding the next input and writing the previous output run in two threads beside the
    network (PIL, zlib, libjpeg and pydicom's decoders release the GIL), one item ahead and
    one behind, so at most three items are in memory. Overlap is the default everywhere:
    with PIL's PNG encoder (13.7 ms a BSD100 x4 output) the extra threads only competed with
    torch's on 2 cores (about 5 % slower than one item at a time); since PNGs are written by
    :mod:`upres.formats.png` (about 1.5 ms, ISA-L releasing the GIL) the overlapped folder was
    the faster in all three runs that measured both in turn (docs/benchmarks.md, folder
    section); on a GPU, or with cores the network leaves free, it helps more. Temporaries left
    by killed runs of this host are
    removed from each output folder when it is first named. ``tile_bar(item)``: an optional
    per-item tile progress callback with a ``close()``."""
    from concurrent.futures import Future, ThreadPoolExecutor

    from upres.convert import Session
    from upres.formats.files import sweep_stale

    session = session or Session()
    name_scale: int | str = opts.size.label if opts.size is not None else up.scale
    swept: set[Path] = set()

    claims: dict[Path, Path] = {}  # output -> the input it belongs to, in this run
    claims_lock = threading.Lock()

    def read(it: Item) -> _Work:
        w = read_item(it, opts, name_scale, single=single)
        skipped = w.row.status == "exists"
        if w.dst is not None and (skipped or not w.done):
            with claims_lock:
                key = w.dst.resolve()
                # an output that exists because an earlier input of this run wrote it is a
                # clash too, not a file to skip
                other = claims.get(key, it.src) if skipped else claims.setdefault(key, it.src)
            if other != it.src:  # a.JPG and a.jpg, or b.png and b.jpg with --format png
                w.row.status = "failed"
                _fail(w, UpresError(f"{it.src}: its output {w.dst} is also the output of "
                                    f"{other} in this run; rename one or use --suffix"))
        # Temporaries that a killed run left in this output folder go the first time an output
        # is named there (once per folder, whether or not anything is left to write): only
        # those named by upres for a process of this host that is gone, since the folder may
        # be the user's own (outputs beside their inputs).
        if w.dst is not None and w.dst.parent not in swept:
            swept.add(w.dst.parent)
            sweep_stale(w.dst.parent, this_host_only=True)
        return w

    def compute(w: _Work) -> _Work:
        bar = tile_bar(w.item) if tile_bar is not None and not w.done else None
        try:
            return upscale_item(up, w, opts, session=session, on_tile=bar,
                                upscaler_for=upscaler_for, single=single)
        finally:
            if bar is not None:
                bar.close()

    if not overlap:
        for it in items:
            yield write_item(compute(read(it)), opts)
        return
    with ThreadPoolExecutor(1, thread_name_prefix="upres-read") as reader, \
            ThreadPoolExecutor(1, thread_name_prefix="upres-write") as writer:
        ahead: Future | None = None
        behind: Future | None = None
        for i, it in enumerate(items):
            try:
                w = ahead.result() if ahead is not None else read(it)
                ahead = reader.submit(read, items[i + 1]) if i + 1 < len(items) else None
                w = compute(w)
            except BaseException:  # no yield inside the try: never GeneratorExit
                # a bug or an interruption (Ctrl-C) in this item: the previous item is written (or
                # being written), so its row is reported before the error goes on up
                if behind is not None:
                    row, behind = behind.result(), None
                    yield row
                raise
            if behind is not None:
                yield behind.result()  # one write in flight at a time
            behind = writer.submit(write_item, w, opts)
        if behind is not None:
            yield behind.result()


def _sized(up: Any, doc: Any, opts: JobOptions, upscaler_for: Callable[[int], Any] | None,
           on_tile: Callable[[int, int], None] | None) -> Any:
    """An ordinary image at ``opts.size``: network passes, then one resize."""
    from upres.formats import Document
    from upres.inference.outscale import passes_for, target_size, upscale_to

    img = doc.frames[0]
    h, w = img.shape[:2]
    tw, th = target_size(w, h, opts.size)
    fixed = None if upscaler_for is not None else up.scale
    passes = passes_for(max(tw / w, th / h), fixed)
    kw: dict[str, Any] = {"tile": opts.tile, "tile_overlap": opts.tile_overlap}
    if on_tile is not None:
        kw["on_tile"] = on_tile
    pick = upscaler_for or (lambda s: up)
    out = upscale_to(img, (tw, th), pick, passes, **kw)
    return Document("image", (out,), doc.meta)
