"""What ``predict`` takes as cases from a folder: hidden files are not scans."""

from __future__ import annotations

import re

import nibabel as nib
import numpy as np
import pytest

from hybrid_unet.data.errors import DataError
from hybrid_unet.data.io import read_image
from hybrid_unet.inference.inputs import find_cases
from tests.data.conftest import write_dicom_series


def _nifti(path):
    nib.save(nib.Nifti1Image(np.ones((8, 8, 8), np.float32), np.eye(4)), path)


def test_a_folder_skips_macos_side_files_and_torn_temporaries(tmp_path):
    _nifti(tmp_path / "case_a.nii.gz")
    _nifti(tmp_path / "case_b_0000.nii.gz")
    _nifti(tmp_path / "case_b_0001.nii.gz")
    (tmp_path / "._case_a.nii.gz").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (tmp_path / ".tmp-4242-case_c.nii.gz").write_bytes(b"\x1f\x8b half a file")
    (tmp_path / ".DS_Store").write_bytes(b"Bud1")
    series = tmp_path / "ct"
    write_dicom_series(series, np.full((4, 8, 8), 7, np.uint16), spacing=(2.0, 1.0, 1.0))
    (series / "._000000.dcm").write_bytes(b"\x00\x05\x16\x07 AppleDouble")

    cases = find_cases(tmp_path)

    assert [(c.name, [p.name for p in c.images]) for c in cases] == [
        ("case_a", ["case_a.nii.gz"]),
        ("case_b", ["case_b_0000.nii.gz", "case_b_0001.nii.gz"]),
        ("ct", ["ct"]),
    ]
    image, geometry = read_image(cases[2].images[0])
    assert image.shape == (1, 4, 8, 8) and np.all(image == 7)
    assert tuple(geometry.spacing) == (2.0, 1.0, 1.0)


def test_numpy_channel_files_form_one_case_as_nifti_ones_do(tmp_path):
    """A folder of nnU-Net-style .npy channel files (which training reads with file_ending
    ".npy") was predicted file by file: case names with _0000, and 1-channel inputs for a
    2-channel model."""
    for name in ("x_0000.npy", "x_0001.npy", "y.npy", "patient_0007.npy"):
        np.save(tmp_path / name, np.ones((8, 8, 8), np.float32))
    np.savez(tmp_path / "z_0000.npz", image=np.ones((1, 8, 8, 8), np.float32))

    cases = find_cases(tmp_path)

    assert [(c.name, [p.name for p in c.images]) for c in cases] == [
        ("patient_0007", ["patient_0007.npy"]),
        ("x", ["x_0000.npy", "x_0001.npy"]),
        ("y", ["y.npy"]),
        ("z_0000", ["z_0000.npz"]),  # an .npz holds its channels itself
    ]
    image, _ = read_image(cases[1].images[0])
    assert image.shape == (1, 8, 8, 8)


def test_numbered_files_of_different_patients_are_separate_cases(tmp_path):
    _nifti(tmp_path / "patient_0001.nii.gz")
    _nifti(tmp_path / "patient_0002.nii.gz")

    cases = find_cases(tmp_path)

    assert [(c.name, [p.name for p in c.images]) for c in cases] == [
        ("patient_0001", ["patient_0001.nii.gz"]),
        ("patient_0002", ["patient_0002.nii.gz"]),
    ]


def test_a_single_numbered_file_keeps_its_suffix_unless_it_is_channel_0000(tmp_path):
    _nifti(tmp_path / "patient_0001.nii.gz")
    _nifti(tmp_path / "case_0000.nii.gz")

    assert [c.name for c in find_cases(tmp_path / "patient_0001.nii.gz")] == ["patient_0001"]
    assert [c.name for c in find_cases(tmp_path / "case_0000.nii.gz")] == ["case"]


