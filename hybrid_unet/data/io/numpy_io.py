"""NumPy volumes: ``.npy`` with a spacing sidecar or argument, ``.npz`` with named arrays.

* ``case.npy``: the array, ``(D, H, W)`` or ``(C, D, H, W)``; spacing comes from the
  ``spacing=`` argument or from a sidecar ``case.json`` holding ``{"spacing": [sd, sh, sw]}``
  (1 mm when neither is given, marked ``Geometry.assumed``: a label map without a sidecar
  lies on its image's grid).
* ``case.npz``: keys ``image`` (``(C,)D,H,W``), optional ``label`` (``D,H,W``) and optional
  ``spacing`` (3 numbers, ``(D, H, W)`` order).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from hybrid_unet.data.errors import DataError
from hybrid_unet.data.io.geometry import Geometry, as_spacing


def _load(path: Path, **kwargs):
    try:
        return np.load(path, **kwargs)
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except Exception as exc:
        raise DataError(path, f"cannot read NumPy file ({type(exc).__name__}: {exc})") from None


def read_npy(
    path: str | Path, spacing: tuple[float, float, float] | None = None, key: str | None = None
) -> tuple[np.ndarray, Geometry]:
    """Read a ``.npy`` array; ``key`` is accepted for a uniform signature and must be None."""
    path = Path(path)
    if key is not None:
        raise DataError(path, f".npy files hold one array; key={key!r} makes no sense")
    array = _load(path)
    sidecar = path.with_suffix(".json")
    if spacing is None and sidecar.is_file():
        try:
            spacing = json.loads(sidecar.read_text())["spacing"]
        except Exception as exc:
            raise DataError(sidecar, f"sidecar needs a 'spacing' list ({exc})") from None
        spacing = as_spacing(spacing, sidecar)
    return array, _geometry(spacing, path)


def read_npz(
    path: str | Path, key: str = "image", spacing: tuple[float, float, float] | None = None
) -> tuple[np.ndarray, Geometry]:
    """Read array ``key`` (``image`` or ``label``) from a ``.npz`` file."""
    path = Path(path)
    with _load(path) as npz:
        if key not in npz.files:
            raise DataError(path, f"no array {key!r} (has {sorted(npz.files)})")
        array = npz[key]
        if spacing is None and "spacing" in npz.files:
            spacing = npz["spacing"]
    return array, _geometry(spacing, path)


def _geometry(spacing: object, path: Path) -> Geometry:
    """The given spacing, else 1 mm marked as assumed (a label then takes its image's grid)."""
    if spacing is None:
        return dataclasses.replace(Geometry.from_spacing((1.0, 1.0, 1.0), path), assumed=True)
    return Geometry.from_spacing(spacing, path)


def write_npz(
    path: str | Path,
    image: np.ndarray,
    label: np.ndarray | None = None,
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> None:
    """Write a case in the ``.npz`` layout read by :func:`read_npz`."""
    arrays = {"image": image, "spacing": np.asarray(spacing, dtype=np.float64)}
    if label is not None:
        arrays["label"] = label
    np.savez(path, **arrays)
