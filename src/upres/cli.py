"""The ``upres`` command line: thin commands over the library.

Exit status: 0 all done, 1 some inputs failed (the rest still done), 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from upres.errors import UpresError

if TYPE_CHECKING:
    from upres.inference.outscale import SizeRequest
    from upres.jobs import JobOptions, Row

__all__ = ["main"]

# upres.inference.upscaler.PRECISIONS, not imported here
_PRECISIONS = ("default", "fp32", "bf16", "fp16", "int8", "auto")
_INT8_RUNTIMES = ("onnxruntime", "openvino")  # upres.inference.upscaler.INT8_RUNTIMES


def _add_int8_runtime(p: argparse.ArgumentParser) -> None:
    p.add_argument("--int8-runtime", choices=_INT8_RUNTIMES,
                   help="which runtime runs int8 (default: OpenVINO where installed and "
                        "measured faster at the first int8 load, else onnxruntime)")
_RASTER_FORMATS = ("gtiff", "cog")  # upres.jobs.RASTER_FORMATS, unimported
_FORMAT_ALIASES = {"jpeg": "jpg", "tif": "tiff"}  # --format: the suffixes users also type
# -o with one of these suffixes means a file upres cannot write, not a folder's name
_MEDIA_SUFFIXES = (".gif", ".avif", ".heic", ".heif", ".jxl", ".jp2", ".j2k", ".ico", ".ppm",
                   ".pgm", ".pbm", ".pnm", ".tga", ".psd", ".exr", ".hdr", ".dng", ".svg",
                   ".pdf", ".mp4", ".mkv", ".mov", ".webm", ".avi")


def _err(msg: str) -> None:
    print(f"upres: {msg}", file=sys.stderr)


class _UsageError(Exception):
    """A usage error (exit status 2)."""


# -- upscale -----------------------------------------------------------------------------------
def _size_request(args: argparse.Namespace) -> SizeRequest | None:
    from upres.inference.outscale import parse_size, size_request

    try:
        return size_request(
            args.outscale, size=None if args.size is None else parse_size(args.size, "--size"),
            fit=None if args.fit is None else parse_size(args.fit, "--fit"), prefix="--")
    except UpresError as exc:
        raise _UsageError(str(exc)) from None


def _job_options(args: argparse.Namespace) -> JobOptions:
    from upres.jobs import JobOptions

    return JobOptions(output=args.output, format=args.format, suffix=args.suffix,
                      overwrite=args.overwrite, tile=args.tile, tile_overlap=args.tile_overlap,
                      max_pixels=args.max_pixels, dicom_range=args.dicom_range,
                      bands=tuple(args.bands or ()), value_range=args.value_range,
                      overviews=args.overviews, size=_size_request(args))


def _parse_shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise _UsageError(f"--shard {text!r}: expected K/N (K from 0 to N-1)") from None
    if n < 1 or not 0 <= k < n:
        raise _UsageError(f"--shard {text!r}: K must be 0 to N-1 and N at least 1")
    return k, n


class _TileBar:
    """A progress bar of one large image's tiles (frames, ETA), shown once it has more than
    one tile; ``__call__(done, total)`` is the Upscaler's ``on_tile``."""

    def __init__(self, name: str) -> None:
        self.name, self.bar = name, None

    def __call__(self, done: int, total: int) -> None:
        from tqdm import tqdm

        if total < 2:
            return
        if self.bar is None or self.bar.total != total or done == 1:
            self.close()
            self.bar = tqdm(total=total, unit="tile", desc=self.name, leave=False,
                            dynamic_ncols=True, file=sys.stderr)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _print_row(row: Row, quiet: bool, write: Callable[..., None]) -> None:
    """One line per item, as the local run prints it."""
    if row.status == "done":
        for note in row.notes:
            if not quiet:
                write(f"upres: {note}", file=sys.stderr)
        if not quiet:
            n = f", {row.frames} frames" if row.frames else ""
            n += f", clean-up {row.denoise:.2f}" if row.denoise else ""
            write(f"{row.input} -> {row.output} ({row.width}x{row.height}{n})", file=sys.stdout)
    elif row.status == "exists":
        if not quiet:
            write(f"upres: {row.output}: exists, skipped (use --overwrite to replace it)",
                  file=sys.stderr)
    else:
        write(f"upres: {row.error}", file=sys.stderr)


def _check_common(args: argparse.Namespace) -> None:
    """The options ``upscale`` and ``video`` share, checked before any work (exit 2)."""
    if args.tile is not None and args.tile != 0 and args.tile < 16:
        raise _UsageError("--tile must be 0 (whole image) or at least 16 pixels")
    if args.tile_overlap < 0:
        raise _UsageError(f"--tile-overlap must be 0 or more pixels, got {args.tile_overlap}")
    try:
        args.suffix.format(scale=2)
    except (KeyError, IndexError, ValueError) as exc:
        raise _UsageError(f"--suffix {args.suffix!r}: only {{scale}} may appear in braces "
                          f"({type(exc).__name__}: {exc})") from None
    if any(c in args.suffix for c in ("/", "\\", os.sep, "\0")):
        raise _UsageError(f"--suffix {args.suffix!r}: a suffix is part of a file name; it "
                          "cannot hold a path separator (use -o for another folder)")
    if any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in args.suffix):
        raise _UsageError(f"--suffix {args.suffix!r}: a suffix cannot hold control characters "
                          "(a newline or tab in a file name)")
    if args.max_pixels is not None and args.max_pixels < 0:
        raise _UsageError(f"--max-pixels must be 0 (no limit) or more, got {args.max_pixels}")


def _is_photo(up: Any) -> bool:
    """Whether ``up`` (from :func:`upres.load`) is a photo model (takes a clean-up strength)."""
    return bool(getattr(getattr(up, "card", None), "denoise_base", ""))


def _check_denoise(args: argparse.Namespace, up: Any) -> None:
    """A fixed ``--denoise`` with a model that has no clean-up: an error for a named model, a
    notice for ``auto`` at a scale without a photo model."""
    if args.denoise == "auto" or _is_photo(up):
        return
    if args.model not in (None, "auto"):
        raise _UsageError(f"--denoise: {args.model} is not a photo model and has no clean-up "
                          "strength; use -m auto or a photo model (upres models)")
    if not args.quiet:
        why = ("photo models need the torch backend" if getattr(args, "backend", "torch") !=
               "torch" else f"there is no photo model at x{up.scale}")
        _err(f"--denoise ignored: {why}, so the default is x{up.scale}, which has no clean-up")


