"""Crop, resample and normalise each case once, cached as uncompressed ``.npy`` files.

Cache layout (``cache_dir/<plan.preprocessing_hash()>/``)::

    plan.json
    <case>_image.npy     (C, D, H, W) float32, normalised, at the plan's spacing
    <case>_label.npy     (D, H, W) uint8
    <case>.json          geometry and crop box; written last, so it marks a finished case

Every file is written to a temporary name and renamed into place, so an interrupted run leaves
no half file under a trusted name; a case without its ``.json`` is simply redone.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from hybrid_unet.atomic import atomic_path, atomic_write_text
from hybrid_unet.data.case import Case
from hybrid_unet.data.errors import DataError
from hybrid_unet.data.io import read_image, read_label
from hybrid_unet.data.io.geometry import Geometry
from hybrid_unet.data.layouts import CaseRecord
from hybrid_unet.data.validation import channel_problems

ANISOTROPY_RATIO = 3.0  # an axis this much coarser than the finest is a thick-slice axis


def coarse_axis(spacing) -> int | None:
    """The thick-slice axis: the coarsest, if over ``ANISOTROPY_RATIO`` x the finest."""
    spacing = np.asarray(spacing, dtype=float)
    return int(np.argmax(spacing)) if spacing.max() > ANISOTROPY_RATIO * spacing.min() else None


if TYPE_CHECKING:
    from hybrid_unet.data.planning import Plan


def read_case(record: CaseRecord) -> tuple[np.ndarray, np.ndarray | None, Geometry]:
    """Image ``(C, D, H, W)`` float32 (channel files stacked), label ``(D, H, W)`` and geometry.

    Raises:
        DataError: A further channel file's shape or grid differs from the first file's.
    """
    kwargs = {"key": record.key} if record.key else {}
    arrays, geometry = [], None
    for path in record.images:
        image, geo = read_image(path, **kwargs)
        if geometry is not None and (
            problems := channel_problems(arrays[0].shape[1:], geometry, image.shape[1:], geo)
        ):
            raise DataError(path, f"{problems[0]} ({record.images[0].name})")
        arrays.append(image)
        geometry = geometry or geo
    image = np.concatenate(arrays) if len(arrays) > 1 else arrays[0]
    label = read_label(record.label, **kwargs)[0] if record.label else None
    return image, label, geometry


def crop_to_nonzero(
    image: np.ndarray, label: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None, list[list[int]]]:
    """Crop to the bounding box of voxels that are nonzero in any channel (or labelled).

    Returns:
        Cropped image, cropped label and the box ``[[d0, d1], [h0, h1], [w0, w1]]``.
    """
    mask = (image != 0).any(axis=0)
    if label is not None:
        mask |= label > 0
    if not mask.any():
        box = [[0, s] for s in image.shape[1:]]
    else:
        box = []
        for axis in range(3):
            other = tuple(a for a in range(3) if a != axis)
            hits = np.flatnonzero(mask.any(axis=other))
            box.append([int(hits[0]), int(hits[-1]) + 1])
    sl = tuple(slice(a, b) for a, b in box)
    return image[(slice(None), *sl)], None if label is None else label[sl], box


def resampled_shape(shape, spacing, target) -> tuple[int, int, int]:
    """Shape that covers the same extent at the target spacing."""
    return tuple(max(1, round(n * s / t)) for n, s, t in zip(shape, spacing, target, strict=True))


def resample_image(
    image: np.ndarray, new_shape: tuple[int, ...], order: int = 3, coarse_axis: int | None = None
) -> np.ndarray:
    """Spline-resample each channel of ``(C, D, H, W)`` to ``new_shape``.

    With ``coarse_axis`` (thick-slice scans), that axis is interpolated linearly in a second
    pass: a cubic spline across 5 mm slices rings at edges.
    """
    if tuple(image.shape[1:]) == tuple(new_shape):
        return image
    factors = [n / o for n, o in zip(new_shape, image.shape[1:], strict=True)]
    first = list(factors)
    if coarse_axis is not None:
        first[coarse_axis] = 1.0
    out = []
    for channel in image:
        channel = ndimage.zoom(channel, first, order=order, mode="nearest", grid_mode=True)
        if coarse_axis is not None and factors[coarse_axis] != 1.0:
            second = [1.0, 1.0, 1.0]
            second[coarse_axis] = factors[coarse_axis]
            channel = ndimage.zoom(channel, second, order=1, mode="nearest", grid_mode=True)
        out.append(channel)
    return np.stack(out).astype(np.float32)


def resample_label(label: np.ndarray, new_shape: tuple[int, ...]) -> np.ndarray:
    """Resample a label map by linear interpolation of each class's one-hot mask, then argmax.

    Smoother than nearest neighbour on upsampling and never invents a class.
    """
    if tuple(label.shape) == tuple(new_shape):
        return label
    factors = [n / o for n, o in zip(new_shape, label.shape, strict=True)]
    classes = np.unique(label)
    best = np.full(new_shape, -1.0, np.float32)
    out = np.zeros(new_shape, np.uint8)
    for value in classes:
        mask = ndimage.zoom(
            (label == value).astype(np.float32), factors, order=1, mode="nearest", grid_mode=True
        )
        better = mask > best
        out[better], best[better] = value, mask[better]
    return out


def normalize(image: np.ndarray, plan: Plan) -> np.ndarray:
    """Apply the plan's per-channel scheme: ``ct`` (clip, dataset z-score) or ``zscore``."""
    out = np.empty_like(image, dtype=np.float32)
    for c, (scheme, props) in enumerate(
        zip(plan.normalization, plan.intensity_properties, strict=True)
    ):
        x = image[c].astype(np.float32)
        if scheme == "ct":
            x = np.clip(x, props["percentile_00_5"], props["percentile_99_5"])
            mean, std = props["mean"], props["std"]
        else:
            mean, std = float(x.mean()), float(x.std())
        out[c] = (x - mean) / max(std, 1e-8)
    return out


