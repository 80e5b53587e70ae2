"""Dataset fingerprint: what planning needs to know about a dataset, saved to JSON.

Shapes are measured after cropping to the nonzero region (what training will see); intensity
statistics use a fixed-seed sample of foreground (label > 0) voxels of every case so that the
numbers do not depend on the number of workers.
"""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from hybrid_unet.atomic import atomic_write_text
from hybrid_unet.data.layouts import CaseRecord
from hybrid_unet.data.preprocessing import axis_order, crop_to_nonzero, read_case

SAMPLES_PER_CASE = 10_000
PERCENTILES = (0.5, 50.0, 99.5)


@dataclass
class Fingerprint:
    """Summary of a dataset.

    Attributes:
        shapes: ``(D, H, W)`` per case after cropping to nonzero.
        spacings: ``(sd, sh, sw)`` mm per case.
        intensity: Per channel: ``percentile_00_5``, ``percentile_50_0``, ``percentile_99_5``,
            ``mean``, ``std``, ``min``, ``max`` over sampled foreground voxels.
        class_frequencies: Fraction of all voxels per class value (string keys for JSON).
        modality: Channel index (string) -> modality name.
        num_cases: Number of cases.
        in_channels: Image channels.
        axis_orders: Per case, the world axis each array axis follows
            (:func:`~hybrid_unet.data.preprocessing.axis_order`); empty in fingerprints saved
            before the field.
    """

    shapes: list[list[int]]
    spacings: list[list[float]]
    intensity: list[dict[str, float]]
    class_frequencies: dict[str, float]
    modality: dict[str, str] = field(default_factory=dict)
    num_cases: int = 0
    in_channels: int = 1
    axis_orders: list[list[int] | None] = field(default_factory=list)

    @property
    def median_shape(self) -> np.ndarray:
        return np.median(np.asarray(self.shapes, dtype=float), axis=0)

    @property
    def median_spacing(self) -> np.ndarray:
        return np.median(np.asarray(self.spacings, dtype=float), axis=0)

    def to_json(self, path: str | Path) -> None:
        """Write atomically (temp file + rename)."""
        atomic_write_text(path, json.dumps(asdict(self), indent=1))

    @classmethod
    def from_json(cls, path: str | Path) -> Fingerprint:
        return cls(**json.loads(Path(path).read_text()))


def _case_stats(job: tuple[CaseRecord, int, int | None]) -> dict:
    record, seed, ignore_label = job
    image, label, geometry = read_case(record)
    image, label, _ = crop_to_nonzero(image, label)
    rng = np.random.default_rng(seed)
    fg = (
        (label > 0) & (label != ignore_label)
        if label is not None
        else np.ones(image.shape[1:], bool)
    )
    fg_idx = np.flatnonzero(fg)
    take = rng.choice(fg_idx, min(SAMPLES_PER_CASE, fg_idx.size), replace=False)
    samples = image.reshape(image.shape[0], -1)[:, take]
    counts = np.bincount(label.ravel(), minlength=2) if label is not None else np.zeros(2)
    return {
        "shape": list(image.shape[1:]),
        "spacing": [float(s) for s in geometry.spacing],
        "axis_order": axis_order(geometry.affine),
        "samples": samples,
        "counts": counts,
    }


def compute_fingerprint(
    records: list[CaseRecord],
    modality: dict[int, str] | None = None,
    num_workers: int = 0,
    ignore_label: int | None = None,
) -> Fingerprint:
    """Read every case once and summarise it.

    Args:
        records: Cases to measure (validated beforehand).
        modality: Channel index -> name from ``dataset.json``.
        num_workers: Processes (0 or 1: in this process).
        ignore_label: Unannotated voxels' label value: not foreground intensities.
    """
    jobs = [(r, i, ignore_label) for i, r in enumerate(records)]
    if num_workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(num_workers) as pool:
            stats = list(pool.map(_case_stats, jobs, chunksize=8))
    else:
        stats = [_case_stats(j) for j in jobs]
    samples = np.concatenate([s["samples"] for s in stats], axis=1)
    intensity = []
    for channel in samples:
        if channel.size == 0:
            channel = np.zeros(1, np.float32)
        p = np.percentile(channel, PERCENTILES)
        intensity.append(
            {
                "percentile_00_5": float(p[0]),
                "percentile_50_0": float(p[1]),
                "percentile_99_5": float(p[2]),
                "mean": float(channel.mean()),
                "std": float(channel.std()),
                "min": float(channel.min()),
                "max": float(channel.max()),
            }
        )
    width = max(len(s["counts"]) for s in stats)
    counts = sum(np.pad(s["counts"], (0, width - len(s["counts"]))) for s in stats)
    total = max(float(counts.sum()), 1.0)
    return Fingerprint(
        shapes=[s["shape"] for s in stats],
        spacings=[s["spacing"] for s in stats],
        intensity=intensity,
        class_frequencies={str(k): float(c / total) for k, c in enumerate(counts)},
        modality={str(k): v for k, v in (modality or {}).items()},
        num_cases=len(records),
        in_channels=samples.shape[0],
        axis_orders=[s["axis_order"] for s in stats],
    )