def _check_output_name(output: str | None, n_items: int) -> None:
    """``-o``: a file name for one input, else a folder; a suffix upres cannot write is
    refused rather than taken for a folder's name (exit 2)."""
    if output is None or Path(output).is_dir() or output.endswith(("/", os.sep)):
        return
    from upres.formats import KIND_EXTS
    from upres.formats.image import FORMAT_EXTS, format_for_suffix

    out = Path(output)
    ext = out.suffix.lower()
    writable = bool(format_for_suffix(out)) or ext in KIND_EXTS["dicom"]
    media = ext in _MEDIA_SUFFIXES
    if media and not writable:
        names = ", ".join(sorted(set(FORMAT_EXTS.values())))
        raise _UsageError(f"-o {output}: upres cannot write {ext} files; name the output "
                          f"{names} (DICOM: .dcm) or give a folder")
    if n_items > 1 and (writable or out.is_file()):
        raise _UsageError(f"-o {output}: names a file, and {n_items} inputs need an output "
                          "folder")


def cmd_upscale(args: argparse.Namespace) -> int:
    import upres
    from upres.jobs import collect_inputs, drop_own_outputs, process_items, shard_of

    _check_common(args)
    shard = _parse_shard(args.shard)
    scaled_out = args.engine == "ray" or shard is not None
    if scaled_out and (args.output is None or Path(args.output).is_file() or (
            not Path(args.output).is_dir() and Path(args.output).suffix.lower() in
            (*_MEDIA_SUFFIXES, ".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp"))):
        raise _UsageError("--engine ray and --shard write into an output folder: give -o DIR")
    opts = _job_options(args)
    items = collect_inputs(args.inputs, args.recursive, raster=opts.raster, say=_err)
    if not items:
        return 1
    if not scaled_out:
        _check_output_name(args.output, len(items))
    if args.bands:
        from upres.raster import parse_bands

        parse_bands(args.bands)  # a malformed --bands is one line before any work
    model = args.model or "auto"
    try:
        up = upres.load(model, device=args.device, precision=args.precision, scale=args.scale,
                        backend=args.backend, ensemble=args.ensemble, denoise=args.denoise,
                        int8_runtime=args.int8_runtime)
    except UpresError as exc:
        raise _UsageError(str(exc)) from None
    _check_denoise(args, up)
    if getattr(up, "precision_note", "") and not args.quiet:
        print(f"upres: {up.precision_note}", file=sys.stderr)
    label = opts.size.label if opts.size is not None else up.scale
    items, dropped = drop_own_outputs(items, opts, label)
    if dropped and not args.quiet:
        _err(f"left out {dropped} file(s) that look like outputs of an earlier run (named "
             f"*{args.suffix.format(scale=label)}.* beside their input, or inside the output "
             "folder); name them one by one to upscale them anyway")
    upscaler_for = None
    if opts.size is not None and args.model in (None, "auto"):
        cache = {up.scale: up}

        def upscaler_for(s: int) -> Any:  # the default model of each scale, loaded once
            if s not in cache:
                cache[s] = upres.load("auto", device=args.device, precision=args.precision,
                                      scale=s, backend=args.backend, ensemble=args.ensemble,
                                      denoise=args.denoise, int8_runtime=args.int8_runtime)
            return cache[s]
    if not items:
        return 0
    from tqdm import tqdm

    failed = 0
    report = None
    clashes: list[tuple[Any, Row]] = []
    if scaled_out:
        from upres.formats.files import sweep_stale
        from upres.jobs.manifest import Report, job_params, open_job

        params = job_params(model, up.scale, args.precision, args.ensemble, args.backend, opts,
                            args.denoise, int8_runtime=args.int8_runtime)
        job = open_job(args.output, items, params, overwrite=args.overwrite)
        swept = sweep_stale(args.output, recursive=True)
        if swept and not args.quiet:
            _err(f"removed {len(swept)} temporary file(s) that killed runs left")
        from upres.jobs import drop_clashes

        items, clashes = drop_clashes(items, opts, label)
        if shard is not None:
            k, n = shard
            items = [it for it in items if shard_of(it.rel, n) == k]
            clashes = [(it, r) for it, r in clashes if shard_of(it.rel, n) == k]
            report = Report(job / f"report-shard-{k}-of-{n}.jsonl")
        else:
            report = Report(job / "report.jsonl")
    counts = {"done": 0, "exists": 0, "failed": 0}
    clash_rows = [r for _, r in clashes]
    bar = tqdm(total=len(items) + len(clash_rows), unit="img", dynamic_ncols=True,
               disable=args.quiet or not sys.stderr.isatty() or len(items) == 1)

    def on_rows(rows: list[Row]) -> None:
        for row in rows:
            counts[row.status] += 1
            _print_row(row, args.quiet, tqdm.write)
            bar.update(1)
        if report is not None:
            report.write(rows)

    try:
        if clash_rows:
            on_rows(clash_rows)
        if args.engine == "ray":
            from upres.jobs.ray_engine import ModelSpec, run_ray

            del up  # each worker loads its own
            spec = ModelSpec(model=model, scale=args.scale, device=args.device,
                             precision=args.precision, backend=args.backend,
                             ensemble=args.ensemble, denoise=args.denoise,
                             int8_runtime=args.int8_runtime)
            run_ray(items, opts, spec, address=args.address, workers=args.workers,
                    gpus_per_worker=args.gpus_per_worker, on_rows=on_rows,
                    say=lambda m: None if args.quiet else _err(m))
        else:
            from upres.convert import Session

            single = len(items) == 1 and not scaled_out
            tty = not args.quiet and sys.stderr.isatty()
            for row in process_items(up, items, opts, single=single, session=Session(),
                                     upscaler_for=upscaler_for,
                                     tile_bar=(lambda it: _TileBar(it.src.name)) if tty else None):
                on_rows([row])
    finally:
        bar.close()
        if report is not None:
            report.close()
    if scaled_out:  # what workers killed during this run left behind
        sweep_stale(args.output, recursive=True)
    failed = counts["failed"]
    if scaled_out and not args.quiet:
        _err(f"{counts['done']} done, {counts['exists']} already there, {failed} failed")
    return 1 if failed else 0


