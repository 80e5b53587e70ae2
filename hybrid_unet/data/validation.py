"""Check a whole dataset before any work, collect every problem, raise once."""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from hybrid_unet.data.errors import DataError, DatasetValidationError
from hybrid_unet.data.io import read_image, read_label
from hybrid_unet.data.io.geometry import Geometry
from hybrid_unet.data.layouts import CaseRecord

# Geometries of an image and its label may differ by float noise from different writers.
_SPACING_RTOL = 1e-3
_AFFINE_ATOL = 1e-3


# Shapes and spacings are given in array order, which reverses a NIfTI header's x, y, z.
_ORDER = " (D, H, W order: a NIfTI's z, y, x)"


def _where(path: Path, key: str | None) -> str:
    return f"{path}::{key}" if key else str(path)


def geometry_problem(
    what: str, ref: Geometry, other: Geometry, ref_what: str = "image"
) -> str | None:
    """How ``other``'s grid differs from ``ref``'s (e.g. a label's from its image's), up to
    float noise from different writers: the spacing first, then the affine; ``None`` if not."""
    if not np.allclose(ref.spacing, other.spacing, rtol=_SPACING_RTOL):
        return f"{what} spacing {other.spacing} != {ref_what} spacing {ref.spacing}{_ORDER}"
    if not np.allclose(ref.affine, other.affine, atol=_AFFINE_ATOL * max(ref.spacing)):
        return f"{what} affine differs from the {ref_what} affine"
    return None


def channel_problems(
    ref_shape: tuple[int, ...], ref: Geometry, shape: tuple[int, ...], other: Geometry
) -> list[str]:
    """How a further channel file of a case differs from its first: shape, then grid."""
    problems = []
    if shape != ref_shape:
        problems.append(f"channel shape {shape} != first channel {ref_shape}{_ORDER}")
    if grid := geometry_problem("channel", ref, other):
        problems.append(grid)
    return problems


def check_case(record: CaseRecord, label_values: Iterable[int] | None) -> list[str]:
    """Every problem of one case, each a line naming the file; empty when the case is usable."""
    return _inspect(record, label_values)[0]


def _inspect(record: CaseRecord, label_values: Iterable[int] | None) -> tuple[list[str], int]:
    """The case's problems and its channel count (0 when no image could be read)."""
    problems = []
    kwargs = {"key": record.key} if record.key else {}
    for path in [*record.images, *([record.label] if record.label else [])]:
        if not path.exists():
            problems.append(f"{path}: listed in the dataset but missing")
    if problems:
        return problems, 0
    ref_geo, shape, channels = None, None, 0
    for path in record.images:
        try:
            image, geo = read_image(path, **kwargs)
        except DataError as exc:
            problems.append(str(exc))
            continue
        channels += image.shape[0]
        if ref_geo is None:
            ref_geo, shape = geo, image.shape[1:]
            continue
        problems += [f"{path}: {p}" for p in channel_problems(shape, ref_geo, image.shape[1:], geo)]
    if record.label is None or ref_geo is None:
        return problems, channels
    try:
        label, label_geo = read_label(record.label, **kwargs)
    except DataError as exc:
        return [*problems, str(exc)], channels
    where = _where(record.label, record.key)
    if label.shape != shape:
        problems.append(f"{where}: label shape {label.shape} != image shape {shape}{_ORDER}")
    elif label_geo.assumed:
        pass  # a label that stores no geometry (.npy without sidecar) lies on its image's grid
    elif grid := geometry_problem("label", ref_geo, label_geo):
        problems.append(f"{where}: {grid}")
    if label_values is not None:
        undeclared = sorted(set(np.unique(label).tolist()) - set(label_values))
        if undeclared:
            problems.append(
                f"{where}: label values {undeclared} are not declared in dataset.json "
                f"(declared: {sorted(label_values)})"
            )
    return problems, channels


def _check(args: tuple[CaseRecord, list[int] | None]) -> tuple[list[str], int]:
    return _inspect(*args)


def collect_problems(
    records: list[CaseRecord],
    label_values: Iterable[int] | None,
    num_workers: int = 0,
    num_channels: int | None = None,
) -> list[str]:
    """Problems of all cases, in case order, then channel counts that differ between cases or
    from ``num_channels`` (the modalities ``dataset.json`` declares) and duplicate names."""
    values = None if label_values is None else sorted(label_values)
    jobs = [(r, values) for r in records]
    if num_workers > 1 and len(records) > 1:
        with ProcessPoolExecutor(num_workers) as pool:
            per_case = list(pool.map(_check, jobs, chunksize=8))
    else:
        per_case = [_check(j) for j in jobs]
    problems = [p for case, _ in per_case for p in case]
    problems += _channel_problems(records, [c for _, c in per_case], num_channels)
    names = [r.name for r in records]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        problems.append(f"duplicate case names: {dupes}")
    return problems


def _channel_problems(
    records: list[CaseRecord], channels: list[int], expected: int | None
) -> list[str]:
    """One line per case whose channel count is not the expected one (the declared count, else
    the most common), naming its first image file."""
    read = [c for c in channels if c]
    if not read:
        return []
    if expected is None:
        expected = max(set(read), key=read.count)
        reason = f"most cases have {expected}"
    else:
        reason = f"dataset.json declares {expected}"
    return [
        f"{r.images[0]}: {c} image channel{'s' * (c != 1)}, {reason}"
        for r, c in zip(records, channels, strict=True)
        if c and c != expected
    ]


def validate_dataset(
    records: list[CaseRecord],
    label_values: Iterable[int] | None,
    num_workers: int = 0,
    root: str | Path = "dataset",
    num_channels: int | None = None,
) -> None:
    """Check every case and raise once listing all problems.

    Checks: files listed but missing, empty or unreadable files (truncated gzip), NaN/Inf
    voxels, image/label shape, spacing and affine mismatch, channel files that disagree, channel
    counts that differ between cases or from the declared modalities, label values not
    declared in ``dataset.json``, DICOM series gaps.

    Args:
        records: Cases from :func:`hybrid_unet.data.layouts.detect_layout`.
        label_values: Declared class values, or ``None`` to skip that check.
        num_workers: Processes used to read the cases (0 or 1: in this process).
        root: Dataset path used as the heading of the error.
        num_channels: Channels per case the dataset declares (its modalities), if it does.

    Raises:
        DatasetValidationError: One or more problems, one line each.
    """
    if not records:
        raise DatasetValidationError(root, ["no labelled cases found"])
    problems = collect_problems(records, label_values, num_workers, num_channels)
    if problems:
        raise DatasetValidationError(root, problems)
