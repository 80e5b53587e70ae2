"""NIfTI reading and writing with nibabel; arrays are transposed to (D, H, W) = (z, y, x)."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np

from hybrid_unet.data.errors import DataError
from hybrid_unet.data.io.geometry import DHW_TO_XYZ, Geometry, spacing_from_affine


def read_nifti(path: str | Path) -> tuple[np.ndarray, Geometry]:
    """Read a 3D or 4D NIfTI file (or 5D with one time point: ITK's multi-component layout).

    Args:
        path: ``.nii`` or ``.nii.gz`` file.

    Returns:
        The array in its stored dtype, ``(D, H, W)`` for 3D files or ``(C, D, H, W)`` for 4D
        files (nibabel's ``(x, y, z, c)``) and 5D ones (``(x, y, z, 1, c)``), and its geometry.

    Raises:
        DataError: The file is missing, empty, truncated, corrupt (a gzip checksum that does
            not match) or not 3D/4D (nor 5D with one time point).
    """
    path = Path(path)
    try:
        img = _load(path)
        data = np.asanyarray(img.dataobj)
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except Exception as exc:  # nibabel, gzip and zlib raise many unrelated types
        said = " ".join(str(exc).split())  # nibabel's messages may span lines
        raise DataError(path, f"cannot read NIfTI: damaged, truncated or not a NIfTI file "
                              f"({type(exc).__name__}: {said})") from None  # fmt: skip
    stored = data.shape
    if data.ndim == 5 and data.shape[3] == 1:  # ITK's vector image: (x, y, z, t=1, c)
        data = data[:, :, :, 0, :]
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim == 3:
        data = data.transpose(2, 1, 0)
    elif data.ndim == 4:
        data = data.transpose(3, 2, 1, 0)
    else:
        raise DataError(path, f"expected a 3D or 4D volume (or 5D with one time point), got "
                              f"shape {stored}")  # fmt: skip
    affine = np.asarray(img.affine, dtype=np.float64) @ DHW_TO_XYZ
    spacing = spacing_from_affine(affine)
    volume = float(np.prod(spacing))  # |det| equals this when the axes are orthogonal
    if not (np.isfinite(affine).all() and volume > 0) or (
        abs(np.linalg.det(affine[:3, :3])) < 1e-6 * volume
    ):
        # A zero voxel size (srow or pixdim 0) would be resampled to a single slice.
        raise DataError(path, f"header affine is singular or not finite (voxel sizes {spacing} "
                              "along D, H, W): fix the sform/qform")  # fmt: skip
    geometry = Geometry(spacing, affine, str(path), img.header.copy())
    return np.ascontiguousarray(data), geometry


def _load(path: Path) -> nib.Nifti1Image | nib.Nifti2Image:
    """``nib.load``, except that a gzipped file is decompressed whole first: nibabel stops
    reading at the end of the voxel data, before the gzip trailer, so a flipped bit inside the
    stream would give wrong voxels silently; ``gzip.decompress`` checks the CRC and length."""
    if not path.name.lower().endswith(".gz"):
        return nib.load(str(path))
    raw = gzip.decompress(path.read_bytes())
    # sizeof_hdr, the first 4 bytes: 348 for NIfTI-1, 540 for NIfTI-2 (either byte order).
    nifti2 = int.from_bytes(raw[:4], "little") == 540 or int.from_bytes(raw[:4], "big") == 540
    return (nib.Nifti2Image if nifti2 else nib.Nifti1Image).from_bytes(raw)


def write_nifti(path: str | Path, array: np.ndarray, geometry: Geometry) -> None:
    """Write a ``(D, H, W)`` array (e.g. a predicted label map) with the geometry of its source.

    The source header is reused when the geometry came from a NIfTI file: the array lies on
    the scan's own grid, so its qform and sform are copied unchanged, codes included (a viewer
    may use either, and they may differ); the data type follows ``array``.

    Args:
        path: Output ``.nii`` / ``.nii.gz`` path; parent folders are created.
        array: ``(D, H, W)`` array in this project's axis order.
        geometry: Geometry of the scan the array belongs to.
    """
    if array.ndim != 3:
        raise ValueError(f"write_nifti expects a (D, H, W) array, got shape {array.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    affine = np.asarray(geometry.affine, dtype=np.float64) @ DHW_TO_XYZ
    header = geometry.header.copy() if isinstance(geometry.header, nib.Nifti1Header) else None
    data = np.ascontiguousarray(array.transpose(2, 1, 0))
    if header is not None and np.allclose(header.get_best_affine(), affine, rtol=0, atol=1e-6):
        # The source's own grid: affine None keeps its qform and sform and their codes as they
        # are (an sform shifted from the qform stays so; code 0 stays 0).
        img = nib.Nifti1Image(data, None, header)
    else:
        img = nib.Nifti1Image(data, affine, header)
        if header is not None:
            # Another grid: keep the codes, both forms carry exactly the affine we were given.
            img.set_qform(affine, code=int(header["qform_code"]) or 1)
            img.set_sform(affine, code=int(header["sform_code"]) or 1)
    img.set_data_dtype(array.dtype)
    # What describes the scan's intensities must not stay on the map: scaling, a display
    # window (cal_max 1000 hides labels 1, 2 in viewers that use it), a vector intent.
    img.header.set_slope_inter(1.0, 0.0)
    img.header["cal_min"] = img.header["cal_max"] = 0  # 0, 0: no display range set
    img.header.set_intent("none")
    nib.save(img, str(path))
