"""Case source for real datasets on disk (Decathlon, nnU-Net v2 or HDF5 layouts)."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

from hybrid_unet.config.errors import ConfigError
from hybrid_unet.data.case import Case
from hybrid_unet.data.errors import DataError
from hybrid_unet.data.fingerprint import Fingerprint, compute_fingerprint
from hybrid_unet.data.layouts import detect_layout
from hybrid_unet.data.planning import (
    DEFAULT_MEMORY_BUDGET,
    Plan,
    PlanOverrideError,
    plan_experiment,
)
from hybrid_unet.data.preprocessing import load_preprocessed, preprocess_dataset
from hybrid_unet.data.validation import validate_dataset

log = logging.getLogger(__name__)


def _stamp(path: Path) -> list:
    """Size and modification time of a case file (of each file of a DICOM series folder);
    ``None`` for a missing one, which validation then names."""
    if path.is_dir():
        return [[f.name, *_stamp(f)] for f in sorted(path.iterdir()) if f.is_file()]
    try:
        stat = path.stat()
    except OSError:
        return [None]
    return [stat.st_size, stat.st_mtime_ns]


def _plain(value: Any) -> Any:
    """OmegaConf containers to plain Python, leave everything else alone."""
    try:
        from omegaconf import OmegaConf

        if OmegaConf.is_config(value):
            return OmegaConf.to_container(value, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    return value


class DatasetSource:
    """Validate, fingerprint, plan and preprocess a dataset once; then load cached cases.

    Implements the case-source contract of ``docs/architecture.md``. The fingerprint is cached
    in ``cache_dir/<dataset>_<listing hash>/fingerprint.json`` and the preprocessed cases next to
    it in ``<plan.preprocessing_hash()>/``, so a second start reads no source file. Several
    processes (DDP ranks) may start at once: every file is written atomically under a
    per-process temporary name, so the worst case is duplicated work, never a torn file.

    Args:
        root: Dataset folder (Decathlon or nnU-Net v2 ``dataset.json``) or an HDF5 file.
        cache_dir: Where the fingerprint and preprocessed arrays are kept.
        num_classes: ``K`` including background; default: the number of declared labels.
        plan_overrides: Plan fields to force (see :func:`plan_experiment`).
        num_workers: Processes for validation, fingerprinting and preprocessing.
        memory_budget_voxels: Voxels per batch the plan is sized for.
        validate: Check every case before work (skip only for trusted, already cached data).

    Attributes:
        layout: The detected :class:`~hybrid_unet.data.layouts.DatasetLayout`.
        ignore_label: Label value of unannotated voxels (nnU-Net v2's ``ignore``), or None.
        fingerprint: The dataset :class:`~hybrid_unet.data.fingerprint.Fingerprint`.
        plan: The :class:`~hybrid_unet.data.planning.Plan` used for preprocessing.
        dataset_dir: Cache folder of this dataset (fingerprint and one folder per plan).
        preprocessed_dir: Folder holding this plan's cached cases.
    """

    def __init__(
        self,
        root: str | Path,
        cache_dir: str | Path,
        num_classes: int | None = None,
        plan_overrides: dict | None = None,
        num_workers: int = 2,
        memory_budget_voxels: int = DEFAULT_MEMORY_BUDGET,
        validate: bool = True,
    ) -> None:
        self.layout = detect_layout(root)
        self.cache_dir = Path(cache_dir)
        records = self.layout.cases
        label_values = list(self.layout.labels) or None
        num_channels = len(self.layout.modality) or None
        declared = len(self.layout.labels) or None
        self.num_classes = int(num_classes or declared or 0)
        self.ignore_label = self.layout.ignore_label
        if self.num_classes < 2:
            raise DataError(root, "num_classes unknown: declare 'labels' or pass num_classes")
        if label_values is None:
            label_values = list(range(self.num_classes))
        elif max(label_values) >= self.num_classes:
            raise DataError(
                self.layout.meta_file,
                f"declares labels up to {max(label_values)} but data.num_classes="
                f"{self.num_classes}: set data.num_classes={max(label_values) + 1}, or remove "
                "the labels no case uses from the file",
            )
        elif self.num_classes > max(label_values) + 1:  # classes no case can hold
            raise DataError(
                self.layout.meta_file,
                f"declares labels up to {max(label_values)} but data.num_classes="
                f"{self.num_classes}: classes {max(label_values) + 1}..{self.num_classes - 1} "
                f"would score 0 and lower the mean Dice; set data.num_classes="
                f"{max(label_values) + 1}",
            )
        if self.ignore_label is not None:
            if self.ignore_label < self.num_classes:
                raise DataError(self.layout.meta_file, f"label 'ignore' = {self.ignore_label} is "
                                f"one of the data.num_classes={self.num_classes} classes: set "
                                f"data.num_classes={max(label_values) + 1}")  # fmt: skip
            label_values = [*label_values, self.ignore_label]  # a value the labels may hold

        listing = json.dumps([[r.name, *map(str, r.images), str(r.label)] for r in records])
        stamps = json.dumps([_stamp(Path(p)) for r in records for p in (*r.images, r.label)])
        digest = hashlib.sha256((listing + stamps).encode()).hexdigest()[:12]
        # One folder per dataset listing and file state: datasets never share cached arrays,
        # and a file replaced or edited since (a corrected label map, a damaged scan) is
        # validated and preprocessed again rather than read from the old arrays.
        self.dataset_dir = self.cache_dir / f"{Path(root).name.split('.')[0]}_{digest}"
        fp_path = self.dataset_dir / "fingerprint.json"
        start = time.perf_counter()
        validated = False
        cached = Fingerprint.from_json(fp_path) if fp_path.is_file() else None
        if cached is not None and len(cached.axis_orders) == cached.num_cases:
            self.fingerprint = cached
        else:  # none yet, or one saved before the cases' axis orders were measured
            if validate:
                validate_dataset(records, label_values, num_workers, root, num_channels)
                validated = True
            self.fingerprint = compute_fingerprint(
                records, self.layout.modality, num_workers, self.ignore_label
            )
            self.fingerprint.to_json(fp_path)
        try:
            self.plan: Plan = plan_experiment(
                self.fingerprint, memory_budget_voxels, _plain(plan_overrides)
            )
        except PlanOverrideError as exc:  # the CLI prints a ConfigError as its one line
            raise ConfigError([f"config key 'data.source.plan_overrides.{exc.key}': "
                               f"{exc.problem}"]) from None  # fmt: skip
        self.preprocessed_dir = self.dataset_dir / self.plan.preprocessing_hash()
        pending = [r for r in records if not (self.preprocessed_dir / f"{r.name}.json").is_file()]
        if pending and validate and not validated:
            validate_dataset(records, label_values, num_workers, root, num_channels)
        done = preprocess_dataset(records, self.plan, self.preprocessed_dir, num_workers)
        if done:
            log.info(
                "preprocessed %d cases into %s in %.1fs",
                len(done),
                self.preprocessed_dir,
                time.perf_counter() - start,
            )
        self._names = [r.name for r in records]

    @property
    def in_channels(self) -> int:
        return self.plan.in_channels

    def case_names(self) -> list[str]:
        """Names of all labelled cases, sorted."""
        return list(self._names)

    def load(self, name: str) -> Case:
        """The preprocessed case, arrays memory-mapped."""
        return load_preprocessed(name, self.preprocessed_dir)
