"""Real scans through the predict CLI: masks come back on each input's own grid."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from hybrid_unet.data.io import read_image, read_label

HIPPO_CROPS = ["Study1_13_HCropVolume", "Study2_14_HCropVolume", "Study3_11_HCropVolume"]
FULL_HEAD = "Study3_11-T1post-18670"
NIFTIS = [f"hippocampus_{i:03d}.nii.gz" for i in (1, 3, 4, 6, 8)]


@pytest.mark.real_data
def test_dicom_series_and_nifti_cases_keep_their_geometry(shared_data, tiny_run, tmp_path):
    scans = tmp_path / "scans"
    scans.mkdir()
    for name in [*HIPPO_CROPS, FULL_HEAD]:
        (scans / name).symlink_to(shared_data / "dicom" / name, target_is_directory=True)
    for name in NIFTIS:
        (scans / name).symlink_to(shared_data / "hippocampus" / "imagesTr" / name)
    out = tmp_path / "pred"
    # overlap 0 keeps the full-head series (143 x 219 x 192 at the 1 mm plan) cheap on a CPU
    result = subprocess.run(
        [sys.executable, "-m", "hybrid_unet.predict", f"checkpoints={tiny_run}", f"input={scans}",
         f"output={out}", "sliding_window.overlap=0"],
        capture_output=True, text=True, timeout=600, cwd=Path.cwd(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]

    for name in NIFTIS:
        source, pred = nib.load(scans / name), nib.load(out / name)
        assert pred.shape == source.shape
        np.testing.assert_allclose(pred.affine, source.affine, atol=1e-5)
    for name in [*HIPPO_CROPS, FULL_HEAD]:
        image, geometry = read_image(scans / name)
        label, written = read_label(out / f"{name}.nii.gz")
        assert label.shape == image.shape[1:]
        np.testing.assert_allclose(written.affine, geometry.affine, atol=1e-4)

    # The anisotropic series went through resampling to the 1 mm plan and came back.
    label, _ = read_label(out / f"{FULL_HEAD}.nii.gz")
    _, geometry = read_image(scans / FULL_HEAD)  # the series' own spacing (5 x 0.6875 mm)
    assert nib.load(out / f"{FULL_HEAD}.nii.gz").shape == (280, 320, 22)
    assert max(geometry.spacing) / min(geometry.spacing) > 3
    row = next(r for r in csv.DictReader((out / "volumes.csv").open()) if r["case"] == FULL_HEAD)
    voxel_ml = float(np.prod(geometry.spacing)) / 1000
    for c in (1, 2, 3):
        expected = round(float((label == c).sum()) * voxel_ml, 6)
        assert float(row[f"class_{c}_ml"]) == pytest.approx(expected, abs=1e-9)
