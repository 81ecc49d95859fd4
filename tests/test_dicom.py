"""DICOM in and out: every written file is read back with pydicom and its tags checked against
the input (issue 20). Real files: ../shared/data/apps/dicom and the pydicom wheel's test files."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file, get_testdata_files

import upres
from upres.cli import main
from upres.convert import Session, upscale_file
from upres.formats.dicom import NOT_FOR_DIAGNOSIS, read_dicom

from conftest import DATA

DICOM = DATA / "apps" / "dicom"


def _read(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path)


def _expected_position(src, s):
    """The centre of the new first pixel, from the input's geometry (PS3.3 C.7.6.2.1.1)."""
    pos = np.array([float(v) for v in src.ImagePositionPatient])
    iop = np.array([float(v) for v in src.ImageOrientationPatient])
    dr, dc = (float(v) for v in src.PixelSpacing)  # row spacing, column spacing
    return pos - (s - 1) / (2 * s) * (dc * iop[:3] + dr * iop[3:])


@pytest.fixture(scope="module")
def bicubic2():
    return upres.load("bicubic", scale=2)


@pytest.fixture(scope="module")
def ct_x2(tmp_path_factory):
    """The real 12-bit CT through the CLI with the shipped fast-x2 network."""
    out = tmp_path_factory.mktemp("ct") / "ct_x2.dcm"
    rc = main(["upscale", str(DICOM / "dicom_file01.dcm"), "-o", str(out), "-m", "fast-x2",
               "-q"])
    assert rc == 0
    return _read(DICOM / "dicom_file01.dcm"), _read(out)


def test_ct_values_keep_their_meaning(ct_x2):
    src, out = ct_x2
    for tag in ("BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
                "RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth",
                "PhotometricInterpretation", "Modality", "StudyInstanceUID",
                "FrameOfReferenceUID", "ImageOrientationPatient", "PatientID"):
        assert out.get(tag) == src.get(tag), tag
    a, b = src.pixel_array, out.pixel_array
    assert b.dtype == a.dtype == np.uint16 and b.shape == (1024, 1024)
    assert b.max() <= 4095  # clipped to the 12 stored bits
    # In Hounsfield units, the upscaled image shrunk back matches the original closely: the
    # network ran on the whole 12-bit range, not on 1/16 of it.
    hu_a = a * float(src.RescaleSlope) + float(src.RescaleIntercept)
    hu_b = upres.imresize(b.astype(np.float64), 0.5) * float(out.RescaleSlope) \
        + float(out.RescaleIntercept)
    assert abs(hu_a.mean() - hu_b.mean()) < 2.0
    assert np.abs(hu_a - hu_b).mean() < 15.0


def test_ct_geometry_and_identity(ct_x2):
    src, out = ct_x2
    assert (out.Rows, out.Columns) == (2 * src.Rows, 2 * src.Columns)
    assert [float(v) for v in out.PixelSpacing] == pytest.approx(
        [float(v) / 2 for v in src.PixelSpacing])
    assert [float(v) for v in out.ImagePositionPatient] == pytest.approx(
        list(_expected_position(src, 2)), abs=1e-6)
    assert out.SOPInstanceUID != src.SOPInstanceUID
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert out.SeriesInstanceUID != src.SeriesInstanceUID
    assert list(out.ImageType[:2]) == ["DERIVED", "SECONDARY"]
    assert "fast-x2" in out.DerivationDescription and "x2" in out.DerivationDescription
    assert NOT_FOR_DIAGNOSIS in out.DerivationDescription
    assert NOT_FOR_DIAGNOSIS in out.ImageComments
    ref = out.SourceImageSequence[0]
    assert ref.ReferencedSOPInstanceUID == src.SOPInstanceUID
    assert ref.ReferencedSOPClassUID == src.SOPClassUID
    assert out.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian


