"""Largest connected component per class, applied only where validation showed it helps.

As nnU-Net does, the decision is made once from a run's validation predictions and stored with
the model (``postprocessing.json`` in the run dir), and prediction applies it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

POSTPROCESSING_FILE = "postprocessing.json"


def components(mask: np.ndarray, connectivity: int = 3) -> tuple[np.ndarray, int]:
    """Connected components of a binary ``(D, H, W)`` mask: ``(labels, count)``.

    ``connectivity`` 1 joins voxels sharing a face, 2 an edge, 3 a corner (26-neighbourhood).
    """
    structure = ndimage.generate_binary_structure(3, connectivity)
    labels, count = ndimage.label(mask, structure=structure)
    return labels, int(count)


def keep_largest_component(
    label: np.ndarray, classes: Iterable[int], connectivity: int = 3
) -> np.ndarray:
    """``label`` with every component but the largest of each listed class set to background."""
    out = label.copy()
    for c in classes:
        labels, count = components(label == c, connectivity)
        if count > 1:
            sizes = np.bincount(labels.ravel())
            sizes[0] = 0
            out[(labels != int(np.argmax(sizes))) & (labels > 0)] = 0
    return out


def decide_largest_component(
    pairs: Iterable[tuple[np.ndarray, np.ndarray]], num_classes: int, connectivity: int = 3
) -> dict:
    """Which classes gain mean Dice from keeping only their largest component.

    Args:
        pairs: ``(prediction, reference)`` label maps of validation cases, predicted without
            post-processing.
        num_classes: ``K``, background included.

    Returns:
        ``{"largest_component": [classes], "dice": {class: {"before": .., "after": ..}}}``;
        a class is listed when its mean Dice over the cases is strictly higher afterwards.
    """
    from hybrid_unet.metrics import dice_per_class

    before: list[list[float]] = []
    after: list[list[float]] = []
    for pred, ref in pairs:
        before.append(dice_per_class(pred, ref, num_classes))
        kept = keep_largest_component(pred, range(1, num_classes), connectivity)
        after.append(dice_per_class(kept, ref, num_classes))
    if not before:
        raise ValueError("no validation cases to decide post-processing from")
    b, a = np.nanmean(np.asarray(before), axis=0), np.nanmean(np.asarray(after), axis=0)
    chosen = [c for c in range(1, num_classes) if a[c - 1] > b[c - 1]]
    dice = {
        str(c): {"before": float(b[c - 1]), "after": float(a[c - 1])} for c in range(1, num_classes)
    }
    return {
        "largest_component": chosen,
        "connectivity": connectivity,
        "cases": len(before),
        "dice": dice,
    }


def postprocessing_path(checkpoint: str | Path) -> Path:
    """Where the decision for a checkpoint lives: its run dir (or beside a bare checkpoint)."""
    path = Path(checkpoint)
    if path.is_dir():
        return path / POSTPROCESSING_FILE
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return run_dir / POSTPROCESSING_FILE


def stored_classes(checkpoints: Sequence[str | Path]) -> list[int]:
    """Classes every checkpoint's stored decision agrees on (none stored: none)."""
    chosen: set[int] | None = None
    for ckpt in checkpoints:
        path = postprocessing_path(ckpt)
        classes = (
            set(json.loads(path.read_text())["largest_component"]) if path.is_file() else set()
        )
        chosen = classes if chosen is None else chosen & classes
    return sorted(chosen or [])