# -- video -------------------------------------------------------------------------------------
def _frame_range(text: str | None) -> tuple[int | None, int | None] | None:
    if text is None:
        return None
    a, sep, b = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return (int(a) if a.strip() else None, int(b) if b.strip() else None)
    except ValueError:
        raise _UsageError(f"--frames {text!r}: expected A:B (frame numbers from 0, B "
                          "excluded; either may be left out)") from None


def _video_out(src: Path, args: argparse.Namespace, scale: int) -> Path:
    from upres.formats.video import CONTAINERS

    ext = src.suffix.lower() if src.suffix.lower() in CONTAINERS else ".mkv"
    name = f"{src.stem}{args.suffix.format(scale=scale)}{ext}"
    if args.output is None:
        return src.parent / name
    out = Path(args.output)
    if out.is_dir() or args.output.endswith(("/", os.sep)):
        return out / name
    return out


def cmd_video(args: argparse.Namespace) -> int:
    import upres
    from upres.video import upscale_video

    frames = _frame_range(args.frames)
    _check_common(args)
    try:
        up = upres.load(args.model or "auto", device=args.device,
                        precision=args.precision, scale=args.scale, denoise=args.denoise,
                        int8_runtime=args.int8_runtime)
    except UpresError as exc:
        raise _UsageError(str(exc)) from None
    _check_denoise(args, up)
    if getattr(up, "precision_note", "") and not args.quiet:
        print(f"upres: {up.precision_note}", file=sys.stderr)
    src = Path(args.input)
    dst = _video_out(src, args, up.scale)
    from upres.formats.files import check_output

    check_output(src, dst, args.overwrite)

    def say(msg: str) -> None:
        if not args.quiet:
            print(f"upres: {msg}", file=sys.stderr)

    t0 = __import__("time").perf_counter()
    out = upscale_video(up, src, dst, codec=args.codec, crf=args.crf, preset=args.preset,
                        pix_fmt=args.pix_fmt, frames=frames, start=args.start,
                        duration=args.duration, tile=args.tile,
                        tile_overlap=args.tile_overlap, overwrite=args.overwrite,
                        max_pixels=args.max_pixels, segment_seconds=args.segment_seconds,
                        progress=not args.quiet and sys.stderr.isatty(), say=say)
    if not args.quiet:
        print(f"{src} -> {out} ({__import__('time').perf_counter() - t0:.1f} s)")
    return 0


# -- models ------------------------------------------------------------------------------------
def _model_rows() -> list[dict]:
    from upres.models import zoo

    return zoo.shipped_rows() + zoo.baseline_rows()


def cmd_models(args: argparse.Namespace) -> int:
    rows = _model_rows()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    sets = sorted({k for r in rows for k in r["psnr"]}, key=["Set5", "Set14", "BSD100"].index)
    print(f"{'name':<10} {'arch':<9} {'scale':>5} {'params':>8} {'GMACs':>6} {'CPU ms':>7}  "
          + "  ".join(f"{s:>7}" for s in sets) + "   (PSNR-Y dB, standard protocol; GMACs and "
          "CPU ms for a 1280x720 output, as measured when shipped)")
    for r in rows:
        vals = "  ".join(f"{r['psnr'][s]:7.2f}" if s in r["psnr"] else f"{'-':>7}" for s in sets)
        size = (f"{r['gmacs']:6.1f} {r['cpu_ms']:7.0f}" if r.get("cpu_ms")
                else f"{'-':>6} {'-':>7}")
        print(f"{r['name']:<10} {r['arch']:<9} {'x' + str(r['scale']):>5} {r['params']:>8} "
              f"{size}  " + vals)
        if r.get("summary") or r.get("notes"):
            print(f"{'':<10} {r.get('summary') or r['notes'].split('. ')[0].rstrip('.') + '.'}")
        if r.get("default_precision", "fp32") != "fp32":
            print(f"{'':<10} Runs {r['default_precision']} on a CPU by default (its PSNR and CPU "
                  "ms are that path's; --precision fp32 runs the float weights).")
    from upres.models import zoo

    photos = [f"x{c.scale}: {c.name}" for c in zoo.shipped() if c.denoise_base]
    if photos:
        print(f"auto (the default model): x{{s}}'s own output for clean images, the photo model "
              f"({', '.join(photos)}) with the clean-up each image's damage calls for otherwise; "
              "x{s} at other scales.")
    return 0


