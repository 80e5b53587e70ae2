"""DICOM series folders read with pydicom.

Slices are ordered by their position along the slice normal (the cross product of the two
ImageOrientationPatient cosines, dotted with ImagePositionPatient), never by file name or
InstanceNumber. The array is ``(D, H, W)`` = (slice, row, column), RescaleSlope/Intercept
applied; spacing is (distance between slice positions, PixelSpacing row, PixelSpacing column).
The slice distance is the true voxel spacing and may exceed SliceThickness (series with a gap
between thick slices); the thickness is kept in ``geometry.header["slice_thickness"]``.
the affine is built from orientation and position and converted from DICOM LPS to RAS.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pydicom

from hybrid_unet.data.errors import DataError
from hybrid_unet.data.io.folders import visible_entries
from hybrid_unet.data.io.geometry import Geometry

# Slice spacings may wobble by rounding in the stored positions; more than this is a gap.
_GAP_TOLERANCE = 0.1  # fraction of the median spacing
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _read_headers(folder: Path) -> dict[str, list[tuple[Path, pydicom.Dataset]]]:
    series: dict[str, list[tuple[Path, pydicom.Dataset]]] = defaultdict(list)
    for file in (p for p in visible_entries(folder) if p.is_file()):
        try:
            ds = pydicom.dcmread(file, stop_before_pixels=True)
        except Exception as exc:
            if file.suffix.lower() == ".dcm":
                raise DataError(file, f"cannot read DICOM header ({exc})") from None
            continue  # README, DICOMDIR-like side files without a .dcm suffix
        if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds:
            continue
        series[str(ds.get("SeriesInstanceUID", ""))].append((file, ds))
    return series


def list_dicom_series(folder: str | Path) -> list[str]:
    """SeriesInstanceUIDs of the image slices found directly in ``folder``."""
    return sorted(_read_headers(Path(folder)))


def _ordered_slices(folder: Path, slices: list[tuple[Path, pydicom.Dataset]]):
    """Sort slices along the normal; return them, the positions and the normal."""
    iop = np.asarray(slices[0][1].ImageOrientationPatient, dtype=np.float64)
    row_cos, col_cos = iop[:3], iop[3:]
    normal = np.cross(row_cos, col_cos)
    for file, ds in slices:
        if not np.allclose(np.asarray(ds.ImageOrientationPatient, dtype=float), iop, atol=1e-4):
            raise DataError(file, "ImageOrientationPatient differs from the rest of the series")
    positions = np.array(
        [
            float(np.dot(normal, np.asarray(ds.ImagePositionPatient, dtype=float)))
            for _, ds in slices
        ]
    )
    order = np.argsort(positions, kind="stable")
    return [slices[i] for i in order], positions[order], row_cos, col_cos


def _check_spacing(folder: Path, positions: np.ndarray) -> float:
    if len(positions) < 2:
        return 1.0
    steps = np.diff(positions)
    if (steps <= 1e-6).any():
        raise DataError(folder, "two slices share the same position (duplicate slice?)")
    step = float(np.median(steps))
    bad = np.flatnonzero(np.abs(steps - step) > _GAP_TOLERANCE * step)
    if bad.size:
        where = ", ".join(f"{positions[i]:.2f}->{positions[i + 1]:.2f} mm" for i in bad[:5])
        raise DataError(
            folder,
            f"slice gap: spacing along the normal is {step:.3f} mm but jumps at {where} "
            f"({bad.size} place(s)); a slice is missing",
        )
    return step


def read_dicom_series(
    folder: str | Path, series_uid: str | None = None
) -> tuple[np.ndarray, Geometry]:
    """Read one DICOM series from a folder.

    Args:
        folder: Folder with one file per slice (any file names).
        series_uid: Which SeriesInstanceUID to read when the folder holds several.

    Returns:
        ``(D, H, W)`` float32 array with rescale applied, and its geometry.

    Raises:
        DataError: No slices, several series without ``series_uid``, inconsistent orientation,
            duplicate or missing slices, unreadable pixel data.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "DICOM series folder not found")
    series = _read_headers(folder)
    if not series:
        raise DataError(folder, "no DICOM image slices found")
    if series_uid is None and len(series) > 1:
        listing = "; ".join(f"{uid} ({len(s)} slices)" for uid, s in sorted(series.items()))
        raise DataError(folder, f"holds {len(series)} series, pass series_uid= one of: {listing}")
    uid = series_uid if series_uid is not None else next(iter(series))
    if uid not in series:
        raise DataError(folder, f"no series {uid!r} (has {sorted(series)})")
    slices, positions, row_cos, col_cos = _ordered_slices(folder, series[uid])
    slice_step = _check_spacing(folder, positions)

    planes = []
    for file, _ in slices:
        try:
            ds = pydicom.dcmread(file)
            pixels = ds.pixel_array.astype(np.float32)
        except Exception as exc:
            raise DataError(file, f"cannot decode pixel data ({exc})") from None
        slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
        intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
        planes.append(pixels * np.float32(slope) + np.float32(intercept))
    shapes = {p.shape for p in planes}
    if len(shapes) != 1:
        raise DataError(folder, f"slices have different sizes {sorted(shapes)}")
    volume = np.stack(planes)

    first = slices[0][1]
    row_spacing, col_spacing = (float(v) for v in first.PixelSpacing)
    if len(slices) > 1:
        first_pos = np.asarray(first.ImagePositionPatient, dtype=float)
        last_pos = np.asarray(slices[-1][1].ImagePositionPatient, dtype=float)
        slice_vec = (last_pos - first_pos) / (len(slices) - 1)
    else:
        slice_vec = np.cross(row_cos, col_cos) * float(first.get("SliceThickness", 1.0))
    lps = np.eye(4)
    lps[:3, 0] = slice_vec  # d: next slice
    lps[:3, 1] = col_cos * row_spacing  # h: next row, walks down a column
    lps[:3, 2] = row_cos * col_spacing  # w: next column, walks along a row
    lps[:3, 3] = np.asarray(first.ImagePositionPatient, dtype=float)
    spacing = (slice_step, row_spacing, col_spacing)
    header = {"series_uid": uid, "slice_thickness": float(first.get("SliceThickness", 0) or 0)}
    geometry = Geometry(spacing, _LPS_TO_RAS @ lps, str(folder), header=header)
    return volume, geometry
