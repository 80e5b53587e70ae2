"""Readers: axis convention, geometry, DICOM ordering and gaps, corrupt input."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from hybrid_unet.data.errors import DataError
from hybrid_unet.data.io import (
    Geometry,
    read_dicom_series,
    read_image,
    read_label,
    read_nifti,
    write_hdf5_case,
    write_nifti,
    write_npz,
)


def _nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    affine = np.diag([0.8, 0.9, 2.5, 1.0]) if affine is None else affine
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def test_nifti_axes_are_zyx_and_affine_indexes_our_array(tmp_path):
    data = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)  # nibabel (x, y, z)
    affine = np.diag([0.8, 0.9, 2.5, 1.0])
    affine[:3, 3] = [1, 2, 3]
    image, geo = read_image(_nifti(tmp_path / "a.nii.gz", data, affine))
    assert image.shape == (1, 6, 5, 4) and image.dtype == np.float32
    assert geo.spacing == pytest.approx((2.5, 0.9, 0.8))
    assert image[0, 3, 2, 1] == data[1, 2, 3]
    # index (d, h, w) = (3, 2, 1) is world x = 1 + 0.8 * 1, y = 2 + 0.9 * 2, z = 3 + 2.5 * 3
    np.testing.assert_allclose(geo.affine @ [3, 2, 1, 1], [1.8, 3.8, 10.5, 1])


def test_nifti_4d_is_channels_first(tmp_path):
    data = np.random.default_rng(0).random((4, 5, 6, 2)).astype(np.float32)
    image, _ = read_image(_nifti(tmp_path / "a.nii.gz", data))
    assert image.shape == (2, 6, 5, 4)
    np.testing.assert_array_equal(image[1], data[..., 1].transpose(2, 1, 0))


def test_a_5d_nifti_with_one_time_point_is_channels_first(tmp_path):
    """ITK (SimpleITK, ANTs) writes a multi-component image as (x, y, z, 1, c)."""
    data = np.random.default_rng(0).random((4, 5, 6, 1, 2)).astype(np.float32)
    image, geo = read_image(_nifti(tmp_path / "a.nii.gz", data))
    assert image.shape == (2, 6, 5, 4) and geo.spacing == pytest.approx((2.5, 0.9, 0.8))
    np.testing.assert_array_equal(image[1], data[..., 0, 1].transpose(2, 1, 0))
    with pytest.raises(
        DataError, match=r"or 5D with one time point\), got shape \(4, 5, 6, 2, 2\)"
    ):
        read_image(_nifti(tmp_path / "b.nii.gz", np.zeros((4, 5, 6, 2, 2), np.float32)))


def test_nifti_round_trip_keeps_affine_and_values(tmp_path):
    affine = np.array([[0, 0, -1.5, 20], [0, 0.7, 0, -3], [1.2, 0, 0, 7], [0, 0, 0, 1.0]])
    src = _nifti(tmp_path / "img.nii.gz", np.zeros((5, 6, 7), np.float32), affine)
    _, geo = read_nifti(src)
    label = np.random.default_rng(0).integers(0, 3, (7, 6, 5)).astype(np.uint8)
    write_nifti(tmp_path / "out" / "seg.nii.gz", label, geo)
    back, geo2 = read_label(tmp_path / "out" / "seg.nii.gz")
    np.testing.assert_array_equal(back, label)
    np.testing.assert_allclose(geo2.affine, geo.affine)
    np.testing.assert_allclose(nib.load(str(tmp_path / "out" / "seg.nii.gz")).affine, affine)


@pytest.mark.parametrize("codes", [(1, 2), (0, 0), (1, 0)])
def test_written_mask_keeps_the_sources_qform_and_sform_and_their_codes(tmp_path, codes):
    """A source whose sform is 10 mm off its qform: a viewer using either form must draw the
    mask where it draws the scan; codes 0 stay 0."""
    qform = np.diag([0.8, 0.9, 2.5, 1.0])
    qform[:3, 3] = [-20.0, 5.0, 3.0]
    sform = qform.copy()
    sform[0, 3] += 10.0
    img = nib.Nifti1Image(np.zeros((5, 6, 7), np.float32), None)
    img.header.set_qform(qform, code=codes[0])
    img.header.set_sform(sform, code=codes[1])
    nib.save(img, str(tmp_path / "img.nii.gz"))
    _, geo = read_nifti(tmp_path / "img.nii.gz")

    write_nifti(tmp_path / "seg.nii.gz", np.ones((7, 6, 5), np.uint8), geo)

    source, written = nib.load(str(tmp_path / "img.nii.gz")), nib.load(str(tmp_path / "seg.nii.gz"))
    for form in ("qform", "sform"):
        assert int(written.header[f"{form}_code"]) == int(source.header[f"{form}_code"])
        np.testing.assert_allclose(getattr(written.header, f"get_{form}")(),
                                   getattr(source.header, f"get_{form}")(), atol=1e-6)  # fmt: skip
    np.testing.assert_allclose(written.affine, source.affine, atol=1e-6)


def test_a_written_mask_drops_the_scans_display_window_and_intent(tmp_path):
    """A mask kept its scan's cal_min/cal_max (0..1000: labels 1, 2 invisible in viewers that
    use the window) and a 'vector' intent from a multi-channel scan."""
    img = nib.Nifti1Image(np.ones((6, 7, 8, 2), np.float32), np.diag([1.0, 1.0, 2.0, 1.0]))
    img.header["cal_min"], img.header["cal_max"] = 0, 1000
    img.header.set_intent("vector", ())
    nib.save(img, str(tmp_path / "scan.nii.gz"))
    image, geo = read_image(tmp_path / "scan.nii.gz")
    write_nifti(tmp_path / "mask.nii.gz", np.ones(image.shape[1:], np.uint8), geo)
    header = nib.load(str(tmp_path / "mask.nii.gz")).header
    assert (header["cal_min"], header["cal_max"]) == (0, 0)
    assert header.get_intent()[0] == "none"


@pytest.mark.parametrize("content", [b"", b"not a nifti at all"])
def test_empty_or_garbage_nifti_names_file(tmp_path, content):
    path = tmp_path / "bad.nii.gz"
    path.write_bytes(content)
    with pytest.raises(DataError, match=r"bad\.nii\.gz"):
        read_image(path)


def test_truncated_nifti_names_file(tmp_path):
    path = _nifti(tmp_path / "t.nii.gz", np.random.default_rng(0).random((20, 20, 20)))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"t\.nii\.gz"):
        read_image(path)
    assert gzip.decompress(raw)  # the untruncated file was fine


def test_a_flipped_bit_inside_a_gzipped_nifti_is_caught(tmp_path):
    """nibabel stops reading at the end of the voxels, before the gzip trailer's CRC: a stored
    (uncompressed) deflate block with one changed byte decodes to wrong voxels silently."""
    data = np.random.default_rng(0).random((10, 10, 10)).astype(np.float32)
    raw = bytearray(gzip.compress(nib.Nifti1Image(data, np.eye(4)).to_bytes(), compresslevel=0))
    raw[len(raw) // 2] ^= 0x40
    path = tmp_path / "flipped.nii.gz"
    path.write_bytes(bytes(raw))
    silent = np.asanyarray(nib.load(str(path)).dataobj)  # what nibabel alone returns
    assert silent.shape == data.shape and not np.array_equal(silent, data)
    with pytest.raises(DataError, match=r"flipped\.nii\.gz.*CRC"):
        read_image(path)


def test_a_singular_nifti_affine_is_refused(tmp_path):
    """An sform with a zero row gave spacing (0.0, 1.0, 1.0); validation passed it and the
    plan would resample the scan to a single slice."""
    data = np.ones((4, 5, 6), np.float32)
    img = nib.Nifti1Image(data, np.eye(4))
    img.header.set_sform(np.diag([1.0, 1.0, 0.0, 1.0]), code=1)
    img.update_header = lambda: None  # keep the broken sform as written
    nib.save(img, str(tmp_path / "flat.nii.gz"))
    with pytest.raises(DataError, match=r"flat\.nii\.gz: header affine is singular"):
        read_image(tmp_path / "flat.nii.gz")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_voxels_are_refused(tmp_path, bad):
    data = np.ones((4, 4, 4), np.float32)
    data[1, 2, 3] = bad
    with pytest.raises(DataError, match=r"nan\.nii\.gz.*NaN or Inf"):
        read_image(_nifti(tmp_path / "nan.nii.gz", data))


def test_unknown_suffix(tmp_path):
    (tmp_path / "x.mha").write_bytes(b"")
    with pytest.raises(DataError, match=r"x\.mha.*unknown image format"):
        read_image(tmp_path / "x.mha")


def test_npz_npy_and_hdf5(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.random((2, 3, 4, 5)).astype(np.float32)
    label = rng.integers(0, 2, (3, 4, 5)).astype(np.uint8)
    write_npz(tmp_path / "c.npz", image, label, (3.0, 1.0, 1.0))
    img, geo = read_image(tmp_path / "c.npz")
    assert img.shape == (2, 3, 4, 5) and geo.spacing == (3.0, 1.0, 1.0)
    np.testing.assert_array_equal(read_label(tmp_path / "c.npz")[0], label)

    np.save(tmp_path / "v.npy", image[0])
    (tmp_path / "v.json").write_text('{"spacing": [2, 1, 0.5]}')
    img, geo = read_image(tmp_path / "v.npy")
    assert img.shape == (1, 3, 4, 5) and geo.spacing == (2.0, 1.0, 0.5)
    assert read_image(tmp_path / "v.npy", spacing=(1, 1, 1))[1].spacing == (1.0, 1.0, 1.0)

    write_hdf5_case(tmp_path / "d.h5", "case_a", image, label, (1.5, 1.0, 1.0))
    img, geo = read_image(tmp_path / "d.h5", key="case_a")
    assert img.shape == (2, 3, 4, 5) and geo.spacing == (1.5, 1.0, 1.0)
    np.testing.assert_array_equal(read_label(tmp_path / "d.h5", key="case_a")[0], label)
    with pytest.raises(DataError, match="case_b"):
        read_image(tmp_path / "d.h5", key="case_b")


def test_geometry_from_spacing_maps_dhw_to_zyx():
    geo = Geometry.from_spacing((3.0, 2.0, 1.0))
    np.testing.assert_allclose(geo.affine @ [1, 1, 1, 1], [1.0, 2.0, 3.0, 1.0])


def test_dicom_shuffled_files_load_in_position_order(tmp_path, dicom_writer):
    volume = (np.arange(6)[:, None, None] * 10 + np.zeros((6, 4, 3))).astype(np.uint16)
    names = [f"{n:06d}.dcm" for n in (3, 0, 5, 1, 4, 2)]  # file order != slice order
    dicom_writer(tmp_path / "s", volume, names=names, slope=2.0, intercept=-5.0)
    image, geo = read_dicom_series(tmp_path / "s")
    np.testing.assert_array_equal(image[:, 0, 0], volume[:, 0, 0] * 2.0 - 5.0)
    assert image.shape == (6, 4, 3)
    assert geo.spacing == pytest.approx((2.0, 0.5, 0.5))
    # LPS (-10, 5, z) becomes RAS (10, -5, z)
    np.testing.assert_allclose(geo.affine @ [2, 0, 0, 1], [10, -5, 4, 1])


def test_dicom_gap_is_an_error_naming_the_folder(tmp_path, dicom_writer):
    volume = np.zeros((5, 4, 3), np.uint16)
    dicom_writer(tmp_path / "gap", volume, positions=[0, 2, 4, 8, 10])
    with pytest.raises(DataError, match=r"gap.*slice gap.*missing"):
        read_dicom_series(tmp_path / "gap")


def test_dicom_several_series_are_listed_or_selected(tmp_path, dicom_writer):
    dicom_writer(tmp_path / "m", np.zeros((3, 4, 3), np.uint16), series_uid="1.1")
    names = [f"b{i}.dcm" for i in range(2)]
    dicom_writer(tmp_path / "m", np.ones((2, 4, 3), np.uint16), series_uid="1.2", names=names)
    with pytest.raises(DataError, match=r"2 series.*1\.1 \(3 slices\).*1\.2 \(2 slices\)"):
        read_image(tmp_path / "m")
    image, _ = read_image(tmp_path / "m", series_uid="1.2")
    assert image.shape == (1, 2, 4, 3)


def _edit_slices(folder: Path, edit, only: int | None = None) -> None:
    """Apply ``edit(ds)`` to every slice file of ``folder`` (or to the ``only``-th) and save."""
    files = sorted(folder.iterdir())
    for file in files if only is None else [files[only]]:
        ds = pydicom.dcmread(file)
        edit(ds)
        ds.save_as(file)


@pytest.mark.parametrize("top_level_position", [False, True])
def test_dicom_multi_frame_is_refused_naming_the_file(tmp_path, dicom_writer, top_level_position):
    """An enhanced multi-frame file (positions only per frame) was 'no DICOM image slices
    found'; one with a top-level ImagePositionPatient was read as a 1-slice stack of frames
    with a made-up slice spacing of 1 mm."""
    dicom_writer(tmp_path / "mf", np.zeros((1, 4, 3), np.uint16))
    frames = np.arange(5 * 4 * 3, dtype=np.uint16).reshape(5, 4, 3)

    def to_multi_frame(ds):
        ds.NumberOfFrames = 5
        ds.PixelData = frames.tobytes()
        if not top_level_position:
            del ds.ImagePositionPatient, ds.ImageOrientationPatient

    _edit_slices(tmp_path / "mf", to_multi_frame)
    with pytest.raises(DataError, match=r"000000\.dcm: multi-frame DICOM \(5 frames"):
        read_image(tmp_path / "mf")


def test_enhanced_multi_frame_dicom_reads_as_its_single_frame_series(
    tmp_path, dicom_writer, enhanced_dicom_writer
):
    """One Enhanced MR file, frames stored out of position order with a rescale per frame,
    reads in position order with each frame's own rescale, and with the geometry of the same
    series written one file per slice."""
    volume = np.random.default_rng(0).integers(0, 1000, (5, 4, 3)).astype(np.uint16)
    positions = [10.0 + 2.0 * i for i in range(5)]
    dicom_writer(tmp_path / "series", volume, positions=positions)
    order = [3, 0, 4, 1, 2]
    enhanced_dicom_writer(tmp_path / "enhanced" / "IM0001",
                          [(volume[i], [-10.0, 5.0, positions[i]]) for i in order],
                          rescale=[(1.0 + i, -3.0) for i in order])  # fmt: skip
    image, geo = read_image(tmp_path / "enhanced")
    expected = np.stack([volume[i] * (1.0 + i) - 3.0 for i in range(5)])
    np.testing.assert_array_equal(image[0], expected.astype(np.float32))
    _, series_geo = read_image(tmp_path / "series")
    np.testing.assert_allclose(geo.affine, series_geo.affine)
    assert geo.spacing == pytest.approx(series_geo.spacing) == (2.0, 0.5, 0.5)


def test_an_enhanced_dicom_file_reads_as_its_folder(tmp_path, enhanced_dicom_writer):
    planes = [(np.full((4, 3), z), [0.0, 0.0, 2.0 * z]) for z in range(3)]
    enhanced_dicom_writer(tmp_path / "s" / "IM0001.dcm", planes)
    image, geo = read_image(tmp_path / "s" / "IM0001.dcm")
    folder_image, folder_geo = read_image(tmp_path / "s")
    np.testing.assert_array_equal(image, folder_image)
    np.testing.assert_allclose(geo.affine, folder_geo.affine)
    assert image[0, :, 0, 0].tolist() == [0, 1, 2]


def test_enhanced_dicom_with_repeated_positions_is_refused(tmp_path, enhanced_dicom_writer):
    """Two time points of 3 slices in one file: 6 frames at 3 positions."""
    plane = np.zeros((4, 3))
    planes = [(plane, [0.0, 0.0, 2.0 * (i % 3)]) for i in range(6)]
    enhanced_dicom_writer(tmp_path / "dyn" / "IM0001", planes)
    with pytest.raises(DataError, match=r"IM0001: 6 frames lie at 3 positions \(time points"):
        read_image(tmp_path / "dyn")


def test_enhanced_dicom_frames_are_checked_like_slices(tmp_path, enhanced_dicom_writer):
    """A missing frame is a gap; a frame with its own PixelSpacing is named by frame number."""
    plane = np.zeros((4, 3))
    enhanced_dicom_writer(tmp_path / "gap" / "f", [(plane, [0, 0, z]) for z in (0, 2, 4, 8)])
    with pytest.raises(DataError, match=r"gap: slice gap"):
        read_image(tmp_path / "gap")
    enhanced_dicom_writer(tmp_path / "odd" / "f", [(plane, [0, 0, z]) for z in (0, 2, 4)])
    ds = pydicom.dcmread(tmp_path / "odd" / "f")
    frame = ds.PerFrameFunctionalGroupsSequence[1]
    frame.PixelMeasuresSequence = pydicom.Sequence([pydicom.Dataset()])
    frame.PixelMeasuresSequence[0].PixelSpacing = [0.7, 0.7]
    ds.save_as(tmp_path / "odd" / "f")
    with pytest.raises(DataError, match=r"odd/f \(frame 2\): PixelSpacing \(0\.7, 0\.7\) differs"):
        read_image(tmp_path / "odd")


def test_dicom_pixel_spacing_missing_or_differing_names_the_file(tmp_path, dicom_writer):
    """A series without PixelSpacing: an AttributeError traceback; a slice with another
    PixelSpacing than the rest: read with the first slice's spacing without a word."""
    dicom_writer(tmp_path / "none", np.zeros((3, 4, 3), np.uint16))
    _edit_slices(tmp_path / "none", lambda ds: delattr(ds, "PixelSpacing"))
    with pytest.raises(DataError, match=r"000000\.dcm: needs PixelSpacing"):
        read_image(tmp_path / "none")
    dicom_writer(tmp_path / "odd", np.zeros((3, 4, 3), np.uint16), spacing=(2.0, 0.5, 0.5))
    _edit_slices(tmp_path / "odd", lambda ds: setattr(ds, "PixelSpacing", [0.7, 0.7]), only=1)
    with pytest.raises(DataError, match=r"000001\.dcm: PixelSpacing \(0\.7, 0\.7\) differs"):
        read_image(tmp_path / "odd")


