"""HDF5 datasets: one file, one group per case.

Layout::

    cases.h5
    ├── hippocampus_001/            group, the case name
    │   ├── image   (C, D, H, W) or (D, H, W), any numeric dtype
    │   ├── label   (D, H, W) integer, optional
    │   └── attrs: spacing = [sd, sh, sw] (mm, required), affine = 4x4 (optional: maps the
    │              (d, h, w, 1) index of 'image' to RAS mm; its column norms are the spacing)
    └── ...
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from hybrid_unet.data.errors import DataError
from hybrid_unet.data.io.geometry import Geometry, brief, spacing_from_affine


def _open(path: Path) -> h5py.File:
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        return h5py.File(path, "r")
    except Exception as exc:
        raise DataError(path, f"cannot open HDF5 file ({type(exc).__name__}: {exc})") from None


def list_hdf5_cases(path: str | Path) -> list[str]:
    """Names of the case groups in an HDF5 file, sorted."""
    path = Path(path)
    with _open(path) as f:
        return sorted(k for k in f if isinstance(f[k], h5py.Group))


def read_hdf5(
    path: str | Path, key: str | None = None, dataset: str = "image"
) -> tuple[np.ndarray, Geometry]:
    """Read dataset ``dataset`` (``image`` or ``label``) of case group ``key``.

    Raises:
        DataError: Missing file, group, dataset or ``spacing`` attribute, or unreadable data.
    """
    path = Path(path)
    where = f"{path}::{key}"
    if key is None:
        raise DataError(path, "an HDF5 file holds many cases: pass key=<case name>")
    with _open(path) as f:
        if key not in f:
            raise DataError(where, f"no case group (file has {len(f)} groups)")
        group = f[key]
        if dataset not in group:
            raise DataError(where, f"no dataset {dataset!r} (has {sorted(group)})")
        try:
            array = group[dataset][()]
        except Exception as exc:
            raise DataError(where, f"cannot read {dataset!r} ({exc})") from None
        if "spacing" not in group.attrs:
            raise DataError(where, "missing attribute 'spacing' = [sd, sh, sw]")
        geometry = Geometry.from_spacing(group.attrs["spacing"], where)
        if "affine" in group.attrs:
            geometry.affine = _affine(group.attrs["affine"], geometry.spacing, where)
    return array, geometry


def _affine(value: object, spacing: tuple[float, float, float], where: str) -> np.ndarray:
    """The ``affine`` attribute as a 4x4 matrix whose column norms are the ``spacing``
    attribute: the two describe one grid, and a disagreement would resample by one and write
    the mask with the other."""
    try:
        affine = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        affine = None
    if affine is None or affine.shape != (4, 4) or not np.isfinite(affine).all():
        raise DataError(
            where, f"attribute 'affine' must be a finite 4x4 matrix, got {brief(value)}"
        )
    if not np.allclose(spacing_from_affine(affine), spacing, rtol=1e-3):
        raise DataError(
            where,
            f"attribute 'affine' has voxel sizes {spacing_from_affine(affine)} along (D, H, W) "
            f"but 'spacing' is {spacing}; the affine maps the (d, h, w) index of 'image'",
        )
    return affine


def write_hdf5_case(
    path: str | Path,
    name: str,
    image: np.ndarray,
    label: np.ndarray | None,
    spacing: tuple[float, float, float],
) -> None:
    """Append (or replace) one case group in the layout read by :func:`read_hdf5`."""
    with h5py.File(path, "a") as f:
        if name in f:
            del f[name]
        group = f.create_group(name)
        group.create_dataset("image", data=image)
        if label is not None:
            group.create_dataset("label", data=label)
        group.attrs["spacing"] = np.asarray(spacing, dtype=np.float64)
