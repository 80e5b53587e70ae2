"""One segmentation case in memory, the unit every data source hands to the patch sampler."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Case:
    """A preprocessed image with its label and geometry.

    Attributes:
        name: Case identifier, unique within its dataset (e.g. ``hippocampus_001``).
        image: ``(C, D, H, W)`` float32, already normalised.
        label: ``(D, H, W)`` integer class map, or ``None`` for unlabelled cases.
        spacing: Voxel size in mm along ``(D, H, W)``.
        affine: 4x4 voxel-to-world matrix of the original scan, or ``None``.
        properties: Anything a reader wants to keep for writing predictions back
            (original shape, crop box, ...).
    """

    name: str
    image: np.ndarray
    label: np.ndarray | None
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    affine: np.ndarray | None = None
    properties: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.image.ndim != 4:
            raise ValueError(
                f"case {self.name}: image must be (C, D, H, W), got {self.image.shape}"
            )
        if self.label is not None and self.label.shape != self.image.shape[1:]:
            raise ValueError(
                f"case {self.name}: label shape {self.label.shape} does not match image "
                f"shape {self.image.shape[1:]}"
            )
