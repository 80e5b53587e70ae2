"""Automatic experiment planning from a dataset fingerprint (ideas from nnU-Net's planner).

* Target spacing: the median spacing; an axis over ``preprocessing.ANISOTROPY_RATIO`` (3) times
  coarser than the finest uses a low percentile of its spacings instead, so thick-slice scans are not
  blown up to thin slices nor the few thin ones crushed.
* Network topology: pool an axis (stride 2) while its feature map stays at least
  ``min_feature_size`` voxels and its spacing is not much coarser than the finest axis at that
  stage; kernels are 1 along an axis that is still much coarser, else 3.
* Patch: the median case shape at the target spacing rounded up to the network's total stride
  (covering the median case); shrunk along its longest physical axis while two patches do not
  fit the memory budget. Batch: as many patches as fit the budget, at least 2, at most
  ``MAX_DATASET_FRACTION`` of all dataset voxels per batch.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from hybrid_unet.data.fingerprint import Fingerprint
from hybrid_unet.data.preprocessing import coarse_axis

ANISOTROPIC_PERCENTILE = 10.0
MAX_DATASET_FRACTION = 0.05
DEFAULT_MEMORY_BUDGET = 2 * 128**3  # voxels per batch: nnU-Net's default 128^3 patch x 2


@dataclass
class Plan:
    """Everything preprocessing, sampling and the network need to agree on.

    Attributes:
        spacing: Target voxel size ``(sd, sh, sw)`` mm.
        patch_size: Training patch ``(D, H, W)``, divisible by the total stride per axis.
        batch_size: Patches per batch.
        strides: Per stage, per axis strides, stem first (``[[1, 1, 1], [2, 2, 2], ...]``).
        kernel_sizes: Per stage, per axis convolution kernel sizes.
        normalization: Per channel, ``"ct"`` (clip to foreground 0.5/99.5 percentiles, z-score
            with dataset statistics) or ``"zscore"`` (per case).
        intensity_properties: Per channel statistics from the fingerprint.
        median_shape: Median case shape at the target spacing.
        in_channels: Image channels.
        memory_budget_voxels: Voxels per batch the plan was sized for.
        canonical_directions: Flip each scan's axes to run the way a RAS-stored scan's do
            before anything else (and back at the end of prediction), so a DICOM series (LPS)
            or a scan stored with a flipped axis meets the network as the training scans did.
            New plans: true; plans saved before the field existed: false, as they trained.
        axis_order: The world axis (0 x, 1 y, 2 z) each array axis ``(D, H, W)`` follows in
            most training cases (``[2, 1, 0]``: stored as a RAS NIfTI is). With
            ``canonical_directions`` a case stored in another order (a sagittal series) is
            transposed to it first and back at the end of prediction. None (plans saved before
            the field): no transposition, as they trained.
    """

    spacing: list[float]
    patch_size: list[int]
    batch_size: int
    strides: list[list[int]]
    kernel_sizes: list[list[int]]
    normalization: list[str]
    intensity_properties: list[dict[str, float]] = field(default_factory=list)
    median_shape: list[float] = field(default_factory=list)
    in_channels: int = 1
    memory_budget_voxels: int = DEFAULT_MEMORY_BUDGET
    canonical_directions: bool = False
    axis_order: list[int] | None = None

    def __post_init__(self) -> None:
        total = self.total_stride
        bad = [p for p, t in zip(self.patch_size, total, strict=True) if p % t]
        if bad:
            raise ValueError(
                f"patch_size {self.patch_size} is not divisible by the total stride {total} "
                f"of strides {self.strides}"
            )
        if len(self.kernel_sizes) != len(self.strides):
            raise ValueError(
                f"{len(self.kernel_sizes)} kernel_sizes for {len(self.strides)} stages"
            )
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")

    @property
    def total_stride(self) -> list[int]:
        return [int(np.prod([s[a] for s in self.strides])) for a in range(3)]

    @property
    def num_stages(self) -> int:
        return len(self.strides)

    def preprocessing_hash(self) -> str:
        """Hash of the fields that change preprocessed arrays (not patch or batch size)."""
        key = [self.spacing, self.normalization, self.intensity_properties]
        if self.canonical_directions:  # (false leaves the hashes of older caches as they were)
            key.append("canonical_directions")
        if self.axis_order is not None:
            key.append(["axis_order", list(self.axis_order)])
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def from_json(cls, path: str | Path) -> Plan:
        return cls(**json.loads(Path(path).read_text()))

    def table(self) -> str:
        """A short printable summary."""
        rows = [
            ("spacing (D, H, W) mm", " x ".join(f"{s:g}" for s in self.spacing)),
            ("median shape", " x ".join(f"{s:g}" for s in self.median_shape)),
            ("patch size", " x ".join(map(str, self.patch_size))),
            ("batch size", str(self.batch_size)),
            ("stages", str(self.num_stages)),
            ("strides", str(self.strides)),
            ("kernel sizes", str(self.kernel_sizes)),
            ("normalization", ", ".join(self.normalization)),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def target_spacing(spacings: np.ndarray) -> list[float]:
    """Median spacing, with a low percentile on an axis far coarser than the finest."""
    spacings = np.asarray(spacings, dtype=float)
    target = np.median(spacings, axis=0)
    worst = coarse_axis(target)
    if worst is not None:
        others = [a for a in range(3) if a != worst]
        low = np.percentile(spacings[:, worst], ANISOTROPIC_PERCENTILE)
        target[worst] = max(low, max(target[others]))
    return [float(s) for s in target]


def topology(
    patch: list[int], spacing: list[float], min_feature_size: int = 4, max_stages: int = 6
) -> tuple[list[list[int]], list[list[int]]]:
    """Per-stage strides and kernel sizes for a patch at a spacing (stem first)."""
    size = np.asarray(patch, dtype=float)
    cur = np.asarray(spacing, dtype=float)
    strides, kernels = [[1, 1, 1]], []
    kernels.append([3 if c <= 2 * cur.min() else 1 for c in cur])
    while len(strides) < max_stages:
        pool = [int(size[a] / 2 >= min_feature_size and cur[a] <= 2 * cur.min()) for a in range(3)]
        if not any(pool):
            break
        step = [2 if p else 1 for p in pool]
        size, cur = size / step, cur * step
        strides.append(step)
        kernels.append([3 if c <= 2 * cur.min() else 1 for c in cur])
    return strides, kernels


def _round_up(patch, strides) -> list[int]:
    total = [int(np.prod([s[a] for s in strides])) for a in range(3)]
    return [int(math.ceil(p / t) * t) for p, t in zip(patch, total, strict=True)]


def _fit_topology(patch, spacing, min_feature_size, max_stages):
    """Round the patch up to its total stride until the topology stops changing."""
    for _ in range(5):
        strides, kernels = topology(patch, spacing, min_feature_size, max_stages)
        rounded = _round_up(patch, strides)
        if rounded == list(patch):
            break
        patch = rounded
    return [int(p) for p in patch], strides, kernels


_OVERRIDABLE = {f.name for f in fields(Plan)} | {"min_feature_size", "max_stages"}


class PlanOverrideError(ValueError):
    """A plan override that cannot be applied; ``key`` names it (``spacing``, ...)."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key, self.problem = key, problem