def axis_order(affine: np.ndarray) -> list[int] | None:
    """The world axis (0 x, 1 y, 2 z) each array axis (D, H, W) runs closest to: ``[2, 1, 0]``
    for a NIfTI stored in RAS order, ``[0, 2, 1]`` for a sagittal DICOM series; None when the
    affine names no axis (a degenerate one)."""
    from nibabel.orientations import io_orientation

    ornt = io_orientation(np.asarray(affine))
    return None if np.isnan(ornt).any() else [int(a) for a in ornt[:, 0]]


def to_axis_order(
    image: np.ndarray, label: np.ndarray | None, geometry: Geometry, order: Sequence[int]
) -> tuple[np.ndarray, np.ndarray | None, Geometry, list[int] | None]:
    """Transpose a case so that its array axes follow the world axes in ``order`` (the plan's:
    the training cases' order), as a sagittal or coronal scan must to meet a network trained on
    axial ones. Returns the case, its geometry in the new order and the permutation (new axis
    ``i`` is old axis ``perm[i]``), or None when nothing moved."""
    own = axis_order(geometry.affine)
    if own is None or own == list(order):
        return image, label, geometry, None
    perm = [own.index(int(w)) for w in order]
    affine = np.asarray(geometry.affine, dtype=np.float64).copy()
    affine[:, :3] = affine[:, perm]
    spacing = tuple(geometry.spacing[p] for p in perm)
    geometry = dataclasses.replace(geometry, spacing=spacing, affine=affine)
    image = np.ascontiguousarray(image.transpose(0, *(p + 1 for p in perm)))
    label = np.ascontiguousarray(label.transpose(perm)) if label is not None else None
    return image, label, geometry, perm


def reversed_axes(affine: np.ndarray) -> list[int]:
    """The array axes (0, 1, 2 = D, H, W) that run against the world axis they follow: those a
    RAS-stored NIfTI runs along (DICOM's LPS reverses two, a flipped axis one)."""
    from nibabel.orientations import io_orientation

    return [int(a) for a in np.flatnonzero(io_orientation(np.asarray(affine))[:, 1] < 0)]


def _to_scan_layout(array: np.ndarray, properties: dict, first_spatial: int) -> np.ndarray:
    """Undo the flips, then the transposition, of :func:`prepare_case`."""
    axes = [first_spatial + a for a in properties.get("flipped_axes") or []]
    array = np.ascontiguousarray(np.flip(array, axes)) if axes else array
    if perm := properties.get("transposed_axes"):
        back = [first_spatial + int(a) for a in np.argsort(perm)]
        array = np.ascontiguousarray(array.transpose(*range(first_spatial), *back))
    return array


def revert_preprocessing(label: np.ndarray, properties: dict) -> np.ndarray:
    """Map a ``(D, H, W)`` label predicted on a preprocessed case back onto the original scan.

    Undoes the resampling (one-hot linear) and the crop, using ``Case.properties``; the result
    has the original shape and, with ``Case.affine``, can be written by
    :func:`hybrid_unet.data.io.write_nifti`.
    """
    box = properties["crop_box"]
    cropped = resample_label(np.asarray(label), tuple(b - a for a, b in box))
    out = np.zeros(properties["original_shape"], dtype=cropped.dtype)
    out[tuple(slice(a, b) for a, b in box)] = cropped
    return _to_scan_layout(out, properties, 0)


