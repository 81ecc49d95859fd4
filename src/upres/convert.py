"""One file through the whole path: reader -> planes + metadata -> model -> metadata scaled ->
writer of the same kind. Used by ``upres upscale`` and :func:`upres.upscale_file`."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from upres import formats
from upres.errors import UpresError
from upres.formats import Document
from upres.formats.files import check_output
from upres.formats.values import from_unit, masked_nearest, to_unit

__all__ = ["Session", "clear_of_padding", "is_network", "upscale_document", "upscale_file",
           "upscale_values", "used_range"]


@dataclass
class Session:
    """What the files of one run share: the new SeriesInstanceUID per input series (so all
    outputs of one series land in one new series) and the notes already said."""

    series_uids: dict[str, str] = field(default_factory=dict)
    said: set[str] = field(default_factory=set)

    def new_notes(self, notes: list[str] | tuple[str, ...]) -> list[str]:
        """The notes not said before in this run (and remember them)."""
        out = []
        for n in notes:
            if n not in self.said:
                self.said.add(n)
                out.append(n)
        return out


def is_network(up: Any) -> bool:
    """True unless ``up`` is one of the interpolation baselines (bicubic, lanczos)."""
    from upres.models.zoo import BASELINES

    return getattr(up, "name", "") not in BASELINES


def _derivation(up: Any) -> str:
    import upres

    how = "interpolation" if not is_network(up) else "model"
    return f"upres {upres.__version__} super-resolution, {how} {up.name}, scale x{up.scale}"


def upscale_values(up: Any, frame: np.ndarray, lo: float, hi: float,
                   mask: np.ndarray | None = None, tile: int | None = None,
                   tile_overlap: int = 16) -> np.ndarray:
    """Upscale one frame of stored values (``(H, W)`` or ``(H, W, C)``, any int or float dtype)
    whose meaningful range is ``lo..hi``: mapped linearly onto the network's [0, 1], upscaled,
    mapped back, clipped to ``lo..hi`` and cast to the frame's dtype; ``mask`` ``(H, W)``
    samples (padding, NaN) are kept out of the network and come back as they were."""
    from upres.inference.denoise import data_kwargs

    u = to_unit(frame, lo, hi, mask)
    y = np.asarray(up.upscale(u, tile=tile, tile_overlap=tile_overlap, **data_kwargs(up)),
                   dtype=np.float32)
    out = from_unit(y, lo, hi, frame.dtype)
    return masked_nearest(out, frame, mask, up.scale)


def used_range(frames: tuple[np.ndarray, ...], masks: list[np.ndarray | None]) -> tuple[float,
                                                                                    float]:
    """Min and max of the unmasked samples of all frames (hi > lo)."""
    lo, hi = np.inf, -np.inf
    for f, m in zip(frames, masks, strict=True):
        v = f[~m] if m is not None else f
        if v.size:
            lo, hi = min(lo, float(v.min())), max(hi, float(v.max()))
    if not np.isfinite(lo):
        return 0.0, 1.0
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def clear_of_padding(out: np.ndarray, mask: np.ndarray, s: int, padding: tuple[int, int],
                     lo: float, hi: float) -> np.ndarray:
    """Move the samples of ``out`` (``(H*s, W*s)`` stored values) that are not padding (outside
    ``mask`` ``(H, W)`` grown ``s`` times) but fell into the padding range ``padding`` (a, b)
    to the nearest value outside it within ``lo..hi``, so a viewer never hides tissue as
    padding (PS3.3 C.7.5.1.1.2). ``out`` is changed in place and returned."""
    a, b = padding
    big = np.repeat(np.repeat(mask, s, axis=0), s, axis=1)
    hit = ~big & (out >= a) & (out <= b)
    if hit.any():
        below, above = a - 1, b + 1
        if below < lo and above > hi:
            return out  # the padding range covers every value: nothing to move to
        if below < lo:
            out[hit] = above
        elif above > hi:
            out[hit] = below
        else:
            v = out[hit].astype(np.float64)
            out[hit] = np.where(v - a < b - v, below, above).astype(out.dtype)
    return out


def upscale_document(up: Any, doc: Document, *, tile: int | None = None, tile_overlap: int = 16,
                     session: Session | None = None, dicom_range: str = "stored",
                     on_tile: Any = None) -> Document:
    """Upscale every frame of ``doc`` and scale its metadata; returns a document of the same
    kind and dtype, ``up.scale`` times larger.

    ``dicom_range``: what the network's 0..1 stands for in a DICOM: ``"stored"`` (the stored bit
    range, BitsStored and PixelRepresentation; the default) or ``"data"`` (the range the file's
    frames use, padding left out; results are clipped to it). A stored range wider than 16 bits
    (32-bit dose grids, parametric maps) always takes the data's range: their values fill a
    sliver of ``0 .. 2**32 - 1`` that the network's precision cannot resolve. Output samples
    outside the padding never take a PixelPaddingValue (:func:`clear_of_padding`), and a
    series' new SeriesInstanceUID is derived from its source series and the model, the same in
    every run. ``on_tile(done, total)``: the progress of an ordinary image's tiles."""
    if dicom_range not in ("stored", "data"):
        raise UpresError(f"dicom_range must be 'stored' or 'data', got {dicom_range!r}")
    s = up.scale
    if doc.kind == "image":
        kw: dict[str, Any] = {"quality": doc.meta.jpeg_quality} if hasattr(up, "choose") else {}
        if on_tile is not None:  # networks report their tiles (interpolators ignore it)
            kw["on_tile"] = on_tile
        out = up.upscale(doc.frames[0], tile=tile, tile_overlap=tile_overlap, **kw)
        return Document("image", (out,), doc.meta)
    session = session or Session()
    if doc.kind in ("dicom", "tiff") and doc.frames:  # every frame's output is kept until the
        # file is written: all of them must fit, not only the one being made
        from upres.inference.upscaler import check_memory

        f0 = doc.frames[0]
        need = sum(f.size * f.dtype.itemsize for f in doc.frames) * s * s
        check_memory(need, f0.shape[1] * s, f0.shape[0] * s,
                     f"its {len(doc.frames)} frames together do not fit; use a smaller input "
                     "or scale" if len(doc.frames) > 1 else "use a smaller input or scale")
    if doc.kind == "dicom":
        m = doc.meta
        masks = [((f >= m.padding[0]) & (f <= m.padding[1])) if m.padding is not None
                 and f.ndim == 2 else None for f in doc.frames]
        wide = m.hi - m.lo > 65535  # 32-bit dose grids, parametric maps: see the docstring
        lo, hi = (m.lo, m.hi) if dicom_range == "stored" and not wide else \
            used_range(doc.frames, masks)
        frames = [upscale_values(up, f, lo, hi, mask, tile, tile_overlap)
                  for f, mask in zip(doc.frames, masks, strict=True)]
        if m.padding is not None:
            frames = [clear_of_padding(f, mask, s, m.padding, m.lo, m.hi) if mask is not None
                      else f for f, mask in zip(frames, masks, strict=True)]
        derivation = _derivation(up) + ("" if dicom_range == "stored" else
                                        f", values mapped by the {dicom_range} range")
        uid = None
        if m.series_uid:
            if m.series_uid not in session.series_uids:
                from pydicom.uid import generate_uid

                # The same source series and the same derivation give the same new series in
                # every run, shard and process, so `--shard K/N` and resumed runs agree.
                session.series_uids[m.series_uid] = generate_uid(
                    entropy_srcs=[m.series_uid, derivation])
            uid = session.series_uids[m.series_uid]
        meta = m.scaled(s, derivation=derivation, series_uid=uid,
                        for_diagnosis_note=is_network(up))
        return Document("dicom", tuple(frames), meta)
    if doc.kind == "tiff":
        m = doc.meta
        pages = []
        for p in doc.frames:
            mask = None
            if p.dtype.kind == "f":
                bad = ~np.isfinite(p)
                mask = bad.any(axis=2) if bad.ndim == 3 else bad
            pages.append(upscale_values(up, p, m.lo, m.hi, mask, tile, tile_overlap))
        return Document("tiff", tuple(pages), m.scaled(s))
    raise UpresError(f"unknown document kind {doc.kind!r}")