def test_enhanced_multiframe_mr_every_frame_and_functional_groups(bicubic2, tmp_path):
    src = _read(DICOM / "dicom_file02.dcm")
    o = upscale_file(bicubic2, DICOM / "dicom_file02.dcm", tmp_path / "mr.dcm")
    out = _read(o)
    assert int(out.NumberOfFrames) == int(src.NumberOfFrames) == 12
    a, b = src.pixel_array, out.pixel_array
    assert b.shape == (12, 512, 512) and b.dtype == np.int16 and out.PixelRepresentation == 1
    sp_src = [float(v) for v in src.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
              .PixelSpacing]
    sp_out = [float(v) for v in out.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
              .PixelSpacing]
    assert sp_out == pytest.approx([v / 2 for v in sp_src])
    iop = [float(v) for v in src.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0]
           .ImageOrientationPatient] if "PlaneOrientationSequence" in \
        src.SharedFunctionalGroupsSequence[0] else None
    for fs, fo in zip(src.PerFrameFunctionalGroupsSequence, out.PerFrameFunctionalGroupsSequence,
                      strict=True):
        ori = iop or [float(v) for v in fs.PlaneOrientationSequence[0].ImageOrientationPatient]
        p = np.array([float(v) for v in fs.PlanePositionSequence[0].ImagePositionPatient])
        want = p - 0.25 * (sp_src[1] * np.array(ori[:3]) + sp_src[0] * np.array(ori[3:]))
        got = [float(v) for v in fo.PlanePositionSequence[0].ImagePositionPatient]
        assert got == pytest.approx(list(want), abs=1e-6)
        assert list(fo.MRImageFrameTypeSequence[0].FrameType[:2]) == ["DERIVED", "SECONDARY"]
    # each frame is its own frame upscaled (not a copy of the first)
    for k in (0, 6, 11):
        assert abs(float(b[k].mean()) - float(a[k].mean())) < 0.02 * float(a[k].max()) + 1


def test_compressed_inputs_written_uncompressed(bicubic2, tmp_path):
    for name in ("dicom_file04.dcm", "dicom_file90.dcm"):  # deflated, JPEG 2000
        src = _read(DICOM / name)
        out = _read(upscale_file(bicubic2, DICOM / name, tmp_path / name))
        assert out.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert out.pixel_array.shape[-2:] == (2 * src.Rows, 2 * src.Columns)
        assert out.BitsStored == src.BitsStored
        assert "not for diagnosis" not in out.DerivationDescription.lower()  # interpolation


def test_lossy_source_stays_marked_lossy(bicubic2, tmp_path):
    f = get_testdata_file("SC_rgb_jpeg_dcmtk.dcm")  # JPEG baseline, YBR_FULL
    out = _read(upscale_file(bicubic2, f, tmp_path / "c.dcm"))
    assert out.LossyImageCompression == "01"
    assert out.PhotometricInterpretation == "RGB" and out.SamplesPerPixel == 3
    assert "YBR_FULL to RGB" in out.DerivationDescription


def test_ybr_becomes_rgb_with_the_same_colours(bicubic2, tmp_path):
    f = get_testdata_file("SC_ybr_full_422_uncompressed.dcm")
    src = _read(f)
    out = _read(upscale_file(bicubic2, f, tmp_path / "y.dcm"))
    assert out.PhotometricInterpretation == "RGB"
    rgb = src.pixel_array.astype(np.float64)  # pydicom's YBR -> RGB
    back = upres.imresize(out.pixel_array.astype(np.float64), 0.5)
    assert np.abs(back.mean(axis=(0, 1)) - rgb.mean(axis=(0, 1))).max() < 1.0


def test_monochrome1_and_imager_pixel_spacing(bicubic2, tmp_path):
    files = [f for f in get_testdata_files() if f.endswith("6278")]
    src = _read(files[0])
    assert src.PhotometricInterpretation == "MONOCHROME1"
    out = _read(upscale_file(bicubic2, files[0], tmp_path / "cr.dcm"))
    assert out.PhotometricInterpretation == "MONOCHROME1"
    assert [float(v) for v in out.ImagerPixelSpacing] == pytest.approx(
        [float(v) / 2 for v in src.ImagerPixelSpacing])
    assert ("PixelSpacing" in out) == ("PixelSpacing" in src)


