"""What ``predict`` takes as cases from a folder: hidden files are not scans."""

from __future__ import annotations

import nibabel as nib
import numpy as np

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
