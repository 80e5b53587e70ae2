"""What a clinician reads off a mask: each structure's volume in mL and its component count."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from hybrid_unet.inference.postprocessing import components


def structure_volumes(
    label: np.ndarray,
    spacing: Sequence[float],
    class_names: Mapping[int, str],
    connectivity: int = 3,
) -> dict[str, float | int]:
    """Per foreground class ``<name>_ml`` (voxels x voxel volume / 1000) and ``<name>_components``.

    Args:
        label: ``(D, H, W)`` label map on the scan's own grid.
        spacing: Voxel size in mm along ``(D, H, W)``.
        class_names: Class value -> name; class 0 (background) is skipped.
        connectivity: Neighbourhood of a component (3: 26-connected, as post-processing uses).
    """
    voxel_ml = math.prod(float(s) for s in spacing) / 1000.0
    counts = np.bincount(label.ravel(), minlength=max(class_names) + 1)
    row: dict[str, float | int] = {}
    for c, name in sorted(class_names.items()):
        if c == 0:
            continue
        row[f"{name}_ml"] = round(float(counts[c]) * voxel_ml, 6)
        row[f"{name}_components"] = components(label == c, connectivity)[1] if counts[c] else 0
    return row
