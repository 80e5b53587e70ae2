"""Fixtures for the data tests: the real-data folder and a tiny synthetic DICOM writer."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def real_data_root() -> Path:
    """``$HYBRID_UNET_DATA`` or ``../shared/data`` next to the repository root."""
    return Path(os.environ.get("HYBRID_UNET_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture
def real_data() -> Path:
    root = real_data_root()
    if not root.is_dir():
        pytest.skip(f"real data folder {root} is absent")
    return root


def write_dicom_series(
    folder: Path,
    volume: np.ndarray,
    spacing: tuple[float, float, float] = (2.0, 0.5, 0.5),
    positions: list[float] | None = None,
    series_uid: str = "1.2.3.4",
    slope: float = 1.0,
    intercept: float = 0.0,
    names: list[str] | None = None,
) -> None:
    """Write ``volume`` ``(D, H, W)`` uint16 as one axial DICOM file per slice."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    depth = volume.shape[0]
    positions = positions if positions is not None else [i * spacing[0] for i in range(depth)]
    names = names or [f"{i:06d}.dcm" for i in range(depth)]
    for i in range(depth):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.Modality = "MR"
        ds.SeriesInstanceUID = series_uid
        ds.InstanceNumber = i + 1
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-10.0, 5.0, float(positions[i])]
        ds.PixelSpacing = [spacing[1], spacing[2]]
        ds.SliceThickness = spacing[0]
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept
        ds.Rows, ds.Columns = volume.shape[1:]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.PixelData = np.ascontiguousarray(volume[i], dtype=np.uint16).tobytes()
        ds.save_as(folder / names[i], enforce_file_format=True)


def write_enhanced_dicom(
    file: Path,
    planes: list[tuple[np.ndarray, list[float]]],
    spacing: tuple[float, float, float] = (2.0, 0.5, 0.5),
    orientation: tuple[float, ...] = (1, 0, 0, 0, 1, 0),
    rescale: list[tuple[float, float]] | None = None,
    series_uid: str = "1.2.3.5",
) -> None:
    """Write one Enhanced MR file: frame i holds ``planes[i] = (pixels (H, W), position)``.

    Position, orientation, pixel spacing and thickness sit in the functional groups, as
    scanners write them: orientation and spacing shared, position (and ``rescale``, a slope
    and intercept per frame, when given) per frame.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    def item(**attributes) -> Sequence:
        ds = Dataset()
        for keyword, value in attributes.items():
            setattr(ds, keyword, value)
        return Sequence([ds])

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4.1"  # Enhanced MR Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = (
        meta.MediaStorageSOPClassUID,
        meta.MediaStorageSOPInstanceUID,
    )
    ds.Modality, ds.SeriesInstanceUID, ds.NumberOfFrames = "MR", series_uid, len(planes)
    shared = Dataset()
    shared.PlaneOrientationSequence = item(ImageOrientationPatient=list(orientation))
    shared.PixelMeasuresSequence = item(PixelSpacing=list(spacing[1:]), SliceThickness=spacing[0])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for i, (_, position) in enumerate(planes):
        frame = Dataset()
        frame.PlanePositionSequence = item(ImagePositionPatient=list(position))
        if rescale is not None:
            slope, intercept = rescale[i]
            frame.PixelValueTransformationSequence = item(RescaleSlope=slope,
                                                          RescaleIntercept=intercept)  # fmt: skip
        per_frame.append(frame)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.Rows, ds.Columns = planes[0][0].shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = np.stack([p for p, _ in planes]).astype(np.uint16).tobytes()
    file.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(file, enforce_file_format=True)


@pytest.fixture
def dicom_writer():
    """The :func:`write_dicom_series` helper, as a fixture so tests need no conftest import."""
    return write_dicom_series


@pytest.fixture
def enhanced_dicom_writer():
    """The :func:`write_enhanced_dicom` helper."""
    return write_enhanced_dicom


def write_decathlon(
    root: Path,
    num_cases: int = 4,
    shape: tuple[int, int, int] = (10, 12, 8),
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    channels: int = 1,
    modality: str = "MRI",
) -> Path:
    """A tiny Decathlon dataset; nibabel shape ``(x, y, z)`` = ``shape``, spacing per x, y, z."""
    import json

    import nibabel as nib

    rng = np.random.default_rng(0)
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    affine = np.diag([*spacing, 1.0])
    training = []
    for i in range(num_cases):
        name = f"case_{i:03d}"
        full = (*shape, channels) if channels > 1 else shape
        image = rng.normal(100, 20, full).astype(np.float32)
        label = np.zeros(shape, np.uint8)
        label[2:6, 3:8, 2:5] = 1
        label[6:8, 3:8, 2:5] = 2
        nib.save(nib.Nifti1Image(image, affine), str(root / "imagesTr" / f"{name}.nii.gz"))
        nib.save(nib.Nifti1Image(label, affine), str(root / "labelsTr" / f"{name}.nii.gz"))
        training.append(
            {"image": f"./imagesTr/{name}.nii.gz", "label": f"./labelsTr/{name}.nii.gz"}
        )
    meta = {
        "name": "tiny",
        "modality": {str(c): modality for c in range(channels)},
        "labels": {"0": "background", "1": "a", "2": "b"},
        "numTraining": num_cases,
        "training": training,
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


@pytest.fixture
def decathlon(tmp_path) -> Path:
    """Path of a freshly written 4-case Decathlon dataset."""
    return write_decathlon(tmp_path / "tiny")


@pytest.fixture
def decathlon_writer():
    return write_decathlon
