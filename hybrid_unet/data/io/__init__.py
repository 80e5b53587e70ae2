"""Readers for NIfTI, DICOM series, HDF5 and NumPy, behind one ``read_image`` / ``read_label``.

Every reader returns ``(array, Geometry)`` in the ``(D, H, W)`` axis convention documented in
:mod:`hybrid_unet.data.io.geometry`.
"""

from __future__ import annotations

from hybrid_unet.data.io.dicom import list_dicom_series, read_dicom_series
from hybrid_unet.data.io.geometry import Geometry
from hybrid_unet.data.io.hdf5 import list_hdf5_cases, read_hdf5, write_hdf5_case
from hybrid_unet.data.io.nifti import read_nifti, write_nifti
from hybrid_unet.data.io.numpy_io import read_npy, read_npz, write_npz
from hybrid_unet.data.io.registry import read_image, read_label, reader_for

__all__ = [
    "Geometry",
    "list_dicom_series",
    "list_hdf5_cases",
    "read_dicom_series",
    "read_hdf5",
    "read_image",
    "read_label",
    "read_nifti",
    "read_npy",
    "read_npz",
    "reader_for",
    "write_hdf5_case",
    "write_nifti",
    "write_npz",
]