def test_channel_files_group_only_when_numbered_from_0000_without_gaps(tmp_path):
    for name in ("a_0000", "a_0001", "b_0000", "b_0002", "c_0001", "c_0002"):
        _nifti(tmp_path / f"{name}.nii.gz")

    cases = find_cases(tmp_path)

    assert [(c.name, [p.name for p in c.images]) for c in cases] == [
        ("a", ["a_0000.nii.gz", "a_0001.nii.gz"]),
        ("b_0000", ["b_0000.nii.gz"]),
        ("b_0002", ["b_0002.nii.gz"]),
        ("c_0001", ["c_0001.nii.gz"]),
        ("c_0002", ["c_0002.nii.gz"]),
    ]


def _scan(path, affine, shape=(8, 8, 8)):
    nib.save(nib.Nifti1Image(np.ones(shape, np.float32), affine), path)


def _read_error(record):
    from hybrid_unet.data.errors import DataError
    from hybrid_unet.data.preprocessing import read_case

    try:
        read_case(record)
    except DataError as exc:
        return str(exc)
    raise AssertionError("read_case accepted channel files on different grids")


def test_channel_files_on_different_grids_are_refused_naming_the_file(tmp_path):
    _scan(tmp_path / "x_0000.nii.gz", np.diag([1.0, 1.0, 1.2, 1.0]))
    other = np.diag([2.0, 2.0, 3.0, 1.0])
    other[:3, 3] = [5.0, -3.0, 7.0]
    _scan(tmp_path / "x_0001.nii.gz", other)
    (case,) = find_cases(tmp_path)

    error = _read_error(case)

    assert error.startswith(str(tmp_path / "x_0001.nii.gz") + ": channel spacing")
    assert "x_0000.nii.gz" in error


def test_channel_files_of_different_shapes_are_refused_naming_the_file(tmp_path):
    _scan(tmp_path / "y_0000.nii.gz", np.eye(4))
    _scan(tmp_path / "y_0001.nii.gz", np.eye(4), shape=(8, 8, 6))
    (case,) = find_cases(tmp_path)

    error = _read_error(case)

    assert error.startswith(str(tmp_path / "y_0001.nii.gz") + ": channel shape")


def test_a_case_with_mismatched_channels_fails_alone_in_predict(tmp_path):
    from hybrid_unet.inference.outputs import predict_cases
    from hybrid_unet.inference.pipeline import Segmentation

    scans = tmp_path / "scans"
    scans.mkdir()
    _scan(scans / "bad_0000.nii.gz", np.eye(4))
    _scan(scans / "bad_0001.nii.gz", np.eye(4), shape=(8, 8, 6))
    _scan(scans / "good.nii.gz", np.eye(4))

    def segmenter(image, geometry):
        return Segmentation(np.zeros(image.shape[1:], np.uint8))

    summary = predict_cases(find_cases(scans), segmenter, tmp_path / "out", {1: "a"}, log=print)

    assert [c["case"] for c in summary["cases"]] == ["good"]
    (failed,) = summary["failed"]
    assert failed["error"].startswith(str(scans / "bad_0001.nii.gz") + ": channel shape")


def test_probabilities_are_stored_in_the_label_niftis_voxel_order(tmp_path):
    from hybrid_unet.data.io.geometry import Geometry
    from hybrid_unet.inference.outputs import write_case
    from hybrid_unet.inference.pipeline import Segmentation

    label = np.random.default_rng(0).integers(0, 3, (4, 5, 6)).astype(np.uint8)  # (D, H, W)
    one_hot = np.eye(3, dtype=np.float32)[label].transpose(3, 0, 1, 2)  # (K, D, H, W)
    geometry = Geometry.from_spacing((3.0, 2.0, 1.0))

    write_case("c", Segmentation(label, one_hot), geometry, tmp_path)

    mask = nib.load(tmp_path / "c.nii.gz")
    stored = np.load(tmp_path / "probabilities" / "c.npz")
    assert stored["probabilities"].shape == (3, *mask.shape) == (3, 6, 5, 4)
    np.testing.assert_array_equal(stored["probabilities"].argmax(0), np.asarray(mask.dataobj))
    np.testing.assert_allclose(stored["affine"], mask.affine)
    np.testing.assert_allclose(stored["spacing"], mask.header.get_zooms())


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            '{"training": [], "test": ["../../etc/passwd"]}',
            "test[0] '../../etc/passwd' points outside",
        ),
        ('{"training": [], "test": ["/etc/hostname"]}', "test[0] '/etc/hostname' points outside"),
        ('{"training": [], "test": [{"img": "x.nii.gz"}]}', "test[0] must be a path string"),
        ('{"training": [], "test": [3]}', "test[0] must be a path string, got 3"),
        ("{not json", "invalid JSON"),
        ("[1, 2]", "expected a JSON object, got list"),
    ],
)
def test_a_bad_dataset_json_test_list_is_one_error_naming_the_file(tmp_path, content, message):
    """predict on a dataset.json (split test) read the test list unchecked: a KeyError,
    TypeError, JSONDecodeError or AttributeError traceback, and '../../etc/passwd' was read."""
    (tmp_path / "dataset.json").write_text(content)
    with pytest.raises(DataError, match=re.escape(message)) as err:
        find_cases(tmp_path / "dataset.json", "test")
    assert str(err.value).startswith(str(tmp_path / "dataset.json"))


