"""Bad inputs through batch prediction: each bad scan is skipped and named, the rest are written.

One folder holds two good phantom scans and one scan per kind of damage (and a DICOM series
folder per kind of broken series). ``python -m hybrid_unet.predict`` runs over it once, in this
process (the same ``run_prediction`` the CLI calls); every bad scan must appear in
``summary.json`` with an error naming it, every good scan must get its mask, and no temporary
or half-written file may remain.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from hybrid_unet.data.io.geometry import Geometry
from hybrid_unet.data.io.nifti import write_nifti
from tests.fixtures.bad_inputs import write_broken_series
from tests.inference.test_predict_cli import SPACING, phantom

pytestmark = pytest.mark.reliability


def _nifti(path: Path, array: np.ndarray) -> None:
    write_nifti(path, array, Geometry.from_spacing(SPACING))


def _nan(folder: Path) -> None:
    image = phantom(3)
    image[5, 5, 5] = np.nan
    _nifti(folder / "nan_voxel.nii.gz", image)


def _inf(folder: Path) -> None:
    image = phantom(4)
    image[2, 3, 4] = np.inf
    _nifti(folder / "inf_voxel.nii.gz", image)


def _truncated(folder: Path) -> None:
    _nifti(folder / "truncated.nii.gz", phantom(5))
    data = (folder / "truncated.nii.gz").read_bytes()
    (folder / "truncated.nii.gz").write_bytes(data[: len(data) // 2])


def _zero_byte(folder: Path) -> None:
    (folder / "zero_byte.nii.gz").write_bytes(b"")


def _flat_2d(folder: Path) -> None:
    nib.save(nib.Nifti1Image(phantom(6)[0], np.eye(4)), str(folder / "flat_2d.nii.gz"))


def _five_d(folder: Path) -> None:
    array = phantom(7)[..., None, None].repeat(2, axis=3).repeat(2, axis=4)
    nib.save(nib.Nifti1Image(array, np.eye(4)), str(folder / "five_d.nii.gz"))


def _dicom(kind: str):
    def build(folder: Path) -> None:
        write_broken_series(folder / f"dicom_{kind.replace(' ', '_')}", kind)

    return build


BAD = {
    "nan_voxel": ("NaN voxel", _nan),
    "inf_voxel": ("Inf voxel", _inf),
    "truncated": ("truncated .nii.gz", _truncated),
    "zero_byte": ("zero-byte file", _zero_byte),
    "flat_2d": ("2D image", _flat_2d),
    "five_d": ("5D image", _five_d),
    "dicom_missing_slice": ("DICOM series with a missing slice", _dicom("missing slice")),
    "dicom_mixed_series": ("two DICOM series in one folder", _dicom("mixed series")),
    "dicom_non-DICOM_file": ("a non-DICOM file in a series", _dicom("non-DICOM file")),
}


@pytest.fixture(scope="module")
def prediction(tmp_path_factory):
    from hydra import compose, initialize_config_module

    from hybrid_unet.predict import check_predict_config, run_prediction
    from tests.inference.conftest import make_run

    root = tmp_path_factory.mktemp("predict_bad")
    run = make_run(root / "run").parent.parent
    scans = root / "scans"
    scans.mkdir()
    for i in range(2):
        _nifti(scans / f"good_{i}.nii.gz", phantom(i))
    for _, build in BAD.values():
        build(scans)
    out = root / "out"
    overrides = [f"checkpoints={run}", f"input={scans}", f"output={out}", "num_threads=1"]
    with initialize_config_module(version_base="1.3", config_module="hybrid_unet.conf"):
        cfg = compose(config_name="predict", overrides=overrides)
    summary = run_prediction(check_predict_config(cfg))
    return summary, scans, out


@pytest.mark.row("bad input (prediction)", "good scans in a folder of bad ones",
                 "each written whole with its scan's shape; no temporary file left")  # fmt: skip
def test_good_scans_are_written_whole(prediction, observe):
    summary, scans, out = prediction
    assert sorted(c["case"] for c in summary["cases"]) == ["good_0", "good_1"]
    for name in ("good_0", "good_1"):
        assert nib.load(out / f"{name}.nii.gz").shape == nib.load(scans / f"{name}.nii.gz").shape
    assert not list(out.rglob("*.tmp-*")) and not list(out.rglob(".tmp-*"))
    assert json.loads((out / "summary.json").read_text())["failed"] == summary["failed"]
    observe(f"2 masks written next to {len(summary['failed'])} skipped scans", cases=2)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=pytest.mark.row(
            "bad input (prediction)", kind, "skipped, named in summary.json, the rest written"))
        for name, (kind, _) in BAD.items()
    ],
)  # fmt: skip
def test_each_bad_scan_is_skipped_and_named(prediction, name, observe):
    summary, _, out = prediction
    failed = {f["case"]: f for f in summary["failed"]}
    assert name in failed, f"{name} was not reported as failed: {sorted(failed)}"
    error = failed[name]["error"]
    assert name in error or name in failed[name]["input"], error
    assert "\n" not in error and "Traceback" not in error
    assert not list(out.glob(f"{name}*")), f"an output was written for the bad scan {name}"
    observe(error.replace(str(out.parent), "…")[:110])