def upscale_file(up: Any, src: str | os.PathLike[str], dst: str | os.PathLike[str], *,
                 tile: int | None = None, tile_overlap: int = 16, overwrite: bool = False,
                 max_pixels: int | None = None, session: Session | None = None,
                 dicom_range: str = "stored") -> Path:
    """Read ``src`` (any supported kind), upscale it with ``up`` (from :func:`upres.load`) and
    write ``dst`` in the same kind, atomically (``dicom_range``: see :func:`upscale_document`).
    A DICOM input gives a DICOM output, a scientific
    TIFF a TIFF, a GeoTIFF a GeoTIFF (window by window: :func:`upres.raster.upscale_raster`,
    which also takes the raster options); an ordinary image takes the format of ``dst``'s
    suffix.

    Raises:
        UpresError: one line naming the file and the problem; nothing is written then.
    """
    dst = Path(dst)
    check_output(src, dst, overwrite)
    if formats.kind_of(src) == "geotiff":  # window by window, never whole
        from upres.raster import upscale_raster

        return upscale_raster(up, src, dst, tile=tile, tile_overlap=tile_overlap,
                              overwrite=overwrite, max_pixels=max_pixels)
    doc = formats.read(src, max_pixels=max_pixels)
    out = upscale_document(up, doc, tile=tile, tile_overlap=tile_overlap, session=session,
                           dicom_range=dicom_range)
    return formats.write(dst, out, overwrite=overwrite)