def test_dicom_colour_slices_are_refused(tmp_path, dicom_writer):
    """RGB slices (SamplesPerPixel 3) of 4 x 5 pixels were read as a (3, 4, 5, 3) image: the
    slices became channels and the colours the W axis."""
    dicom_writer(tmp_path / "rgb", np.zeros((3, 4, 5), np.uint16))

    def to_rgb(ds):
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ds.PixelData = np.zeros((4, 5, 3), np.uint8).tobytes()

    _edit_slices(tmp_path / "rgb", to_rgb)
    with pytest.raises(DataError, match=r"000000\.dcm: expected one grey value per pixel"):
        read_image(tmp_path / "rgb")


def test_dicom_single_slice_spacing_is_its_thickness(tmp_path, dicom_writer):
    """Spacing said 1 mm while the affine stepped by SliceThickness (3 mm)."""
    dicom_writer(tmp_path / "one", np.zeros((1, 4, 3), np.uint16), spacing=(3.0, 0.5, 0.5))
    _, geo = read_image(tmp_path / "one")
    assert geo.spacing == pytest.approx((3.0, 0.5, 0.5))
    assert np.linalg.norm(geo.affine[:3, 0]) == pytest.approx(3.0)


@pytest.mark.parametrize("which", [0, 5])  # the first slice by position, the last
def test_a_truncated_dicom_slice_names_its_file(tmp_path, dicom_writer, which):
    """A slice cut off before its pixel data read as a header without a position and was
    skipped as a side file: the series lost a slice (the last one silently, exit 0)."""
    dicom_writer(tmp_path / "s", np.zeros((6, 4, 3), np.uint16))
    cut = sorted((tmp_path / "s").iterdir())[which]
    cut.write_bytes(cut.read_bytes()[:500])
    with pytest.raises(DataError, match=rf"{cut.name}: truncated or damaged: a MR Image Storage"):
        read_image(tmp_path / "s")