def test_padding_stays_padding_and_signed_range(bicubic2, tmp_path):
    f = get_testdata_file("CT_small.dcm")  # signed 16-bit, PixelPaddingValue -2000
    ds = _read(f)
    a = ds.pixel_array.copy()
    a[:20, :30] = -2000  # a padded corner next to tissue
    ds.PixelData = a.tobytes()
    ds.save_as(tmp_path / "pad.dcm")
    out = _read(upscale_file(bicubic2, tmp_path / "pad.dcm", tmp_path / "pad_x2.dcm"))
    b = out.pixel_array
    assert b.dtype == np.int16 and out.PixelPaddingValue == -2000
    assert (b[:40, :60] == -2000).all()  # the padded block, exactly
    assert (b[40:, 60:] != -2000).all()  # and padding nowhere else (it did not ring out)
    assert b[40:, :].min() > -2000


def test_overlays_dropped_and_said_once(tmp_path, capsys):
    f = get_testdata_file("examples_overlay.dcm")
    d = tmp_path / "in"
    d.mkdir()
    shutil.copy(f, d / "a.dcm")
    shutil.copy(f, d / "b.dcm")
    rc = main(["upscale", str(d), "-o", str(tmp_path / "out"), "-m", "bicubic", "-s", "2"])
    assert rc == 0
    err = capsys.readouterr().err
    assert err.count("dropped ") == 1 and "overlays" in err
    out = _read(tmp_path / "out" / "a_x2.dcm")
    assert not any(0x6000 <= e.tag.group <= 0x601E for e in out)


def test_series_folder_one_new_series_extensionless_files(tmp_path, capsys):
    """A series folder (files without a suffix, as scanners write them) -> one new series."""
    d = tmp_path / "series"
    d.mkdir()
    base = _read(DICOM / "dicom_file01.dcm")
    for k in range(3):
        ds = _read(DICOM / "dicom_file01.dcm")
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = k + 1
        ds.save_as(d / f"IM{k:04d}")
    (d / "notes.txt").write_text("not an image")
    rc = main(["upscale", str(d), "-o", str(tmp_path / "out"), "-m", "bicubic", "-s", "2",
               "-q"])
    assert rc == 0
    outs = sorted((tmp_path / "out").iterdir())
    assert [o.name for o in outs] == ["IM0000_x2.dcm", "IM0001_x2.dcm", "IM0002_x2.dcm"]
    dss = [_read(o) for o in outs]
    assert len({x.SeriesInstanceUID for x in dss}) == 1
    assert dss[0].SeriesInstanceUID != base.SeriesInstanceUID
    assert len({x.SOPInstanceUID for x in dss}) == 3
    assert {x.StudyInstanceUID for x in dss} == {base.StudyInstanceUID}


def test_big_endian_input_written_little_endian(bicubic2, tmp_path):
    f = get_testdata_file("MR_small_bigendian.dcm")
    src = _read(f)
    out = _read(upscale_file(bicubic2, f, tmp_path / "be.dcm"))
    assert out.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    back = upres.imresize(out.pixel_array.astype(np.float64), 0.5)
    assert abs(back.mean() - src.pixel_array.mean()) < 2.0


@pytest.mark.parametrize("case", ["broken", "truncated"])
def test_broken_and_truncated_files_one_line_exit_1_nothing_written(case, tmp_path, capsys):
    if case == "broken":
        src = DICOM / "dicom_file91.dcm"
    else:
        src = tmp_path / "trunc.dcm"
        data = (DICOM / "dicom_file01.dcm").read_bytes()
        src.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    rc = main(["upscale", str(src), "-o", str(out) + "/", "-m", "bicubic", "-s", "2"])
    assert rc == 1
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and str(src) in lines[0]
    assert not out.exists() or not any(out.iterdir())


def test_missing_decoder_names_the_plugin(tmp_path, capsys):
    try:
        import jpeg_ls  # noqa: F401  (pyjpegls)
        pytest.skip("pyjpegls is installed here")
    except ImportError:
        pass
    f = get_testdata_file("MR_small_jpeg_ls_lossless.dcm")
    rc = main(["upscale", f, "-o", str(tmp_path / "o.dcm"), "-m", "bicubic", "-s", "2"])
    assert rc == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "JPEG-LS" in err[0] and "pip install pyjpegls" in err[0]
    assert not (tmp_path / "o.dcm").exists()