def test_a_dataset_json_test_list_inside_the_folder_is_read(tmp_path):
    (tmp_path / "imagesTs").mkdir()
    _nifti(tmp_path / "imagesTs" / "a.nii.gz")
    (tmp_path / "dataset.json").write_text('{"training": [], "test": ["./imagesTs/a.nii.gz"]}')
    cases = find_cases(tmp_path / "dataset.json", "test")
    assert [(c.name, c.images) for c in cases] == [("a", [tmp_path / "imagesTs" / "a.nii.gz"])]


def test_upper_case_nifti_names_are_scans(tmp_path):
    """SCAN.NII.GZ (as some converters export) was skipped in a folder without a word, and
    given alone it was written as SCAN.NII.GZ.nii.gz."""
    _nifti(tmp_path / "SCAN.NII.GZ")
    _nifti(tmp_path / "MR_0000.NII")
    _nifti(tmp_path / "MR_0001.NII")
    cases = find_cases(tmp_path)
    assert [(c.name, [p.name for p in c.images]) for c in cases] == [
        ("MR", ["MR_0000.NII", "MR_0001.NII"]),
        ("SCAN", ["SCAN.NII.GZ"]),
    ]
    assert [c.name for c in find_cases(tmp_path / "SCAN.NII.GZ")] == ["SCAN"]


def test_hdf5_files_in_a_folder_are_scans(tmp_path):
    """A folder's .h5 files were skipped without a word (or the folder 'held no scan')."""
    from hybrid_unet.data.io import write_hdf5_case

    for name in ("p1", "p2"):
        write_hdf5_case(tmp_path / "cases.h5", name, np.ones((4, 5, 6), np.float32), None,
                        (1.0, 1.0, 1.0))  # fmt: skip
    _nifti(tmp_path / "scan.nii.gz")
    cases = find_cases(tmp_path)
    assert [(c.name, c.images, c.key) for c in cases] == [
        ("p1", [tmp_path / "cases.h5"], "p1"),
        ("p2", [tmp_path / "cases.h5"], "p2"),
        ("scan", [tmp_path / "scan.nii.gz"], None),
    ]
    assert read_image(tmp_path / "cases.h5", key="p2")[0].shape == (1, 4, 5, 6)


def test_a_test_list_entry_split_into_channel_files_is_one_case(tmp_path):
    """nnU-Net v1's conversion keeps 'test': ['./imagesTs/x.nii.gz'] but writes x_0000.nii.gz,
    x_0001.nii.gz: training read those, predict failed every case with 'file not found'."""
    (tmp_path / "imagesTs").mkdir()
    for c in range(2):
        _nifti(tmp_path / "imagesTs" / f"x_{c:04d}.nii.gz")
    (tmp_path / "dataset.json").write_text('{"training": [], "test": ["./imagesTs/x.nii.gz"]}')
    cases = find_cases(tmp_path / "dataset.json", "test")
    assert [(c.name, [p.name for p in c.images]) for c in cases] == [
        ("x", ["x_0000.nii.gz", "x_0001.nii.gz"])
    ]
