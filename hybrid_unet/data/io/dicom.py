"""DICOM series folders read with pydicom.

Slices are ordered by their position along the slice normal (the cross product of the two
ImageOrientationPatient cosines, dotted with ImagePositionPatient), never by file name or
InstanceNumber. The array is ``(D, H, W)`` = (slice, row, column), RescaleSlope/Intercept
applied; spacing is (distance between slice positions, PixelSpacing row, PixelSpacing column).
The slice distance is the true voxel spacing and may exceed SliceThickness (series with a gap
between thick slices); the thickness is kept in ``geometry.header["slice_thickness"]``.
the affine is built from orientation and position and converted from DICOM LPS to RAS.

An enhanced multi-frame file (Enhanced MR/CT, one file for the whole series) is read frame by
frame: each frame's position, orientation, pixel spacing and rescale come from its functional
groups (per-frame ones over shared ones over top-level attributes), and the frames are then
ordered and checked exactly as single-frame slices are. A file whose frames repeat positions
(time points, echoes, several stacks) is refused, as is a multi-frame file without per-frame
positions.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom

from hybrid_unet.data.errors import DataError
from hybrid_unet.data.io.folders import visible_entries
from hybrid_unet.data.io.geometry import Geometry

# Slice spacings may wobble by rounding in the stored positions; more than this is a gap.
_GAP_TOLERANCE = 0.1  # fraction of the median spacing
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _one_line(exc: Exception) -> str:
    """pydicom's message on one line (a missing decoder lists every plugin on its own line)."""
    return " ".join(str(exc).split())


# Functional-group sequences of an enhanced multi-frame file and the attributes each holds.
_FRAME_MACROS = {
    "PlanePositionSequence": ("ImagePositionPatient",),
    "PlaneOrientationSequence": ("ImageOrientationPatient",),
    "PixelMeasuresSequence": ("PixelSpacing", "SliceThickness"),
    "PixelValueTransformationSequence": ("RescaleSlope", "RescaleIntercept"),
}
# Top-level attributes a frame takes unless its functional groups say otherwise (never the
# position: a frame's position is its own).
_TOP_LEVEL = ("SeriesInstanceUID", "ImageOrientationPatient", "PixelSpacing", "SliceThickness",
              "RescaleSlope", "RescaleIntercept")  # fmt: skip


@dataclass(frozen=True)
class _Slice:
    """One plane of a series: a single-frame file (``frame`` None) or one frame of a file.

    ``ds`` holds the plane's own attributes (for a frame: gathered from its functional groups).
    """

    file: Path
    ds: pydicom.Dataset
    frame: int | None = None

    @property
    def name(self) -> str:
        return str(self.file) if self.frame is None else f"{self.file} (frame {self.frame + 1})"


def _image_storage(ds: pydicom.Dataset) -> str | None:
    """The SOP class name (``MR Image Storage``) if the file says it stores an image."""
    meta = getattr(ds, "file_meta", None)
    uid = (meta.get("MediaStorageSOPClassUID") if meta is not None else None) or ds.get(
        "SOPClassUID"
    )
    name = str(getattr(uid, "name", "") or "")
    return name if "Image Storage" in name else None


def _frames(ds: pydicom.Dataset) -> int:
    try:
        return int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        return 1