def test_a_single_slice_dicom_file_asks_for_its_series_folder(tmp_path, dicom_writer):
    """One slice file of a series was read as a one-slice volume."""
    dicom_writer(tmp_path / "s", np.zeros((3, 4, 3), np.uint16))
    with pytest.raises(DataError, match=r"000001\.dcm: a single-slice DICOM file is one plane "
                                        r"of a series: give the series folder"):  # fmt: skip
        read_image(tmp_path / "s" / "000001.dcm")


def test_dicom_undecodable_pixels_are_one_line(tmp_path, dicom_writer):
    """A transfer syntax without a decoder: pydicom's message lists each plugin on a line."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless

    dicom_writer(tmp_path / "j2k", np.zeros((2, 4, 3), np.uint16))

    def to_jpeg2000(ds):
        ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
        ds.PixelData = encapsulate([b"\0" * 20])
        ds["PixelData"].VR = "OB"

    _edit_slices(tmp_path / "j2k", to_jpeg2000)
    with pytest.raises(DataError, match=r"000000\.dcm: cannot decode pixel data") as err:
        read_image(tmp_path / "j2k")
    assert "\n" not in str(err.value)


HCROP = {"Study1_13_HCropVolume": 32, "Study2_14_HCropVolume": 35, "Study3_11_HCropVolume": 40}


@pytest.mark.real_data
@pytest.mark.parametrize("name", sorted(HCROP))
def test_real_hippocampus_crop_series(real_data, name):
    folder = real_data / "dicom" / name
    image, geo = read_image(folder)
    assert image.shape[:2] == (1, HCROP[name])
    assert 45 <= image.shape[2] <= 55 and 30 <= image.shape[3] <= 40
    assert geo.spacing == pytest.approx((1.0, 1.0, 1.0))
    # Our order agrees with sorting the files by InstanceNumber and by position.
    headers = [pydicom.dcmread(f) for f in folder.iterdir()]
    by_instance = sorted(headers, key=lambda d: int(d.InstanceNumber))
    by_z = sorted(headers, key=lambda d: float(d.ImagePositionPatient[2]))
    expected = np.stack([d.pixel_array.astype(np.float32) for d in by_instance])
    np.testing.assert_array_equal(image[0], expected)
    assert [d.InstanceNumber for d in by_z] == [d.InstanceNumber for d in by_instance]
    z = [(geo.affine @ [d, 0, 0, 1])[2] for d in range(image.shape[1])]
    assert np.all(np.diff(z) > 0)


@pytest.mark.real_data
@pytest.mark.parametrize("name", ["Study1_13_HCropVolume", "Study3_11-T1post-18670"])
def test_real_series_as_one_enhanced_file_reads_the_same(real_data, tmp_path, name,
                                                          enhanced_dicom_writer):  # fmt: skip
    """A real series rewritten as one Enhanced MR file (frames in reverse file order, each
    with its own position and the series' rescale) gives the same voxels and geometry."""
    folder = real_data / "dicom" / name
    headers = [pydicom.dcmread(f) for f in sorted(folder.iterdir())][::-1]
    first = headers[0]
    planes = [(d.pixel_array, [float(v) for v in d.ImagePositionPatient]) for d in headers]
    rescale = [(float(d.get("RescaleSlope", 1)), float(d.get("RescaleIntercept", 0)))
               for d in headers]  # fmt: skip
    spacing = (float(first.SliceThickness), *(float(v) for v in first.PixelSpacing))
    enhanced_dicom_writer(tmp_path / "enhanced" / "IM0001", planes, spacing=spacing,
                          orientation=[float(v) for v in first.ImageOrientationPatient],
                          rescale=rescale)  # fmt: skip
    expected, expected_geo = read_image(folder)
    image, geo = read_image(tmp_path / "enhanced")
    np.testing.assert_array_equal(image, expected)
    np.testing.assert_allclose(geo.affine, expected_geo.affine, atol=1e-9)
    assert geo.spacing == pytest.approx(expected_geo.spacing)
    assert geo.header["slice_thickness"] == expected_geo.header["slice_thickness"]


@pytest.mark.real_data
def test_real_full_head_t1_series(real_data):
    folder = real_data / "dicom" / "Study3_11-T1post-18670"
    image, geo = read_image(folder)
    assert image.shape == (1, 22, 320, 280)
    # 5 mm thick slices 6.5 mm apart (SpacingBetweenSlices = 6.5): the voxel spacing is 6.5.
    assert geo.spacing == pytest.approx((6.5, 0.6875, 0.6875), abs=1e-4)
    assert geo.header["slice_thickness"] == 5.0
    assert pydicom.dcmread(next(folder.iterdir())).SpacingBetweenSlices == 6.5
    headers = sorted(
        (pydicom.dcmread(f) for f in folder.iterdir()), key=lambda d: int(d.InstanceNumber)
    )
    expected = np.stack([d.pixel_array.astype(np.float32) for d in headers])
    np.testing.assert_array_equal(image[0], expected)


@pytest.mark.real_data
def test_real_nifti_round_trip(real_data, tmp_path):
    src = real_data / "hippocampus" / "labelsTr" / "hippocampus_001.nii.gz"
    label, geo = read_label(src)
    write_nifti(tmp_path / "seg.nii.gz", label, geo)
    back, geo2 = read_label(tmp_path / "seg.nii.gz")
    np.testing.assert_array_equal(back, label)
    np.testing.assert_allclose(geo2.affine, geo.affine)
    np.testing.assert_allclose(
        nib.load(str(tmp_path / "seg.nii.gz")).affine, nib.load(str(src)).affine
    )


@pytest.mark.parametrize(
    "spacing", ["1,1,1", 2.0, [[1.0], [1.0], [1.0]], [1.0, "a", 1.0], None, [1.0, 1.0]]
)
def test_a_malformed_spacing_is_one_line_naming_the_file(tmp_path, spacing):
    """A spacing from a user's file that is not 3 numbers: a DataError naming the sidecar or
    the HDF5 group on one line, never a ValueError or TypeError traceback."""
    import h5py

    volume = np.ones((4, 5, 6), np.float32)
    np.save(tmp_path / "a.npy", volume)
    (tmp_path / "a.json").write_text(json.dumps({"spacing": spacing}))
    with h5py.File(tmp_path / "c.h5", "w") as f:
        f.create_group("case").create_dataset("image", data=volume)
        storable = spacing is not None and "a" not in str(spacing)  # h5py stores no mixed list
        f["case"].attrs["spacing"] = spacing if storable else str(spacing)
    for path, kwargs, where in [
        (tmp_path / "a.npy", {}, "a.json"),
        (tmp_path / "c.h5", {"key": "case"}, "c.h5::case"),
    ]:
        with pytest.raises(DataError, match="spacing must be 3 positive numbers") as err:
            read_image(path, **kwargs)
        assert where in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("spacing", [np.asarray("1,1,1"), np.float64(2.0), np.ones((3, 1))])
def test_a_malformed_npz_spacing_names_the_file(tmp_path, spacing):
    np.savez(tmp_path / "b.npz", image=np.ones((4, 5, 6), np.float32), spacing=spacing)
    with pytest.raises(DataError, match=r"b\.npz: spacing must be 3 positive numbers") as err:
        read_image(tmp_path / "b.npz")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("affine", "message"),
    [
        (np.eye(3), "must be a finite 4x4 matrix"),
        ("identity", "must be a finite 4x4 matrix"),
        (np.full((4, 4), np.nan), "must be a finite 4x4 matrix"),
        (np.diag([2.0, 1.0, 1.0, 1.0]), r"voxel sizes \(2.0, 1.0, 1.0\).*'spacing' is \(1.0"),
    ],
)
def test_an_hdf5_affine_attribute_is_checked(tmp_path, affine, message):
    """The optional ``affine`` attribute was taken as given: a 3x3 or NaN matrix, or one whose
    voxel sizes contradict ``spacing`` (resampling uses one, the written mask the other)."""
    import h5py

    with h5py.File(tmp_path / "c.h5", "w") as f:
        group = f.create_group("case")
        group.create_dataset("image", data=np.ones((4, 5, 6), np.float32))
        group.attrs["spacing"] = [1.0, 1.0, 1.0]
        group.attrs["affine"] = affine
    with pytest.raises(DataError, match=message) as err:
        read_image(tmp_path / "c.h5", key="case")
    assert "c.h5::case" in str(err.value) and "\n" not in str(err.value)


