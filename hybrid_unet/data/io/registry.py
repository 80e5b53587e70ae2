"""Format dispatch: one table from file suffix (or "a folder") to reader."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from hybrid_unet.data.errors import DataError
from hybrid_unet.data.io.dicom import read_dicom_series
from hybrid_unet.data.io.geometry import Geometry, check_finite
from hybrid_unet.data.io.hdf5 import read_hdf5
from hybrid_unet.data.io.nifti import read_nifti
from hybrid_unet.data.io.numpy_io import read_npy, read_npz

Reader = Callable[..., tuple[np.ndarray, Geometry]]

# Image readers by suffix; a folder is a DICOM series. Longest suffixes are tried first so
# that ".nii.gz" wins over ".gz".
IMAGE_READERS: dict[str, Reader] = {
    ".nii.gz": read_nifti,
    ".nii": read_nifti,
    ".h5": read_hdf5,
    ".hdf5": read_hdf5,
    ".npy": read_npy,
    ".npz": read_npz,
    "/": read_dicom_series,
}
# Label readers differ only where one file holds both arrays.
LABEL_READERS: dict[str, Reader] = {
    **IMAGE_READERS,
    ".h5": partial(read_hdf5, dataset="label"),
    ".hdf5": partial(read_hdf5, dataset="label"),
    ".npz": partial(read_npz, key="label"),
}


def known_suffix(name: str) -> str | None:
    """The image format suffix ``name`` ends with, in any case (``.nii.gz`` before ``.nii``),
    as ``name`` spells it; None for none."""
    for suffix in sorted(IMAGE_READERS, key=len, reverse=True):
        if suffix != "/" and name.lower().endswith(suffix):
            return name[-len(suffix) :]
    return None


def _format(path: Path) -> str:
    if path.is_dir() or path.name.lower().endswith(".dcm"):  # a series, or one file of it
        return "/"
    if suffix := known_suffix(path.name):
        return suffix.lower()
    known = ", ".join(s for s in IMAGE_READERS if s != "/")
    raise DataError(path, f"unknown image format (known: {known}, or a DICOM folder or .dcm)")


def reader_for(path: str | Path, label: bool = False) -> Reader:
    """The reader function that :func:`read_image` / :func:`read_label` would use for ``path``."""
    return (LABEL_READERS if label else IMAGE_READERS)[_format(Path(path))]


def read_image(path: str | Path, **kwargs: Any) -> tuple[np.ndarray, Geometry]:
    """Read any supported image as ``(C, D, H, W)`` float32 plus its geometry.

    Args:
        path: NIfTI file, DICOM series folder, HDF5 file (with ``key=`` the case group),
            ``.npy`` or ``.npz`` file.
        **kwargs: Passed to the format's reader (``key``, ``series_uid``, ``spacing``).

    Raises:
        DataError: Unreadable, empty or truncated file, wrong rank, NaN or Inf voxels.
    """
    path = Path(path)
    array, geometry = reader_for(path)(path, **kwargs)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.size == 0:
        raise DataError(geometry.source or path, f"expected (C,)D,H,W image, got {array.shape}")
    _check_real(array, geometry.source or path, "image")
    array = array.astype(np.float32, copy=False)
    check_finite(array, geometry.source or path)
    return array, geometry


def _check_real(array: np.ndarray, where: object, what: str) -> None:
    """Refuse dtypes that are no real numbers: strings, records, complex values (a cast to
    float would drop the imaginary part silently)."""
    if not np.issubdtype(array.dtype, np.number) and array.dtype != np.bool_:
        raise DataError(where, f"non-numeric {what} dtype {array.dtype}")
    if np.issubdtype(array.dtype, np.complexfloating):
        raise DataError(where, f"complex-valued {what} (dtype {array.dtype}): store a real part "
                               "or magnitude")  # fmt: skip


def read_label(path: str | Path, **kwargs: Any) -> tuple[np.ndarray, Geometry]:
    """Read a label map as ``(D, H, W)`` uint8 plus its geometry.

    Raises:
        DataError: Unreadable file, not 3D, non-integer or negative values, more than 255.
    """
    path = Path(path)
    array, geometry = reader_for(path, label=True)(path, **kwargs)
    where = geometry.source or path
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3 or array.size == 0:
        raise DataError(where, f"expected a (D, H, W) label map, got shape {array.shape}")
    _check_real(array, where, "label map")
    if np.issubdtype(array.dtype, np.floating):
        check_finite(array, where)
        fractional = np.unique(array[array != np.round(array)])
        if fractional.size:
            shown = ", ".join(f"{v:g}" for v in fractional[:3])
            raise DataError(
                where,
                f"label map holds non-integer values ({shown}{', ...' * (fractional.size > 3)}); "
                "labels must be whole numbers",
            )
    if array.min() < 0 or array.max() > 255:
        raise DataError(where, f"label values must lie in 0..255, got {array.min()}..{array.max()}")
    return array.astype(np.uint8, copy=False), geometry