# -- eval --------------------------------------------------------------------------------------
def cmd_eval(args: argparse.Namespace) -> int:
    import upres
    from upres.evaluate import evaluate, input_hints, load_benchmark, load_inputs
    from upres.inference.upscaler import Upscaler

    ups = []
    for m in args.model:
        try:
            up = upres.load(m, device=args.device, scale=args.scale, ensemble=args.ensemble,
                            precision=args.precision, denoise=args.denoise,
                            int8_runtime=args.int8_runtime)
        except UpresError as exc:
            raise _UsageError(str(exc)) from None
        if getattr(up, "precision_note", ""):
            print(f"upres: {m}: {up.precision_note}", file=sys.stderr)
        tags = [up.precision] if hasattr(up, "precision") and up.precision != "fp32" else []
        if args.ensemble != 1 and isinstance(up, Upscaler):
            tags.append(f"ensemble {args.ensemble}")
        ups.append((f"{m} ({', '.join(tags)})" if tags else m, up))
    from upres.evaluate import to_markdown

    lr_dirs = args.lr_dir or []
    if lr_dirs and args.no_reference:
        raise _UsageError("--lr-dir pairs LR inputs with their ground truth; with "
                          "--no-reference the -d folders are the inputs")
    if lr_dirs and len(lr_dirs) != len(args.dataset):
        raise _UsageError("give one --lr-dir per dataset (-d), in the same order")
    for d in lr_dirs:
        if not Path(d).is_dir():
            raise _UsageError(f"--lr-dir {d}: "
                              f"{'not a folder' if Path(d).exists() else 'no such folder'}")
    named: dict[str, str] = {}
    for d in args.dataset:
        if not Path(d).is_dir():
            raise _UsageError(f"{d}: {'not a folder' if Path(d).exists() else 'no such folder'}"
                              " (-d takes a folder of images)")
        name = Path(d).name  # what results, tables and reports call it
        if name in named and Path(named[name]).resolve() != Path(d).resolve():
            raise _UsageError(f"-d {named[name]} and {d}: two datasets named {name!r} (results, "
                              "tables and reports name a dataset by its folder); rename one")
        named[name] = d
    for opt, path in (("--json", args.json), ("--markdown", args.markdown)):
        _check_results_file(opt, path, args.overwrite)
    if args.report:  # a report that cannot be written is said before the work, not after
        rep = Path(args.report)
        if rep.exists() and not rep.is_dir():
            raise _UsageError(f"--report {rep}: is a file; name a folder")
        if (rep / "index.html").exists() and not args.overwrite:
            raise _UsageError(f"--report {rep}: holds a report (index.html); use --overwrite "
                              "to replace it, or name another folder")
        try:
            rep.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _UsageError(f"--report {rep}: cannot create the folder "
                              f"({exc.strerror or exc})") from None
        if not os.access(rep, os.W_OK):
            raise _UsageError(f"--report {rep}: the folder is not writable")
    results = []
    outputs: dict = {}  # (dataset, scale) -> name -> (hr, lr, {model: sr}), for --report
    for i, d in enumerate(args.dataset):
        images = (load_inputs(d, args.scale) if args.no_reference else
                  load_benchmark(d, args.scale, lr_dirs[i] if lr_dirs else None))
        table = outputs.setdefault((Path(d).name, args.scale),
                                   {n: (hr, lr, {}) for n, hr, lr in images})
        for name, up in ups:
            keep = None
            if args.report:
                def keep(n: str, sr, name: str = name, table: dict = table) -> None:
                    table[n][2][name] = sr
            hints = input_hints(d) if args.no_reference and hasattr(up, "choose") else None
            res = evaluate(lambda lr, up=up, **kw: up.upscale(lr, tile=args.tile, **kw),
                           model_name=name, hints=hints,
                           dataset=d, scale=args.scale, images=images, rgb=args.rgb,
                           on_output=keep, niqe=args.niqe, progress=sys.stderr.isatty(),
                           reference=not args.no_reference,
                           strength=(lambda up=up: up.last[0]) if hasattr(up, "last") else None)
            results.append(res)
            extra = (f"  | RGB: PSNR {res.psnr_rgb:6.2f}  SSIM {res.ssim_rgb:.4f}"
                     if args.rgb else "")
            extra += f"  NIQE {res.niqe:.2f}" if args.niqe or args.no_reference else ""
            fid = ("(no reference)" if args.no_reference else
                   f"PSNR-Y {res.psnr_y:6.2f}  SSIM-Y {res.ssim_y:.4f}")
            print(f"{res.model:<24} {res.dataset:<10} x{res.scale}  {fid}  "
                  f"({res.n_images} images){extra}", flush=True)
    lr_note = "LR from --lr-dir" if lr_dirs else "MATLAB-bicubic LR"
    if args.no_reference:
        print("(inputs without ground truth: NIQE only, upres's own fit; lower is more natural)")
    else:
        print(f"(standard protocol: {lr_note}, Y channel, border shaved by the scale"
              + ("; RGB figures are not the protocol's and not comparable with papers)"
                 if args.rgb else ")"))
    for path, text in ((args.json, lambda: json.dumps([r.to_json() for r in results], indent=2)),
                       (args.markdown, lambda: to_markdown(results))):
        if path:
            _write_results_file(path, text())
    if args.report:
        from upres.report import write_report

        index = write_report(args.report, results, outputs, reference=not args.no_reference)
        print(f"wrote {index}")
    return 0


def _check_results_file(opt: str, path: str | None, overwrite: bool) -> None:
    """Refuse, before any work, a results file (``--json``, ``--markdown``) that could not be
    written or would replace an existing file without ``--overwrite``."""
    if not path:
        return
    out = Path(path)
    if out.is_dir():
        raise _UsageError(f"{opt} {path}: is a folder; name a file")
    if out.is_file() and not overwrite and not _is_stream(out):
        raise _UsageError(f"{opt} {path}: exists; use --overwrite to replace it")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _UsageError(f"{opt} {path}: cannot create its folder "
                          f"({exc.strerror or exc})") from None
    if not os.access(out.parent, os.W_OK):
        raise _UsageError(f"{opt} {path}: its folder is not writable")


def _write_results_file(path: str, text: str) -> None:
    """Write a results file checked by :func:`_check_results_file`: whole or not at all, or
    through a link or device (``/dev/stdout``) as it is; say where (on stderr for those, so
    stdout holds only the results)."""
    out = Path(path)
    special = out.is_symlink() or (out.exists() and not out.is_file())
    if _is_stream(out) and _same_file(out, sys.stdout):  # what was printed stays
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    elif special:
        with open(out, "w") as f:
            f.write(text + "\n")
    else:
        from upres.formats.files import atomic_write

        atomic_write(out, (text + "\n").encode(), overwrite=True)
    print(f"wrote {out}", file=sys.stderr if special else sys.stdout)


def _is_stream(out: Path) -> bool:
    """Whether ``out`` names a stream of this process (``/dev/stdout``, ``/dev/fd/N``,
    ``/proc/self/fd/N``), which is written through even when the shell sent it to a file."""
    name = os.path.abspath(out)
    return name in ("/dev/stdout", "/dev/stderr") or \
        name.startswith(("/dev/fd/", "/proc/self/fd/", "/proc/thread-self/fd/"))


def _same_file(out: Path, stream: object) -> bool:
    """Whether ``out`` is the file behind the open ``stream`` (False when it cannot be told)."""
    try:
        return os.path.samefile(out, f"/proc/self/fd/{stream.fileno()}")  # type: ignore[attr-defined]
    except (OSError, ValueError, AttributeError):
        return False