def revert_image(
    array: np.ndarray, properties: dict, fill: float | list[float] = 0.0
) -> np.ndarray:
    """Map a continuous ``(C, D, H, W)`` map (probabilities, uncertainty) back onto the scan.

    Linear resampling to the crop box, then ``fill`` (per channel, or one value) outside it:
    for class probabilities ``[1, 0, ...]`` (background where nothing was predicted).
    """
    box = properties["crop_box"]
    cropped = resample_image(np.asarray(array, np.float32), tuple(b - a for a, b in box), order=1)
    out = np.empty((array.shape[0], *properties["original_shape"]), np.float32)
    out[:] = np.asarray(fill, np.float32).reshape(-1, 1, 1, 1)
    out[(slice(None), *(slice(a, b) for a, b in box))] = cropped
    return _to_scan_layout(out, properties, 1)


def _atomic_save(path: Path, array: np.ndarray) -> None:
    with atomic_path(path, fsync=True) as tmp:
        np.save(tmp, np.ascontiguousarray(array))


def prepare_case(
    image: np.ndarray, label: np.ndarray | None, geometry: Geometry, plan: Plan
) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """Transpose to the plan's axis order and flip to the RAS directions
    (``plan.canonical_directions``), crop, resample and normalise one case in memory, as
    training and inference both need.

    Returns:
        The image ``(C, D, H, W)`` at the plan's spacing, the label (or ``None``) and the
        properties :func:`revert_preprocessing` needs to map a prediction back.
    """
    stored_affine, perm = np.asarray(geometry.affine).tolist(), None
    if plan.canonical_directions and plan.axis_order:
        image, label, geometry, perm = to_axis_order(image, label, geometry, plan.axis_order)
    original_shape = list(image.shape[1:])  # in the plan's axis order, as the rest below
    flips = reversed_axes(geometry.affine) if plan.canonical_directions else []
    if flips:  # the shape and spacing stay; the crop box is then in the flipped frame
        image = np.flip(image, [a + 1 for a in flips])
        label = np.flip(label, flips) if label is not None else None
    image, label, box = crop_to_nonzero(image, label)
    new_shape = resampled_shape(image.shape[1:], geometry.spacing, plan.spacing)
    coarse = coarse_axis(geometry.spacing)
    image = normalize(resample_image(image, new_shape, coarse_axis=coarse), plan)
    if label is not None:
        label = resample_label(label, new_shape)
    props = {
        "source": str(geometry.source),
        "original_shape": original_shape,
        "original_spacing": list(geometry.spacing),
        "affine": stored_affine,
        "crop_box": box,
        "flipped_axes": flips,
        "transposed_axes": perm,
        "spacing": list(plan.spacing),
        "has_label": label is not None,
    }
    return image, label, props


def preprocess_case(record: CaseRecord, plan: Plan, out_dir: Path) -> str:
    """Crop, resample, normalise and save one case; returns its name."""
    image, label, props = prepare_case(*read_case(record), plan)
    _atomic_save(out_dir / f"{record.name}_image.npy", image)
    if label is not None:
        _atomic_save(out_dir / f"{record.name}_label.npy", label)
    atomic_write_text(out_dir / f"{record.name}.json", json.dumps(props))
    return record.name


def _job(args: tuple[CaseRecord, Plan, Path]) -> str:
    return preprocess_case(*args)


def preprocess_dataset(
    records: list[CaseRecord], plan: Plan, out_dir: str | Path, num_workers: int = 0
) -> list[str]:
    """Preprocess the cases that are not cached yet; returns the names that were (re)done."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plan.to_json(out_dir / "plan.json")
    todo = [r for r in records if not (out_dir / f"{r.name}.json").is_file()]
    jobs = [(r, plan, out_dir) for r in todo]
    if num_workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(num_workers) as pool:
            return list(pool.map(_job, jobs, chunksize=4))
    return [_job(j) for j in jobs]


def load_preprocessed(name: str, out_dir: str | Path) -> Case:
    """Load a cached case with memory-mapped arrays."""
    out_dir = Path(out_dir)
    meta_path = out_dir / f"{name}.json"
    if not meta_path.is_file():
        raise DataError(meta_path, f"case {name!r} is not preprocessed in this cache")
    props = json.loads(meta_path.read_text())
    image = np.load(out_dir / f"{name}_image.npy", mmap_mode="r")
    label = np.load(out_dir / f"{name}_label.npy", mmap_mode="r") if props["has_label"] else None
    return Case(
        name=name,
        image=image,
        label=label,
        spacing=tuple(props["spacing"]),
        affine=np.asarray(props["affine"]),
        properties=props,
    )