def test_reader_gives_stored_values_and_range():
    frames, meta = read_dicom(DICOM / "dicom_file01.dcm")
    assert len(frames) == 1 and frames[0].dtype == np.uint16
    assert (meta.lo, meta.hi) == (0, 4095)
    frames, meta = read_dicom(DICOM / "dicom_file02.dcm")
    assert len(frames) == 12 and frames[0].dtype == np.int16
    assert (meta.lo, meta.hi) == (-32768, 32767)
    s = meta.scaled(2, derivation="test", series_uid="1.2.3")
    assert s.dataset.SeriesInstanceUID == "1.2.3"
    assert meta.dataset.Rows == 256  # the original header is not changed
    session = Session()
    assert session.new_notes(["a", "a", "b"]) == ["a", "b"]
    assert session.new_notes(["b", "c"]) == ["c"]


def test_dicom_range_data_maps_the_values_the_file_uses(tmp_path):
    """--dicom-range data: the network's 0..1 is the range the frames use (MR 0..920 of a signed
    16-bit range), results clipped to it; the header is the same as with the stored range."""
    up = upres.load("fast-x2", device="cpu")
    src = DICOM / "dicom_file02.dcm"
    a = _read(src).pixel_array
    stored = _read(upscale_file(up, src, tmp_path / "s.dcm")).pixel_array
    data = _read(upscale_file(up, src, tmp_path / "d.dcm", dicom_range="data")).pixel_array
    assert data.dtype == np.int16 and data.min() >= a.min() and data.max() <= a.max()
    assert np.abs(data.astype(int) - stored).max() > 0
    with pytest.raises(upres.UpresError, match="dicom_range"):
        upscale_file(up, src, tmp_path / "x.dcm", dicom_range="window")


def test_uid_named_files_keep_distinct_names_and_output_suffix_checked(tmp_path, capsys):
    """Slices named by UID (1.2.3.4.5, 1.2.3.4.6) must not collide on one output name."""
    d = tmp_path / "uids"
    d.mkdir()
    for k in (5, 6):
        shutil.copy(DICOM / "dicom_file03.dcm", d / f"1.2.826.0.1.{k}")
    rc = main(["upscale", str(d), "-o", str(tmp_path / "out"), "-m", "bicubic", "-s", "2",
               "-q"])
    assert rc == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "1.2.826.0.1.5_x2.dcm", "1.2.826.0.1.6_x2.dcm"]
    rc = main(["upscale", str(DICOM / "dicom_file03.dcm"), "-o", str(tmp_path / "x.png"),
               "-m", "bicubic", "-s", "2"])
    assert rc == 1 and not (tmp_path / "x.png").exists()
    assert "name the output x.dcm" in capsys.readouterr().err