# -- bench -----------------------------------------------------------------------------------
def cmd_bench(args: argparse.Namespace) -> int:
    from upres.bench import bench, machine

    try:
        w, h = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        raise _UsageError(f"--size must look like 320x180, got {args.size!r}") from None
    if w < 1 or h < 1:
        raise _UsageError(f"--size must be positive, got {args.size!r}")
    _check_results_file("--json", args.json, args.overwrite)
    print(f"# {machine()}")
    results = []
    for m in args.model:
        try:
            r = bench(m, scale=args.scale, width=w, height=h, device=args.device,
                      precision=args.precision, repeat=args.repeat,
                      channels_last=args.channels_last, backend=args.backend,
                      ensemble=args.ensemble, int8_runtime=args.int8_runtime)
        except UpresError as exc:
            raise _UsageError(str(exc)) from None
        results.append(r)
        print(f"{r.model:<12} x{r.scale} {r.input} -> {w * r.scale}x{h * r.scale} {r.device} "
              f"{r.precision}{' channels_last' if r.channels_last else ''}"
              f"{'' if r.backend == 'torch' else ' ' + r.backend}"
              f"{f' ensemble {r.ensemble}' if r.ensemble > 1 else ''}: "
              f"{r.latency_ms:9.1f} ms  {r.mpix_per_s:7.2f} MP/s  peak RSS {r.peak_rss_mb:.0f} MB",
              flush=True)
    if args.json:
        _write_results_file(args.json, json.dumps([r.to_json() for r in results], indent=2))
    return 0


# -- train -------------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    from upres.train.config import load_config
    from upres.train.distributed import teardown
    from upres.train.trainer import (
        RUN_FILES,
        Trainer,
        check_run_free,
        remove_if_empty,
        run_dir_for,
    )

    if args.resume:
        run_dir = Path(args.resume)
        extra = "CONFIG.yaml" if args.config is not None else "--run-dir" if args.run_dir else ""
        if extra:
            raise _UsageError(f"--resume {run_dir} continues that run in its folder with its own "
                              f"config.yaml: drop {extra} (change values with --set KEY=VALUE)")
        if not run_dir.is_dir():
            what = "not a folder" if run_dir.exists() else "no such folder"
            raise _UsageError(f"{run_dir}: {what} (--resume takes a run folder)")
        check_run_free(run_dir)  # before any word on what the folder holds
        if not (run_dir / "last.pt").is_file():
            if (run_dir / "config.yaml").is_file():
                raise _UsageError(f"{run_dir}: no checkpoint last.pt to resume from (the run "
                                  f"stopped before its first one); start it afresh with: upres "
                                  f"train {run_dir / 'config.yaml'} --run-dir NEW_DIR")
            raise _UsageError(f"{run_dir}: no checkpoint last.pt to resume from")
        cfg = load_config(run_dir / "config.yaml", args.set)
        try:
            Trainer(cfg, run_dir).run(resume=True, until=args.stop_after)
        finally:
            teardown()  # under torchrun: leave the process group (main ends the process)
        return 0
    if args.config is None:
        raise _UsageError("train needs CONFIG.yaml (or --resume RUN_DIR)")
    cfg = load_config(args.config, args.set)
    run_dir = run_dir_for(cfg, args.run_dir)
    if run_dir.is_dir():
        check_run_free(run_dir)
    # A fresh run never writes over an earlier one (its log would be appended to, its
    # checkpoint and weights replaced). Every torchrun process checks before the process group
    # forms, so no process can have written anything yet.
    held = [f for f in RUN_FILES if (run_dir / f).exists()]
    if held:
        then = (f"continue it with --resume {run_dir}, or" if "last.pt" in held else
                "it has no checkpoint to resume from: delete it, or")
        raise _UsageError(f"{run_dir}: already holds a run ({', '.join(held)}); {then} start a "
                          f"new one with --run-dir DIR or --set name=NEW")
    existed = run_dir.exists()
    try:
        Trainer(cfg, run_dir).run(until=args.stop_after)
    except BaseException:
        if not existed:  # a new run that failed before writing anything leaves no folder
            remove_if_empty(run_dir)
        raise
    finally:
        teardown()  # under torchrun: leave the process group (main ends the process)
    return 0


# -- export ------------------------------------------------------------------------------------
def cmd_export(args: argparse.Namespace) -> int:
    from upres.api import resolve_weights
    from upres.export import MIN_OPSET, OPSET, export_onnx
    from upres.models.weights import load_model

    out = Path(args.output)
    if args.opset is not None and not MIN_OPSET <= args.opset <= OPSET:
        raise _UsageError(f"--opset must be {MIN_OPSET} to {OPSET}, got {args.opset}")
    if out.is_dir():  # before any work (an int8 export calibrates first)
        raise _UsageError(f"{out}: is a folder, not a file to write the ONNX model to")
    if out.suffix.lower() != ".onnx":  # upres and runtimes know an ONNX file by its suffix
        raise _UsageError(f"{out}: name the ONNX file with the suffix .onnx")
    if out.exists() and not args.overwrite:
        raise _UsageError(f"{out}: exists (use --overwrite to replace it)")
    if not out.parent.is_dir():
        raise _UsageError(f"{out.parent}: no such folder")
    try:
        net, card = load_model(resolve_weights(args.model), args.scale)
    except UpresError as exc:
        raise _UsageError(str(exc)) from None
    net, card = _export_strength(args, net, card)
    what = f"{card.name} (x{card.scale}, {card.arch}" + (
        f", clean-up strength {float(args.denoise):g})" if args.denoise is not None else ")")
    if args.calibration and not args.int8:
        raise _UsageError("--calibration is for --int8 exports")
    if args.int8 and args.opset is not None:
        raise _UsageError("--opset is fixed for --int8 exports (the quantiser's own)")
    if not args.int8:
        # the float graph: a card that says "runs int8 by default" would be wrong in it
        opset = OPSET if args.opset is None else args.opset
        export_onnx(net, card.with_(default_precision=""), out, opset=opset)
        print(f"{what} -> {out} (ONNX opset {opset}, dynamic batch/height/width)")
        return 0
    from upres.export import write_onnx
    from upres.quantize import load_calibration, loss_words, make_int8

    try:
        crops = load_calibration(args.calibration)
    except UpresError as exc:
        raise _UsageError(str(exc)) from None
    graph, loss = make_int8(net, card, crops=crops)
    write_onnx(graph, out)
    src = args.calibration or "the bundled training-set crops"
    print(f"{what} -> {out} (int8 ONNX, dynamic "
          f"batch/height/width; calibrated on {len(crops)} crops of {src}: int8 "
          f"{loss_words(loss)} PSNR-Y against fp32 on them)")
    return 0


