"""Voxel geometry shared by every reader, and the one axis convention of the project.

Axis convention: arrays are ``(D, H, W)`` (channels first when present: ``(C, D, H, W)``), where
``D`` is the slowest, slice axis. A NIfTI volume stored by nibabel as ``(x, y, z)`` is transposed
to ``(z, y, x)``; a DICOM series stacks slices along ``D`` with rows along ``H`` and columns
along ``W``. ``spacing`` is in mm in the same ``(D, H, W)`` order, and ``affine`` maps a
homogeneous index ``(d, h, w, 1)`` of *our* array to world coordinates in RAS+ mm (the NIfTI /
nibabel world; DICOM's LPS positions are flipped to RAS).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hybrid_unet.data.errors import DataError

# Swaps index order (d, h, w) <-> (i, j, k) = (w, h, d); it is its own inverse.
DHW_TO_XYZ = np.array(
    [[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]],
    dtype=np.float64,
)


@dataclass
class Geometry:
    """Where the voxels of an array sit in the world.

    Attributes:
        spacing: Voxel size in mm along ``(D, H, W)``.
        affine: 4x4 map from index ``(d, h, w, 1)`` to RAS+ world mm.
        source: The file or folder the array came from.
        header: Reader-specific header kept for writing a result back (e.g. a nibabel header).
        assumed: The file stores no geometry (a ``.npy`` without sidecar, an ``.npz``
            without ``spacing``): 1 mm and origin 0 were assumed.
    """

    spacing: tuple[float, float, float]
    affine: np.ndarray
    source: str = ""
    header: Any = field(default=None, repr=False)
    assumed: bool = False

    @classmethod
    def from_spacing(cls, spacing: object, source: str | Path = "") -> Geometry:
        """Axis-aligned geometry with the given ``(D, H, W)`` spacing and origin 0.

        ``spacing`` comes from user files (a sidecar, an HDF5 attribute): anything but 3
        positive finite numbers is refused naming ``source``.
        """
        spacing = as_spacing(spacing, source)
        # A (d, h, w) index walks along z, y, x of the RAS world.
        affine = np.diag([*spacing[::-1], 1.0]) @ DHW_TO_XYZ
        return cls(spacing, affine, str(source))


def as_spacing(value: object, source: str | Path = "") -> tuple[float, float, float]:
    """``value`` as 3 positive finite floats, or a :class:`DataError` naming ``source``."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        array = None
    if array is None or array.shape != (3,) or not (np.isfinite(array).all() and array.min() > 0):
        raise DataError(source, f"spacing must be 3 positive numbers, got {brief(value)}")
    return tuple(float(s) for s in array)


def brief(value: object, width: int = 80) -> str:
    """A value read from a user's file on one short line (arrays as lists, bytes decoded)."""
    if isinstance(value, np.ndarray | np.generic):
        value = value.tolist()
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    text = " ".join(repr(value).split())
    return text if len(text) <= width else text[: width - 3] + "..."


def spacing_from_affine(affine: np.ndarray) -> tuple[float, float, float]:
    """Column norms of the 3x3 part: the voxel size along each array axis."""
    norms = np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)
    return tuple(float(n) for n in norms)


def check_finite(array: np.ndarray, source: str | Path) -> None:
    """Raise a :class:`DataError` naming ``source`` when ``array`` holds NaN or Inf."""
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        bad = int(array.size - np.isfinite(array).sum())
        raise DataError(source, f"{bad} voxel(s) are NaN or Inf")