def test_unwritable_output_is_one_line(tmp_path, capsys):
    """An output folder that cannot be made (a file is in the way): one line, not a traceback,
    and the rest of the run goes on."""
    (tmp_path / "blocker").write_text("a file where a folder should be")
    rc = main(["upscale", str(DICOM / "dicom_file03.dcm"), "-o",
               str(tmp_path / "blocker" / "o.dcm"), "-m", "bicubic", "-s", "2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and "cannot write" in err[0] and "blocker" in err[0]


def test_wide_stored_range_uses_the_data_range(tmp_path):
    """A 32-bit dose grid fills a sliver of 0..2**32-1: the default must still keep its values
    (it was mapped onto the stored range and came back 26x too large)."""
    f = get_testdata_file("rtdose_1frame.dcm")  # uint32, DoseGridScaling 1e-6
    src = _read(f)
    a = src.pixel_array.astype(np.float64)
    out = _read(upscale_file(upres.load("tiny-x2"), f, tmp_path / "dose.dcm"))
    b = out.pixel_array.astype(np.float64)
    assert out.pixel_array.dtype == np.uint32 and out.BitsAllocated == 32
    assert a.min() <= b.min() and b.max() <= a.max()  # clipped to the data's own range
    back = upres.imresize(b, 0.5)
    assert np.abs(back - a).mean() < 0.02 * (a.max() - a.min())


def test_tissue_never_takes_the_padding_value(bicubic2, tmp_path):
    """Unsigned 12-bit data whose PixelPaddingValue 0 is also the bottom of its range: upscaled
    tissue near 0 must not become 0, which viewers hide as padding."""
    ds = _read(get_testdata_file("CT_small.dcm"))
    rng = np.random.default_rng(0)
    a = rng.integers(1, 40, (128, 128)).astype(np.uint16)
    a[::8, :] = 4000  # bright lines: bicubic undershoots beside them
    a[:, 64:] = 0  # right half padding
    ds.PixelRepresentation, ds.BitsStored, ds.HighBit = 0, 12, 11
    ds.PixelPaddingValue = 0
    ds.PixelData = a.tobytes()
    ds.save_as(tmp_path / "pad.dcm")
    out = _read(upscale_file(bicubic2, tmp_path / "pad.dcm", tmp_path / "pad_x2.dcm"))
    b = out.pixel_array
    assert (b[:, 128:] == 0).all()  # the padding, exactly
    assert (b[:, :128] > 0).all()  # tissue: never the padding value


def test_same_series_and_instance_uids_in_every_run_and_shard(bicubic2, tmp_path):
    f = DICOM / "dicom_file01.dcm"
    one = _read(upscale_file(bicubic2, f, tmp_path / "a.dcm", session=Session()))
    two = _read(upscale_file(bicubic2, f, tmp_path / "b.dcm", session=Session()))
    other = _read(upscale_file(upres.load("tiny-x2"), f, tmp_path / "c.dcm"))
    src = _read(f)
    assert one.SeriesInstanceUID == two.SeriesInstanceUID != src.SeriesInstanceUID
    assert other.SeriesInstanceUID != one.SeriesInstanceUID  # another derivation
    # a rerun writes the same instance again (a PACS replaces it, no second copy)
    assert one.SOPInstanceUID == two.SOPInstanceUID != src.SOPInstanceUID
    assert other.SOPInstanceUID != one.SOPInstanceUID


def test_lossless_jpeg2000_not_marked_lossy(bicubic2, tmp_path):
    src = _read(DICOM / "dicom_file90.dcm")  # JPEG 2000 (.4.91), reversible, says "00"
    assert src.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.91"
    assert src.LossyImageCompression == "00"
    out = _read(upscale_file(bicubic2, DICOM / "dicom_file90.dcm", tmp_path / "j.dcm"))
    assert out.LossyImageCompression == "00"
    ds = _read(DICOM / "dicom_file90.dcm")  # the same syntax saying nothing: marked lossy
    del ds.LossyImageCompression
    ds.save_as(tmp_path / "quiet.dcm")
    out = _read(upscale_file(bicubic2, tmp_path / "quiet.dcm", tmp_path / "q.dcm"))
    assert out.LossyImageCompression == "01"


def test_header_gaps_and_cut_files_are_one_line_and_the_batch_goes_on(tmp_path, capsys):
    ct = get_testdata_file("CT_small.dcm")
    folder = tmp_path / "in"
    folder.mkdir()
    ds = _read(ct)
    del ds.SOPClassUID  # still in the file meta: taken from there
    ds.save_as(folder / "a_meta_only.dcm")
    ds = _read(ct)
    del ds.SOPClassUID
    del ds.file_meta.MediaStorageSOPClassUID
    ds.save_as(folder / "b_no_class.dcm", enforce_file_format=False)
    (folder / "c_cut.dcm").write_bytes(Path(ct).read_bytes()[:2000])
    ds = _read(ct)
    del ds.PixelData
    ds.save_as(folder / "e_no_pixels.dcm")
    shutil.copy(ct, folder / "d_good.dcm")
    out = tmp_path / "out"
    rc = main(["upscale", str(folder), "-o", str(out), "-m", "bicubic", "-s", "2", "-q"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "b_no_class.dcm: DICOM header has no SOPClassUID" in err
    assert "c_cut.dcm: DICOM file of an image class (CT Image Storage) ends before its pixel" \
        " data: truncated" in err
    assert "e_no_pixels.dcm: DICOM header describes a 128x128 image but the file ends" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 3
    assert sorted(p.name for p in out.iterdir()) == ["a_meta_only_x2.dcm", "d_good_x2.dcm"]
    made = _read(out / "a_meta_only_x2.dcm")
    assert made.SOPClassUID == _read(ct).SOPClassUID
    assert made.SourceImageSequence[0].ReferencedSOPClassUID == made.SOPClassUID