def _frame_headers(ds: pydicom.Dataset) -> list[pydicom.Dataset] | None:
    """Each frame's plane attributes, or None when the file has no per-frame positions."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if not per_frame or len(per_frame) != _frames(ds):
        return None
    shared = ds.get("SharedFunctionalGroupsSequence") or [pydicom.Dataset()]
    frames = []
    for item in per_frame:
        frame = pydicom.Dataset()
        for keyword in _TOP_LEVEL:
            if keyword in ds:
                setattr(frame, keyword, ds[keyword].value)
        for group in (shared[0], item):  # a per-frame value overrides the shared one
            for sequence, keywords in _FRAME_MACROS.items():
                for macro in group.get(sequence) or []:
                    for keyword in (k for k in keywords if k in macro):
                        setattr(frame, keyword, macro[keyword].value)
        if "ImagePositionPatient" not in frame or "ImageOrientationPatient" not in frame:
            return None
        frames.append(frame)
    return frames


def _read_headers(folder: Path) -> dict[str, list[_Slice]]:
    """Image planes by SeriesInstanceUID: single-frame slices and enhanced multi-frame frames
    of the files in ``folder`` (or of ``folder`` itself when it is a file).

    Raises:
        DataError: A ``.dcm`` file is unreadable, or the folder holds only multi-frame files
            without per-frame positions (nothing says where their frames lie).
    """
    series: dict[str, list[_Slice]] = defaultdict(list)
    unplaced: list[tuple[Path, int]] = []
    files = [folder] if folder.is_file() else [p for p in visible_entries(folder) if p.is_file()]
    for file in files:
        try:
            with open(file, "rb") as fp:
                ds = pydicom.dcmread(fp, stop_before_pixels=True)
                ended = fp.tell() >= file.stat().st_size  # no pixel data followed the header
        except Exception as exc:
            if file.suffix.lower() == ".dcm":
                raise DataError(file, f"cannot read DICOM header ({_one_line(exc)})") from None
            continue  # README, DICOMDIR-like side files without a .dcm suffix
        if ended and (kind := _image_storage(ds)):
            # A cut-off slice reads as a header without position: it must not drop out quietly.
            raise DataError(file, f"truncated or damaged: a {kind} file that ends before its "
                                  "pixel data")  # fmt: skip
        if _frames(ds) > 1:
            frames = _frame_headers(ds)
            if frames is None:
                unplaced.append((file, _frames(ds)))
            for i, frame in enumerate(frames or []):
                series[str(frame.get("SeriesInstanceUID", ""))].append(_Slice(file, frame, i))
            continue
        if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds:
            continue
        series[str(ds.get("SeriesInstanceUID", ""))].append(_Slice(file, ds))
    if not series and unplaced:
        file, frames = unplaced[0]
        raise DataError(
            file,
            f"multi-frame DICOM ({frames} frames in one file) without per-frame positions "
            "(PerFrameFunctionalGroupsSequence) is not supported; convert the series to NIfTI "
            "(e.g. with dcm2niix)",
        )
    return series


def list_dicom_series(folder: str | Path) -> list[str]:
    """SeriesInstanceUIDs of the image slices found directly in ``folder``."""
    return sorted(_read_headers(Path(folder)))


def _ordered_slices(folder: Path, slices: list[_Slice]):
    """Sort slices along the normal; return them, the positions and the normal."""
    iop = np.asarray(slices[0].ds.ImageOrientationPatient, dtype=np.float64)
    row_cos, col_cos = iop[:3], iop[3:]
    normal = np.cross(row_cos, col_cos)
    pixel_spacing = _pixel_spacing(slices[0].name, slices[0].ds)
    for s in slices:
        if not np.allclose(np.asarray(s.ds.ImageOrientationPatient, dtype=float), iop, atol=1e-4):
            raise DataError(s.name, "ImageOrientationPatient differs from the rest of the series")
        if not np.allclose(_pixel_spacing(s.name, s.ds), pixel_spacing, rtol=1e-4):
            raise DataError(s.name, f"PixelSpacing {_pixel_spacing(s.name, s.ds)} differs from "
                                    f"the rest of the series {pixel_spacing}")  # fmt: skip
    positions = np.array(
        [float(np.dot(normal, np.asarray(s.ds.ImagePositionPatient, dtype=float))) for s in slices]
    )
    order = np.argsort(positions, kind="stable")
    return [slices[i] for i in order], positions[order], row_cos, col_cos


def _repeated_frames(slices: list[_Slice], positions: np.ndarray) -> None:
    """Refuse a multi-frame file whose frames repeat positions: several time points, echoes or
    stacks in one file, which one (D, H, W) volume cannot hold."""
    frames = [s for s in slices if s.frame is not None]
    distinct = len(np.unique(np.round(positions, 4)))
    if frames and distinct < len(positions):
        raise DataError(
            frames[0].file,
            f"{len(positions)} frames lie at {distinct} positions "
            "(time points, echoes or several stacks in one file); only one volume per series "
            "is supported: split it (e.g. with dcm2niix)",
        )


def _pixel_spacing(file: str | Path, ds: pydicom.Dataset) -> tuple[float, float]:
    """(row spacing, column spacing) in mm: the distance between rows, then columns."""
    try:
        row, col = (float(v) for v in ds.PixelSpacing)
    except (AttributeError, TypeError, ValueError):
        value = ds.get("PixelSpacing")
        raise DataError(file, f"needs PixelSpacing (2 numbers in mm), got {value!r}") from None
    if not (row > 0 and col > 0):
        raise DataError(file, f"PixelSpacing must be positive, got {[row, col]}")
    return row, col


def _check_spacing(folder: Path, positions: np.ndarray, thickness: float) -> float:
    """The distance between slices; for a single slice its thickness (1 mm when unset)."""
    if len(positions) < 2:
        return thickness or 1.0
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
        folder: Folder with one file per slice (any file names), or with an enhanced
            multi-frame file holding the series; or such a file itself.
        series_uid: Which SeriesInstanceUID to read when the folder holds several.

    Returns:
        ``(D, H, W)`` float32 array with rescale applied, and its geometry.

    Raises:
        DataError: No slices, several series without ``series_uid``, inconsistent orientation,
            duplicate or missing slices, frames that repeat positions, unreadable pixel data.
    """
    folder = Path(folder)
    if not folder.exists():
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
    if folder.is_file() and all(s.frame is None for s in series[uid]):
        raise DataError(folder, "a single-slice DICOM file is one plane of a series: give the "
                                f"series folder ({folder.parent}) instead")  # fmt: skip
    slices, positions, row_cos, col_cos = _ordered_slices(folder, series[uid])
    _repeated_frames(slices, positions)
    first = slices[0].ds
    thickness = float(first.get("SliceThickness", 0) or 0)
    slice_step = _check_spacing(folder, positions, thickness)

    planes, decoded = [], {}  # decoded: each multi-frame file's frames, decoded once
    for s in slices:
        if s.file not in decoded:
            decoded.clear()  # frames of one file sit together unless files interleave
            decoded[s.file] = _decode(s.file)
        pixels = decoded[s.file] if s.frame is None else decoded[s.file][s.frame]
        if pixels.ndim != 2:  # colour (SamplesPerPixel 3) would become a stack of channels
            raise DataError(s.name, f"expected one grey value per pixel, got pixel data of shape "
                                    f"{pixels.shape} (SamplesPerPixel "
                                    f"{pixels.shape[-1]})")  # fmt: skip
        slope = float(s.ds.get("RescaleSlope", 1.0) or 1.0)
        intercept = float(s.ds.get("RescaleIntercept", 0.0) or 0.0)
        planes.append(pixels * np.float32(slope) + np.float32(intercept))
    shapes = {p.shape for p in planes}
    if len(shapes) != 1:
        raise DataError(folder, f"slices have different sizes {sorted(shapes)}")
    volume = np.stack(planes)

    row_spacing, col_spacing = _pixel_spacing(slices[0].name, first)
    if len(slices) > 1:
        first_pos = np.asarray(first.ImagePositionPatient, dtype=float)
        last_pos = np.asarray(slices[-1].ds.ImagePositionPatient, dtype=float)
        slice_vec = (last_pos - first_pos) / (len(slices) - 1)
    else:
        slice_vec = np.cross(row_cos, col_cos) * slice_step
    lps = np.eye(4)
    lps[:3, 0] = slice_vec  # d: next slice
    lps[:3, 1] = col_cos * row_spacing  # h: next row, walks down a column
    lps[:3, 2] = row_cos * col_spacing  # w: next column, walks along a row
    lps[:3, 3] = np.asarray(first.ImagePositionPatient, dtype=float)
    spacing = (slice_step, row_spacing, col_spacing)
    header = {"series_uid": uid, "slice_thickness": thickness}
    geometry = Geometry(spacing, _LPS_TO_RAS @ lps, str(folder), header=header)
    return volume, geometry


def _decode(file: Path) -> np.ndarray:
    """A file's pixels as float32: ``(H, W)`` for a single frame, ``(frames, H, W)`` for more."""
    try:
        return pydicom.dcmread(file).pixel_array.astype(np.float32)
    except Exception as exc:
        raise DataError(file, f"cannot decode pixel data ({_one_line(exc)})") from None