def test_an_hdf5_affine_that_fits_the_spacing_is_used(tmp_path):
    import h5py

    affine = np.array([[0, 0, -1.5, 20], [0, 0.7, 0, -3], [1.2, 0, 0, 7], [0, 0, 0, 1.0]])
    with h5py.File(tmp_path / "c.h5", "w") as f:
        group = f.create_group("case")
        group.create_dataset("image", data=np.ones((4, 5, 6), np.float32))
        group.attrs["spacing"] = [1.2, 0.7, 1.5]
        group.attrs["affine"] = affine
    _, geo = read_image(tmp_path / "c.h5", key="case")
    np.testing.assert_array_equal(geo.affine, affine)


def test_complex_and_non_numeric_arrays_are_refused(tmp_path):
    """A complex image was cast to float with only a ComplexWarning (imaginary part gone); a
    record-typed label map failed with a NumPy UFuncTypeError."""
    np.save(tmp_path / "c.npy", np.ones((4, 5, 6), np.complex64))
    with pytest.raises(DataError, match=r"c\.npy: complex-valued image"):
        read_image(tmp_path / "c.npy")
    np.save(tmp_path / "r.npy", np.zeros((4, 5, 6), dtype=[("a", "u1")]))
    with pytest.raises(DataError, match=r"r\.npy: non-numeric label map dtype"):
        read_label(tmp_path / "r.npy")


