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
