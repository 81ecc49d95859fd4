"""DICOM in and out (pydicom): stored values keep their meaning, the derived file its place.

Reading gives the frames as stored values (``(H, W)`` or ``(H, W, 3)`` per frame, in the dtype
BitsAllocated and PixelRepresentation make: uint8/int8/uint16/int16/uint32/int32) and a
:class:`DicomMeta`: the header without the pixels, and the stored value range
(``BitsStored`` bits, signed or not) that the network's [0, 1] maps onto. YBR colour arrives
as RGB (pydicom converts it) and is written as RGB.

``DicomMeta.scaled(s, ...)`` answers what the header is after an upscale by ``s`` (PS3.3):
Rows/Columns x s; PixelSpacing and ImagerPixelSpacing / s (each only where present, in the
top-level header and in enhanced multi-frame functional groups); ImagePositionPatient moved to
the centre of the new first pixel; ImageOrientationPatient, FrameOfReferenceUID, StudyInstanceUID,
rescale, window and photometric interpretation kept; a new SOP instance UID (derived from the
source's and the derivation), the given series UID, ImageType DERIVED\\SECONDARY,
DerivationDescription, SourceImageSequence; overlays, icon images and ultrasound regions (wrong
after resampling) dropped. :func:`write_dicom` writes it
uncompressed, Explicit VR Little Endian, atomically.
"""

from __future__ import annotations

import io as _io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from upres.errors import UnsupportedImageError, UpresError
from upres.formats.files import encode_and_write

__all__ = [
    "DICOM_EXTS",
    "NOT_FOR_DIAGNOSIS",
    "DicomMeta",
    "is_dicom",
    "read_dicom",
    "write_dicom",
]

DICOM_EXTS = (".dcm", ".dicom", ".dic", ".ima")

#: Said in every DICOM a network model writes, and once by the CLI.
NOT_FOR_DIAGNOSIS = ("NOT FOR DIAGNOSIS: upscaled by a neural network trained on photographs, "
                     "which invents plausible detail")

#: Transfer syntaxes -> the decoder package a user should install when pydicom has none.
_PLUGINS = {
    **{f"1.2.840.10008.1.2.4.{n}": "pylibjpeg-openjpeg" for n in (90, 91, 201, 202, 203)},
    "1.2.840.10008.1.2.4.80": "pyjpegls", "1.2.840.10008.1.2.4.81": "pyjpegls",
}
_JPEG_PLUGIN = "pylibjpeg-libjpeg"  # the other JPEG processes (1.2.840.10008.1.2.4.5x-7x)

