"""Deterministic k-fold splits, saved once to ``splits.json`` and reused afterwards."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from hybrid_unet.atomic import atomic_write_text


def kfold_splits(
    names: list[str], num_folds: int = 5, seed: int = 12345
) -> list[dict[str, list[str]]]:
    """Split case names into ``num_folds`` train/val folds.

    The result depends only on the sorted names, ``num_folds`` and ``seed``.

    Returns:
        One ``{"train": [...], "val": [...]}`` dict per fold; every case is in exactly one
        validation set.
    """
    if num_folds < 2:
        raise ValueError(f"num_folds must be at least 2, got {num_folds}")
    if len(names) < num_folds:
        raise ValueError(f"cannot make {num_folds} folds from {len(names)} cases")
    ordered = sorted(names)
    perm = np.random.default_rng(seed).permutation(len(ordered))
    folds = np.array_split(perm, num_folds)
    splits = []
    for k in range(num_folds):
        val = sorted(ordered[i] for i in folds[k])
        val_set = set(val)
        splits.append({"train": [n for n in ordered if n not in val_set], "val": val})
    return splits


def load_or_create_splits(
    path: str | Path, names: list[str], num_folds: int = 5, seed: int = 12345
) -> list[dict[str, list[str]]]:
    """Read ``splits.json`` at ``path`` if it exists and covers ``names``, else write it.

    An existing file is kept as the source of truth so that folds never move under a user; it
    is rewritten only when the set of cases changed.
    """
    path = Path(path)
    if path.exists():
        splits = json.loads(path.read_text())
        known = set(splits[0]["train"]) | set(splits[0]["val"])
        if known == set(names) and len(splits) == num_folds:
            return splits
    splits = kfold_splits(names, num_folds, seed)
    # Every torchrun rank writes the same splits at once: each through its own temporary.
    atomic_write_text(path, json.dumps(splits, indent=1))
    return splits


def fold_validation_cases(run_dir: str | Path, fold: int) -> list[str] | None:
    """The validation cases of ``fold`` in a run dir's ``splits.json``; None without one."""
    path = Path(run_dir) / "splits.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text())[int(fold)]["val"]