def _check_overrides(ov: dict[str, Any]) -> None:
    """The shape of the overrides a plan is derived from: 3 positive numbers per voxel."""

    def triple(value: Any, positive_int: bool) -> bool:
        ok = isinstance(value, (list, tuple)) and len(value) == 3
        return ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
                          and (not positive_int or float(v).is_integer()) for v in value)  # fmt: skip

    for key, integer in (("spacing", False), ("patch_size", True)):
        if ov.get(key) is not None and not triple(ov[key], integer):
            raise PlanOverrideError(key, f"{ov[key]} is not 3 positive "
                                    f"{'integers' if integer else 'numbers'} (one per axis)")  # fmt: skip
    for key in ("strides", "kernel_sizes"):
        value = ov.get(key)
        if value is not None and not (
            isinstance(value, (list, tuple)) and value and all(triple(v, True) for v in value)
        ):
            raise PlanOverrideError(key, f"{value} is not a list of [a, b, c] positive integers, "
                                    "one per stage")  # fmt: skip
    order = ov.get("axis_order")
    if order is not None and sorted(order) != [0, 1, 2]:
        raise PlanOverrideError("axis_order", f"{order} is not a permutation of [0, 1, 2]")


def plan_experiment(
    fingerprint: Fingerprint,
    memory_budget_voxels: int = DEFAULT_MEMORY_BUDGET,
    overrides: dict[str, Any] | None = None,
) -> Plan:
    """Derive a :class:`Plan`; every field (and ``min_feature_size``, ``max_stages``) can be
    overridden, and derived fields follow the overridden ones (e.g. strides from a given patch).

    Raises:
        ValueError: An unknown override key (with close matches) or an inconsistent result.
    """
    ov = dict(overrides or {})
    unknown = sorted(set(ov) - _OVERRIDABLE)
    if unknown:
        hints = {k: difflib.get_close_matches(k, _OVERRIDABLE, n=2) for k in unknown}
        raise ValueError(f"unknown plan override(s) {hints} (known: {sorted(_OVERRIDABLE)})")
    _check_overrides(ov)
    min_feat, max_stages = ov.pop("min_feature_size", 4), ov.pop("max_stages", 6)

    order = ov.get("axis_order", common_axis_order(fingerprint.axis_orders))
    spacings = in_axis_order(fingerprint.spacings, fingerprint.axis_orders, order)
    spacing = [float(s) for s in ov.get("spacing") or target_spacing(spacings)]
    scale = np.asarray(spacings, float) / np.asarray(spacing)
    shapes = in_axis_order(fingerprint.shapes, fingerprint.axis_orders, order)
    shapes = np.asarray(shapes, dtype=float) * scale
    median = np.median(shapes, axis=0)
    if ov.get("patch_size"):
        patch = [int(p) for p in ov["patch_size"]]
        strides, kernels = topology(patch, spacing, min_feat, max_stages)
    else:
        patch, strides, kernels = _fit_topology(
            [max(1, math.ceil(m)) for m in median], spacing, min_feat, max_stages
        )
        # Shrink the physically longest axis while two patches do not fit the budget.
        while 2 * np.prod(patch) > memory_budget_voxels and max(patch) > 2 * min_feat:
            total = np.prod(strides, axis=0)
            axis = int(np.argmax(np.asarray(patch) * spacing))
            patch[axis] = max(int(total[axis]), patch[axis] - int(total[axis]))
            patch, strides, kernels = _fit_topology(patch, spacing, min_feat, max_stages)
    strides = ov.get("strides") or strides
    if ov.get("strides") and not ov.get("kernel_sizes"):
        kernels = [[3, 3, 3] for _ in strides]
    kernels = ov.get("kernel_sizes") or kernels

    dataset_voxels = float(np.prod(shapes, axis=1).sum())
    batch = int(memory_budget_voxels // np.prod(patch))
    batch = min(batch, int(MAX_DATASET_FRACTION * dataset_voxels // np.prod(patch)))
    batch = int(ov.get("batch_size") or max(2, batch))

    modality = [fingerprint.modality.get(str(c), "") for c in range(fingerprint.in_channels)]
    norm = ov.get("normalization") or ["ct" if m.upper() == "CT" else "zscore" for m in modality]
    return Plan(
        spacing=spacing,
        patch_size=[int(p) for p in patch],
        batch_size=batch,
        strides=[list(map(int, s)) for s in strides],
        kernel_sizes=[list(map(int, k)) for k in kernels],
        normalization=list(norm),
        intensity_properties=ov.get("intensity_properties") or fingerprint.intensity,
        median_shape=[round(float(m), 1) for m in median],
        in_channels=fingerprint.in_channels,
        memory_budget_voxels=int(memory_budget_voxels),
        canonical_directions=bool(ov.get("canonical_directions", True)),
        axis_order=[int(a) for a in order] if order is not None else None,
    )


def common_axis_order(orders: list[list[int] | None]) -> list[int] | None:
    """The axis order most training cases share (the first of a tie); None without any."""
    known = [tuple(o) for o in orders if o is not None]
    return list(Counter(known).most_common(1)[0][0]) if known else None


def in_axis_order(values: list, orders: list[list[int] | None], order: list[int] | None) -> list:
    """Per-case ``(D, H, W)`` values (shapes, spacings) in ``order``: the cases the
    preprocessing will transpose, transposed alike."""
    if order is None or len(orders) != len(values):
        return values
    return [
        v if own is None or list(own) == list(order) else [v[own.index(w)] for w in order]
        for v, own in zip(values, orders, strict=True)
    ]


def config_over_plan(plan: Plan, data_cfg: Any, model_cfg: Any) -> list[str]:
    """``key value`` for each planned key the config sets to another value than the plan's
    (an experiment's smaller patch, say), so a printed plan is not read as what trains."""

    def per_stage(value: Any, stages: int) -> list:  # 3 or [3, [1, 3, 3]] as triples
        entries = list(value) if isinstance(value, list | tuple) else [value] * stages
        return [[int(e)] * 3 if isinstance(e, int) else [int(x) for x in e] for e in entries]

    kept = []
    patch, batch = data_cfg.get("patch_size", None), data_cfg.get("batch_size", None)
    if patch is not None and [int(p) for p in patch] != list(plan.patch_size):
        kept.append("data.patch_size " + " x ".join(map(str, patch)))
    if batch is not None and int(batch) != plan.batch_size:
        kept.append(f"data.batch_size {batch}")
    for key in ("strides", "kernel_sizes"):
        given, planned = model_cfg.get(key, None), per_stage(getattr(plan, key), plan.num_stages)
        if given is not None and per_stage(given, plan.num_stages) != planned:
            kept.append(f"model.{key} {per_stage(given, plan.num_stages)}")
    return kept


def apply_plan(plan: Plan, data_cfg: Any, model_cfg: Any) -> list[str]:
    """Fill ``data.patch_size``, ``data.batch_size`` and ``model.strides`` where they are null.

    Works on OmegaConf ``DictConfig`` (struct mode is lifted for the assignment) and plain
    dicts. ``model.kernel_sizes`` is filled too when the model config has that key set to null.

    Returns:
        The dotted keys that were filled, for logging.

    Raises:
        ValueError: The model's ``features`` list has a different length than the plan's
            number of stages when ``strides`` was taken from the plan.
    """
    from omegaconf import DictConfig, open_dict

    filled = []

    def fill(cfg, prefix, key, value):
        if cfg.get(key, None) is None and key in cfg:
            if isinstance(cfg, DictConfig):
                with open_dict(cfg):
                    cfg[key] = value
            else:
                cfg[key] = value
            filled.append(f"{prefix}.{key}")

    fill(data_cfg, "data", "patch_size", list(plan.patch_size))
    fill(data_cfg, "data", "batch_size", int(plan.batch_size))
    fill(model_cfg, "model", "strides", [list(s) for s in plan.strides])
    fill(model_cfg, "model", "kernel_sizes", [list(k) for k in plan.kernel_sizes])
    features = model_cfg.get("features", None)
    if "model.strides" in filled and features is not None and len(features) != plan.num_stages:
        raise ValueError(
            f"the plan has {plan.num_stages} stages (strides {plan.strides}) but model.features "
            f"has {len(features)} entries; set model.features to {plan.num_stages} values or "
            f"pass data.source.plan_overrides={{strides: [...]}} (or model.strides)"
        )
    return filled