#: Transfer syntaxes whose pixel data lost information on the way in.
_LOSSY = {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.81"}
#: Transfer syntaxes that may be lossless or lossy (JPEG 2000, HTJ2K): the source's own
#: LossyImageCompression says which; where it says nothing the output is marked lossy.
_MAYBE_LOSSY = {"1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.203"}
_LOSSY_METHOD = {"1.2.840.10008.1.2.4.50": "ISO_10918_1", "1.2.840.10008.1.2.4.51": "ISO_10918_1",
                 "1.2.840.10008.1.2.4.81": "ISO_14495_1", "1.2.840.10008.1.2.4.91": "ISO_15444_1",
                 "1.2.840.10008.1.2.4.203": "ISO_15444_15"}

#: Elements dropped from a derived image because resampling makes them wrong, with their name.
_DROP = {
    0x00880200: "icon image", 0x00186011: "ultrasound regions",
    0x00280106: None, 0x00280107: None,  # Smallest/LargestImagePixelValue: recomputed or absent
    0x00280108: None, 0x00280109: None,  # the series' smallest/largest: unknown after upscaling
    0x00280300: None,  # QualityControlImage: not a statement upres can make about its output
}


def is_dicom(path: str | os.PathLike[str]) -> bool:
    """True if the file starts like a DICOM Part 10 file (``DICM`` after the 128-byte preamble)
    or has a DICOM suffix."""
    p = Path(path)
    if p.suffix.lower() in DICOM_EXTS:
        return True
    try:
        with open(p, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


@dataclass(frozen=True)
class DicomMeta:
    """A DICOM header without its pixels, and what the pixels' values mean.

    ``lo``/``hi``: the stored value range (``0 .. 2**BitsStored - 1`` unsigned,
    ``-2**(BitsStored-1) .. 2**(BitsStored-1) - 1`` signed); ``padding``: PixelPaddingValue
    (and range limit) as stored values, or None; ``frames``: NumberOfFrames; ``notes``: what was
    changed that a user should know (colour conversion, dropped elements), each said once.
    """

    path: Path
    dataset: object = field(repr=False)  # pydicom.Dataset, never modified in place
    lo: int
    hi: int
    dtype: np.dtype
    frames: int
    padding: tuple[int, int] | None = None
    notes: tuple[str, ...] = ()

    @property
    def series_uid(self) -> str:
        return str(getattr(self.dataset, "SeriesInstanceUID", ""))

    def scaled(self, s: int, *, derivation: str, series_uid: str | None = None,
               for_diagnosis_note: bool = True) -> DicomMeta:
        """The header of this image upscaled ``s`` times (see the module docstring).

        ``derivation``: what made it (e.g. ``"upres 0.1.0, model x2, scale 2"``), written in
        DerivationDescription; ``series_uid``: the new SeriesInstanceUID (one per input series,
        chosen by the caller; a new one if None); ``for_diagnosis_note``: add
        :data:`NOT_FOR_DIAGNOSIS` (network models) to DerivationDescription and ImageComments.
        """
        from pydicom.dataset import Dataset
        from pydicom.sequence import Sequence
        from pydicom.uid import generate_uid

        src = self.dataset
        ds = _copy(src)
        notes = list(self.notes)
        ds.Rows = int(src.Rows) * s
        ds.Columns = int(src.Columns) * s
        _shift_positions(s, _per_frame_positions(ds))  # with the old spacing, so first
        _scale_geometry(ds, s)
        for item in _functional_group_items(ds):
            _scale_geometry(item, s)
        dropped = [name for tag, name in _DROP.items() if tag in ds and name]
        for tag in _DROP:
            if tag in ds:
                del ds[tag]
        overlays = sorted({e.tag.group for e in ds if 0x6000 <= e.tag.group <= 0x601E
                           and e.tag.group % 2 == 0})
        for g in overlays:
            for e in [e for e in ds if e.tag.group == g]:
                del ds[e.tag]
        if overlays:
            dropped.append("overlays")
        if dropped:
            notes.append(f"dropped {', '.join(dropped)} (wrong after resampling)")
        # identity
        # derived from the source instance and how it was made: a rerun writes the same
        # instance again (a PACS replaces it) instead of a second copy in the same series
        new_sop = generate_uid(entropy_srcs=[str(src.SOPInstanceUID), derivation,
                                             str(series_uid)])
        ds.SOPInstanceUID = new_sop
        if getattr(ds, "file_meta", None) is not None:
            ds.file_meta.MediaStorageSOPInstanceUID = new_sop
        ds.SeriesInstanceUID = series_uid or generate_uid()
        old_type = list(getattr(src, "ImageType", []) or [])
        ds.ImageType = ["DERIVED", "SECONDARY", *[str(v) for v in old_type[2:]]]
        for item in _functional_group_items(ds, "FrameType"):
            ft = list(item.FrameType)
            item.FrameType = ["DERIVED", "SECONDARY", *ft[2:]]
        text = derivation
        if for_diagnosis_note:
            text = f"{text}; {NOT_FOR_DIAGNOSIS}"
        conv = [n for n in notes if n.startswith("colour")]
        if conv:
            text = f"{text}; {conv[0]}"
        ds.DerivationDescription = text[:1024]
        if for_diagnosis_note:
            old = str(getattr(src, "ImageComments", "") or "")
            note = f"{old} | {NOT_FOR_DIAGNOSIS}" if old else NOT_FOR_DIAGNOSIS
            ds.ImageComments = note[:10240]
        ref = Dataset()
        ref.ReferencedSOPClassUID = src.SOPClassUID
        ref.ReferencedSOPInstanceUID = src.SOPInstanceUID
        ds.SourceImageSequence = Sequence([ref])
        if "SeriesDescription" in src:
            old = str(src.SeriesDescription or "").strip()
            ds.SeriesDescription = f"{old} upres x{s}".strip()[:64]
        return DicomMeta(path=self.path, dataset=ds, lo=self.lo, hi=self.hi, dtype=self.dtype,
                         frames=self.frames, padding=self.padding, notes=tuple(notes))


def _copy(ds: object) -> object:
    import copy

    return copy.deepcopy(ds)


def _functional_group_items(ds: object, attr: str | None = None) -> list[object]:
    """Items of the shared and per-frame functional groups (and their nested sequences) that
    carry ``attr`` (all nested items if None)."""
    out = []
    for seq_name in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        for group in getattr(ds, seq_name, None) or []:
            for elem in group:
                if elem.VR == "SQ":
                    for item in elem.value:
                        if attr is None or attr in item:
                            out.append(item)
    return out


def _ds(v: float) -> object:
    from pydicom.valuerep import DSfloat

    return DSfloat(float(v), auto_format=True)


def _scale_geometry(item: object, s: int) -> None:
    """PixelSpacing and ImagerPixelSpacing / s, each where present."""
    for name in ("PixelSpacing", "ImagerPixelSpacing", "NominalScannedPixelSpacing"):
        if name in item and getattr(item, name) is not None:
            vals = list(getattr(item, name))
            if len(vals) == 2:
                setattr(item, name, [_ds(float(v) / s) for v in vals])


def _per_frame_positions(ds: object) -> list[tuple[object, list[float], list[float], list[float]]]:
    """``(item holding ImagePositionPatient, position, orientation, old spacing)`` for the
    top-level header and each enhanced frame that has all three."""
    out = []
    spacing = list(getattr(ds, "PixelSpacing", []) or [])
    orient = list(getattr(ds, "ImageOrientationPatient", []) or [])
    if "ImagePositionPatient" in ds and len(spacing) == 2 and len(orient) == 6:
        out.append((ds, [float(v) for v in ds.ImagePositionPatient], [float(v) for v in orient],
                    [float(v) for v in spacing]))
    shared = (getattr(ds, "SharedFunctionalGroupsSequence", None) or [None])[0]
    for frame in getattr(ds, "PerFrameFunctionalGroupsSequence", None) or []:
        def find(seq: str, attr: str, frame: object = frame) -> list[float] | None:
            for grp in (frame, shared):
                if grp is not None and seq in grp and grp[seq].value and attr in grp[seq].value[0]:
                    return [float(v) for v in getattr(grp[seq].value[0], attr)]
            return None
        pos_item = frame.PlanePositionSequence[0] if "PlanePositionSequence" in frame and \
            frame.PlanePositionSequence else None
        sp = find("PixelMeasuresSequence", "PixelSpacing")
        ori = find("PlaneOrientationSequence", "ImageOrientationPatient")
        if pos_item is not None and "ImagePositionPatient" in pos_item and sp and ori:
            out.append((pos_item, [float(v) for v in pos_item.ImagePositionPatient], ori, sp))
    return out


def _shift_positions(s: int, items: list) -> None:
    """Move each ImagePositionPatient to the centre of the new first pixel.

    The old first pixel's centre is at pixel coordinates (0, 0); the new grid's first pixel
    centre lies at (-(s-1)/(2s), -(s-1)/(2s)) old pixels, i.e. along the row direction
    (IOP[0:3]) by that many column spacings (PixelSpacing[1]) and along the column direction
    (IOP[3:6]) by that many row spacings (PixelSpacing[0]).
    """
    d = (s - 1) / (2 * s)
    for item, pos, ori, sp in items:
        row_dir, col_dir = np.array(ori[:3]), np.array(ori[3:])
        new = np.array(pos) - d * (sp[1] * row_dir + sp[0] * col_dir)
        item.ImagePositionPatient = [_ds(v) for v in new]


def _decode_error(path: Path, ds: object, exc: Exception) -> UpresError:
    ts = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
    msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if ("missing" in msg.lower() and ("plugin" in msg.lower() or "dependenc" in msg.lower())) \
            or "no available" in msg.lower():
        plugin = _PLUGINS.get(ts, _JPEG_PLUGIN)
        return UnsupportedImageError(f"{path}: pixel data is {_ts_name(ts)}, and no decoder "
                                     f"for it is installed (pip install {plugin})")
    if "all available plugins" in msg:
        return UpresError(f"{path}: cannot decode DICOM pixel data ({_ts_name(ts)}): every "
                          "installed decoder failed (damaged data, or a variant they do not "
                          f"support; pip install {_PLUGINS.get(ts, _JPEG_PLUGIN)} may help)")
    return UpresError(f"{path}: cannot decode DICOM pixel data: truncated or corrupt ({msg})")


def _ts_name(ts: str) -> str:
    from pydicom.uid import UID

    try:
        return UID(ts).name or ts
    except Exception:
        return ts


def read_dicom(path: str | os.PathLike[str], *,
               max_pixels: int | None = None) -> tuple[list[np.ndarray], DicomMeta]:
    """Read a DICOM file: every frame's stored values and the header.

    Returns ``(frames, meta)``: a list of ``NumberOfFrames`` arrays ``(H, W)`` (monochrome) or
    ``(H, W, 3)`` (RGB; YBR input converted), dtype per BitsAllocated/PixelRepresentation.

    Raises:
        UpresError: one line naming the file and the problem (not DICOM, no pixel data, missing
            decoder plugin with the package to install, truncated or corrupt, too large).
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    from upres.formats.image import DEFAULT_MAX_PIXELS

    p = Path(path)
    if not p.is_file():
        raise UpresError(f"{p}: no such file" if not p.exists() else f"{p}: not a file")
    if p.stat().st_size == 0:
        raise UpresError(f"{p}: file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(p)
            for _ in ds.iterall():  # parse every element now: a damaged one fails here, once
                pass
    except InvalidDicomError as exc:
        raise UnsupportedImageError(f"{p}: not a DICOM file ({exc})") from None
    except Exception as exc:
        raise UpresError(f"{p}: cannot read DICOM: truncated or corrupt "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
                         ) from None
    if "PixelData" not in ds:
        if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
            raise UnsupportedImageError(f"{p}: DICOM float pixel data (FloatPixelData / "
                                        "DoubleFloatPixelData) is not supported")
        kind = getattr(getattr(ds, "SOPClassUID", None), "name", "unknown SOP class")
        if "Rows" in ds and "Columns" in ds:
            raise UpresError(f"{p}: DICOM header describes a {ds.Columns}x{ds.Rows} image but "
                             "the file ends before its pixel data: truncated")
        if "Image Storage" in kind:  # pydicom stops quietly where a cut file ends
            raise UpresError(f"{p}: DICOM file of an image class ({kind}) ends before its "
                             "pixel data: truncated")
        raise UnsupportedImageError(f"{p}: DICOM file has no pixel data ({kind}); nothing "
                                    "to upscale")
    _fill_identity(p, ds)
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        frames_n = int(getattr(ds, "NumberOfFrames", 1) or 1)
        bits_alloc, bits = int(ds.BitsAllocated), int(ds.BitsStored)
        signed = int(ds.PixelRepresentation) == 1
        spp = int(getattr(ds, "SamplesPerPixel", 1) or 1)
        pi = str(ds.PhotometricInterpretation)
    except (AttributeError, TypeError, ValueError) as exc:
        raise UpresError(f"{p}: DICOM image header incomplete ({exc})") from None
    limit = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    if limit and rows * cols * frames_n > limit:
        raise UpresError(f"{p}: image too large ({frames_n} x {cols}x{rows} pixels, limit "
                         f"{limit}; raise it with --max-pixels)")
    if bits_alloc not in (8, 16, 32) or not 1 <= bits <= bits_alloc:
        raise UnsupportedImageError(f"{p}: BitsAllocated {bits_alloc} / BitsStored {bits} is "
                                    "not supported (8, 16 or 32 bits per sample)")
    if pi == "PALETTE COLOR" or spp not in (1, 3):
        raise UnsupportedImageError(f"{p}: photometric interpretation {pi} with {spp} samples "
                                    "per pixel is not supported")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr = ds.pixel_array
    except Exception as exc:
        raise _decode_error(p, ds, exc) from None
    arr = np.asarray(arr)
    mono = spp == 1
    if (frames_n == 1 and arr.ndim == (2 if mono else 3)):
        arr = arr[None]
    if arr.shape[:3] != (frames_n, rows, cols) or (not mono and arr.shape[-1] != 3):
        raise UpresError(f"{p}: DICOM pixel data has shape {arr.shape}, header says "
                         f"{frames_n} frame(s) of {rows}x{cols}x{spp}")
    dtype = np.dtype(f"{'i' if signed else 'u'}{bits_alloc // 8}")
    lo, hi = ((-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1))
    notes = []
    if pi.startswith("YBR"):
        notes.append(f"colour converted from {pi} to RGB")
    padding = None
    if "PixelPaddingValue" in ds and mono:
        a = int(ds.PixelPaddingValue)
        b = int(getattr(ds, "PixelPaddingRangeLimit", a))
        padding = (min(a, b), max(a, b))
    frames = [np.ascontiguousarray(arr[i]).astype(dtype, copy=False) for i in range(frames_n)]
    meta = DicomMeta(path=p, dataset=_header_only(ds), lo=lo, hi=hi, dtype=dtype,
                     frames=frames_n, padding=padding, notes=tuple(notes))
    return frames, meta


def _fill_identity(p: Path, ds: object) -> None:
    """SOPClassUID and SOPInstanceUID from the file meta where the dataset lacks them (some
    exporters write them only there); a one-line error where neither has them, since a derived
    image must reference its source."""
    fm = getattr(ds, "file_meta", None)
    for name, meta_name in (("SOPClassUID", "MediaStorageSOPClassUID"),
                            ("SOPInstanceUID", "MediaStorageSOPInstanceUID")):
        if str(getattr(ds, name, "") or ""):
            continue
        value = str(getattr(fm, meta_name, "") or "") if fm is not None else ""
        if not value:
            raise UpresError(f"{p}: DICOM header has no {name} (nor {meta_name} in its file "
                             "meta); cannot make a derived image that references it")
        setattr(ds, name, value)


def _header_only(ds: object) -> object:
    """The dataset without its pixel data (it was read for this call only, so no copy)."""
    for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
        if tag in ds:
            delattr(ds, tag)
    return ds


def encode_dicom(frames: list[np.ndarray], meta: DicomMeta) -> bytes:
    """The bytes of a DICOM Part 10 file holding ``frames`` (stored values, ``meta.dtype``,
    all one shape) with ``meta``'s header, Explicit VR Little Endian, uncompressed."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    if not frames:
        raise UpresError("no frames to write")
    h, w = frames[0].shape[:2]
    ds = _copy(meta.dataset)
    src_ts = str(getattr(getattr(meta.dataset, "file_meta", None), "TransferSyntaxUID", "") or "")
    if src_ts in _LOSSY or (src_ts in _MAYBE_LOSSY and "LossyImageCompression" not in ds):
        # the pixels went (or may have gone) through lossy compression before upres saw them
        ds.LossyImageCompression = "01"
        if "LossyImageCompressionMethod" not in ds:
            ds.LossyImageCompressionMethod = _LOSSY_METHOD[src_ts]
    colour = frames[0].ndim == 3
    if colour:
        ds.PhotometricInterpretation = "RGB"
        ds.PlanarConfiguration = 0
        ds.SamplesPerPixel = 3
    ds.Rows, ds.Columns = h, w
    if meta.frames > 1 or "NumberOfFrames" in ds:
        ds.NumberOfFrames = len(frames)
    data = np.stack([np.ascontiguousarray(f, dtype=meta.dtype) for f in frames])
    raw = data.astype(meta.dtype.newbyteorder("<"), copy=False).tobytes()
    if len(raw) % 2:
        raw += b"\x00"
    ds.PixelData = raw
    ds["PixelData"].VR = "OB" if meta.dtype.itemsize == 1 else "OW"
    # A fresh dataset, so one read big-endian (or implicit VR) is written little-endian
    # explicit VR: pydicom refuses to change the encoding of the dataset it read.
    from pydicom.dataset import Dataset

    fresh = Dataset()
    for elem in ds:
        fresh.add(elem)
    ds = fresh
    fm = FileMetaDataset()
    old_fm = getattr(meta.dataset, "file_meta", None)
    fm.MediaStorageSOPClassUID = ds.SOPClassUID
    fm.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    fm.TransferSyntaxUID = ExplicitVRLittleEndian
    if old_fm is not None and "SourceApplicationEntityTitle" in old_fm:
        fm.SourceApplicationEntityTitle = old_fm.SourceApplicationEntityTitle
    ds.file_meta = fm
    buf = _io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(buf, implicit_vr=False, little_endian=True, enforce_file_format=True)
    return buf.getvalue()


def write_dicom(path: str | os.PathLike[str], frames: list[np.ndarray], meta: DicomMeta, *,
                overwrite: bool = False) -> Path:
    """Write ``frames`` with ``meta`` (usually ``meta.scaled(...)``) to ``path`` atomically.

    Raises:
        UpresError: the file exists and ``overwrite`` is False, or the header cannot be encoded.
    """
    return encode_and_write(path, lambda: encode_dicom(frames, meta), "DICOM",
                            overwrite=overwrite)