def test_a_non_integer_label_names_the_values(tmp_path):
    label = np.zeros((4, 5, 6), np.float32)
    label[1] = 0.9999
    path = _nifti(tmp_path / "l.nii.gz", label)
    with pytest.raises(DataError, match=r"l.nii.gz: label map holds non-integer values \(0.9999\)"):
        read_label(path)
    label[1] = 2.0  # 0.0 / 1.0 / 2.0 stored as float are whole numbers
    assert read_label(_nifti(tmp_path / "l2.nii.gz", label))[0].max() == 2


@pytest.mark.real_data
@pytest.mark.parametrize("name", [*sorted(HCROP), "Study3_11-T1post-18670"])
def test_real_dicom_affine_agrees_with_pydicom_positions(real_data, name):
    """Every voxel's world position, computed here from each slice's own ImagePositionPatient
    and the orientation cosines (LPS, flipped to RAS), is what our affine says: the oblique
    full-head series included."""
    folder = real_data / "dicom" / name
    image, geo = read_image(folder)
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in sorted(folder.iterdir())]
    headers.sort(key=lambda d: int(d.InstanceNumber))
    iop = np.asarray(headers[0].ImageOrientationPatient, float)
    row_spacing, col_spacing = (float(v) for v in headers[0].PixelSpacing)
    rows, cols = image.shape[2:]
    for d in (0, len(headers) // 2, len(headers) - 1):
        for h, w in ((0, 0), (rows - 1, 0), (0, cols - 1), (rows - 1, cols - 1)):
            lps = (np.asarray(headers[d].ImagePositionPatient, float)
                   + h * row_spacing * iop[3:] + w * col_spacing * iop[:3])  # fmt: skip
            np.testing.assert_allclose(geo.affine @ [d, h, w, 1], [-lps[0], -lps[1], lps[2], 1],
                                       atol=1e-4)  # fmt: skip


def test_a_flipped_bit_in_an_upper_case_nifti_gz_is_caught(tmp_path):
    """The gzip CRC check keyed on a lower-case '.gz': SCAN.NII.GZ went to nibabel unchecked."""
    path = _nifti(tmp_path / "scan.nii.gz", np.arange(4000, dtype=np.float32).reshape(10, 20, 20))
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    (tmp_path / "SCAN.NII.GZ").write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"SCAN\.NII\.GZ: cannot read NIfTI"):
        read_image(tmp_path / "SCAN.NII.GZ")


@pytest.mark.parametrize("damage", ["truncated", "random bytes"])
def test_a_damaged_uncompressed_nifti_is_one_line(tmp_path, damage):
    """nibabel's message for a short .nii spans two lines; the second read as another problem."""
    path = _nifti(tmp_path / "scan.nii", np.arange(4000, dtype=np.float32).reshape(10, 20, 20))
    raw = path.read_bytes()
    rng = np.random.default_rng(0)
    path.write_bytes(raw[: len(raw) // 2] if damage == "truncated" else rng.bytes(len(raw)))
    with pytest.raises(DataError, match=r"scan\.nii: cannot read NIfTI: damaged") as info:
        read_image(path)
    assert "\n" not in str(info.value)