def _export_strength(args: argparse.Namespace, net: Any, card: Any) -> tuple[Any, Any]:
    """A photo model's network at the clean-up strength ``--denoise`` names (a graph holds one
    set of weights; the file alone is strength 1), its card saying so: no ``denoise_base``
    (the graph is one network), no PSNR figures (the card's were at the automatic strength)
    and no ``int8_scan`` (measured on the strength-1 weights, not the blend). Other models are
    returned as they are, and ``--denoise`` is refused for them."""
    if not card.denoise_base:
        if args.denoise is not None:
            raise _UsageError(f"--denoise: {args.model} is not a photo model and has no "
                              "clean-up strength")
        return net, card
    from upres.api import resolve_weights
    from upres.inference.denoise import PhotoUpscaler, check_denoise
    from upres.models.weights import load_model

    try:
        t = check_denoise(args.denoise if args.denoise is not None else "auto")
    except UpresError as exc:
        raise _UsageError(f"--denoise: {exc}") from None
    if t == "auto":
        raise _UsageError(f"{args.model} is a photo model: a graph holds one clean-up strength "
                          "(the automatic one changes the weights per image); name it with "
                          "--denoise 0..1 (0 is its clean model's network)")
    base, _ = load_model(resolve_weights(card.denoise_base), card.scale)
    photo = {k: v.clone() for k, v in net.state_dict().items()}
    from types import SimpleNamespace

    PhotoUpscaler(SimpleNamespace(model=net), base.state_dict(), photo).set_strength(float(t))
    note = (f"{card.name} at the fixed clean-up strength {float(t):g}: its weights blended "
            f"with {card.denoise_base}'s (0 is {card.denoise_base}'s network, 1 the strongest "
            "clean-up); exported by upres export --denoise. The PSNR figures of the model "
            "were at its automatic strength and are not carried.")
    summary = (f"{card.name}'s photo clean-up at the fixed strength {float(t):g}, for inputs "
               "damaged about that much (JPEG, noise, blur)")
    # the card's notes and summary describe the automatic strength: replaced, not kept
    return net, card.with_(denoise_base="", denoise_fit={}, denoise_level=False, psnr={},
                           ssim={}, int8_scan={}, notes=note, summary=summary)


# -- serve -------------------------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    from upres.serve.app import ServeConfig, run

    token = os.environ.get("UPRES_TOKEN") or None
    if args.token_file:
        try:
            token = Path(args.token_file).read_text().strip()
        except OSError as exc:
            raise _UsageError(f"--token-file {args.token_file}: cannot read it "
                              f"({exc.strerror or exc})") from None
        if len(token) < 16:
            raise _UsageError(f"--token-file {args.token_file}: the token must be at least 16 "
                              "characters (e.g. python -c 'import secrets; "
                              "print(secrets.token_urlsafe(32))')")
    if args.max_upload_mb < 1:
        raise _UsageError(f"--max-upload-mb must be at least 1, got {args.max_upload_mb}")
    try:
        cfg = ServeConfig(models=tuple(args.models) if args.models else None,
                          max_upload_bytes=args.max_upload_mb * 2**20,
                          max_pixels=args.max_pixels, workers=args.workers,
                          queue_timeout=args.queue_timeout, max_queue=args.max_queue,
                          precision=args.precision, token=token,
                          read_timeout=args.read_timeout)
        run(cfg, host=args.host, port=args.port, insecure=args.insecure)
    except UpresError as exc:
        raise _UsageError(str(exc)) from None
    return 0


