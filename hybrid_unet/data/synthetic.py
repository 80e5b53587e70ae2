"""Generated 3D phantoms: a dataset that needs no download and still has to be learnt.

Each case holds ``num_classes - 1`` labelled structures (randomly rotated, randomly deformed
ellipsoids of random size and position) and unlabelled distractor blobs, with class intensities
that overlap, a smooth multiplicative bias field, a smooth background texture and Gaussian
noise. Intensity alone does not separate the classes, so an untrained network (or a
threshold) scores poorly; shape and context have to be learnt.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from hybrid_unet.data.case import Case


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], coarse: int = 5) -> np.ndarray:
    """Low-frequency random field of unit-ish amplitude, ``shape``."""
    grid = rng.standard_normal((coarse, coarse, coarse))
    zoom = [s / coarse for s in shape]
    field = ndimage.zoom(grid, zoom, order=1, mode="nearest")  # trilinear: smooth enough, 5x faster
    return field[: shape[0], : shape[1], : shape[2]]


def _random_blob(
    rng: np.random.Generator,
    coords: np.ndarray,
    shape: tuple[int, int, int],
    radius_range: tuple[float, float],
) -> np.ndarray:
    """Boolean mask of a rotated, deformed ellipsoid placed at random inside ``shape``."""
    radii = rng.uniform(*radius_range, size=3)
    margin = radii.max() * 0.6
    centre = np.array([rng.uniform(margin, s - 1 - margin) for s in shape])
    rotation, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    local = np.einsum("ij,j...->i...", rotation, coords - centre[:, None, None, None])
    implicit = np.sum((local / radii[:, None, None, None]) ** 2, axis=0)
    implicit += 0.35 * _smooth_field(rng, shape, coarse=4)
    return implicit < 1.0


def make_phantom(
    seed: int,
    index: int,
    shape: tuple[int, int, int] = (48, 48, 48),
    num_classes: int = 4,
    num_distractors: int = 2,
    noise: float = 0.35,
    bias: float = 0.3,
) -> tuple[np.ndarray, np.ndarray]:
    """Generate one phantom, a pure function of ``(seed, index)`` and the settings.

    Returns:
        ``image`` ``(D, H, W)`` float32 (not normalised) and ``label`` ``(D, H, W)`` uint8 with
        values in ``[0, num_classes)``.
    """
    rng = np.random.default_rng([seed, index])
    coords = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij"))
    smallest = min(shape)
    label = np.zeros(shape, dtype=np.uint8)
    image = 0.25 * _smooth_field(rng, shape, coarse=6)  # background texture

    # Distractors first, so labelled structures may cover them; their intensity overlaps the
    # classes' intensities but they stay background.
    for _ in range(num_distractors):
        mask = _random_blob(rng, coords, shape, (0.08 * smallest, 0.16 * smallest))
        image[mask] = rng.uniform(0.6, 1.0 + 0.5 * num_classes)
    for cls in range(1, num_classes):
        mask = _random_blob(rng, coords, shape, (0.12 * smallest, 0.26 * smallest))
        label[mask] = cls
        # Class means step by 0.5 with jitter: neighbouring classes overlap once noise is added.
        image[mask] = (
            0.5 + 0.5 * cls + rng.uniform(-0.2, 0.2) + 0.15 * _smooth_field(rng, shape)[mask]
        )

    image = image * np.exp(bias * _smooth_field(rng, shape, coarse=3))
    image = image + noise * rng.standard_normal(shape)
    return image.astype(np.float32), label


class PhantomSource:
    """Case source of generated phantoms (see ``docs/architecture.md`` for the contract).

    Args:
        num_cases: Number of cases.
        shape: Volume shape ``(D, H, W)``.
        num_classes: Classes including background (one structure per foreground class).
        seed: Dataset seed; case ``i`` depends only on ``(seed, i)``.
        num_distractors: Unlabelled blobs per case.
        noise: Standard deviation of the additive Gaussian noise.
        bias: Strength of the multiplicative bias field.
    """

    in_channels = 1

    def __init__(
        self,
        num_cases: int = 24,
        shape: tuple[int, int, int] | list[int] = (48, 48, 48),
        num_classes: int = 4,
        seed: int = 0,
        num_distractors: int = 2,
        noise: float = 0.35,
        bias: float = 0.3,
    ) -> None:
        if num_cases < 2:
            raise ValueError(f"num_cases must be at least 2, got {num_cases}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        if len(shape) != 3 or min(shape) < 16:
            raise ValueError(f"shape must be three sizes of at least 16, got {shape}")
        self.num_cases = num_cases
        self.shape = tuple(int(s) for s in shape)
        self.num_classes = num_classes
        self.seed = seed
        self.num_distractors = num_distractors
        self.noise = noise
        self.bias = bias

    def case_names(self) -> list[str]:
        return [f"phantom_{i:03d}" for i in range(self.num_cases)]

    def load(self, name: str) -> Case:
        index = int(name.rsplit("_", 1)[1])
        image, label = make_phantom(
            self.seed,
            index,
            self.shape,
            self.num_classes,
            self.num_distractors,
            self.noise,
            self.bias,
        )
        image = (image - image.mean()) / max(float(image.std()), 1e-8)
        return Case(
            name=name, image=image[None], label=label, spacing=(1.0, 1.0, 1.0), affine=np.eye(4)
        )