# -- parser ------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="upres", description="Deep-learning image super-resolution.")
    p.add_argument("--version", action="version", version="upres 0.1.0")
    sub = p.add_subparsers(dest="command", required=True)

    u = sub.add_parser("upscale", help="upscale images with a model")
    u.add_argument("inputs", nargs="+", metavar="INPUT", help="files, folders or glob patterns")
    u.add_argument("-o", "--output", help="output folder, or a file path for one input")
    u.add_argument("-s", "--scale", type=int, choices=(2, 3, 4), help="scale (picks model x{s})")
    u.add_argument("-m", "--model",
                   help="shipped model name, bicubic/lanczos, or weights path (default auto: "
                        "x{s}'s output for clean images, the photo model with the clean-up its "
                        "damage calls for otherwise)")
    u.add_argument("--denoise", default="auto", metavar="0..1|auto",
                   help="photo models: clean-up strength, 0 (none: x{s}) to 1 (strong); auto "
                        "measures each image's noise and JPEG damage (default)")
    u.add_argument("--outscale", type=float, metavar="F",
                   help="any output factor (1.5, 6, 8): the network pass(es) that reach it "
                        "with the least work, then one high-quality resize; ordinary images")
    u.add_argument("--size", metavar="WxH",
                   help="exact output size (WxH; 1920x0 keeps the aspect ratio)")
    u.add_argument("--fit", metavar="WxH",
                   help="largest output within WxH, keeping the aspect ratio")
    u.add_argument("--tile", type=int,
                   help="tile size in input pixels; 0 = whole image (default: automatic)")
    u.add_argument("--tile-overlap", type=int, default=16, help="context pixels around tiles")
    u.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    u.add_argument("--precision", default="default", choices=_PRECISIONS,
                   help="default: the model's own (fp32; int8 on a CPU for models made to "
                        "run quantised, see `upres models`); int8: the CPU's integer "
                        "kernels (onnxruntime, or OpenVINO where installed and measured "
                        "faster), quantised at the first use (cached); auto: time fp32, "
                        "bf16 and int8 on this machine at the first load, keep the clearly "
                        "faster (int8 only within 0.05 dB of fp32) and cache the choice")
    _add_int8_runtime(u)
    u.add_argument("--backend", default="torch", choices=("torch", "onnxruntime"),
                   help="run the network with PyTorch (default) or onnxruntime (CPU, fp32)")
    u.add_argument("--ensemble", type=int, default=1, choices=(1, 2, 4, 8),
                   help="self-ensemble: average over N flipped/rotated runs (N times slower)")
    u.add_argument("--format", default="same",
                   type=lambda v: _FORMAT_ALIASES.get(v.lower(), v.lower()),
                   choices=("same", "png", "jpg", "webp", "tiff", "bmp", *_RASTER_FORMATS),
                   help="output format; gtiff / cog: a GeoTIFF / Cloud-Optimised GeoTIFF from "
                        "any raster GDAL reads (a GeoTIFF input is written as GeoTIFF anyway)")
    u.add_argument("--bands", action="append", metavar="SPEC",
                   help="rasters: bands to keep (4,3,2) or how to enlarge them: rgb:4,3,2 "
                        "(colour path), net:5 (network, gray), bicubic:6-13, lanczos:N, "
                        "nearest:14, rgb:none; repeatable")
    u.add_argument("--value-range", default="auto", metavar="auto|type|data|LO:HI",
                   help="rasters: values the network's 0..1 stands for (auto: 0..255 for "
                        "8-bit, the data's range otherwise; LO:HI to treat tiles alike)")
    u.add_argument("--overviews", action="store_true",
                   help="rasters: add internal overviews, halving until 512 pixels a side "
                        "(a COG always has them; a raster within 512 pixels needs none)")
    u.add_argument("--suffix", default="_x{scale}", help="output name suffix (default _x{scale})")
    u.add_argument("--overwrite", action="store_true", help="replace existing output files")
    u.add_argument("-r", "--recursive", action="store_true", help="descend into sub-folders")
    u.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    u.add_argument("--dicom-range", default="stored", choices=("stored", "data"),
                   help="DICOM values the network's 0..1 maps onto: the stored bit range "
                        "(default) or the range the file's frames use (better for data that "
                        "fills little of its bits, e.g. 16-bit MR using 0..1000)")
    u.add_argument("--engine", default="local", choices=("local", "ray"),
                   help="local (this process) or ray (a Ray cluster; needs -o DIR)")
    u.add_argument("--address", default=None,
                   help="--engine ray: auto (this machine's cluster) or HOST:PORT; default: "
                        "start a local one")
    u.add_argument("--workers", type=int, default=None,
                   help="--engine ray: worker actors (default: one per CPU, or per GPU share)")
    u.add_argument("--gpus-per-worker", type=float, default=0.0,
                   help="--engine ray: GPUs each worker takes (e.g. 0.5)")
    u.add_argument("--shard", metavar="K/N",
                   help="do only shard K (0..N-1) of N: a stable hash of each input's path "
                        "(Slurm arrays, torchrun, several machines; needs -o DIR)")
    u.add_argument("--max-pixels", type=int, default=None,
                   help="refuse inputs with more pixels than this (default 200000000; "
                        "2000000000 for rasters, which are read window by window; 0 = no limit)")
    u.set_defaults(func=cmd_upscale)

    vd = sub.add_parser("video", help="upscale a video with its sound (resumable)")
    vd.add_argument("input", metavar="IN", help="a video file (any container FFmpeg reads)")
    vd.add_argument("-o", "--output", help="output file (.mp4, .mkv, .mov, .webm) or folder")
    vd.add_argument("-s", "--scale", type=int, choices=(2, 3, 4), help="scale (picks model x{s})")
    vd.add_argument("-m", "--model", help="shipped model name, bicubic/lanczos, or weights path "
                                          "(default auto, as for upscale)")
    vd.add_argument("--denoise", default="auto", metavar="0..1|auto",
                    help="photo models: clean-up strength; auto measures five frames spread "
                         "over the video and keeps their median for every frame")
    vd.add_argument("--codec", help="h264, h265, vp9, av1, ffv1 or prores (default: H.264 for "
                                    "8-bit, H.265 keeping the depth for 10/12-bit, VP9 in WebM)")
    vd.add_argument("--crf", type=int, help="quality for h264/h265/vp9/av1 (lower is better; "
                                            "default 18 / 20 / 24 / 28)")
    vd.add_argument("--preset", help="encoder speed preset (x264/x265: veryfast; av1: 8; vp9: "
                                     "cpu-used -8..8; none for ffv1 and prores)")
    vd.add_argument("--pix-fmt", help="encoder pixel format (default: the input's, if the "
                                      "encoder takes it)")
    vd.add_argument("--frames", metavar="A:B", help="only frames A to B-1 (display order)")
    vd.add_argument("--start", type=float, help="start at this many seconds")
    vd.add_argument("--duration", type=float, help="this many seconds")
    vd.add_argument("--tile", type=int,
                    help="tile size in input pixels; 0 = whole frame (default: automatic)")
    vd.add_argument("--tile-overlap", type=int, default=16, help="context pixels around tiles")
    vd.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    vd.add_argument("--precision", default="default", choices=_PRECISIONS)
    _add_int8_runtime(vd)
    vd.add_argument("--suffix", default="_x{scale}", help="output name suffix (default _x{scale})")
    vd.add_argument("--overwrite", action="store_true", help="replace an existing output")
    vd.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    vd.add_argument("--max-pixels", type=int, default=None,
                    help="refuse frames with more pixels than this (default 200000000)")
    vd.add_argument("--segment-seconds", type=float, default=5.0,
                    help="resume granularity: segments run from keyframe to keyframe and "
                         "span at least this long (default 5)")
    vd.set_defaults(func=cmd_video)

    m = sub.add_parser("models", help="list shipped models and baselines")
    m.add_argument("--json", action="store_true", help="machine-readable list")
    m.set_defaults(func=cmd_models)

    e = sub.add_parser("eval", help="PSNR/SSIM by the standard protocol")
    e.add_argument("-m", "--model", nargs="+", required=True, metavar="MODEL")
    e.add_argument("-d", "--dataset", nargs="+", required=True, metavar="DATASET_DIR")
    e.add_argument("-s", "--scale", type=int, required=True, choices=(2, 3, 4, 8))
    e.add_argument("--json", metavar="PATH", help="write results as JSON")
    e.add_argument("--markdown", metavar="PATH", help="write a Markdown table")
    e.add_argument("--report", metavar="DIR",
                   help="write an HTML report with side-by-side crops (DIR/index.html)")
    e.add_argument("--overwrite", action="store_true",
                   help="replace existing --json/--markdown files and --report index.html")
    e.add_argument("--lr-dir", nargs="+", metavar="DIR",
                   help="ready LR images, one folder per dataset (X{s}/{name}x{s}.png, "
                        "{name}x{s}.png, {name}_x{s}.png or {name}.png)")
    e.add_argument("--no-reference", action="store_true",
                   help="the folders hold real inputs without ground truth (e.g. real-world "
                        "photos): upscale them, score NIQE only, and --report shows crops")
    e.add_argument("--rgb", action="store_true",
                   help="also PSNR/SSIM on RGB (labelled; not the protocol's Y figures)")
    e.add_argument("--niqe", action="store_true",
                   help="also NIQE of the outputs (no-reference; lower is more natural; upres's "
                        "own pristine model, fitted on the 291 training images)")
    e.add_argument("--ensemble", type=int, default=1, choices=(1, 2, 4, 8),
                   help="self-ensemble: average over N flipped/rotated runs (N times slower)")
    e.add_argument("--tile", type=int, help="tile size in input pixels (default: automatic)")
    e.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    e.add_argument("--precision", default="default", choices=_PRECISIONS,
                   help="what the networks run in, as for upscale and bench")
    _add_int8_runtime(e)
    e.add_argument("--denoise", default="auto", metavar="0..1|auto",
                   help="photo models: clean-up strength (auto: measured per image)")
    e.set_defaults(func=cmd_eval)

    b = sub.add_parser("bench", help="latency, throughput and peak memory")
    b.add_argument("-m", "--model", nargs="+", required=True, metavar="MODEL")
    b.add_argument("-s", "--scale", type=int, required=True, choices=(2, 3, 4, 8))
    b.add_argument("--size", default="320x180", help="input size WxH (default 320x180)")
    b.add_argument("--json", metavar="PATH", help="write results as JSON")
    b.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    b.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda", "mps"))
    b.add_argument("--precision", default="default", choices=_PRECISIONS)
    _add_int8_runtime(b)
    b.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="channels_last memory format (default: the measured best per arch)")
    b.add_argument("--repeat", type=int, default=10, help="timed runs after 2 warm-up runs")
    b.add_argument("--backend", default="torch", choices=("torch", "onnxruntime"))
    b.add_argument("--ensemble", type=int, default=1, choices=(1, 2, 4, 8),
                   help="self-ensemble: average over N flipped/rotated runs (N times slower)")
    b.set_defaults(func=cmd_bench)

    x = sub.add_parser("export", help="export a model to ONNX")
    x.add_argument("-m", "--model", required=True, help="shipped model name or weights path")
    x.add_argument("-s", "--scale", type=int, choices=(2, 3, 4, 8),
                   help="scale, for weights that hold several")
    x.add_argument("--format", default="onnx", choices=("onnx",))
    x.add_argument("-o", "--output", required=True, metavar="PATH", help="the .onnx file")
    x.add_argument("--opset", type=int, help="ONNX opset, 9 to 20 (default 20)")
    x.add_argument("--int8", action="store_true",
                   help="quantise to int8 (onnxruntime QDQ: per-channel weights, percentile-"
                        "calibrated activations, first layer float32, the last too "
                        "unless int8 keeps the 0.05 dB rule)")
    x.add_argument("--calibration", metavar="DIR",
                   help="with --int8: calibrate on crops of these images (default: crops of "
                        "the 291 training images bundled with upres)")
    x.add_argument("--denoise", metavar="0..1",
                   help="photo models: the clean-up strength the graph holds (required for "
                        "them: a graph is one network)")
    x.add_argument("--overwrite", action="store_true", help="replace an existing file")
    x.set_defaults(func=cmd_export)

    v = sub.add_parser("serve", help="web page and HTTP API")
    v.add_argument("--host", default="127.0.0.1")
    v.add_argument("--port", type=int, default=8000)
    v.add_argument("--models", nargs="+", metavar="MODEL",
                   help="shipped model names to offer (default: all)")
    v.add_argument("--max-upload-mb", type=int, default=50, help="largest upload (default 50)")
    v.add_argument("--max-pixels", type=int, default=16_000_000,
                   help="largest input in pixels (default 16000000)")
    v.add_argument("--workers", type=int, default=1, help="upscales run at once (default 1)")
    v.add_argument("--max-queue", type=int, default=32,
                   help="requests waiting beyond the running ones before 503 (default 32)")
    v.add_argument("--queue-timeout", type=float, default=60.0,
                   help="seconds a request waits for a worker before 503 (default 60)")
    v.add_argument("--precision", default="default", choices=_PRECISIONS,
                   help="what the models run in (default: each model's own, fp32 for most; "
                        "auto: the fastest path measured on this machine, fp16 on CUDA; see "
                        "`upres upscale --help`)")
    v.add_argument("--token-file", metavar="PATH",
                   help="require 'Authorization: Bearer TOKEN' on /v1/ (the token is the "
                        "file's text; or set UPRES_TOKEN); needed off the loopback address")
    v.add_argument("--insecure", action="store_true",
                   help="serve off the loopback address without a token (anyone who can reach "
                        "it can use it)")
    v.add_argument("--read-timeout", type=float, default=30.0,
                   help="seconds an upload may send nothing before 408 (default 30)")
    v.set_defaults(func=cmd_serve)

    t = sub.add_parser("train", help="train a model from a YAML recipe")
    t.add_argument("config", nargs="?", metavar="CONFIG.yaml")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. optim.lr=5e-4 (repeatable)")
    t.add_argument("--resume", metavar="RUN_DIR",
                   help="continue a run from its last.pt, with its own config.yaml (change "
                        "values with --set; not the network's shape or the optimizer)")
    t.add_argument("--run-dir", help="run folder (default runs/<name>)")
    t.add_argument("--stop-after", type=int, metavar="STEP",
                   help="checkpoint and stop after this step (continue later with --resume)")
    t.set_defaults(func=cmd_train)
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        code = _main(argv)
    except BaseException:  # an unexpected error: its traceback, then the same ending
        if _left_training():
            import traceback

            traceback.print_exc()
            _end_training_process(1)
        raise
    if _left_training():  # a torchrun process after training, however the training ended:
        _end_training_process(code)  # no interpreter shutdown (end_process says why)
    return code


def _left_training() -> bool:
    trained = sys.modules.get("upres.train.distributed")  # (only loaded by training)
    return trained is not None and trained.left()


def _end_training_process(code: int) -> None:
    sys.modules["upres.train.distributed"].end_process(code)


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except _UsageError as exc:
        _err(str(exc))
        return 2
    except UpresError as exc:
        _err(str(exc))
        return 1
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except BrokenPipeError:  # e.g. `upres models | head`: the reader left; nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
